"""The same job done by each tool: statistics (count, mean, std, min, max, q25/q50/q75)
of every feature, then a z-scored copy of the dataset (NaN kept as NaN, other columns
kept). Run one tool per process:

    python -m benchmarks.tools TOOL SOURCE_DIR OUTPUT_DIR

It prints one JSON line: the quantiles it computed (``null`` where the tool has none)
and the means and stds it used. ``benchmarks/anchors.py`` runs these and measures them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.datagen import BENCHMARK_FEATURES

Q = (0.25, 0.5, 0.75)
FEATURES = list(BENCHMARK_FEATURES)
Result = dict[str, Any]


def _files(source: str) -> list[Path]:
    return sorted(Path(source).rglob("*.parquet"))


def _write_plain(table: pa.Table, path: Path) -> None:
    """Doubles PLAIN-encoded (dictionary only for strings): the fast, honest writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    pq.write_table(table, path, compression="snappy", use_dictionary=strings)


def floor_read(source: str, output: str) -> Result:
    import pyarrow.dataset as pads  # here, not above: Dask's spawned workers import this module

    rows = sum(b.num_rows for b in pads.dataset(source).to_batches())
    return {"rows_out": rows}


def floor_read_write(source: str, output: str) -> Result:
    rows = 0
    for path in _files(source):
        table = pq.read_table(path)
        _write_plain(table, Path(output) / path.relative_to(source))
        rows += table.num_rows
    return {"rows_out": rows}


def normpipe_run(source: str, output: str, **options: Any) -> Result:
    import normpipe

    stats, manifest = normpipe.run(source, output, method="zscore", exclude=["id"], overwrite=True, **options)
    result = {
        "rows_out": manifest["rows_out"],
        "quantiles": {c: [stats.summary(c).quantiles[q] for q in Q] for c in FEATURES},
    }
    if "group_by" not in options:  # per-group z-scores are checked by the tests, not here
        result["mean"] = {c: stats.summary(c).mean for c in FEATURES}
        result["std"] = {c: stats.summary(c).std for c in FEATURES}
    return result


def normpipe_fit_robust(source: str, output: str) -> Result:
    """The statistics pass alone, for ``--method robust`` (quantiles from the sketch)."""
    import normpipe

    stats = normpipe.fit(source, method="robust", exclude=["id"])
    return {
        "rows_out": stats.rows,
        "quantiles": {c: [stats.summary(c).quantiles[q] for q in Q] for c in FEATURES},
    }


def normpipe_run_robust(source: str, output: str) -> Result:
    """``normpipe run --method robust``: the pass, then a robust-scaled copy."""
    import normpipe

    stats, manifest = normpipe.run(source, output, method="robust", exclude=["id"], overwrite=True)
    return {
        "rows_out": manifest["rows_out"],
        "quantiles": {c: [stats.summary(c).quantiles[q] for q in Q] for c in FEATURES},
    }


def normpipe_exact(source: str, output: str) -> Result:
    """normpipe with ``--quantiles exact``: a second pass for numpy-equal quantiles."""
    return normpipe_run(source, output, quantiles="exact")


def normpipe_groups(source: str, output: str) -> Result:
    """normpipe with ``--group-by key``: z-scores per value of the string key (100 groups)."""
    return normpipe_run(source, output, group_by="key")


