"""The transform phase: a pure function of fitted scalers and a block of data.

The same :meth:`FittedScaler.apply` serves Arrow tables (the Parquet path) and pandas
frames (serving), so both give the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from normpipe.categories import FittedCategories
from normpipe.core.column import to_float64
from normpipe.core.groups import GroupIndex
from normpipe.errors import InputError
from normpipe.impute import INDICATOR_TYPE, Imputed, indicator_name
from normpipe.params import Params
from normpipe.scalers import FittedScaler, Method
from normpipe.tensors import FittedTensor

__all__ = [
    "PANDAS_KEY",
    "ColumnMap",
    "GroupedScalers",
    "OutputDtype",
    "apply_table",
    "arrow_dtype",
    "inner_map",
    "output_schema",
    "pandas_metadata",
    "scalar_columns",
]

OutputDtype = Literal["float64", "float32"]
#: A column's fitted map: a scalar column's scaler, a tensor column's map, a categorical
#: column's codes, or one of the first and last with imputation before it.
ColumnMap = FittedScaler | FittedTensor | FittedCategories | Imputed


def inner_map(found: ColumnMap) -> FittedScaler | FittedTensor | FittedCategories:
    """The map itself, without its imputation."""
    return found.map if isinstance(found, Imputed) else found


def scalar_columns(maps: Mapping[str, ColumnMap]) -> list[str]:
    """The columns of ``maps`` that hold numbers (scalers), in order."""
    return [name for name, found in maps.items() if isinstance(inner_map(found), FittedScaler)]


def arrow_dtype(dtype: OutputDtype) -> pa.DataType:
    return pa.float32() if dtype == "float32" else pa.float64()


def output_schema(
    schema: pa.Schema, scalers: Mapping[str, ColumnMap], dtype: OutputDtype, inverse: bool = False
) -> pa.Schema:
    """``schema`` with every scaled column turned into ``dtype`` (nullable), every tensor
    column into its map's list of floats, every categorical column into ``int32`` codes
    (back to its values with ``inverse``), a missing indicator after each column that
    asks for one (dropped with ``inverse``), and the pandas metadata's entry of each
    mapped column saying so (see :func:`pandas_metadata`)."""
    target = arrow_dtype(dtype)
    fields = []
    typed: dict[str, str] = {}
    indicators = {
        indicator_name(n) for n, found in scalers.items() if isinstance(found, Imputed) and found.indicator
    }
    for f in schema:
        if inverse and f.name in indicators:
            continue
        found = scalers.get(f.name)
        inner = inner_map(found) if found is not None else None
        if isinstance(inner, FittedTensor):
            f = f.with_type(inner.output_type(f.type))
        elif isinstance(inner, FittedCategories):
            f = f.with_type(inner.output_type(f.type, inverse)).with_nullable(True)
            typed[f.name] = "Int32" if not inverse else f.type.to_pandas_dtype().__name__
        elif inner is not None:
            f = f.with_type(target).with_nullable(True)
            typed[f.name] = dtype
        fields.append(f)
        if not inverse and isinstance(found, Imputed) and found.indicator:
            fields.append(pa.field(indicator_name(f.name), INDICATOR_TYPE, nullable=False))
    metadata = dict(schema.metadata or {})
    stored = metadata.pop(PANDAS_KEY, None)
    fixed = pandas_metadata(stored, typed) if stored is not None else None
    if fixed is not None:
        metadata[PANDAS_KEY] = fixed
    return pa.schema(fields, metadata=metadata or None)


#: The schema metadata key where pandas records each column's dtype and the index.
PANDAS_KEY = b"pandas"


def pandas_metadata(stored: bytes, typed: Mapping[str, str]) -> bytes | None:
    """pandas' schema metadata with the entry of every column in ``typed`` made a plain
    column of its numpy dtype there.

    pandas rebuilds each column's dtype from this entry (``Int64``, ``Float32``,
    ``UInt8``...), so a normalized column would otherwise be cast back to an integer
    type and fail, or lose precision. Other columns and the index keep their entries,
    so they come back with their original dtypes. Metadata that is not pandas' JSON
    gives ``None``: it is dropped, and pandas reads plain Arrow types.

    >>> meta = b'{"columns": [{"name": "a", "field_name": "a", "pandas_type": "int64", '
    >>> meta += b'"numpy_type": "Int64", "metadata": null}]}'
    >>> json.loads(pandas_metadata(meta, {"a": "float32"}))["columns"][0]["numpy_type"]
    'float32'
    """
    try:
        doc = json.loads(stored)
        columns = doc["columns"]
        for entry in columns:
            name = entry.get("field_name", entry.get("name"))
            if name in typed:
                numpy = typed[name]
                pandas = {"str_": "unicode", "object_": "unicode", "bool_": "bool"}.get(numpy, numpy.lower())
                entry.update(
                    pandas_type=pandas, numpy_type="object" if numpy in ("str_", "object_") else numpy
                )
                entry.update(metadata=None)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class GroupedScalers:
    """Per-group parameters: row ``i`` of a block uses its group's parameters.

    ``keys`` are sorted; ``params[column][name]`` is aligned with them. Rows whose group
    was not seen at fit time (or whose key is null) use the global scaler with
    ``unseen="global"``, or stop the transform with ``unseen="error"``.
    """

    by: str
    keys: npt.NDArray[Any]
    specs: Mapping[str, Method]
    params: Mapping[str, Params]
    unseen: Literal["global", "error"] = "global"

    def lookup(
        self, column: pa.Array | pa.ChunkedArray
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Each row's position in ``keys`` and whether its group is known."""
        index = GroupIndex.from_arrow(column)
        if index.keys.size == 0 or self.keys.size == 0:
            return np.zeros(index.codes.size, dtype=np.int64), np.zeros(index.codes.size, dtype=bool)
        try:
            at = np.searchsorted(self.keys, index.keys)
        except TypeError:  # keys of another type (e.g. strings against numbers): none known
            at = np.zeros(index.keys.size, dtype=np.int64)
            known_key = np.zeros(index.keys.size, dtype=bool)
        else:
            at = np.minimum(at, self.keys.size - 1)
            known_key = self.keys[at] == index.keys
        valid = index.codes >= 0
        codes = np.where(valid, index.codes, 0)
        return at[codes], valid & known_key[codes]

    def rows(
        self, column: pa.Array | pa.ChunkedArray, where: str = "the data"
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """:meth:`lookup`, applying the ``unseen`` rule: with ``"error"`` a row of an unseen
        (or null) group stops with one line naming the group."""
        at, known = self.lookup(column)
        if self.unseen == "error" and not known.all():
            value = column[int(np.flatnonzero(~known)[0])].as_py()
            raise InputError(
                f"{where}: group {value!r} of column '{self.by}' was not seen at fit time; fit on data "
                "that includes it, or set unseen: global to use the global statistics for unseen groups"
            )
        return at, known

    def scaler_rows(
        self,
        name: str,
        at: npt.NDArray[np.int64],
        known: npt.NDArray[np.bool_],
        fallback: FittedScaler,
    ) -> FittedScaler:
        """A scaler whose parameters are arrays, one entry per row."""
        own = self.params[name]
        if known.all():  # the common case: nothing to blend with the global parameters
            params = own.map(lambda _, values: np.take(values, at))
        else:
            params = own.map(lambda key, values: np.where(known, np.take(values, at), fallback.params[key]))
        return FittedScaler(self.specs[name], params)  # the arrays broadcast


def _validity(chunk: pa.Array) -> pa.Buffer | None:
    """The validity bitmap of ``chunk`` starting at its first row (``None``: no nulls)."""
    if not chunk.null_count:
        return None
    if chunk.offset == 0:
        return chunk.buffers()[0]
    bits = np.frombuffer(chunk.buffers()[0], dtype=np.uint8)
    valid = np.unpackbits(bits, count=chunk.offset + len(chunk), bitorder="little")[chunk.offset :]
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def apply_table(
    table: pa.Table,
    scalers: Mapping[str, ColumnMap],
    dtype: OutputDtype = "float64",
    groups: GroupedScalers | None = None,
    where: str = "the data",
    inverse: bool = False,
) -> pa.Table:
    """Apply each column's map to its column (its inverse with ``inverse``); other columns
    are returned untouched.

    Nulls stay null, NaN stays NaN, +/-inf follow the map (see :mod:`normpipe.methods`),
    unless the column is imputed (:mod:`normpipe.impute`): then missing values are filled
    first and an indicator column may follow. With ``groups``, each row uses its group's
    parameters.
    """
    rows: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]] | None = None
    if groups is not None:
        rows = groups.rows(table.column(groups.by), where)
    schema = output_schema(table.schema, scalers, dtype, inverse)
    arrays = {}
    for field in table.schema:
        column = table.column(field.name)
        found = scalers.get(field.name)
        if found is None:
            arrays[field.name] = column
            continue
        missing = None
        if isinstance(found, Imputed) and not inverse:
            column, missing = found.filled(column)
        mapped = _map_one(field.name, column, inner_map(found), dtype, groups, rows, where, inverse)
        flag = indicator_name(field.name)
        if inverse and isinstance(found, Imputed) and found.indicator and flag in table.column_names:
            was = pc.equal(table.column(flag), 1).combine_chunks()
            mapped = pc.if_else(was, pa.scalar(None, mapped.type), mapped)
        arrays[field.name] = mapped
        if missing is not None and found.indicator:  # type: ignore[union-attr]
            arrays[flag] = pa.array(missing.astype(np.int8), type=INDICATOR_TYPE)
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def _map_one(
    name: str,
    column: pa.ChunkedArray | pa.Array,
    found: FittedScaler | FittedTensor | FittedCategories,
    dtype: OutputDtype,
    groups: GroupedScalers | None,
    rows: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]] | None,
    where: str,
    inverse: bool,
) -> pa.Array | pa.ChunkedArray:
    if isinstance(found, FittedTensor | FittedCategories):
        return found.map_column(column, f"{where}: column '{name}'", inverse)
    scaler = found
    if groups is not None and rows is not None and name in groups.params:
        scaler = groups.scaler_rows(name, rows[0], rows[1], scaler)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    mapped = scaler.invert(to_float64(column)) if inverse else scaler.apply(to_float64(column))
    values = np.ascontiguousarray(mapped.astype(np.dtype(dtype), copy=False))
    return pa.Array.from_buffers(arrow_dtype(dtype), len(values), [_validity(column), pa.py_buffer(values)])
