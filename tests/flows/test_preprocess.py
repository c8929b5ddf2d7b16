"""The Prefect flows end to end: outputs, artifacts, caching, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)

from flows.preprocess import compute_stats, normalize, preprocess
from normpipe.artifact import Stats
from normpipe.config import RunConfig
from normpipe.datagen import generate


def make_config(tmp_path: Path, **options: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "source": str(tmp_path / "data"),
            "output": str(tmp_path / "out"),
            "exclude": ["id"],
            "cluster": {"processes": False, "workers": 1},
            **options,
        }
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    generate(tmp_path / "data", 6_000, 3, seed=5, features=["normal", "lognormal_nan", "outliers"])
    return tmp_path / "data"


def task_states(flow_run_id: Any) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.state.name for run in runs if run.state}


def artifacts(flow_run_id: Any) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


@pytest.mark.slow
def test_preprocess_outputs_artifacts_and_cache(data: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, overwrite=True, overrides={"outliers": "robust"})
    state = preprocess(config, return_state=True)
    assert state.is_completed()
    manifest = state.result()
    stats = Stats.load(tmp_path / "out" / "_stats.json")
    assert manifest["rows_out"] == 6_000
    assert manifest["stats_sha256"] == stats.sha256
    out = pd.read_parquet(tmp_path / "out")
    expected = stats.transform(pd.read_parquet(data))
    pd.testing.assert_frame_equal(out, expected)
    flow_run = state.state_details.flow_run_id
    found = artifacts(flow_run)
    assert {
        "normpipe-summary",
        "normpipe-column-stats",
        "normpipe-output",
        "normpipe-stats",
        "normpipe-report",
    } <= set(found)
    summary = found["normpipe-summary"].data
    for fragment in ("6,000", "outliers | robust", "rank error", "_report.html", "extreme outliers"):
        assert fragment in summary
    report = (tmp_path / "out" / "_report.html").read_text()  # inside the atomic output
    assert report.count('<section class="column"') == 3
    assert (tmp_path / "out" / "_report.html").as_uri() in found["normpipe-report"].data
    table = json.loads(found["normpipe-column-stats"].data)
    assert {row["column"] for row in table} == {"normal", "lognormal_nan", "outliers"}
    assert (task_states(flow_run))["analyze"] == "Completed"

    # Unchanged data: the analyze task is a cache hit and the output is the same.
    second = preprocess(config, return_state=True)
    assert (task_states(second.state_details.flow_run_id))["analyze"] == "Cached"
    assert Stats.load(tmp_path / "out" / "_stats.json").sha256 == stats.sha256

    # A touched file, a changed option, or refresh=True recompute.
    part = sorted(data.glob("*.parquet"))[0]
    os.utime(part, (part.stat().st_atime, part.stat().st_mtime + 10))
    third = preprocess(config, return_state=True)
    assert (task_states(third.state_details.flow_run_id))["analyze"] == "Completed"
    changed = config.model_copy(update={"sketch_k": 200})
    fourth = preprocess(changed, return_state=True)
    assert (task_states(fourth.state_details.flow_run_id))["analyze"] == "Completed"
    fifth = preprocess(changed, refresh=True, return_state=True)
    assert (task_states(fifth.state_details.flow_run_id))["analyze"] == "Completed"


@pytest.mark.slow
def test_compute_stats_then_normalize(data: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, stats=str(tmp_path / "stats.json"), method="minmax")
    assert compute_stats(config) == str(tmp_path / "stats.json")
    stats = Stats.load(tmp_path / "stats.json")
    assert (tmp_path / "stats.report.html").read_text().count('<section class="column"') == 3
    manifest = normalize(config)
    assert manifest["stats_sha256"] == stats.sha256
    out = pd.read_parquet(tmp_path / "out")
    assert np.nanmin(out["normal"]) == 0.0
    assert np.nanmax(out["normal"]) == 1.0
    assert not (tmp_path / "out" / "_stats.json").exists()


def test_incremental_compute_stats_reads_only_new_files(data: Path, tmp_path: Path) -> None:
    config = make_config(tmp_path, stats=str(tmp_path / "stats.json"), method="auto")
    compute_stats(config)
    before = Stats.load(tmp_path / "stats.json")
    generate(tmp_path / "more", 2_000, 1, seed=9, features=["normal", "lognormal_nan", "outliers"])
    new = sorted((tmp_path / "more").glob("*.parquet"))[0]
    new.rename(data / "part-new.parquet")
    state = compute_stats(config, incremental=True, return_state=True)
    assert (task_states(state.state_details.flow_run_id))["update_stats"] == "Completed"
    after = Stats.load(tmp_path / "stats.json")
    assert after.rows == before.rows + 2_000
    assert [f.path for f in after.dataset.files] == ["part-new.parquet"]  # only it was read
    full = Stats.load(compute_stats(config.model_copy(update={"stats": str(tmp_path / "full.json")})))
    for name, column in full.columns.items():
        merged = after.columns[name].state.moments
        assert merged.mean == pytest.approx(column.state.moments.mean, rel=1e-12)
        assert merged.m2 == pytest.approx(column.state.moments.m2, rel=1e-12)
        assert after.scalers[name].method == full.scalers[name].method
    compute_stats(config, incremental=True)  # nothing new: the same rows
    assert Stats.load(tmp_path / "stats.json").rows == after.rows


@pytest.mark.slow
def test_bad_input_fails_the_run_with_the_library_message(data: Path, tmp_path: Path) -> None:
    (data / "part-00009.parquet").write_bytes(b"not parquet at all")
    state = preprocess(make_config(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"part-00009\.parquet: not a readable Parquet file"):
        state.result()
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.normpipe-*"))


def test_yaml_config_path_is_accepted(tmp_path: Path) -> None:
    from flows.preprocess import _as_config

    path = tmp_path / "c.yaml"
    path.write_text("source: data\nmethod: robust\n")
    assert _as_config(str(path)).method.method == "robust"


@pytest.mark.slow
def test_demo_runs_the_preprocess_flow(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from normpipe.cli import app

    result = CliRunner().invoke(
        app, ["demo", "--dir", str(tmp_path / "demo"), "--rows", "20000", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert f"output: {(tmp_path / 'demo' / 'output').absolute()}" in result.stdout
    assert "artifacts normpipe-summary, normpipe-column-stats" in result.stdout
    manifest = json.loads((tmp_path / "demo" / "output" / "_SUCCESS").read_text())
    assert manifest["rows_out"] == 20_000
    stats = Stats.load(tmp_path / "demo" / "output" / "_stats.json")
    assert stats.sha256 == manifest["stats_sha256"]


@pytest.mark.slow
def test_transient_io_error_is_retried_bad_input_is_not(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import normpipe
    from normpipe import api

    real = api.transform
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("injected: connection reset while writing")
        return real(*args, **kwargs)

    monkeypatch.setattr(normpipe, "transform", flaky)
    state = preprocess(make_config(tmp_path), return_state=True)
    assert state.is_completed()
    assert len(calls) == 2
    assert (tmp_path / "out" / "_SUCCESS").is_file()

    def bad(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise normpipe.InputError("data/x.parquet: injected bad input")

    calls.clear()
    monkeypatch.setattr(normpipe, "transform", bad)
    state = preprocess(make_config(tmp_path, overwrite=True), return_state=True)
    assert state.is_failed()
    assert len(calls) == 1

    def bug(*args: Any, **kwargs: Any) -> Any:  # a programming error: retrying cannot help
        calls.append(1)
        raise KeyError("injected bug")

    calls.clear()
    monkeypatch.setattr(normpipe, "transform", bug)
    state = preprocess(make_config(tmp_path, overwrite=True), return_state=True)
    assert state.is_failed()
    assert len(calls) == 1


def test_every_statistics_option_changes_the_cache_key(tmp_path: Path) -> None:
    from flows.preprocess import _stats_cache_key
    from normpipe.config import STATISTICS_OPTIONS
    from normpipe.fingerprint import Fingerprint

    dataset = Fingerprint("data", "/data", "0" * 64, ())
    base = make_config(tmp_path)
    changed = {
        "method": "robust",
        "overrides": {"x": "minmax"},
        "columns": ["x"],
        "exclude": ["id", "y"],
        "sketch_k": 200,
        "distinct": True,
        "quantiles": "exact",
        "group_by": "store",
        "unseen": "error",
        "tensors": {"emb": {"per": "all"}},
        "categories": {"store": {"min_frequency": 5}},
        "categorical": "auto",
        "impute": "median",
        "impute_overrides": {"x": "mean"},
    }
    assert set(changed) == set(STATISTICS_OPTIONS)
    key = _stats_cache_key(None, {"config": base, "dataset": dataset})
    for option, value in changed.items():
        other = RunConfig.model_validate({**base.model_dump(), option: value})
        assert _stats_cache_key(None, {"config": other, "dataset": dataset}) != key, option
    # options that do not change the statistics keep the key (the output path, say)
    moved = RunConfig.model_validate({**base.model_dump(), "output": str(tmp_path / "elsewhere")})
    assert _stats_cache_key(None, {"config": moved, "dataset": dataset}) == key


def test_categories_in_the_flow_and_its_summary(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"store": rng.choice(["north", "south"], 500), "x": rng.normal(size=500)})
    frame.to_parquet(tmp_path / "data" / "part.parquet")
    config = make_config(tmp_path, exclude=[], categories={"store": {}}, impute="mean")
    state = preprocess(config, return_state=True)
    assert state.is_completed()
    out = pd.read_parquet(tmp_path / "out")
    assert str(out["store"].dtype) == "Int32"
    summary = artifacts(state.state_details.flow_run_id)["normpipe-summary"].data
    assert "| store | 500 | 0 | 3 |" in summary
    assert "declared" in summary
