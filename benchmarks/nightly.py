"""A nightly run over a dataset of daily partitions: append the new day, or rewrite all.

    python benchmarks/nightly.py --days 30 --rows 400000 --dir /tmp/np-nightly-bench

Synthetic Parquet: ``--days`` partitions ``day=NN/`` of ``--rows`` rows each (8 float
columns, 2 files a day), plus the new day. The statistics are fitted once on the first
``--days`` days and frozen. Each tool runs as its own process on the same files:

- normpipe ``transform --append``: the new day read and written, committed into an output
  that already holds the other days (what ``refit: never`` / ``on_drift`` do nightly);
- normpipe ``transform --overwrite``: every day read and written again with the frozen
  statistics (what a scheduled job does without append);
- normpipe ``run --overwrite``: refit on every day, then rewrite (``refit: always``);
- the anchors, given the same frozen mean/std: the pyarrow read+write floor of the new day
  and of every day (one process), and DuckDB and Polars normalizing the new day.

Bytes read and written are the files' sizes (each file is read whole): from normpipe's
manifest, from the files themselves for the anchors. Every output of the new day is
checked equal to normpipe's append (z-scores within 1e-9). A measurement, not a test:
nothing asserts a timing. Prints one markdown table, with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness import cpu_model, measure_command  # noqa: E402

COLUMNS = [f"x{i}" for i in range(8)]

NORMPIPE = r"""
import json, sys
import normpipe
mode, source, stats, out, workers = sys.argv[1:6]
cluster = {"workers": int(workers)}
if mode == "run":
    _, manifest = normpipe.run(source, out, overwrite=True, exclude=["id"], cluster=cluster)
else:
    manifest = normpipe.transform(source, stats, out, cluster=cluster, **{mode: True})
new = manifest["files"][len(manifest["files"]) - manifest["written"]:]
passes = 2 if mode == "run" else 1  # a refit reads every file twice: the fit, then the transform
read = passes * sum(f["input_bytes"] for f in new)
print(json.dumps({"read": read, "written": sum(f["bytes"] for f in new),
                  "files": len(new), "rows": sum(f["rows_out"] for f in new)}))
