"""Streaming rows of a (normalized) Parquet dataset into PyTorch, in flat memory.

The dataset is cut into units (one row group of one file). Each DataLoader worker
reads only its own units (unit ``i`` goes to worker ``i % num_workers``), so no row is
read twice; rows pass through a bounded shuffle buffer and leave as mini-batches.
Memory is one row group plus the buffer, whatever the dataset's size.

The train/validation split is decided per row by a seeded hash of (seed, file, row
number), so it is the same for any number of workers, batch size or buffer size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from normpipe.core.column import to_float64
from normpipe.dataset import Dataset, discover, select_columns
from normpipe.scan import blocks
from normpipe.stats import Stats
from normpipe.train.features import feature_layout, feature_rows

__all__ = ["ParquetBatches", "row_uniform", "split_mask"]

Split = Literal["train", "valid", "all"]


def row_uniform(key: str, first_row: int, rows: int) -> npt.NDArray[np.float64]:
    """A fixed uniform number in [0, 1) for each row ``first_row ..`` of a file.

    SplitMix64 of (hash of ``key`` + row number): the same for any reader, worker count
    or batch size, and independent between keys.
    """
    offset = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    z = np.arange(first_row, first_row + rows, dtype=np.uint64) + np.uint64(offset)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_mask(
    seed: int, relpath: str, first_row: int, rows: int, valid_range: tuple[float, float]
) -> npt.NDArray[np.bool_]:
    """True for the rows (``first_row`` .. ``first_row + rows`` of a file) in validation:
    those whose seeded uniform falls in ``valid_range``. ``(0, f)`` holds out a share
    ``f``; ``(i / k, (i + 1) / k)`` is fold ``i`` of a k-fold cross-validation."""
    u = row_uniform(f"{seed}:{relpath}", first_row, rows)
    return (u >= valid_range[0]) & (u < valid_range[1])


class ParquetBatches(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Mini-batches ``(features, target)`` of float32 tensors from Parquet files.

    Parameters
    ----------
    source : str or path
        A Parquet file, directory or glob (names starting with ``_`` or ``.`` skipped).
    features : sequence of str
        Feature columns, in order: numbers, or tensors (a tensor feature gives all its
        values, see :mod:`normpipe.train.features`).
    target : str
        Target column.
    split : {"train", "valid", "all"}
        Which rows to yield.
    valid_fraction : float
        Share of rows in the validation split.
    fold : (int, int), optional
        ``(i, k)``: validation is fold ``i`` of ``k`` (replaces ``valid_fraction``).
    sample : float
        Share of all rows used at all (a fixed, seeded subset), for quick experiments.
    stats : Stats, optional
        Normalize the features and the target with this artifact as blocks are read
        (for raw data; columns it lacks pass as they are); left out, the data is
        taken as already normalized.
    normalize : bool
        With ``stats``: whether to normalize while reading (True) or only to decode and
        normalize tensor columns still stored as encoded images (False: the data is
        the normalized output of ``normpipe run``).
    batch_size : int
        Rows per batch (the last batch of a worker may be smaller).
    shuffle_buffer : int
        Rows held for shuffling; 0 keeps file order (use it for validation).
    seed : int
        Fixes the split and, with the epoch, the shuffle order.

    Notes
    -----
    Rows with NaN or null in a feature or the target are skipped. Use with
    ``DataLoader(dataset, batch_size=None, num_workers=N)``; call :meth:`set_epoch`
    between epochs for a new shuffle order.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        features: Sequence[str],
        target: str,
        split: Split = "train",
        valid_fraction: float = 0.2,
        batch_size: int = 256,
        shuffle_buffer: int = 16_384,
        seed: int = 0,
        fold: tuple[int, int] | None = None,
        sample: float = 1.0,
        stats: Stats | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        if fold is not None and not 0 <= fold[0] < fold[1]:
            raise ValueError(f"fold must be (i, k) with 0 <= i < k, got {fold}")
        if not 0.0 < sample <= 1.0:
            raise ValueError(f"sample must be in (0, 1], got {sample}")
        self.dataset: Dataset = discover(source)
        select_columns(self.dataset.schema, [target], where=self.dataset.source)
        self.layout = feature_layout(self.dataset.schema, features, stats, self.dataset.source, self.dataset)
        self.features = list(features)
        self.target = target
        self.split = split
        self.valid_range = (
            (0.0, valid_fraction) if fold is None else (fold[0] / fold[1], (fold[0] + 1) / fold[1])
        )
        self.sample = sample
        self.stats = stats
        self.normalize = normalize
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = 0
        # (file index, row group, number of the group's first row in its file)
        self.units: list[tuple[int, int, int]] = [
            (i, group, first)
            for i, footer in enumerate(self.dataset.footers)
            for group, first in enumerate(footer.first_rows)
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self, units: Sequence[tuple[int, int, int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features, target) blocks of the selected split, one unit at a time."""
        for file_index, group, first in units:
            file = self.dataset.files[file_index]
            parquet = file.open(self.dataset.fs)
            columns = [*self.features, self.target]
            (block,) = blocks(file, parquet, columns, range(group, group + 1), first)
            table = block.table
            x = feature_rows(table, self.layout, self.stats, self.normalize, file.path)
            y = self._column(table, self.target).astype(np.float32)
            keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
            if self.sample < 1.0:
                keep &= row_uniform(f"sample:{self.seed}:{file.relpath}", first, table.num_rows) < self.sample
            if self.split != "all":
                valid = split_mask(self.seed, file.relpath, first, table.num_rows, self.valid_range)
                keep &= valid if self.split == "valid" else ~valid
            yield x[keep], y[keep]

    def _column(self, table: pa.Table, name: str) -> npt.NDArray[np.float64]:
        values = to_float64(table.column(name))
        if self.stats is None or not self.normalize or name not in self.stats.columns:
            return values
        return self.stats.transform_column(name, values)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        units = self.units[worker::workers]
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        if self.shuffle_buffer > 0:
            units = [units[i] for i in rng.permutation(len(units))]
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        held = 0
        for x, y in self._rows(units):
            xs.append(x)
            ys.append(y)
            held += len(y)
            if held >= self.shuffle_buffer + self.batch_size:
                yield from self._drain(xs, ys, rng, final=False)
                held = len(ys[0]) if ys else 0
        yield from self._drain(xs, ys, rng, final=True)

    def _drain(
        self, xs: list[np.ndarray], ys: list[np.ndarray], rng: np.random.Generator, final: bool
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffle the buffer and yield whole batches, keeping ``shuffle_buffer`` rows
        back to mix with what comes next (everything when ``final``)."""
        if not ys:
            return
        x, y = np.concatenate(xs), np.concatenate(ys)
        xs.clear()
        ys.clear()
        if self.shuffle_buffer > 0:
            order = rng.permutation(len(y))
            x, y = x[order], y[order]
        n_out = len(y) if final else (len(y) - self.shuffle_buffer) // self.batch_size * self.batch_size
        for start in range(0, n_out, self.batch_size):
            stop = min(start + self.batch_size, n_out)
            yield torch.from_numpy(x[start:stop]), torch.from_numpy(y[start:stop])
        if n_out < len(y):
            xs.append(x[n_out:])
            ys.append(y[n_out:])
