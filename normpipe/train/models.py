"""Regression models whose hidden blocks use batch, layer or no normalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["MLP", "Norm"]

Norm = Literal["batch", "layer", "none"]


def _norm_layer(kind: Norm, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


class MLP(nn.Module):
    """A tabular regression MLP: ``[Linear -> Norm -> ReLU -> Dropout] * depth -> Linear``.

    Parameters
    ----------
    n_features : int
        Input width.
    hidden : sequence of int
        Width of each hidden block (its length is the depth).
    norm : {"batch", "layer", "none"}
        Normalization inside each hidden block (BatchNorm1d, LayerNorm, or none).
    dropout : float
        Dropout after each block's activation.
    n_outputs : int
        Output width (1 for a single target).

    Notes
    -----
    With ``norm="batch"`` the linear layers carry no bias (BatchNorm's shift replaces it).
    Input ``(batch, n_features)``, output ``(batch, n_outputs)``.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 64),
        norm: Norm = "batch",
        dropout: float = 0.0,
        n_outputs: int = 1,
    ) -> None:
        super().__init__()
        if n_features < 1 or n_outputs < 1 or any(w < 1 for w in hidden):
            raise ValueError("n_features, n_outputs and every hidden width must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        width = n_features
        for out in hidden:
            layers += [
                nn.Linear(width, out, bias=norm != "batch"),
                _norm_layer(norm, out),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            width = out
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)
        self.norm = norm
        self.architecture = {
            "kind": "mlp",
            "n_features": n_features,
            "hidden": list(hidden),
            "norm": norm,
            "dropout": dropout,
            "n_outputs": n_outputs,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out
