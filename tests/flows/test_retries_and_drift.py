"""Retries, and drift against the previous run. A transient read failure is retried and the run
completes; a permanent one fails after the configured retries; bad input is not retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import normpipe.engine
from flows.preprocess import preprocess
from normpipe.analyzers import analyze_unit
from tests.flows.test_preprocess import data as data
from tests.flows.test_preprocess import make_config, task_states

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def flaky(failures: int, log: Path) -> Any:
    """analyze_unit that raises OSError on its first ``failures`` calls. Calls are
    counted in a file: Dask ships the function to its workers by value."""

    def analyze(*args: Any, **kwargs: Any) -> Any:
        with log.open("a") as handle:
            handle.write("call\n")
        if len(log.read_text().splitlines()) <= failures:
            raise OSError("injected: connection reset while reading")
        return analyze_unit(*args, **kwargs)

    return analyze


def test_transient_read_error_is_retried(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setattr(normpipe.engine, "analyze_unit", flaky(1, log))
    state = preprocess(make_config(tmp_path), refresh=True, return_state=True)
    assert state.is_completed()
    assert state.result()["rows_out"] == 6_000
    calls = len(log.read_text().splitlines())
    assert 4 <= calls <= 6  # the failed attempt (1 to 3 calls), then the 3 files again


def test_permanent_read_error_fails_after_the_retries(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setattr(normpipe.engine, "analyze_unit", flaky(10**6, log))
    state = preprocess(make_config(tmp_path), refresh=True, return_state=True)
    assert state.is_failed()
    assert "injected: connection reset" in state.message
    assert not (tmp_path / "out").exists()
    states = task_states(state.state_details.flow_run_id)
    assert states["analyze"] == "Failed"
    assert len(log.read_text().splitlines()) >= 3  # 1 try + 2 retries


def test_preprocess_checks_drift_against_the_previous_run(data: Path, tmp_path: Path) -> None:
    import pandas as pd

    from tests.flows.test_preprocess import artifacts

    config = make_config(tmp_path, overwrite=True)
    first = preprocess(config)
    assert first["drift"] == []  # no previous run
    second = preprocess(config, return_state=True)
    assert second.is_completed()
    assert [d["drifted"] for d in second.result()["drift"]] == [False] * 3
    assert "normpipe-drift" in artifacts(second.state_details.flow_run_id)

    # the data changes: one column shifts by two standard deviations
    for path in sorted(data.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["normal"] = frame["normal"] + 2.0
        frame.to_parquet(path, index=False)
    before = (tmp_path / "out" / "_SUCCESS").read_text()
    failed = preprocess(config, fail_on_drift=True, return_state=True)
    assert failed.is_failed()
    assert "drift in 1 columns: normal" in failed.message
    assert (tmp_path / "out" / "_SUCCESS").read_text() == before  # nothing written
    warned = preprocess(config, return_state=True)
    assert warned.is_completed()
    flagged = [d["column"] for d in warned.result()["drift"] if d["drifted"]]
    assert flagged == ["normal"]


def test_damaged_previous_artifact_fails_or_warns_never_silently(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A previous artifact that cannot be read: drift cannot be checked. With
    fail_on_drift the run fails with the reason and writes nothing; without, it warns."""
    config = make_config(tmp_path, overwrite=True)
    preprocess(config)
    stats = tmp_path / "out" / "_stats.json"
    stats.write_text(stats.read_text()[:200])  # truncated
    before = (tmp_path / "out" / "_SUCCESS").read_text()
    failed = preprocess(config, fail_on_drift=True, return_state=True)
    assert failed.is_failed()
    assert "drift cannot be checked" in failed.message
    assert "invalid JSON" in failed.message
    assert (tmp_path / "out" / "_SUCCESS").read_text() == before
    warned = preprocess(config, return_state=True)
    assert warned.is_completed()
    assert warned.result()["drift"] == []
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("drift not checked" in m and "invalid JSON" in m for m in warnings)
