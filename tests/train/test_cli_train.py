"""train / predict / compare / example from the command line, and their bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import root_mean_squared_error

from normpipe.config import CompareConfig, TrainRunConfig, load_model_config
from tests.test_cli import ROOT, invoke

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture
def raw(diabetes_files: Path) -> Path:
    return diabetes_files


def test_run_train_predict_in_original_units(tmp_path: Path, raw: Path, diabetes: pd.DataFrame) -> None:
    local = tmp_path / "local.yaml"
    local.write_text("cluster: {processes: false, workers: 1}\n")
    code, _, err = invoke("run", raw, "--output", tmp_path / "norm", "--config", local)
    assert code == 0, err
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(tmp_path / "norm"),
                "output": str(tmp_path / "model"),
                "features": FEATURES,
                "target": "target",
                "model": {"hidden": [32], "norm": "layer"},
                "training": {"lr": 0.003, "batch_size": 32, "max_epochs": 40, "patience": 8, "seed": 1},
            }
        )
    )
    code, out, err = invoke("train", config)
    assert code == 0, err
    assert "RMSE" in out
    assert "original units" in out
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["stats_sha256"] == json.loads((tmp_path / "norm" / "_SUCCESS").read_text())["stats_sha256"]
    code, _, err = invoke("train", config)  # the model directory exists
    assert code == 2
    assert "--overwrite" in err
    code, out, err = invoke("predict", tmp_path / "model", raw, tmp_path / "pred")
    assert code == 0, err
    pred = pd.read_parquet(tmp_path / "pred").sort_values("target", kind="stable")
    assert len(pred) == len(diabetes)
    # predictions are in the target's units (25..346), not z-scores
    assert 50 < pred["target_pred"].mean() < 250
    rmse = root_mean_squared_error(pred["target"], pred["target_pred"])
    assert rmse < diabetes["target"].std()  # beats predicting the mean
    manifest = json.loads((tmp_path / "pred" / "_SUCCESS").read_text())
    assert manifest["rows_out"] == len(diabetes)
    assert manifest["stats_sha256"] == card["stats_sha256"]


def test_compare_from_the_command_line(tmp_path: Path, raw: Path) -> None:
    config = tmp_path / "compare.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(raw),
                "output": str(tmp_path / "report"),
                "features": FEATURES,
                "target": "target",
                "scalers": ["none", "zscore"],
                "norms": ["batch", "layer"],
                "folds": 2,
                "model": {"hidden": [16]},
                "training": {"max_epochs": 3, "batch_size": 64},
            }
        )
    )
    code, out, err = invoke("compare", config)
    assert code == 0, err
    assert "[8/8]" in out
    assert "| zscore | layer |" in out
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "results.json",
        "table.md",
        "curves.png",
        "_SUCCESS",
    }


def test_example_data_and_configs(tmp_path: Path) -> None:
    code, _out, err = invoke("example", "regression", tmp_path / "reg", "--rows", 4000)
    assert code == 0, err
    frame = pd.read_parquet(tmp_path / "reg")
    assert list(frame.columns) == ["t", "g", "z", "u", "y"]
    assert len(frame) == 4000
    code, _, err = invoke("example", "regression", tmp_path / "reg")
    assert code == 2
    assert "not empty" in err
    for path in sorted((ROOT / "configs").glob("train-*.yaml")):
        assert load_model_config(TrainRunConfig, path).features
    for path in sorted((ROOT / "configs").glob("compare-*.yaml")):
        assert load_model_config(CompareConfig, path).folds >= 2


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"data": "d", "output": "o", "features": ["x"]}, "'target' is required"),
        ({"data": "d", "output": "o", "target": "y"}, "'features' is required"),
        (
            {"data": "d", "output": "o", "target": "y", "features": ["x"], "model": {"norm": "instance"}},
            "'instance' is for model.kind 'sequence'",
        ),
        (
            {"data": "d", "output": "o", "target": "y", "features": ["x"], "model": {"window": 0}},
            "model.window",
        ),
        (
            {"data": "d", "output": "o", "target": "y", "features": ["x"], "training": {"lr": -1}},
            "training.lr",
        ),
        ({"data": "d", "output": "o", "target": "y", "features": ["x"], "modle": {}}, "unknown key 'modle'"),
    ],
)
def test_bad_train_config_is_one_line(tmp_path: Path, doc: dict, fragment: str) -> None:  # type: ignore[type-arg]
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(doc))
    code, _, err = invoke("train", config)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert fragment in err


def test_train_on_data_normalized_with_another_artifact(tmp_path: Path, raw: Path) -> None:
    local = tmp_path / "local.yaml"
    local.write_text("cluster: {processes: false, workers: 1}\n")
    assert invoke("run", raw, "--output", tmp_path / "n1", "--config", local)[0] == 0
    assert (
        invoke("fit", raw, "--stats", tmp_path / "other.json", "--method", "minmax", "--config", local)[0]
        == 0
    )
    config = tmp_path / "t.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(tmp_path / "n1"),
                "stats": str(tmp_path / "other.json"),
                "output": str(tmp_path / "m"),
                "features": ["age"],
                "target": "target",
            }
        )
    )
    code, _, err = invoke("train", config)
    assert code == 2
    assert "was normalized with artifact" in err
    assert "other.json" in err
    assert not (tmp_path / "m").exists()
    code, _, err = invoke("predict", tmp_path / "nothing", raw, tmp_path / "p")
    assert code == 2
    assert "no model.json" in err
    np.testing.assert_equal(not (tmp_path / "p").exists(), True)


def test_train_on_a_per_group_artifact_fails_before_the_first_epoch(
    tmp_path: Path, raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import normpipe.train.loop

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(normpipe.train.loop, "fit_model", never)
    local = tmp_path / "local.yaml"
    local.write_text("cluster: {processes: false, workers: 1}\n")
    code, _, err = invoke("run", raw, "--output", tmp_path / "norm", "--group-by", "sex", "--config", local)
    assert code == 0, err
    config = tmp_path / "train.yaml"
    features = [f for f in FEATURES if f != "sex"]
    config.write_text(
        yaml.safe_dump(
            {
                "data": str(tmp_path / "norm"),
                "output": str(tmp_path / "model"),
                "features": features,
                "target": "target",
            }
        )
    )
    code, _, err = invoke("train", config)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert "target 'target' is normalized per 'sex' group" in err
    assert "without --group-by" in err
    assert not (tmp_path / "model").exists()
