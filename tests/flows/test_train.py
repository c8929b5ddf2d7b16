"""The training flows: pipeline (preprocess then train), train, compare; artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.train import compare, pipeline, train
from normpipe.artifact import Stats
from normpipe.config import CompareConfig, RunConfig, TrainRunConfig
from tests.flows.test_preprocess import artifacts

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture
def raw(diabetes_files: Path) -> Path:
    return diabetes_files


def training(tmp_path: Path, **options: object) -> TrainRunConfig:
    return TrainRunConfig.model_validate(
        {
            "output": str(tmp_path / "model"),
            "features": FEATURES,
            "target": "target",
            "model": {"hidden": [16], "norm": "layer"},
            "training": {"lr": 0.003, "batch_size": 32, "max_epochs": 20, "seed": 1},
            **options,
        }
    )


def test_pipeline_preprocesses_then_trains_with_that_artifact(raw: Path, tmp_path: Path) -> None:
    pre = RunConfig.model_validate(
        {"source": str(raw), "output": str(tmp_path / "norm"), "cluster": {"processes": False, "workers": 1}}
    )
    state = pipeline(pre, training(tmp_path, data="ignored"), return_state=True)
    assert state.is_completed()
    summary = state.result()
    stats = Stats.load(tmp_path / "norm" / "_stats.json")
    assert summary["stats_sha256"] == stats.sha256
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["metrics"] == summary["metrics"]
    assert summary["metrics"]["r2"] > 0.2
    assert summary["preprocess"]["rows_out"] == 442
    found = artifacts(state.state_details.flow_run_id)
    assert {"normpipe-train-metrics", "normpipe-model"} <= set(found)
    row = json.loads(found["normpipe-train-metrics"].data)[0]
    assert row["rmse"] == pytest.approx(summary["metrics"]["rmse"], rel=1e-5)

    # the train flow on that output gives the same model (same seed, same data)
    again = train(training(tmp_path, data=str(tmp_path / "norm"), output=str(tmp_path / "m2")))
    assert again["metrics"]["rmse"] == pytest.approx(summary["metrics"]["rmse"], rel=1e-6)


def test_failed_training_fails_the_flow_with_its_message(raw: Path, tmp_path: Path) -> None:
    bad = training(tmp_path, data=str(raw), training={"lr": 1e30, "max_epochs": 2})
    state = train(bad, return_state=True)
    assert state.is_failed()
    assert "training diverged" in state.message
    assert not (tmp_path / "model").exists()


def test_compare_flow_publishes_the_table(raw: Path, tmp_path: Path) -> None:
    config = CompareConfig.model_validate(
        {
            "data": str(raw),
            "output": str(tmp_path / "report"),
            "features": FEATURES,
            "target": "target",
            "scalers": ["zscore"],
            "norms": ["none", "layer"],
            "folds": 2,
            "model": {"hidden": [8]},
            "training": {"max_epochs": 2},
        }
    )
    state = compare(config, return_state=True)
    assert state.is_completed()
    assert len(state.result()["cells"]) == 2
    found = artifacts(state.state_details.flow_run_id)
    assert "| zscore | layer |" in found["normpipe-compare"].data


def test_prefect_yaml_deployments_name_real_flows_and_parameters() -> None:
    import importlib

    import yaml
    from prefect import Flow

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "prefect.yaml").read_text())
    for deployment in doc["deployments"]:
        module, name = deployment["entrypoint"].split(":")
        flow_obj = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow_obj, Flow)
        assert set(deployment["parameters"]) <= set(flow_obj.parameters.properties)
        for value in deployment["parameters"].values():
            if isinstance(value, str) and value.startswith("configs/"):
                assert (root / value).is_file(), value
