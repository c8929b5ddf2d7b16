"""Which normalization for this data? k-fold cross-validation over scalers x layers.

Every cell of the grid (input scaler x normalization layer) is trained on the same
folds with the same seed, so cells are compared pair-wise. The scalers are fitted on
the training rows of each fold only: one pass over the data keeps a mergeable state
per fold, and fold ``i``'s statistics are the merge of every other fold's state, so no
validation row leaks into the normalization. ``none`` trains on raw values. The
target is normalized with the same scaler as the features, and every error is
reported in the target's original units.

Per cell the report gives the validation RMSE (mean and std over folds), MAE, R^2,
the epochs needed to reach a target RMSE (by default within 10% of the best final RMSE
of that fold over all cells; never reached: none), the runs that diverged, and the
training time; a PNG shows the fold-mean validation RMSE per epoch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from normpipe.commit import SUCCESS, committed_output, local_path
from normpipe.core.column import TableState
from normpipe.core.images import chw_tensor, decode_images, is_image_type
from normpipe.core.tensor import TensorBlock, TensorState, tensor_block
from normpipe.dataset import discover, select_columns
from normpipe.scalers import ZScore
from normpipe.scan import blocks
from normpipe.stats import Stats
from normpipe.tensors import TensorSpec, first_image_shape
from normpipe.train.data import split_mask
from normpipe.train.features import feature_layout
from normpipe.train.loop import TrainConfig, TrainingDiverged, train

__all__ = ["CompareResult", "compare", "fold_stats"]


def fold_stats(
    source: str | os.PathLike[str], columns: Sequence[str], folds: int, seed: int, k: int = 2000
) -> list[Stats]:
    """Statistics of the training rows of each fold, from one pass over ``source``
    (tensor columns too: images per channel, other tensors per element).

    Fold membership is the one :class:`~normpipe.train.data.ParquetBatches` uses for
    ``fold=(i, folds)`` with the same seed.
    """
    dataset = discover(source)
    schema = dataset.schema
    found = feature_layout(schema, list(columns), None, dataset.source, dataset).tensors
    # images per channel, other tensors per element
    layouts = {
        name: replace(t, per="channel" if t.shape is not None and len(t.shape) == 3 else "element")
        for name, t in found.items()
    }
    scalars = [name for name in columns if name not in layouts]
    select_columns(schema, scalars, where=dataset.source)
    per_fold = [TableState() for _ in range(folds)]
    for file in dataset.files:
        for block in blocks(file, file.open(dataset.fs), list(columns)):
            table = block.table
            values = {
                name: tensor_block(
                    table.column(name), layout, f"{file.path}: column '{name}'", block.first_row, True
                )
                for name, layout in layouts.items()
            }
            for j in range(folds):
                bounds = (j / folds, (j + 1) / folds)
                mask = split_mask(seed, file.relpath, block.first_row, table.num_rows, bounds)
                part = TableState.from_block(table.filter(mask), scalars, k)
                tensors = {
                    name: TensorState.from_block(TensorBlock(v.values[mask], v.valid[mask]), layouts[name], k)
                    for name, v in values.items()
                }
                per_fold[j] = per_fold[j].merge(replace(part, tensors=tensors))
    dtypes = {name: str(schema.field(name).type) for name in columns}
    specs = {name: ZScore() for name in scalars}
    tensor_specs = {
        name: TensorSpec(shape=t.shape, layout=t.layout, per=t.per, method="zscore")
        for name, t in layouts.items()
    }
    return [
        Stats.from_state(
            TableState.merge_all([s for j, s in enumerate(per_fold) if j != i]),
            specs,
            dtypes,
            k,
            dataset.fingerprint(),
            tensors=tensor_specs,
        )
        for i in range(folds)
    ]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


@dataclass
class Run:
    scaler: str
    norm: str
    fold: int
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: str | None = None
    epochs_to_target: int | None = None


@dataclass
class CompareResult:
    """All runs, and the table of cells sorted by mean RMSE."""

    runs: list[Run]
    folds: int
    target: str
    target_rmse: list[float]

    def cells(self) -> list[dict[str, Any]]:
        rows = []
        keys = dict.fromkeys((r.scaler, r.norm) for r in self.runs)
        for scaler, norm in keys:
            runs = [r for r in self.runs if (r.scaler, r.norm) == (scaler, norm)]
            done = [r for r in runs if r.diverged is None]
            rmse = np.array([r.metrics["rmse"] for r in done])
            reached = [r.epochs_to_target for r in done if r.epochs_to_target is not None]
            rows.append(
                {
                    "scaler": scaler,
                    "norm": norm,
                    "rmse_mean": float(rmse.mean()) if done else math.nan,
                    "rmse_std": float(rmse.std(ddof=1)) if len(done) > 1 else math.nan,
                    "mae_mean": _mean([r.metrics["mae"] for r in done]),
                    "r2_mean": _mean([r.metrics["r2"] for r in done]),
                    "epochs_to_target": float(np.mean(reached)) if reached else None,
                    "reached": len(reached),
                    "diverged": len(runs) - len(done),
                    "runs": len(runs),
                    "seconds_mean": float(np.mean([r.metrics["seconds"] for r in done]))
                    if done
                    else math.nan,
                }
            )
        return sorted(rows, key=lambda c: (math.isnan(c["rmse_mean"]), c["rmse_mean"]))

    def markdown(self) -> str:
        lines = [
            f"| scaler | norm | RMSE ({self.target}) | MAE | R^2 | epochs to target | diverged | s/run |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.cells():
            epochs = (
                f"{c['epochs_to_target']:.1f} ({c['reached']}/{c['runs'] - c['diverged']})"
                if c["epochs_to_target"] is not None
                else "never"
            )
            lines.append(
                f"| {c['scaler']} | {c['norm']} | {c['rmse_mean']:.4g} ± {c['rmse_std']:.2g} | "
                f"{c['mae_mean']:.4g} | {c['r2_mean']:.3f} | {epochs} | {c['diverged']}/{c['runs']} | "
                f"{c['seconds_mean']:.1f} |"
            )
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        scalers = list(dict.fromkeys(r.scaler for r in self.runs))
        norms = list(dict.fromkeys(r.norm for r in self.runs))
        fig, axes = plt.subplots(1, len(scalers), figsize=(4 * len(scalers), 3.4), sharey=True, squeeze=False)
        for ax, scaler in zip(axes[0], scalers, strict=True):
            for norm in norms:
                curves = [
                    [h["valid_rmse"] for h in r.history]
                    for r in self.runs
                    if (r.scaler, r.norm) == (scaler, norm) and r.diverged is None and r.history
                ]
                if not curves:
                    continue
                length = max(len(c) for c in curves)
                # a run stopped early keeps its last value for the later epochs
                padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
                ax.plot(np.arange(1, length + 1), padded.mean(axis=0), label=f"norm={norm}")
            ax.axhline(float(np.mean(self.target_rmse)), color="grey", linestyle=":", linewidth=1)
            ax.set_title(f"scaler={scaler}")
            ax.set_xlabel("epoch")
            ax.set_yscale("log")
        axes[0][0].set_ylabel(f"validation RMSE ({self.target}, mean of {self.folds} folds)")
        axes[0][-1].legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "normpipe.compare",
            "version": 1,
            "target": self.target,
            "folds": self.folds,
            "target_rmse": self.target_rmse,
            "cells": self.cells(),
            "runs": [r.__dict__ for r in self.runs],
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """``results.json``, ``table.md``, ``curves.png`` and ``_SUCCESS``, atomically."""
        target = local_path(directory, "the comparison report")
        with committed_output(target) as tmp:
            (tmp / "results.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
            (tmp / "table.md").write_text(self.markdown())
            self.plot(tmp / "curves.png")
            (tmp / SUCCESS).write_text(json.dumps({"runs": len(self.runs), "folds": self.folds}) + "\n")
        return target


def compare(
    source: str | os.PathLike[str],
    config: TrainConfig,
    scalers: Sequence[str] = ("none", "zscore", "minmax", "robust"),
    norms: Sequence[str] = ("none", "batch", "layer"),
    folds: int = 5,
    target_rmse: float | None = None,
    within: float = 0.10,
    sketch_k: int = 2000,
    progress: Callable[[Run], None] | None = None,
) -> CompareResult:
    """Cross-validate every (scaler, norm) cell on the raw dataset ``source``.

    ``config`` holds the features, the target and the training options shared by
    every run (its ``norm`` and ``fold`` are set per run). ``target_rmse`` fixes the RMSE
    that "epochs to target" counts up to; left out, it is ``(1 + within)`` times the
    best final RMSE of each fold.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    columns = list(dict.fromkeys([*config.features, config.target]))
    with tempfile.TemporaryDirectory(prefix="normpipe-compare-") as scratch:
        data = decoded_images(source, columns, Path(scratch))
        return _compare(data, config, columns, scalers, norms, folds, target_rmse, within, sketch_k, progress)


