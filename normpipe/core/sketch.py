"""A mergeable quantile sketch with a published rank-error bound.

Wraps Apache DataSketches' KLL sketch (Karnin, Lang and Liberty, 2016). The state
holds the sketch in its compact serialized form, so it is immutable, cheap to ship
between Dask workers and can be stored in a JSON artifact (base64) and merged later.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from datasketches import hll_sketch, hll_union, kll_doubles_sketch

__all__ = [
    "DEFAULT_K",
    "DISTINCT_LG_K",
    "DistinctSketch",
    "QuantileSketch",
    "ascending",
    "rank_error_bound",
]

#: Default KLL ``k``: a stated single-quantile rank error of about 7.2e-4 (99% confidence).
DEFAULT_K = 4000
#: HyperLogLog ``lg_k`` of the distinct-count estimate: 4096 registers, relative
#: standard error about 1.6%.
DISTINCT_LG_K = 12


def rank_error_bound(k: int) -> float:
    """The normalized rank error (single quantile, 99% confidence) of a KLL sketch.

    >>> round(rank_error_bound(200), 4)
    0.0133
    """
    return float(kll_doubles_sketch.get_normalized_rank_error(k, False))


def ascending(values: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """``values`` in ascending order, as a new float64 array (the binding takes only
    writable arrays, and the caller's array is left as it was)."""
    return np.sort(np.asarray(values, dtype=np.float64))


@dataclass(frozen=True, slots=True)
class QuantileSketch:
    """A KLL sketch over float64 values, stored serialized.

    Parameters
    ----------
    k : int
        Accuracy parameter (8..65535); larger is more accurate and bigger.
    data : bytes
        The serialized sketch; empty bytes for an empty sketch.

    Notes
    -----
    KLL compaction uses random coin flips, so two runs over the same data can
    return slightly different quantiles; both lie within :attr:`rank_error` of the
    exact answer with 99% confidence. The returned quantiles are values that
    occur in the data (no interpolation between neighbours).
    """

    k: int
    data: bytes = b""

    @classmethod
    def from_block(cls, values: npt.NDArray[np.floating], k: int) -> QuantileSketch:
        """Sketch a 1-D array of finite values (sorted first, see :meth:`from_sorted`)."""
        return cls.from_sorted(ascending(values), k)

    @classmethod
    def from_sorted(cls, ordered: npt.NDArray[np.float64], k: int) -> QuantileSketch:
        """Sketch a 1-D array of finite values in ascending order (writable float64).

        The KLL's cost is sorting: each compaction sorts its lowest level, and fed in
        ascending order those sorts run over presorted buffers, so an update takes
        about a sixth of the time (312,500 values: 2.9 against 16.3 ms). With numpy's
        SIMD sort (about 8 ns a value here) sort plus update cost a third of an update
        in stream order. The bound holds for any order, so the stated rank error is
        the same.
        """
        if ordered.size == 0:
            return cls(k)
        sketch = kll_doubles_sketch(k)
        sketch.update(ordered)
        return cls(k, sketch.serialize())

    @property
    def is_empty(self) -> bool:
        return not self.data

    def _load(self) -> kll_doubles_sketch:
        return kll_doubles_sketch.deserialize(self.data)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Combine two sketches; the result's bound is that of the smaller ``k``."""
        if other.is_empty:
            return self
        if self.is_empty:
            return other
        merged = self._load()
        merged.merge(other._load())
        return QuantileSketch(min(self.k, other.k), merged.serialize())

    def merge_many(self, others: Sequence[QuantileSketch]) -> QuantileSketch:
        """Merge several sketches with one deserialize/serialize of the accumulator."""
        parts = [s for s in (self, *others) if not s.is_empty]
        if len(parts) <= 1:
            return parts[0] if parts else self
        merged = parts[0]._load()
        for part in parts[1:]:
            merged.merge(part._load())
        return QuantileSketch(min(p.k for p in parts), merged.serialize())

    @property
    def rank_error(self) -> float:
        """Normalized rank-error bound for one quantile (99% confidence)."""
        return rank_error_bound(self.k)

    def quantiles(self, probabilities: Sequence[float]) -> list[float]:
        """Approximate quantiles at the given probabilities (NaN when empty)."""
        if self.is_empty:
            return [float("nan")] * len(probabilities)
        return [float(q) for q in self._load().get_quantiles(list(probabilities))]

    def cdf(self, points: Sequence[float], inclusive: bool = True) -> list[float]:
        """Approximate share of values <= each point (< with ``inclusive=False``),
        within :attr:`rank_error`. Points must increase strictly."""
        if self.is_empty:
            return [float("nan")] * len(points)
        return [float(v) for v in self._load().get_cdf(list(points), inclusive)[: len(points)]]

    def to_base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    @classmethod
    def from_base64(cls, text: str, k: int) -> QuantileSketch:
        """Decode a sketch stored by :meth:`to_base64`.

        Raises
        ------
        ValueError
            The text is not base64 or the bytes are not a KLL sketch.
        """
        return cls(k, _decode(text, kll_doubles_sketch.deserialize, "KLL"))


@dataclass(frozen=True, slots=True)
class DistinctSketch:
    """A HyperLogLog sketch (DataSketches HLL) of the distinct finite values, serialized.

    The estimate's relative standard error is about ``1.04 / sqrt(2**lg_k)`` (1.6% at
    the default ``lg_k`` 12); it is exact for small counts. The binding updates one
    value at a time, so each block is reduced to its unique values first: cheap for
    low-cardinality columns, about 0.2 s per million values for continuous ones.
    """

    lg_k: int = DISTINCT_LG_K
    data: bytes = b""

    @classmethod
    def from_block(cls, values: npt.NDArray[np.floating], lg_k: int = DISTINCT_LG_K) -> DistinctSketch:
        if values.size == 0:
            return cls(lg_k)
        sketch = hll_sketch(lg_k)
        for value in np.unique(values).tolist():
            sketch.update(value + 0.0)  # -0.0 and 0.0 are one value
        return cls(lg_k, sketch.serialize_compact())

    def merge(self, other: DistinctSketch) -> DistinctSketch:
        if not other.data:
            return self
        if not self.data:
            return other
        union = hll_union(min(self.lg_k, other.lg_k))
        union.update(hll_sketch.deserialize(self.data))
        union.update(hll_sketch.deserialize(other.data))
        return DistinctSketch(min(self.lg_k, other.lg_k), union.get_result().serialize_compact())

    @property
    def estimate(self) -> float:
        """Estimated number of distinct values (0.0 when empty)."""
        return float(hll_sketch.deserialize(self.data).get_estimate()) if self.data else 0.0

    def to_base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    @classmethod
    def from_base64(cls, text: str, lg_k: int = DISTINCT_LG_K) -> DistinctSketch:
        """Decode a sketch stored by :meth:`to_base64` (``ValueError`` when damaged)."""
        return cls(lg_k, _decode(text, hll_sketch.deserialize, "HLL"))


def _decode(text: str, check: Callable[[bytes], object], kind: str) -> bytes:
    """Base64 sketch bytes, checked by deserializing them (``ValueError`` when damaged)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
        if data:
            check(data)
    except (ValueError, RuntimeError, IndexError, UnicodeEncodeError) as err:
        raise ValueError(f"not a valid {kind} sketch ({type(err).__name__}: {err})") from None
    return data
