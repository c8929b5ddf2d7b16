"""Prefect flows for the training step: ``train``, ``compare`` and ``pipeline``.

``pipeline`` runs the ``preprocess`` flow (Dask) and then trains on its output with its
artifact. Training runs in the flow's own process (PyTorch, CUDA when available); the
metrics table is published as a Prefect artifact. No numerical code lives here.
"""

# No `from __future__ import annotations`: Prefect reads the parameter annotations.
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.preprocess import _uri, preprocess
from normpipe.config import CompareConfig, RunConfig, TrainRunConfig, load_model_config

__all__ = ["compare", "pipeline", "train"]


def _train_config(config: TrainRunConfig | str | Path, **options: Any) -> TrainRunConfig:
    if isinstance(config, TrainRunConfig):
        return load_model_config(TrainRunConfig, None, **{**config.model_dump(), **options})  # type: ignore[no-any-return]
    return load_model_config(TrainRunConfig, config, **options)  # type: ignore[no-any-return]


@task(cache_policy=NO_CACHE)
def fit_model(config: TrainRunConfig) -> dict[str, Any]:
    """Train and save the model; returns the model card's metrics, history and path."""
    from normpipe.train.runs import train_from_config

    result, directory, stats = train_from_config(config)
    return {
        "model": str(directory),
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "stats_sha256": stats.sha256 if stats is not None else None,
    }


def _publish_training(config: TrainRunConfig, summary: dict[str, Any]) -> list[str]:
    metrics = summary["metrics"]
    create_table_artifact(
        key="normpipe-train-metrics",
        table=[
            {
                "model": config.model.kind,
                "norm": config.model.norm,
                "target": config.target,
                "rmse": round(metrics["rmse"], 6),
                "mae": round(metrics["mae"], 6),
                "r2": round(metrics["r2"], 6),
                "validation_rows": int(metrics["rows"]),
                "best_epoch": summary["best_epoch"],
                "epochs": len(summary["history"]),
                "train_rows_per_s": round(metrics["rows_per_s"]),
            }
        ],
        description="Validation metrics in the target's original units",
    )
    create_link_artifact(_uri(summary["model"]), link_text="model", key="normpipe-model")
    return ["normpipe-train-metrics", "normpipe-model"]


@flow(name="train")
def train(config: TrainRunConfig | str) -> dict[str, Any]:
    """Normalized Parquet -> model directory; returns its metrics and path."""
    cfg = _train_config(config)
    summary = fit_model(cfg)
    summary["artifacts"] = _publish_training(cfg, summary)
    get_run_logger().info("model in %s: RMSE %.4g", summary["model"], summary["metrics"]["rmse"])
    return summary


@flow(name="compare")
def compare(config: CompareConfig | str) -> dict[str, Any]:
    """k-fold comparison of scalers x normalization layers; returns the table's cells."""
    from normpipe.train.runs import compare_from_config

    cfg = config if isinstance(config, CompareConfig) else load_model_config(CompareConfig, config)
    result, directory = compare_from_config(cfg)
    create_markdown_artifact(
        key="normpipe-compare",
        markdown=f"# Normalization comparison ({cfg.folds}-fold CV)\n\n{result.markdown()}",
        description="Validation RMSE in the target's units, by scaler and normalization layer",
    )
    return {"report": str(directory), "cells": result.cells()}


@flow(name="pipeline")
def pipeline(
    preprocess_config: RunConfig | str, train_config: TrainRunConfig | str, refresh: bool = False
) -> dict[str, Any]:
    """Preprocess (stats + normalized Parquet), then train on that output with its artifact.

    The training config's ``data`` and ``stats`` are replaced by the preprocess output.
    """
    manifest = preprocess(preprocess_config, refresh=refresh)
    cfg = _train_config(train_config, data=manifest["output"], stats=manifest["stats"])
    summary = fit_model(cfg)
    summary["artifacts"] = _publish_training(cfg, summary)
    summary["preprocess"] = {k: manifest[k] for k in ("output", "stats", "rows_out")}
    return summary