def duckdb_approx(source: str, output: str) -> Result:
    import duckdb

    con = duckdb.connect()
    scan = f"read_parquet('{source}/**/*.parquet')"
    parts = []
    for c in FEATURES:
        ok = f"FILTER (WHERE NOT isnan({c}))"
        parts += [
            f"avg({c}) {ok}",
            f"stddev_pop({c}) {ok}",
            f"min({c}) {ok}",
            f"max({c}) {ok}",
            f"approx_quantile({c}, [0.25, 0.5, 0.75]) {ok}",
        ]
    row = con.execute(f"SELECT {', '.join(parts)} FROM {scan}").fetchone()
    assert row is not None
    mean, std, quantiles = {}, {}, {}
    for i, c in enumerate(FEATURES):
        mean[c], std[c], _, _, quantiles[c] = row[5 * i : 5 * i + 5]
    exprs = ", ".join(f"({c} - {mean[c]!r}) / {std[c] if std[c] else 1.0!r} AS {c}" for c in FEATURES)
    Path(output).mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT id, key, {exprs} FROM {scan}) TO '{output}' "
        "(FORMAT parquet, COMPRESSION snappy, PER_THREAD_OUTPUT true)"
    )
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{output}/*.parquet')").fetchone()
    return {"rows_out": rows[0] if rows else 0, "quantiles": quantiles, "mean": mean, "std": std}


def polars_exact(source: str, output: str) -> Result:
    import polars as pl

    scan = pl.scan_parquet(f"{source}/**/*.parquet", hive_partitioning=False)
    exprs = []
    for c in FEATURES:
        col = pl.col(c).fill_nan(None)
        exprs += [col.mean().alias(f"{c}|mean"), col.std(ddof=0).alias(f"{c}|std")]
        exprs += [col.min().alias(f"{c}|min"), col.max().alias(f"{c}|max")]
        exprs += [col.quantile(q, "linear").alias(f"{c}|{q}") for q in Q]
    stats = scan.select(exprs).collect(engine="streaming").row(0, named=True)
    mean = {c: stats[f"{c}|mean"] for c in FEATURES}
    std = {c: stats[f"{c}|std"] for c in FEATURES}
    scaled = [((pl.col(c) - mean[c]) / (std[c] or 1.0)).alias(c) for c in FEATURES]
    Path(output).mkdir(parents=True, exist_ok=True)
    scan.select(["id", "key", *scaled]).sink_parquet(f"{output}/part-0.parquet")
    rows = pl.scan_parquet(f"{output}/*.parquet").select(pl.len()).collect().item()
    return {
        "rows_out": rows,
        "quantiles": {c: [stats[f"{c}|{q}"] for q in Q] for c in FEATURES},
        "mean": mean,
        "std": std,
    }


def dask_ml_scaler(source: str, output: str) -> Result:
    import dask.dataframe as dd
    from dask_ml.preprocessing import StandardScaler
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        frame = dd.read_parquet(source)
        scaler = StandardScaler().fit(frame[FEATURES])
        quantiles = frame[FEATURES].quantile(list(Q)).compute()
        scaled = scaler.transform(frame[FEATURES])
        for c in ("id", "key"):
            scaled[c] = frame[c]
        scaled.to_parquet(output, write_index=False)
        rows = int(dd.read_parquet(output).map_partitions(len).sum().compute())
    return {
        "rows_out": rows,
        "quantiles": {c: [float(quantiles[c].iloc[i]) for i in range(3)] for c in FEATURES},
        "mean": {c: float(m) for c, m in zip(FEATURES, scaler.mean_, strict=True)},
        "std": {c: float(s) for c, s in zip(FEATURES, scaler.scale_, strict=True)},
    }


def sklearn_partial_fit(source: str, output: str) -> Result:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    files = _files(source)
    for path in files:
        scaler.partial_fit(pq.read_table(path, columns=FEATURES).to_pandas())
    rows = 0
    for path in files:
        table = pq.read_table(path)
        scaled = scaler.transform(table.select(FEATURES).to_pandas())
        for j, c in enumerate(FEATURES):
            table = table.set_column(table.schema.get_field_index(c), c, pa.array(scaled[:, j]))
        _write_plain(table, Path(output) / path.relative_to(source))
        rows += table.num_rows
    return {
        "rows_out": rows,
        "quantiles": None,
        "mean": {c: float(m) for c, m in zip(FEATURES, scaler.mean_, strict=True)},
        "std": {c: float(s) for c, s in zip(FEATURES, scaler.scale_, strict=True)},
    }


TOOLS: dict[str, Callable[[str, str], Result]] = {
    "pyarrow read (floor)": floor_read,
    "pyarrow read+write (floor)": floor_read_write,
    "normpipe run": normpipe_run,
    "normpipe fit, robust": normpipe_fit_robust,
    "normpipe run, robust": normpipe_run_robust,
    "normpipe, exact quantiles": normpipe_exact,
    "normpipe, per key group": normpipe_groups,
    "DuckDB approx quantiles": duckdb_approx,
    "Polars exact quantiles": polars_exact,
    "dask-ml StandardScaler": dask_ml_scaler,
    "scikit-learn partial_fit": sklearn_partial_fit,
}


def main() -> None:
    tool, source, output = sys.argv[1:4]
    result = TOOLS[tool](source, output)
    print(json.dumps(result, default=float))


if __name__ == "__main__":
    main()
