"""Training and comparison runs from a validated config (the CLI's and the flows' entry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from normpipe.commit import check_replaceable, current
from normpipe.config import CompareConfig, ModelOptions, TrainOptions, TrainRunConfig
from normpipe.dataset import discover
from normpipe.errors import ArtifactError, ConfigError
from normpipe.stats import Stats
from normpipe.storage import locate
from normpipe.train.compare import CompareResult, Run, compare
from normpipe.train.loop import TrainConfig, TrainResult, save_model, train
from normpipe.writer import STATS_SHA256_KEY

__all__ = ["compare_from_config", "train_config", "train_from_config"]


def train_config(
    features: list[str], target: str, model: ModelOptions, training: TrainOptions
) -> TrainConfig:
    """The :class:`TrainConfig` of a YAML config's ``model`` and ``training`` sections."""
    return TrainConfig(
        features=list(features),
        target=target,
        model=model.kind,
        hidden=tuple(model.hidden),
        channels=tuple(model.channels),
        norm=model.norm,
        dropout=model.dropout,
        time=model.time,
        series=model.series,
        window=model.window,
        embedding_dim=model.embedding_dim,
        **training.model_dump(),
    )


def _required(config: TrainRunConfig | CompareConfig) -> tuple[str, str, str]:
    """data, target, output: checked present by :func:`~normpipe.config.load_model_config`."""
    if config.data is None or config.target is None or config.output is None:
        raise ConfigError("'data', 'target' and 'output' are required")
    return config.data, config.target, config.output


def _stats_for(config: TrainRunConfig) -> Stats | None:
    """The artifact the data was normalized with: ``stats``, else ``DATA/_stats.json``;
    None for data that normpipe did not write. A mismatch with the data's footer is an
    error (a model would be scaled with one artifact and inverted with another)."""
    data, _, _ = _required(config)
    default = current(locate(data)).child("_stats.json")
    path = config.stats or (default.url if default.exists() else None)
    if path is None:
        return None
    stats = Stats.load(path)
    dataset = discover(data)
    footer = dataset.files[0].open(dataset.fs).schema_arrow.metadata or {}
    written_with = footer.get(STATS_SHA256_KEY)
    if written_with is not None and written_with.decode() != stats.sha256:
        raise ArtifactError(
            f"{dataset.files[0].path} was normalized with artifact {written_with.decode()[:12]}…, "
            f"not {path} ({stats.sha256[:12]}…); pass the artifact of that output"
        )
    return stats


def train_from_config(config: TrainRunConfig) -> tuple[TrainResult, str, Stats | None]:
    """Train on ``config.data``, save the model to ``config.output``; returns the result,
    the model directory and the artifact used."""
    data, target, output = _required(config)
    stats = _stats_for(config)
    options = train_config(config.features, target, config.model, config.training)
    result = train(data, stats, options)
    directory = save_model(result, options, stats, output, overwrite=config.overwrite)
    return result, directory, stats


def compare_from_config(
    config: CompareConfig, progress: Callable[[Run], None] | None = None
) -> tuple[CompareResult, Path]:
    """Run the comparison grid on ``config.data``; the report goes to ``config.output``."""
    data, target, out = _required(config)
    output = Path(out)
    check_replaceable(output, config.overwrite)
    options = train_config(config.features, target, config.model, config.training)
    result = compare(
        data,
        options,
        scalers=config.scalers,
        norms=config.norms,
        folds=config.folds,
        target_rmse=config.target_rmse,
        within=config.within,
        sketch_k=config.sketch_k,
        progress=progress,
        inputs=config.inputs,
        impute=config.impute,
        categories=config.categories,
    )
    return result, result.save(output)
