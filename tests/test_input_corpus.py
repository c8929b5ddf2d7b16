"""A corpus of awkward and broken inputs, each with its decided outcome.

Awkward-but-valid data is processed with a documented choice (non-numeric columns are
copied unchanged; numeric ones are normalized; NaN, null and +/-inf stay what they
are). Broken data fails with one line naming the file or column, exit 2, and no output.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normpipe.artifact import Stats
from tests.helpers import assert_reads_everywhere
from tests.test_bad_input import Run, assert_clean_failure, cli, no_output  # noqa: F401

X = np.arange(5.0)
Build = Callable[[Path], None]


def one(table: pa.Table, **options: object) -> Build:
    def build(d: Path) -> None:
        pq.write_table(table, d / "p0.parquet", **options)  # type: ignore[arg-type]

    return build


PASSED_THROUGH = {
    "decimal": pa.array([decimal.Decimal("1.50")] * 5),
    "boolean": pa.array([True, False, True, False, True]),
    "timestamp": pa.array([datetime.datetime(2020, 1, i + 1) for i in range(5)]),
    "dictionary": pa.array(["a", "b", "a", "b", "a"]).dictionary_encode(),
    "list": pa.array([[1.0, 2.0]] * 5),
    "struct": pa.array([{"a": 1}] * 5),
    "string": pa.array(list("abcde")),
}


@pytest.mark.parametrize("kind", sorted(PASSED_THROUGH))
def test_non_numeric_columns_are_copied_unchanged(cli: Run, tmp_path: Path, kind: str) -> None:  # noqa: F811
    (tmp_path / "in").mkdir()
    table = pa.table({"x": X, kind: PASSED_THROUGH[kind]})
    pq.write_table(table, tmp_path / "in" / "p.parquet")
    result = cli("run", tmp_path / "in", "--output", tmp_path / "out")
    assert result.code == 0, result.stderr
    out = pq.read_table(tmp_path / "out" / "p.parquet")
    assert out.column(kind).equals(table.column(kind))
    assert_reads_everywhere(tmp_path / "out")
    assert list(Stats.load(tmp_path / "out" / "_stats.json").columns) == ["x"]


VALUES = {
    "all_null": (pa.array([None] * 5, type=pa.float64()), [None] * 5),
    "all_nan": (pa.array([np.nan] * 5), [np.nan] * 5),
    "constant": (pa.array([7.0] * 5), [0.0] * 5),
    "plus_minus_inf": (pa.array([1.0, np.inf, -np.inf, 3.0, np.nan]), None),
    "nan_first_last": (pa.array([np.nan, 1.0, 2.0, 3.0, np.nan]), None),
    "one_value": (pa.array([None, None, 4.0, None, None]), [None, None, 0.0, None, None]),
    "int_with_nulls": (pa.array([1, None, 3, None, 5], type=pa.int64()), None),
}


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_special_values_keep_their_kind(cli: Run, tmp_path: Path, kind: str) -> None:  # noqa: F811
    column, expected = VALUES[kind]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"x": X, "v": column}), tmp_path / "in" / "p.parquet")
    result = cli("run", tmp_path / "in", "--output", tmp_path / "out")
    assert result.code == 0, result.stderr
    out = pq.read_table(tmp_path / "out" / "p.parquet").column("v").to_pylist()
    stats = Stats.load(tmp_path / "out" / "_stats.json")
    original = column.to_pylist()
    for before, after in zip(original, out, strict=True):
        if before is None:
            assert after is None  # null stays null
        elif np.isnan(before):
            assert after is not None  # NaN stays NaN
            assert np.isnan(after)
        elif np.isinf(before):
            assert after == before  # z-score keeps the sign of an infinity
    if expected is not None:
        np.testing.assert_array_equal(np.array(out, dtype=float), np.array(expected, dtype=float))
    finite = [v for v in original if v is not None and np.isfinite(v)]
    assert stats.summary("v").count == len(finite)
    assert_reads_everywhere(tmp_path / "out")


def test_unicode_and_spaces_in_column_names(cli: Run, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"prix € net": X, "名前 x": X * 2}), tmp_path / "in" / "p.parquet")
    result = cli("run", tmp_path / "in", "--output", tmp_path / "out", "--override", "名前 x=minmax")
    assert result.code == 0, result.stderr
    out = pq.read_table(tmp_path / "out" / "p.parquet")
    np.testing.assert_allclose(out.column("名前 x").to_numpy(), X / 4)


def test_one_row_and_empty_row_groups(cli: Run, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"x": pa.array([], type=pa.float64())}), tmp_path / "in" / "empty.parquet")
    pq.write_table(pa.table({"x": [2.5]}), tmp_path / "in" / "one.parquet")
    result = cli("run", tmp_path / "in", "--output", tmp_path / "out")
    assert result.code == 0, result.stderr
    assert pq.read_table(tmp_path / "out" / "one.parquet").column("x").to_pylist() == [0.0]
    assert pq.read_table(tmp_path / "out" / "empty.parquet").num_rows == 0


def test_ten_thousand_columns(cli: Run, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in").mkdir()
    table = pa.table({f"c{i}": np.arange(3.0) * (i + 1) for i in range(10_000)})
    pq.write_table(table, tmp_path / "in" / "p.parquet")
    result = cli("run", tmp_path / "in", "--output", tmp_path / "out", "--sketch-k", "8")
    assert result.code == 0, result.stderr
    out = pq.read_table(tmp_path / "out" / "p.parquet", columns=["c0", "c9999"])
    np.testing.assert_allclose(out.column("c9999").to_numpy(), [-1.224744871391589, 0.0, 1.224744871391589])
    # a screenful, not 10,000 rows: the first columns, a count, and where the rest are
    assert len(result.stdout.splitlines()) < 60
    assert "c29 " in result.stdout
    assert "c30 " not in result.stdout
    stats = tmp_path / "out" / "_stats.json"
    summary = "9,970 more columns (10,000 in all; methods: zscore 10,000); every column: normpipe inspect"
    assert f"{summary} {stats}" in " ".join(result.stdout.split())
    shown = cli("inspect", stats)
    assert shown.code == 0
    assert "c9999 " in shown.stdout
    # a message about a missing column stays one short line
    result = cli("run", tmp_path / "in", "--output", tmp_path / "o2", "--columns", "nope")
    assert_clean_failure(result, "column 'nope'", "more)")
    assert len(result.stderr) < 300


BROKEN: dict[str, tuple[Build, tuple[str, ...]]] = {
    "values overflow float64": (
        one(pa.table({"x": [1e308, -1e308, 1e308, 5e307, -1e308]})),
        ("column 'x'", "too large for float64"),
    ),
    "duplicate column names": (
        one(pa.Table.from_arrays([pa.array(X), pa.array(X)], names=["x", "x"])),
        ("'x' appears more than once",),
    ),
    "text file among Parquet files": (
        lambda d: (one(pa.table({"x": X}))(d), (d / "notes.parquet").write_text("not parquet")),
        ("notes.parquet", "not a readable Parquet file"),
    ),
    "only _SUCCESS and hidden files": (
        lambda d: ((d / "_SUCCESS").write_text("{}"), (d / ".part.parquet").write_bytes(b"x")),
        ("no Parquet files found",),
    ),
    "int in one file, string in another": (
        lambda d: (
            pq.write_table(pa.table({"x": [1, 2]}), d / "a.parquet"),
            pq.write_table(pa.table({"x": ["1", "2"]}), d / "b.parquet"),
        ),
        ("b.parquet", "'x'"),
    ),
    "no numeric column": (one(pa.table({"s": list("abcde")})), ("no numeric",)),
    "float in one file, string in another": (
        lambda d: (
            pq.write_table(pa.table({"x": X, "y": X}), d / "a.parquet"),
            pq.write_table(pa.table({"x": list("abcde"), "y": X}), d / "b.parquet"),
        ),
        ("b.parquet", "column 'x' is string in this file but numeric in others"),
    ),
    "gzip file named .parquet": (
        lambda d: (
            one(pa.table({"x": X}))(d),
            (d / "p1.parquet").write_bytes(gzip.compress((d / "p0.parquet").read_bytes())),
        ),
        ("p1.parquet", "not a readable Parquet file"),
    ),
    "truncated footer": (
        lambda d: (
            one(pa.table({"x": X}))(d),
            (d / "p1.parquet").write_bytes((d / "p0.parquet").read_bytes()[:-12]),
        ),
        ("p1.parquet", "not a readable Parquet file"),
    ),
    "damaged data pages, intact footer": (
        lambda d: (one(pa.table({"x": X, "y": X}))(d), _damage_first_page(d / "p0.parquet")),
        ("p0.parquet, row group 0, column 'x'", "the file is damaged"),
    ),
}


def _damage_first_page(path: Path) -> None:
    """Overwrite the first data page's header; the footer stays intact."""
    data = bytearray(path.read_bytes())
    data[4:40] = b"\xff" * 36
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_inputs_fail_with_one_line_and_no_output(cli: Run, tmp_path: Path, case: str) -> None:  # noqa: F811
    build, fragments = BROKEN[case]
    (tmp_path / "in").mkdir()
    build(tmp_path / "in")
    result = cli("run", tmp_path / "in", "--output", tmp_path / "out")
    assert_clean_failure(result, *fragments)
    assert no_output(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_inputs_print_one_line_in_all_through_the_real_cli(tmp_path: Path, case: str) -> None:
    """The installed command, a local cluster of worker processes: the whole of stdout
    and stderr (worker logs included) is the one error line."""
    build, fragments = BROKEN[case]
    (tmp_path / "in").mkdir()
    build(tmp_path / "in")
    command = [sys.executable, "-m", "normpipe.cli", "run", str(tmp_path / "in")]
    command += ["--output", str(tmp_path / "out"), "--workers", "2", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert no_output(tmp_path)


def test_edited_artifact_fails_its_checksum(cli: Run, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"x": X}), tmp_path / "in" / "p.parquet")
    assert cli("fit", tmp_path / "in", "--stats", tmp_path / "s.json").code == 0
    text = (tmp_path / "s.json").read_text()
    (tmp_path / "s.json").write_text(text.replace('"mean": 2.0', '"mean": 2.5', 1))
    result = cli("transform", tmp_path / "in", "--stats", tmp_path / "s.json", "--output", tmp_path / "out")
    assert_clean_failure(result, "s.json", "checksum")
    assert no_output(tmp_path)
