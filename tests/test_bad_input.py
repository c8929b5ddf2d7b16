"""Every bad input gets one clear line naming the path or column, a non-zero exit,
no traceback and no output left behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from normpipe.cli import app

Run = Callable[..., "Result"]


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr


@pytest.fixture
def cli(tmp_path: Path) -> Run:
    """Run the CLI in-process on a thread-based one-worker cluster (fast to start)."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("cluster:\n  processes: false\n  workers: 1\n")

    def run(*args: str, config: bool = True) -> Result:
        argv = [str(a) for a in args]
        if config and "--config" not in argv and argv[0] in ("fit", "transform", "run"):
            argv += ["--config", str(cluster)]
        result = CliRunner().invoke(app, argv)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


def assert_clean_failure(result: Result, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def good(tmp_path: Path) -> Path:
    directory = tmp_path / "good"
    directory.mkdir()
    for i in range(2):
        pq.write_table(pa.table({"x": np.arange(5.0) + i, "s": ["a"] * 5}), directory / f"p{i}.parquet")
    return directory


def no_output(tmp_path: Path) -> bool:
    return not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.normpipe-*"))


def test_missing_path(cli: Run, tmp_path: Path) -> None:
    result = cli("run", tmp_path / "nope", "--output", tmp_path / "out")
    assert_clean_failure(result, str(tmp_path / "nope"), "no such file or directory")
    assert no_output(tmp_path)


def test_folder_without_parquet_files(cli: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    (empty / "_SUCCESS").write_text("")
    (empty / ".hidden" / "x.parquet").write_text("")
    assert_clean_failure(
        cli("fit", empty, "--stats", tmp_path / "s.json"), str(empty), "no Parquet files found"
    )
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_corrupt_parquet_file_is_named(cli: Run, good: Path, tmp_path: Path, damage: str) -> None:
    bad = good / "p9.parquet"
    data = (good / "p0.parquet").read_bytes()
    bad.write_bytes(
        {"random": np.random.default_rng(0).bytes(500), "truncated": data[: len(data) - 20], "empty": b""}[
            damage
        ]
    )
    result = cli("run", good, "--output", tmp_path / "out")
    assert_clean_failure(result, str(bad), "not a readable Parquet file")
    assert no_output(tmp_path)


def test_first_file_corrupt(cli: Run, good: Path, tmp_path: Path) -> None:
    (good / "a.parquet").write_bytes(b"PAR1 not really")
    assert_clean_failure(cli("fit", good, "--stats", tmp_path / "s.json"), str(good / "a.parquet"))


def test_schema_disagreement_between_files(cli: Run, good: Path, tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": ["1", "2"], "s": ["a", "b"]}), good / "p2.parquet")
    result = cli("run", good, "--output", tmp_path / "out")
    assert_clean_failure(result, str(good / "p2.parquet"), "column 'x'", "string")
    assert no_output(tmp_path)


def test_column_missing_from_one_file(cli: Run, good: Path, tmp_path: Path) -> None:
    pq.write_table(pa.table({"s": ["a", "b"]}), good / "p2.parquet")
    result = cli("fit", good, "--stats", tmp_path / "s.json")
    assert_clean_failure(result, str(good / "p2.parquet"), "column 'x' is missing")


def test_requested_column_missing_or_not_numeric(cli: Run, good: Path, tmp_path: Path) -> None:
    result = cli("fit", good, "--stats", tmp_path / "s.json", "--columns", "x,price")
    assert_clean_failure(result, "column 'price' is not in", "numeric columns: x")
    result = cli("fit", good, "--stats", tmp_path / "s.json", "--columns", "s")
    assert_clean_failure(result, "column 's' is not numeric (got string)", "--columns")
    result = cli("fit", good, "--stats", tmp_path / "s.json", "--exclude", "x")
    assert_clean_failure(result, "no numeric column to normalize")
    result = cli("fit", good, "--stats", tmp_path / "s.json", "--exclude", "y")
    assert_clean_failure(result, "excluded column 'y'")


def test_empty_dataset(cli: Run, tmp_path: Path) -> None:
    directory = tmp_path / "zero"
    directory.mkdir()
    pq.write_table(pa.table({"x": pa.array([], type=pa.float64())}), directory / "p.parquet")
    result = cli("run", directory, "--output", tmp_path / "out")
    assert_clean_failure(result, str(directory), "has no rows")
    assert no_output(tmp_path)


def test_output_inside_or_around_input(cli: Run, good: Path, tmp_path: Path) -> None:
    result = cli("run", good, "--output", good / "normalized")
    assert_clean_failure(result, "lies inside the input", str(good))
    assert not (good / "normalized").exists()
    result = cli("run", good, "--output", tmp_path, "--overwrite")
    assert_clean_failure(result, "contains the input")


def test_existing_output_without_overwrite(cli: Run, good: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert_clean_failure(cli("run", good, "--output", tmp_path / "out"), "already exists", "--overwrite")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{}", "not a normpipe stats file"),
        ("hello", "invalid JSON"),
        ('{"format": "normpipe.stats", "version": 7}', "upgrade normpipe"),
    ],
)
def test_stats_file_not_an_artifact(
    cli: Run, good: Path, tmp_path: Path, content: str, fragment: str
) -> None:
    stats = tmp_path / "s.json"
    stats.write_text(content)
    result = cli("transform", good, "--stats", stats, "--output", tmp_path / "out")
    assert_clean_failure(result, str(stats), fragment)
    assert no_output(tmp_path)
    assert_clean_failure(cli("inspect", stats), str(stats), fragment)


def test_transform_input_lacks_artifact_column(cli: Run, good: Path, tmp_path: Path) -> None:
    stats = tmp_path / "s.json"
    assert cli("fit", good, "--stats", stats).code == 0
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pa.table({"y": [1.0, 2.0]}), other / "p.parquet")
    result = cli("transform", other, "--stats", stats, "--output", tmp_path / "out")
    assert_clean_failure(result, "column 'x' is in the stats artifact but not in", str(other / "p.parquet"))
    assert no_output(tmp_path)


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("sourc: data\n", "unknown key 'sourc'"),
        ("sketch_k: many\n", "invalid value for 'sketch_k'"),
        ("method: softmax\n", "invalid value for 'method'"),
        ("method: {method: minmax, feature_range: [1, 0]}\n", "feature_range"),
        ("cluster: {workers: 0}\n", "invalid value for 'cluster.workers'"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config(cli: Run, good: Path, tmp_path: Path, yaml_text: str, fragment: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    result = cli("run", good, "--output", tmp_path / "out", "--config", config)
    assert_clean_failure(result, str(config), fragment)
    assert no_output(tmp_path)


def test_bad_options(cli: Run, good: Path, tmp_path: Path) -> None:
    result = cli("run", good, "--output", tmp_path / "out", "--override", "x")
    assert_clean_failure(result, "--override 'x'", "COLUMN=METHOD")
    result = cli("run", good, "--output", tmp_path / "out", "--override", "s=robust")
    assert_clean_failure(result, "override for column 's'")
    result = cli("run", good, "--output", tmp_path / "out", "--method", "softmax")
    assert_clean_failure(result, "'method'", "softmax")
    result = cli("run", good, "--output", tmp_path / "out", "--dtype", "int8")
    assert_clean_failure(result, "'dtype'", "int8")
    assert_clean_failure(cli("fit", good), "missing --stats")
    assert_clean_failure(cli("run", good), "missing --output")
    assert no_output(tmp_path)


def test_unreachable_scheduler(cli: Run, good: Path, tmp_path: Path) -> None:
    result = cli(
        "fit", good, "--stats", tmp_path / "s.json", "--scheduler", "tcp://127.0.0.1:1", config=False
    )
    assert_clean_failure(result, "cannot reach the Dask scheduler at tcp://127.0.0.1:1")


def test_pandas_written_frame_with_nan(cli: Run, tmp_path: Path) -> None:
    """Not an error: a file written by pandas (NaN as nulls, an index column) works."""
    directory = tmp_path / "pd"
    directory.mkdir()
    pd.DataFrame({"x": [1.0, np.nan, 3.0]}, index=[5, 6, 7]).to_parquet(directory / "p.parquet")
    result = cli("run", directory, "--output", tmp_path / "out")
    assert result.code == 0, result.stderr
    out = pd.read_parquet(tmp_path / "out")
    assert out.index.tolist() == [5, 6, 7]
    assert np.isnan(out["x"].iloc[1])


def test_outputs_are_read_only_when_their_manifest_matches(cli: Run, good: Path, tmp_path: Path) -> None:
    """The commit protocol's reader side: inspect and fit accept a normpipe output only
    while its _SUCCESS manifest matches the parts."""
    assert cli("run", good, "--output", tmp_path / "out").code == 0
    shown = cli("inspect", tmp_path / "out")
    assert shown.code == 0, shown.stderr
    assert "10 rows" in shown.stdout
    (tmp_path / "out" / "p1.parquet").unlink()
    for args in (("inspect", tmp_path / "out"), ("fit", tmp_path / "out", "--stats", tmp_path / "s.json")):
        assert_clean_failure(cli(*args), "p1.parquet is listed in _SUCCESS but missing")
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "out" / "p1.parquet")  # a stranger in its place
    assert_clean_failure(cli("fit", tmp_path / "out", "--stats", tmp_path / "s.json"), "p1.parquet has")
    (tmp_path / "out" / "_SUCCESS").unlink()
    (tmp_path / "out" / "_STARTED").write_text("{}")  # as an interrupted object-store run leaves it
    assert_clean_failure(
        cli("fit", tmp_path / "out", "--stats", tmp_path / "s.json"), "incomplete normpipe output"
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "_SUCCESS is not valid JSON"),
        (
            '{"format": "normpipe.success", "version": 1, "rows_in": 10, "rows_out": 10, '
            '"files": [{"rows_in": 5, "rows_out": 5}]}',
            "invalid manifest at 'files.0.path'",
        ),
        (
            '{"format": "normpipe.success", "version": 1, "rows_in": 10, "rows_out": 10}',
            "invalid manifest at 'files'",
        ),
    ],
)
def test_damaged_manifest_is_one_clear_line(
    cli: Run, good: Path, tmp_path: Path, content: str, fragment: str
) -> None:
    assert cli("run", good, "--output", tmp_path / "out").code == 0
    (tmp_path / "out" / "_SUCCESS").write_text(content)
    for args in (("inspect", tmp_path / "out"), ("fit", tmp_path / "out", "--stats", tmp_path / "s.json")):
        assert_clean_failure(cli(*args), str(tmp_path / "out"), fragment, "rerun the job")


def test_other_tools_markers_are_left_alone(cli: Run, good: Path, tmp_path: Path) -> None:
    """An empty _SUCCESS (Spark, Hadoop) or another tool's JSON is not normpipe's manifest."""
    for content in ("", "  \n", '{"format": "spark"}'):
        (good / "_SUCCESS").write_text(content)
        assert cli("fit", good, "--stats", tmp_path / "s.json").code == 0
