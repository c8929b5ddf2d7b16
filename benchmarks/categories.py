"""The cost of vocabularies in the statistics pass, beside the tools that count values.

    python benchmarks/categories.py --rows 5000000 --dir /tmp/np-categories-bench

Synthetic Parquet (``--files`` files): four float columns and three string columns of
Zipf-distributed values: ``store`` (50 values), ``product`` (20,000) and ``user``
(``--users`` values, past the exact limit: counted by the frequent-items sketch).
Every tool runs as its own process on the same files: normpipe's pass with the numeric
columns only, then with ``store`` and ``product`` as categories (exact counts), then
with ``user`` too (a sketch), and the run that writes codes; pyarrow's ``value_counts``
(one process, the floor of reading and counting), DuckDB's ``GROUP BY`` and Polars'
``value_counts``. Each tool's counts of ``product`` are checked equal to DuckDB's, and
the sketch's ``user`` counts within their stated error. A measurement, not a test:
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

STRINGS = ("store", "product", "user")

NORMPIPE = r"""
import json, sys
import normpipe
source, mode, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
coded = {"numeric": [], "exact": ["store", "product"], "sketch": ["store", "product", "user"]}[mode]
options = dict(columns=["x0", "x1", "x2", "x3"], categories={n: {} for n in coded},
               cluster={"workers": workers})
if len(sys.argv) > 4:
    stats, _ = normpipe.run(source, sys.argv[4], overwrite=True, **options)
else:
    stats = normpipe.fit(source, **options)
out = {}
for name, c in stats.categories.items():
    v = c.state.vocabulary()
    top = [[k, n] for k, n in zip(v.values[:100], v.counts[:100])]
    out[name] = {"top": top, "max_error": c.state.max_error, "distinct": c.state.distinct}
print(json.dumps(out))
"""

PYARROW = r"""
import json, sys
from collections import Counter
import pyarrow.compute as pc, pyarrow.dataset as ds
counts = {n: Counter() for n in ("store", "product", "user")}
for batch in ds.dataset(sys.argv[1], format="parquet").to_batches(columns=list(counts)):
    for name in counts:
        vc = pc.value_counts(batch.column(name))
        counts[name].update(dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())))
def top(c):
    return [[k, v] for k, v in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:100]]
print(json.dumps({n: {"top": top(c), "distinct": len(c)} for n, c in counts.items()}))
"""

DUCKDB = r"""
import json, sys
import duckdb
con = duckdb.connect()
out = {}
for name in ("store", "product", "user"):
    rows = con.sql(f"SELECT {name}, count(*) AS n FROM read_parquet('{sys.argv[1]}/*.parquet') "
                   f"GROUP BY {name} ORDER BY n DESC, {name}").fetchall()
    out[name] = {"top": [[k, n] for k, n in rows[:100]], "distinct": len(rows)}
print(json.dumps(out))
"""

POLARS = r"""
import json, sys
import polars as pl
frame = pl.scan_parquet(f"{sys.argv[1]}/*.parquet")
out = {}
for name in ("store", "product", "user"):
    grouped = frame.group_by(name).agg(pl.len().alias("n"))
    counts = grouped.sort(["n", name], descending=[True, False]).collect()
    out[name] = {"top": counts.head(100).rows(), "distinct": counts.height}
print(json.dumps(out))
"""


def write_data(directory: Path, rows: int, files: int, users: int, seed: int = 0) -> None:
    """Zipf-distributed strings (as dictionary indices cast to plain strings) and floats."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    names = {
        "store": pa.array([f"store-{i:02d}" for i in range(50)]),
        "product": pa.array([f"product-{i:05d}" for i in range(20_000)]),
        "user": pa.array([f"user-{i:08d}" for i in range(users)]),
    }
    per_file = rows // files
    for f in range(files):
        n = per_file if f < files - 1 else rows - per_file * (files - 1)
        columns: dict[str, Any] = {f"x{i}": rng.normal(i, 1 + i, n) for i in range(4)}
        for name, values in names.items():
            index = np.minimum(rng.zipf(1.2, n) - 1, len(values) - 1).astype(np.int32)
            columns[name] = pa.DictionaryArray.from_arrays(index, values).cast(pa.string())
        pq.write_table(pa.table(columns), directory / f"part-{f:03d}.parquet", row_group_size=1_000_000)


def _tool(argv: list[str], what: str) -> tuple[dict[str, Any], float, int]:
    measured = measure_command(argv, what)
    return json.loads(measured.stdout.strip().splitlines()[-1]), measured.wall, measured.peak


def _verify(found: dict[str, Any], truth: dict[str, Any]) -> str:
    """Exact counts of ``product`` equal the reference's; ``user`` counts within the
    stated error where a sketch was used."""
    if "product" in found and [list(r) for r in found["product"]["top"]] != truth["product"]["top"]:
        return "product counts differ"
    if "user" in found:
        bound = found["user"].get("max_error", 0)
        exact = dict((k, n) for k, n in truth["user"]["top"])
        for key, count in found["user"]["top"][:50]:
            if key in exact and abs(count - exact[key]) > bound:
                return f"user count of {key} off by {abs(count - exact[key])} > {bound}"
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/np-categories-bench"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = args.dir / f"data-{args.rows}-{args.files}-{args.users}"
    if not data.exists():
        write_data(data, args.rows, args.files, args.users)
    python, workers = sys.executable, str(args.workers)
    results: dict[str, dict[str, Any]] = {}
    truth, wall, peak = _tool([python, "-c", DUCKDB, str(data)], "duckdb")
    plans = [
        ("pyarrow value_counts, 1 process (floor)", [python, "-c", PYARROW, str(data)]),
        ("DuckDB GROUP BY count", None),
        ("Polars group_by count", [python, "-c", POLARS, str(data)]),
        (
            f"normpipe fit, numeric only ({workers} workers)",
            [python, "-c", NORMPIPE, str(data), "numeric", workers],
        ),
        ("normpipe fit, + store, product (exact)", [python, "-c", NORMPIPE, str(data), "exact", workers]),
        ("normpipe fit, + user (sketch)", [python, "-c", NORMPIPE, str(data), "sketch", workers]),
        (
            "normpipe run, codes written",
            [python, "-c", NORMPIPE, str(data), "exact", workers, str(args.dir / "out")],
        ),
    ]
    for name, argv in plans:
        if argv is None:
            found, seconds, memory = truth, wall, peak
        else:
            found, seconds, memory = _tool(argv, name)
        results[name] = {"wall": seconds, "peak": memory, "verified": _verify(found, truth), "counts": found}
    shutil.rmtree(args.dir / "out", ignore_errors=True)
    numeric = results[f"normpipe fit, numeric only ({workers} workers)"]["wall"]
    floor = results["pyarrow value_counts, 1 process (floor)"]["wall"]
    print(
        f"{args.rows:,} rows in {args.files} files: 4 float columns, store (50 values), product "
        f"(20,000), user ({args.users:,}, Zipf); CPU: {cpu_model()}\n"
    )
    print("| tool | seconds | vs numeric-only fit | vs pyarrow floor | peak RSS | counts |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['wall']:.2f} | {r['wall'] / numeric:.2f}x | {r['wall'] / floor:.2f}x | "
            f"{r['peak'] / 2**20:,.0f} MiB | {r['verified']} |"
        )
    if args.json is not None:
        doc = {
            "rows": args.rows,
            "cpu": cpu_model(),
            "tools": {k: {**v, "counts": None} for k, v in results.items()},
        }
        args.json.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
