"""Work units: a dataset's row groups cut into tasks of about the same size in bytes,
planned from the footers before a pass.

One Dask task per file makes the layout decide the speed: 4,000 files of 500 rows are
4,000 tiny tasks (the scheduler's overhead, not the data, sets the time), and one file
of 32 row groups is one task on one core. :func:`plan` instead batches consecutive
small files into one unit and, for passes that only read (statistics, exact
quantiles), splits a large file into ranges of row groups. A unit is at most about
``target`` bytes (uncompressed, from the footers), and smaller when the dataset is small,
so that every worker thread gets several units.

Writing keeps whole files (``split=False``): each output file is written by one task,
in row order, so the output's layout is the input's; a lone large file is written
with its reading overlapped with its encoding (see :mod:`normpipe.writer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from normpipe.dataset import Footer, SourceFile

__all__ = ["DEFAULT_UNIT_BYTES", "UNITS_PER_THREAD", "Piece", "Unit", "plan"]

#: The largest unit, in uncompressed bytes (``unit_size`` in the run config).
DEFAULT_UNIT_BYTES = 128 * 2**20
#: Units per worker thread, at least, when the data can be cut that fine.
UNITS_PER_THREAD = 4


@dataclass(frozen=True, slots=True)
class Piece:
    """Row groups ``start`` to ``stop`` (exclusive) of ``file``: ``rows`` rows, the first
    of them row ``first_row`` of the file."""

    file: SourceFile
    start: int
    stop: int
    first_row: int
    rows: int


@dataclass(frozen=True, slots=True)
class Unit:
    """The pieces one task reads, in dataset order, and their uncompressed bytes."""

    pieces: tuple[Piece, ...]
    nbytes: int

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.pieces)


def plan(
    files: Sequence[SourceFile],
    footers: Sequence[Footer],
    target: int = DEFAULT_UNIT_BYTES,
    threads: int = 1,
    split: bool = True,
) -> list[Unit]:
    """Cut ``files`` (with their ``footers``) into units of at most ``target`` bytes, and
    at most ``1 / (UNITS_PER_THREAD * threads)`` of the whole: consecutive files are
    batched up to that limit; with ``split``, a larger file is cut into ranges of whole
    row groups up to it. A unit is larger only when one file (without ``split``) or one
    row group is. Every row group is in exactly one unit, in dataset order.

    Examples
    --------
    >>> import pyarrow as pa
    >>> files = [SourceFile(f"f{i}", f"f{i}", 0, None) for i in range(3)]
    >>> footers = [Footer((10,), (100,), pa.schema([])), Footer((10,), (100,), pa.schema([])),
    ...            Footer((5, 5, 5, 5), (400, 400, 400, 400), pa.schema([]))]
    >>> units = plan(files, footers, target=900)  # 1,800 bytes: at most 450 a unit
    >>> [[(p.file.path, p.start, p.stop) for p in u.pieces] for u in units]
    [[('f0', 0, 1), ('f1', 0, 1)], [('f2', 0, 1)], [('f2', 1, 2)], [('f2', 2, 3)], [('f2', 3, 4)]]
    """
    total = sum(sum(f.nbytes) for f in footers)
    limit = max(1, min(target, -(-total // (UNITS_PER_THREAD * max(threads, 1)))))
    units: list[Unit] = []
    batch: list[Piece] = []
    size = 0
    for file, footer in zip(files, footers, strict=True):
        nbytes = sum(footer.nbytes)
        if split and nbytes > limit and len(footer.rows) > 1:
            if batch:
                units.append(Unit(tuple(batch), size))
                batch, size = [], 0
            units.extend(Unit((piece,), b) for piece, b in _ranges(file, footer, limit))
            continue
        if batch and size + nbytes > limit:
            units.append(Unit(tuple(batch), size))
            batch, size = [], 0
        batch.append(Piece(file, 0, len(footer.rows), 0, footer.num_rows))
        size += nbytes
    if batch:
        units.append(Unit(tuple(batch), size))
    return units


def _ranges(file: SourceFile, footer: Footer, limit: int) -> list[tuple[Piece, int]]:
    """Consecutive row groups of ``file`` in ranges of about ``limit`` bytes (each at
    least one row group), with their bytes."""
    ranges = []
    start = first_row = rows = size = 0
    for group, (n, b) in enumerate(zip(footer.rows, footer.nbytes, strict=True)):
        if size and size + b > limit:
            ranges.append((Piece(file, start, group, first_row, rows), size))
            start, first_row, rows, size = group, first_row + rows, 0, 0
        rows += n
        size += b
    ranges.append((Piece(file, start, len(footer.rows), first_row, rows), size))
    return ranges
