"""normpipe.sklearn.Normalizer: scikit-learn's own estimator checks, equality with
scikit-learn's scalers inside a Pipeline, and the same numbers whether fitted in memory,
from Parquet through the Dask pass, or loaded from an artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from distributed import Client
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import normpipe
from normpipe.sklearn import Normalizer


@pytest.mark.parametrize(
    "method",
    [
        "zscore",
        {"method": "minmax", "feature_range": [-1, 1], "clip": True},
        "robust",
        "maxabs",
        "signed_log",
        {"method": "quantile", "output": "normal"},
        {"method": "clip", "then": "minmax"},
        "auto",
    ],
)
def test_passes_scikit_learns_estimator_checks(method: str | dict) -> None:  # type: ignore[type-arg]
    # every check applies except check_array_api_input (numpy only: it skips itself);
    # log1p is left out because the checks' data has negative values, which log1p refuses
    results = check_estimator(Normalizer(method=method), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    assert not failed
    assert len(results) > 40


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        ("zscore", StandardScaler()),
        ("minmax", MinMaxScaler()),
        ("maxabs", MaxAbsScaler()),
        ("robust", RobustScaler()),
    ],
)
def test_pipeline_equals_scikit_learns_scalers(
    diabetes: pd.DataFrame, method: str, reference: object
) -> None:
    X, y = diabetes.drop(columns="target"), diabetes["target"]
    ours = make_pipeline(Normalizer(method=method), Ridge(alpha=0.1)).fit(X, y)
    theirs = make_pipeline(reference, Ridge(alpha=0.1)).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-10)
    np.testing.assert_allclose(ours[0].transform(X), theirs[0].transform(X), rtol=1e-10, atol=1e-12)


def test_sources_outputs_and_inverse(tmp_path: Path, client: Client, nhanes_numeric: pd.DataFrame) -> None:
    frame = nhanes_numeric.iloc[:, :6].astype("float64")
    overrides = {frame.columns[1]: "minmax", frame.columns[2]: {"method": "quantile", "n_quantiles": 100}}
    memory = Normalizer(method="robust", overrides=overrides).fit(frame)
    assert list(memory.get_feature_names_out()) == list(frame.columns)
    want = memory.transform(frame)
    assert np.isnan(want).sum() == frame.isna().sum().sum()  # NaN kept where it was
    # the Dask pass over Parquet, exact quantiles: the same statistics, so the same numbers
    data = tmp_path / "data"
    data.mkdir()
    frame.iloc[:4000].to_parquet(data / "a.parquet")
    frame.iloc[4000:].to_parquet(data / "b.parquet")
    stats = normpipe.fit(data, client=client, method="robust", overrides=overrides, quantiles="exact")
    loaded = Normalizer.from_stats(stats)
    np.testing.assert_allclose(loaded.transform(frame), want, rtol=1e-12, atol=1e-12)
    stats.save(tmp_path / "stats.json")
    saved = Normalizer.from_stats(tmp_path / "stats.json")
    np.testing.assert_allclose(saved.transform(frame), want, rtol=1e-12, atol=1e-12)
    # the artifact's own transform gives the same numbers
    np.testing.assert_allclose(stats.transform(frame).to_numpy(), want, rtol=1e-12, atol=1e-12)
    # set_output: pandas and Polars frames with the feature names
    as_pandas = Normalizer(method="robust", overrides=overrides).set_output(transform="pandas").fit(frame)
    out = as_pandas.transform(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(frame.columns)
    np.testing.assert_allclose(out.to_numpy(), want, rtol=1e-12, atol=1e-12)
    as_polars = Normalizer(method="robust", overrides=overrides).set_output(transform="polars").fit(frame)
    polars_out = as_polars.transform(frame)
    assert isinstance(polars_out, pl.DataFrame)
    np.testing.assert_allclose(polars_out.to_numpy(), want, rtol=1e-12, atol=1e-12)
    # inverse: back to the original values
    np.testing.assert_allclose(memory.inverse_transform(want), frame.to_numpy(), rtol=1e-9, atol=1e-9)
    # fit(path): the Dask pass on a cluster of its own
    from_parquet = Normalizer(method="robust", overrides=overrides).fit(data)
    assert list(from_parquet.feature_names_in_) == list(frame.columns)
    np.testing.assert_allclose(from_parquet.transform(frame), want, rtol=1e-12, atol=1e-12)
    # wrong number of features: scikit-learn's own error
    with pytest.raises(ValueError, match="features"):
        memory.transform(frame.iloc[:, :3].to_numpy())


def test_column_transformer_with_other_columns(diabetes: pd.DataFrame) -> None:
    X = diabetes.drop(columns="target")
    ct = ColumnTransformer(
        [("z", Normalizer(), ["bmi", "bp"]), ("m", Normalizer(method="minmax"), ["s1", "s2"])],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    out = ct.fit_transform(X)
    assert list(out.columns[:4]) == ["bmi", "bp", "s1", "s2"]
    np.testing.assert_allclose(out["bmi"], (X["bmi"] - X["bmi"].mean()) / X["bmi"].std(ddof=0), rtol=1e-12)
    np.testing.assert_allclose(out["s1"], (X["s1"] - X["s1"].min()) / np.ptp(X["s1"]), rtol=1e-12)
    np.testing.assert_array_equal(out["age"], X["age"])
