"""Which normalization for this data? k-fold cross-validation over scalers x layers.

Every cell of the grid (input scaler x normalization layer) is trained on the same
folds with the same seed, so cells are compared pair-wise. The scalers are fitted on
the training rows of each fold only: one pass over the data keeps a mergeable state
per fold, and fold ``i``'s statistics are the merge of every other fold's state, so no
validation row leaks into the normalization. ``none`` trains on raw values. The
target is normalized with the same scaler as the features, and every error is
reported in the target's original units.

A third axis, ``inputs``, compares what the model sees: ``all`` (every listed feature;
categorical ones, strings and booleans or those declared, through embeddings of their
codes, with each fold's vocabulary), ``numeric`` (the categorical features left out),
and either with ``+impute`` (missing numeric values filled with each fold's statistic,
``impute``, instead of dropping the row). The target is never imputed.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from normpipe.categories import CategorySpec
from normpipe.commit import SUCCESS, committed_output, local_path
from normpipe.core.column import ColumnState, TableState
from normpipe.core.images import chw_tensor, decode_images, is_image_type
from normpipe.core.tensor import TensorBlock, TensorState, tensor_block
from normpipe.core.vocab import VocabState, kind_of
from normpipe.dataset import discover, select_columns
from normpipe.impute import ImputeSpec
from normpipe.scalers import ZScore
from normpipe.scan import blocks
from normpipe.stats import Stats, fit
from normpipe.tensors import TensorSpec, first_image_shape
from normpipe.train.data import split_mask
from normpipe.train.features import feature_layout
from normpipe.train.loop import TrainConfig, TrainingDiverged, train

__all__ = ["IDENTITY", "CompareResult", "categorical_features", "compare", "fold_stats"]

#: The scaler ``none`` where a run still needs statistics (codes, imputation): the identity.
IDENTITY = {"method": "zscore", "with_mean": False, "with_std": False}


def fold_stats(
    source: str | os.PathLike[str],
    columns: Sequence[str],
    folds: int,
    seed: int,
    k: int = 2000,
    categories: Mapping[str, CategorySpec] | None = None,
    counts: bool = False,
) -> list[Stats]:
    """Statistics of the training rows of each fold, from one pass over ``source``
    (tensor columns too: images per channel, other tensors per element; the columns in
    ``categories`` as value counts; with ``counts`` every scalar column's value counts,
    for ``most_frequent``).

    Fold membership is the one :class:`~normpipe.train.data.ParquetBatches` uses for
    ``fold=(i, folds)`` with the same seed.
    """
    dataset = discover(source)
    schema = dataset.schema
    categories = dict(categories or {})
    plain = [name for name in columns if name not in categories]
    found = feature_layout(schema, plain, None, dataset.source, dataset).tensors
    # images per channel, other tensors per element
    layouts = {
        name: replace(t, per="channel" if t.shape is not None and len(t.shape) == 3 else "element")
        for name, t in found.items()
    }
    kinds = {name: kind_of(schema.field(name).type) for name in categories}
    scalars = [name for name in columns if name not in layouts and name not in categories]
    select_columns(schema, scalars, where=dataset.source, allow_none=True)
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
                rows = table.filter(mask)
                part = TableState(
                    rows.num_rows,
                    {name: ColumnState.from_block(rows.column(name), k, counts=counts) for name in scalars},
                )
                tensors = {
                    name: TensorState.from_block(TensorBlock(v.values[mask], v.valid[mask]), layouts[name], k)
                    for name, v in values.items()
                }
                vocabs = {
                    name: VocabState.from_block(rows.column(name), kinds[name], spec.limit, spec.lg_size)  # type: ignore[arg-type]
                    for name, spec in categories.items()
                }
                per_fold[j] = per_fold[j].merge(replace(part, tensors=tensors, categories=vocabs))
    dtypes = {name: str(schema.field(name).type) for name in columns}
    tensor_specs = {
        name: TensorSpec(shape=t.shape, layout=t.layout, per=t.per, method="zscore")
        for name, t in layouts.items()
    }
    return [
        Stats.from_state(
            TableState.merge_all([s for j, s in enumerate(per_fold) if j != i]),
            {name: ZScore() for name in scalars},
            dtypes,
            k,
            dataset.fingerprint(),
            tensors=tensor_specs,
            categories={name: (spec, False) for name, spec in categories.items()},
        )
        for i in range(folds)
    ]


def categorical_features(
    source: str | os.PathLike[str], features: Sequence[str], declared: Mapping[str, CategorySpec]
) -> dict[str, CategorySpec]:
    """The categorical features: those declared, and every string or boolean feature."""
    schema = discover(source).schema
    found = {}
    for name in features:
        index = schema.get_field_index(name)
        if name in declared or (index >= 0 and kind_of(schema.field(index).type) in ("string", "boolean")):
            found[name] = declared.get(name, CategorySpec())
    return found


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


@dataclass
class Run:
    scaler: str
    norm: str
    fold: int
    inputs: str = "all"
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
        keys = dict.fromkeys((r.inputs, r.scaler, r.norm) for r in self.runs)
        for inputs, scaler, norm in keys:
            runs = [r for r in self.runs if (r.inputs, r.scaler, r.norm) == (inputs, scaler, norm)]
            done = [r for r in runs if r.diverged is None]
            rmse = np.array([r.metrics["rmse"] for r in done])
            reached = [r.epochs_to_target for r in done if r.epochs_to_target is not None]
            rows.append(
                {
                    "inputs": inputs,
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
                    "rows_mean": _mean([r.metrics["rows"] for r in done]),
                    "seconds_mean": float(np.mean([r.metrics["seconds"] for r in done]))
                    if done
                    else math.nan,
                }
            )
        return sorted(rows, key=lambda c: (math.isnan(c["rmse_mean"]), c["rmse_mean"]))

    def markdown(self) -> str:
        several = len({r.inputs for r in self.runs}) > 1  # then the validation rows differ too
        lines = [
            ("| inputs " if several else "")
            + f"| scaler | norm | RMSE ({self.target}) | MAE | R^2 | epochs to target | diverged | s/run |"
            + (" validation rows |" if several else ""),
            ("|---" if several else "") + "|---|---|---|---|---|---|---|---|" + ("---|" if several else ""),
        ]
        for c in self.cells():
            epochs = (
                f"{c['epochs_to_target']:.1f} ({c['reached']}/{c['runs'] - c['diverged']})"
                if c["epochs_to_target"] is not None
                else "never"
            )
            lines.append(
                (f"| {c['inputs']} " if several else "")
                + f"| {c['scaler']} | {c['norm']} | {c['rmse_mean']:.4g} ± {c['rmse_std']:.2g} | "
                f"{c['mae_mean']:.4g} | {c['r2_mean']:.3f} | {epochs} | {c['diverged']}/{c['runs']} | "
                f"{c['seconds_mean']:.1f} |" + (f" {c['rows_mean']:,.0f} |" if several else "")
            )
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        scalers = list(dict.fromkeys(r.scaler for r in self.runs))
        norms = list(dict.fromkeys((r.inputs, r.norm) for r in self.runs))
        several = len({r.inputs for r in self.runs}) > 1
        fig, axes = plt.subplots(1, len(scalers), figsize=(4 * len(scalers), 3.4), sharey=True, squeeze=False)
        for ax, scaler in zip(axes[0], scalers, strict=True):
            for inputs, norm in norms:
                curves = [
                    [h["valid_rmse"] for h in r.history]
                    for r in self.runs
                    if (r.inputs, r.scaler, r.norm) == (inputs, scaler, norm)
                    and r.diverged is None
                    and r.history
                ]
                if not curves:
                    continue
                length = max(len(c) for c in curves)
                # a run stopped early keeps its last value for the later epochs
                padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
                label = f"{inputs}, norm={norm}" if several else f"norm={norm}"
                ax.plot(np.arange(1, length + 1), padded.mean(axis=0), label=label)
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
    inputs: Sequence[str] = ("all",),
    impute: ImputeSpec | None = None,
    categories: Mapping[str, CategorySpec] | None = None,
) -> CompareResult:
    """Cross-validate every (inputs, scaler, norm) cell on the raw dataset ``source``.

    ``config`` holds the features, the target and the training options shared by
    every run (its ``norm``, ``fold`` and features are set per run). ``target_rmse``
    fixes the RMSE that "epochs to target" counts up to; left out, it is
    ``(1 + within)`` times the best final RMSE of each fold. ``inputs``: ``all``,
    ``numeric``, ``all+impute``, ``numeric+impute`` (see the module's docstring), with
    ``impute`` the strategy (default median) and ``categories`` the categorical features'
    options (string and boolean features are categorical anyway).
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    columns = list(dict.fromkeys([*config.features, config.target]))
    coded = categorical_features(source, config.features, categories or {})
    impute = impute if impute is not None else ImputeSpec(strategy="median")
    with tempfile.TemporaryDirectory(prefix="normpipe-compare-") as scratch:
        data = decoded_images(source, columns, Path(scratch))
        grid = _Grid(scalers, norms, inputs, coded, impute)
        return _compare(data, config, columns, grid, folds, target_rmse, within, sketch_k, progress)


@dataclass(frozen=True)
class _Grid:
    """The axes of a comparison, and what the inputs axis needs."""

    scalers: Sequence[str]
    norms: Sequence[str]
    inputs: Sequence[str]
    categories: Mapping[str, CategorySpec]
    impute: ImputeSpec

    def features(self, config: TrainConfig, inputs: str) -> list[str]:
        numeric = inputs.split("+")[0] == "numeric"
        return [name for name in config.features if not (numeric and name in self.categories)]

    @property
    def counts(self) -> bool:
        """Whether a fill needs every value counted (``most_frequent`` in an imputed cell)."""
        return self.impute.strategy == "most_frequent" and any(i.endswith("+impute") for i in self.inputs)

    def imputes(self, features: Sequence[str], inputs: str) -> dict[str, ImputeSpec]:
        if not inputs.endswith("+impute"):
            return {}
        return {name: self.impute for name in features if name not in self.categories}


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
    grid: _Grid,
    folds: int,
    target_rmse: float | None,
    within: float,
    sketch_k: int,
    progress: Callable[[Run], None] | None,
) -> CompareResult:
    needs_stats = (
        any(s != "none" for s in grid.scalers) or grid.categories or any("+" in i for i in grid.inputs)
    )
    statistics = (
        fold_stats(source, columns, folds, config.seed, sketch_k, grid.categories, grid.counts)
        if needs_stats
        else []
    )
    runs: list[Run] = []
    for fold in range(folds):
        for inputs in grid.inputs:
            features = grid.features(config, inputs)
            coded = [name for name in features if name in grid.categories]
            imputes = grid.imputes(features, inputs)
            for scaler in grid.scalers:
                stats = None
                if scaler != "none" or coded or imputes:  # "none" then maps with the identity
                    method = IDENTITY if scaler == "none" else scaler
                    stats = statistics[fold].refit(method)
                    if imputes:
                        stats = fit(stats.statistics, stats.requests, imputes=imputes)
                for norm in grid.norms:
                    run = Run(scaler, norm, fold, inputs)
                    cfg = replace(config, norm=norm, fold=(fold, folds), features=features)  # type: ignore[arg-type]
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
