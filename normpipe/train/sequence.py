"""Time-series forecasting: windows of past values predict the next value.

A series is the rows of one value of the ``series`` column (or the whole dataset),
ordered by the ``time`` column. A window is ``window`` consecutive rows of the
channels (the feature columns, plus the target when it is not one of them); its
label is the target in the row that follows. Windows never cross two series, and a
window holding a missing value is left out.

The validation split is temporal: windows whose label lies at or after the
``1 - valid_fraction`` quantile of label times are held out, so the model is never
checked on a past it could have seen the future of.

The model normalizes in one of four ways:

- ``instance``: reversible instance normalization (RevIN, Kim et al., ICLR 2022); each
  window is standardized per channel over time, the network forecasts in that scale,
  and the forecast is mapped back with the window's own mean and std (and the learned
  affine), so it comes back in the series' own level and scale.
- ``layer`` / ``batch``: LayerNorm / BatchNorm1d in the hidden blocks.
- ``none``.

Memory: the selected columns are held as float32 (plus the time and series keys),
about ``rows * (4 * channels + 16)`` bytes; windows are cut from that array per batch.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn
from torch.utils.data import IterableDataset

from normpipe.core.column import to_float64
from normpipe.dataset import discover, select_columns
from normpipe.errors import InputError
from normpipe.stats import Stats
from normpipe.train.models import MLP

__all__ = ["RevIN", "SequenceNorm", "SequenceRegressor", "SequenceWindows"]

SequenceNorm = Literal["instance", "layer", "batch", "none"]


class RevIN(nn.Module):
    """Reversible instance normalization over the time axis of ``(batch, time, channels)``.

    Each sample's channels are standardized with their own mean and std over time
    (then a learned per-channel affine); :meth:`denormalize` undoes it for one channel.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return (x - mean) / std * self.weight + self.bias, mean, std

    def denormalize(
        self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channel: int
    ) -> torch.Tensor:
        """Map ``y`` of shape ``(batch, 1)``, in channel ``channel``'s normalized scale, back."""
        w, b = self.weight[channel], self.bias[channel]
        w = torch.where(w.abs() < self.eps, torch.full_like(w, self.eps), w)  # never divide by ~0
        column = slice(channel, channel + 1)
        return (y - b) / w * std[:, 0, column] + mean[:, 0, column]


