"""The transform phase: a pure function of fitted scalers and a block of data.

The same :meth:`FittedScaler.apply` serves Arrow tables (the Parquet path) and pandas
frames (serving), so both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pyarrow as pa

from normpipe.core.column import to_float64
from normpipe.scalers import FittedScaler

__all__ = ["OutputDtype", "arrow_dtype", "output_schema", "transform_table"]

OutputDtype = Literal["float64", "float32"]


def arrow_dtype(dtype: OutputDtype) -> pa.DataType:
    return pa.float32() if dtype == "float32" else pa.float64()


def output_schema(schema: pa.Schema, scalers: Mapping[str, FittedScaler], dtype: OutputDtype) -> pa.Schema:
    """``schema`` with every scaled column turned into ``dtype`` (nullable)."""
    target = arrow_dtype(dtype)
    fields = [f.with_type(target).with_nullable(True) if f.name in scalers else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def transform_table(
    table: pa.Table, scalers: Mapping[str, FittedScaler], dtype: OutputDtype = "float64"
) -> pa.Table:
    """Apply each scaler to its column; other columns are returned untouched.

    Nulls stay null, NaN stays NaN, +/-inf follow the map (see :mod:`normpipe.scalers`).
    """
    target = arrow_dtype(dtype)
    np_dtype = np.dtype(dtype)
    columns = list(table.columns)
    for index, field in enumerate(table.schema):
        scaler = scalers.get(field.name)
        if scaler is None:
            continue
        column = columns[index]
        values = scaler.apply(to_float64(column)).astype(np_dtype, copy=False)
        mask = column.is_null().to_numpy() if column.null_count else None
        columns[index] = pa.array(values, type=target, mask=mask)
    return pa.Table.from_arrays(columns, schema=output_schema(table.schema, scalers, dtype))
