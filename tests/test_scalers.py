"""Scalers against scikit-learn (moments) and numpy's exact quantiles (robust)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from normpipe.scalers import fit_scaler, parse_scaler
from tests.helpers import assert_rank_close, assert_roundtrip, stats_of

SKLEARN = {
    "zscore": lambda: StandardScaler(),
    "minmax": lambda: MinMaxScaler(),
    "maxabs": lambda: MaxAbsScaler(),
}


def synthetic(rng: np.random.Generator, n: int = 20_000) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "normal": rng.normal(3.0, 2.0, n),
            "offset": 1e9 + rng.normal(0.0, 1e-3, n),
            "lognormal": rng.lognormal(0.0, 2.0, n),
            "uniform": rng.uniform(-5.0, 5.0, n),
            "heavy": rng.standard_t(2.0, n),
            "ints": rng.integers(-1000, 1000, n).astype(np.float64),
        }
    )
    frame.loc[rng.random(n) < 0.02, "normal"] = np.nan
    return frame


@pytest.fixture(params=["diabetes", "nhanes", "synthetic"])
def frame(request: pytest.FixtureRequest, rng: np.random.Generator) -> pd.DataFrame:
    if request.param == "synthetic":
        return synthetic(rng)
    return request.getfixturevalue("diabetes" if request.param == "diabetes" else "nhanes_numeric")


@pytest.mark.parametrize("method", ["zscore", "minmax", "maxabs"])
def test_matches_sklearn(frame: pd.DataFrame, method: str) -> None:
    stats = stats_of(frame, method)
    compared = [c for c in frame.columns if not (method == "zscore" and c == "offset")]
    expected = SKLEARN[method]().fit_transform(frame[compared].to_numpy())
    got = stats.transform(frame)[compared].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, equal_nan=True)
    assert_roundtrip(stats, frame)


def test_zscore_parameters_match_sklearn(frame: pd.DataFrame) -> None:
    frame = frame.drop(columns=["offset"], errors="ignore")  # see test_offset_column_std_is_exact_to_1e_6
    stats = stats_of(frame)
    reference = StandardScaler().fit(frame.to_numpy())
    center = [stats.scalers[c].params["center"] for c in frame.columns]
    scale = [stats.scalers[c].params["scale"] for c in frame.columns]
    np.testing.assert_allclose(center, reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scale, reference.scale_, rtol=1e-10)


def test_offset_column_std_is_exact_to_1e_6(rng: np.random.Generator) -> None:
    """scikit-learn calls this column constant (scale 1); its std is 1e-3 and is kept."""
    values = 1e9 + rng.normal(0.0, 1e-3, 100_000)
    frame = pd.DataFrame({"x": values})
    stats = stats_of(frame)
    exact_std = np.std(values - 1e9)  # removing the offset first is exact here
    np.testing.assert_allclose(stats.summary("x").std, exact_std, rtol=1e-6)
    np.testing.assert_allclose(stats.scalers["x"].params["scale"], exact_std, rtol=1e-6)
    # The center is the correctly rounded mean: within half a unit in the last place of 1e9.
    center = stats.scalers["x"].params["center"]
    assert abs((center - 1e9) - np.mean(values - 1e9)) <= np.spacing(1e9) / 2
    z = stats.transform(frame)["x"].to_numpy()
    assert abs(z.mean()) <= np.spacing(1e9) / exact_std
    assert z.std() == pytest.approx(1.0, rel=1e-6)
    assert StandardScaler().fit(frame.to_numpy()).scale_[0] == 1.0


@pytest.mark.parametrize("quantile_range", [(25.0, 75.0), (10.0, 90.0)])
def test_robust_center_and_scale_within_rank_error(
    frame: pd.DataFrame, quantile_range: tuple[float, float]
) -> None:
    spec = {"method": "robust", "quantile_range": quantile_range}
    stats = stats_of(frame, spec)
    low, high = (q / 100 for q in quantile_range)
    for name in frame.columns:
        values = frame[name].to_numpy()
        if np.isfinite(values).sum() == 0:
            continue
        s = stats.summary(name)
        eps = s.rank_error
        params = stats.scalers[name].params
        assert_rank_close(values, params["center"], 0.5, eps)
        assert_rank_close(values, s.quantiles[low], low, eps)
        assert_rank_close(values, s.quantiles[high], high, eps)
        iqr = s.quantiles[high] - s.quantiles[low]
        assert params["scale"] == (iqr if iqr >= 10 * np.finfo(float).eps else 1.0)


def test_robust_on_small_data_equals_sklearn_up_to_interpolation(diabetes: pd.DataFrame) -> None:
    """On fewer rows than k the sketch is exact: center and IQR bracket numpy's values."""
    stats = stats_of(diabetes, "robust")
    reference = RobustScaler().fit(diabetes.to_numpy())
    ordered = np.sort(diabetes.to_numpy(), axis=0)
    n = len(diabetes)
    for i, name in enumerate(diabetes.columns):
        center = stats.scalers[name].params["center"]
        lo, hi = ordered[(n - 1) // 2, i], ordered[n // 2, i]
        assert lo <= center <= hi
        assert lo <= reference.center_[i] <= hi


def test_robust_unit_variance_and_options(rng: np.random.Generator) -> None:
    values = rng.normal(0, 3.0, 50_000)
    frame = pd.DataFrame({"x": values})
    summary = stats_of(frame, "robust").summary("x")  # one sketch for both (KLL is randomized)
    plain = fit_scaler(parse_scaler("robust"), summary).params
    unit = fit_scaler(parse_scaler({"method": "robust", "unit_variance": True}), summary).params
    adjust = NormalDist().inv_cdf(0.75) - NormalDist().inv_cdf(0.25)
    assert unit["scale"] == pytest.approx(plain["scale"] / adjust, rel=1e-12)
    assert unit["scale"] == pytest.approx(3.0, rel=0.02)  # a normal's std, recovered from its IQR
    off = stats_of(frame, {"method": "robust", "with_centering": False, "with_scaling": False})
    assert off.scalers["x"].params == {"center": 0.0, "scale": 1.0}


def test_zscore_options_and_minmax_range_clip(rng: np.random.Generator) -> None:
    frame = pd.DataFrame({"x": rng.normal(5, 2, 1000)})
    expected = StandardScaler(with_mean=False).fit_transform(frame.to_numpy())
    got = stats_of(frame, {"method": "zscore", "with_mean": False}).transform(frame).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    spec = {"method": "minmax", "feature_range": (-1, 1), "clip": True}
    stats = stats_of(frame, spec)
    wider = pd.DataFrame({"x": [-100.0, 5.0, 100.0, np.inf, np.nan]})
    reference = MinMaxScaler(feature_range=(-1, 1), clip=True).fit(frame.to_numpy())
    out = stats.transform(wider)["x"].to_numpy()
    np.testing.assert_allclose(out[:3], reference.transform(wider.to_numpy()[:3]).ravel(), rtol=1e-12)
    assert out[3] == 1.0
    assert np.isnan(out[4])


def test_constant_column_gets_scale_one() -> None:
    frame = pd.DataFrame({"c": np.full(100, 7.5), "z": np.zeros(100), "big": np.full(100, 1e9)})
    for method in ("zscore", "minmax", "maxabs", "robust"):
        stats = stats_of(frame, method)
        out = stats.transform(frame).to_numpy()
        assert np.isfinite(out).all(), method
        if method in SKLEARN:
            np.testing.assert_allclose(out, SKLEARN[method]().fit_transform(frame.to_numpy()), rtol=1e-12)
        for name in frame.columns:
            assert stats.scalers[name].params["scale"] in (1.0, 1e9, 7.5)  # maxabs divides by |value|


def test_near_constant_column_matches_sklearn(rng: np.random.Generator) -> None:
    frame = pd.DataFrame({"x": 1.0 + rng.normal(0, 1e-9, 1000), "y": 5.0 + np.repeat([0.0, 1e-15], 500)})
    got = stats_of(frame).transform(frame).to_numpy()
    np.testing.assert_allclose(got, StandardScaler().fit_transform(frame.to_numpy()), rtol=1e-9, atol=1e-9)


def test_all_nan_column_is_identity_and_inf_is_kept() -> None:
    frame = pd.DataFrame({"nan": [np.nan] * 4, "x": [1.0, 2.0, np.inf, -np.inf]})
    stats = stats_of(frame)
    out = stats.transform(frame)
    assert out["nan"].isna().all()
    assert stats.summary("x").count == 2
    assert stats.summary("x").posinf == 1
    np.testing.assert_array_equal(out["x"].to_numpy(), [-1.0, 1.0, np.inf, -np.inf])


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValidationError, match="feature_range"):
        parse_scaler({"method": "minmax", "feature_range": (1, 0)})
    with pytest.raises(ValidationError, match="quantile_range"):
        parse_scaler({"method": "robust", "quantile_range": (80, 20)})
    with pytest.raises(ValidationError):
        parse_scaler("softmax")
    with pytest.raises(ValidationError, match="unit_variance"):
        parse_scaler({"method": "robust", "quantile_range": (0, 100), "unit_variance": True})
