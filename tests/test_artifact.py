"""The stats artifact: round trip, validation, and the in-memory transform."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normpipe.artifact import VERSION, Stats
from normpipe.core.column import TableState
from normpipe.errors import ArtifactError
from normpipe.fingerprint import Fingerprint
from normpipe.scalers import parse_scaler
from tests.helpers import assert_roundtrip, stats_of
from tests.strategies import any_floats

METHODS = st.sampled_from(["zscore", "minmax", "robust", "maxabs"])


def same_stats(a: Stats, b: Stats) -> None:
    assert a.rows == b.rows
    assert a.k == b.k
    assert list(a.columns) == list(b.columns)
    for name in a.columns:
        ca, cb = a.columns[name], b.columns[name]
        assert ca.scaler == cb.scaler
        assert ca.state.sketch.data == cb.state.sketch.data
        assert ca.state.moments.count == cb.state.moments.count
        for field in ("mean", "std", "min", "max"):
            x, y = getattr(ca.summary, field), getattr(cb.summary, field)
            assert x == y or (np.isnan(x) and np.isnan(y))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hnp.arrays(np.float64, st.integers(1, 50), elements=any_floats), METHODS)
def test_save_load_round_trip(tmp_path: Path, values: np.ndarray, method: str) -> None:
    frame = pd.DataFrame({"x": values, "y": values[::-1].copy()})
    stats = stats_of(frame, method, k=64)
    path = tmp_path / "stats.json"
    sha = stats.save(path)
    loaded = Stats.load(path)
    same_stats(stats, loaded)
    assert loaded.sha256 == sha == stats.sha256 == hashlib.sha256(stats.to_bytes()).hexdigest()
    assert loaded.to_bytes() == path.read_bytes()  # stable serialization
    pd.testing.assert_frame_equal(loaded.transform(frame), stats.transform(frame))


def test_artifact_is_plain_readable_json(tmp_path: Path, diabetes: pd.DataFrame) -> None:
    stats = stats_of(diabetes, "robust", bmi="zscore")
    stats.save(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert (doc["format"], doc["version"]) == ("normpipe.stats", VERSION)
    assert doc["quantile_sketch"]["rank_error"] == pytest.approx(7.2e-4, rel=0.01)
    bmi = doc["columns"]["bmi"]
    assert bmi["scaler"] == {"method": "zscore", "with_mean": True, "with_std": True}
    assert bmi["mean"] == pytest.approx(diabetes["bmi"].mean(), rel=1e-12)
    assert bmi["std"] == pytest.approx(diabetes["bmi"].std(ddof=0), rel=1e-12)
    assert doc["columns"]["age"]["scaler"]["quantile_range"] == [25.0, 75.0]
    assert set(doc["columns"]["age"]["quantiles"]) >= {"0.25", "0.5", "0.75"}


def test_all_nan_column_saves_nulls(tmp_path: Path) -> None:
    stats = stats_of(pd.DataFrame({"x": [np.nan, np.nan]}))
    stats.save(tmp_path / "s.json")
    column = json.loads((tmp_path / "s.json").read_text())["columns"]["x"]
    assert column["mean"] is None
    assert column["min"] is None
    assert column["nans"] == 2
    assert Stats.load(tmp_path / "s.json").transform(pd.DataFrame({"x": [1.0]}))["x"].iloc[0] == 1.0


@pytest.fixture
def saved(tmp_path: Path, diabetes: pd.DataFrame) -> Path:
    path = tmp_path / "stats.json"
    stats_of(diabetes).save(path)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text[: len(text) // 2], "invalid JSON"),
        (lambda text: "", "invalid JSON"),
        (lambda text: '{"hello": 1}', "not a normpipe stats file"),
        (lambda text: "[1, 2]", "not a normpipe stats file"),
        (lambda text: text.replace('"version": 1', '"version": 99'), "newer than this normpipe reads"),
        (lambda text: text.replace('"version": 1', '"version": "one"'), "invalid artifact version"),
        (
            lambda text: text.replace('"method": "zscore"', '"method": "softmax"', 1),
            "invalid stats artifact at",
        ),
        (
            lambda text: text.replace('"count": ', '"count": -', 1),
            "invalid stats artifact at 'columns.age.count'",
        ),
        (lambda text: text.replace('"sketch": "', '"sketch": "AAAA', 1), "column 'age' is damaged"),
        (
            lambda text: text.replace('"params": {\n        "center"', '"params": {\n        "centre"', 1),
            "column 'age' is damaged .zscore has the parameters center, scale",
        ),
        (
            lambda text: re.sub(r'"scale": [0-9.e+-]+', '"scale": 0.0', text, count=1),
            "column 'age' is damaged .parameter 'scale' is 0.0",
        ),
    ],
)
def test_malformed_artifacts_are_rejected(saved: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    # Without its checksum (as files from before it was added), so that each edit
    # reaches the check it is meant for; with it, any edit fails the checksum.
    text = re.sub(r',\n  "checksum": "sha256:[0-9a-f]+"', "", saved.read_text())
    assert "checksum" not in text
    saved.write_text(mutate(text))
    with pytest.raises(ArtifactError, match=message) as info:
        Stats.load(saved)
    assert str(saved) in str(info.value)
    assert "\n" not in str(info.value)


def test_any_edit_fails_the_checksum(saved: Path) -> None:
    text = saved.read_text()
    Stats.from_bytes(re.sub(r',\n  "checksum": "sha256:[0-9a-f]+"', "", text).encode())  # loads
    saved.write_text(text.replace('"rows": ', '"rows": 1', 1))
    with pytest.raises(ArtifactError, match="checksum does not match"):
        Stats.load(saved)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="stats file not found"):
        Stats.load(tmp_path / "nope.json")
    with pytest.raises(ArtifactError, match="is a directory"):
        Stats.load(tmp_path)


def test_frame_transform_checks_columns_and_keeps_input(diabetes: pd.DataFrame) -> None:
    stats = stats_of(diabetes)
    original = diabetes.copy()
    out = stats.transform(diabetes)
    pd.testing.assert_frame_equal(diabetes, original)  # never changed in place
    assert out["bmi"].mean() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ArtifactError, match="column 'bmi' is in the stats artifact but not in the frame"):
        stats.transform(diabetes.drop(columns=["bmi"]))
    predictions = pd.DataFrame({"target": out["target"]})
    back = stats.inverse_transform(predictions, columns=["target"])
    np.testing.assert_allclose(back["target"], diabetes["target"], rtol=1e-12)
    with pytest.raises(ArtifactError, match="column 'nope' is not in the stats artifact"):
        stats.inverse_column("nope", [1.0])


def test_nullable_and_integer_frames(diabetes: pd.DataFrame) -> None:
    frame = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [1.0, 2.0, 3.0]})
    stats = stats_of(frame.astype({"a": "float64"}))
    out = stats.transform(frame)
    assert np.isnan(out["a"].iloc[1])
    assert out["a"].iloc[0] == -1.0
    assert_roundtrip(stats, frame.astype({"a": "float64"}))


def _single_rows(values: np.ndarray) -> TableState:
    """The state of ``values`` merged one row at a time (a block per row, the worst case
    for a large common offset)."""
    state = TableState()
    for value in values:
        state = state.merge(TableState.from_block(pa.table({"x": [value]}), ["x"], 64))
    return state


def test_compensated_mean_survives_save_and_update(tmp_path: Path) -> None:
    """``1e9 + N(0, 1e-3)``: an update after a reload equals one without it, and the std
    stays right to 1e-12 (dropping ``mean_lo`` on save made it 7e-8)."""
    values = 1e9 + np.random.default_rng(0).normal(0, 1e-3, 1_000)
    first, more = _single_rows(values[:500]), _single_rows(values[500:])
    fingerprint = {"source": "a", "root": "/a", "sha256": "", "files": []}
    stats = Stats.from_state(first, {"x": parse_scaler("zscore")}, {"x": "double"}, 64, fingerprint)
    assert stats.columns["x"].state.moments.mean_lo != 0.0
    stats.save(tmp_path / "s.json")
    loaded = Stats.load(tmp_path / "s.json")
    assert loaded.columns["x"].state.moments == stats.columns["x"].state.moments
    later = Fingerprint("b", "/b", "", ())
    kept, reloaded = stats.absorb(more, later), loaded.absorb(more, later)
    assert reloaded.columns["x"].state.moments == kept.columns["x"].state.moments
    exact = float(np.std(values.astype(np.longdouble)))
    assert reloaded.summary("x").std == pytest.approx(exact, rel=1e-12)


def test_the_request_and_the_fitted_method_are_stored_apart(tmp_path: Path, diabetes: pd.DataFrame) -> None:
    """An ``auto`` column stays ``auto`` through save, refit and update; a named method
    replaces it; artifacts written before the request was stored still load."""
    stats = stats_of(diabetes[["bmi", "s4"]], "auto")
    chosen = {name: c.scaler.method for name, c in stats.columns.items()}
    assert "auto" not in chosen.values()
    stats.save(tmp_path / "s.json")
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["columns"]["bmi"]["request"] == {"method": "auto"}
    assert doc["columns"]["bmi"]["scaler"]["method"] == chosen["bmi"]
    loaded = Stats.load(tmp_path / "s.json")
    for artifact in (loaded, loaded.refit(), loaded.refit(overrides={"s4": "auto"})):
        assert {n: c.request.method for n, c in artifact.columns.items()} == {"bmi": "auto", "s4": "auto"}
        assert {n: c.scaler.method for n, c in artifact.columns.items()} == chosen
        assert all(c.scaler.reason for c in artifact.columns.values())
    named = loaded.refit(overrides={"bmi": "maxabs"})
    assert (named.columns["bmi"].request.method, named.columns["bmi"].scaler.method) == ("maxabs", "maxabs")
    assert named.columns["s4"].request.method == "auto"
    # an artifact without "request" (written before it was kept) reads auto from its reason
    for column in doc["columns"].values():
        del column["request"]
    del doc["checksum"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = Stats.load(tmp_path / "old.json")
    assert {n: c.request.method for n, c in old.columns.items()} == {"bmi": "auto", "s4": "auto"}


def test_loading_recomputes_summaries_from_the_states(tmp_path: Path, diabetes: pd.DataFrame) -> None:
    """A loaded artifact's summaries are those of its states (``ColumnState.finalize``), equal
    to the fitted ones; an artifact written before the zero/min/max counts were kept loads
    with those shares unknown (NaN), and merging it keeps them unknown rather than wrong."""
    stats = stats_of(diabetes[["bmi", "sex"]], "auto")
    stats.save(tmp_path / "s.json")
    loaded = Stats.load(tmp_path / "s.json")
    for name, column in stats.columns.items():
        assert loaded.summary(name) == column.summary
    doc = json.loads((tmp_path / "s.json").read_text())
    for column in doc["columns"].values():
        del column["zeros"], column["at_min"], column["at_max"]
        column["std"] = 123.0  # a stored summary is not read back: the state's is used
        column["reason"] = ""  # auto's reason from the shares it no longer has: fit as named
        del column["request"]
    del doc["checksum"]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = Stats.load(tmp_path / "old.json")
    for name, column in stats.columns.items():
        summary = old.summary(name)
        assert np.isnan([summary.zero_share, summary.min_share, summary.max_share]).all()
        assert summary.std == column.summary.std
        assert summary.quantiles == column.summary.quantiles
    merged = old.merge(stats, allow_repeat=True)
    assert np.isnan(merged.summary("sex").min_share)
    assert merged.summary("sex").count == 2 * len(diabetes)
