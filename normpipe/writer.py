"""Writing the normalized dataset: per-file transform and the commit protocol.

Every input file becomes one output file at the same relative path (so hive
partition directories are kept) with the same row groups and row order. One rule
holds on every filesystem: the ``_SUCCESS`` manifest (JSON: every part with its size
and input/output row counts, the stats artifact's sha256) is written last, and a
reader accepts an output only when its manifest is present and matches the parts
(:func:`normpipe.dataset.discover` checks it).

On a local filesystem the output is written into a temporary sibling directory and
renamed into place, so an earlier output stays whole until the new one is complete.
Object stores have no rename: the run writes a ``_STARTED`` marker, removes the
previous manifest and every stale part below the prefix (of an earlier output, or of
an interrupted run), writes the parts under the final prefix, then ``_SUCCESS``, then
removes the marker. An interrupted run leaves no manifest (readers refuse the prefix)
and the next run cleans up after it. A prefix with objects but neither marker is not
normpipe's, and is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.dataset import STARTED, SUCCESS, Dataset, SourceFile, check_file_schema
from normpipe.errors import InputError, OutputError
from normpipe.mappers import GroupedScalers, OutputDtype, output_schema, transform_table
from normpipe.scalers import FittedScaler
from normpipe.storage import Location, locate, storage_errors

__all__ = [
    "STARTED",
    "STATS_SHA256_KEY",
    "SUCCESS",
    "check_output",
    "check_replaceable",
    "commit",
    "committed_output",
    "destination",
    "local_path",
    "output_lock",
    "transform_file",
    "write_manifest",
]

# SUCCESS: the manifest; STARTED: marker of a run in progress on an object store
# (removed once _SUCCESS is written). Defined with the reader's check in normpipe.dataset.
#: Footer key that names the sha256 of the stats artifact used for the transform.
STATS_SHA256_KEY = b"normpipe.stats_sha256"


def local_path(location: str | os.PathLike[str], what: str) -> Path:
    """An absolute local path from a path or a ``file://`` URL."""
    text = os.fspath(location)
    if "://" in text:
        protocol = text.split("://", 1)[0]
        if protocol not in ("file", "local"):
            raise OutputError(
                f"{text}: {what} must be on the local filesystem (got {protocol}://); "
                "write locally and copy, or use a mounted path"
            )
        text = text.split("://", 1)[1]
    return Path(text).expanduser().absolute()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(output: Path | Location, dataset: Dataset, overwrite: bool) -> None:
    """Refuse an output inside the input, around it, or over data not written by normpipe."""
    if isinstance(output, Location):
        if output.is_local:
            output = Path(output.path)
        else:
            _check_remote_output(output, dataset, overwrite)
            return
    if dataset.is_local:
        scope = Path(dataset.scope)
        if _within(output.resolve(), scope.resolve()):
            raise OutputError(
                f"output {output} lies inside the input {scope}; choose a directory outside the input"
            )
        if _within(scope.resolve(), output.resolve()):
            raise OutputError(
                f"output {output} contains the input {scope}; choose a directory that does not hold the input"
            )
    check_replaceable(output, overwrite)


def check_replaceable(output: Path, overwrite: bool) -> None:
    """Refuse an existing ``output`` unless ``overwrite``, and never replace a directory
    normpipe did not write (one without ``_SUCCESS``)."""
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise OutputError(
                f"{output} already exists; pass --overwrite to replace it, or choose another --output"
            )
        if not output.is_dir():
            raise OutputError(f"{output} exists and is not a directory; remove it or choose another --output")
        if any(output.iterdir()) and not (output / SUCCESS).is_file():
            raise OutputError(
                f"{output} is not a normpipe output (no {SUCCESS}); refusing to replace it. "
                "Remove it yourself or choose another --output"
            )


def _check_remote_output(output: Location, dataset: Dataset, overwrite: bool) -> None:
    if not dataset.is_local and type(dataset.fs) is type(output.fs):
        scope = dataset.scope.rstrip("/")
        if output.path == scope or output.path.startswith(scope + "/"):
            raise OutputError(f"output {output} lies inside the input {dataset.source}; choose another place")
        if scope.startswith(output.path + "/"):
            raise OutputError(f"output {output} contains the input {dataset.source}; choose another place")
    _remote_state(output, overwrite)


