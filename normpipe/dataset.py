"""Finding the Parquet files of a dataset, fingerprinting them and choosing columns.

A source is one Parquet file, a directory (searched recursively, so nested hive
partitions such as ``year=2024/part-0.parquet`` are found), or a glob; each may be
a local path or an fsspec URL (``file://``, ``s3://``, ``memory://``...). Files and
directories whose names start with ``.`` or ``_`` are skipped, as in Spark, Dask and
pyarrow. Hive partition keys stay in the directory names and are not normalized.
"""

from __future__ import annotations

import itertools
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from normpipe.commit import POINTER, check_committed, read_pointer, version_path
from normpipe.core.tensor import is_tensor_type
from normpipe.errors import InputError
from normpipe.fingerprint import FileEntry, Fingerprint
from normpipe.storage import forget_listings, storage_errors

__all__ = [
    "Dataset",
    "Footer",
    "SourceFile",
    "check_file_schema",
    "check_footers",
    "discover",
    "is_numeric",
    "listing",
    "pandas_index_columns",
    "select_columns",
]

_GLOB_CHARS = frozenset("*?[")
#: Footers read at a time by :attr:`Dataset.footers`.
FOOTER_THREADS = 16


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One Parquet file: its path in the filesystem, its path below the dataset root."""

    path: str
    relpath: str
    size: int
    mtime: float | None

    def open(self, fs: fsspec.AbstractFileSystem | None) -> pq.ParquetFile:
        """Open the file's footer, turning any failure into a clear :class:`InputError`."""
        try:
            if fs is None:
                return pq.ParquetFile(self.path)
            return pq.ParquetFile(fs.open(self.path, "rb"))
        except (pa.ArrowException, OSError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(
                f"{self.path}: not a readable Parquet file ({reason}); "
                "replace or remove it, or point the source at the good files"
            ) from None

    def read(
        self, parquet: pq.ParquetFile, group: int | None = None, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Row group ``group`` (``None``: every row) of ``columns`` (``None``: all) of this
        file, opened with :meth:`open`.

        Raises
        ------
        InputError
            The data cannot be read or decoded (damaged pages, a truncated column
            chunk): bad input, named by file, row group and column, never retried.
        """
        threads = columns is None or len(columns) > 1  # one column chunk: a thread pool only costs
        try:
            if group is None:
                return parquet.read(columns=columns, use_threads=threads)
            return parquet.read_row_group(group, columns=columns, use_threads=threads)
        except MemoryError:
            raise
        except (pa.ArrowException, OSError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            names = list(columns) if columns is not None else parquet.schema_arrow.names
            if len(names) > 1:  # which column: read them one by one (only on this error path)
                for name in names:
                    self.read(parquet, group, [name])
            where = "" if group is None else f", row group {group}"
            if len(names) == 1:
                where += f", column '{names[0]}'"
            raise InputError(
                f"{self.path}{where}: the data cannot be read ({reason}); the file is damaged: "
                "replace or remove it, or point the source at the good files"
            ) from None


@dataclass(frozen=True, slots=True)
class Footer:
    """What a file's footer says about its layout: rows and uncompressed bytes of each
    row group, and the Arrow schema (one shared object for files whose schemas agree)."""

    rows: tuple[int, ...]
    nbytes: tuple[int, ...]
    schema: pa.Schema

    @classmethod
    def of(cls, parquet: pq.ParquetFile) -> Footer:
        meta = parquet.metadata
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        return cls(
            tuple(g.num_rows for g in groups), tuple(g.total_byte_size for g in groups), parquet.schema_arrow
        )

    @property
    def num_rows(self) -> int:
        return sum(self.rows)

    @property
    def first_rows(self) -> tuple[int, ...]:
        """The number in the file of each row group's first row."""
        return tuple(itertools.accumulate(self.rows[:-1], initial=0)) if self.rows else ()


@dataclass(frozen=True)
class Dataset:
    """The files of one source, in a stable (sorted) order."""

    source: str
    root: str
    files: tuple[SourceFile, ...]
    fs: fsspec.AbstractFileSystem | None  # None: local files, read by pyarrow directly
    single_file: bool = False  # the source named one file, not a directory or glob

    @property
    def scope(self) -> str:
        """What the input occupies: the one file, or the root directory."""
        return self.files[0].path if self.single_file else self.root

    @property
    def is_local(self) -> bool:
        return self.fs is None

    def fingerprint(self) -> Fingerprint:
        """Files with sizes and modification times, and a sha256 over them."""
        return Fingerprint.of(
            self.source, self.root, (FileEntry(f.relpath, f.size, f.mtime) for f in self.files)
        )

    @cached_property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the first file (its footer is read once)."""
        return self.files[0].open(self.fs).schema_arrow

    @cached_property
    def footers(self) -> tuple[Footer, ...]:
        """Every file's :class:`Footer`, in file order, read once: local files one after
        the other (about 0.06 ms a file; threads only contend for the GIL), remote ones
        ``FOOTER_THREADS`` at a time (their reads wait on the network).

        Raises
        ------
        InputError
            A file is not Parquet (a gzip file named ``.parquet``, a truncated footer):
            the first such file in order.
        """
        first = self.schema

        def read(file: SourceFile) -> Footer:
            footer = Footer.of(file.open(self.fs))
            return replace(footer, schema=first) if footer.schema.equals(first) else footer

        if self.is_local:
            return tuple(read(file) for file in self.files)
        with ThreadPoolExecutor(max(1, min(FOOTER_THREADS, len(self.files)))) as pool:
            return tuple(pool.map(read, self.files))  # in order: the first bad file is reported


def _hidden(relpath: str) -> bool:
    return any(part.startswith((".", "_")) for part in relpath.split("/"))


def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if hasattr(value, "timestamp"):
            return float(value.timestamp())
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return None


def discover(source: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Dataset:
    """List the Parquet files of ``source``.

    Parameters
    ----------
    source : str or path
        A file, a directory, or a glob; a local path or an fsspec URL.
    storage_options : dict, optional
        Passed to fsspec for remote filesystems (credentials, endpoint).

    Raises
    ------
    InputError
        The source does not exist or holds no (non-hidden) file.
    """
    text = os.fspath(source)
    try:
        fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    except (ImportError, ValueError) as err:
        raise InputError(f"{text}: cannot open this location ({err})") from None
    local = isinstance(fs, LocalFileSystem)
    if local:
        path = os.path.abspath(path)
    with storage_errors(text, "read"):
        if not local:
            forget_listings(fs, _above_globs(path))
        root, infos, single = _list(fs, path, text)
        version = None
        if not single and posixpath.join(root.rstrip("/"), POINTER) in infos:
            version = read_pointer(fs, root.rstrip("/"), text)  # a versioned output: its current version
        if version is not None:
            root = version_path(root.rstrip("/"), version)
            infos = {name: info for name, info in infos.items() if name.startswith(root + "/")}
    return _dataset(text, fs, local, root, infos, single, versioned=version is not None)


def _above_globs(path: str) -> str:
    """The longest leading directory of ``path`` without glob characters."""
    while any(c in _GLOB_CHARS for c in path):
        path = posixpath.dirname(path)
    return path


def _list(fs: fsspec.AbstractFileSystem, path: str, text: str) -> tuple[str, dict[str, dict[str, Any]], bool]:
    """The root, every file below it with its details, and whether one file was named."""
    single = False
    if any(c in _GLOB_CHARS for c in path):
        root = _above_globs(path)
        matches = sorted(fs.glob(path))
        infos: dict[str, dict[str, Any]] = {}
        for match in matches:
            infos.update(fs.find(match, detail=True) if fs.isdir(match) else {match: fs.info(match)})
    elif fs.isdir(path):
        root = path
        infos = fs.find(path, detail=True)
    elif fs.exists(path):
        single = True
        root = posixpath.dirname(path)
        infos = {path: fs.info(path)}
    else:
        raise InputError(f"{text}: no such file or directory; check the path")
    return root, infos, single


def _dataset(
    text: str,
    fs: fsspec.AbstractFileSystem,
    local: bool,
    root: str,
    infos: dict[str, dict[str, Any]],
    single: bool,
    versioned: bool = False,
) -> Dataset:
    """The visible files of a listing, once the commit protocol's check has passed (a
    version of a versioned output: the files its manifest lists)."""
    root = root.rstrip("/") or "/"
    files = []
    for name in sorted(infos):
        info = infos[name]
        if info.get("type", "file") != "file":
            continue
        relpath = posixpath.relpath(name, root) if root != name else posixpath.basename(name)
        if _hidden(relpath):
            continue
        files.append(SourceFile(name, relpath, int(info.get("size") or 0), _mtime(info)))
    with storage_errors(text, "read"):
        whole = not single and not any(c in _GLOB_CHARS for c in text)
        files = check_committed(fs, root, infos, files, text, whole, versioned)
    if not files:
        raise InputError(
            f"{text}: no Parquet files found (names starting with '.' or '_' are skipped); "
            "check the path or glob"
        )
    return Dataset(text, root, tuple(files), None if local else fs, single)


def is_numeric(dtype: pa.DataType) -> bool:
    """Integer and floating-point columns are normalized; everything else passes through."""
    return bool(pa.types.is_integer(dtype) or pa.types.is_floating(dtype))


def listing(names: Sequence[str], limit: int = 12) -> str:
    """Names for a one-line message: the first ``limit``, then how many more."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, … ({len(names) - limit:,} more)"


def select_columns(
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    where: str = "the dataset",
    allow_none: bool = False,
) -> list[str]:
    """The numeric columns to analyze, in schema order.

    ``columns=None`` means every numeric column except stored pandas indexes. Columns
    named in ``columns`` must
    exist and be numeric; names in ``exclude`` must exist.
    """
    names = schema.names
    duplicated = sorted(n for n, times in Counter(names).items() if times > 1)
    if duplicated:
        raise InputError(
            f"{where}: column name '{duplicated[0]}' appears more than once; rename the duplicates"
        )
    index = set(pandas_index_columns(schema))
    numeric = [f.name for f in schema if is_numeric(f.type) and f.name not in index]
    for name in exclude:
        if name not in names:
            raise InputError(f"excluded column '{name}' is not in {where}; columns: {listing(names)}")
    if columns is not None:
        for name in columns:
            if name not in names:
                raise InputError(
                    f"column '{name}' is not in {where}; numeric columns: {listing(numeric) or 'none'}"
                )
            dtype = schema.field(name).type
            if not is_numeric(dtype):
                raise InputError(
                    f"column '{name}' is not numeric (got {dtype}); "
                    "exclude it or list numeric columns with --columns"
                )
        chosen = [n for n in names if n in set(columns)]
    else:
        chosen = numeric
    excluded = set(exclude)
    chosen = [n for n in chosen if n not in excluded]
    if not chosen and not allow_none:
        raise InputError(f"{where} has no numeric column to normalize; check --columns and --exclude")
    return chosen


def pandas_index_columns(schema: pa.Schema) -> list[str]:
    """Columns that store a pandas index (e.g. ``__index_level_0__``); they pass through."""
    try:
        metadata = schema.pandas_metadata or {}
    except (ValueError, TypeError):
        return []
    return [c for c in metadata.get("index_columns", []) if isinstance(c, str)]


def check_file_schema(
    path: str,
    schema: pa.Schema,
    columns: Iterable[str],
    tensors: Iterable[str] = (),
    categories: Iterable[str] = (),
) -> None:
    """Every analyzed column must be present and numeric in every file, every tensor
    column a list of numbers, and every categorical column present."""
    for name in categories:
        if schema.get_field_index(name) < 0:
            raise InputError(
                f"{path}: categorical column '{name}' is missing from this file; "
                "add it or leave it out of categories"
            )
    for name in tensors:
        index = schema.get_field_index(name)
        if index < 0:
            raise InputError(
                f"{path}: tensor column '{name}' is missing from this file; add it or leave it out of tensors"
            )
        if not is_tensor_type(schema.field(index).type):
            raise InputError(
                f"{path}: column '{name}' is {schema.field(index).type} in this file, not a list of numbers; "
                "rewrite the file so the column has one type"
            )
    for name in columns:
        if len(schema.get_all_field_indices(name)) > 1:
            raise InputError(f"{path}: column name '{name}' appears more than once; rename the duplicates")
        index = schema.get_field_index(name)
        if index < 0:
            raise InputError(
                f"{path}: column '{name}' is missing from this file but present in others; "
                "add it to the file or exclude the column"
            )
        dtype = schema.field(index).type
        if not is_numeric(dtype):
            raise InputError(
                f"{path}: column '{name}' is {dtype} in this file but numeric in others; "
                "rewrite the file so the column has one type, or exclude the column"
            )


def check_footers(
    dataset: Dataset, columns: Iterable[str], tensors: Iterable[str] = (), categories: Iterable[str] = ()
) -> None:
    """Check every file's schema (:func:`check_file_schema`) from its footer here, before
    any task runs on the cluster (:attr:`Dataset.footers`, read once per dataset).

    A file that is not Parquet or whose columns disagree with the others is reported as
    one :class:`InputError` line naming the first such file in the dataset's order.
    """
    names, tensor_names, coded = list(columns), list(tensors), list(categories)
    checked: set[int] = set()
    for file, footer in zip(dataset.files, dataset.footers, strict=True):
        if id(footer.schema) not in checked:  # files sharing the first schema: checked once
            check_file_schema(file.path, footer.schema, names, tensor_names, coded)
            if footer.schema is dataset.schema:
                checked.add(id(footer.schema))
