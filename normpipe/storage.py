"""Where outputs and artifacts live: a local path, or any fsspec URL (``s3://``, ``gs://``...).

Object stores have no atomic directory rename, so normpipe's outputs follow one commit
protocol everywhere (see :mod:`normpipe.commit`): the ``_SUCCESS`` manifest, which lists
every part with its size and row count, is written last, and readers accept an output
only when its manifest is present and matches. This module holds the filesystem
plumbing: opening a location, whole-object reads and writes, and turning storage
failures (missing bucket, refused credentials, unreachable endpoint) into one clear
line. Credentials come from the standard environment variables or ``storage_options``
and never appear in a message.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from normpipe.errors import InputError, NormpipeError, OutputError

__all__ = ["Location", "is_remote", "locate", "storage_errors"]


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` is a URL of a non-local filesystem."""
    text = os.fspath(location)
    return "://" in text and text.split("://", 1)[0] not in ("file", "local")


class Location:
    """A directory or file on some filesystem: ``fs`` and ``path`` (fsspec's form,
    without the protocol for object stores), and ``url`` as the user wrote it."""

    __slots__ = ("fs", "path", "url")

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
        self.fs = fs
        self.path = path.rstrip("/") or "/"
        self.url = url.rstrip("/") or url

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def child(self, relpath: str) -> Location:
        """The location ``relpath`` below this one (``/``-separated)."""
        return Location(self.fs, posixpath.join(self.path, relpath), f"{self.url}/{relpath}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def read_bytes(self) -> bytes:
        with storage_errors(self.url, "read"):
            data: bytes = self.fs.cat_file(self.path)
            return data

    def write_bytes(self, data: bytes) -> None:
        """Write a whole file: atomically (a temporary file, then rename) on a local
        filesystem; as one object (a single PUT, never seen half written) elsewhere."""
        with storage_errors(self.url, "write"):
            if not self.is_local:
                self.fs.pipe_file(self.path, data)
                return
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def exists(self) -> bool:
        with storage_errors(self.url, "read"):
            return bool(self.fs.exists(self.path))


def read_marker(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """A whole small object that other processes create, replace and remove (the commit
    protocol's manifests, pointer and lease), read as it is now: fsspec caches directory
    listings, and s3fs answers ``info`` (and so ``cat_file``) from a cached listing that
    may predate the object. Raises ``FileNotFoundError`` when it is not there."""
    fs.invalidate_cache(path)
    return bytes(fs.cat_file(path))


def forget_listings(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Drop what ``fs`` cached of the listings at, above and below ``path``: a dataset is
    listed afresh, and the details of its files (s3fs checks them on every read) then
    come from that listing, not from one made before another process rewrote them."""
    fs.invalidate_cache(path)
    cache = getattr(fs, "dircache", None)
    if cache:
        below = path.rstrip("/") + "/"
        for key in [key for key in list(cache) if str(key).startswith(below)]:
            cache.pop(key, None)


def marker_exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """``fs.exists(path)``, past fsspec's listing cache (see :func:`read_marker`)."""
    fs.invalidate_cache(path)
    return bool(fs.exists(path))


def locate(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Location:
    """A :class:`Location` for a local path or URL (``storage_options`` go to fsspec)."""
    text = os.fspath(location)
    try:
        fs, path = fsspec.core.url_to_fs(text, **(storage_options or {}))
    except ImportError as err:
        raise NormpipeError(f"{text}: this storage needs an extra package ({err}); install it") from None
    except (ValueError, TypeError) as err:
        raise NormpipeError(f"{text}: cannot open this location ({err})") from None
    if isinstance(fs, LocalFileSystem):
        path = os.path.abspath(os.path.expanduser(path))
        text = path
    return Location(fs, path, text)


def _reason(err: BaseException) -> str:
    """A short reason without request details (no keys, no signatures)."""
    for cause in (err, err.__cause__):
        response = getattr(cause, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])  # e.g. InvalidAccessKeyId, NoSuchBucket
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:160]


@contextmanager
def storage_errors(location: str, action: str) -> Iterator[None]:
    """Turn storage failures into one :class:`NormpipeError` line naming ``location``."""
    error_type: type[NormpipeError] = InputError if action == "read" else OutputError
    try:
        yield
    except NormpipeError:
        raise
    except FileNotFoundError as err:
        reason = _reason(err)
        if "bucket" in reason.lower():
            message = f"{location}: the bucket does not exist ({reason}); create it or fix the URL"
            raise error_type(message) from None
        raise error_type(f"{location}: not found ({reason}); check the path") from None
    except PermissionError as err:
        raise error_type(
            f"{location}: access denied ({_reason(err)}); check the credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, or storage_options) and their permissions"
        ) from None
    except OSError as err:
        message = f"{location}: cannot {action} ({_reason(err)}); check the URL and the endpoint"
        raise error_type(message) from None
