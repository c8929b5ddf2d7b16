"""Training end to end on load_diabetes normalized by normpipe; metrics in original units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from distributed import Client
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

import normpipe
from normpipe.train.data import ParquetBatches
from normpipe.train.loop import TrainConfig, TrainingDiverged, load_model, save_model, train
from tests.conftest import WriteParts

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture
def normalized(client: Client, write_parts: WriteParts, diabetes: pd.DataFrame, tmp_path: Path):  # type: ignore[no-untyped-def]
    source = write_parts(diabetes, [150, 150, 142])
    stats, _ = normpipe.run(source, tmp_path / "norm", client=client)
    return tmp_path / "norm", stats


def test_train_reports_original_units_and_saves_as_data(
    normalized, diabetes: pd.DataFrame, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data, stats = normalized
    config = TrainConfig(
        FEATURES,
        "target",
        hidden=(32,),
        norm="layer",
        lr=3e-3,
        batch_size=32,
        max_epochs=80,
        patience=10,
        seed=1,
    )
    result = train(data, stats, config)
    assert result.metrics["r2"] > 0.3  # a linear model gets about 0.5 on this data
    assert 1 <= result.best_epoch <= len(result.history)
    # The metrics are computed on predictions mapped back to the target's units.
    valid = ParquetBatches(data, FEATURES, "target", split="valid", shuffle_buffer=0, seed=1, batch_size=1000)
    x, y = next(iter(valid))
    with torch.no_grad():
        p = result.model(x).squeeze(1).double().numpy()
    y_units = stats.inverse_column("target", y.double().numpy())
    p_units = stats.inverse_column("target", p)
    # Original units: the diabetes target is integer-valued in 25..346 (float32 batches
    # round it by a few parts in 1e8).
    np.testing.assert_allclose(y_units, np.round(y_units), atol=1e-4)
    assert set(np.round(y_units)) <= set(diabetes["target"])
    assert result.metrics["rmse"] == pytest.approx(root_mean_squared_error(y_units, p_units), rel=1e-6)
    assert result.metrics["mae"] == pytest.approx(mean_absolute_error(y_units, p_units), rel=1e-6)
    assert result.metrics["r2"] == pytest.approx(r2_score(y_units, p_units), rel=1e-6)
    saved = save_model(result, config, stats, tmp_path / "model")
    model, card, reloaded = load_model(saved)
    assert reloaded is not None
    assert reloaded.sha256 == stats.sha256
    assert card["stats_sha256"] == stats.sha256
    assert card["features"] == FEATURES
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).squeeze(1).double().numpy(), p)


def test_divergence_is_reported(normalized) -> None:  # type: ignore[no-untyped-def]
    data, stats = normalized
    config = TrainConfig(FEATURES, "target", hidden=(8,), norm="none", lr=1e30, max_epochs=5)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        train(data, stats, config)
