"""The analyze phase: one full pass over a file producing mergeable state.

Only the analyzed columns are read, one row group at a time, so memory is bounded by
the size of a row group, not of the file.
"""

from __future__ import annotations

from collections.abc import Sequence

import fsspec

from normpipe.core.column import TableState
from normpipe.dataset import SourceFile, check_file_schema

__all__ = ["analyze_file"]


def analyze_file(
    file: SourceFile, fs: fsspec.AbstractFileSystem | None, columns: Sequence[str], k: int
) -> TableState:
    """The :class:`TableState` of ``columns`` over every row of one Parquet file.

    Raises
    ------
    InputError
        The file is unreadable, or a column is missing or not numeric in it.
    """
    parquet = file.open(fs)
    check_file_schema(file.path, parquet.schema_arrow, columns)
    # A file with no row group still contributes its (empty) columns.
    state = TableState.from_block(parquet.schema_arrow.empty_table(), columns, k)
    for i in range(parquet.num_row_groups):
        block = parquet.read_row_group(i, columns=list(columns))
        state = state.merge(TableState.from_block(block, columns, k))
    return state
