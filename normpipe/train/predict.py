"""Applying a saved model to a raw Parquet dataset; predictions in original units.

The model directory carries its stats artifact, so the input is the data in its
original units: features are normalized as they are read and predictions are mapped
back with the target's inverse. Output appears atomically with a ``_SUCCESS`` manifest.

- MLP and CNN: every input file is copied with one more column, ``<target>_pred`` (float64;
  null where a feature is missing), row groups and row order kept.
- Sequence model: one file ``predictions.parquet`` with the series and time keys, the
  target and ``<target>_pred`` for every row that ends a complete window.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from normpipe.commit import check_output, committed_output, destination, local_path, write_manifest
from normpipe.dataset import Dataset, discover
from normpipe.errors import InputError
from normpipe.scan import blocks
from normpipe.stats import Stats
from normpipe.train.features import FeatureLayout, feature_layout, feature_rows
from normpipe.train.loop import device_for, load_model
from normpipe.train.sequence import SequenceWindows

__all__ = ["predict"]

BATCH = 65_536


def predict(
    model_dir: str | os.PathLike[str],
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    overwrite: bool = False,
    device: str = "auto",
) -> dict[str, Any]:
    """Predict with the model in ``model_dir`` on ``source``; returns the manifest."""
    model, card, stats = load_model(model_dir)
    dataset = discover(source)
    out = local_path(output, "the predictions")
    check_output(out, dataset, overwrite)
    run_on = device_for(device)
    model.to(run_on)
    target = card["target"]
    sha = card.get("stats_sha256") or ""
    with committed_output(out) as tmp:
        if card["architecture"]["kind"] == "sequence" and card["train_config"].get("time"):
            files = [_predict_sequence(model, card, stats, dataset, tmp, run_on)]
        else:
            layout = feature_layout(dataset.schema, card["features"], stats, dataset.source, dataset)
            files = [
                _predict_file(model, layout, target, stats, dataset, i, tmp, run_on)
                for i in range(len(dataset.files))
            ]
        manifest = write_manifest(tmp, files, sha, dataset.source)
    manifest["output"] = str(out)
    return manifest


def _forward(
    model: torch.nn.Module, x: npt.NDArray[np.float32], device: torch.device
) -> npt.NDArray[np.float64]:
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), BATCH):
            batch = torch.from_numpy(x[start : start + BATCH]).to(device)
            parts.append(model(batch).squeeze(1).double().cpu().numpy())
    return np.concatenate(parts) if parts else np.empty(0)


def _predict_file(
    model: torch.nn.Module,
    layout: FeatureLayout,
    target: str,
    stats: Stats | None,
    dataset: Dataset,
    index: int,
    dest_root: Path,
    device: torch.device,
) -> dict[str, Any]:
    file = dataset.files[index]
    parquet = file.open(dataset.fs)
    name = f"{target}_pred"
    if parquet.schema_arrow.get_field_index(name) >= 0:
        raise InputError(f"{file.path}: already has a column '{name}'; rename it or drop it first")
    dest = destination(dest_root, file.relpath)
    dest.parent.mkdir(parents=True, exist_ok=True)
    schema = parquet.schema_arrow.append(pa.field(name, pa.float64()))
    written = 0
    with pq.ParquetWriter(dest, schema, compression="snappy") as writer:
        for block in blocks(file, parquet):
            table = block.table
            x = feature_rows(table, layout, stats, True, file.path)
            ok = np.isfinite(x).all(axis=1)
            pred = np.full(table.num_rows, np.nan)
            if ok.any():
                raw = _forward(model, np.ascontiguousarray(x[ok]), device)
                pred[ok] = raw if stats is None else stats.inverse_column(target, raw)
            table = table.append_column(pa.field(name, pa.float64()), pa.array(pred, mask=~ok))
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            written += table.num_rows
    return {"path": file.relpath, "rows_in": parquet.metadata.num_rows, "rows_out": written}


def _predict_sequence(
    model: torch.nn.Module,
    card: dict[str, Any],
    stats: Stats | None,
    dataset: Dataset,
    dest_root: Path,
    device: torch.device,
) -> dict[str, Any]:
    options = card["train_config"]
    target = card["target"]
    windows = SequenceWindows(
        dataset.source,
        card["features"],
        target,
        options["time"],
        options["series"],
        options["window"],
        shuffle=False,
        stats=stats,
    )
    ends = windows.ends
    raw = np.concatenate(
        [np.empty(0)]
        + [
            _forward(model, windows.windows(ends[s : s + BATCH])[0].numpy(), device)
            for s in range(0, len(ends), BATCH)
        ]
    )
    truth = windows.values[ends, windows.target_channel].astype(np.float64)
    if stats is not None:
        raw, truth = stats.inverse_column(target, raw), stats.inverse_column(target, truth)
    keys = {options["time"]: windows.keys[options["time"]][ends]}
    if options["series"]:
        keys = {options["series"]: windows.keys[options["series"]][ends], **keys}
    table = pa.table({**keys, target: truth, f"{target}_pred": raw})
    pq.write_table(table, dest_root / "predictions.parquet")
    return {"path": "predictions.parquet", "rows_in": len(ends), "rows_out": table.num_rows}
