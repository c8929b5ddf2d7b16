"""Appending to a normalized output: only the files it does not hold yet are read and
written, with the artifact it was written with, and committed into its manifest; a killed
append leaves the output as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

import normpipe
from normpipe.datagen import generate
from normpipe.errors import InputError, OutputError

BIN = Path(sys.executable).parent
LOCAL = {"processes": False, "workers": 1}


def _day(root: Path, day: int, rows: int = 3_000, files: int = 2, shift: float = 0.0) -> Path:
    """Partition ``day=<day>`` of a growing dataset: ``files`` files of known data."""
    rng = np.random.default_rng(day)
    where = root / f"day={day}"
    where.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        frame = pd.DataFrame(
            {
                "id": np.arange(rows) + 10_000 * (day * files + i),
                "x": rng.normal(5.0 + shift, 2.0, rows),
                "y": rng.lognormal(0.0, 0.5, rows),
            }
        )
        frame.to_parquet(where / f"part-{i}.parquet", index=False)
    return where


def _parts(output: Path) -> dict[str, int]:
    """Each Parquet file below ``output`` with its inode (the same inode: not rewritten)."""
    return {p.relative_to(output).as_posix(): p.stat().st_ino for p in output.rglob("*.parquet")}


def _frame(output: Path) -> pd.DataFrame:
    return pd.read_parquet(output).sort_values("id", ignore_index=True)


def test_appends_write_only_new_files_and_equal_a_full_transform(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = tmp_path / "out"
    first = _day(data, 1)
    stats = normpipe.fit(first, exclude=["id"], cluster=LOCAL)
    manifest = normpipe.transform(first, stats, out, append=True, cluster=LOCAL)  # creates it
    assert manifest["written"] == 2
    assert sorted(_parts(out)) == ["day=1/part-0.parquet", "day=1/part-1.parquet"]  # rooted above day=1
    held = _parts(out)

    _day(data, 2)
    manifest = normpipe.transform(data / "day=2", stats, out, append=True, cluster=LOCAL)
    assert manifest["written"] == 2
    assert manifest["rows_out"] == 12_000
    after = _parts(out)
    assert {k: after[k] for k in held} == held  # the committed parts were not rewritten
    _day(data, 3)
    manifest = normpipe.transform(data, stats, out, append=True, cluster=LOCAL)  # the whole root
    assert manifest["written"] == 2
    assert len(manifest["files"]) == 6
    before = _parts(out), (out / "_SUCCESS").read_bytes()
    again = normpipe.transform(data, stats, out, append=True, cluster=LOCAL)  # nothing new: untouched
    assert again["written"] == 0
    assert (_parts(out), (out / "_SUCCESS").read_bytes()) == before

    # the appended output equals one full transform with the same (frozen) artifact
    full = normpipe.transform(data, stats, tmp_path / "full", cluster=LOCAL)
    assert full["rows_out"] == manifest["rows_out"]
    pd.testing.assert_frame_equal(
        _frame(out).drop(columns="day"), _frame(tmp_path / "full").drop(columns="day")
    )
    doc = json.loads((out / "_SUCCESS").read_text())
    assert doc["stats_sha256"] == stats.sha256
    assert {f["path"]: f["input_bytes"] for f in doc["files"]} == {
        p.relative_to(data).as_posix(): p.stat().st_size for p in data.rglob("*.parquet")
    }
    # readers we did not write see every committed row, with the types written
    assert len(pq.read_table(out)) == 18_000
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet')").fetchall() == [(18_000,)]
    polars = pl.scan_parquet(f"{out}/**/*.parquet").collect()
    assert polars.height == 18_000
    assert polars.schema["x"] == pl.Float64
    assert normpipe.fit(out, columns=["x"], cluster=LOCAL).rows == 18_000  # the manifest matches


def test_append_refuses_another_artifact_a_changed_file_and_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = tmp_path / "out"
    _day(data, 1)
    stats = normpipe.fit(data, exclude=["id"], cluster=LOCAL)
    normpipe.transform(data, stats, out, append=True, cluster=LOCAL)
    before = (out / "_SUCCESS").read_bytes()
    _day(data, 2)
    other = normpipe.fit(data, exclude=["id"], cluster=LOCAL)
    with pytest.raises(
        OutputError, match=r"was written with stats artifact .*rewrite the output without --append"
    ):
        normpipe.transform(data, other, out, append=True, cluster=LOCAL)
    pd.DataFrame({"id": [1], "x": [1.0], "y": [1.0]}).to_parquet(data / "day=1" / "part-0.parquet")
    with pytest.raises(InputError, match=r"part-0.parquet has .* bytes, .* when .* was written"):
        normpipe.transform(data, stats, out, append=True, cluster=LOCAL)
    elsewhere = tmp_path / "elsewhere"
    _day(elsewhere, 9)
    with pytest.raises(InputError, match=r"is not below .*append files of that dataset"):
        normpipe.transform(elsewhere, stats, out, append=True, cluster=LOCAL)
    with pytest.raises(normpipe.ConfigError, match="fit once, then"):
        normpipe.run(data, tmp_path / "x", append=True, cluster=LOCAL)
    assert (out / "_SUCCESS").read_bytes() == before  # nothing was written


def test_cli_append_one_line_each(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _day(data, 1)
    stats = tmp_path / "s.json"
    env = {**os.environ, "NORMPIPE_LOG": "warning"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "normpipe"), *args], capture_output=True, text=True, env=env, check=False
        )

    assert cli("fit", str(data), "--stats", str(stats), "--exclude", "id", "--workers", "1").returncode == 0
    out = tmp_path / "out"
    done = cli("transform", str(data), "--stats", str(stats), "-o", str(out), "--append", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "wrote 6,000 rows in 2 files" in done.stdout
    _day(data, 2, rows=1_000)
    done = cli("transform", str(data), "--stats", str(stats), "-o", str(out), "--append", "--workers", "1")
    assert "wrote 2,000 rows in 2 files" in done.stdout
    assert "8,000 rows in 4 files in all" in done.stdout
    refit = tmp_path / "refit.json"
    cli("fit", str(data), "--stats", str(refit), "--exclude", "id", "--workers", "1")
    bad = cli("transform", str(data), "--stats", str(refit), "-o", str(out), "--append", "--workers", "1")
    assert bad.returncode == 2
    lines = (bad.stdout + bad.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "was written with stats artifact" in lines[0]


def test_a_killed_append_leaves_the_output_as_it_was(tmp_path: Path) -> None:
    """SIGKILL (client and workers) while an append writes: the output keeps its manifest,
    its parts (same inodes) and its rows; the next append cleans up and commits."""
    data = tmp_path / "data"
    out = tmp_path / "out"
    generate(data / "day=1", 20_000, 2, seed=1, features=["normal", "uniform"])
    stats = tmp_path / "s.json"
    normpipe.fit(data, stats=str(stats), exclude=["id"], cluster=LOCAL)
    normpipe.transform(data, str(stats), out, append=True, cluster=LOCAL)
    manifest, parts = (out / "_SUCCESS").read_bytes(), _parts(out)
    generate(data / "day=2", 800_000, 80, seed=2, features=["normal", "uniform"])
    command = [str(BIN / "normpipe"), "transform", str(data), "--stats", str(stats), "-o", str(out)]
    command += ["--append", "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        staged = [p for p in tmp_path.glob(".out.normpipe-tmp-*/day=2/*.parquet")]
        if len(staged) >= 3:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "_SUCCESS").read_bytes() == manifest
    assert _parts(out) == parts
    assert normpipe.fit(out, columns=["normal"], cluster=LOCAL).rows == 20_000  # readable, as it was
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".out.normpipe-tmp-*"))  # the killed run's staging is gone
    assert normpipe.fit(out, columns=["normal"], cluster=LOCAL).rows == 820_000
    assert {k: v for k, v in _parts(out).items() if k in parts} == parts
