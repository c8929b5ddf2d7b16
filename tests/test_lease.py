"""The lease on object-store outputs: one holder, expiry and takeover, renewal, loss.

Run on the local filesystem through fsspec (exclusive create ``"xb"`` is supported there
too); ``tests/test_s3.py`` runs two writers against moto's S3, which honours
``If-None-Match``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import fsspec
import pytest

from normpipe.errors import OutputError
from normpipe.lease import LEASE_SECONDS, acquire, hold_lease, lease_seconds
from normpipe.storage import Location


def _prefix(tmp_path: Path) -> Location:
    fs = fsspec.filesystem("file")
    root = tmp_path / "out"
    root.mkdir()
    return Location(fs, str(root), root.as_uri())


def test_one_holder_and_the_second_fails_at_once_naming_it(tmp_path: Path) -> None:
    output = _prefix(tmp_path)
    first = acquire(output, term=60)
    with pytest.raises(OutputError) as err:
        acquire(output, term=60)
    message = str(err.value)
    assert f"run {first.run[:12]}" in message
    assert "pid" in message
    assert "another normpipe run is writing" in message
    assert len(message.splitlines()) == 1


def test_an_expired_or_termless_lease_is_taken_over(tmp_path: Path) -> None:
    output = _prefix(tmp_path)
    acquire(output, term=0.2)
    time.sleep(0.4)
    second = acquire(output, term=60)  # the first holder died: its lease ran out
    assert json.loads(Path(second.marker.path).read_text())["run"] == second.run
    Path(second.marker.path).write_text(json.dumps({"run": "old", "started": "2026-01-01"}))
    third = acquire(output, term=60)  # a marker of an older release, without a term
    assert json.loads(Path(third.marker.path).read_text())["run"] == third.run


def test_the_holder_renews_its_lease_and_notices_a_takeover(tmp_path: Path) -> None:
    output = _prefix(tmp_path)
    with hold_lease(output, term=0.6) as lease:
        first = json.loads(Path(lease.marker.path).read_text())["expires"]
        time.sleep(1.5)  # past the term: renewed meanwhile
        renewed = json.loads(Path(lease.marker.path).read_text())
        assert renewed["run"] == lease.run
        assert renewed["expires"] > first
        with pytest.raises(OutputError, match="another normpipe run is writing"):
            acquire(output, term=60)
        Path(lease.marker.path).write_text(json.dumps({"run": "thief", "host": "h", "pid": 1}))
        time.sleep(0.5)
        assert lease.lost is not None
        assert "run thief on h" in lease.lost


def test_the_term_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured value, read back (no clock involved)."""
    monkeypatch.setenv("NORMPIPE_LEASE_SECONDS", "7.5")
    term = lease_seconds()
    assert term == 7.5
    monkeypatch.setenv("NORMPIPE_LEASE_SECONDS", "soon")  # not a number: the default
    term = lease_seconds()
    assert term == LEASE_SECONDS
