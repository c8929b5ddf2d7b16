"""Per-column and per-table statistic states: ``from_block``, ``merge``, ``finalize``.

A block is a pyarrow array (or chunked array) of one numeric column, or a numpy
array. Nulls, NaN and +/-inf are counted and left out of the moments and the sketch.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from normpipe.core.groups import GroupMoments
from normpipe.core.moments import Moments
from normpipe.core.sketch import DEFAULT_K, DistinctSketch, QuantileSketch, ascending
from normpipe.core.vocab import VocabState

if TYPE_CHECKING:
    from normpipe.core.tensor import TensorState

__all__ = ["ColumnState", "ColumnSummary", "TableState", "signed_log", "to_float64"]


def to_float64(block: pa.Array | pa.ChunkedArray | npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """A float64 numpy view or copy of a numeric block; nulls become NaN."""
    if isinstance(block, np.ndarray):
        return np.asarray(block, dtype=np.float64)
    if isinstance(block, pa.ChunkedArray):
        block = block.combine_chunks() if block.num_chunks != 1 else block.chunk(0)
    if not pa.types.is_float64(block.type):
        block = block.cast(pa.float64())
    # the values buffer itself, not Arrow's to_numpy (which imports pandas, 0.2 s a process)
    offset, n = block.offset, len(block)
    values = np.frombuffer(block.buffers()[1], dtype=np.float64, count=n, offset=offset * 8)
    if block.null_count:
        bits = np.frombuffer(block.buffers()[0], dtype=np.uint8)
        valid = np.unpackbits(bits, count=offset + n, bitorder="little")[offset:].view(np.bool_)
        return np.where(valid, values, np.nan)
    values.flags.writeable = False  # a view of Arrow's memory: never written through
    return values


def signed_log(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``sign(x) * log1p(|x|)``: equal to ``log1p(x)`` for ``x >= 0``, odd, invertible.

    >>> signed_log(np.array([-np.e + 1, 0.0, 3.0])).round(6).tolist()
    [-1.0, 0.0, 1.386294]
    """
    return np.copysign(np.log1p(np.abs(values)), values)


def _count_equal(ordered: npt.NDArray[np.float64], value: float) -> int:
    """How many values of the ascending array ``ordered`` equal ``value`` (-0.0 == 0.0)."""
    return int(np.searchsorted(ordered, value, "right") - np.searchsorted(ordered, value, "left"))


@dataclass(frozen=True, slots=True)
class ColumnSummary:
    """Final statistics of one column (the output of :meth:`ColumnState.finalize`).

    ``var`` and ``std`` use ddof=0. ``mean``, ``var``, ``std``, ``min``, ``max`` and
    the quantiles are NaN when the column has no finite value. The profile:
    ``skewness`` and ``kurtosis`` (excess, Fisher) as scipy.stats computes them (bias
    uncorrected), and ``outside_fences``, the share of finite values beyond Tukey's
    fences ``q1 - 1.5 IQR`` and ``q3 + 1.5 IQR`` (from the sketch, within its bound),
    ``zero_share``, the share of finite values equal to zero, ``min_share`` and
    ``max_share``, the shares equal to the minimum and the maximum (mass at the
    bounds), ``distinct``, an estimate of the number of distinct finite values (NaN
    unless asked for), and ``log``, the moments of ``signed_log(x)`` (``None`` unless a
    log transform or ``auto`` asked for them).
    """

    count: int
    nulls: int
    nans: int
    posinf: int
    neginf: int
    mean: float
    var: float
    std: float
    min: float
    max: float
    quantiles: dict[float, float]
    rank_error: float
    skewness: float = math.nan
    kurtosis: float = math.nan
    outside_fences: float = math.nan
    zero_share: float = math.nan
    min_share: float = math.nan
    max_share: float = math.nan
    distinct: float = math.nan
    log: Moments | None = None


def _total(counts: Sequence[int | None]) -> int | None:
    """The sum of counts, ``None`` when one was not counted."""
    return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)


def _counts(ordered: npt.NDArray[np.float64], missing: int) -> VocabState:
    """The count of each value of an ascending finite array."""
    if not ordered.size:
        return VocabState("float", {}, missing, 0)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, ordered.size])
    return VocabState.of("float", dict(zip(ordered[starts].tolist(), sizes.tolist(), strict=True)), missing)


def _share(count: int | None, of: int) -> float:
    return count / of if count is not None and of else math.nan