"""

PYARROW = r"""
import json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
source, out, params = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
read = written = rows = files = 0
for path in sorted(source.rglob("*.parquet")):
    table = pq.read_table(path)
    for name, (mean, std) in params.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pc.divide(pc.subtract(table[name], mean), std))
    target = out / path.relative_to(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    read += path.stat().st_size; written += target.stat().st_size; rows += len(table); files += 1
print(json.dumps({"read": read, "written": written, "files": files, "rows": rows}))
"""

DUCKDB = r"""
import json, sys
from pathlib import Path
import duckdb
source, out, params = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
select = ", ".join(["id", *(f"(\"{n}\" - {m!r}) / {s!r} AS \"{n}\"" for n, (m, s) in params.items())])
query = f"SELECT {select} FROM read_parquet('{source}/*.parquet')"
duckdb.sql(f"COPY ({query}) TO '{out}/part.parquet' (FORMAT parquet)")
read = sum(p.stat().st_size for p in source.rglob("*.parquet"))
rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/part.parquet')").fetchall()[0][0]
print(json.dumps({"read": read, "written": (out / "part.parquet").stat().st_size, "files": 1, "rows": rows}))
"""

POLARS = r"""
import json, sys
from pathlib import Path
import polars as pl
source, out, params = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
out.mkdir(parents=True, exist_ok=True)
frame = pl.scan_parquet(f"{source}/*.parquet").with_columns(
    [((pl.col(n) - m) / s).alias(n) for n, (m, s) in params.items()])
frame.sink_parquet(out / "part.parquet")
read = sum(p.stat().st_size for p in source.rglob("*.parquet"))
rows = pl.scan_parquet(out / "part.parquet").select(pl.len()).collect().item()
print(json.dumps({"read": read, "written": (out / "part.parquet").stat().st_size, "files": 1, "rows": rows}))
"""


def write_day(root: Path, day: int, rows: int) -> None:
    """Partition ``day=NN``: two files of ``rows // 2`` rows, known distributions."""
    rng = np.random.default_rng(day)
    where = root / f"day={day:02d}"
    where.mkdir(parents=True, exist_ok=True)
    for part in range(2):
        n = rows // 2
        columns = {"id": pa.array(np.arange(n, dtype=np.int64) + (2 * day + part) * n)}
        for i, name in enumerate(COLUMNS):
            columns[name] = pa.array(rng.normal(i, 1 + i, n))
        pq.write_table(pa.table(columns), where / f"part-{part}.parquet", row_group_size=1_000_000)


def _tool(argv: list[str], what: str) -> dict[str, Any]:
    measured = measure_command(argv, what)
    found: dict[str, Any] = json.loads(measured.stdout.strip().splitlines()[-1])
    return {**found, "wall": measured.wall, "peak": measured.peak}


def _check(output: Path, reference: Path, day: str) -> str:
    """The new day's rows in ``output`` equal the append's (ordered by id)."""
    ours = pq.read_table(reference / day).sort_by("id")
    found = pq.read_table(output / day if (output / day).exists() else output).sort_by("id")
    if found.num_rows != ours.num_rows:
        return f"{found.num_rows} rows, not {ours.num_rows}"
    worst = max(float(np.max(np.abs(found[n].to_numpy() - ours[n].to_numpy()))) for n in COLUMNS)
    return "ok" if worst < 1e-9 else f"differs by {worst:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=400_000, help="rows per day")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/np-nightly-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = args.dir / f"data-{args.days}-{args.rows}"
    if not data.exists():
        for day in range(1, args.days + 1):
            write_day(data, day, args.rows)
    new_day = f"day={args.days + 1:02d}"
    shutil.rmtree(data / new_day, ignore_errors=True)
    python, workers = sys.executable, str(args.workers)

    import normpipe  # the frozen statistics and the output of the first nights: set-up, not measured

    stats_path = args.dir / "frozen.json"
    stats = normpipe.fit(data, exclude=["id"], stats=str(stats_path), cluster={"workers": args.workers})
    params = {n: [stats.summary(n).mean, stats.summary(n).std] for n in COLUMNS}
    appended, full = args.dir / "appended", args.dir / "full"
    for out in (appended, full):
        shutil.rmtree(out, ignore_errors=True)
        normpipe.transform(data, stats, out, append=True, cluster={"workers": args.workers})
    write_day(data, args.days + 1, args.rows)  # the night's new partition

    results: dict[str, dict[str, Any]] = {}
    results["normpipe transform --append (new day)"] = _tool(
        [python, "-c", NORMPIPE, "append", str(data), str(stats_path), str(appended), workers], "append"
    )
    results["normpipe transform --overwrite (every day)"] = _tool(
        [python, "-c", NORMPIPE, "overwrite", str(data), str(stats_path), str(full), workers], "rewrite"
    )
    refit = args.dir / "refit"
    results["normpipe run --overwrite (refit + every day)"] = _tool(
        [python, "-c", NORMPIPE, "run", str(data), "-", str(refit), workers], "refit"
    )
    anchors = args.dir / "anchors"
    shutil.rmtree(anchors, ignore_errors=True)
    plans = {
        "pyarrow read+write floor (new day)": (PYARROW, data / new_day, anchors / "pa-day" / new_day),
        "pyarrow read+write floor (every day)": (PYARROW, data, anchors / "pa-all"),
        "DuckDB COPY z-score (new day)": (DUCKDB, data / new_day, anchors / "duckdb"),
        "Polars sink z-score (new day)": (POLARS, data / new_day, anchors / "polars"),
    }
    for name, (script, source, target) in plans.items():
        results[name] = _tool([python, "-c", script, str(source), str(target), json.dumps(params)], name)
    checks = {
        "normpipe transform --overwrite (every day)": _check(full, appended, new_day),
        "pyarrow read+write floor (new day)": _check(anchors / "pa-day", appended, new_day),
        "pyarrow read+write floor (every day)": _check(anchors / "pa-all", appended, new_day),
        "DuckDB COPY z-score (new day)": _check(anchors / "duckdb", appended, new_day),
        "Polars sink z-score (new day)": _check(anchors / "polars", appended, new_day),
    }
    for name, r in results.items():
        r["verified"] = checks.get(name, "reference" if "append" in name else "refit: other parameters")
    shutil.rmtree(anchors, ignore_errors=True)
    shutil.rmtree(refit, ignore_errors=True)

    append = results["normpipe transform --append (new day)"]
    total = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    print(
        f"{args.days} daily partitions + 1 new, {args.rows:,} rows a day, 8 float columns "
        f"({total / 2**20:,.0f} MiB of Parquet); frozen statistics; CPU: {cpu_model()}\n"
    )
    print("| run | files | rows | MiB read | MiB written | seconds | vs append | peak RSS | check |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        mib = f"{r['read'] / 2**20:,.1f} | {r['written'] / 2**20:,.1f}"
        print(
            f"| {name} | {r['files']} | {r['rows']:,} | {mib} | {r['wall']:.2f} | "
            f"{r['wall'] / append['wall']:.2f}x | {r['peak'] / 2**20:,.0f} MiB | {r['verified']} |"
        )
    if args.json is not None:
        doc = {"days": args.days, "rows": args.rows, "cpu": cpu_model(), "tools": results}
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
