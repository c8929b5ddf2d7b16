"""The commit protocol of normpipe's outputs: both sides of it, and the manifest.

Every output (a normalized dataset, predictions, a model, a comparison report) appears
whole or not at all. One rule holds on every filesystem: the ``_SUCCESS`` manifest
(JSON: every part with its size, its input's size and row counts, the stats artifact's
sha256) is written last, and a reader accepts an output only when its manifest is
present and matches the parts (:func:`check_committed`, called by
:func:`normpipe.dataset.discover`).

On a local filesystem the output is written into a temporary sibling directory and
renamed into place (:func:`committed_output`), so an earlier output stays whole until the
new one is complete; an ``flock`` keeps two runs off one output. An append builds the new
directory from hard links of the committed parts (no data copied) plus the new parts, and
swaps it in the same way: a killed append leaves the output as it was.

Object stores have no rename. A run claims the prefix with the lease ``_STARTED`` (a
conditional create, see :mod:`normpipe.lease`: a second run fails at once naming the
holder). A normalized dataset there is *versioned*: each full write goes below its own
prefix ``_versions/v-<time>-<id>/`` (parts, ``_SUCCESS``), and the small pointer object
``_CURRENT`` is switched to it last (one PUT), so readers see the previous version until
the new one is complete; older versions beyond ``keep_versions`` are then removed. A plain
reader reads ``_CURRENT``'s ``version`` and the prefix ``_versions/<version>/``. An append writes
its new parts into the current version and replaces that version's ``_SUCCESS`` last: a
version is read by its manifest, so parts not listed (in flight, or left by a killed
append) are not part of it, and the next run removes them. Other outputs on object stores
(models) are written in place under the lease, ``_SUCCESS`` last. A prefix with objects
but none of these markers is not normpipe's, and is never touched.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from normpipe.errors import InputError, OutputError, first_problem
from normpipe.lease import MARKER, Lease, hold_lease
from normpipe.storage import Location, locate, marker_exists, read_marker, storage_errors

if TYPE_CHECKING:  # the dataset module calls this one's reader side
    from normpipe.dataset import Dataset, SourceFile

__all__ = [
    "POINTER",
    "STARTED",
    "SUCCESS",
    "VERSIONS",
    "Manifest",
    "ManifestEntry",
    "Target",
    "check_committed",
    "check_output",
    "check_replaceable",
    "commit",
    "committed",
    "committed_output",
    "current",
    "destination",
    "local_path",
    "output_lock",
    "parse_manifest",
    "read_pointer",
    "version_path",
    "write_manifest",
]

#: The manifest, written last.
SUCCESS = "_SUCCESS"
#: The lease of a run in progress on an object store (removed once ``_SUCCESS`` is written).
STARTED = MARKER
#: The pointer of a versioned output: names the current version.
POINTER = "_CURRENT"
#: Where a versioned output's versions are: ``_versions/v-<time>-<id>/`` (hidden from
#: readers pointed at the output's root, which would otherwise read every version).
VERSIONS = "_versions"
#: The names below a version (or an output) that are not parts.
_RESERVED = (SUCCESS, "_stats.json", "_report.html")


# ----------------------------------------------------------------------------- the manifest
class _ManifestModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class ManifestEntry(_ManifestModel):
    """One part of a normpipe output: its path below the root, row counts and size."""

    path: str = Field(min_length=1)
    rows_in: int = Field(ge=0)
    rows_out: int = Field(ge=0)
    bytes: int | None = Field(default=None, ge=0)  # absent in the outputs of predict
    input_bytes: int | None = Field(default=None, ge=0)  # the input file's size: its identity


class Manifest(_ManifestModel):
    """The ``_SUCCESS`` manifest of a normpipe output (see the module docstring)."""

    format: Literal["normpipe.success"]
    version: int = Field(ge=1)
    rows_in: int = Field(ge=0)
    rows_out: int = Field(ge=0)
    files: list[ManifestEntry]
    stats_sha256: str | None = None
    input_root: str | None = None  # where the inputs' relative paths start

    def entries(self) -> list[dict[str, Any]]:
        """The parts as plain dictionaries (what :func:`write_manifest` takes)."""
        return [entry.model_dump(exclude_none=True) for entry in self.files]


class _Pointer(_ManifestModel):
    format: Literal["normpipe.current"]
    version: str = Field(pattern=r"^v-[0-9A-Za-z-]+$")


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
    directory: Path | Location,
    files: list[dict[str, Any]],
    stats_sha256: str,
    source: str,
    input_root: str | None = None,
) -> dict[str, Any]:
    """Write ``_SUCCESS``: per-file and total row counts; returns the manifest."""
    rows_in = sum(f["rows_in"] for f in files)
    rows_out = sum(f["rows_out"] for f in files)
    mismatched = [f["path"] for f in files if f["rows_in"] != f["rows_out"]]
    if mismatched:  # pragma: no cover - a writer bug, never bad input
        raise OutputError(f"row counts differ after writing {mismatched[0]}; the output was discarded")
    manifest = {
        "format": "normpipe.success",
        "version": 2,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        **({"input_root": input_root} if input_root is not None else {}),
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
def read_pointer(fs: fsspec.AbstractFileSystem, root: str, where: str) -> str | None:
    """The current version that ``root/_CURRENT`` names (``None``: not a versioned output).

    Raises
    ------
    InputError
        The pointer is damaged.
    """
    try:
        data = read_marker(fs, posixpath.join(root, POINTER))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return _Pointer.model_validate(json.loads(data)).version
    except (ValueError, UnicodeDecodeError):  # a ValidationError is a ValueError
        raise InputError(
            f"{where}: {POINTER} is damaged (not a normpipe version pointer); rerun the job that writes it"
        ) from None


def version_path(root: str, version: str) -> str:
    """The prefix of ``version`` of the versioned output at ``root``."""
    return posixpath.join(root, VERSIONS, version)


def current(location: Location) -> Location:
    """Where the committed files of an output are: its current version when it is
    versioned (see the module docstring), else the location itself."""
    with storage_errors(location.url, "read"):
        version = read_pointer(location.fs, location.path, location.url)
    return location.child(f"{VERSIONS}/{version}") if version else location


def committed(output: Location) -> tuple[Location, Manifest] | None:
    """The committed output at ``output``: where its files are and its manifest
    (``None``: nothing there, or not a normpipe dataset output)."""
    root = current(output)
    manifest = _manifest_at(root)
    return None if manifest is None else (root, manifest)


def check_committed(
    fs: fsspec.AbstractFileSystem,
    root: str,
    infos: dict[str, dict[str, Any]],
    files: list[SourceFile],
    text: str,
    whole: bool,
    versioned: bool = False,
) -> list[SourceFile]:
    """The files of a listing to read. A normpipe output is read only when its
    ``_SUCCESS`` manifest is present and matches the parts (``whole``: the source is the
    output's root, so every part must be there and no other; ``versioned``: ``root`` is
    a version, read by its manifest: parts it does not list are not part of it). Other
    datasets (no manifest, or another tool's) pass as they are."""
    success, started = posixpath.join(root, SUCCESS), posixpath.join(root, STARTED)
    has_success = success in infos or (not whole and marker_exists(fs, success))
    if not has_success:
        if versioned:
            raise InputError(
                f"{text}: {POINTER} names a version without {SUCCESS}; the output is damaged; "
                "rerun the job that writes it"
            )
        if started in infos or (not whole and marker_exists(fs, started)):
            raise InputError(
                f"{text}: an incomplete normpipe output (a run is writing it, or was interrupted: "
                f"{STARTED} and no {SUCCESS}); wait for it, or rerun the job that writes it"
            )
        return files
    manifest = parse_manifest(read_marker(fs, success), f"{text}: {SUCCESS}")
    if manifest is None:
        return files
    listed = {entry.path: entry.bytes for entry in manifest.files}
    if versioned:
        files = [file for file in files if file.relpath in listed]
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
    return files


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
    """The objects below ``output``; refuses a complete output without ``overwrite`` and a
    prefix that normpipe did not write."""
    with storage_errors(output.url, "write"):
        bucket = output.path.split("/", 1)[0]
        try:
            output.fs.info(bucket)  # refused credentials raise here, before anything is written
        except FileNotFoundError:
            raise FileNotFoundError(f"The specified bucket does not exist: {bucket}") from None
        existing = list(output.fs.find(output.path)) if output.fs.isdir(output.path) else []
    names = {posixpath.relpath(p, output.path) for p in existing}
    if (SUCCESS in names or POINTER in names) and not overwrite:
        raise OutputError(f"{output} already exists; pass --overwrite to replace it, or choose another place")
    if existing and not names & {SUCCESS, STARTED, POINTER}:
        raise OutputError(
            f"{output} is not a normpipe output (no {SUCCESS}); refusing to replace it. "
            "Remove it yourself or choose another --output"
        )
    return existing


@dataclass(frozen=True)
class Target:
    """Where a run writes its output (``_SUCCESS`` last) and, when it appends, the
    manifest committed so far: the new manifest lists those parts and the new ones."""

    where: Location
    previous: Manifest | None = None
    lease: Lease | None = None

    def write_manifest(
        self, files: list[dict[str, Any]], stats_sha256: str, source: str, input_root: str | None = None
    ) -> dict[str, Any]:
        """Write ``_SUCCESS`` (see :func:`write_manifest`). On an object store the lease is
        read afresh and renewed first: a run that lost it (stalled past its term while
        another took the output over) writes no manifest, which for an append is the commit."""
        if self.lease is not None:
            _confirm(self.where, self.lease)
        return write_manifest(self.where, files, stats_sha256, source, input_root)


@contextmanager
def commit(
    output: Location, overwrite: bool, append: bool = False, keep_versions: int | None = None
) -> Iterator[Target]:
    """Write an output under the commit protocol (see the module docstring).

    ``append``: keep the committed parts and add to them (the target says which are
    committed). ``keep_versions``: on an object store, write a versioned output and keep
    this many versions; ``None`` writes in place under the lease (models).
    """
    if output.is_local:
        path = Path(output.path)
        with committed_output(path, keep=append) as tmp:
            previous = _manifest_at(output) if append else None
            yield Target(Location(output.fs, str(tmp), str(tmp)), previous)
        return
    if keep_versions is None:
        with _committed_remote(output, overwrite) as target:
            yield Target(target)
        return
    with _committed_versions(output, overwrite or append, append, keep_versions) as versioned:
        yield versioned


def _manifest_at(root: Location) -> Manifest | None:
    success = root.child(SUCCESS)
    with storage_errors(success.url, "read"):
        try:
            data = read_marker(success.fs, success.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
    return parse_manifest(data, success.url)


@contextmanager
def _committed_remote(output: Location, overwrite: bool) -> Iterator[Location]:
    """An output written in place under the lease: the previous one is invalid from the
    start (its manifest is removed first), the new one valid once ``_SUCCESS`` is written."""
    _remote_state(output, overwrite)  # refused before anything is claimed or written
    with hold_lease(output) as lease:
        started = lease.marker
        existing = _remote_state(output, overwrite)  # again, now that no other run writes here
        with storage_errors(output.url, "write"):
            success = posixpath.join(output.path, SUCCESS)
            if success in existing:
                output.fs.rm_file(success)  # from here on the previous output is not valid
            _remove(output, [p for p in existing if p not in (success, started.path)])
        try:
            yield output
            _check_lease(output, lease.lost)
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the next run cleans up otherwise
                if lease.lost is None:
                    _remove(output, [p for p in output.fs.find(output.path) if p != started.path])
                    output.fs.rm_file(started.path)
            raise
        with storage_errors(output.url, "write"):
            output.fs.rm_file(started.path)


def _confirm(output: Location, lease: Lease) -> None:
    """Still the holder of ``lease`` (read afresh, and renewed), else :class:`OutputError`."""
    with storage_errors(output.url, "write"):
        lease.renew()
    _check_lease(output, lease.lost)


def _check_lease(output: Location, lost: str | None) -> None:
    if lost is not None:
        raise OutputError(
            f"{output}: this run stalled past its lease and {lost} took the output over; "
            "its parts are not committed: run it again"
        )


def _remove(output: Location, paths: list[str]) -> None:
    if paths:
        with storage_errors(output.url, "write"):
            output.fs.rm(paths)


def _version_name() -> str:
    return f"v-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:6]}"


def _versions(output: Location, existing: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The objects of each version below ``output``, and the other objects (an output
    written before versions, or markers)."""
    versions: dict[str, list[str]] = {}
    other = []
    for path in existing:
        parts = posixpath.relpath(path, output.path).split("/", 2)
        if len(parts) == 3 and parts[0] == VERSIONS:
            versions.setdefault(parts[1], []).append(path)
        else:
            other.append(path)
    return versions, other


@contextmanager
def _committed_versions(output: Location, replace: bool, append: bool, keep: int) -> Iterator[Target]:
    """The versioned protocol on an object store (see the module docstring)."""
    _remote_state(output, replace)  # refused before anything is claimed or written
    with hold_lease(output) as lease:
        existing = _remote_state(output, replace)
        with storage_errors(output.url, "read"):
            current_version = read_pointer(output.fs, output.path, output.url)
        versions, other = _versions(output, existing)
        if append and current_version is None and posixpath.join(output.path, SUCCESS) in other:
            raise OutputError(
                f"{output} was written before outputs were versioned; rewrite it once without --append"
            )
        abandoned = _abandoned(output, versions, current_version)
        _remove(output, [path for name in abandoned for path in versions.pop(name)])
        previous = None
        if append and current_version is not None:
            where = output.child(f"{VERSIONS}/{current_version}")
            previous = _manifest_at(where)
            if previous is None:
                raise OutputError(f"{where}: the current version has no {SUCCESS}; rewrite the output")
            kept = {
                posixpath.join(where.path, name) for name in [*(e.path for e in previous.files), *_RESERVED]
            }
            stale = [p for p in versions.get(current_version, []) if p not in kept]  # a killed append's
            _remove(output, stale)
        else:
            where, kept = output.child(f"{VERSIONS}/{_version_name()}"), set()
        try:
            yield Target(where, previous, lease)
            _confirm(output, lease)
            if previous is None:  # the switch: one PUT
                pointer = {
                    "format": "normpipe.current",
                    "version": posixpath.basename(where.path),
                    "created": _now(),
                }
                output.child(POINTER).write_bytes((json.dumps(pointer, indent=2) + "\n").encode())
        except BaseException:
            with contextlib.suppress(Exception):  # best effort; the next run cleans up otherwise
                if lease.lost is None:
                    _remove(output, [p for p in output.fs.find(where.path) if p not in kept])
                    output.fs.rm_file(lease.marker.path)
            raise
        if previous is None:
            with contextlib.suppress(Exception):  # committed; the next run removes what is left
                _retain(output, posixpath.basename(where.path), versions, other, keep)
        with storage_errors(output.url, "write"):
            output.fs.rm_file(lease.marker.path)


def _has_manifest(output: Location, name: str, paths: list[str]) -> bool:
    return posixpath.join(version_path(output.path, name), SUCCESS) in paths


def _abandoned(output: Location, versions: dict[str, list[str]], now: str | None) -> list[str]:
    """The versions that killed runs left: never switched to (newer than the current
    one ``now``), or without a manifest."""
    return [
        name
        for name, paths in versions.items()
        if name != now and (now is None or name > now or not _has_manifest(output, name, paths))
    ]


def _retain(output: Location, now: str, versions: dict[str, list[str]], other: list[str], keep: int) -> None:
    """After ``now`` became current: keep it and the ``keep - 1`` newest versions before
    it; remove the rest and what an output written before versions left."""
    older = sorted(
        (name for name in versions if name < now and _has_manifest(output, name, versions[name])),
        reverse=True,
    )
    dropped = older[keep - 1 :]
    keep_paths = {posixpath.join(output.path, name) for name in (POINTER, STARTED)}
    _remove(
        output,
        [p for name in dropped for p in versions[name]] + [p for p in other if p not in keep_paths],
    )


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
def committed_output(output: Path, keep: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success move it to ``output``.

    The caller writes everything, ``_SUCCESS`` last, into the yielded directory (with
    ``keep``, it already holds hard links of ``output``'s files except ``_SUCCESS``: an
    append adds to them). An existing ``output`` is swapped out only after the new one is
    complete. The whole write holds :func:`output_lock`, and first cleans up what killed
    runs left.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(output):
        _recover(output)
        tag = uuid.uuid4().hex[:12]
        tmp = output.parent / f".{output.name}.normpipe-tmp-{tag}"
        tmp.mkdir()
        try:
            if keep and output.is_dir():
                _link_tree(output, tmp)
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


def _link_tree(source: Path, target: Path) -> None:
    """Hard links in ``target`` of every file below ``source`` but its ``_SUCCESS`` (a
    copy where the filesystem has no hard links). Nothing writes into a linked file: new
    files are new paths, and whole-file writes replace the link (temporary file, rename)."""
    for directory, _, names in os.walk(source):
        rel = Path(directory).relative_to(source)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in names:
            if rel == Path(".") and name == SUCCESS:
                continue
            try:
                os.link(Path(directory, name), target / rel / name)
            except OSError:
                shutil.copy2(Path(directory, name), target / rel / name)


def destination(root: Path, relpath: str) -> Path:
    """``root / relpath``, refusing any relative path that would leave ``root``."""
    parts = PurePosixPath(relpath).parts
    if not parts or relpath.startswith("/") or ".." in parts:
        raise OutputError(f"refusing to write {relpath!r}: it would leave the output directory {root}")
    return root.joinpath(*parts)