@dataclass(frozen=True, slots=True)
class ColumnState:
    """Mergeable statistics of one numeric column.

    Parameters
    ----------
    moments : Moments
        Count, mean, M2, min and max of the finite values.
    sketch : QuantileSketch
        KLL sketch of the finite values.
    nulls, nans, posinf, neginf : int
        Values left out of the moments and the sketch, by kind.
    zeros : int or None
        Finite values equal to zero (their share is part of the profile).
    at_min, at_max : int or None
        Finite values equal to the minimum and to the maximum.
        These three are ``None`` when not counted (statistics of artifacts written
        before they were kept); a share of ``None`` is NaN, and ``None`` merges as
        "not counted".
    log : Moments or None
        Moments of ``signed_log`` of the finite values (fits ``log1p`` and
        ``signed_log``); ``None`` when not asked for. ``None`` merges as "not kept".
    distinct : DistinctSketch or None
        HyperLogLog sketch of the distinct finite values; ``None`` when not asked for.
    counts : VocabState or None
        Count of each finite value (exact up to its limit, then a frequent-items sketch),
        for the ``most_frequent`` imputation; ``None`` when not asked for.
    """

    moments: Moments = field(default_factory=Moments)
    sketch: QuantileSketch = field(default_factory=lambda: QuantileSketch(DEFAULT_K))
    nulls: int = 0
    nans: int = 0
    posinf: int = 0
    neginf: int = 0
    zeros: int | None = 0
    at_min: int | None = 0
    at_max: int | None = 0
    log: Moments | None = None
    distinct: DistinctSketch | None = None
    counts: VocabState | None = None

    @classmethod
    def empty(cls, k: int = DEFAULT_K) -> ColumnState:
        return cls(sketch=QuantileSketch(k))

    @classmethod
    def from_block(
        cls,
        block: pa.Array | pa.ChunkedArray | npt.NDArray[np.generic],
        k: int = DEFAULT_K,
        log: bool = False,
        distinct: bool = False,
        counts: bool = False,
    ) -> ColumnState:
        """Summarize one block of a numeric column (``log``, ``distinct`` and ``counts``
        add those states).

        Examples
        --------
        >>> import numpy as np
        >>> s = ColumnState.from_block(np.array([1.0, np.nan, np.inf, 3.0]))
        >>> (s.moments.count, s.moments.mean, s.nans, s.posinf)
        (2, 2.0, 1, 1)
        """
        nulls = block.null_count if isinstance(block, pa.Array | pa.ChunkedArray) else 0
        return cls.from_values(to_float64(block), nulls, k, log, distinct, counts)

    @classmethod
    def from_values(
        cls,
        values: npt.NDArray[np.float64],
        nulls: int = 0,
        k: int = DEFAULT_K,
        log: bool = False,
        distinct: bool = False,
        counts: bool = False,
    ) -> ColumnState:
        """:meth:`from_block` of float64 ``values`` in which ``nulls`` of the NaNs were nulls."""
        nans = posinf = neginf = 0
        finite = np.isfinite(values)
        if not finite.all():
            nan_mask = np.isnan(values)
            nans = int(nan_mask.sum()) - nulls
            posinf = int(np.count_nonzero(values == np.inf))
            neginf = int(np.count_nonzero(values == -np.inf))
            values = values[finite]
        # ascending: the sketch's input (see QuantileSketch.from_sorted), the extremes and the counts
        ordered = ascending(values)
        moments = Moments.from_block(ordered, ordered=True)
        return cls(
            moments,
            QuantileSketch.from_sorted(ordered, k),
            nulls,
            nans,
            posinf,
            neginf,
            _count_equal(ordered, 0.0),
            _count_equal(ordered, moments.min),
            _count_equal(ordered, moments.max),
            Moments.from_block(signed_log(values)) if log else None,
            DistinctSketch.from_block(values) if distinct else None,
            _counts(ordered, nulls + nans) if counts else None,
        )

    @property
    def rows(self) -> int:
        """All values seen, whatever their kind."""
        return self.moments.count + self.nulls + self.nans + self.posinf + self.neginf

    def merge(self, other: ColumnState) -> ColumnState:
        return ColumnState.merge_all([self, other])

    @classmethod
    def merge_all(cls, states: Sequence[ColumnState]) -> ColumnState:
        """Merge many states; the sketches are merged in one step."""
        first, rest = states[0], states[1:]
        moments = first.moments
        for s in rest:
            moments = moments.merge(s.moments)
        logs = [s.log for s in states if s.log is not None]
        log = logs[0] if logs else None
        for other in logs[1:]:
            log = log.merge(other) if log is not None else other
        sketches = [s.distinct for s in states if s.distinct is not None]
        distinct = sketches[0] if sketches else None
        for sketch in sketches[1:]:
            distinct = distinct.merge(sketch) if distinct is not None else sketch
        tallies = [s.counts for s in states if s.counts is not None]
        return ColumnState(
            moments,
            first.sketch.merge_many([s.sketch for s in rest]),
            sum(s.nulls for s in states),
            sum(s.nans for s in states),
            sum(s.posinf for s in states),
            sum(s.neginf for s in states),
            _total([s.zeros for s in states]),
            _total([s.at_min for s in states if s.moments.count and s.moments.min == moments.min]),
            _total([s.at_max for s in states if s.moments.count and s.moments.max == moments.max]),
            log,
            distinct,
            VocabState.merge_all(tallies) if tallies else None,
        )

    def finalize(self, probabilities: Sequence[float]) -> ColumnSummary:
        m = self.moments
        var = m.variance()
        finite = m.count > 0
        return ColumnSummary(
            count=m.count,
            nulls=self.nulls,
            nans=self.nans,
            posinf=self.posinf,
            neginf=self.neginf,
            mean=m.mean if finite else math.nan,
            var=var,
            std=math.sqrt(var) if finite else math.nan,
            min=m.min if finite else math.nan,
            max=m.max if finite else math.nan,
            quantiles=dict(zip(probabilities, self.sketch.quantiles(probabilities), strict=True)),
            rank_error=self.sketch.rank_error,
            skewness=m.skewness,
            kurtosis=m.kurtosis,
            outside_fences=self.outside_fences(),
            zero_share=_share(self.zeros, m.count),
            min_share=_share(self.at_min, m.count),
            max_share=_share(self.at_max, m.count),
            distinct=self.distinct.estimate if self.distinct is not None else math.nan,
            log=self.log,
        )

    def histogram(self, bins: int = 20) -> tuple[list[float], list[float]]:
        """``bins`` equal-width bins from min to max: edges and the share of finite
        values in each, read from the sketch (each share within twice its rank error)."""
        if self.sketch.is_empty or bins < 1:
            return [], []
        low, high = self.moments.min, self.moments.max
        if low == high:
            return [low, high], [1.0]
        edges = np.linspace(low, high, bins + 1)
        inner = self.sketch.cdf(list(edges[1:-1]), inclusive=False)
        shares = np.diff([0.0, *inner, 1.0])
        return [float(e) for e in edges], [float(max(v, 0.0)) for v in shares]

    def outside_fences(self) -> float:
        """Share of finite values beyond Tukey's fences (NaN when there are none)."""
        if self.sketch.is_empty:
            return math.nan
        q1, q3 = self.sketch.quantiles([0.25, 0.75])
        (below,) = self.sketch.cdf([q1 - 1.5 * (q3 - q1)], inclusive=False)
        (upto,) = self.sketch.cdf([q3 + 1.5 * (q3 - q1)], inclusive=True)
        return below + (1.0 - upto)


