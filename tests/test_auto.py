"""The profile (skewness, kurtosis, Tukey share) and `--method auto` with its reasons."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pyarrow as pa
import pytest
import scipy.stats

from normpipe.artifact import Stats
from normpipe.core.column import TableState
from normpipe.core.moments import Moments
from normpipe.scalers import parse_scaler

N = 200_000


def fitted(
    values: dict[str, np.ndarray],
    method: str | dict[str, object] = "auto",
    parts: int = 7,
    distinct: bool = False,
) -> Stats:
    """Stats as a fit computes them: states of uneven blocks, merged, then finalized."""
    table = pa.table(values)
    bounds = np.linspace(0, table.num_rows, parts + 1).astype(int)
    specs = {name: parse_scaler(method) for name in values}
    log = [name for name, spec in specs.items() if spec.needs_log]
    state = TableState.merge_all(
        [
            TableState.from_block(
                table.slice(a, b - a), list(values), 4000, log, list(values) if distinct else ()
            )
            for a, b in itertools.pairwise(bounds)
        ]
    )
    dataset = {"source": "mem", "root": "mem", "files": [], "sha256": "0" * 64}
    return Stats.from_state(state, specs, dict.fromkeys(values, "double"), 4000, dataset)


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    outliers = rng.normal(size=N)
    outliers[rng.random(N) < 0.02] *= 50
    return {
        "normal": rng.normal(10, 2, N),
        "uniform": rng.uniform(-3, 7, N),
        "lognormal": rng.lognormal(0, 1, N),
        "student_t": rng.standard_t(2, N),
        "outliers": outliers,
        "income": rng.lognormal(3, 1, N),
        "waiting": rng.exponential(2.0, N),
        "pareto": rng.pareto(2.0, N),
        "rain": np.where(rng.random(N) < 0.8, 0.0, rng.exponential(0.2, N)),
    }


def test_higher_moments_merge_to_scipy(columns: dict[str, np.ndarray]) -> None:
    for values in columns.values():
        shifted = values + 1e6  # a large offset, merged over uneven blocks
        merged = Moments()
        for block in np.array_split(shifted, 13):
            merged = merged.merge(Moments.from_block(block))
        # rel 1e-9; near-zero skewness is compared to 1e-9 absolute (float64 rounding
        # of deviations from 1e6 alone is ~1e-10)
        assert merged.skewness == pytest.approx(scipy.stats.skew(shifted), rel=1e-9, abs=1e-9)
        assert merged.kurtosis == pytest.approx(scipy.stats.kurtosis(shifted), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("column", "method"),
    [
        ("normal", "zscore"),
        ("uniform", "minmax"),
        ("lognormal", "robust"),  # log1p(lognormal(0, 1)) keeps skewness 1.1
        ("income", "log1p"),
        ("waiting", "log1p"),
        ("student_t", "signed_log"),
        ("outliers", "robust"),
        ("pareto", "robust"),
        ("rain", "minmax"),  # 80% zeros: the IQR is 0
    ],
)
def test_auto_picks_the_expected_method_and_says_why(
    columns: dict[str, np.ndarray], column: str, method: str
) -> None:
    stats = fitted({column: columns[column]})
    scaler = stats.scalers[column]
    assert scaler.method == method
    summary = stats.summary(column)
    values = columns[column]
    assert summary.skewness == pytest.approx(scipy.stats.skew(values), rel=1e-9, abs=1e-12)
    q1, q3 = np.quantile(values, [0.25, 0.75])
    exact_outside = np.mean((values < q1 - 1.5 * (q3 - q1)) | (values > q3 + 1.5 * (q3 - q1)))
    assert abs(summary.outside_fences - exact_outside) < 2 * summary.rank_error + 1e-3
    # the reason quotes the profile's own numbers
    assert scaler.reason.startswith(method + ":")
    numbers = re.findall(r"-?\d+\.\d+", scaler.reason)
    assert f"{summary.skewness:.2f}" in numbers
    assert f"{summary.kurtosis:.2f}" in numbers
    assert f"{summary.outside_fences:.1%}".rstrip("%") in numbers
    if column == "rain":
        assert f"{summary.min_share:.1%} at the minimum" in scaler.reason
        assert summary.min_share == np.mean(values == 0.0)
    if method in ("log1p", "signed_log"):  # and the shape after the log, from its moments
        logged = np.sign(values) * np.log1p(np.abs(values))
        assert f"{scipy.stats.skew(logged):.2f}" in numbers
        assert f"{scipy.stats.kurtosis(logged):.2f}" in numbers


def test_auto_choice_and_reason_survive_the_artifact(columns: dict[str, np.ndarray]) -> None:
    stats = fitted({"uniform": columns["uniform"], "lognormal": columns["lognormal"]})
    loaded = Stats.from_bytes(stats.to_bytes())
    for name in ("uniform", "lognormal"):
        assert loaded.scalers[name].method == stats.scalers[name].method
        assert loaded.scalers[name].reason == stats.scalers[name].reason
        assert loaded.summary(name).skewness == pytest.approx(stats.summary(name).skewness, rel=1e-12)
    frame = {"uniform": columns["uniform"][:5], "lognormal": columns["lognormal"][:5]}
    import pandas as pd

    df = pd.DataFrame(frame)
    pd.testing.assert_frame_equal(loaded.inverse_transform(loaded.transform(df)), df, rtol=1e-12)


def test_constant_column_reason() -> None:
    stats = fitted({"c": np.full(100, 3.0)}, parts=2)
    assert stats.scalers["c"].reason == "zscore: constant column"


def test_zero_share_is_exact_and_kept(columns: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(3)
    values = np.where(rng.random(N) < 0.37, 0.0, rng.exponential(1.0, N))
    values[::1000] = np.nan
    stats = fitted({"z": values})
    finite = values[np.isfinite(values)]
    assert stats.summary("z").zero_share == pytest.approx(np.mean(finite == 0.0), rel=1e-12)
    loaded = Stats.from_bytes(stats.to_bytes())
    assert loaded.summary("z").zero_share == stats.summary("z").zero_share


def test_histogram_from_the_sketch_matches_numpy(columns: dict[str, np.ndarray]) -> None:
    values = columns["lognormal"]
    state = TableState.from_block(pa.table({"x": values}), ["x"], 4000).columns["x"]
    edges, shares = state.histogram(25)
    counts, numpy_edges = np.histogram(values, bins=25, range=(values.min(), values.max()))
    np.testing.assert_allclose(edges, numpy_edges, rtol=1e-12)
    bound = 2 * state.sketch.rank_error
    assert np.max(np.abs(np.array(shares) - counts / values.size)) <= bound
    assert sum(shares) == pytest.approx(1.0)
