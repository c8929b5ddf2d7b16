"""The analyze phase: one full pass over a file producing mergeable state.

Only the analyzed columns are read, one column chunk (one column of one row group)
at a time, so a task's memory is bounded by the largest column chunk, not by the
file or the row group.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.core import exact
from normpipe.core.column import ColumnState, TableState, signed_log, to_float64
from normpipe.core.groups import GroupIndex, GroupMoments
from normpipe.dataset import SourceFile, check_file_schema
from normpipe.errors import InputError
from normpipe.scan import blocks

__all__ = ["analyze_file", "collect_brackets", "merge_brackets", "merge_states"]


def analyze_file(
    file: SourceFile,
    fs: fsspec.AbstractFileSystem | None,
    columns: Sequence[str],
    k: int,
    *,
    log: Collection[str] = (),
    distinct: Collection[str] = (),
    group_by: str | None = None,
) -> TableState:
    """The :class:`TableState` of ``columns`` over every row of one Parquet file
    (with the signed-log moments of ``log``, the distinct sketch of ``distinct``, and
    with ``group_by`` the per-group moments of every column).

    Raises
    ------
    InputError
        The file is unreadable, or a column is missing or not numeric in it.
    """
    parquet = file.open(fs)
    check_file_schema(file.path, parquet.schema_arrow, columns)
    if group_by is not None:
        return _analyze_groups(file, parquet, columns, k, log, distinct, group_by)
    states = {}
    for name in columns:
        state = ColumnState.empty(k)
        for block in blocks(file, parquet, [name]):
            chunk = block.table.column(0)
            state = state.merge(ColumnState.from_block(chunk, k, name in log, name in distinct))
        states[name] = state
    pa.default_memory_pool().release_unused()  # hand decode buffers back between tasks
    return TableState(parquet.metadata.num_rows, states)


def _analyze_groups(
    file: SourceFile,
    parquet: pq.ParquetFile,
    columns: Sequence[str],
    k: int,
    log: Collection[str],
    distinct: Collection[str],
    group_by: str,
) -> TableState:
    """Row group by row group: the group of each row once, then every column's global
    and per-group states."""
    if parquet.schema_arrow.get_field_index(group_by) < 0:
        raise InputError(f"{file.path}: no column '{group_by}' to group by; check --group-by")
    states = {name: ColumnState.empty(k) for name in columns}
    groups: dict[str, list[GroupMoments]] = {name: [] for name in columns}
    logs: dict[str, list[GroupMoments]] = {name: [] for name in columns if name in log}
    for i in range(parquet.num_row_groups):
        index = GroupIndex.from_arrow(file.read(parquet, i, [group_by]).column(0))
        for name in columns:
            chunk = file.read(parquet, i, [name]).column(0)
            states[name] = states[name].merge(ColumnState.from_block(chunk, k, name in log, name in distinct))
            values = to_float64(chunk)
            groups[name].append(GroupMoments.from_block(index, values))
            if name in logs:
                with np.errstate(invalid="ignore"):
                    logs[name].append(GroupMoments.from_block(index, signed_log(values)))
    pa.default_memory_pool().release_unused()
    return TableState(
        parquet.metadata.num_rows,
        states,
        {name: GroupMoments.merge_all(parts) for name, parts in groups.items() if parts},
        {name: GroupMoments.merge_all(parts) for name, parts in logs.items() if parts},
    )


def merge_states(*states: TableState) -> TableState:
    """The combine step of the tree reduction (a function, so Dask can ship it)."""
    return TableState.merge_all(states)


def collect_brackets(
    file: SourceFile, fs: fsspec.AbstractFileSystem | None, brackets: Mapping[str, Sequence[exact.Bracket]]
) -> exact.BracketState:
    """The exact-quantile pass over one file: per column and bracket, the count of
    finite values below it and the values inside it."""
    parquet = file.open(fs)
    check_file_schema(file.path, parquet.schema_arrow, list(brackets))
    state: exact.BracketState = {}
    for name, column_brackets in brackets.items():
        parts = []
        for block in blocks(file, parquet, [name]):
            values = to_float64(block.table.column(0))
            parts.append({name: exact.collect(values[np.isfinite(values)], column_brackets)})
        state.update(exact.merge(parts) if parts else {name: [(0, np.empty(0)) for _ in column_brackets]})
    pa.default_memory_pool().release_unused()
    return state


def merge_brackets(*states: exact.BracketState) -> exact.BracketState:
    """The combine step of the exact-quantile pass."""
    return exact.merge(states)
