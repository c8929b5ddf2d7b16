"""The normalization comparison: per-fold scalers from mergeable states, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import MinMaxScaler, RobustScaler

from normpipe.categories import CategorySpec
from normpipe.train.compare import compare, fold_stats
from normpipe.train.data import split_mask
from normpipe.train.loop import TrainConfig


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two files of a heavy-tailed regression problem (several row groups each)."""
    directory = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(4)
    for i in range(2):
        n = 3000
        a = rng.standard_t(3.0, n) * 100 + 5000
        b = rng.lognormal(0, 1, n)
        y = 0.02 * a + np.log1p(b) + rng.normal(0, 0.1, n)
        pq.write_table(pa.table({"a": a, "b": b, "y": y}), directory / f"p{i}.parquet", row_group_size=1000)
    return directory


def test_fold_stats_are_the_training_rows_statistics(raw: Path) -> None:
    folds = 3
    per_fold = fold_stats(raw, ["a", "y"], folds, seed=7, k=200)
    frames = []
    for path in sorted(raw.glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["fold"] = -1
        for j in range(folds):
            frame.loc[split_mask(7, path.name, 0, len(frame), (j / folds, (j + 1) / folds)), "fold"] = j
        frames.append(frame)
    every = pd.concat(frames)
    assert (every.fold >= 0).all()
    for i, stats in enumerate(per_fold):
        training = every[every.fold != i]
        assert stats.rows == len(training)
        summary = stats.summary("a")
        assert summary.mean == pytest.approx(training.a.mean(), rel=1e-12)
        assert summary.std == pytest.approx(training.a.std(ddof=0), rel=1e-10)
        # refit: the same state gives any scaler, matching scikit-learn on those rows
        minmax = stats.refit("minmax").transform(training[["a", "y"]])
        np.testing.assert_allclose(minmax, MinMaxScaler().fit_transform(training[["a", "y"]]), atol=1e-12)
        robust = stats.refit("robust").transform(training[["a"]], columns=["a"])["a"]
        oracle = RobustScaler().fit_transform(training[["a"]])[:, 0]
        # the median and IQR come from the sketch: within its rank error
        assert np.median(np.abs(robust - oracle)) < 0.02


def test_compare_grid_report_and_divergence(raw: Path, tmp_path: Path) -> None:
    config = TrainConfig(["a", "b"], "y", hidden=(16,), max_epochs=6, patience=3, batch_size=128, lr=3e-3)
    result = compare(raw, config, scalers=["none", "robust"], norms=["none", "layer"], folds=2, sketch_k=200)
    assert len(result.runs) == 2 * 2 * 2
    cells = result.cells()
    assert {(c["scaler"], c["norm"]) for c in cells} == {
        ("none", "none"),
        ("none", "layer"),
        ("robust", "none"),
        ("robust", "layer"),
    }
    rmse = [c["rmse_mean"] for c in cells]
    assert rmse == sorted(rmse)
    by_cell = {(c["scaler"], c["norm"]): c["rmse_mean"] for c in cells}
    # raw inputs near 5000 and a raw target near 100 train worse than scaled ones
    # (by 3x and more here), with or without layer norm
    for norm in ("none", "layer"):
        assert by_cell[("robust", norm)] < by_cell[("none", norm)]
    assert all(c["diverged"] == 0 for c in cells)
    # RMSE is in y's units: every run's value equals its own metrics, and
    # epochs-to-target is the first epoch within 10% of the fold's best final RMSE
    for run in result.runs:
        curve = [h["valid_rmse"] for h in run.history]
        threshold = result.target_rmse[run.fold]
        reached = [i + 1 for i, v in enumerate(curve) if v <= threshold]
        assert run.epochs_to_target == (reached[0] if reached else None)
    saved = result.save(tmp_path / "report")
    doc = json.loads((saved / "results.json").read_text())
    assert doc["format"] == "normpipe.compare"
    assert len(doc["runs"]) == 8
    assert (saved / "table.md").read_text().count("\n") == 2 + 4
    assert (saved / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (saved / "_SUCCESS").is_file()

    diverging = TrainConfig(["a", "b"], "y", hidden=(8,), max_epochs=2, lr=1e30)
    failed = compare(raw, diverging, scalers=["none"], norms=["none"], folds=2)
    assert all(r.diverged for r in failed.runs)
    assert failed.cells()[0]["diverged"] == 2
    assert "| none | none |" in failed.markdown()


def test_inputs_axis_with_and_without_categories_and_imputation(tmp_path: Path) -> None:
    """A store's level carries most of the signal: the embedding of the store code beats
    the numeric-only model; imputation keeps the rows with a missing numeric feature."""
    rng = np.random.default_rng(7)
    n = 4000
    stores = np.array([f"s{i:02d}" for i in range(20)])
    store = rng.choice(stores, n)
    level = {s: float(v) for s, v in zip(stores, rng.normal(0, 3, stores.size), strict=True)}
    x = rng.normal(0, 1, n)
    y = np.array([level[s] for s in store]) + x + rng.normal(0, 0.1, n)
    x[rng.random(n) < 0.2] = np.nan  # a fifth of the rows miss x
    (tmp_path / "raw").mkdir()
    for i in range(2):
        rows = slice(i * n // 2, (i + 1) * n // 2)
        table = pa.table({"x": x[rows], "store": store[rows], "y": y[rows]})
        pq.write_table(table, tmp_path / "raw" / f"p{i}.parquet")
    config = TrainConfig(
        ["x", "store"], "y", hidden=(32,), norm="none", max_epochs=12, batch_size=64, lr=1e-2
    )
    inputs = ["numeric", "all", "all+impute"]
    result = compare(tmp_path / "raw", config, scalers=["zscore"], norms=["none"], folds=2, inputs=inputs)
    by_inputs = {c["inputs"]: c for c in result.cells()}
    assert by_inputs["all"]["rmse_mean"] < 0.5 * by_inputs["numeric"]["rmse_mean"]
    rows = {run.inputs: run.metrics["rows"] for run in result.runs if run.fold == 0}
    assert rows["all+impute"] > 1.15 * rows["all"]  # the rows missing x are kept
    assert "| all+impute | zscore | none |" in result.markdown()
    assert "validation rows |" in result.markdown()
    # each fold's vocabulary is the training rows' value counts
    per_fold = fold_stats(
        tmp_path / "raw", ["x", "store", "y"], 2, seed=0, k=200, categories={"store": CategorySpec()}
    )
    frames = []
    for path in sorted((tmp_path / "raw").glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame["valid0"] = split_mask(0, path.name, 0, len(frame), (0.0, 0.5))
        frames.append(frame)
    every = pd.concat(frames)
    counts = every[~every.valid0]["store"].value_counts()
    assert dict(per_fold[0].categories["store"].state.counts) == counts.to_dict()
