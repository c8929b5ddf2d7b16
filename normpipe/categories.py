"""Categorical columns, end to end: what a user declares (:class:`CategorySpec`), the
``auto`` rule that tells categories from identifiers (:func:`choose`), fitting a
vocabulary on the counts of the full pass (:func:`fit_categories`) and the fitted map
(:class:`FittedCategories`) from values to integer codes and back.

Codes
-----
Code ``i`` is the ``i``-th most frequent value kept (ties by value), so codes are
stable for the same statistics whatever the order of files. Values outside the
vocabulary (unseen, rarer than ``min_frequency`` or past ``max_categories``) get the
out-of-vocabulary code ``n`` (``n`` the vocabulary's size), or with ``hash_buckets: h``
one of ``n .. n + h - 1`` by a stable hash of the value (blake2b of its text), so very
rare values still land in a few shared buckets. Nulls stay null (see imputation in
:mod:`normpipe.impute`). The inverse maps codes back to values, and an
out-of-vocabulary code to null (which value it was is not kept).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from normpipe.core.vocab import DEFAULT_LG_SIZE, DEFAULT_LIMIT, Kind, VocabState, Vocabulary, kind_of
from normpipe.errors import InputError

__all__ = [
    "CODE_TYPE",
    "IDENTIFIER_SHARE",
    "KIND_TYPES",
    "CategorySpec",
    "FittedCategories",
    "choose",
    "fit_categories",
    "value_type",
]

#: The Arrow type of codes in the output.
CODE_TYPE = pa.int32()
#: ``auto``: a string column whose distinct values are at least this share of its values is
#: an identifier (a name, a key), left alone.
IDENTIFIER_SHARE = 0.5


class CategorySpec(BaseModel):
    """How one categorical column is coded (the ``categories`` section of a config).

    ``min_frequency``: a count (int >= 1) or a share of the non-null values (float in
    (0, 1)) a value needs to get its own code; ``max_categories``: the most codes kept
    (the most frequent), out-of-vocabulary bucket(s) not counted; ``hash_buckets``:
    out-of-vocabulary values spread over this many codes (0: one code). ``limit``:
    distinct values counted exactly before the counts become a frequent-items sketch
    of ``2^lg_size`` slots, with the error bound recorded in the artifact.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_frequency: int | float = Field(default=1, gt=0)
    max_categories: int | None = Field(default=None, ge=1)
    hash_buckets: int = Field(default=0, ge=0, le=1 << 20)
    limit: int = Field(default=DEFAULT_LIMIT, ge=1)
    lg_size: int = Field(default=DEFAULT_LG_SIZE, ge=3, le=26)

    @field_validator("min_frequency")
    @classmethod
    def _frequency(cls, value: int | float) -> int | float:
        if isinstance(value, float) and not value < 1:
            raise ValueError("a share must be below 1; write a count as an integer (e.g. 10)")
        return value

    def threshold(self, total: int) -> int:
        """The count a value needs, for ``total`` non-null values."""
        if isinstance(self.min_frequency, float):
            return max(1, math.ceil(self.min_frequency * total))
        return int(self.min_frequency)


def value_type(dtype: pa.DataType) -> pa.DataType:
    """The type of a column's values (a dictionary's value type)."""
    return dtype.value_type if pa.types.is_dictionary(dtype) else dtype


def choose(state: VocabState) -> tuple[bool, str]:
    """``auto``: whether a string or boolean column is categorical, and why.

    Booleans always are. A column with more distinct values than the exact limit, or
    whose distinct values are at least :data:`IDENTIFIER_SHARE` of its values (one value
    per row, or nearly: names, keys, free text), is an identifier and left alone.
    """
    if state.kind == "boolean":
        return True, "boolean"
    if state.distinct is None:
        return False, f"identifier: more than {state.limit:,} distinct values; left as it is"
    share = state.distinct / state.total if state.total else 1.0
    seen = f"{state.distinct:,} distinct values in {state.total:,} non-null rows ({share:.1%})"
    if share >= IDENTIFIER_SHARE and state.total > 1:
        return False, f"identifier: {seen}; left as it is"
    return True, seen


