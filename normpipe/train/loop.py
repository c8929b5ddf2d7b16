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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from normpipe.artifact import Stats
from normpipe.errors import ArtifactError, NormpipeError
from normpipe.train.data import ParquetBatches
from normpipe.train.models import MLP, Norm

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "load_model", "save_model", "train"]


class TrainingDiverged(NormpipeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainConfig:
    """Model, optimizer and data options of one training run."""

    features: Sequence[str]
    target: str
    hidden: Sequence[int] = (64, 64)
    norm: Norm = "batch"
    dropout: float = 0.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 50
    patience: int = 5
    seed: int = 0
    valid_fraction: float = 0.2
    shuffle_buffer: int = 16_384
    num_workers: int = 0
    device: str = "auto"


@dataclass
class TrainResult:
    model: MLP
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _metrics(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> dict[str, float]:
    error = p - y
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else float("nan"),
        "rows": float(y.size),
    }


def _predict(model: MLP, loader: DataLoader[Any], device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    ys, ps = [], []
    with torch.no_grad():
        for xb, yb in loader:
            ps.append(model(xb.to(device)).squeeze(1).double().cpu().numpy())
            ys.append(yb.double().numpy())
    return np.concatenate(ys), np.concatenate(ps)


def train(source: str | os.PathLike[str], stats: Stats, config: TrainConfig) -> TrainResult:
    """Train on the normalized dataset ``source`` (written with ``stats``).

    Early stopping keeps the weights of the epoch with the lowest validation loss. A
    non-finite loss stops the run with :class:`TrainingDiverged`.

    Returns
    -------
    TrainResult
        The model (best weights, eval mode), validation metrics in the target's
        original units, and the per-epoch history.
    """
    if config.target not in stats.columns:
        raise ArtifactError(
            f"target '{config.target}' is not in the stats artifact; fit it with the features"
        )
    torch.manual_seed(config.seed)
    device = _device(config.device)

    def loader(split: str) -> DataLoader[Any]:
        data = ParquetBatches(
            source,
            config.features,
            config.target,
            split=split,  # type: ignore[arg-type]
            valid_fraction=config.valid_fraction,
            batch_size=config.batch_size,
            shuffle_buffer=config.shuffle_buffer if split == "train" else 0,
            seed=config.seed,
        )
        return DataLoader(data, batch_size=None, num_workers=config.num_workers)

    train_loader, valid_loader = loader("train"), loader("valid")
    model = MLP(len(config.features), config.hidden, config.norm, config.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best = (math.inf, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    history = []
    for epoch in range(1, config.max_epochs + 1):
        train_loader.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        model.train()
        total, rows = 0.0, 0
        for step, (xb, yb) in enumerate(train_loader):
            if len(yb) < 2 and config.norm == "batch":
                continue  # BatchNorm cannot train on a single row
            xb, yb = xb.to(device), yb.to(device)
            loss = torch.nn.functional.mse_loss(model(xb).squeeze(1), yb)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: loss is {loss.item()} at epoch {epoch}, batch {step}; "
                    "lower the learning rate (lr) or check the inputs for extreme values"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            rows += len(yb)
        y, p = _predict(model, valid_loader, device)
        valid_loss = float(np.mean((p - y) ** 2))
        history.append({"epoch": epoch, "train_loss": total / max(rows, 1), "valid_loss": valid_loss})
        if valid_loss < best[0]:
            best = (valid_loss, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    y, p = _predict(model, valid_loader, device)
    metrics = _metrics(stats.inverse_column(config.target, y), stats.inverse_column(config.target, p))
    return TrainResult(model, metrics, history, best[1])


def save_model(
    result: TrainResult, config: TrainConfig, stats: Stats, directory: str | os.PathLike[str]
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; returns it."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()},
        target / "model.safetensors",
    )
    card = {
        "format": "normpipe.model",
        "version": 1,
        "architecture": {
            "kind": "mlp",
            "n_features": len(config.features),
            "hidden": list(config.hidden),
            "norm": config.norm,
            "dropout": config.dropout,
        },
        "features": list(config.features),
        "target": config.target,
        "stats_sha256": stats.sha256,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    (target / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return target


def load_model(directory: str | os.PathLike[str]) -> tuple[MLP, dict[str, Any]]:
    """The model (eval mode, CPU) and its card, read as data (JSON + safetensors)."""
    card = json.loads(Path(directory, "model.json").read_text())
    arch = card["architecture"]
    model = MLP(arch["n_features"], arch["hidden"], arch["norm"], arch["dropout"])
    model.load_state_dict(load_file(Path(directory, "model.safetensors")))
    model.eval()
    return model, card
