"""normpipe against the floor and the anchors, on the same data, in one run.

    python -m pip install -e ".[bench]"
    python benchmarks/anchors.py                 # 20 M rows x 16 features, 64 files, 3 runs each
    python benchmarks/anchors.py --quick         # 200 k rows, 8 files, 1 run

The job: statistics (mean, std, min, max, q25/q50/q75) of 16 float64 features and a
z-scored copy of the dataset. Each tool runs as its own process (``benchmarks/tools.py``);
the harness measures wall time (median and min of ``--repeat`` runs), CPU time of the
process and its children, and peak RSS of the whole process tree (sampled every 50 ms).
It checks every output (row count; z-scores of the first rows against exact means and
stds) and each tool's quantiles against exact quantiles (max rank error over features
and q). Ratios: ``x floor`` is wall / (read floor + read+write floor); ``normpipe
faster`` is the tool's wall / normpipe's. Prints one markdown table. Timings are
measurements, not assertions: nothing fails on a slow run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import cpu_model, measure_command  # noqa: E402
from benchmarks.tools import FEATURES, TOOLS, Q  # noqa: E402
from normpipe.datagen import BENCHMARK_FEATURES, generate  # noqa: E402


def ensure_data(directory: Path, rows: int, files: int) -> Path:
    data = directory / "data"
    marker = directory / "data.json"
    wanted = {"rows": rows, "files": files, "features": list(BENCHMARK_FEATURES), "seed": 0}
    if not (marker.is_file() and json.loads(marker.read_text()) == wanted):
        shutil.rmtree(data, ignore_errors=True)
        generate(
            data,
            rows,
            files,
            features=BENCHMARK_FEATURES,
            row_group_size=-(-rows // files),
            workers=os.cpu_count() or 1,
        )
        marker.write_text(json.dumps(wanted))
        (directory / "exact.json").unlink(missing_ok=True)
    return data


def exact_columns(data: Path) -> dict[str, np.ndarray]:
    """Each feature's finite values, sorted (one column in memory at a time is enough,
    but the rank errors of every tool are computed from the same arrays)."""
    dataset = pads.dataset(data)
    out = {}
    for c in FEATURES:
        values = dataset.to_table(columns=[c]).column(0).to_numpy()
        out[c] = np.sort(values[np.isfinite(values)])
    return out


def rank_error(sorted_values: np.ndarray, value: float, q: float) -> float:
    """Distance from q to the normalized rank interval of ``value`` among the data."""
    n = sorted_values.size
    lo = np.searchsorted(sorted_values, value, side="left") / n
    hi = np.searchsorted(sorted_values, value, side="right") / n
    return 0.0 if lo <= q <= hi else float(min(abs(q - lo), abs(q - hi)))


def measure(tool: str, data: Path, output: Path) -> dict[str, Any]:
    shutil.rmtree(output, ignore_errors=True)
    run = measure_command([sys.executable, "-m", "benchmarks.tools", tool, str(data), str(output)], tool)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return {"wall": run.wall, "cpu": run.cpu, "peak": run.peak, "result": result}


def verify(data: Path, output: Path, result: dict[str, Any], rows: int, exact: dict[str, Any]) -> str:
    """'ok' when the output has every row and its z-scores match exact statistics."""
    if result["rows_out"] != rows:
        return f"rows {result['rows_out']} != {rows}"
    if "mean" not in result:
        return "ok"
    files = sorted(output.rglob("*.parquet"))
    out = pq.read_table(files[0], columns=["id", "normal", "lognormal"])
    ids = out.column("id").to_numpy()[:1000]
    source = pads.dataset(data).to_table(
        filter=pads.field("id").isin(ids.tolist()), columns=["id", "normal", "lognormal"]
    )
    order = np.argsort(source.column("id").to_numpy())
    for c in ("normal", "lognormal"):
        original = source.column(c).to_numpy()[order][np.argsort(np.argsort(ids))]
        expected = (original - exact["mean"][c]) / exact["std"][c]
        got = out.column(c).to_numpy()[:1000]
        if not np.allclose(got, expected, rtol=1e-6, atol=1e-6, equal_nan=True):
            return f"{c}: z-scores differ from exact ones"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, help="default 20,000,000 (--quick: 200,000)")
    parser.add_argument("--files", type=int, help="default 64 (--quick: 8)")
    parser.add_argument("--repeat", type=int, help="runs per tool; default 3 (--quick: 1)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/normpipe-anchors"))
    parser.add_argument(
        "--tools",
        nargs="*",
        default=list(TOOLS),
        choices=list(TOOLS),
        metavar="TOOL",
        help="a subset of: " + ", ".join(TOOLS),
    )
    parser.add_argument("--quick", action="store_true", help="a small run: 200 k rows, 8 files, 1 run")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    quick = {"rows": 200_000, "files": 8, "repeat": 1} if args.quick else {}
    full = {"rows": 20_000_000, "files": 64, "repeat": 3}
    for key, value in full.items():
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, value))
    data = ensure_data(args.dir, args.rows, args.files)
    columns = exact_columns(data)
    exact = {
        "mean": {c: float(v.mean()) for c, v in columns.items()},
        "std": {c: float(v.std()) for c, v in columns.items()},
    }
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in data.rglob("*.parquet"))
    measured: dict[str, dict[str, Any]] = {}
    for tool in args.tools:
        runs = [measure(tool, data, args.dir / "out") for _ in range(args.repeat)]
        last = runs[-1]["result"]
        errors = (
            max(
                rank_error(columns[c], v, q)
                for c in FEATURES
                for q, v in zip(Q, last["quantiles"][c], strict=True)
            )
            if last.get("quantiles")
            else None
        )
        measured[tool] = {
            "wall_median": statistics.median(r["wall"] for r in runs),
            "wall_min": min(r["wall"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "peak": max(r["peak"] for r in runs),
            "rank_error": errors,
            "verified": verify(data, args.dir / "out", last, rows, exact),
        }
        print(f"{tool}: {measured[tool]}", file=sys.stderr, flush=True)
    shutil.rmtree(args.dir / "out", ignore_errors=True)
    size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    print(
        f"{rows:,} rows x {len(FEATURES)} float64 features + id + key, {args.files} files, "
        f"{size / 2**30:.2f} GiB; {cpu_model()}; median of {args.repeat}\n"
    )
    floor = sum(measured[t]["wall_median"] for t in measured if "(floor)" in t) or float("nan")
    ours = measured.get("normpipe run", {}).get("wall_median", float("nan"))
    print(
        "| tool | wall median s | wall min s | CPU s | peak RSS (tree) | x floor | normpipe faster | "
        "max rank error | output |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for tool, m in measured.items():
        error = f"{m['rank_error']:.1e}" if m["rank_error"] is not None else "n/a"
        print(
            f"| {tool} | {m['wall_median']:.1f} | {m['wall_min']:.1f} | {m['cpu']:.1f} | "
            f"{m['peak'] / 2**30:.2f} GiB | {m['wall_median'] / floor:.2f} | "
            f"{m['wall_median'] / ours:.2f}x | {error} | {m['verified']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "files": args.files, "tools": measured}, indent=2))


if __name__ == "__main__":
    main()