def decoded_images(source: str | os.PathLike[str], columns: Sequence[str], directory: Path) -> str:
    """``source`` itself, or when ``columns`` hold encoded images, a copy of ``columns``
    below ``directory`` with the images decoded once into ``uint8`` CHW tensors (null where
    they do not decode): every cell and epoch of a comparison then reads pixels instead
    of decoding every image again. Files, row groups and row order are kept, so the
    folds are the same."""
    dataset = discover(source)
    schema = dataset.schema
    images = [n for n in columns if schema.get_field_index(n) >= 0 and is_image_type(schema.field(n).type)]
    if not images:
        return os.fspath(source)
    shapes = {name: first_image_shape(dataset, name) for name in images}
    for file in dataset.files:
        dest = directory / file.relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            writer = None
            for block in blocks(file, file.open(dataset.fs), list(columns)):
                table = block.table
                for name in images:
                    c, h, w = shapes[name]
                    where = f"{file.path}: column '{name}'"
                    column = table.column(name).combine_chunks()
                    decoded = decode_images(column, (h, w, c), where, block.first_row, skip=True)
                    tensor = chw_tensor(decoded.pixels, decoded.valid)
                    table = table.set_column(table.schema.get_field_index(name), name, tensor)
                if writer is None:
                    writer = stack.enter_context(pq.ParquetWriter(dest, table.schema))
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
    return os.fspath(directory)


