"""The sequence model on a window tensor column: streamed like any rows, instance norm
against layer and batch norm, predict and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from distributed import Client

import normpipe
from normpipe import datagen
from normpipe.errors import ConfigError
from normpipe.export import load_serving
from normpipe.train.loop import TrainConfig, save_model, train
from normpipe.train.predict import predict


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory, client: Client) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("windows")
    datagen.windows(root / "raw", rows=12_000, files=2)
    normpipe.run(root / "raw", root / "norm", tensors={"window": {"per": "all"}}, client=client)
    return {"raw": root / "raw", "norm": root / "norm"}


def _config(norm: str) -> TrainConfig:
    return TrainConfig(
        features=["window"],
        target="next",
        model="sequence",
        norm=norm,  # type: ignore[arg-type]
        hidden=(64, 64),
        lr=1e-3,
        batch_size=256,
        max_epochs=8,
        patience=3,
    )


def test_instance_norm_wins_on_windows_of_many_levels_and_scales(
    windows: dict[str, Path], tmp_path: Path
) -> None:
    stats = normpipe.Stats.load(windows["norm"] / "_stats.json")
    rmse = {
        norm: train(windows["norm"], stats, _config(norm)).metrics["rmse"]
        for norm in ("instance", "layer", "batch")
    }
    raw = pq.read_table(windows["raw"]).to_pandas()
    last = np.stack(raw["window"].to_numpy())[:, -1]
    persistence = float(np.sqrt(np.mean((raw["next"].to_numpy() - last) ** 2)))
    assert rmse["instance"] < min(rmse["layer"], rmse["batch"]), rmse
    assert rmse["instance"] < persistence / 2, (rmse, persistence)
    # predict on raw windows, and the exported model on the same raw values
    result = train(windows["norm"], stats, _config("instance"))
    directory = save_model(result, _config("instance"), stats, tmp_path / "model")
    predict(directory, windows["raw"], tmp_path / "pred")
    name = sorted(p.name for p in windows["raw"].glob("*.parquet"))[0]
    predicted = pq.read_table(tmp_path / "pred" / name).column("next_pred").to_numpy()
    values = np.stack(pq.read_table(windows["raw"] / name).column("window").to_pandas().to_numpy())
    with torch.no_grad():
        served = load_serving(directory)(torch.from_numpy(values.astype(np.float64))).numpy()
    np.testing.assert_allclose(served, predicted, rtol=1e-5, atol=1e-4)


def test_a_sequence_model_needs_time_or_a_window_tensor(windows: dict[str, Path]) -> None:
    stats = normpipe.Stats.load(windows["norm"] / "_stats.json")
    config = TrainConfig(features=["next"], target="next", model="sequence", norm="instance")
    with pytest.raises(ConfigError, match=r"needs 'time'.*or one window tensor column"):
        train(windows["norm"], stats, config)
