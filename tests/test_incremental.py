"""Incremental statistics: `fit --update`, `merge`, and the flow's incremental mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

import normpipe
from normpipe.artifact import Stats
from normpipe.errors import InputError
from tests.test_cli import invoke

ROWS = 40_000
PARTS = 6


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    values = rng.normal(1e6, 3.0, ROWS)  # a large offset: merging must keep the variance
    skewed = rng.lognormal(1, 1, ROWS)
    skewed[rng.random(ROWS) < 0.05] = np.nan
    return pd.DataFrame({"offset": values, "skewed": skewed, "t": rng.standard_t(3, ROWS)})


@pytest.fixture
def appends(tmp_path: Path, frame: pd.DataFrame) -> list[Path]:
    """The frame as PARTS append directories (one file each) and all of them together."""
    bounds = np.linspace(0, ROWS, PARTS + 1).astype(int)
    out = []
    for i in range(PARTS):
        directory = tmp_path / "data" / f"day={i}"
        directory.mkdir(parents=True)
        frame.iloc[bounds[i] : bounds[i + 1]].to_parquet(directory / "part.parquet", index=False)
        out.append(directory)
    return out


def assert_same_as_full(merged: Stats, full: Stats, frame: pd.DataFrame) -> None:
    assert merged.rows == full.rows
    for name, column in full.columns.items():
        a, b = merged.columns[name].state, column.state
        assert (a.moments.count, a.nulls, a.nans, a.zeros) == (b.moments.count, b.nulls, b.nans, b.zeros)
        assert a.moments.min == b.moments.min
        assert a.moments.max == b.moments.max
        assert a.moments.mean == pytest.approx(b.moments.mean, rel=1e-12)
        assert a.moments.m2 == pytest.approx(b.moments.m2, rel=1e-12)
        assert a.moments.m3 == pytest.approx(b.moments.m3, rel=1e-9, abs=1e-9 * b.moments.m2**1.5)
        assert merged.scalers[name].method == full.scalers[name].method
        finite = frame[name].to_numpy()
        finite = finite[np.isfinite(finite)]
        for p, q in merged.summary(name).quantiles.items():  # within the sketch bound
            rank = np.mean(finite <= q)
            assert abs(rank - p) <= merged.summary(name).rank_error + 1 / finite.size


def test_appends_in_random_order_equal_the_full_fit(
    client: Client, appends: list[Path], frame: pd.DataFrame, tmp_path: Path
) -> None:
    full = normpipe.fit(tmp_path / "data", method="auto", client=client)
    order = np.random.default_rng(5).permutation(PARTS)
    normpipe.fit(appends[order[0]], method="auto", client=client, stats=tmp_path / "s.json")
    for i in order[1:]:
        _stats, files = normpipe.update(
            appends[i], tmp_path / "s.json", client=client, stats=tmp_path / "s.json"
        )
        assert files == 1
    loaded = Stats.load(tmp_path / "s.json")
    assert len(loaded.dataset.counted()) == PARTS
    assert len(loaded.dataset.history) == PARTS - 1
    assert_same_as_full(loaded, full, frame)
    # a repeated append is refused, by name; --allow-repeat counts it again
    with pytest.raises(InputError, match=r"day=.*part\.parquet .* is already counted in"):
        normpipe.update(appends[order[2]], loaded, client=client)
    twice, _ = normpipe.update(appends[order[2]], loaded, client=client, allow_repeat=True)
    assert twice.rows == ROWS + len(pd.read_parquet(appends[order[2]]))


def test_only_new_reads_only_files_not_counted(client: Client, appends: list[Path], tmp_path: Path) -> None:
    first = appends[0]
    base = normpipe.fit(tmp_path / "data", method="zscore", client=client)
    same, files = normpipe.update(tmp_path / "data", base, client=client, only_new=True)
    assert (files, same) == (0, base)
    # a new partition arrives: only it is read
    new = tmp_path / "data" / "day=9"
    shutil.copytree(first, new)
    merged, files = normpipe.update(tmp_path / "data", base, client=client, only_new=True)
    assert files == 1
    assert merged.rows == base.rows + len(pd.read_parquet(first))
    assert merged.dataset.to_json()["files"] == [
        {
            "path": "day=9/part.parquet",
            "size": (new / "part.parquet").stat().st_size,
            "mtime": merged.dataset.files[0].mtime,
        }
    ]


def test_merge_cli_equals_full_fit_and_refuses_overlap(
    client: Client, appends: list[Path], frame: pd.DataFrame, tmp_path: Path
) -> None:
    full = normpipe.fit(tmp_path / "data", method="robust", client=client)
    half = PARTS // 2
    for name, parts in (("a", appends[:half]), ("b", appends[half:])):
        staged = tmp_path / name
        for part in parts:
            shutil.copytree(part, staged / part.name)
        normpipe.fit(staged, method="robust", client=client, stats=tmp_path / f"{name}.json")
    # the copies live elsewhere, so compare against the data, not file identities
    code, out, err = invoke("merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "c.json")
    assert code == 0, out + err
    assert_same_as_full(Stats.load(tmp_path / "c.json"), full, frame)
    code, out, err = invoke("merge", tmp_path / "c.json", tmp_path / "a.json", "-o", tmp_path / "d.json")
    assert code == 2
    assert "is already counted in both" in err
    assert not (tmp_path / "d.json").exists()


def test_update_refuses_other_columns_and_lost_log_moments(client: Client, appends: list[Path]) -> None:
    logged = normpipe.fit(appends[0], method="signed_log", client=client)
    plain = normpipe.fit(appends[1], method="zscore", client=client)
    with pytest.raises(InputError, match="column 'offset': signed_log needs the log moments"):
        logged.merge(plain)
    fewer = normpipe.fit(appends[2], columns=["offset"], client=client)
    with pytest.raises(InputError, match="column 'skewed' is not in the new data"):
        logged.merge(fewer)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--method", "robust"], "--method"),
        (["--override", "t=minmax"], "--override"),
        (["--group-by", "t"], "--group-by"),
        (["--unseen", "error"], "--unseen"),
        (["--sketch-k", "200"], "--sketch-k"),
    ],
)
def test_cli_update_refuses_options_the_artifact_fixes(
    appends: list[Path], tmp_path: Path, options: list[str], named: str
) -> None:
    code, out, err = invoke("fit", appends[0], "--update", tmp_path / "s.json", *options)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert f"error: {named} cannot be combined with --update" in err
    assert out == ""


def test_cli_update_refuses_a_config_that_sets_the_method(appends: list[Path], tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("method: robust\ncluster: {processes: false, workers: 1}\n")
    code, _, err = invoke("fit", appends[0], "--update", tmp_path / "s.json", "--config", config)
    assert code == 2
    assert f"'method' in {config} cannot be combined with --update" in err
    # the cluster section alone is fine
    config.write_text("cluster: {processes: false, workers: 1}\n")
    assert invoke("fit", appends[0], "--stats", tmp_path / "s.json", "--config", config)[0] == 0
    code, out, err = invoke("fit", appends[1], "--update", tmp_path / "s.json", "--config", config)
    assert code == 0, err
    rows = len(pd.read_parquet(appends[0])) + len(pd.read_parquet(appends[1]))
    assert Stats.load(tmp_path / "s.json").rows == rows
    assert f"stats: {tmp_path / 's.json'}" in out
