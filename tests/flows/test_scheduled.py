"""Scheduled runs over a growing dataset: the refit policy of the ``preprocess`` flow.

The input is read through an fsspec filesystem that logs every byte read, so the tests
see which files each run touched.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pytest
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

import normpipe
from flows.preprocess import preprocess
from normpipe.config import RunConfig
from tests.flows.test_preprocess import artifacts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class _Counted:
    """A file object that logs the bytes read from it."""

    def __init__(self, handle: Any, path: str, log: str) -> None:
        self._handle, self._path, self._log = handle, path, log

    def _note(self, size: int) -> None:
        with open(self._log, "a") as out:
            out.write(f"{self._path}\t{size}\n")

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._note(len(data))
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        size = int(self._handle.readinto(buffer))
        self._note(size)
        return size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


class CountingFileSystem(AbstractFileSystem):
    """Local files behind ``counting://``, every read logged to ``log`` (path, bytes)."""

    protocol = "counting"
    root_marker = "/"

    def __init__(self, log: str, **options: Any) -> None:
        super().__init__(log=log, **options)
        self.log = log
        self.local = LocalFileSystem()

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        return list(self.local.ls(self._strip_protocol(path), detail=detail))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self.local.info(self._strip_protocol(path)))

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        return _Counted(self.local._open(path, mode), path, self.log)


fsspec.register_implementation("counting", CountingFileSystem, clobber=True)


def _day(root: Path, day: int, shift: float = 0.0, rows: int = 4_000) -> None:
    rng = np.random.default_rng(day)
    where = root / f"day={day}"
    where.mkdir(parents=True)
    for i in range(2):
        frame = pd.DataFrame(
            {
                "id": np.arange(rows) + 10_000 * (2 * day + i),
                "a": rng.normal(10.0 + shift, 3.0, rows),
                "b": rng.uniform(0.0, 1.0, rows),
            }
        )
        frame.to_parquet(where / f"part-{i}.parquet", index=False)


def _config(tmp_path: Path, log: Path, **options: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "source": f"counting://{tmp_path / 'data'}",
            "storage_options": {"log": str(log)},
            "output": str(tmp_path / "out"),
            "exclude": ["id"],
            "cluster": {"processes": False, "workers": 1},
            **options,
        }
    )


def _read(log: Path) -> Counter[str]:
    """Bytes read per partition directory since the log was last cleared."""
    found: Counter[str] = Counter()
    for line in log.read_text().splitlines() if log.exists() else []:
        path, size = line.split("\t")
        found[Path(path).parent.name] += int(size)
    log.unlink(missing_ok=True)
    return found


def _parts(output: Path) -> dict[str, int]:
    return {p.relative_to(output).as_posix(): p.stat().st_ino for p in output.rglob("*.parquet")}


def test_three_nightly_runs_read_and_write_only_the_new_partition(tmp_path: Path) -> None:
    log = tmp_path / "reads.log"
    config = _config(tmp_path, log, refit="never")
    _day(tmp_path / "data", 1)
    first = preprocess(config)
    assert first["refit"]["action"] == "fit"
    assert set(_read(log)) == {"day=1"}
    frozen = json.loads((tmp_path / "out" / "_SUCCESS").read_text())["stats_sha256"]

    for day in (2, 3):
        held = _parts(tmp_path / "out")
        _day(tmp_path / "data", day)
        state = preprocess(config, return_state=True)
        manifest = state.result()
        assert manifest["refit"]["action"] == "append"
        assert manifest["written"] == 2
        read = _read(log)
        assert set(read) == {f"day={day}"}, read  # the held partitions: not a byte
        after = _parts(tmp_path / "out")
        assert {k: after[k] for k in held} == held  # nor rewritten
        assert set(after) - set(held) == {f"day={day}/part-0.parquet", f"day={day}/part-1.parquet"}
        assert "normpipe-refit" in artifacts(state.state_details.flow_run_id)
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["stats_sha256"] == frozen

    # equal to one full transform of the three days with the frozen (day 1) statistics
    full = normpipe.transform(
        tmp_path / "data", tmp_path / "out" / "_stats.json", tmp_path / "full", cluster={"processes": False}
    )
    assert full["rows_out"] == manifest["rows_out"] == 24_000
    ours = pd.read_parquet(tmp_path / "out").sort_values("id", ignore_index=True)
    theirs = pd.read_parquet(tmp_path / "full").sort_values("id", ignore_index=True)
    pd.testing.assert_frame_equal(ours, theirs)

    nothing = preprocess(config)  # no new partition: nothing read, nothing written
    assert nothing["refit"]["action"] == "append"
    assert nothing["written"] == 0
    assert not _read(log)


def test_on_drift_appends_a_like_day_and_refits_on_a_shifted_one(tmp_path: Path) -> None:
    log = tmp_path / "reads.log"
    config = _config(tmp_path, log, refit="on_drift", drift={"mean_shift": 0.5})
    _day(tmp_path / "data", 1)
    preprocess(config)
    frozen = json.loads((tmp_path / "out" / "_SUCCESS").read_text())["stats_sha256"]
    _read(log)

    _day(tmp_path / "data", 2)  # the same distribution
    like = preprocess(config)
    assert like["refit"]["action"] == "append"
    assert like["refit"]["new_files"] == 2
    assert not like["refit"]["drifted"]
    assert set(_read(log)) == {"day=2"}  # statistics of the new files, then their transform

    _day(tmp_path / "data", 3, shift=6.0)  # two standard deviations
    state = preprocess(config, return_state=True)
    shifted = state.result()
    assert shifted["refit"]["action"] == "refit"
    assert shifted["refit"]["drifted"] == ["a"]
    found = artifacts(state.state_details.flow_run_id)
    assert "refit" in found["normpipe-refit"].data
    assert "normpipe-drift" in found
    assert shifted["written"] == 6  # the whole output rewritten
    refit = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert refit["stats_sha256"] != frozen
    stats = normpipe.Stats.load(tmp_path / "out" / "_stats.json")
    values = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "data").rglob("*.parquet")))
    assert stats.summary("a").mean == pytest.approx(values["a"].mean(), rel=1e-12)  # all three days
    assert stats.rows == 24_000


def test_the_normalize_flow_appends_with_the_config_option(tmp_path: Path) -> None:
    from flows.preprocess import compute_stats, normalize

    _day(tmp_path / "data", 1)
    config = RunConfig.model_validate(
        {
            "source": str(tmp_path / "data"),
            "output": str(tmp_path / "out"),
            "stats": str(tmp_path / "stats.json"),
            "exclude": ["id"],
            "append": True,
            "cluster": {"processes": False, "workers": 1},
        }
    )
    compute_stats(config)
    assert normalize(config)["written"] == 2
    _day(tmp_path / "data", 2)
    second = normalize(config)
    assert second["written"] == 2
    assert second["rows_out"] == 16_000
    assert normalize(config)["written"] == 0  # nothing new
