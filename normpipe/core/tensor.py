"""Tensor columns: each row holds an array (an image, an embedding, a window), stored as
Arrow ``fixed_size_list``, ``list`` or the ``arrow.fixed_shape_tensor`` extension type,
or as encoded images in a ``binary`` column (:mod:`normpipe.core.images`).

A :class:`TensorLayout` says which values share statistics: ``per="element"`` gives
every position of the shape its own (an array of moments), ``per="channel"`` reduces
the other axes (the channel axis is the first with ``layout="CHW"``, the last with
``"HWC"``), ``per="all"`` pools every value. Variable-length lists (no shape) take
``element``, one slot per position (the ``p``-th value of every list that long), or
``all``.
Each such group of values is a *slot*. :class:`TensorState` holds per slot the same
mergeable statistics as a scalar column: count, mean and M2 (the parallel update of
:class:`~normpipe.core.groups.GroupMoments`), min, max, and for ``channel`` and ``all``
a KLL sketch; merging is exact up to float64 rounding and sketches merge within their
bound, so any split of the rows into files and row groups gives the same statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from normpipe.core.column import ColumnState, to_float64
from normpipe.core.groups import GroupIndex, GroupMoments
from normpipe.core.images import decode_images
from normpipe.core.moments import Moments
from normpipe.core.sketch import DEFAULT_K, QuantileSketch, ascending
from normpipe.errors import InputError

__all__ = [
    "Layout",
    "Per",
    "TensorBlock",
    "TensorLayout",
    "TensorState",
    "is_tensor_type",
    "positions_of",
    "row_chunks",
    "tensor_block",
]

Per = Literal["element", "channel", "all"]
Layout = Literal["CHW", "HWC"]


def is_tensor_type(dtype: pa.DataType) -> bool:
    """A list, fixed-size list or fixed-shape tensor of numbers (one level deep), or
    encoded images (``binary``, see :mod:`normpipe.core.images`)."""
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return True
    if isinstance(dtype, pa.FixedShapeTensorType):
        dtype = dtype.storage_type
    if not (pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype)):
        return False
    value = dtype.value_type
    return bool(pa.types.is_integer(value) or pa.types.is_floating(value))


@dataclass(frozen=True)
class TensorLayout:
    """The shape of each row's array (``None``: variable-length lists), where its channel
    axis is, and which values share statistics (see the module's notes)."""

    shape: tuple[int, ...] | None
    layout: Layout = "CHW"
    per: Per = "channel"

    @property
    def size(self) -> int:
        """Values per row (0 for variable-length lists)."""
        return math.prod(self.shape) if self.shape is not None else 0

    @property
    def channels(self) -> int:
        assert self.shape is not None
        return self.shape[0] if self.layout == "CHW" else self.shape[-1]

    @property
    def slots(self) -> int:
        """How many groups of values have their own statistics (0 for positions of
        variable-length lists: as many as the longest list seen)."""
        if self.per == "all":
            return 1
        return self.size if self.per == "element" else self.channels

    @property
    def positional(self) -> bool:
        """Variable-length lists with statistics per position (``per: element``, no shape)."""
        return self.shape is None and self.per == "element"

    def grouped(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``values`` (rows x size, or all values of variable lists) as a view
        ``(a, slots, b)``: slot ``s``'s values are ``[:, s, :]``."""
        if self.per == "all":
            return values.reshape(-1, 1, 1)
        if self.per == "element":
            return values.reshape(values.shape[0], self.size, 1)
        c = self.channels
        if self.layout == "CHW":
            return values.reshape(values.shape[0], c, self.size // c)
        return values.reshape(-1, c, 1)

    def expand(self, per_slot: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """One value per slot spread over a row's ``size`` positions (so it broadcasts
        against ``rows x size``); with ``per="all"`` the single value."""
        per_slot = np.asarray(per_slot, dtype=np.float64)
        if self.per == "all":
            return per_slot.reshape(1)
        if self.per == "element":
            return per_slot
        rest = self.size // self.channels
        return np.repeat(per_slot, rest) if self.layout == "CHW" else np.tile(per_slot, rest)

    def describe(self) -> str:
        if self.shape is None:
            return f"variable length, per {'position' if self.per == 'element' else self.per}"
        layout = f" {self.layout}" if self.per == "channel" else ""
        return f"{'x'.join(map(str, self.shape))}{layout}, per {self.per}"


@dataclass(frozen=True)
class TensorBlock:
    """One block of a tensor column: ``values`` is ``rows x size`` for a fixed shape (null
    rows hold NaN), or every value of the valid rows for variable-length lists, whose
    ``offsets`` (``rows + 1``, from 0) then locate each row's values."""

    values: npt.NDArray[np.float64]
    valid: npt.NDArray[np.bool_]
    offsets: npt.NDArray[np.int64] | None = None
    #: Encoded images that did not decode (or had another shape), skipped as null rows.
    skipped: int = 0
    #: The values are integers (an integer list type, or decoded pixels): their order
    #: for the sketch comes from counting when their range is small, not from a sort.
    integral: bool = False

    @property
    def rows(self) -> int:
        return int(self.valid.size)


def _validity(array: pa.Array) -> npt.NDArray[np.bool_]:
    if not array.null_count:
        return np.ones(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def tensor_block(
    column: pa.Array | pa.ChunkedArray,
    layout: TensorLayout,
    where: str,
    first_row: int = 0,
    skip: bool = False,
) -> TensorBlock:
    """The values of a tensor column as float64 (see :class:`TensorBlock`); encoded
    images are decoded into ``layout``'s shape (``skip``: undecodable rows become null).

    Raises
    ------
    InputError
        A row's length does not match the shape, or an image does not decode (``where``
        names the column and file, ``first_row`` numbers the block's first row).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return replace(_images(column, layout, where, first_row, skip), integral=True)
    block = _lists(column, layout, where, first_row)
    return replace(block, integral=pa.types.is_integer(column.type.value_type))


def _lists(column: pa.Array, layout: TensorLayout, where: str, first_row: int) -> TensorBlock:
    """:func:`tensor_block` of a list or fixed-size list column."""
    valid = _validity(column)
    rows = len(column)
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        if layout.shape is not None and width != layout.size:
            raise InputError(
                f"{where}: each row holds {width} values, the shape {list(layout.shape)} needs "
                f"{layout.size}; fix the shape in the config"
            )
        flat = to_float64(column.values.slice(column.offset * width, rows * width))
        values = flat.reshape(rows, width)
        if layout.shape is None:  # pooled: the valid rows' values
            return TensorBlock(values[valid].reshape(-1), valid, np.arange(rows + 1) * width)
        return TensorBlock(values, valid)
    offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    lengths = np.diff(offsets)
    # a slice's offsets point into the whole child array: convert only its own values
    flat = to_float64(column.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])))
    offsets = offsets - offsets[0]
    if layout.shape is None:  # pooled: the valid rows' values, and where each row's are
        values = flat[offsets[0] : offsets[-1]]
        if not valid.all():
            values = values[np.repeat(valid, lengths)]
        kept = np.where(valid, lengths, 0)
        return TensorBlock(values, valid, np.concatenate([[0], np.cumsum(kept)]))
    wrong = valid & (lengths != layout.size)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise InputError(
            f"{where}: row {first_row + row} holds {int(lengths[row])} values, the shape "
            f"{list(layout.shape)} needs {layout.size} (ragged lists); fix the data, or leave the "
            "shape out and take statistics per position (per: element) or over every value (per: all)"
        )
    size = layout.size
    if valid.all() and offsets[-1] - offsets[0] == rows * size:
        values = flat[offsets[0] : offsets[-1]].reshape(rows, size)
    else:
        starts = np.where(valid, offsets[:-1], 0)
        values = flat[starts[:, None] + np.arange(size)] if size else np.empty((rows, 0))
        values[~valid] = np.nan
    return TensorBlock(values, valid)


#: float64 values of a tensor column converted (or decoded) at once: larger row groups
#: are taken in slices of rows, so a task's memory does not follow the row group's size.
CHUNK_BYTES = 16 * 2**20


def row_chunks(
    column: pa.Array | pa.ChunkedArray, layout: TensorLayout, budget: int | None = None
) -> Iterator[tuple[int, pa.Array]]:
    """``column`` in consecutive slices of rows whose float64 values take about ``budget``
    bytes (default :data:`CHUNK_BYTES`): each slice's first row and the slice."""
    budget = CHUNK_BYTES if budget is None else budget
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    rows = len(column)
    if layout.size:
        per_row = 8 * layout.size
    else:
        storage = column.storage if isinstance(column, pa.ExtensionArray) else column
        per_row = 8 * max(1, len(storage.flatten()) // max(rows, 1))
    step = max(1, budget // per_row)
    for start in range(0, rows, step):
        yield start, column.slice(start, step)


def _images(column: pa.Array, layout: TensorLayout, where: str, first_row: int, skip: bool) -> TensorBlock:
    """Decoded images in ``layout`` (CHW: each image transposed from Pillow's HWC)."""
    assert layout.shape is not None
    assert len(layout.shape) == 3
    c, h, w = layout.shape if layout.layout == "CHW" else (layout.shape[2], *layout.shape[:2])
    decoded = decode_images(column, (h, w, c), where, first_row, skip)
    arranged = decoded.pixels.transpose(0, 3, 1, 2) if layout.layout == "CHW" else decoded.pixels
    pixels = np.asarray(arranged, dtype=np.float64, order="C").reshape(len(column), -1)  # one float64 copy
    pixels[~decoded.valid] = np.nan
    return TensorBlock(pixels, decoded.valid, skipped=decoded.skipped)


def _slot_moments(grouped: npt.NDArray[np.float64]) -> tuple[GroupMoments, int, int, int]:
    """Per-slot moments of ``(a, slots, b)`` values (NaN and +/-inf left out), and the
    counts of NaN, +inf and -inf."""
    slots = grouped.shape[1]
    finite = np.isfinite(grouped)
    everywhere = bool(finite.all())
    nans = posinf = neginf = 0
    if everywhere:
        count = np.full(slots, grouped.shape[0] * grouped.shape[2], dtype=np.int64)
        x = grouped
    else:
        count = finite.sum(axis=(0, 2)).astype(np.int64)
        nans = int(np.isnan(grouped).sum())
        posinf = int(np.count_nonzero(grouped == np.inf))
        neginf = int(np.count_nonzero(grouped == -np.inf))
        x = np.where(finite, grouped, 0.0)
    safe = np.maximum(count, 1)
    mean = x.sum(axis=(0, 2)) / safe
    d = x - mean[None, :, None]
    if not everywhere:
        d = np.where(finite, d, 0.0)
    # the corrected two-pass M2: sum(d^2) - sum(d)^2 / n
    s1 = d.sum(axis=(0, 2))
    s2 = np.einsum("asb,asb->s", d, d)
    shift = s1 / safe
    m2 = np.maximum(s2 - s1 * shift, 0.0)
    if not grouped.size:
        low, high = np.full(slots, np.inf), np.full(slots, -np.inf)
    elif everywhere:  # no masked copies
        low, high = grouped.min(axis=(0, 2)), grouped.max(axis=(0, 2))
    else:
        low = np.where(finite, grouped, np.inf).min(axis=(0, 2))
        high = np.where(finite, grouped, -np.inf).max(axis=(0, 2))
    moments = GroupMoments(np.arange(slots), count, np.where(count > 0, mean + shift, 0.0), m2, low, high)
    return moments, nans, posinf, neginf


@dataclass(frozen=True)
class TensorState:
    """Mergeable statistics of one tensor column, per slot (see the module's notes).

    ``moments`` has one entry per slot (keys ``0 .. slots-1``); ``sketches`` one KLL
    sketch per slot for ``per`` ``channel`` and ``all`` (none per element); ``nulls``
    counts null rows, ``nans``, ``posinf`` and ``neginf`` the values left out.
    """

    layout: TensorLayout
    moments: GroupMoments
    sketches: tuple[QuantileSketch, ...] = ()
    rows: int = 0
    nulls: int = 0
    nans: int = 0
    posinf: int = 0
    neginf: int = 0
    #: Encoded images skipped (``on_error: skip``): counted in ``nulls`` too.
    skipped: int = 0

    @classmethod
    def empty(cls, layout: TensorLayout, k: int = DEFAULT_K) -> TensorState:
        slots = layout.slots
        moments = GroupMoments(
            np.arange(slots),
            np.zeros(slots, dtype=np.int64),
            np.zeros(slots),
            np.zeros(slots),
            np.full(slots, np.inf),
            np.full(slots, -np.inf),
        )
        sketches = () if layout.per == "element" else tuple(QuantileSketch(k) for _ in range(slots))
        return cls(layout, moments, sketches)

    @classmethod
    def from_block(cls, block: TensorBlock, layout: TensorLayout, k: int = DEFAULT_K) -> TensorState:
        """The statistics of one block's valid rows."""
        if layout.positional:
            return cls._positions(block, layout)
        values = block.values if block.offsets is not None else block.values[block.valid]
        grouped = layout.grouped(values)
        moments, nans, posinf, neginf = _slot_moments(grouped)
        sketches: tuple[QuantileSketch, ...] = ()
        if layout.per != "element":
            sketches = tuple(
                QuantileSketch.from_sorted(_ordered(grouped[:, s, :].reshape(-1), block.integral), k)
                for s in range(layout.slots)
            )
        nulls = block.rows - int(block.valid.sum())
        return cls(layout, moments, sketches, block.rows, nulls, nans, posinf, neginf, block.skipped)

    @classmethod
    def _positions(cls, block: TensorBlock, layout: TensorLayout) -> TensorState:
        """Per-position moments of variable-length lists: position ``p`` holds the
        ``p``-th value of every list that long (the per-group moments, keyed by position)."""
        assert block.offsets is not None
        values = block.values
        positions = positions_of(block.offsets)
        longest = int(positions.max()) + 1 if positions.size else 0
        moments = GroupMoments.from_block(GroupIndex(np.arange(longest), positions), values)
        nans = int(np.isnan(values).sum())
        posinf, neginf = int(np.count_nonzero(values == np.inf)), int(np.count_nonzero(values == -np.inf))
        nulls = block.rows - int(block.valid.sum())
        return cls(layout, moments, (), block.rows, nulls, nans, posinf, neginf, block.skipped)

    @property
    def slots(self) -> int:
        """The slots these statistics hold (for positions: the longest list seen)."""
        return int(self.moments.count.size)

    @classmethod
    def merge_all(cls, states: Sequence[TensorState]) -> TensorState:
        first = states[0]
        sketches: tuple[QuantileSketch, ...] = ()
        if first.sketches:
            sketches = tuple(
                first.sketches[s].merge_many([t.sketches[s] for t in states[1:]])
                for s in range(len(first.sketches))
            )
        return cls(
            first.layout,
            GroupMoments.merge_all([s.moments for s in states]),
            sketches,
            sum(s.rows for s in states),
            sum(s.nulls for s in states),
            sum(s.nans for s in states),
            sum(s.posinf for s in states),
            sum(s.neginf for s in states),
            sum(s.skipped for s in states),
        )

    def merge(self, other: TensorState) -> TensorState:
        return TensorState.merge_all([self, other])

    def slot_state(self, slot: int) -> ColumnState:
        """Slot ``slot``'s statistics as a scalar column's (its moments and sketch): what
        the methods fitted from quantiles read."""
        m = self.moments
        count = int(m.count[slot])
        moments = (
            Moments(count, float(m.mean[slot]), float(m.m2[slot]), float(m.min[slot]), float(m.max[slot]))
            if count
            else Moments()
        )
        sketch = self.sketches[slot] if self.sketches else QuantileSketch(DEFAULT_K)
        return ColumnState(moments, sketch, zeros=None, at_min=None, at_max=None)

    @property
    def std(self) -> npt.NDArray[np.float64]:
        """Population std per slot (ddof=0)."""
        return self.moments.std


def positions_of(offsets: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each value's position in its list, for lists at ``offsets`` (from 0)."""
    lengths = np.diff(offsets)
    return np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)


def _finite(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


#: Integer values spanning at most this many distinct values are ordered by counting.
COUNTED_RANGE = 1 << 16


def _ordered(values: npt.NDArray[np.float64], integral: bool) -> npt.NDArray[np.float64]:
    """The finite ``values`` in ascending order (a new writable array, the sketch's
    input). Integers of a small range (pixels) are counted, then repeated in order: a
    linear pass instead of a float sort, the same array."""
    finite = _finite(values)
    if integral and finite.size:
        low, high = float(finite.min()), float(finite.max())
        if high - low < COUNTED_RANGE:
            counts = np.bincount((finite - low).astype(np.int64), minlength=int(high - low) + 1)
            return np.repeat(np.arange(low, high + 1.0), counts)
    return ascending(finite)
