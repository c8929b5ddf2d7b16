"""Work units: the planner on synthetic footers, and results that do not depend on the plan."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from hypothesis import given, settings
from hypothesis import strategies as st

import normpipe
from normpipe.dataset import Footer, SourceFile, discover
from normpipe.units import UNITS_PER_THREAD, plan
from tests.helpers import assert_rank_close

_SCHEMA = pa.schema([])


def _footers(layout: list[list[int]]) -> tuple[list[SourceFile], list[Footer]]:
    """Files whose row groups have the given byte sizes (one row per 10 bytes)."""
    files = [SourceFile(f"/d/f{i}", f"f{i}", sum(g), None) for i, g in enumerate(layout)]
    footers = [Footer(tuple(b // 10 for b in g), tuple(g), _SCHEMA) for g in layout]
    return files, footers


@settings(max_examples=200, deadline=None)
@given(
    layout=st.lists(
        st.lists(st.integers(0, 5000).map(lambda b: b * 10), max_size=6), min_size=1, max_size=30
    ),
    target=st.integers(10, 40_000),
    threads=st.integers(1, 8),
    split=st.booleans(),
)
def test_every_row_group_is_in_one_unit_in_order(
    layout: list[list[int]], target: int, threads: int, split: bool
) -> None:
    files, footers = _footers(layout)
    units = plan(files, footers, target, threads, split)
    seen = [(p.file.path, g) for u in units for p in u.pieces for g in range(p.start, p.stop)]
    assert seen == [(f.path, g) for f, fo in zip(files, footers, strict=True) for g in range(len(fo.rows))]
    assert [p.file.path for u in units for p in u.pieces if p.start == p.stop] == [
        f.path for f, fo in zip(files, footers, strict=True) if not fo.rows
    ]  # files without row groups are still planned (and written) once
    limit = max(1, min(target, -(-sum(map(sum, layout)) // (UNITS_PER_THREAD * threads))))
    for unit in units:
        assert unit.nbytes == sum(
            sum(footers[int(p.file.relpath[1:])].nbytes[p.start : p.stop]) for p in unit.pieces
        )
        assert unit.rows == sum(p.rows for p in unit.pieces)
        for piece in unit.pieces:
            rows = footers[int(piece.file.relpath[1:])].rows
            assert piece.first_row == sum(rows[: piece.start])
            assert piece.rows == sum(rows[piece.start : piece.stop])
            if not split:
                assert (piece.start, piece.stop) == (0, len(rows))  # writing keeps whole files
        # a unit passes the limit only when it is one file (not split) or one row group
        # (with empty ones beside it)
        if unit.nbytes > limit:
            assert len(unit.pieces) == 1
            piece = unit.pieces[0]
            sizes = footers[int(piece.file.relpath[1:])].nbytes
            assert not split or len([b for b in sizes[piece.start : piece.stop] if b]) == 1


def test_small_files_are_batched_and_a_large_file_is_split() -> None:
    files, footers = _footers([[100]] * 40 + [[1000] * 8])
    units = plan(files, footers, target=1000, threads=1)
    assert [len(u.pieces) for u in units] == [10, 10, 10, 10, 1, 1, 1, 1, 1, 1, 1, 1]
    assert [(u.pieces[0].start, u.pieces[0].stop) for u in units[4:6]] == [(0, 1), (1, 2)]
    whole = plan(files, footers, target=1000, threads=1, split=False)
    assert [(p.start, p.stop) for p in whole[-1].pieces] == [(0, 8)]
    # more threads, smaller units: 12,000 bytes over 4 x 4 threads is at most 750 a unit
    assert max(u.nbytes for u in plan(files, footers, target=10**9, threads=4)[:4]) <= 750


def _table(rng: np.random.Generator, n: int) -> pa.Table:
    values = rng.lognormal(0, 2, n)
    values[rng.random(n) < 0.03] = np.nan
    ints = pa.array(rng.integers(-50, 50, n), mask=rng.random(n) < 0.05)
    return pa.table({"x": values, "n": ints, "u": rng.uniform(1e6, 1e6 + 1, n)})


def _layouts(tmp_path: Path, table: pa.Table) -> dict[str, Path]:
    """The same rows as one file of many row groups, many tiny files with empty ones
    among them, and files of uneven row groups."""
    n = table.num_rows
    out = {}
    one = tmp_path / "one"
    one.mkdir()
    pq.write_table(table, one / "all.parquet", row_group_size=997)
    out["one file, 31 row groups"] = one
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    bounds = [0, *range(0, n, 173), n]  # an empty file first, then 173-row files
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(a, b - a), tiny / f"part-{i:04d}.parquet")
    out["175 tiny files and an empty one"] = tiny
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    with pq.ParquetWriter(mixed / "a.parquet", table.schema) as writer:
        writer.write_table(table.slice(0, 0))  # an empty row group
        writer.write_table(table.slice(0, 12_000), row_group_size=4_000)
    pq.write_table(table.slice(12_000), mixed / "b.parquet", row_group_size=50)
    out["uneven row groups, one empty"] = mixed
    return out


@pytest.mark.parametrize("unit_size", [1, 64 * 1024, 128 * 2**20])
def test_results_do_not_depend_on_the_plan(tmp_path: Path, client: Client, unit_size: int) -> None:
    """Moments to 1e-12, quantiles within the bound, outputs equal frame for frame, for
    every layout and unit size (1 byte: a unit per row group; 64 KiB: batches and
    ranges; 128 MiB: as few units as there are threads allow)."""
    rng = np.random.default_rng(7)
    table = _table(rng, 30_000)
    frame = table.to_pandas()
    for name, source in _layouts(tmp_path, table).items():
        output = tmp_path / f"out-{unit_size}-{name.split()[0]}"
        stats, manifest = normpipe.run(
            source, output, method="robust", unit_size=unit_size, client=client, overwrite=True
        )
        assert manifest["rows_out"] == table.num_rows, name
        for column in ("x", "n", "u"):
            values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
            finite = values[np.isfinite(values)]
            summary = stats.summary(column)
            assert summary.count == finite.size, name
            np.testing.assert_allclose(summary.mean, finite.mean(), rtol=1e-12, err_msg=name)
            np.testing.assert_allclose(summary.var, finite.var(), rtol=1e-12, err_msg=name)
            assert (summary.min, summary.max) == (finite.min(), finite.max())
            for p in (0.25, 0.5, 0.75):
                assert_rank_close(values, summary.quantiles[p], p, summary.rank_error)
        written = pd.concat(
            [pd.read_parquet(output / f["path"]) for f in manifest["files"]], ignore_index=True
        )
        assert [f["path"] for f in manifest["files"]] == [f.relpath for f in discover(source).files]
        pd.testing.assert_frame_equal(written, stats.transform(frame), check_dtype=False)


def test_column_batches_bound_a_merge_task() -> None:
    from normpipe.engine import STATE_BUDGET, column_batches

    names = [f"c{i}" for i in range(10_000)]
    batches = column_batches(names, 4000, 8)
    assert [n for b in batches for n in b] == names
    assert all(8 * len(b) * (24 * 4000 + 1024) <= STATE_BUDGET for b in batches)
    assert column_batches(names[:16], 4000, 8) == [names[:16]]  # narrow tables: one batch


def test_ten_thousand_columns_in_small_workers(tmp_path: Path) -> None:
    """10,000 columns through two 1 GB worker processes: the statistics equal numpy's and
    no worker is restarted (their addresses stay the same)."""
    import logging

    from distributed import LocalCluster

    rng = np.random.default_rng(3)
    data = tmp_path / "wide"
    data.mkdir()
    frames = []
    for i in range(3):
        block = rng.normal(size=(400, 10_000))
        frames.append(block)
        pq.write_table(pa.table({f"c{j}": block[:, j] for j in range(10_000)}), data / f"p{i}.parquet")
    values = np.concatenate(frames)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="1GB",
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        before = set(client.scheduler_info()["workers"])
        stats = normpipe.fit(data, method="robust", client=client)
        assert set(client.scheduler_info()["workers"]) == before
    assert len(stats.columns) == 10_000
    for j in (0, 4_321, 9_999):
        summary = stats.summary(f"c{j}")
        np.testing.assert_allclose(summary.mean, values[:, j].mean(), rtol=1e-12)
        assert_rank_close(values[:, j], summary.quantiles[0.5], 0.5, summary.rank_error)


@pytest.mark.parametrize("group_by", [None, "store"])
def test_large_row_groups_are_written_a_batch_of_columns_at_a_time(
    tmp_path: Path, client: Client, monkeypatch: pytest.MonkeyPatch, group_by: str | None
) -> None:
    """Row groups past ``READ_BYTES`` are read and mapped in column batches: the output is
    the same file, row groups and values as when they are read whole."""
    import normpipe.writer

    rng = np.random.default_rng(5)
    n = 5_000
    table = pa.table(
        {
            "a": rng.normal(size=n),
            "label": pa.array([f"r{i % 7}" for i in range(n)]),
            "store": rng.integers(0, 5, n),
            **{f"f{j}": rng.lognormal(size=n) for j in range(12)},
            "count": pa.array(rng.integers(0, 9, n), mask=rng.random(n) < 0.1),
        }
    )
    source = tmp_path / "data"
    source.mkdir()
    pq.write_table(table, source / "p.parquet", row_group_size=2_000)
    options = {"method": "zscore", "group_by": group_by, "client": client, "overwrite": True}
    _, whole = normpipe.run(source, tmp_path / "whole", **options)
    monkeypatch.setattr(normpipe.writer, "READ_BYTES", 20_000)  # about 3 columns a batch
    _, batched = normpipe.run(source, tmp_path / "batched", **options)
    assert whole["rows_out"] == batched["rows_out"] == n
    one, other = (pq.ParquetFile(tmp_path / d / "p.parquet") for d in ("whole", "batched"))
    assert [one.metadata.row_group(i).num_rows for i in range(3)] == [2_000, 2_000, 1_000]
    assert one.schema_arrow == other.schema_arrow
    assert one.read().equals(other.read())
    # an output row group past ROW_GROUP_BYTES is written in slices of rows, through
    # spill files: the same rows, values and order, in more row groups
    monkeypatch.setattr(normpipe.writer, "ROW_GROUP_BYTES", 100_000)  # 2,000 rows: 3 slices
    _, sliced = normpipe.run(source, tmp_path / "sliced", **options)
    assert sliced["rows_out"] == n
    cut = pq.ParquetFile(tmp_path / "sliced" / "p.parquet")
    sizes = [cut.metadata.row_group(i).num_rows for i in range(cut.metadata.num_row_groups)]
    assert sizes == [667, 667, 666, 667, 667, 666, 500, 500]
    assert cut.schema_arrow == one.schema_arrow
    assert cut.read().equals(one.read())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sliced"), pd.read_parquet(tmp_path / "whole"))