def _compare(
    source: str,
    config: TrainConfig,
    columns: list[str],
    scalers: Sequence[str],
    norms: Sequence[str],
    folds: int,
    target_rmse: float | None,
    within: float,
    sketch_k: int,
    progress: Callable[[Run], None] | None,
) -> CompareResult:
    stats_per_fold = (
        fold_stats(source, columns, folds, config.seed, sketch_k) if any(s != "none" for s in scalers) else []
    )
    runs: list[Run] = []
    for fold in range(folds):
        for scaler in scalers:
            stats = None if scaler == "none" else stats_per_fold[fold].refit(scaler)
            for norm in norms:
                run = Run(scaler, norm, fold)
                cfg = replace(config, norm=norm, fold=(fold, folds))  # type: ignore[arg-type]
                try:
                    result = train(source, stats, cfg, apply_stats=True)
                    run.metrics, run.history = result.metrics, result.history
                except TrainingDiverged as err:
                    run.diverged = str(err)
                runs.append(run)
                if progress is not None:
                    progress(run)
    thresholds = []
    for fold in range(folds):
        finished = [r for r in runs if r.fold == fold and r.diverged is None]
        best = min((r.metrics["rmse"] for r in finished), default=math.nan)
        threshold = target_rmse if target_rmse is not None else (1 + within) * best
        thresholds.append(threshold)
        for r in finished:
            r.epochs_to_target = next(
                (int(h["epoch"]) for h in r.history if h["valid_rmse"] <= threshold), None
            )
    return CompareResult(runs, folds, config.target, thresholds)
