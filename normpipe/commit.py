"""The commit protocol of normpipe's outputs: both sides of it, and the manifest.

Every output (a normalized dataset, predictions, a model, a comparison report) appears
whole or not at all. One rule holds on every filesystem: the ``_SUCCESS`` manifest
(JSON: every part with its size and input/output row counts, the stats artifact's
sha256) is written last, and a reader accepts an output only when its manifest is
present and matches the parts (:func:`check_committed`, called by
:func:`normpipe.dataset.discover`).

On a local filesystem the output is written into a temporary sibling directory and
renamed into place (:func:`committed_output`), so an earlier output stays whole until the
new one is complete; an ``flock`` keeps two runs off one output. Object stores have no
rename: the run claims the prefix with the lease ``_STARTED`` (a conditional create, see
:mod:`normpipe.lease`: a second run fails at once naming the holder), removes the previous
manifest and every stale part below the prefix (of an earlier output, or of an
interrupted run), writes the parts under the final prefix, then ``_SUCCESS``, then removes
the marker. An interrupted run leaves no manifest (readers refuse the prefix); once its
lease has expired the next run takes the prefix over and cleans up after it.
A prefix with objects but neither marker is not normpipe's, and is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from normpipe.errors import InputError, OutputError, first_problem
from normpipe.lease import MARKER, hold_lease
from normpipe.storage import Location, locate, storage_errors

if TYPE_CHECKING:  # the dataset module calls this one's reader side
    from normpipe.dataset import Dataset, SourceFile

__all__ = [
    "STARTED",
    "SUCCESS",
    "Manifest",
    "ManifestEntry",
    "check_committed",
    "check_output",
    "check_replaceable",
    "commit",
    "committed_output",
    "destination",
    "local_path",
    "output_lock",
    "parse_manifest",
    "write_manifest",
]

#: The manifest, written last.
SUCCESS = "_SUCCESS"
#: The lease of a run in progress on an object store (removed once ``_SUCCESS`` is written).
STARTED = MARKER


# ----------------------------------------------------------------------------- the manifest
class _ManifestModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class ManifestEntry(_ManifestModel):
    """One part of a normpipe output: its path below the root, row counts and size."""

    path: str = Field(min_length=1)
    rows_in: int = Field(ge=0)
    rows_out: int = Field(ge=0)
    bytes: int | None = Field(default=None, ge=0)  # absent in the outputs of predict


class Manifest(_ManifestModel):
    """The ``_SUCCESS`` manifest of a normpipe output (see the module docstring)."""

    format: Literal["normpipe.success"]
    version: int = Field(ge=1)
    rows_in: int = Field(ge=0)
    rows_out: int = Field(ge=0)
    files: list[ManifestEntry]


def parse_manifest(data: bytes, where: str) -> Manifest | None:
    """A ``_SUCCESS`` file's content: normpipe's manifest, validated, or ``None`` for
    another tool's marker (Spark and Hadoop write an empty ``_SUCCESS``; a JSON
    document of another format is left alone too).

    Raises
    ------
    InputError
        The file is neither empty nor JSON, or a normpipe manifest lacks a key or
        has a wrong value: the output is damaged.
    """
    if not data.strip():
        return None
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        raise InputError(
            f"{where} is not valid JSON ({err}); the output is damaged; rerun the job that writes it"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != "normpipe.success":
        return None
    try:
        return Manifest.model_validate(doc)
    except ValidationError as err:
        loc, message, _ = first_problem(err)
        raise InputError(
            f"{where}: invalid manifest at '{loc}' ({message}); the output is damaged; "
            "rerun the job that writes it"
        ) from None


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
    Manifest.model_validate(manifest)  # what readers will accept: both sides agree
    target = directory if isinstance(directory, Location) else locate(str(directory))
    target.child(SUCCESS).write_bytes((json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


# ----------------------------------------------------------------------------- the reader's side
def check_committed(
    fs: fsspec.AbstractFileSystem,
    root: str,
    infos: dict[str, dict[str, Any]],
    files: list[SourceFile],
    text: str,
    whole: bool,
) -> None:
    """A normpipe output is read only when its ``_SUCCESS`` manifest is present and
    matches the parts (``whole``: the source is the output's root, so every part must
    be there and no other). Other datasets (no manifest, or another tool's) pass."""
    success, started = posixpath.join(root, SUCCESS), posixpath.join(root, STARTED)
    has_success = success in infos or (not whole and fs.exists(success))
    if not has_success:
        if started in infos or (not whole and fs.exists(started)):
            raise InputError(
                f"{text}: an incomplete normpipe output (a run is writing it, or was interrupted: "
                f"{STARTED} and no {SUCCESS}); wait for it, or rerun the job that writes it"
            )
        return
    manifest = parse_manifest(fs.cat_file(success), f"{text}: {SUCCESS}")
    if manifest is None:
        return
    listed = {entry.path: entry.bytes for entry in manifest.files}
    for file in files:
        if file.relpath not in listed:
            raise InputError(
                f"{text}: {file.relpath} is not listed in {SUCCESS}; the output was changed after "
                "it was written; rerun the job that writes it"
            )
        if listed[file.relpath] is not None and listed[file.relpath] != file.size:
            raise InputError(
                f"{text}: {file.relpath} has {file.size:,} bytes, {SUCCESS} says {listed[file.relpath]:,}; "
                "the output was changed or is incomplete; rerun the job that writes it"
            )
    if whole:
        present = {file.relpath for file in files}
        missing = [path for path in listed if path not in present]
        if missing:
            raise InputError(
                f"{text}: {missing[0]} is listed in {SUCCESS} but missing; the output is incomplete; "
                "rerun the job that writes it"
            )


# ----------------------------------------------------------------------------- the writer's side
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
    _remote_state(output, overwrite)  # refused before anything is claimed or written
    with hold_lease(output) as lease:
        started = lease.marker
        existing = _remote_state(output, overwrite)  # again, now that no other run writes here
        with storage_errors(output.url, "write"):
            success = posixpath.join(output.path, SUCCESS)
            if success in existing:
                output.fs.rm_file(success)  # from here on the previous output is not valid
            stale = [p for p in existing if p not in (success, started.path)]
            if stale:
                output.fs.rm(stale)
        try:
            yield output
            if lease.lost is not None:
                raise OutputError(
                    f"{output}: this run stalled past its lease and {lease.lost} took the output over; "
                    "its parts are not committed: run it again"
                )
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the next run cleans up otherwise
                if lease.lost is None:
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
