"""What statistics were computed from: the files of a dataset, and of the datasets merged in.

A :class:`Fingerprint` names a dataset's source, its root, and every file with its size
and modification time, with a sha256 over that list (the flows' cache key). Statistics
updated with more partitions keep the earlier datasets in ``history``, so that a file is
never counted twice (:meth:`Fingerprint.counted`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FileEntry", "Fingerprint"]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file: its path below the dataset's root, its size in bytes, its modification
    time (seconds since the epoch; ``None`` where the filesystem gives none)."""

    path: str
    size: int
    mtime: float | None

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime": self.mtime}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The files of one dataset (and, in ``history``, of the datasets merged before it)."""

    source: str
    root: str
    sha256: str
    files: tuple[FileEntry, ...]
    history: tuple[Fingerprint, ...] = ()

    @classmethod
    def of(cls, source: str, root: str, files: Iterable[FileEntry]) -> Fingerprint:
        """A dataset's fingerprint; ``sha256`` covers the files' paths, sizes and times."""
        entries = tuple(files)
        listed = json.dumps([f.to_json() for f in entries], sort_keys=True)
        return cls(source, root, hashlib.sha256(listed.encode()).hexdigest(), entries)

    def counted(self) -> dict[tuple[str, int], str]:
        """Every file of this dataset and its history, as (location, size) -> source.

        A file is identified by its full location (root and relative path) and size:
        append-only partitions keep both.
        """
        return {
            (f"{part.root.rstrip('/')}/{f.path}", f.size): part.source
            for part in (self, *self.history)
            for f in part.files
        }

    def after(self, earlier: Fingerprint) -> Fingerprint:
        """This dataset's fingerprint with ``earlier`` (and its history) merged in before it."""
        flat = (*earlier.history, earlier.without_history(), *self.history)
        return Fingerprint(self.source, self.root, self.sha256, self.files, flat)

    def without_history(self) -> Fingerprint:
        return Fingerprint(self.source, self.root, self.sha256, self.files)

    def to_json(self) -> dict[str, Any]:
        """The artifact's ``dataset`` entry (``history`` only when there is one)."""
        doc: dict[str, Any] = {
            "source": self.source,
            "root": self.root,
            "sha256": self.sha256,
            "files": [f.to_json() for f in self.files],
        }
        if self.history:
            doc["history"] = [part.to_json() for part in self.history]
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Fingerprint:
        """The inverse of :meth:`to_json` (of a document already validated)."""
        return cls(
            doc["source"],
            doc["root"],
            doc["sha256"],
            tuple(FileEntry(f["path"], int(f["size"]), f.get("mtime")) for f in doc.get("files", [])),
            tuple(cls.from_json(part) for part in doc.get("history", [])),
        )
