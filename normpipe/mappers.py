"""The transform phase: a pure function of fitted scalers and a block of data.

The same :meth:`FittedScaler.apply` serves Arrow tables (the Parquet path) and pandas
frames (serving), so both give the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from normpipe.core.column import to_float64
from normpipe.core.groups import GroupIndex
from normpipe.errors import InputError
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
    "output_schema",
    "pandas_metadata",
]

OutputDtype = Literal["float64", "float32"]
#: A column's fitted map: a scalar column's scaler, or a tensor column's map.
ColumnMap = FittedScaler | FittedTensor


def arrow_dtype(dtype: OutputDtype) -> pa.DataType:
    return pa.float32() if dtype == "float32" else pa.float64()


def output_schema(schema: pa.Schema, scalers: Mapping[str, ColumnMap], dtype: OutputDtype) -> pa.Schema:
    """``schema`` with every scaled column turned into ``dtype`` (nullable), every tensor
    column into its map's list of floats, and the pandas metadata's entry of each scaled
    column saying so (see :func:`pandas_metadata`)."""
    target = arrow_dtype(dtype)
    fields = []
    for f in schema:
        found = scalers.get(f.name)
        if isinstance(found, FittedTensor):
            f = f.with_type(found.output_type(f.type))
        elif found is not None:
            f = f.with_type(target).with_nullable(True)
        fields.append(f)
    metadata = dict(schema.metadata or {})
    stored = metadata.pop(PANDAS_KEY, None)
    scalar = [name for name, found in scalers.items() if isinstance(found, FittedScaler)]
    fixed = pandas_metadata(stored, scalar, dtype) if stored is not None else None
    if fixed is not None:
        metadata[PANDAS_KEY] = fixed
    return pa.schema(fields, metadata=metadata or None)


#: The schema metadata key where pandas records each column's dtype and the index.
PANDAS_KEY = b"pandas"


def pandas_metadata(stored: bytes, scaled: Collection[str], dtype: OutputDtype) -> bytes | None:
    """pandas' schema metadata with the entry of every column in ``scaled`` made a plain
    ``dtype`` column.

    pandas rebuilds each column's dtype from this entry (``Int64``, ``Float32``,
    ``UInt8``...), so a normalized column would otherwise be cast back to an integer
    type and fail, or lose precision. Other columns and the index keep their entries,
    so they come back with their original dtypes. Metadata that is not pandas' JSON
    gives ``None``: it is dropped, and pandas reads plain Arrow types.

    >>> meta = b'{"columns": [{"name": "a", "field_name": "a", "pandas_type": "int64", '
    >>> meta += b'"numpy_type": "Int64", "metadata": null}]}'
    >>> json.loads(pandas_metadata(meta, {"a"}, "float32"))["columns"][0]["numpy_type"]
    'float32'
    """
    try:
        doc = json.loads(stored)
        columns = doc["columns"]
        for entry in columns:
            if entry.get("field_name", entry.get("name")) in scaled:
                entry.update(pandas_type=dtype, numpy_type=dtype, metadata=None)
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


def _validity(column: pa.ChunkedArray) -> pa.Buffer | None:
    """The validity bitmap of ``column`` starting at its first row (``None``: no nulls)."""
    if not column.null_count:
        return None
    chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
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
    """Apply each scaler or tensor map to its column (its inverse with ``inverse``);
    other columns are returned untouched.

    Nulls stay null, NaN stays NaN, +/-inf follow the map (see :mod:`normpipe.methods`).
    With ``groups``, each row uses its group's parameters.
    """
    target = arrow_dtype(dtype)
    np_dtype = np.dtype(dtype)
    columns = list(table.columns)
    rows: tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]] | None = None
    if groups is not None:
        rows = groups.rows(table.column(groups.by), where)
    for index, field in enumerate(table.schema):
        scaler = scalers.get(field.name)
        if scaler is None:
            continue
        if isinstance(scaler, FittedTensor):
            columns[index] = scaler.map_column(columns[index], f"{where}: column '{field.name}'", inverse)
            continue
        if groups is not None and rows is not None and field.name in groups.params:
            scaler = groups.scaler_rows(field.name, rows[0], rows[1], scaler)
        column = columns[index]
        mapped = scaler.invert(to_float64(column)) if inverse else scaler.apply(to_float64(column))
        values = np.ascontiguousarray(mapped.astype(np_dtype, copy=False))
        columns[index] = pa.Array.from_buffers(target, len(values), [_validity(column), pa.py_buffer(values)])
    return pa.Table.from_arrays(columns, schema=output_schema(table.schema, scalers, dtype))
