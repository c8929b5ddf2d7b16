"""Mergeable counts of a column's values: the state behind vocabularies and ``most_frequent``.

:class:`VocabState` counts every distinct value exactly while there are at most
``limit`` of them; past that it folds its counts into a frequent-items sketch (Apache
DataSketches ``frequent_strings_sketch``, whose estimates are within
``epsilon * total`` of the true counts: :attr:`VocabState.max_error`) and stays a sketch.
Merging follows the same rule, so a state is the same whatever the split of the rows,
up to the sketch's bound once a sketch is used.

Values are Python ``str``, ``int``, ``bool`` or ``float`` (``kind``); in the sketch
they are kept as text and read back as ``kind``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from datasketches import frequent_items_error_type, frequent_strings_sketch

__all__ = [
    "DEFAULT_LG_SIZE",
    "DEFAULT_LIMIT",
    "Kind",
    "VocabState",
    "Vocabulary",
    "kind_of",
]

#: Distinct values counted exactly before a state turns into a sketch.
DEFAULT_LIMIT = 100_000
#: log2 of the sketch's map size: 2^14 slots, each count within 3.5 / 2^14 ~ 2.1e-4 of the total.
DEFAULT_LG_SIZE = 14

Kind = Literal["string", "integer", "boolean", "float"]


def kind_of(dtype: pa.DataType) -> Kind | None:
    """The kind of values a column of ``dtype`` holds, ``None`` when it cannot be counted.

    >>> kind_of(pa.dictionary(pa.int32(), pa.string())), kind_of(pa.int8()), kind_of(pa.list_(pa.int8()))
    ('string', 'integer', None)
    """
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return "string"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _value(text: str, kind: Kind) -> Any:
    if kind == "integer":
        return int(text)
    if kind == "boolean":
        return text == "True"
    if kind == "float":
        return float(text)
    return text


@dataclass(frozen=True)
class Vocabulary:
    """A state's values by count, largest first (ties by value): ``values[i]`` was seen
    ``counts[i]`` times. Exact when ``max_error`` is 0; from the sketch the counts are
    estimates within ``max_error`` and values rarer than that may be missing."""

    values: tuple[Any, ...]
    counts: tuple[int, ...]
    total: int
    nulls: int
    max_error: int = 0

    @property
    def exact(self) -> bool:
        return self.max_error == 0


@dataclass(frozen=True)
class VocabState:
    """Counts of the non-null values of one column (see the module's docstring).

    Parameters
    ----------
    kind : {"string", "integer", "boolean", "float"}
    counts : mapping
        Exact count of each value; empty once :attr:`sketch` is used.
    nulls : int
        Null values (and NaN for floats), not counted as values.
    total : int
        Values counted (not null).
    sketch : bytes or None
        The serialized ``frequent_strings_sketch`` once past ``limit`` distinct values.
    """

    kind: Kind
    counts: Mapping[Any, int] = field(default_factory=dict)
    nulls: int = 0
    total: int = 0
    sketch: bytes | None = None
    limit: int = DEFAULT_LIMIT
    lg_size: int = DEFAULT_LG_SIZE

    @classmethod
    def empty(cls, kind: Kind, limit: int = DEFAULT_LIMIT, lg_size: int = DEFAULT_LG_SIZE) -> VocabState:
        return cls(kind, limit=limit, lg_size=lg_size)

    @classmethod
    def from_block(
        cls,
        column: pa.Array | pa.ChunkedArray,
        kind: Kind,
        limit: int = DEFAULT_LIMIT,
        lg_size: int = DEFAULT_LG_SIZE,
    ) -> VocabState:
        """Count one block of a column (Arrow's hash count, then a dict of the distinct values).

        >>> s = VocabState.from_block(pa.array(["b", "a", None, "b"]), "string")
        >>> dict(s.counts), s.nulls, s.total
        ({'b': 2, 'a': 1}, 1, 3)
        """
        nulls = column.null_count
        if kind == "float":
            column = pc.cast(column, pa.float64())
            nans = pc.sum(pc.is_nan(column).cast(pa.int64())).as_py() or 0
            nulls += nans
            if nans:
                column = pc.filter(column, pc.invert(pc.is_nan(column)))
        counted = pc.value_counts(column)
        values = counted.field("values").to_pylist()
        numbers = counted.field("counts").to_pylist()
        counts = {v: c for v, c in zip(values, numbers, strict=True) if v is not None}
        return cls.of(kind, counts, nulls, limit, lg_size)

    @classmethod
    def of(
        cls,
        kind: Kind,
        counts: Mapping[Any, int],
        nulls: int = 0,
        limit: int = DEFAULT_LIMIT,
        lg_size: int = DEFAULT_LG_SIZE,
    ) -> VocabState:
        """The state of ``counts`` (a sketch when there are more than ``limit`` values)."""
        state = cls(kind, counts, nulls, sum(counts.values()), None, limit, lg_size)
        return state._folded() if len(counts) > limit else state

    def _sketch(self) -> frequent_strings_sketch:
        if self.sketch is not None:
            return frequent_strings_sketch.deserialize(self.sketch)
        return frequent_strings_sketch(self.lg_size)

    def _folded(self, sketch: frequent_strings_sketch | None = None) -> VocabState:
        """This state with its exact counts moved into a sketch."""
        sketch = sketch if sketch is not None else self._sketch()
        for value, count in self.counts.items():
            sketch.update(_text(value), count)
        return VocabState(self.kind, {}, self.nulls, self.total, sketch.serialize(), self.limit, self.lg_size)

    def merge(self, other: VocabState) -> VocabState:
        return VocabState.merge_all([self, other])

    @classmethod
    def merge_all(cls, states: Sequence[VocabState]) -> VocabState:
        """Counts added; a sketch as soon as one side is one or the distinct values pass ``limit``."""
        first = states[0]
        limit, lg_size = min(s.limit for s in states), min(s.lg_size for s in states)
        nulls, total = sum(s.nulls for s in states), sum(s.total for s in states)
        sketches = [s for s in states if s.sketch is not None]
        if not sketches:
            counts: Counter[Any] = Counter()
            for s in states:
                counts.update(s.counts)
            merged = cls(first.kind, dict(counts), nulls, total, None, limit, lg_size)
            return merged._folded() if len(counts) > limit else merged
        sketch = frequent_strings_sketch(lg_size)
        for s in sketches:
            sketch.merge(frequent_strings_sketch.deserialize(s.sketch))
        for s in states:
            for value, count in s.counts.items():
                sketch.update(_text(value), count)
        return cls(first.kind, {}, nulls, total, sketch.serialize(), limit, lg_size)

    @property
    def exact(self) -> bool:
        return self.sketch is None

    @property
    def distinct(self) -> int | None:
        """Distinct values counted exactly, ``None`` past the limit (a sketch)."""
        return len(self.counts) if self.sketch is None else None

    @property
    def max_error(self) -> int:
        """The largest error of a count read from this state (0 when exact)."""
        if self.sketch is None:
            return 0
        epsilon = float(self._sketch().get_epsilon_for_lg_size(self.lg_size))
        return math.ceil(epsilon * self.total)

    def vocabulary(self, threshold: int = 1) -> Vocabulary:
        """The values seen at least ``threshold`` times, by count then value. From a
        sketch: the values whose estimated count reaches ``threshold``, estimates within
        :attr:`max_error` (none is missed whose true count exceeds ``threshold + max_error``)."""
        if self.sketch is None:
            items: Iterable[tuple[Any, int]] = self.counts.items()
        else:
            sketch = self._sketch()
            found = sketch.get_frequent_items(
                frequent_items_error_type.NO_FALSE_NEGATIVES, max(threshold - 1, 0)
            )
            items = [(_value(text, self.kind), int(estimate)) for text, estimate, _, _ in found]
        kept = sorted(((v, c) for v, c in items if c >= threshold), key=lambda vc: (-vc[1], vc[0]))
        return Vocabulary(
            tuple(v for v, _ in kept), tuple(c for _, c in kept), self.total, self.nulls, self.max_error
        )

    def most_frequent(self) -> Any:
        """The value seen most often (ties: the smallest, as scikit-learn's
        ``SimpleImputer``), ``None`` when no value was seen."""
        top = self.vocabulary().values
        return top[0] if top else None
