"""The analyze phase: one full pass over a work unit producing mergeable state.

Only the analyzed columns are read: a small row group (up to :data:`WHOLE_GROUP_BYTES`)
in one read, a larger one a column chunk at a time, so a task's memory is bounded by
the largest column chunk, not by the row group or the file. Chunks smaller than
:data:`BLOCK_VALUES` (many small files batched into one unit) are gathered per column
before they are summarized, within :data:`BUFFER_BYTES` per task, so tiny files cost
what large ones do per value.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import fsspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.core import exact
from normpipe.core.column import ColumnState, TableState, signed_log, to_float64
from normpipe.core.groups import GroupIndex, GroupMoments
from normpipe.core.tensor import TensorLayout, TensorState, row_chunks, tensor_block
from normpipe.core.vocab import VocabState, kind_of
from normpipe.dataset import check_file_schema
from normpipe.errors import InputError
from normpipe.scan import blocks
from normpipe.units import Piece, Unit

__all__ = [
    "BLOCK_VALUES",
    "BUFFER_BYTES",
    "analyze_unit",
    "collect_brackets",
    "merge_brackets",
    "merge_states",
]

#: Values of one column summarized at once (smaller chunks are gathered first).
BLOCK_VALUES = 1 << 18
#: Gathered values a task holds at most, all columns together.
BUFFER_BYTES = 32 * 2**20
#: Row groups up to this size are read whole; larger ones a column at a time.
WHOLE_GROUP_BYTES = 8 * 2**20


def analyze_unit(
    unit: Unit,
    fs: fsspec.AbstractFileSystem | None,
    columns: Sequence[str],
    k: int,
    *,
    log: Collection[str] = (),
    distinct: Collection[str] = (),
    group_by: str | None = None,
    tensors: Mapping[str, TensorLayout] | None = None,
    skip_images: Collection[str] = (),
    categories: Mapping[str, VocabState] | None = None,
    counts: Collection[str] = (),
) -> TableState:
    """The :class:`TableState` of ``columns`` over every row of ``unit`` (with the
    signed-log moments of ``log``, the distinct sketch of ``distinct``, the value counts
    of ``counts``, with ``group_by`` the per-group moments of every column, the per-slot
    states of the tensor columns in ``tensors`` (images of those in ``skip_images`` that
    do not decode are skipped and counted), and the value counts of the categorical
    columns in ``categories``, each given as its empty state: kind, limit, sketch size).

    Raises
    ------
    InputError
        A file is unreadable, or a column is missing or not numeric in it.
    """
    tensors = tensors or {}
    found = {
        name: _tensor_state(unit, fs, name, layout, k, name in skip_images)
        for name, layout in tensors.items()
    }
    vocabs = _vocab_states(unit, fs, categories or {})
    if group_by is not None:
        parts = [
            _analyze_groups(piece, _open(piece, fs, columns), columns, k, log, distinct, counts, group_by)
            for piece in unit.pieces
        ]
        state = TableState.merge_all(parts) if parts else TableState(0, _empty(columns, k))
        return replace(state, tensors=found, categories=vocabs)
    gathered = _Gathered(columns, k, log, distinct, counts)
    for piece in unit.pieces if columns else ():
        parquet = _open(piece, fs, columns)
        groups = range(piece.start, piece.stop)
        meta = parquet.metadata
        if all(meta.row_group(g).total_byte_size <= WHOLE_GROUP_BYTES for g in groups):
            for block in blocks(piece.file, parquet, columns, groups, piece.first_row):  # one read a group
                for name in columns:
                    gathered.add(name, block.table.column(name))
            continue
        for name in columns:
            for block in blocks(piece.file, parquet, [name], groups, piece.first_row):
                gathered.add(name, block.table.column(0))
    pa.default_memory_pool().release_unused()  # hand decode buffers back between tasks
    return TableState(unit.rows, gathered.states(), tensors=found, categories=vocabs)


def _vocab_states(
    unit: Unit, fs: fsspec.AbstractFileSystem | None, empty: Mapping[str, VocabState]
) -> dict[str, VocabState]:
    """The value counts of the categorical columns ``empty`` over ``unit``: each file
    opened once, its row groups read a group (of those columns) at a time."""
    parts = {name: [state] for name, state in empty.items()}
    for piece in unit.pieces if empty else ():
        parquet = piece.file.open(fs)
        schema = parquet.schema_arrow
        for name, state in empty.items():
            index = schema.get_field_index(name)
            if index < 0 or kind_of(schema.field(index).type) != state.kind:
                got = "no such column" if index < 0 else f"type {schema.field(index).type}"
                raise InputError(
                    f"{piece.file.path}: categorical column '{name}' has {got}; every file needs it "
                    f"as {state.kind} values (exclude the file, or the column from categories)"
                )
        for block in blocks(
            piece.file, parquet, list(empty), range(piece.start, piece.stop), piece.first_row
        ):
            for name, state in empty.items():
                column = block.table.column(name)
                parts[name].append(VocabState.from_block(column, state.kind, state.limit, state.lg_size))
        parts = {name: [VocabState.merge_all(found)] for name, found in parts.items()}
    return {name: found[0] for name, found in parts.items()}


def _tensor_state(
    unit: Unit, fs: fsspec.AbstractFileSystem | None, name: str, layout: TensorLayout, k: int, skip: bool
) -> TensorState:
    """The per-slot state of tensor column ``name`` over ``unit``, a row group at a time."""
    parts = [TensorState.empty(layout, k)]
    for piece in unit.pieces:
        parquet = _open(piece, fs, [], [name])
        where = f"{piece.file.path}: column '{name}'"
        for block in blocks(piece.file, parquet, [name], range(piece.start, piece.stop), piece.first_row):
            for start, rows in row_chunks(block.table.column(0), layout):
                values = tensor_block(rows, layout, where, block.first_row + start, skip)
                parts.append(TensorState.from_block(values, layout, k))
                del values
        parts = [TensorState.merge_all(parts)]  # one sketch per slot held, not one per chunk
    return TensorState.merge_all(parts)


def _open(
    piece: Piece, fs: fsspec.AbstractFileSystem | None, columns: Sequence[str], tensors: Sequence[str] = ()
) -> pq.ParquetFile:
    parquet = piece.file.open(fs)
    check_file_schema(piece.file.path, parquet.schema_arrow, columns, tensors)
    return parquet


def _empty(columns: Sequence[str], k: int) -> dict[str, ColumnState]:
    return {name: ColumnState.empty(k) for name in columns}


class _Gathered:
    """Per-column states, with small chunks gathered until :data:`BLOCK_VALUES`."""

    def __init__(
        self,
        columns: Sequence[str],
        k: int,
        log: Collection[str],
        distinct: Collection[str],
        counts: Collection[str] = (),
    ):
        self.k, self.log, self.distinct, self.counts = k, log, distinct, counts
        self.done: dict[str, list[ColumnState]] = {name: [] for name in columns}
        self.waiting: dict[str, list[tuple[npt.NDArray[np.float64], int]]] = {name: [] for name in columns}
        self.sizes = dict.fromkeys(columns, 0)
        self.held = 0

    def add(self, name: str, chunk: pa.ChunkedArray) -> None:
        values = to_float64(chunk)
        if values.size >= BLOCK_VALUES:
            self.done[name].append(self._state(name, [(values, chunk.null_count)]))
            return
        self.waiting[name].append((values, chunk.null_count))
        self.sizes[name] += values.size
        self.held += values.nbytes
        if self.sizes[name] >= BLOCK_VALUES:
            self._flush(name)
        elif self.held >= BUFFER_BYTES:
            for other in self.waiting:
                self._flush(other)

    def _flush(self, name: str) -> None:
        if self.waiting[name]:
            self.done[name].append(self._state(name, self.waiting[name]))
            self.held -= 8 * self.sizes[name]
            self.waiting[name], self.sizes[name] = [], 0

    def _state(self, name: str, parts: list[tuple[npt.NDArray[np.float64], int]]) -> ColumnState:
        values = parts[0][0] if len(parts) == 1 else np.concatenate([v for v, _ in parts])
        nulls = sum(n for _, n in parts)
        return ColumnState.from_values(
            values, nulls, self.k, name in self.log, name in self.distinct, name in self.counts
        )

    def states(self) -> dict[str, ColumnState]:
        states = {}
        for name, done in self.done.items():
            self._flush(name)
            states[name] = ColumnState.merge_all(done) if done else ColumnState.empty(self.k)
        return states


def _analyze_groups(
    piece: Piece,
    parquet: pq.ParquetFile,
    columns: Sequence[str],
    k: int,
    log: Collection[str],
    distinct: Collection[str],
    counts: Collection[str],
    group_by: str,
) -> TableState:
    """Row group by row group: the group of each row once, then every column's global
    and per-group states."""
    file = piece.file
    if parquet.schema_arrow.get_field_index(group_by) < 0:
        raise InputError(f"{file.path}: no column '{group_by}' to group by; check --group-by")
    states = _empty(columns, k)
    groups: dict[str, list[GroupMoments]] = {name: [] for name in columns}
    logs: dict[str, list[GroupMoments]] = {name: [] for name in columns if name in log}
    for i in range(piece.start, piece.stop):
        index = GroupIndex.from_arrow(file.read(parquet, i, [group_by]).column(0))
        for name in columns:
            chunk = file.read(parquet, i, [name]).column(0)
            state = ColumnState.from_block(chunk, k, name in log, name in distinct, name in counts)
            states[name] = states[name].merge(state)
            values = to_float64(chunk)
            groups[name].append(GroupMoments.from_block(index, values))
            if name in logs:
                with np.errstate(invalid="ignore"):
                    logs[name].append(GroupMoments.from_block(index, signed_log(values)))
    pa.default_memory_pool().release_unused()
    return TableState(
        piece.rows,
        states,
        {name: GroupMoments.merge_all(parts) for name, parts in groups.items() if parts},
        {name: GroupMoments.merge_all(parts) for name, parts in logs.items() if parts},
    )


def merge_states(*states: TableState) -> TableState:
    """The combine step of the tree reduction (a function, so Dask can ship it)."""
    return TableState.merge_all(states)


def collect_brackets(
    unit: Unit, fs: fsspec.AbstractFileSystem | None, brackets: Mapping[str, Sequence[exact.Bracket]]
) -> exact.BracketState:
    """The exact-quantile pass over one unit: per column and bracket, the count of
    finite values below it and the values inside it."""
    parts: list[exact.BracketState] = [{name: [(0, np.empty(0)) for _ in b]} for name, b in brackets.items()]
    for piece in unit.pieces:
        parquet = _open(piece, fs, list(brackets))
        for name, column_brackets in brackets.items():
            for block in blocks(piece.file, parquet, [name], range(piece.start, piece.stop), piece.first_row):
                values = to_float64(block.table.column(0))
                parts.append({name: exact.collect(values[np.isfinite(values)], column_brackets)})
    pa.default_memory_pool().release_unused()
    return exact.merge(parts)


def merge_brackets(*states: exact.BracketState) -> exact.BracketState:
    """The combine step of the exact-quantile pass."""
    return exact.merge(states)
