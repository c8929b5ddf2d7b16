"""The command line as a user runs it: demo, fit / transform / inspect, configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from normpipe import __version__
from normpipe.artifact import Stats
from normpipe.cli import app
from normpipe.config import load_config
from normpipe.datagen import generate

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def local(tmp_path: Path) -> Path:
    config = tmp_path / "local.yaml"
    config.write_text("cluster: {processes: false, workers: 1}\n")
    return config


def test_demo_runs_end_to_end_and_reruns_idempotently(tmp_path: Path) -> None:
    code, out, err = invoke(
        "demo", "--dir", tmp_path / "demo", "--rows", 20_000, "--workers", 1, "--no-prefect"
    )
    assert code == 0, err
    output = tmp_path / "demo" / "output"
    assert f"output: {output.absolute()}" in out
    assert "_stats.json" in out
    manifest = json.loads((output / "_SUCCESS").read_text())
    assert manifest["rows_in"] == manifest["rows_out"] == 20_000
    assert {f["path"].split("/")[0] for f in manifest["files"]} == {"region=east", "region=west"}
    stats = Stats.load(output / "_stats.json")
    assert stats.scalers["outliers"].method == "robust"
    assert "id" not in stats.columns
    data_files = sorted((tmp_path / "demo" / "data").rglob("*.parquet"))
    mtimes = [p.stat().st_mtime_ns for p in data_files]
    code, _, err = invoke(
        "demo", "--dir", tmp_path / "demo", "--rows", 20_000, "--workers", 1, "--no-prefect"
    )
    assert code == 0, err
    assert [p.stat().st_mtime_ns for p in data_files] == mtimes  # data reused, not rewritten
    stats = Stats.load(output / "_stats.json")  # refitted: KLL quantiles may move within their bound
    pd.testing.assert_frame_equal(
        pd.read_parquet(output), stats.transform(pd.read_parquet(tmp_path / "demo" / "data"))
    )


def test_fit_transform_inspect(tmp_path: Path, local: Path) -> None:
    generate(tmp_path / "data", 5_000, 3, seed=1)
    stats_path = tmp_path / "stats.json"
    code, out, err = invoke(
        "fit",
        tmp_path / "data",
        "--stats",
        stats_path,
        "--config",
        local,
        "--method",
        "minmax",
        "--override",
        "outliers=robust",
        "--exclude",
        "id",
        "--sketch-k",
        200,
    )
    assert code == 0, err
    assert "outliers" in out
    assert str(stats_path.absolute()) in out
    stats = Stats.load(stats_path)
    assert stats.k == 200
    assert stats.scalers["normal"].method == "minmax"
    code, out, err = invoke(
        "transform",
        tmp_path / "data",
        "--stats",
        stats_path,
        "--output",
        tmp_path / "out",
        "--config",
        local,
        "--dtype",
        "float32",
    )
    assert code == 0, err
    assert "wrote 5,000 rows in 3 files" in out
    normalized = pd.read_parquet(tmp_path / "out")
    assert normalized["normal"].dtype == np.float32
    assert normalized["normal"].min() == 0.0
    assert normalized["normal"].max() == 1.0
    code, out, _ = invoke("inspect", stats_path)
    assert code == 0
    assert "normal_offset" in out
    assert "minmax" in out
    code, out, _ = invoke("inspect", stats_path, "--json")
    doc = json.loads(out)
    assert code == 0
    assert "sketch" not in doc["columns"]["normal"]


def test_config_file_with_command_line_overrides(tmp_path: Path) -> None:
    generate(tmp_path / "data", 2_000, 2, seed=2, features=["normal", "uniform"])
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source": str(tmp_path / "data"),
                "output": str(tmp_path / "out"),
                "method": "zscore",
                "overrides": {"uniform": {"method": "minmax", "feature_range": [-1, 1]}},
                "exclude": ["id"],
                "cluster": {"processes": False, "workers": 1},
            }
        )
    )
    code, _, err = invoke("run", "--config", config, "--method", "robust")
    assert code == 0, err
    stats = Stats.load(tmp_path / "out" / "_stats.json")
    assert stats.scalers["normal"].method == "robust"  # the command line wins
    assert stats.scalers["uniform"].params["scale"] == pytest.approx(2.0, rel=1e-2)
    frame = pd.read_parquet(tmp_path / "out")
    assert frame["uniform"].min() == -1.0
    assert frame["uniform"].max() == 1.0


def test_example_configs_are_valid() -> None:
    runs = [p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith(("train-", "compare-"))]
    assert len(runs) >= 2
    for path in sorted(runs):
        config = load_config(path)
        assert config.source, path
        assert config.output, path


def test_console_script_version_and_help() -> None:
    done = subprocess.run([sys.executable, "-m", "normpipe.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"normpipe {__version__}"
    code, out, _ = invoke("--help")
    assert code == 0
    assert all(c in out for c in ("fit", "transform", "run", "inspect", "demo"))
