"""An exclusive claim on an object-store output: the lease object ``PREFIX/_STARTED``.

Object stores have no ``flock`` and no rename, so two runs writing one prefix would mix
their parts. A run claims the prefix by creating ``_STARTED`` with a conditional create
(fsspec's exclusive mode ``"xb"``; on S3 a ``PutObject`` with ``If-None-Match: *``): of
two runs starting together exactly one gets it, and the other fails at once with one line
naming the holder (its run id, host, process and start). The lease carries an expiry,
renewed by a background thread every third of its term while the run writes. A run that
is killed stops renewing; once its lease has expired, the next run takes it over (and
cleans up what the dead run left). A holder that finds its lease taken (it stalled past
the term and another run took over) fails before its manifest is written.

The term is :data:`LEASE_SECONDS` (``NORMPIPE_LEASE_SECONDS`` overrides it): how long a
killed run blocks the next one, and how long a run may stall without losing its claim.
A store without conditional creates (fsspec raises for ``"xb"``) gets a write followed
by a read-back of the run id: best effort, said here because it is weaker.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from normpipe.errors import OutputError
from normpipe.storage import Location, marker_exists, read_marker, storage_errors

__all__ = ["LEASE_SECONDS", "MARKER", "Lease", "acquire", "hold_lease", "lease_seconds"]

#: The lease object's name below the prefix it claims.
MARKER = "_STARTED"
#: The default term of a lease, in seconds.
LEASE_SECONDS = 120.0


def lease_seconds() -> float:
    """The lease term: ``NORMPIPE_LEASE_SECONDS`` when set, else :data:`LEASE_SECONDS`."""
    value = os.environ.get("NORMPIPE_LEASE_SECONDS")
    try:
        return float(value) if value else LEASE_SECONDS
    except ValueError:
        return LEASE_SECONDS


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass
class Lease:
    """A held lease: the marker's location, this run's id and the term."""

    marker: Location
    run: str
    term: float
    started: float = field(default_factory=time.time)
    lost: str | None = None

    def document(self) -> dict[str, Any]:
        now = time.time()
        return {
            "run": self.run,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": _stamp(self.started),
            "renewed": _stamp(now),
            "expires": now + self.term,
        }

    def renew(self) -> None:
        """Extend the term, unless another run took the lease over (then ``lost``)."""
        holder = _read(self.marker)
        if holder is None or holder.get("run") != self.run:
            self.lost = _describe(holder) if holder is not None else "a run that removed the lease"
            return
        self.marker.fs.pipe_file(self.marker.path, json.dumps(self.document()).encode())


def _read(marker: Location) -> dict[str, Any] | None:
    """The lease document at ``marker`` (``None``: none, or not a lease)."""
    try:
        doc = json.loads(read_marker(marker.fs, marker.path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _describe(doc: dict[str, Any]) -> str:
    run = str(doc.get("run", "?"))[:12]
    return (
        f"run {run} on {doc.get('host', '?')} (pid {doc.get('pid', '?')}, started {doc.get('started', '?')})"
    )


def _create(marker: Location, data: bytes) -> bool:
    """Create ``marker`` only if it does not exist; whether this call created it."""
    try:
        with marker.fs.open(marker.path, "xb") as out:
            out.write(data)
        return True
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):  # no conditional create here
        if marker_exists(marker.fs, marker.path):
            return False
        marker.fs.pipe_file(marker.path, data)
        return bool(json.loads(read_marker(marker.fs, marker.path)).get("run") == json.loads(data)["run"])


def acquire(output: Location, term: float | None = None) -> Lease:
    """Claim ``output`` for this run.

    Raises
    ------
    OutputError
        Another run holds an unexpired lease (the line names it).
    """
    marker = output.child(MARKER)
    lease = Lease(marker, uuid.uuid4().hex, lease_seconds() if term is None else term)
    with storage_errors(output.url, "write"):
        for _ in range(2):  # a second try once an expired lease is removed
            if _create(marker, json.dumps(lease.document()).encode()):
                return lease
            holder = _read(marker)
            if holder is None:
                continue  # released between the two calls
            expires = holder.get("expires")
            if not isinstance(expires, int | float) or expires < time.time():
                with contextlib.suppress(FileNotFoundError):
                    marker.fs.rm_file(marker.path)  # a dead run's lease (or a marker without a term)
                continue
            raise OutputError(
                f"another normpipe run is writing {output}: {_describe(holder)}, holding its lease "
                f"until {_stamp(expires)}; wait for it to finish or choose another --output"
            )
    raise OutputError(f"could not claim {output}: other runs kept taking it; try again")


@contextmanager
def hold_lease(output: Location, term: float | None = None) -> Iterator[Lease]:
    """Hold the lease of ``output`` while the block runs, renewed in the background. The
    block checks :attr:`Lease.lost` before it commits, and removes the marker when done.

    Raises
    ------
    OutputError
        Another run holds it.
    """
    lease = acquire(output, term)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.term / 3):
            with contextlib.suppress(Exception):  # a failed renewal is retried; expiry is the bound
                lease.renew()

    thread = threading.Thread(target=renew, name="normpipe-lease", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
