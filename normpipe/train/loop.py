"""Training an MLP regressor on normalized Parquet, with metrics in original units.

The features and the target in the Parquet are already normalized with a stats
artifact; predictions are mapped back with that artifact's inverse transform, so RMSE,
MAE and R^2 are reported in the target's own units. Weights are saved as safetensors
beside a JSON card naming the architecture, the artifact's sha256, the features and
the metrics; nothing is pickled.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch.utils.data import DataLoader

from normpipe.commit import SUCCESS, check_replaceable, commit
from normpipe.core.moments import Moments
from normpipe.dataset import discover
from normpipe.errors import ArtifactError, ConfigError, InputError, NormpipeError
from normpipe.stats import Stats
from normpipe.storage import locate
from normpipe.train.data import ParquetBatches, Split
from normpipe.train.features import FeatureLayout, feature_layout
from normpipe.train.models import CNN, MLP, Norm, embedding_dim
from normpipe.train.sequence import SequenceNorm, SequenceRegressor, SequenceWindows

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "evaluate",
    "fit_model",
    "load_model",
    "save_model",
    "train",
]


class TrainingDiverged(NormpipeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Model, optimizer and data options of one training run."""

    features: Sequence[str]
    target: str
    model: Literal["mlp", "sequence", "cnn"] = "mlp"
    hidden: Sequence[int] = (64, 64)
    # cnn: output channels of each convolution block (the first feature is the image)
    channels: Sequence[int] = (16, 32)
    norm: Norm | SequenceNorm = "batch"
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 50
    patience: int = 5
    seed: int = 0
    valid_fraction: float = 0.2
    fold: tuple[int, int] | None = None
    sample: float = 1.0
    shuffle_buffer: int = 16_384
    num_workers: int = 0
    device: str = "auto"
    # sequence model: series ordered by `time` (one series per value of `series`),
    # `window` past rows predict the target's next value
    time: str | None = None
    series: str | None = None
    window: int = 24
    # mlp: each categorical feature's embedding width (None: from its vocabulary's size)
    embedding_dim: int | None = None


@dataclass
class TrainResult:
    """The trained model (best weights, eval mode) and how the run went.

    ``metrics`` are on the validation rows in the target's original units (``rmse``,
    ``mae``, ``r2``, ``rows``) plus ``rows_per_s`` (training throughput) and
    ``seconds``; ``history`` has one entry per epoch (``train_loss`` and
    ``valid_loss`` in normalized units, ``valid_rmse`` in original units).
    """

    model: torch.nn.Module
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def device_for(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


Inverse = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    inverse: Inverse,
) -> dict[str, float]:
    """Validation metrics, accumulated batch by batch (memory does not grow with rows).

    ``loss``: MSE in model units; ``rmse``, ``mae``, ``r2``: in original units (through
    ``inverse``); ``rows``. R^2's total sum of squares comes from the targets'
    :class:`~normpipe.core.moments.Moments`, merged per batch (Chan et al.).
    """
    model.eval()
    rows, loss, squared, absolute = 0, 0.0, 0.0, 0.0
    target = Moments()
    with torch.no_grad():
        for xb, yb in batches:
            p = model(xb.to(device)).squeeze(1).double().cpu().numpy()
            y = yb.double().numpy()
            loss += float(np.sum((p - y) ** 2))
            y_units = inverse(y)
            error = inverse(p) - y_units
            squared += float(np.sum(error**2))
            absolute += float(np.sum(np.abs(error)))
            target = target.merge(Moments.from_block(y_units))
            rows += y.size
    if rows == 0:
        raise InputError("no validation rows: raise valid_fraction or use more data")
    return {
        "loss": loss / rows,
        "rmse": math.sqrt(squared / rows),
        "mae": absolute / rows,
        "r2": 1.0 - squared / target.m2 if target.m2 > 0 else math.nan,
        "rows": float(rows),
    }