class SequenceRegressor(nn.Module):
    """Forecast the next value of one channel from a window ``(batch, window, channels)``
    (or flat rows ``(batch, window * channels)``: a window tensor column).

    The window is flattened into an :class:`MLP`; ``norm`` picks RevIN on the input
    (``instance``) or the MLP's hidden normalization (``layer``, ``batch``, ``none``).
    """

    def __init__(
        self,
        n_channels: int,
        window: int,
        target_channel: int,
        hidden: Sequence[int] = (64, 64),
        norm: SequenceNorm = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in ("instance", "layer", "batch", "none"):
            raise ValueError(f"norm must be 'instance', 'layer', 'batch' or 'none', got {norm!r}")
        if not 0 <= target_channel < n_channels or window < 1:
            raise ValueError("window must be >= 1 and target_channel one of the channels")
        self.target_channel = target_channel
        self.window = window
        self.revin = RevIN(n_channels) if norm == "instance" else None
        self.mlp = MLP(n_channels * window, hidden, "none" if norm == "instance" else norm, dropout)
        self.norm = norm
        self.architecture = {
            "kind": "sequence",
            "n_channels": n_channels,
            "window": window,
            "target_channel": target_channel,
            "hidden": list(hidden),
            "norm": norm,
            "dropout": dropout,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flat rows: a window tensor column, time-major, channels last
            x = x.reshape(x.shape[0], self.window, -1)
        if self.revin is None:
            out: torch.Tensor = self.mlp(x.flatten(1))
            return out
        z, mean, std = self.revin.normalize(x)
        return self.revin.denormalize(self.mlp(z.flatten(1)), mean, std, self.target_channel)


class SequenceWindows(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches ``(windows, next values)`` cut from a Parquet dataset of time series.

    Parameters
    ----------
    source : str or path
        Parquet file, directory or glob.
    features : sequence of str
        Input channels; the target is added as the last channel when not among them.
    target : str
        The column forecast one step ahead.
    time : str
        Column that orders each series (timestamps or numbers).
    series : str, optional
        Column naming the series; left out, the dataset is one series.
    window : int
        Past rows per window.
    stats : Stats, optional
        Normalize the channels with this artifact as they are read.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        features: Sequence[str],
        target: str,
        time: str,
        series: str | None = None,
        window: int = 24,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        stats: Stats | None = None,
    ) -> None:
        super().__init__()
        dataset = discover(source)
        self.channels = list(features) + ([] if target in features else [target])
        self.target_channel = self.channels.index(target)
        select_columns(dataset.schema, self.channels, where=dataset.source)
        keys = [time] + ([series] if series else [])
        for key in keys:
            if dataset.schema.get_field_index(key) < 0:
                raise InputError(f"{dataset.source}: no column '{key}'; check the time / series option")
        table = pa.concat_tables(
            [f.read(f.open(dataset.fs), None, [*keys, *self.channels]) for f in dataset.files],
            promote_options="permissive",
        )
        table = table.filter(pc.is_valid(table.column(time)))
        order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in [*keys[1:], time]])
        table = table.take(order)
        values = np.column_stack([to_float64(table.column(c)) for c in self.channels])
        if stats is not None:
            for j, name in enumerate(self.channels):
                if name in stats.columns:  # columns the artifact lacks pass as they are
                    values[:, j] = stats.transform_column(name, values[:, j])
        self.values = values.astype(np.float32)
        n = table.num_rows
        codes = (
            pd.factorize(table.column(series).to_numpy(zero_copy_only=False))[0]
            if series
            else np.zeros(n, dtype=np.int64)
        )
        # A window ends at row e (its label); rows e-window .. e-1 are its inputs.
        ends = np.arange(window, n)
        same_series = codes[ends - window] == codes[ends]
        finite = np.isfinite(self.values).all(axis=1)
        # windows holding a missing value: count of non-finite rows in [e-window, e] via cumsum
        bad = np.concatenate([[0], np.cumsum(~finite)])
        clean = bad[ends + 1] - bad[ends - window] == 0
        ends = ends[same_series & clean]
        self.ends = ends
        self.keys = {k: table.column(k).to_numpy(zero_copy_only=False) for k in keys}
        self.label_time = self.keys[time][ends]
        self.window = window
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def split(self, valid_fraction: float) -> tuple[SequenceWindows, SequenceWindows]:
        """(train, valid): windows whose label time is before / at or after the
        ``1 - valid_fraction`` quantile of label times. Validation is not shuffled."""
        by_time = np.sort(self.label_time, kind="stable")
        if not len(by_time):
            raise InputError("no complete window: use a shorter window or check the time / series columns")
        cut = by_time[min(int(len(by_time) * (1 - valid_fraction)), len(by_time) - 1)]
        held = self.label_time >= cut
        train, valid = copy.copy(self), copy.copy(self)
        train.ends, train.label_time = self.ends[~held], self.label_time[~held]
        valid.ends, valid.label_time = self.ends[held], self.label_time[held]
        valid.shuffle = False
        return train, valid

    def __len__(self) -> int:
        return len(self.ends)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def windows(self, ends: npt.NDArray[np.int64]) -> tuple[torch.Tensor, torch.Tensor]:
        index = ends[:, None] - self.window + np.arange(self.window)
        return (
            torch.from_numpy(self.values[index]),
            torch.from_numpy(self.values[ends, self.target_channel].copy()),
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ends = self.ends
        if self.shuffle:
            ends = ends[np.random.default_rng([self.seed, self.epoch]).permutation(len(ends))]
        for start in range(0, len(ends), self.batch_size):
            yield self.windows(ends[start : start + self.batch_size])
