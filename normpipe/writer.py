"""Writing one normalized Parquet file: the per-file transform and the codec choice.

Every input file becomes one output file at the same relative path (so hive
partition directories are kept) with the same rows in the same order, below the
directory that :func:`normpipe.commit.commit` yields (the commit protocol is there).
Row groups are kept, except that a row group whose output would pass
:data:`ROW_GROUP_BYTES` (a wide table) is written as several, cut by rows, so that a
task's memory does not grow with the column count.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.categories import FittedCategories
from normpipe.commit import destination
from normpipe.dataset import SourceFile, check_file_schema
from normpipe.errors import InputError
from normpipe.impute import Imputed, indicator_name
from normpipe.mappers import (
    ColumnMap,
    GroupedScalers,
    OutputDtype,
    apply_table,
    inner_map,
    output_schema,
    scalar_columns,
)
from normpipe.scan import read_ahead
from normpipe.storage import Location, storage_errors
from normpipe.tensors import FittedTensor
from normpipe.units import Unit

__all__ = ["STATS_SHA256_KEY", "write_file", "write_unit"]

#: Row groups up to this size are read whole (and the next one read ahead while one is
#: written); larger ones are read and mapped a batch of columns at a time.
READ_BYTES = 64 * 2**20
#: An output row group larger than this is written as several, cut by rows: each mapped
#: batch of columns is spilled to local Arrow IPC files, one per slice of rows, and each
#: slice is read back from its files and written. A task then holds a batch of columns
#: and one slice, not the whole row group mapped.
ROW_GROUP_BYTES = 64 * 2**20

#: The same for output holding list columns (tensors, decoded images): Parquet's writer
#: needs about four times a nested column's values (levels, pages, compression), so
#: their row groups are cut smaller.
NESTED_ROW_GROUP_BYTES = 16 * 2**20

#: Footer key that names the sha256 of the stats artifact used for the transform.
STATS_SHA256_KEY = b"normpipe.stats_sha256"


def write_unit(
    unit: Unit,
    fs: fsspec.AbstractFileSystem | None,
    dest_root: Location,
    params: tuple[Mapping[str, ColumnMap], GroupedScalers | None],
    dtype: OutputDtype,
    stats_sha256: str,
) -> list[dict[str, Any]]:
    """:func:`write_file` for each file of ``unit`` (whole files, see :func:`normpipe.units.plan`)
    with ``params`` (the scalers and the per-group parameters); the manifest entries."""
    scalers, groups = params
    return [write_file(p.file, fs, dest_root, scalers, dtype, stats_sha256, groups) for p in unit.pieces]


def write_file(
    file: SourceFile,
    fs: fsspec.AbstractFileSystem | None,
    dest_root: Location,
    scalers: Mapping[str, ColumnMap],
    dtype: OutputDtype,
    stats_sha256: str,
    groups: GroupedScalers | None = None,
) -> dict[str, Any]:
    """Normalize one Parquet file into ``dest_root/<relpath>``, row group by row group
    (each row with its group's parameters when ``groups`` is given).

    Returns the manifest entry: relative path, input rows, rows written, bytes, and the
    input's size (with the path, the input's identity when an output is appended to).
    """
    parquet = file.open(fs)
    schema = parquet.schema_arrow
    tensors = [name for name, found in scalers.items() if isinstance(found, FittedTensor)]
    coded = [name for name, found in scalers.items() if isinstance(inner_map(found), FittedCategories)]
    check_file_schema(file.path, schema, scalar_columns(scalers), tensors, coded)
    if groups is not None and schema.get_field_index(groups.by) < 0:
        raise InputError(f"{file.path}: no column '{groups.by}', which the stats are grouped by")
    target_schema = output_schema(schema, scalers, dtype)
    metadata = {**(target_schema.metadata or {}), STATS_SHA256_KEY: stats_sha256.encode()}
    target_schema = target_schema.with_metadata(metadata)
    dictionary_columns = _dictionary_encoded(parquet, scalers)
    dest = destination(Path(dest_root.path), file.relpath)  # refuses paths that leave the root
    written = 0
    with contextlib.ExitStack() as stack:
        if dest_root.is_local:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)  # never write through a hard link of a committed part
            sink: Any = str(dest)
        else:
            stack.enter_context(storage_errors(dest_root.url, "write"))
            sink = stack.enter_context(dest_root.fs.open(dest.as_posix(), "wb"))
        source = _mapped(file, parquet, scalers, dtype, groups, target_schema)
        # reading ahead holds a second row group, mapped: not for large ones (wide tables,
        # or tensors whose output grows past a row group's bytes)
        large = any(
            _group_bytes(parquet, g) > READ_BYTES
            or _output_bytes(parquet, g, target_schema) > _row_group_limit(target_schema)
            for g in range(parquet.num_row_groups)
        )
        mapped = read_ahead(source) if parquet.num_row_groups > 1 and not large else source
        first = next(mapped, None)  # the codecs are chosen on the first row group
        leaves = [parquet.schema.column(i).path for i in range(len(parquet.schema))]
        codecs = _codecs(first, leaves) if first is not None else SNAPPY
        with pq.ParquetWriter(
            sink, target_schema, compression=codecs, use_dictionary=dictionary_columns
        ) as out:
            if first is not None:
                out.write_table(first, row_group_size=max(first.num_rows, 1))
                written += first.num_rows
            del first  # each table is released once written, before the next is made
            for table in mapped:
                out.write_table(table, row_group_size=max(table.num_rows, 1))
                written += table.num_rows
                del table
    pa.default_memory_pool().release_unused()
    if dest_root.is_local:
        written = pq.ParquetFile(dest).metadata.num_rows
        size = dest.stat().st_size
    else:
        with storage_errors(dest_root.url, "write"):
            size = int(dest_root.fs.size(dest.as_posix()))
    return {
        "path": file.relpath,
        "rows_in": parquet.metadata.num_rows,
        "rows_out": written,
        "bytes": size,
        "input_bytes": file.size,
    }


def _group_bytes(parquet: pq.ParquetFile, group: int) -> int:
    return int(parquet.metadata.row_group(group).total_byte_size)


def _mapped(
    file: SourceFile,
    parquet: pq.ParquetFile,
    scalers: Mapping[str, ColumnMap],
    dtype: OutputDtype,
    groups: GroupedScalers | None,
    schema: pa.Schema,
) -> Iterator[pa.Table]:
    """Each row group of ``file`` mapped, in ``schema``. A row group larger than
    :data:`READ_BYTES` (a wide table) is read and mapped in batches of its columns, so
    a task holds the mapped row group and one batch of input, not the input whole too;
    one whose output passes :data:`ROW_GROUP_BYTES` comes out in slices of rows
    (:func:`_sliced`), so a task holds one slice."""
    for group in range(parquet.num_row_groups):
        if _group_bytes(parquet, group) <= READ_BYTES or not _flat(parquet):
            # read whole; mapped (and written) in slices of rows when its output is large
            # (decoded images, tensors widened to float: several times their input)
            table = file.read(parquet, group)
            step = _slice_rows(
                table.num_rows, _output_bytes(parquet, group, schema), _row_group_limit(schema)
            )
            for start in range(0, max(table.num_rows, 1), step):
                part = table.slice(start, step) if step < table.num_rows else table
                mapped = apply_table(part, scalers, dtype, groups, file.path)
                yield mapped.replace_schema_metadata(schema.metadata)
            del table
            continue
        batches = (
            _mapped_batch(file, parquet, group, batch, scalers, dtype, groups)
            for batch in _column_batches(parquet, group, READ_BYTES)
        )
        slices = math.ceil(_output_bytes(parquet, group, schema) / ROW_GROUP_BYTES)
        if slices <= 1:
            arrays = {
                name: column
                for mapped in batches
                for name, column in zip(mapped.column_names, mapped.columns, strict=True)
            }
            yield pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)
            continue
        yield from _sliced(batches, parquet.metadata.row_group(group).num_rows, slices, schema)


def _mapped_batch(
    file: SourceFile,
    parquet: pq.ParquetFile,
    group: int,
    batch: list[str],
    scalers: Mapping[str, ColumnMap],
    dtype: OutputDtype,
    groups: GroupedScalers | None,
) -> pa.Table:
    """The columns ``batch`` of row group ``group``, mapped."""
    extra = [groups.by] if groups is not None and groups.by not in batch else []
    mapped = apply_table(file.read(parquet, group, [*batch, *extra]), scalers, dtype, groups, file.path)
    return mapped.drop_columns(extra)  # the batch, with the indicators it adds


def _output_bytes(parquet: pq.ParquetFile, group: int, schema: pa.Schema) -> int:
    """About the size of row group ``group`` once mapped: fixed-width columns and
    fixed-shape tensors at their output width, others as stored uncompressed."""
    meta = parquet.metadata.row_group(group)
    leaves = {meta.column(i).path_in_schema.split(".")[0]: 0 for i in range(meta.num_columns)}
    for i in range(meta.num_columns):
        leaves[meta.column(i).path_in_schema.split(".")[0]] += meta.column(i).total_uncompressed_size
    total = 0
    for field in schema:
        width = _row_width(field.type)
        total += width * meta.num_rows if width else leaves.get(field.name, 0)
    return total


def _row_width(dtype: pa.DataType) -> int:
    """Bytes a row of ``dtype`` takes in memory when fixed (0: variable)."""
    if isinstance(dtype, pa.FixedShapeTensorType):
        dtype = dtype.storage_type
    if pa.types.is_fixed_size_list(dtype):
        return int(dtype.list_size) * _row_width(dtype.value_type)
    if pa.types.is_primitive(dtype) and dtype.bit_width >= 8:
        return int(dtype.bit_width // 8)
    return 0


def _row_group_limit(schema: pa.Schema) -> int:
    """:data:`NESTED_ROW_GROUP_BYTES` for output with list columns, else :data:`ROW_GROUP_BYTES`."""
    nested = any(pa.types.is_nested(getattr(f.type, "storage_type", f.type)) for f in schema)
    return min(NESTED_ROW_GROUP_BYTES, ROW_GROUP_BYTES) if nested else ROW_GROUP_BYTES


def _slice_rows(rows: int, output_bytes: int, limit: int) -> int:
    """Rows per output row group so that each holds about ``limit`` bytes at most."""
    if output_bytes <= limit or rows <= 1:
        return max(rows, 1)
    return max(1, rows * limit // output_bytes)


def _sliced(batches: Iterator[pa.Table], rows: int, slices: int, schema: pa.Schema) -> Iterator[pa.Table]:
    """The mapped column ``batches`` of one row group as ``slices`` tables of consecutive
    rows in ``schema``, through spill files: each slice of each batch is written once to
    its own Arrow IPC file, and each slice is read back from its files and released."""
    step = math.ceil(rows / slices)
    starts = range(0, rows, step)
    with tempfile.TemporaryDirectory(prefix="normpipe-spill-") as spill:
        count = 0
        for i, mapped in enumerate(batches):
            for k, start in enumerate(starts):
                with pa.OSFile(str(Path(spill, f"{k}-{i}.arrow")), "wb") as sink:
                    part = mapped.slice(start, step)
                    with pa.ipc.new_file(sink, part.schema) as writer:
                        writer.write_table(part)
            count += 1
            del mapped  # one batch of columns in memory at a time
        for k in range(len(starts)):
            arrays: dict[str, pa.ChunkedArray] = {}
            for i in range(count):
                with pa.OSFile(str(Path(spill, f"{k}-{i}.arrow")), "rb") as source:
                    part = pa.ipc.open_file(source).read_all()
                arrays.update(zip(part.column_names, part.columns, strict=True))
            yield pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def _flat(parquet: pq.ParquetFile) -> bool:
    """Every top-level column is one Parquet leaf column (no nested types)."""
    return len(parquet.schema) == len(parquet.schema_arrow)


def _column_batches(parquet: pq.ParquetFile, group: int, limit: int) -> list[list[str]]:
    """The columns of a flat file in schema order, in batches of about ``limit``
    uncompressed bytes of row group ``group``."""
    meta = parquet.metadata.row_group(group)
    batches: list[list[str]] = [[]]
    size = 0
    for i, name in enumerate(parquet.schema_arrow.names):
        nbytes = meta.column(i).total_uncompressed_size
        if batches[-1] and size + nbytes > limit:
            batches.append([])
            size = 0
        batches[-1].append(name)
        size += nbytes
    return batches


def _codecs(block: pa.Table, leaves: list[str]) -> dict[str, str]:
    """The codec of each leaf column (``leaves``, Parquet paths): Snappy, except for
    top-level fixed-width columns that Snappy cannot shrink by
    :data:`WORTH_COMPRESSING` on a sample of ``block``: those are written
    uncompressed.

    Normalized doubles of continuous data are such columns (random mantissa bytes,
    no repeats for Snappy to find): compressing them costs about a third of the
    writer's time and saves nothing. Low-cardinality or rounded values compress and
    keep Snappy. The sample is :data:`_SAMPLES` slices of :data:`_SAMPLE_BYTES` spread
    over the column's values; columns with less than one slice keep Snappy.
    """
    codecs = dict.fromkeys(leaves, SNAPPY)
    for field, column in zip(block.schema, block.columns, strict=True):
        fixed_width = pa.types.is_primitive(field.type) and not pa.types.is_boolean(field.type)
        if field.name not in codecs or not fixed_width or column.num_chunks == 0:
            continue
        chunk = column.chunk(0)
        width = field.type.bit_width // 8
        values = chunk.buffers()[1].slice(chunk.offset * width, len(chunk) * width)
        size = min(_SAMPLE_BYTES, values.size)
        step = max((values.size - size) // (_SAMPLES - 1), 1)
        raw = packed = 0
        for start in range(0, values.size - size + 1, step)[:_SAMPLES]:
            piece = values.slice(start, size)
            raw += piece.size
            packed += _SNAPPY.compress(piece).size
        if raw >= _SAMPLE_BYTES and packed > (1 - WORTH_COMPRESSING) * raw:
            codecs[field.name] = "none"
    return codecs


#: The share of bytes Snappy must save on a column's sample for the column to be compressed.
WORTH_COMPRESSING = 0.05
SNAPPY = "snappy"
_SNAPPY = pa.Codec(SNAPPY)
_SAMPLES = 4
_SAMPLE_BYTES = 16 * 1024


def _dictionary_encoded(parquet: pq.ParquetFile, scalers: Mapping[str, ColumnMap]) -> list[str]:
    """The copied columns the input stored with a dictionary: they keep it; categorical
    codes and missing indicators (few distinct values) take one. Normalized columns, and
    columns the input stored plain, are written plain (trying a dictionary on
    high-cardinality values is costly and the writer then falls back to plain)."""
    meta = parquet.metadata
    if meta.num_row_groups == 0:
        return []
    group = meta.row_group(0)
    names = [name for name, found in scalers.items() if isinstance(inner_map(found), FittedCategories)]
    names += [
        indicator_name(name)
        for name, found in scalers.items()
        if isinstance(found, Imputed) and found.indicator
    ]
    for i in range(group.num_columns):
        column = group.column(i)
        name = column.path_in_schema
        if name in scalers or "." in name:
            continue
        if any("DICTIONARY" in encoding for encoding in column.encodings):
            names.append(name)
    return names
