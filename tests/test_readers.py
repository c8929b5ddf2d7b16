"""What normpipe writes reads back in pandas, Polars, DuckDB and pyarrow, with the right
types: inputs written by pandas (nullable and extension dtypes, stored indexes) and by
pyarrow, every reader compared with :meth:`Stats.transform` on the same rows."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from distributed import Client

import normpipe
from normpipe.artifact import Stats

N = 3_000
#: Numeric pandas dtypes that normpipe normalizes.
NORMALIZED = ["int64_nullable", "int32_nullable", "uint8_nullable", "float32_nullable", "plain_float"]
#: Columns that pass through, with the dtype pandas must give them back.
KEPT = {
    "flag": pd.BooleanDtype(),
    "colour": pd.CategoricalDtype(["blue", "green", "red"]),
    "label": pd.StringDtype("pyarrow"),
}


def pandas_frame(rng: np.random.Generator, n: int, index: str) -> pd.DataFrame:
    """Every kind of column a pandas user writes, with missing values."""
    missing = rng.random(n) < 0.1
    frame = pd.DataFrame(
        {
            "int64_nullable": pd.array(np.where(missing, None, rng.integers(-500, 500, n)), dtype="Int64"),
            "int32_nullable": pd.array(rng.integers(0, 10_000, n), dtype="Int32"),
            "uint8_nullable": pd.array(np.where(missing, None, rng.integers(0, 255, n)), dtype="UInt8"),
            "float32_nullable": pd.array(np.where(missing, None, rng.normal(5, 2, n)), dtype="Float32"),
            "plain_float": np.where(missing, np.nan, rng.lognormal(0, 1, n)),
            "flag": pd.array(np.where(missing, None, rng.random(n) < 0.5), dtype="boolean"),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "label": pd.array([f"row-{i}" for i in range(n)], dtype="string[pyarrow]"),
        }
    )
    if index == "named":
        frame.index = pd.Index(rng.permutation(n) + 10_000, name="row_id")
    return frame


@pytest.fixture(params=["range", "named"])
def pandas_written(request: pytest.FixtureRequest, tmp_path: Path, rng: np.random.Generator) -> Path:
    """Two files written by ``DataFrame.to_parquet`` (a range or a named index)."""
    directory = tmp_path / "in"
    directory.mkdir()
    frame = pandas_frame(rng, N, request.param)
    frame.iloc[: N // 3].to_parquet(directory / "part-0.parquet")
    frame.iloc[N // 3 :].to_parquet(directory / "part-1.parquet")
    return directory


def expected(source: Path, stats: Stats) -> pd.DataFrame:
    """The input as pandas reads it, mapped by the artifact in memory."""
    frame = pd.concat([pd.read_parquet(f) for f in sorted(source.glob("*.parquet"))])
    return stats.transform(frame)


def check_values(got: pd.DataFrame, want: pd.DataFrame, reader: str) -> None:
    for name in NORMALIZED:
        np.testing.assert_allclose(
            got[name].to_numpy(dtype=np.float64, na_value=np.nan),
            want[name].to_numpy(dtype=np.float64, na_value=np.nan),
            rtol=1e-12,
            atol=1e-12,
            err_msg=f"{reader}: {name}",
        )


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pandas_written_input_reads_back_everywhere(
    client: Client, pandas_written: Path, tmp_path: Path, dtype: str
) -> None:
    out = tmp_path / "out"
    stats, _ = normpipe.run(pandas_written, out, client=client, dtype=dtype)
    assert sorted(stats.columns) == sorted(NORMALIZED)  # the index is never normalized
    want = expected(pandas_written, stats)
    if dtype == "float32":
        for name in NORMALIZED:
            want[name] = want[name].astype(np.float32).astype(np.float64)

    # pandas: the whole output folder, and one file at a time
    got = pd.read_parquet(out)
    for name in NORMALIZED:
        assert got[name].dtype == np.dtype(dtype), name
    for name, kept in KEPT.items():
        assert got[name].dtype == kept, name
    assert got.index.name == want.index.name
    np.testing.assert_array_equal(got.index.to_numpy(), want.index.to_numpy())
    check_values(got, want, "pandas")
    for name in KEPT:
        pd.testing.assert_series_equal(got[name], want[name])

    # pyarrow.dataset
    table = ds.dataset(out, format="parquet").to_table()
    for name in NORMALIZED:
        assert table.schema.field(name).type == (pa.float32() if dtype == "float32" else pa.float64())
    check_values(table.to_pandas(), want.reset_index(drop=want.index.name is None), "pyarrow.dataset")

    # Polars
    frame = pl.read_parquet(sorted(out.glob("*.parquet")))
    for name in NORMALIZED:
        assert frame.schema[name] == (pl.Float32 if dtype == "float32" else pl.Float64), name
    assert frame.schema["label"] == pl.String
    check_values(frame.to_pandas(), want.reset_index(drop=True), "polars")

    # DuckDB
    con = duckdb.connect()
    files = ", ".join(f"'{f}'" for f in sorted(out.glob("*.parquet")))
    got_duck = con.execute(f"SELECT * FROM read_parquet([{files}])").df()
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet([{files}])").fetchall()
    column_types = {row[0]: row[1] for row in described}
    for name in NORMALIZED:
        assert column_types[name] == ("FLOAT" if dtype == "float32" else "DOUBLE"), name
    check_values(got_duck, want.reset_index(drop=True), "duckdb")


def test_output_metadata_names_float_for_every_normalized_column(
    client: Client, pandas_written: Path, tmp_path: Path
) -> None:
    """The pandas metadata entry of each normalized column says float64; the others keep
    theirs, byte for byte."""
    normpipe.run(pandas_written, tmp_path / "out", client=client)
    before = pq.read_schema(pandas_written / "part-0.parquet").pandas_metadata
    after = pq.read_schema(tmp_path / "out" / "part-0.parquet").pandas_metadata
    assert after["index_columns"] == before["index_columns"]
    entries = {c["name"]: c for c in after["columns"]}
    for column in before["columns"]:
        if column["name"] in NORMALIZED:
            assert (entries[column["name"]]["numpy_type"], entries[column["name"]]["pandas_type"]) == (
                "float64",
                "float64",
            )
        else:
            assert entries[column["name"]] == column
