"""Per-group moments, vectorized over groups: count, mean, M2, min, max per group key.

A block's rows are indexed by group once (Arrow's hash-based ``dictionary_encode``),
then every column's per-group sums come from ``numpy.bincount``; states of disjoint
blocks merge with the parallel formula (the sum of within-part M2 and the between-part
term), which is Chan's update applied to any number of parts at once. Memory grows
with the number of groups (six numbers per group and column), not with the rows.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["GroupIndex", "GroupMoments", "decode_array", "encode_array"]


@dataclass(frozen=True, slots=True)
class GroupIndex:
    """The group of each row of a block: ``keys[codes[i]]`` (``codes[i] == -1``: no group,
    a null or NaN key)."""

    keys: npt.NDArray[Any]
    codes: npt.NDArray[np.int64]

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> GroupIndex:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        encoded = column.dictionary_encode()
        keys = encoded.dictionary.to_numpy(zero_copy_only=False)
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        if keys.dtype.kind == "f":  # a NaN key is no group, like a null
            bad = np.flatnonzero(np.isnan(keys))
            if bad.size:
                codes[np.isin(codes, bad)] = -1
        return cls(keys, codes)


@dataclass(frozen=True, slots=True)
class GroupMoments:
    """Per-group count, mean, M2 (sum of squared deviations), min and max.

    Arrays are aligned with ``keys``; a group with no finite value has count 0, mean
    and M2 0, min +inf and max -inf. After :meth:`merge_all` the keys are sorted and
    unique.
    """

    keys: npt.NDArray[Any]
    count: npt.NDArray[np.int64]
    mean: npt.NDArray[np.float64]
    m2: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]

    @classmethod
    def from_block(cls, index: GroupIndex, values: npt.NDArray[np.float64]) -> GroupMoments:
        """Moments of ``values`` (one per row of the block; NaN and +/-inf are left out)."""
        size = index.keys.size
        keep = (index.codes >= 0) & np.isfinite(values)
        codes, x = (index.codes, values) if keep.all() else (index.codes[keep], values[keep])
        count = np.bincount(codes, minlength=size)
        safe = np.maximum(count, 1)  # empty groups: sums are 0, so their mean is 0
        mean = np.bincount(codes, weights=x, minlength=size) / safe
        d = x - np.take(mean, codes)
        # corrected two-pass M2 per group: sum(d^2) - sum(d)^2 / n
        s1 = np.bincount(codes, weights=d, minlength=size)
        s2 = np.bincount(codes, weights=d * d, minlength=size)
        shift = s1 / safe
        m2 = np.maximum(s2 - s1 * shift, 0.0)
        low = np.full(size, np.inf)
        high = np.full(size, -np.inf)
        np.minimum.at(low, codes, x)
        np.maximum.at(high, codes, x)
        return cls(index.keys, count.astype(np.int64), mean + shift, m2, low, high)

    @classmethod
    def merge_all(cls, parts: Sequence[GroupMoments]) -> GroupMoments:
        """Combine states of disjoint blocks; keys come back sorted and unique."""
        keys = np.concatenate([p.keys for p in parts])
        unique, inverse = np.unique(keys, return_inverse=True)
        size = unique.size
        count = np.concatenate([p.count for p in parts])
        mean = np.concatenate([p.mean for p in parts])
        total = np.bincount(inverse, weights=count, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            merged_mean = np.where(
                total > 0, np.bincount(inverse, weights=count * mean, minlength=size) / total, 0.0
            )
        between = count * (mean - merged_mean[inverse]) ** 2
        within = np.concatenate([p.m2 for p in parts])
        m2 = np.asarray(np.bincount(inverse, weights=within + between, minlength=size), dtype=np.float64)
        low = np.full(size, np.inf)
        high = np.full(size, -np.inf)
        np.minimum.at(low, inverse, np.concatenate([p.min for p in parts]))
        np.maximum.at(high, inverse, np.concatenate([p.max for p in parts]))
        return cls(unique, np.rint(total).astype(np.int64), merged_mean, m2, low, high)

    def merge(self, other: GroupMoments) -> GroupMoments:
        return GroupMoments.merge_all([self, other])

    @property
    def std(self) -> npt.NDArray[np.float64]:
        """Population std per group (ddof=0; 0 for an empty group)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), 0.0))

    def to_json(self) -> dict[str, str]:
        return {
            "count": encode_array(self.count),
            "mean": encode_array(self.mean),
            "m2": encode_array(self.m2),
            "min": encode_array(self.min),
            "max": encode_array(self.max),
        }

    @classmethod
    def from_json(cls, keys: npt.NDArray[Any], doc: dict[str, str]) -> GroupMoments:
        """Arrays stored by :meth:`to_json` (``ValueError`` when a length does not match)."""
        arrays = {name: decode_array(doc[name], np.int64 if name == "count" else np.float64) for name in doc}
        for name, array in arrays.items():
            if array.size != keys.size:
                raise ValueError(f"group array '{name}' has {array.size} values for {keys.size} groups")
        return cls(keys, arrays["count"], arrays["mean"], arrays["m2"], arrays["min"], arrays["max"])


def encode_array(values: npt.NDArray[Any]) -> str:
    """Little-endian bytes of a numeric array, base64 (compact and exact)."""
    dtype = "<i8" if values.dtype.kind in "iu" else "<f8"
    return base64.b64encode(np.ascontiguousarray(values, dtype=dtype).tobytes()).decode("ascii")


def decode_array(text: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    little = "<i8" if dtype is np.int64 else "<f8"
    return np.frombuffer(raw, dtype=little).astype(dtype)