def _remote_state(output: Location, overwrite: bool) -> list[str]:
    """The objects below ``output`` that a new run may remove; refuses a complete output
    without ``overwrite`` and a prefix that normpipe did not write."""
    with storage_errors(output.url, "write"):
        bucket = output.path.split("/", 1)[0]
        try:
            output.fs.info(bucket)  # refused credentials raise here, before anything is written
        except FileNotFoundError:
            raise FileNotFoundError(f"The specified bucket does not exist: {bucket}") from None
        existing = list(output.fs.find(output.path)) if output.fs.isdir(output.path) else []
    names = {posixpath.relpath(p, output.path) for p in existing}
    if SUCCESS in names and not overwrite:
        raise OutputError(f"{output} already exists; pass --overwrite to replace it, or choose another place")
    if existing and SUCCESS not in names and STARTED not in names:
        raise OutputError(
            f"{output} is not a normpipe output (no {SUCCESS}); refusing to replace it. "
            "Remove it yourself or choose another --output"
        )
    return existing


@contextmanager
def _committed_remote(output: Location, overwrite: bool) -> Iterator[Location]:
    """The object-store side of the protocol (see the module docstring)."""
    existing = _remote_state(output, overwrite)
    started = output.child(STARTED)
    started.write_bytes(json.dumps({"run": uuid.uuid4().hex, "started": _now()}).encode())
    with storage_errors(output.url, "write"):
        success = posixpath.join(output.path, SUCCESS)
        if success in existing:
            output.fs.rm_file(success)  # from here on the previous output is not valid
        stale = [p for p in existing if p not in (success, started.path)]
        if stale:
            output.fs.rm(stale)
    try:
        yield output
    except BaseException:
        with contextlib.suppress(Exception):  # best effort; the next run cleans up otherwise
            written = [p for p in output.fs.find(output.path) if p != started.path]
            if written:
                output.fs.rm(written)
            output.fs.rm_file(started.path)
        raise
    with storage_errors(output.url, "write"):
        output.fs.rm_file(started.path)