#: The Arrow type of a vocabulary's values, by kind.
KIND_TYPES: dict[Kind, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "float": pa.float64(),
}


def fit_categories(name: str, spec: CategorySpec, state: VocabState) -> FittedCategories:
    """The vocabulary of ``state`` under ``spec``: values at least ``min_frequency``, the
    ``max_categories`` most frequent, by count then value."""
    vocabulary = state.vocabulary(spec.threshold(state.total))
    keep = vocabulary.values[: spec.max_categories] if spec.max_categories else vocabulary.values
    values = pa.array(list(keep), type=KIND_TYPES[state.kind])
    return FittedCategories(values, vocabulary.counts[: len(keep)], spec.hash_buckets, vocabulary)


def _bucket(text: str, buckets: int) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


@dataclass(frozen=True)
class FittedCategories:
    """Values to codes (see the module's docstring). ``values[i]`` has code ``i``."""

    values: pa.Array
    counts: tuple[int, ...]
    hash_buckets: int = 0
    vocabulary: Vocabulary | None = None

    @property
    def kind(self) -> Kind | None:
        return kind_of(self.values.type)

    @property
    def oov(self) -> int:
        """The first out-of-vocabulary code."""
        return len(self.values)

    @property
    def size(self) -> int:
        """How many codes there are: the vocabulary and the out-of-vocabulary bucket(s)."""
        return len(self.values) + max(1, self.hash_buckets)

    def output_type(self, dtype: pa.DataType, inverse: bool = False) -> pa.DataType:
        return self.values.type if inverse else CODE_TYPE

    def _aligned(self, column: pa.Array) -> tuple[pa.Array, pa.Array]:
        """``column`` and the vocabulary cast to one type where their types differ."""
        if column.type == self.values.type:
            return column, self.values
        if self.kind == "integer" and pa.types.is_integer(column.type):
            return column.cast(pa.int64()), self.values.cast(pa.int64())
        try:
            return column, self.values.cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return column.cast(self.values.type), self.values

    def codes(self, column: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The code of each value (int32); nulls stay null."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        if pa.types.is_dictionary(column.type):
            known = self.codes(column.dictionary)
            return pc.take(known, column.indices)
        if len(self.values) == 0:
            found = pa.nulls(len(column), pa.int32())
        else:
            data, vocabulary = self._aligned(column)
            found = pc.index_in(data, value_set=vocabulary).cast(CODE_TYPE)
        unknown = pc.and_(pc.is_null(found), pc.is_valid(column))
        if not pc.any(unknown).as_py():
            return found
        if self.hash_buckets <= 1:
            oov = pa.scalar(self.oov, CODE_TYPE)
            return pc.if_else(unknown, oov, found)
        encoded = pc.dictionary_encode(column)
        buckets = np.array(
            [self.oov + _bucket(_text(v), self.hash_buckets) for v in encoded.dictionary.to_pylist()],
            dtype=np.int32,
        )
        hashed = pc.take(pa.array(buckets), encoded.indices)
        return pc.if_else(unknown, hashed, found)

    def decode(self, codes: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The value of each code; out-of-vocabulary codes and nulls give null.

        Raises
        ------
        InputError
            A code outside ``0 .. size - 1``.
        """
        if isinstance(codes, pa.ChunkedArray):
            codes = codes.combine_chunks() if codes.num_chunks != 1 else codes.chunk(0)
        codes = codes.cast(pa.int64())
        bad = pc.or_(pc.less(codes, 0), pc.greater_equal(codes, self.size))
        if pc.any(bad).as_py():
            first = pc.filter(codes, bad)[0].as_py()
            raise InputError(f"code {first} is not a code of this vocabulary (0 .. {self.size - 1})")
        inside = pc.if_else(pc.less(codes, self.oov), codes, pa.scalar(None, pa.int64()))
        return pc.take(self.values, inside)

    def map_column(
        self, column: pa.Array | pa.ChunkedArray, where: str = "the data", inverse: bool = False
    ) -> pa.Array:
        """Codes of ``column``, or with ``inverse`` its values from codes."""
        if not inverse:
            return self.codes(column)
        try:
            return self.decode(column)
        except InputError as err:
            raise InputError(f"{where}: {err}") from None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)
