"""Reading a dataset's rows: the row groups of a Parquet file as blocks, each with its
file, its row group and the number of its first row in the file.

Every pass reads through :func:`blocks` (the statistics, exact quantiles, the
normalized copy, predictions, training folds), so a read or decode error is the same
one clear line everywhere (:meth:`~normpipe.dataset.SourceFile.read`), and a block's
rows can be told apart across passes by (file, first row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.dataset import SourceFile

__all__ = ["Block", "blocks", "read_ahead"]

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class Block:
    """Rows ``first_row`` to ``first_row + table.num_rows`` of ``file`` (row group ``group``)."""

    file: SourceFile
    group: int
    first_row: int
    table: pa.Table


def blocks(
    file: SourceFile,
    parquet: pq.ParquetFile,
    columns: Sequence[str] | None = None,
    groups: range | None = None,
    first_row: int | None = None,
) -> Iterator[Block]:
    """The row groups ``groups`` (``None``: all) of ``file`` (opened as ``parquet``), in
    order, of ``columns`` (``None``: every column); one row group in memory at a time.
    ``first_row`` is the number of the first row of ``groups`` when the caller knows it
    (a :class:`~normpipe.units.Piece`, the footers), else it is summed from the footer."""
    meta = parquet.metadata
    groups = range(meta.num_row_groups) if groups is None else groups
    first = sum(meta.row_group(i).num_rows for i in range(groups.start)) if first_row is None else first_row
    for group in groups:
        table = file.read(parquet, group, columns)
        yield Block(file, group, first, table)
        first += table.num_rows


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, the next one produced in a thread while the caller works on the current
    one: a file's next row group is read and decoded (which releases the GIL) while the
    current one is mapped and encoded, so one task keeps two cores busy on a large file.
    Holds one item more in memory; an error producing an item is raised to the caller."""
    with ThreadPoolExecutor(1, thread_name_prefix="normpipe-read-ahead") as pool:
        pending = pool.submit(next, items, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]