@contextmanager
def commit(output: Location, overwrite: bool) -> Iterator[Location]:
    """Write an output under the commit protocol: yields where to write (a temporary
    directory locally, the final prefix on an object store); write ``_SUCCESS`` last."""
    if output.is_local:
        with committed_output(Path(output.path)) as tmp:
            yield Location(output.fs, str(tmp), str(tmp))
        return
    with _committed_remote(output, overwrite) as target:
        yield target


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` (``.NAME.normpipe-lock`` beside it).

    Two runs writing the same output cannot overlap: the second fails at once with
    :class:`OutputError`. The lock is an ``flock``, released by the OS if the process
    dies, so a killed run never leaves a stale lock. The lock file itself stays.
    """
    path = output.parent / f".{output.name}.normpipe-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"another normpipe run is writing {output} (it holds {path.name}); "
                "wait for it to finish or choose another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _recover(output: Path) -> None:
    """Clean up after runs that died while writing ``output`` (call under its lock).

    A run killed between moving the old output aside and moving the new one in left
    the old, complete output as ``.NAME.normpipe-old-*``: the newest is put back. Temporary
    directories of killed runs are removed.
    """
    old = sorted(output.parent.glob(f".{output.name}.normpipe-old-*"), key=lambda p: p.stat().st_mtime)
    if not output.exists() and old and (old[-1] / SUCCESS).is_file():
        old.pop().rename(output)
    for leftover in [*old, *output.parent.glob(f".{output.name}.normpipe-tmp-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def committed_output(output: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success move it to ``output``.

    The caller writes everything, ``_SUCCESS`` last, into the yielded directory. An
    existing ``output`` is swapped out only after the new one is complete. The whole
    write holds :func:`output_lock`, and first cleans up what killed runs left.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(output):
        _recover(output)
        tag = uuid.uuid4().hex[:12]
        tmp = output.parent / f".{output.name}.normpipe-tmp-{tag}"
        tmp.mkdir()
        try:
            yield tmp
            if output.exists():
                old = output.parent / f".{output.name}.normpipe-old-{tag}"
                output.rename(old)
                tmp.rename(output)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(output)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def destination(root: Path, relpath: str) -> Path:
    """``root / relpath``, refusing any relative path that would leave ``root``."""
    parts = PurePosixPath(relpath).parts
    if not parts or relpath.startswith("/") or ".." in parts:
        raise OutputError(f"refusing to write {relpath!r}: it would leave the output directory {root}")
    return root.joinpath(*parts)


def transform_file(
    file: SourceFile,
    fs: fsspec.AbstractFileSystem | None,
    dest_root: Location,
    scalers: Mapping[str, FittedScaler],
    dtype: OutputDtype,
    stats_sha256: str,
    groups: GroupedScalers | None = None,
) -> dict[str, Any]:
    """Normalize one Parquet file into ``dest_root/<relpath>``, row group by row group
    (each row with its group's parameters when ``groups`` is given).

    Returns the manifest entry: relative path, input rows, rows written, bytes.
    """
    parquet = file.open(fs)
    schema = parquet.schema_arrow
    check_file_schema(file.path, schema, scalers)
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
            sink: Any = str(dest)
        else:
            stack.enter_context(storage_errors(dest_root.url, "write"))
            sink = stack.enter_context(dest_root.fs.open(dest.as_posix(), "wb"))
        blocks = (
            transform_table(file.read(parquet, i), scalers, dtype, groups, file.path).replace_schema_metadata(
                metadata
            )
            for i in range(parquet.num_row_groups)
        )
        first = next(blocks, None)  # the codecs are chosen on the first row group
        leaves = [parquet.schema.column(i).path for i in range(len(parquet.schema))]
        codecs = _codecs(first, leaves) if first is not None else SNAPPY
        with pq.ParquetWriter(
            sink, target_schema, compression=codecs, use_dictionary=dictionary_columns
        ) as out:
            for block in itertools.chain([first] if first is not None else [], blocks):
                out.write_table(block, row_group_size=max(block.num_rows, 1))
                written += block.num_rows
    pa.default_memory_pool().release_unused()
    if dest_root.is_local:
        written = pq.ParquetFile(dest).metadata.num_rows
        size = dest.stat().st_size
    else:
        with storage_errors(dest_root.url, "write"):
            size = int(dest_root.fs.size(dest.as_posix()))
    return {"path": file.relpath, "rows_in": parquet.metadata.num_rows, "rows_out": written, "bytes": size}


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


def _dictionary_encoded(parquet: pq.ParquetFile, scalers: Mapping[str, FittedScaler]) -> list[str]:
    """The copied columns the input stored with a dictionary: they keep it. Normalized
    columns, and columns the input stored plain, are written plain (trying a dictionary
    on high-cardinality values is costly and the writer then falls back to plain)."""
    meta = parquet.metadata
    if meta.num_row_groups == 0:
        return []
    group = meta.row_group(0)
    names = []
    for i in range(group.num_columns):
        column = group.column(i)
        name = column.path_in_schema
        if name in scalers or "." in name:
            continue
        if any("DICTIONARY" in encoding for encoding in column.encodings):
            names.append(name)
    return names


def write_manifest(
    directory: Path | Location, files: list[dict[str, Any]], stats_sha256: str, source: str
) -> dict[str, Any]:
    """Write ``_SUCCESS``: per-file and total row counts; returns the manifest."""
    rows_in = sum(f["rows_in"] for f in files)
    rows_out = sum(f["rows_out"] for f in files)
    mismatched = [f["path"] for f in files if f["rows_in"] != f["rows_out"]]
    if mismatched:  # pragma: no cover - a writer bug, never bad input
        raise OutputError(f"row counts differ after writing {mismatched[0]}; the output was discarded")
    manifest = {
        "format": "normpipe.success",
        "version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "stats_sha256": stats_sha256,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "files": files,
    }
    target = directory if isinstance(directory, Location) else locate(str(directory))
    target.child(SUCCESS).write_bytes((json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
