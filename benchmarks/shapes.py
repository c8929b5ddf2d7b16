"""normpipe on the shapes real datasets have, beside the pyarrow floor and DuckDB, in one run.

    python benchmarks/shapes.py                      # the three shapes below, 1 run each
    python benchmarks/shapes.py --shapes small --repeat 3
    python benchmarks/shapes.py --scale 0.1          # a tenth of the rows, for a quick look

Shapes (float64 columns drawn from N(0, 1), lognormal and uniform, 1% NaN):

- ``small``: 4,000 files x 500 rows x 4 columns (streaming ingestion);
- ``wide``: 4 files x 25,000 rows x 2,000 columns (1.6 GB in memory);
- ``big``: one file of 8 M rows x 8 columns in 32 row groups, and ``split``: the same
  rows in 32 files of one row group.

Each tool is its own process: ``pyarrow read`` (the floor: a streaming read of every
column), ``pyarrow read+write`` (read and write back, PLAIN doubles),
``normpipe fit`` and ``normpipe run`` (``--method robust`` through the CLI, on a
local cluster of one single-threaded worker per core), and ``DuckDB`` (mean, std and
``approx_quantile`` q25/q50/q75 of every column, then a robust-scaled copy). Wall time,
CPU time and the peak RSS of the process tree, each tool from a warm page cache;
ratios against the read floor. A
measurement, never an assertion. Prints one markdown table per shape, with the CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import cpu_model, measure_command

#: name: (files, rows per file, columns, row groups per file)
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "small": (4000, 500, 4, 1),
    "wide": (4, 25_000, 2000, 1),
    "big": (1, 8_000_000, 8, 32),
    "split": (32, 250_000, 8, 1),
}
TOOLS = ("pyarrow read", "pyarrow read+write", "normpipe fit", "normpipe run", "DuckDB")


def generate(directory: Path, files: int, rows: int, columns: int, groups: int, seed: int = 0) -> None:
    """``files`` Parquet files of ``rows`` rows and ``columns`` float64 columns."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = (
        lambda n: rng.normal(0.0, 1.0, n),
        lambda n: rng.lognormal(0.0, 1.0, n),
        lambda n: rng.uniform(-5.0, 5.0, n),
    )
    for i in range(files):
        arrays = {}
        for c in range(columns):
            values = kinds[c % 3](rows)
            values[rng.random(rows) < 0.01] = np.nan
            arrays[f"f{c}"] = values
        pq.write_table(
            pa.table(arrays),
            directory / f"part-{i:05d}.parquet",
            row_group_size=-(-rows // groups),
            compression="snappy",
            use_dictionary=False,
        )


def warm(directory: Path) -> None:
    """Read every file's bytes once, so that each tool starts from a warm page cache (the
    first tool would otherwise pay the cold reads, and DuckDB's memory evicts the cache)."""
    for path in sorted(directory.rglob("*.parquet")):
        with path.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def tool_command(tool: str, source: Path, output: Path) -> list[str]:
    if tool.startswith("normpipe"):
        verb = tool.split()[1]
        where = ["-o", str(output), "--overwrite"] if verb == "run" else ["-s", str(output / "stats.json")]
        if verb == "fit":
            output.mkdir(parents=True, exist_ok=True)
        return [sys.executable, "-m", "normpipe.cli", verb, str(source), *where, "--method", "robust"]
    return [sys.executable, __file__, "--tool", tool, str(source), str(output)]


def run_tool(tool: str, source: str, output: str) -> None:
    """The floor and DuckDB, in this process (``--tool``)."""
    files = sorted(Path(source).rglob("*.parquet"))
    if tool == "pyarrow read":
        rows = 0
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20):
                rows += batch.num_rows
    elif tool == "pyarrow read+write":
        rows = 0
        for path in files:
            table = pq.read_table(path)
            dest = Path(output) / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, dest, compression="snappy", use_dictionary=False)
            rows += table.num_rows
    elif tool == "DuckDB":
        rows = _duckdb(source, output, pq.read_schema(files[0]).names)
    else:
        raise SystemExit(f"unknown tool {tool!r}")
    print(json.dumps({"rows": rows}))


def _duckdb(source: str, output: str, names: list[str]) -> int:
    import duckdb

    con = duckdb.connect()
    scan = f"read_parquet('{source}/**/*.parquet')"
    parts = [f"approx_quantile({c}, [0.25, 0.5, 0.75]) FILTER (WHERE NOT isnan({c}))" for c in names]
    row = con.execute(f"SELECT {', '.join(parts)} FROM {scan}").fetchone()
    assert row is not None
    exprs = []
    for c, (q1, q2, q3) in zip(names, row, strict=True):
        exprs.append(f"({c} - {q2!r}) / {(q3 - q1) or 1.0!r} AS {c}")
    Path(output).mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT {', '.join(exprs)} FROM {scan}) TO '{output}' "
        "(FORMAT parquet, COMPRESSION snappy, PER_THREAD_OUTPUT true)"
    )
    counted = con.execute(f"SELECT count(*) FROM read_parquet('{output}/*.parquet')").fetchone()
    return int(counted[0]) if counted else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tools", nargs="*", default=list(TOOLS), choices=list(TOOLS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each shape's rows")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/normpipe-shapes"))
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--tool", nargs=3, metavar=("TOOL", "SOURCE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tool:
        run_tool(*args.tool)
        return
    print(f"CPU: {cpu_model()}; median of {args.repeat}\n")
    results: dict[str, Any] = {}
    for shape in args.shapes:
        files, rows, columns, groups = SHAPES[shape]
        rows = max(groups, int(rows * args.scale))
        data = args.dir / f"{shape}-{rows}"
        if not data.exists():
            generate(data, files, rows, columns, groups)
        measured = {}
        for tool in args.tools:
            warm(data)
            runs = []
            for _ in range(args.repeat):
                shutil.rmtree(args.dir / "out", ignore_errors=True)
                runs.append(measure_command(tool_command(tool, data, args.dir / "out"), tool))
            measured[tool] = {
                "wall": statistics.median(r.wall for r in runs),
                "cpu": statistics.median(r.cpu for r in runs),
                "peak": max(r.peak for r in runs),
            }
            print(f"{shape} {tool}: {measured[tool]}", file=sys.stderr, flush=True)
        shutil.rmtree(args.dir / "out", ignore_errors=True)
        results[shape] = measured
        floor = measured.get("pyarrow read", {}).get("wall", float("nan"))
        print(f"{shape}: {files:,} files x {rows:,} rows x {columns:,} columns, {groups} row groups a file")
        print("| tool | wall s | CPU s | peak RSS (tree) | x read floor |")
        print("|---|---|---|---|---|")
        for tool, m in measured.items():
            print(
                f"| {tool} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['peak'] / 2**30:.2f} GiB | "
                f"{m['wall'] / floor:.2f} |"
            )
        print(flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "shapes": results}, indent=2))


if __name__ == "__main__":
    main()
