"""The CNN on images: per-channel normalization, trained from the normalized output or
from encoded PNGs decoded on the fly, saved and reloaded, and predict on raw images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from distributed import Client
from PIL import Image

import normpipe
from normpipe import datagen
from normpipe.errors import ConfigError
from normpipe.export import export_model
from normpipe.train.compare import compare, decoded_images
from normpipe.train.features import feature_layout, feature_rows
from normpipe.train.loop import TrainConfig, load_model, save_model, train
from normpipe.train.models import CNN
from normpipe.train.predict import predict

SIZE = 12


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, client: Client) -> dict[str, Path]:
    """Disc images (PNG) with the radius as target, and their normalized output."""
    root = tmp_path_factory.mktemp("images")
    datagen.images(root / "raw", rows=3000, files=2, size=SIZE)
    normpipe.run(root / "raw", root / "norm", tensors={"image": {"per": "channel"}}, client=client)
    spec = {"image": {"per": "channel", "output": "none"}}
    normpipe.run(root / "raw", root / "kept", tensors=spec, client=client)
    return {"raw": root / "raw", "norm": root / "norm", "kept": root / "kept"}


def _config(**options: object) -> TrainConfig:
    base: dict[str, object] = {
        "features": ["image"],
        "target": "radius",
        "model": "cnn",
        "channels": (8, 16),
        "hidden": (32,),
        "norm": "batch",
        "lr": 3e-3,
        "batch_size": 64,
        "max_epochs": 4,
        "patience": 4,
        "shuffle_buffer": 1024,
    }
    return TrainConfig(**{**base, **options})  # type: ignore[arg-type]


def test_cnn_learns_the_radius_and_predicts_on_raw_images(images: dict[str, Path], tmp_path: Path) -> None:
    stats = normpipe.Stats.load(images["norm"] / "_stats.json")
    result = train(images["norm"], stats, _config())
    assert result.metrics["r2"] > 0.9, result.metrics
    directory = save_model(result, _config(), stats, tmp_path / "model")
    model, card, loaded = load_model(directory)
    assert isinstance(model, CNN)
    assert card["architecture"]["shape"] == [3, SIZE, SIZE]
    # predict on the raw PNGs: decoded and normalized with the model's artifact, equal to
    # the model applied to the normalized output
    predict(directory, images["raw"], tmp_path / "pred")
    name = sorted(p.name for p in images["raw"].glob("*.parquet"))[0]
    predicted = pq.read_table(tmp_path / "pred" / name).column("radius_pred").to_numpy()
    table = pq.read_table(images["norm"] / name)
    layout = feature_layout(table.schema, ["image"], loaded, "norm")
    with torch.no_grad():
        direct = (
            model(torch.from_numpy(feature_rows(table, layout, loaded, False))).squeeze(1).double().numpy()
        )
    assert loaded is not None
    np.testing.assert_allclose(predicted, loaded.inverse_column("radius", direct), rtol=1e-4, atol=1e-4)
    truth = table.column("radius").to_numpy()
    assert np.corrcoef(truth, predicted)[0, 1] ** 2 > 0.9


def test_encoded_images_are_decoded_on_the_fly_with_the_saved_statistics(images: dict[str, Path]) -> None:
    kept = normpipe.Stats.load(images["kept"] / "_stats.json")
    norm = normpipe.Stats.load(images["norm"] / "_stats.json")
    name = sorted(p.name for p in images["raw"].glob("*.parquet"))[0]
    on_the_fly = pq.read_table(images["kept"] / name)
    written = pq.read_table(images["norm"] / name)
    a = feature_rows(on_the_fly, feature_layout(on_the_fly.schema, ["image"], kept, "kept"), kept, False)
    b = feature_rows(written, feature_layout(written.schema, ["image"], norm, "norm"), norm, False)
    np.testing.assert_array_equal(a, b)
    result = train(images["kept"], kept, _config(max_epochs=1, norm="layer"))
    assert np.isfinite(result.metrics["rmse"])


def test_cnn_needs_an_image_first(images: dict[str, Path]) -> None:
    stats = normpipe.Stats.load(images["norm"] / "_stats.json")
    with pytest.raises(ConfigError, match="the cnn model takes an image first in features"):
        train(images["norm"], stats, _config(features=["cx", "image"]))


def test_cnn_shapes_and_layouts() -> None:
    x = torch.randn(5, 3 * 6 * 4 + 2)
    for layout, shape in (("CHW", (3, 6, 4)), ("HWC", (6, 4, 3))):
        for norm in ("batch", "layer", "instance", "none"):
            model = CNN(shape, layout, n_scalars=2, channels=(4, 8), hidden=(8,), norm=norm)  # type: ignore[arg-type]
            assert model(x).shape == (5, 1)


def test_exported_cnn_normalizes_raw_pixels_like_predict(images: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime

    stats = normpipe.Stats.load(images["norm"] / "_stats.json")
    result = train(images["norm"], stats, _config(max_epochs=1))
    directory = save_model(result, _config(max_epochs=1), stats, tmp_path / "model")
    export_model(directory, tmp_path / "m.onnx", "onnx")
    predict(directory, images["raw"], tmp_path / "pred")
    name = sorted(p.name for p in images["raw"].glob("*.parquet"))[0]
    encoded = pq.read_table(images["raw"] / name).column("image").to_pylist()[:300]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b))).transpose(2, 0, 1) for b in encoded])
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    (served,) = session.run(None, {"features": pixels.reshape(300, -1).astype(np.float64)})
    expected = pq.read_table(tmp_path / "pred" / name).column("radius_pred").to_numpy()[:300]
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-5)


def test_tensor_maps_in_torch_and_refit(images: dict[str, Path]) -> None:
    stats = normpipe.Stats.load(images["norm"] / "_stats.json")
    name = sorted(p.name for p in images["raw"].glob("*.parquet"))[0]
    encoded = pq.read_table(images["raw"] / name).column("image").to_pylist()[:50]
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b))).transpose(2, 0, 1) for b in encoded])
    flat = pixels.reshape(50, -1).astype(np.float64)
    fitted = stats.tensors["image"].fitted
    maps = stats.to_torch(["image", "radius"])
    radius = np.linspace(2, 4, 50)[:, None]
    out = maps(torch.from_numpy(np.hstack([flat, radius]))).numpy()
    np.testing.assert_allclose(out[:, :-1], fitted.map_values(flat), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[:, -1], stats.transform_column("radius", radius[:, 0]), rtol=1e-12)
    back = stats.to_torch(["image"], inverse=True)(torch.from_numpy(out[:, :-1])).numpy()
    np.testing.assert_allclose(back, flat, rtol=1e-12, atol=1e-9)
    # refit: a tensor method reaches the tensor column, per channel as declared
    minmax = stats.refit("minmax").tensors["image"].fitted.map_values(flat)
    state = stats.tensors["image"].state
    low = stats.tensors["image"].fitted.layout.expand(state.moments.min)
    high = stats.tensors["image"].fitted.layout.expand(state.moments.max)
    np.testing.assert_allclose(minmax, (flat - low) / (high - low), rtol=1e-12, atol=1e-12)


def test_compare_over_image_normalizations(images: dict[str, Path]) -> None:
    config = _config(max_epochs=1, channels=(4,), hidden=(8,))
    result = compare(images["raw"], config, scalers=["none", "zscore"], norms=["batch", "instance"], folds=2)
    cells = result.cells()
    assert {(c["scaler"], c["norm"]) for c in cells} == {
        (s, n) for s in ("none", "zscore") for n in ("batch", "instance")
    }
    assert all(np.isfinite(c["rmse_mean"]) for c in cells)


def test_compare_decodes_images_once_into_equal_pixels(images: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(decoded_images(images["raw"], ["image", "radius"], tmp_path / "decoded"))
    for raw in sorted(images["raw"].glob("*.parquet")):
        original = pq.read_table(raw)
        decoded = pq.read_table(copy / raw.name)
        assert (
            pq.ParquetFile(copy / raw.name).metadata.num_row_groups
            == pq.ParquetFile(raw).metadata.num_row_groups
        )
        assert decoded.column("radius").equals(original.column("radius"))
        pixels = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(b))).transpose(2, 0, 1)
                for b in original.column("image").to_pylist()
            ]
        )
        stored = np.asarray(decoded.column("image").combine_chunks().storage.values).reshape(pixels.shape)
        np.testing.assert_array_equal(stored, pixels)
    assert decoded_images(images["norm"], ["image", "radius"], tmp_path / "none") == str(images["norm"])


def test_datagen_tensor_encoding_equals_the_png_pixels(tmp_path: Path) -> None:
    (png,) = datagen.images(tmp_path / "png", rows=40, files=1, size=8)
    (tensor,) = datagen.images(tmp_path / "tensor", rows=40, files=1, size=8, encoding="tensor")
    decoded = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(b))).transpose(2, 0, 1)
            for b in pq.read_table(png).column("image").to_pylist()
        ]
    )
    stored = pq.read_table(tensor).column("image").combine_chunks()
    np.testing.assert_array_equal(np.asarray(stored.storage.values).reshape(decoded.shape), decoded)
