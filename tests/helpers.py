"""Test helpers: statistics of an in-memory frame through the core, and rank checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from normpipe.artifact import Stats
from normpipe.core.column import TableState
from normpipe.scalers import parse_scaler


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """A frame as an Arrow table that keeps float NaN as NaN (pandas' own conversion
    would turn NaN into nulls)."""
    return pa.table(
        {
            name: pa.array(col.to_numpy(), from_pandas=False) if col.dtype == np.float64 else pa.array(col)
            for name, col in frame.items()
        }
    )


def stats_of(frame: pd.DataFrame, method: Any = "zscore", k: int = 4000, **overrides: Any) -> Stats:
    """Fit on a whole in-memory frame (one block), as the Dask path does per file."""
    table = to_arrow(frame)
    columns = list(frame.columns)
    state = TableState.from_block(table, columns, k)
    specs = {c: parse_scaler(overrides.get(c, method)) for c in columns}
    dtypes = {c: str(table.schema.field(c).type) for c in columns}
    return Stats.from_state(
        state, specs, dtypes, k, {"source": "memory", "root": "", "sha256": "", "files": []}
    )


def true_rank_interval(values: np.ndarray, estimate: float) -> tuple[float, float]:
    """Fractions of the finite values below, and at or below, ``estimate``."""
    finite = np.sort(values[np.isfinite(values)])
    n = finite.size
    return (np.searchsorted(finite, estimate, "left") / n, np.searchsorted(finite, estimate, "right") / n)


def assert_rank_close(values: np.ndarray, estimate: float, p: float, eps: float) -> None:
    """``estimate`` is a p-quantile of ``values`` to within normalized rank error ``eps``."""
    low, high = true_rank_interval(values, estimate)
    assert low - eps <= p <= high + eps, f"p={p}: estimate {estimate} has rank [{low}, {high}], eps {eps}"


def assert_roundtrip(stats: Stats, frame: pd.DataFrame) -> None:
    """inverse(transform(x)) == x within 1e-12 relative to max(|x|, |center|, scale).

    Rounding in ``(x - center) / scale * scale + center`` is relative to the larger of
    the value and the parameters, so that is the scale the bound is stated in.
    """
    back = stats.inverse_transform(stats.transform(frame))
    for name in stats.columns:
        x = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        params = stats.scalers[name].params
        size = np.maximum(np.abs(x), max(abs(v) for v in params.values()))
        got = back[name].to_numpy()
        finite = np.isfinite(x)
        assert np.all(np.abs(got[finite] - x[finite]) <= 1e-12 * size[finite]), name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(x))


def assert_reads_everywhere(output: Any) -> None:
    """A normpipe output reads back in pandas, pyarrow.dataset, Polars and DuckDB:
    every part listed in ``_SUCCESS``, the manifest's row count, floating-point types
    for floating-point columns, and the same values in every reader."""
    import json
    from pathlib import Path

    import duckdb
    import polars as pl
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    root = Path(output)
    manifest = json.loads((root / "_SUCCESS").read_text())
    files = [root / entry["path"] for entry in manifest["files"]]
    rows = manifest["rows_out"]
    reference = pa.concat_tables([pq.read_table(f, partitioning=None) for f in files])
    assert reference.num_rows == rows

    assert sum(len(pd.read_parquet(f)) for f in files) == rows
    assert len(pd.read_parquet(root)) == rows
    assert ds.dataset(root, format="parquet", partitioning="hive").count_rows() == rows
    frame = pl.read_parquet([str(f) for f in files], hive_partitioning=False)
    assert frame.height == rows
    listed = ", ".join(f"'{f.as_posix()}'" for f in files)
    con = duckdb.connect()
    duck = con.sql(f"SELECT * FROM read_parquet([{listed}], hive_partitioning = false)").to_arrow_table()
    assert duck.num_rows == rows
    for field in reference.schema:
        if not pa.types.is_floating(field.type):
            continue
        want = reference.column(field.name).to_numpy(zero_copy_only=False).astype(np.float64)
        from_polars = frame[field.name].to_numpy().astype(np.float64)
        from_duck = duck.column(field.name).to_numpy(zero_copy_only=False).astype(np.float64)
        assert frame.schema[field.name].is_float(), field.name
        assert pa.types.is_floating(duck.schema.field(field.name).type), field.name
        np.testing.assert_array_equal(from_polars, want, err_msg=f"polars: {field.name}")
        np.testing.assert_array_equal(from_duck, want, err_msg=f"duckdb: {field.name}")
