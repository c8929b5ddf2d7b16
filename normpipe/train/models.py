"""Regression models whose hidden blocks use batch, layer or no normalization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

__all__ = ["CNN", "MLP", "Norm", "embedding_dim"]

Norm = Literal["batch", "layer", "none"]
ImageNorm = Literal["batch", "layer", "instance", "none"]


def _norm_layer(kind: Norm, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer' or 'none', got {kind!r}")


class _Embedded(nn.Module):
    """The embedding of the index at ``position`` of each input row."""

    def __init__(self, position: int, indices: int, dim: int) -> None:
        super().__init__()
        self.position = position
        self.embedding = nn.Embedding(indices, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.embedding(x[:, self.position].long())
        return out


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
    embedded : sequence of (int, int, int)
        ``(position, indices, dim)`` of each categorical feature: the input's value at
        ``position`` is an index into an ``nn.Embedding(indices, dim)`` whose vector
        replaces it (codes arrive as floats, exact up to 2^24).

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
        embedded: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__()
        if n_features < 1 or n_outputs < 1 or any(w < 1 for w in hidden):
            raise ValueError("n_features, n_outputs and every hidden width must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        coded = [int(position) for position, _, _ in embedded]
        self.embeddings = nn.ModuleList(_Embedded(int(p), int(n), int(dim)) for p, n, dim in embedded)
        plain = [i for i in range(n_features) if i not in set(coded)]
        self.register_buffer("plain", torch.tensor(plain, dtype=torch.long), persistent=False)
        layers: list[nn.Module] = []
        width = len(plain) + sum(int(dim) for _, _, dim in embedded)
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
            "embedded": [[int(v) for v in e] for e in embedded],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.embeddings) > 0:
            parts = [x.index_select(1, self.plain)]  # type: ignore[arg-type]
            for embedded in self.embeddings:
                parts.append(embedded(x))
            x = torch.cat(parts, dim=1)
        out: torch.Tensor = self.net(x)
        return out


def embedding_dim(indices: int, fixed: int | None = None) -> int:
    """An embedding's width for ``indices`` rows: ``fixed`` when given, else
    ``min(50, round(1.6 * indices ** 0.56))`` (fast.ai's rule of thumb, capped).

    >>> embedding_dim(5), embedding_dim(4000), embedding_dim(4000, 8)
    (4, 50, 8)
    """
    return fixed if fixed is not None else min(50, max(1, round(1.6 * indices**0.56)))


def _norm2d(kind: ImageNorm, channels: int) -> nn.Module:
    """Normalization after a convolution: BatchNorm2d, layer norm over (C, H, W) as a
    one-group GroupNorm, InstanceNorm2d (per image and channel), or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'layer', 'instance' or 'none', got {kind!r}")


class CNN(nn.Module):
    """An image regression CNN: ``[Conv 3x3 -> Norm -> ReLU -> MaxPool 2] * len(channels)``,
    average-pooled to ``pool x pool`` (coarse position survives), then an :class:`MLP`
    head on those features and any scalar features.

    Parameters
    ----------
    shape : sequence of int
        The image's shape as stored: ``(C, H, W)`` with ``layout="CHW"``, ``(H, W, C)``
        with ``"HWC"``.
    layout : {"CHW", "HWC"}
        Where the channel axis is.
    n_scalars : int
        Scalar features after the image in each input row.
    channels : sequence of int
        Output channels of each convolution block.
    hidden : sequence of int
        Widths of the head's hidden blocks.
    norm : {"batch", "layer", "instance", "none"}
        Normalization after each convolution (the head uses batch norm with ``batch``,
        layer norm with ``layer`` and ``instance``).

    Notes
    -----
    Input rows are flat: the image's ``C*H*W`` values in stored order, then the
    scalars (see :mod:`normpipe.train.features`); output ``(batch, n_outputs)``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        layout: Literal["CHW", "HWC"] = "CHW",
        n_scalars: int = 0,
        channels: Sequence[int] = (16, 32),
        hidden: Sequence[int] = (64,),
        norm: ImageNorm = "batch",
        dropout: float = 0.0,
        n_outputs: int = 1,
        pool: int = 4,
    ) -> None:
        super().__init__()
        if len(shape) != 3 or any(d < 1 for d in shape):
            raise ValueError(f"the image shape must be three sizes >= 1, got {list(shape)}")
        if not channels or any(c < 1 for c in channels):
            raise ValueError("channels must list one or more widths >= 1")
        c, h, w = shape if layout == "CHW" else (shape[2], shape[0], shape[1])
        blocks: list[nn.Module] = []
        width = c
        for out in channels:
            blocks += [
                nn.Conv2d(width, out, 3, padding=1, bias=norm != "batch"),
                _norm2d(norm, out),
                nn.ReLU(),
                nn.MaxPool2d(2) if min(h, w) >= 2 else nn.Identity(),
            ]
            width = out
            h, w = max(h // 2, 1), max(w // 2, 1)
        blocks.append(nn.AdaptiveAvgPool2d(min(pool, h, w)))
        self.features = nn.Sequential(*blocks)
        self.size = int(shape[0] * shape[1] * shape[2])
        self.stored = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.channels_last = layout == "HWC"
        side = min(pool, h, w)
        head_norm: Norm = "batch" if norm == "batch" else "none" if norm == "none" else "layer"
        self.head = MLP(width * side * side + n_scalars, hidden, head_norm, dropout, n_outputs)
        self.norm = norm
        self.architecture = {
            "kind": "cnn",
            "shape": list(self.stored),
            "layout": layout,
            "n_scalars": n_scalars,
            "channels": list(channels),
            "hidden": list(hidden),
            "norm": norm,
            "dropout": dropout,
            "n_outputs": n_outputs,
            "pool": pool,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, : self.size].reshape(x.shape[0], *self.stored)
        if self.channels_last:
            image = image.permute(0, 3, 1, 2)
        pooled = self.features(image).flatten(1)
        out: torch.Tensor = self.head(torch.cat([pooled, x[:, self.size :]], dim=1))
        return out
