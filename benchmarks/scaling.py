"""Scaling: normpipe fit + transform at 1x, 2x, 4x, 8x rows (same file size, more files).

    python benchmarks/scaling.py --base-rows 2500000 --factors 1 2 4 8

Each size runs on a fresh local cluster (2 single-threaded workers, 1 GB each) on the
16-feature benchmark dataset. Time should grow linearly with rows (seconds per million
rows constant) and peak worker memory should stay flat. Prints one markdown table; a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import fit_and_transform
from normpipe.datagen import BENCHMARK_FEATURES, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-rows", type=int, default=2_500_000)
    parser.add_argument("--rows-per-file", type=int, default=312_500)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/normpipe-scaling"))
    parser.add_argument("--memory-limit", default="1GB")
    args = parser.parse_args()
    print("| rows | files | GiB | fit s | transform s | total s per M rows | peak RSS per worker |")
    print("|---|---|---|---|---|---|---|")
    for factor in args.factors:
        rows = args.base_rows * factor
        files = max(1, rows // args.rows_per_file)
        data, out = args.dir / f"x{factor}", args.dir / "out"
        if not data.exists():
            generate(
                data, rows, files, features=BENCHMARK_FEATURES, row_group_size=args.rows_per_file, workers=2
            )
        size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
        os.sync()  # the data generated (or the previous size's output) is on disk first
        _, fit_s, transform_s, peak = fit_and_transform(data, out, 2, args.memory_limit)
        shutil.rmtree(out, ignore_errors=True)
        print(
            f"| {rows:,} | {files} | {size / 2**30:.2f} | {fit_s:.1f} | {transform_s:.1f} | "
            f"{(fit_s + transform_s) / rows * 1e6:.2f} | {peak / 2**20:.0f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
