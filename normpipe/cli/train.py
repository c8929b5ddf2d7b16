"""The training commands: train, predict, compare (the ``train`` extra)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from normpipe.cli.app import app, clean_errors, console
from normpipe.cli.options import (
    OverwriteOpt,
    StatsOpt,
)
from normpipe.errors import ConfigError

ModelConfigArg = Annotated[Path, typer.Argument(help="YAML config (see configs/train-*.yaml).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Dataset (replaces the config's 'data').")]


def _needs_torch() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("safetensors") is None:
        raise ConfigError("training needs PyTorch: pip install 'normpipe[train]'")


def _metrics_line(metrics: dict[str, float]) -> str:
    return (
        f"RMSE {metrics['rmse']:.4g}  MAE {metrics['mae']:.4g}  R^2 {metrics['r2']:.4f}  "
        f"({int(metrics['rows']):,} validation rows, original units; "
        f"{metrics['rows_per_s']:,.0f} training rows/s)"
    )


@app.command()
@clean_errors
def train(
    config: ModelConfigArg,
    data: DataOpt = None,
    stats: StatsOpt = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Model directory.")] = None,
    overwrite: OverwriteOpt = None,
) -> None:
    """Train a regression model on normalized Parquet (the output of 'normpipe run').

    Targets are scaled with the stats artifact and the metrics are reported in the
    target's original units. Saves model.safetensors, model.json, stats.json.
    """
    from normpipe.config import TrainRunConfig, load_model_config

    cfg = load_model_config(
        TrainRunConfig, config, data=data, stats=stats, output=output, overwrite=overwrite
    )
    _needs_torch()
    from normpipe.train.runs import train_from_config

    started = time.perf_counter()
    result, directory, _ = train_from_config(cfg)
    console.print(
        f"[bold]{cfg.model.kind}[/] norm={cfg.model.norm}: best epoch {result.best_epoch} "
        f"of {len(result.history)}; {_metrics_line(result.metrics)}"
    )
    console.print(f"model: {directory}  ({time.perf_counter() - started:.1f} s)")


@app.command()
@clean_errors
def predict(
    model: Annotated[str, typer.Argument(help="Model directory written by 'normpipe train'.")],
    source: Annotated[str, typer.Argument(help="Parquet file, directory or glob, in original units.")],
    output: Annotated[str, typer.Argument(help="Output directory for the predictions.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier output.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Apply a saved model to raw data; adds <target>_pred in original units."""
    _needs_torch()
    from normpipe.train.predict import predict as run_predict

    manifest = run_predict(model, source, output, overwrite=overwrite, device=device)
    console.print(f"wrote {manifest['rows_out']:,} rows with predictions to {manifest['output']}")


@app.command()
@clean_errors
def export(
    model: Annotated[str, typer.Argument(help="Model directory written by 'normpipe train'.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The file to write.")],
    format: Annotated[
        Literal["onnx", "torchscript"], typer.Option("--format", help="onnx or torchscript.")
    ] = "onnx",
) -> None:
    """Write the model with its normalization: raw features in, predictions in original units out."""
    _needs_torch()
    from normpipe.export import export_model

    started = time.perf_counter()
    dest = export_model(model, output, format)
    size = dest.stat().st_size
    console.print(f"{format}: {dest}  ({size / 1e3:,.0f} kB, {time.perf_counter() - started:.1f} s)")


@app.command()
@clean_errors
def compare(
    config: ModelConfigArg,
    data: DataOpt = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Report directory.")] = None,
    folds: Annotated[int | None, typer.Option("--folds", help="Cross-validation folds.")] = None,
    overwrite: OverwriteOpt = None,
) -> None:
    """Which normalization? k-fold CV over scalers x normalization layers on raw data.

    Writes results.json, table.md and curves.png (validation RMSE per epoch).
    """
    from normpipe.config import CompareConfig, load_model_config

    cfg = load_model_config(CompareConfig, config, data=data, output=output, folds=folds, overwrite=overwrite)
    _needs_torch()
    from normpipe.train.runs import compare_from_config

    total = cfg.folds * len(cfg.scalers) * len(cfg.norms) * len(cfg.inputs)
    done = 0

    def report(run: Any) -> None:
        nonlocal done
        done += 1
        outcome = "diverged" if run.diverged else f"RMSE {run.metrics['rmse']:.4g}"
        inputs = f" inputs={run.inputs}" if len(cfg.inputs) > 1 else ""
        console.print(
            f"[{done}/{total}] fold {run.fold}{inputs} scaler={run.scaler} norm={run.norm}: {outcome}"
        )

    result, directory = compare_from_config(cfg, progress=report)
    console.print(result.markdown())
    console.print(f"report: {directory}/table.md, results.json, curves.png")