@dataclass(frozen=True, slots=True)
class TableState:
    """Row count and one :class:`ColumnState` per analyzed column; with per-group
    normalization also per-group moments (``groups``) and, for log methods, per-group
    moments of the signed log (``group_logs``), by column; and one
    :class:`~normpipe.core.tensor.TensorState` per tensor column (``tensors``); and the
    value counts of each categorical column (``categories``)."""

    rows: int = 0
    columns: Mapping[str, ColumnState] = field(default_factory=dict)
    groups: Mapping[str, GroupMoments] = field(default_factory=dict)
    group_logs: Mapping[str, GroupMoments] = field(default_factory=dict)
    tensors: Mapping[str, TensorState] = field(default_factory=dict)
    categories: Mapping[str, VocabState] = field(default_factory=dict)

    @classmethod
    def from_block(
        cls,
        table: pa.Table | pa.RecordBatch,
        columns: Iterable[str],
        k: int = DEFAULT_K,
        log: Collection[str] = (),
        distinct: Collection[str] = (),
    ) -> TableState:
        """States of ``columns``; those in ``log`` / ``distinct`` also keep those states."""
        return cls(
            table.num_rows,
            {
                name: ColumnState.from_block(table.column(name), k, name in log, name in distinct)
                for name in columns
            },
        )

    def merge(self, other: TableState) -> TableState:
        return TableState.merge_all([self, other])

    @classmethod
    def join(cls, parts: Sequence[TableState]) -> TableState:
        """The states of disjoint sets of columns over the same rows, side by side."""
        return cls(
            parts[0].rows if parts else 0,
            {name: c for part in parts for name, c in part.columns.items()},
            {name: g for part in parts for name, g in part.groups.items()},
            {name: g for part in parts for name, g in part.group_logs.items()},
            {name: t for part in parts for name, t in part.tensors.items()},
            {name: v for part in parts for name, v in part.categories.items()},
        )

    @classmethod
    def merge_all(cls, states: Sequence[TableState]) -> TableState:
        """Merge many table states; a column missing from a state counts as empty."""
        names: dict[str, None] = {}
        for s in states:
            names.update(dict.fromkeys(s.columns))
        merged = {
            name: ColumnState.merge_all([s.columns[name] for s in states if name in s.columns])
            for name in names
        }
        groups, logs = (
            {
                name: GroupMoments.merge_all(
                    [getattr(s, kind)[name] for s in states if name in getattr(s, kind)]
                )
                for name in names
                if any(name in getattr(s, kind) for s in states)
            }
            for kind in ("groups", "group_logs")
        )
        tensors: dict[str, TensorState] = {}
        for s in states:
            for name, t in s.tensors.items():
                tensors[name] = tensors[name].merge(t) if name in tensors else t
        named: dict[str, list[VocabState]] = {}
        for s in states:
            for name, v in s.categories.items():
                named.setdefault(name, []).append(v)
        categories = {name: VocabState.merge_all(parts) for name, parts in named.items()}
        return cls(sum(s.rows for s in states), merged, groups, logs, tensors, categories)