def fit_model(
    model: torch.nn.Module,
    train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    valid_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    inverse: Inverse,
    config: TrainConfig,
) -> TrainResult:
    """The training loop shared by every model: AdamW on MSE, early stopping.

    ``inverse`` maps the target from model units back to original units, for the
    metrics. The weights of the epoch with the lowest validation loss are kept. A
    non-finite loss stops the run with :class:`TrainingDiverged`. Seed torch before
    building ``model`` for a reproducible run (:func:`train` does). Batches of one row are
    skipped for models with batch norm (it cannot train on one row).
    """
    device = device_for(config.device)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best = (math.inf, 0, _snapshot(model))
    history: list[dict[str, float]] = []
    trained_rows, trained_seconds = 0, 0.0
    for epoch in range(1, config.max_epochs + 1):
        dataset = getattr(train_batches, "dataset", train_batches)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        model.train()
        total, rows = 0.0, 0
        started = time.perf_counter()
        for step, (xb, yb) in enumerate(train_batches):
            if len(yb) < 2 and config.norm == "batch":
                continue
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = torch.nn.functional.mse_loss(model(xb).squeeze(1), yb)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}, batch {step}; "
                    "lower the learning rate (lr) or check the inputs for extreme values"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            rows += len(yb)
        trained_seconds += time.perf_counter() - started
        trained_rows += rows
        scores = evaluate(model, valid_batches, device, inverse)
        valid_loss = scores["loss"]
        if not math.isfinite(valid_loss):
            raise TrainingDiverged(
                f"training diverged: validation loss is {valid_loss} at epoch {epoch}; "
                "lower the learning rate (lr) or check the inputs for extreme values"
            )
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / max(rows, 1),
                "valid_loss": valid_loss,
                "valid_rmse": scores["rmse"],
            }
        )
        if valid_loss < best[0]:
            best = (valid_loss, epoch, _snapshot(model))
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    metrics = evaluate(model, valid_batches, device, inverse)
    del metrics["loss"]
    metrics["rows_per_s"] = trained_rows / trained_seconds if trained_seconds > 0 else float("nan")
    metrics["seconds"] = trained_seconds
    return TrainResult(model, metrics, history, best[1])


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _identity(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return values


def train(
    source: str | os.PathLike[str],
    stats: Stats | None,
    config: TrainConfig,
    *,
    apply_stats: bool = False,
) -> TrainResult:
    """Train an :class:`MLP` on the dataset ``source``.

    Parameters
    ----------
    source : str or path
        Parquet file, directory or glob.
    stats : Stats or None
        The artifact the data was normalized with (``apply_stats=False``, the usual
        case: the output of ``normpipe run``), or to normalize with while reading raw
        data (``apply_stats=True``). Metrics are mapped back to original units with its
        inverse. None: the data is used as it is.
    config : TrainConfig
        Model and optimizer options.

    Returns
    -------
    TrainResult
        The model (best weights, eval mode), validation metrics in the target's
        original units, and the per-epoch history.
    """
    inverse: Inverse = _identity
    if stats is not None:
        # The target must be in the artifact (its inverse gives the metrics' units);
        # features it lacks are used as they are, as `normpipe run` copies them.
        if config.target not in stats.columns:
            raise ArtifactError(
                f"target '{config.target}' is not in the stats artifact; fit it together with the features"
            )
        if stats.groups is not None and config.target in stats.groups.moments:
            raise ArtifactError(
                f"target '{config.target}' is normalized per '{stats.groups.by}' group, and training "
                "maps predictions back with one set of parameters; fit the training data's statistics "
                "without --group-by"
            )
        imputed = stats.columns[config.target].impute
        if imputed.strategy != "none":
            raise ArtifactError(
                f"target '{config.target}' is imputed ({imputed.strategy}) in the stats artifact: its "
                "missing values would train as made-up labels; set impute_overrides: "
                f"{{{config.target}: none}} and run again"
            )
        inverse = partial(stats.inverse_column, config.target)
    normalize = stats if apply_stats else None
    torch.manual_seed(config.seed)  # before the model is built: its initial weights too
    if config.model == "sequence":
        if config.time is None:  # windows stored as a tensor column: streamed like any rows
            return fit_model(
                _window_model(source, stats, config),
                _loader(source, config, "train", stats, apply_stats),
                _loader(source, config, "valid", stats, apply_stats),
                inverse,
                config,
            )
        if config.fold is not None:
            raise ConfigError("the sequence model validates on the latest windows; k-fold is not supported")
        windows = SequenceWindows(
            source,
            config.features,
            config.target,
            config.time,
            config.series,
            config.window,
            batch_size=config.batch_size,
            seed=config.seed,
            stats=normalize,
        )
        train_windows, valid_windows = windows.split(config.valid_fraction)
        sequence = SequenceRegressor(
            len(windows.channels),
            config.window,
            windows.target_channel,
            config.hidden,
            config.norm,
            config.dropout,
        )
        return fit_model(sequence, train_windows, valid_windows, inverse, config)
    model: torch.nn.Module
    if config.model == "cnn":
        model = _cnn(source, stats, config)
    else:
        if config.norm == "instance":
            raise ConfigError(
                "norm 'instance' is for the sequence and cnn models; the MLP takes batch, layer or none"
            )
        layout = _features(source, config, stats)
        embedded = [(at, n, embedding_dim(n, config.embedding_dim)) for at, n in layout.embedded()]
        model = MLP(layout.width, config.hidden, config.norm, config.dropout, embedded=embedded)
    return fit_model(
        model,
        _loader(source, config, "train", stats, apply_stats),
        _loader(source, config, "valid", stats, apply_stats),
        inverse,
        config,
    )


def _features(source: str | os.PathLike[str], config: TrainConfig, stats: Stats | None) -> FeatureLayout:
    dataset = discover(source)
    return feature_layout(dataset.schema, config.features, stats, dataset.source, dataset)


def _window_model(
    source: str | os.PathLike[str], stats: Stats | None, config: TrainConfig
) -> SequenceRegressor:
    """The sequence model on a window tensor column (shape ``[time]`` or ``[time,
    channels]``), the only feature; the target continues its first channel."""
    layout = _features(source, config, stats)
    name = config.features[0] if len(config.features) == 1 else ""
    tensor = layout.tensors.get(name)
    if tensor is None or tensor.shape is None or len(tensor.shape) > 2:
        raise ConfigError(
            "the sequence model needs 'time', the column that orders each series, or one window "
            "tensor column (shape [time] or [time, channels]) as its only feature"
        )
    steps, channels = (tensor.shape[0], tensor.shape[1] if len(tensor.shape) == 2 else 1)
    norm: Any = config.norm
    return SequenceRegressor(channels, steps, 0, config.hidden, norm, config.dropout)


def _cnn(source: str | os.PathLike[str], stats: Stats | None, config: TrainConfig) -> CNN:
    """The CNN for ``config.features``: an image first (a tensor of three axes), then scalars."""
    layout = _features(source, config, stats)
    image = config.features[0] if config.features else ""
    tensor = layout.tensors.get(image)
    if tensor is None or tensor.shape is None or len(tensor.shape) != 3:
        raise ConfigError(
            f"the cnn model takes an image first in features (a tensor of three axes); '{image}' is not one"
        )
    extra = [name for name in config.features[1:] if name in layout.tensors]
    if extra:
        raise ConfigError(f"the cnn model takes one image; feature '{extra[0]}' is a tensor too")
    norm: Any = config.norm
    return CNN(
        tensor.shape,
        tensor.layout,
        layout.width - layout.widths[0],
        config.channels,
        config.hidden,
        norm,
        config.dropout,
    )


def _loader(
    source: str | os.PathLike[str], config: TrainConfig, split: Split, stats: Stats | None, normalize: bool
) -> DataLoader[Any]:
    data = ParquetBatches(
        source,
        config.features,
        config.target,
        split=split,
        valid_fraction=config.valid_fraction,
        fold=config.fold,
        sample=config.sample,
        batch_size=config.batch_size if split == "train" else max(config.batch_size, 4096),
        shuffle_buffer=config.shuffle_buffer if split == "train" else 0,
        seed=config.seed,
        stats=stats,
        normalize=normalize,
    )
    workers = config.num_workers if split == "train" else 0
    return DataLoader(data, batch_size=None, num_workers=workers)


MODEL_FORMAT = "normpipe.model"
MODEL_VERSION = 1


def save_model(
    result: TrainResult,
    config: TrainConfig,
    stats: Stats | None,
    directory: str | os.PathLike[str],
    overwrite: bool = False,
) -> str:
    """Write the model directory (a path or any fsspec URL) under the commit protocol;
    returns where.

    It holds ``model.safetensors`` (weights), ``model.json`` (the card: architecture,
    features, target, the stats artifact's sha256, metrics, history, training options),
    ``stats.json`` (a copy of the artifact, so the directory alone can predict) and
    ``_SUCCESS``. Nothing is pickled.
    """
    target = locate(directory)
    if target.is_local:
        check_replaceable(Path(target.path), overwrite)
    card = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "architecture": result.model.architecture,
        "features": list(config.features),
        "target": config.target,
        "stats_sha256": stats.sha256 if stats is not None else None,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    weights = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    with commit(target, overwrite) as written:
        tmp = written.where
        tmp.child("model.safetensors").write_bytes(safetensors_save(weights))
        if stats is not None:
            tmp.child("stats.json").write_bytes(stats.to_bytes())
        tmp.child("model.json").write_bytes((json.dumps(card, indent=2, allow_nan=True) + "\n").encode())
        tmp.child(SUCCESS).write_bytes((json.dumps({"metrics": result.metrics}) + "\n").encode())
    return target.url


def load_model(directory: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any], Stats | None]:
    """The model (eval mode, CPU), its card and its stats artifact (None if trained
    on raw data), read as data (JSON + safetensors)."""
    root = locate(directory)
    try:
        card = json.loads(root.child("model.json").read_bytes())
    except InputError:
        raise ArtifactError(f"{root}: no model.json; pass a directory written by 'normpipe train'") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        card_path = root.child("model.json")
        raise ArtifactError(f"{card_path}: invalid JSON ({err}); train the model again") from None
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise ArtifactError(
            f"{root.child('model.json')}: not a normpipe model card; pass a 'normpipe train' output"
        )
    if card.get("version") != MODEL_VERSION:
        raise ArtifactError(
            f"{root.child('model.json')}: model format version {card.get('version')!r} is not "
            f"{MODEL_VERSION}; "
            "use the normpipe version that trained it"
        )
    try:
        arch = dict(card["architecture"])
        kind = arch.pop("kind")
        builders: dict[str, Any] = {"mlp": MLP, "sequence": SequenceRegressor, "cnn": CNN}
        model: torch.nn.Module = builders[kind](**arch)
        model.load_state_dict(safetensors_load(root.child("model.safetensors").read_bytes()))
    except (KeyError, TypeError, ValueError, RuntimeError, OSError, SafetensorError, InputError) as err:
        raise ArtifactError(
            f"{root}: the model card and weights do not match ({type(err).__name__}: {err}); "
            "train the model again"
        ) from None
    model.eval()
    stats = None
    if card.get("stats_sha256"):
        stats = Stats.load(root.child("stats.json").url)
        if stats.sha256 != card["stats_sha256"]:
            raise ArtifactError(
                f"{root.child('stats.json')}: sha256 differs from the model card's; the directory was altered"
            )
    return model, card, stats
