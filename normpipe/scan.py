"""Reading a dataset's rows: the row groups of a Parquet file as blocks, each with its
file, its row group and the number of its first row in the file.

Every pass reads through :func:`blocks` (the statistics, exact quantiles, the
normalized copy, predictions, training folds), so a read or decode error is the same
one clear line everywhere (:meth:`~normpipe.dataset.SourceFile.read`), and a block's
rows can be told apart across passes by (file, first row).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.dataset import SourceFile

__all__ = ["Block", "blocks"]


@dataclass(frozen=True)
class Block:
    """Rows ``first_row`` to ``first_row + table.num_rows`` of ``file`` (row group ``group``)."""

    file: SourceFile
    group: int
    first_row: int
    table: pa.Table


def blocks(
    file: SourceFile, parquet: pq.ParquetFile, columns: Sequence[str] | None = None
) -> Iterator[Block]:
    """The row groups of ``file`` (opened as ``parquet``), in order, of ``columns``
    (``None``: every column); one row group in memory at a time."""
    first = 0
    for group in range(parquet.num_row_groups):
        table = file.read(parquet, group, columns)
        yield Block(file, group, first, table)
        first += table.num_rows
