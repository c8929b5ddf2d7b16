"""The forecasting windows and the sequence model with reversible instance norm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from normpipe.train.loop import TrainConfig, load_model, save_model, train
from normpipe.train.predict import predict
from normpipe.train.sequence import RevIN, SequenceRegressor, SequenceWindows

LEVELS = [(0.0, 1.0), (100.0, 10.0), (-50.0, 0.1), (1000.0, 50.0)]


@pytest.fixture(scope="module")
def series_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four sine series of very different level and scale, rows shuffled, a NaN in one."""
    rng = np.random.default_rng(0)
    parts = []
    for s, (level, scale) in enumerate(LEVELS):
        t = np.arange(600)
        v = level + scale * (np.sin(t / 8 + s) + 0.05 * rng.normal(size=t.size))
        parts.append(pd.DataFrame({"series": f"s{s}", "t": t, "v": v, "w": np.cos(t / 8)}))
    frame = pd.concat(parts, ignore_index=True)
    frame.loc[(frame.series == "s1") & (frame.t == 300), "v"] = np.nan
    path = tmp_path_factory.mktemp("seq") / "series.parquet"
    pq.write_table(pa.Table.from_pandas(frame.sample(frac=1.0, random_state=1)), path, row_group_size=500)
    return path


def test_windows_match_a_pandas_oracle(series_file: Path) -> None:
    windows = SequenceWindows(series_file, ["w"], "v", time="t", series="series", window=5, shuffle=False)
    assert windows.channels == ["w", "v"]
    x, y = windows.windows(windows.ends)
    frame = pd.read_parquet(series_file).sort_values(["series", "t"])
    expected_x, expected_y = [], []
    for _, g in frame.groupby("series"):
        values = g[["w", "v"]].to_numpy()
        for end in range(5, len(g)):
            block = values[end - 5 : end + 1]
            if np.isfinite(block).all():  # a window touching the NaN is left out
                expected_x.append(values[end - 5 : end])
                expected_y.append(values[end, 1])
    np.testing.assert_allclose(x.numpy(), np.array(expected_x, dtype=np.float32))
    np.testing.assert_allclose(y.numpy(), np.array(expected_y, dtype=np.float32))
    assert len(windows) == 4 * (600 - 5) - 6  # six windows touch the NaN row


def test_split_is_temporal(series_file: Path) -> None:
    windows = SequenceWindows(series_file, ["v"], "v", time="t", series="series", window=8)
    train, valid = windows.split(0.25)
    assert len(train) + len(valid) == len(windows)
    assert train.label_time.max() < valid.label_time.min()
    assert 0.2 < len(valid) / len(windows) < 0.3


def test_revin_is_reversible() -> None:
    revin = RevIN(3)
    with torch.no_grad():
        revin.weight.copy_(torch.tensor([2.0, 0.5, -1.5]))
        revin.bias.copy_(torch.tensor([0.3, -0.2, 1.0]))
    x = torch.randn(7, 12, 3) * torch.tensor([1.0, 100.0, 0.01]) + torch.tensor([5.0, -300.0, 2.0])
    z, mean, std = revin.normalize(x)
    assert torch.allclose(z.mean(dim=1), revin.bias.expand(7, 3), atol=1e-4)
    for channel in range(3):
        back = revin.denormalize(z[:, -1, channel : channel + 1], mean, std, channel)
        assert torch.allclose(back, x[:, -1, channel : channel + 1], rtol=1e-4, atol=1e-4)


def test_instance_norm_forecasts_series_of_any_scale(series_file: Path, tmp_path: Path) -> None:
    def fit(norm: str):  # type: ignore[no-untyped-def]
        config = TrainConfig(
            ["v"],
            "v",
            model="sequence",
            time="t",
            series="series",
            window=16,
            norm=norm,  # type: ignore[arg-type]
            hidden=(32,),
            lr=3e-3,
            max_epochs=25,
            patience=5,
            batch_size=64,
            seed=0,
        )
        return config, train(series_file, None, config)

    config, instance = fit("instance")
    _, plain = fit("none")
    assert instance.metrics["r2"] > 0.99
    assert instance.metrics["rmse"] < 0.5 * plain.metrics["rmse"]
    # predict reproduces the validation metrics from the saved directory
    save_model(instance, config, None, tmp_path / "model")
    model, card, stats = load_model(tmp_path / "model")
    assert stats is None
    assert card["architecture"]["norm"] == "instance"
    assert isinstance(model, SequenceRegressor)
    manifest = predict(tmp_path / "model", series_file, tmp_path / "pred")
    out = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert manifest["rows_out"] == len(out) == 4 * (600 - 16) - 17
    assert list(out.columns) == ["series", "t", "v", "v_pred"]
    latest = out[out.t >= out.t.quantile(0.8)]
    error = np.sqrt(np.mean((latest.v - latest.v_pred) ** 2))
    assert error < 3 * instance.metrics["rmse"]


def test_sequence_options_are_checked(series_file: Path) -> None:
    with pytest.raises(ValueError, match="norm must be"):
        SequenceRegressor(2, 4, 0, norm="group")  # type: ignore[arg-type]
    from normpipe.errors import ConfigError, InputError

    with pytest.raises(ConfigError, match="time"):
        train(series_file, None, TrainConfig(["v"], "v", model="sequence"))
    with pytest.raises(InputError, match="no column 'when'"):
        SequenceWindows(series_file, ["v"], "v", time="when")
