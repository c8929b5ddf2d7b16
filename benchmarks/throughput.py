"""Throughput of normpipe's fit and transform on a generated dataset, with the peak
memory of each worker and the quantile rank error against exact quantiles.

    python benchmarks/throughput.py --rows 70000000 --files 224 --dir /tmp/np-bench

(70 M rows of the default features is about 5 GB of snappy Parquet.) Prints one
markdown table. A measurement, not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import normpipe
from normpipe.cluster import dask_client
from normpipe.config import ClusterConfig
from normpipe.datagen import generate
from normpipe.stats import Stats


def peak_rss() -> int:
    """VmHWM of the calling process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def fit_and_transform(
    data: Path, out: Path, workers: int, memory_limit: str
) -> tuple[Stats, float, float, int]:
    """Fit then transform on a fresh local cluster (started before the clock runs):
    the artifact, fit seconds, transform seconds and the largest worker peak RSS."""
    cluster = ClusterConfig(workers=workers, threads_per_worker=1, memory_limit=memory_limit)
    with dask_client(cluster) as client:
        client.run(lambda: None)
        t0 = time.perf_counter()
        stats = normpipe.fit(data, client=client, exclude=["id"])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        normpipe.transform(data, stats, out, client=client, overwrite=True)
        transform_s = time.perf_counter() - t0
        peak = max(client.run(peak_rss).values())
    return stats, fit_s, transform_s, peak


def rank_error(values: np.ndarray, estimate: float, p: float) -> float:
    finite = np.sort(values[np.isfinite(values)])
    low = np.searchsorted(finite, estimate, "left") / finite.size
    high = np.searchsorted(finite, estimate, "right") / finite.size
    return 0.0 if low <= p <= high else min(abs(p - low), abs(p - high))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/normpipe-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    args = parser.parse_args()

    data, out = args.dir / "data", args.dir / "out"
    started = time.perf_counter()
    if not data.exists():
        generate(data, args.rows, args.files, seed=0, row_group_size=131_072, workers=args.workers)
    generated = time.perf_counter() - started
    size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    stats, fit_s, transform_s, peak = fit_and_transform(data, out, args.workers, args.memory_limit)
    errors = {}
    for name in stats.columns:
        values = pq.read_table(data, columns=[name]).column(0).to_numpy()
        errors[name] = max(rank_error(values, stats.summary(name).quantiles[p], p) for p in (0.25, 0.5, 0.75))
    rows = stats.rows
    print(
        f"| dataset | {rows:,} rows, {len(stats.columns)} numeric + 2 other columns, "
        f"{args.files} files, {size / 1e9:.2f} GB (generated in {generated:.0f} s) |"
    )
    print("|---|---|")
    print(f"| fit | {fit_s:.1f} s, {rows / fit_s / 1e6:.2f} M rows/s, {size / fit_s / 1e6:.0f} MB/s |")
    print(f"| transform (read + write) | {transform_s:.1f} s, {rows / transform_s / 1e6:.2f} M rows/s |")
    print(f"| peak RSS per worker | {peak / 2**20:.0f} MiB (limit {args.memory_limit}) |")
    stated = stats.summary(next(iter(stats.columns))).rank_error
    print(f"| stated rank error (KLL k={stats.k}) | {stated:.1e} |")
    worst = max(errors, key=errors.__getitem__)
    print(f"| measured max rank error, q=.25/.5/.75 | {errors[worst]:.1e} ({worst}) |")
    shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
