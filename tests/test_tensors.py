"""Tensor columns through the Dask pass, the artifact and the writer: statistics equal
numpy over every file, the output reads back as float32 lists in every common reader,
the artifact reloads to the same maps, updates merge, and bad inputs are one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from distributed import Client
from PIL import Image

import normpipe
from normpipe import datagen
from normpipe.cluster import dask_client
from normpipe.config import ClusterConfig
from normpipe.report import report_html
from normpipe.stats import Stats
from tests.test_bad_input import Run, assert_clean_failure, cli, no_output  # noqa: F401

TENSORS = {
    "img": {"shape": [3, 8, 8], "layout": "CHW", "per": "channel", "method": "zscore"},
    "emb": {"per": "element", "method": "maxabs"},
    "seq": {"per": "all", "method": "robust"},
}


def _dataset(
    directory: Path, rng: np.random.Generator, files: int = 3, rows: int = 400
) -> dict[str, np.ndarray]:
    """Files of uint8 images (per-channel offsets), float32 embeddings as
    fixed_shape_tensor, variable-length float lists and a scalar target; returns the
    arrays, concatenated, for the oracle."""
    directory.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list[np.ndarray]] = {"img": [], "emb": [], "seq": [], "lengths": [], "y": []}
    for f in range(files):
        base = np.array([40, 120, 200]).reshape(1, 3, 1, 1)
        img = np.clip(base + rng.normal(0, 25, size=(rows, 3, 8, 8)), 0, 255).astype(np.uint8)
        emb = (rng.normal(size=(rows, 4)) * [1, 10, 100, 0.1]).astype(np.float32)
        lengths = rng.integers(1, 9, size=rows)
        seq = rng.lognormal(size=int(lengths.sum()))
        emb_type = pa.fixed_shape_tensor(pa.float32(), [4])
        table = pa.table(
            {
                "img": pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), 192),
                "emb": pa.ExtensionArray.from_storage(
                    emb_type, pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 4)
                ),
                "seq": pa.ListArray.from_arrays(
                    pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)), pa.array(seq)
                ),
                "y": rng.normal(size=rows),
            }
        )
        pq.write_table(table, directory / f"part-{f}.parquet", row_group_size=150)
        for key, value in (("img", img), ("emb", emb), ("seq", seq), ("lengths", lengths)):
            parts[key].append(value)
    return {key: np.concatenate(values) for key, values in parts.items() if values}


def test_run_equals_numpy_and_reads_back_everywhere(
    client: Client, tmp_path: Path, rng: np.random.Generator
) -> None:
    data = _dataset(tmp_path / "data", rng)
    stats, manifest = normpipe.run(tmp_path / "data", tmp_path / "out", tensors=TENSORS, client=client)
    img = data["img"].astype(np.float64)
    # statistics: per channel, per element, pooled, equal to numpy over every file
    tensor = stats.tensors["img"].state
    np.testing.assert_allclose(tensor.moments.mean, img.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(tensor.std, img.std(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(tensor.moments.min, img.min(axis=(0, 2, 3)))
    emb = data["emb"].astype(np.float64)
    np.testing.assert_allclose(stats.tensors["emb"].state.moments.max, emb.max(axis=0), rtol=0)
    seq = stats.tensors["seq"].state
    assert seq.moments.count[0] == data["seq"].size
    np.testing.assert_allclose(seq.moments.mean, [data["seq"].mean()], rtol=1e-12)
    assert "y" in stats.columns  # scalar columns alongside, in the same pass
    page = report_html(stats)  # the report shows each channel's statistics
    assert '<section class="tensor" data-column="img">' in page
    assert f"<td>{tensor.moments.mean[2]:.6g}</td><td>{tensor.std[2]:.6g}</td>" in page
    # the output, through readers normpipe did not write
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text())["rows_out"] == 1200
    table = ds.dataset(tmp_path / "out", format="parquet").to_table()
    assert table.schema.field("img").type == pa.list_(pa.field("element", pa.float32()), 192)
    assert isinstance(table.schema.field("emb").type, pa.FixedShapeTensorType)
    assert table.schema.field("seq").type == pa.list_(pa.field("element", pa.float32()))
    out = np.asarray(table.column("img").combine_chunks().values).reshape(img.shape)
    expected = (img - img.mean(axis=(0, 2, 3), keepdims=True)) / img.std(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    emb_out = np.asarray(table.column("emb").combine_chunks().storage.values).reshape(emb.shape)
    np.testing.assert_allclose(emb_out, emb / np.abs(emb).max(axis=0), rtol=1e-6)
    frame = pd.read_parquet(tmp_path / "out")
    assert frame["img"].iloc[0].dtype == np.float32
    assert frame["img"].iloc[0].shape == (192,)
    polars = pl.read_parquet(tmp_path / "out" / "*.parquet")
    assert polars.schema["img"] == pl.Array(pl.Float32, 192)
    assert polars.schema["seq"] == pl.List(pl.Float32)
    lengths = duckdb.sql(f"select len(seq) from '{tmp_path / 'out'}/*.parquet'").fetchnumpy()
    np.testing.assert_array_equal(next(iter(lengths.values())), data["lengths"])
    # the artifact reloads to the same maps: transform and inverse in memory
    loaded = Stats.load(tmp_path / "out" / "_stats.json")
    assert loaded.to_bytes() == (tmp_path / "out" / "_stats.json").read_bytes()  # deterministic
    source = ds.dataset(tmp_path / "data", format="parquet").to_table()
    again = loaded.transform(source)
    for name in TENSORS:
        assert again.column(name).combine_chunks().equals(table.column(name).combine_chunks())
    back = loaded.inverse_transform(again, columns=["img"])
    restored = np.asarray(back.column("img").combine_chunks().values).reshape(img.shape)
    np.testing.assert_allclose(restored, img, atol=1e-4)  # float32 output, back to pixel units
    assert manifest["files"][0]["rows_out"] == 400


def test_update_merges_tensor_states(client: Client, tmp_path: Path, rng: np.random.Generator) -> None:
    _dataset(tmp_path / "all", rng, files=4)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    for i, path in enumerate(sorted((tmp_path / "all").iterdir())):
        path.rename(tmp_path / ("old" if i < 2 else "new") / path.name)
    first = normpipe.fit(tmp_path / "old", tensors=TENSORS, client=client)
    merged, files = normpipe.update(tmp_path / "new", first, client=client)
    (tmp_path / "every").mkdir()
    for part in (*sorted((tmp_path / "old").iterdir()), *sorted((tmp_path / "new").iterdir())):
        (tmp_path / "every" / part.name).write_bytes(part.read_bytes())
    whole = normpipe.fit(tmp_path / "every", tensors=TENSORS, client=client)
    assert files == 2
    for name in TENSORS:
        a, b = merged.tensors[name].state, whole.tensors[name].state
        np.testing.assert_array_equal(a.moments.count, b.moments.count)
        np.testing.assert_allclose(a.moments.mean, b.moments.mean, rtol=1e-12)
        np.testing.assert_allclose(a.moments.m2, b.moments.m2, rtol=1e-12)
        assert a.rows == b.rows == 1600


def test_tensor_only_dataset_and_declared_pixel_range(client: Client, tmp_path: Path) -> None:
    pixels = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 3)
    directory = tmp_path / "px"
    directory.mkdir()
    column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), 48)
    pq.write_table(pa.table({"px": column}), directory / "p.parquet")
    spec = {"px": {"shape": [4, 4, 3], "layout": "HWC", "method": "minmax", "range": [0, 255]}}
    stats, _ = normpipe.run(directory, tmp_path / "out", tensors=spec, client=client)
    out = pq.read_table(tmp_path / "out" / "p.parquet").column("px").combine_chunks()
    np.testing.assert_allclose(np.asarray(out.values), pixels.reshape(-1) / 255.0, rtol=1e-6)
    assert stats.columns == {}


def test_bad_tensor_inputs_are_one_line(cli: Run, tmp_path: Path) -> None:  # noqa: F811
    data = tmp_path / "data"
    data.mkdir()
    good = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(12)), 6)
    pq.write_table(pa.table({"v": good, "s": ["a", "b"]}), data / "a.parquet")
    config = tmp_path / "c.yaml"

    def run(tensors: str) -> object:
        config.write_text(f"cluster: {{processes: false, workers: 1}}\ntensors:\n{tensors}\n")
        return cli("run", data, "--output", tmp_path / "out", "--config", config)

    assert_clean_failure(run("  v: {shape: [4, 2]}"), "column 'v' holds 6 values a row", "needs 8")
    assert_clean_failure(run("  s: {per: all}"), "column 's' is string, not a list of numbers")
    assert_clean_failure(run("  nope: {per: all}"), "tensor column 'nope' is not in")
    assert_clean_failure(run("  v: {method: quantile}"), "tensors.v.method", "tensor columns take one of")
    # ragged rows of a list column declared with a shape
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [1.0]]), "s": ["a", "b"]}), data / "a.parquet")
    assert_clean_failure(run("  v: {shape: [2], per: element}"), "a.parquet", "row 1 holds 1 values")
    # mixed types across files
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0]]), "s": ["a"]}), data / "a.parquet")
    pq.write_table(pa.table({"v": ["x"], "s": ["a"]}), data / "b.parquet")
    assert_clean_failure(run("  v: {shape: [2], per: element}"), "b.parquet", "not a list of numbers")
    assert no_output(tmp_path)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_encoded_images_equal_pillow_and_numpy(client: Client, tmp_path: Path) -> None:
    paths = datagen.images(tmp_path / "imgs", rows=600, files=3, size=12)
    stats, _ = normpipe.run(
        tmp_path / "imgs", tmp_path / "out", tensors={"image": {"per": "channel"}}, client=client
    )
    source = pq.read_table(paths[0]).column("image").to_pylist()
    pixels = np.concatenate(
        [
            np.stack(
                [np.asarray(Image.open(io.BytesIO(b))) for b in pq.read_table(p).column("image").to_pylist()]
            )
            for p in paths
        ]
    ).astype(np.float64)  # Pillow's decode: the oracle, HWC
    state = stats.tensors["image"].state
    assert state.layout.shape == (3, 12, 12)  # found from the first image, in the default CHW
    np.testing.assert_allclose(state.moments.mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(state.std, pixels.std(axis=(0, 1, 2)), rtol=1e-12)
    out = pq.read_table(tmp_path / "out" / paths[0].name).column("image").combine_chunks()
    assert out.type == pa.fixed_shape_tensor(pa.float32(), [3, 12, 12])
    first = np.asarray(Image.open(io.BytesIO(source[0]))).transpose(2, 0, 1)  # CHW
    mean, std = state.moments.mean[:, None, None], state.std[:, None, None]
    np.testing.assert_allclose(
        np.asarray(out.storage.values[: 3 * 144]).reshape(3, 12, 12),
        (first - mean) / std,
        rtol=1e-5,
        atol=1e-6,
    )
    # statistics only: the output keeps the encoded bytes, decoded on the fly from the artifact
    spec = {"image": {"per": "channel", "output": "none"}}
    kept, _ = normpipe.run(tmp_path / "imgs", tmp_path / "kept", tensors=spec, client=client)
    copy = pq.read_table(tmp_path / "kept" / paths[0].name)
    assert copy.column("image").to_pylist() == source
    mapped = kept.transform(copy, columns=["image"]).column("image").combine_chunks()
    assert mapped.equals(out)


def test_bad_images_are_one_line_or_skipped(cli: Run, client: Client, tmp_path: Path) -> None:  # noqa: F811
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    rgb = [_png(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)) for _ in range(5)]
    pq.write_table(pa.table({"image": pa.array(rgb, pa.binary())}), data / "a.parquet")
    damaged = [*rgb[:3], b"\x89PNG not really", rgb[3]]
    pq.write_table(pa.table({"image": pa.array(damaged, pa.binary())}), data / "b.parquet")
    config = tmp_path / "c.yaml"
    config.write_text("cluster: {processes: false, workers: 1}\ntensors:\n  image: {per: channel}\n")
    result = cli("run", data, "--output", tmp_path / "out", "--config", config)
    assert_clean_failure(result, "b.parquet: column 'image', row 3", "do not decode as an image")
    assert no_output(tmp_path)
    # on_error: skip counts the row as a skipped null row, and the output holds it as null
    stats, _ = normpipe.run(data, tmp_path / "out", tensors={"image": {"on_error": "skip"}}, client=client)
    state = stats.tensors["image"].state
    assert (state.rows, state.nulls, state.skipped) == (10, 1, 1)
    out = pq.read_table(tmp_path / "out" / "b.parquet").column("image")
    assert out.is_null().to_pylist() == [False, False, False, True, False]
    # a grey image among colour ones: mixed channel counts
    grey = _png(rng.integers(0, 255, (6, 6), dtype=np.uint8))
    pq.write_table(pa.table({"image": pa.array([*rgb[:2], grey], pa.binary())}), data / "b.parquet")
    result = cli("run", data, "--output", tmp_path / "out2", "--config", config)
    assert_clean_failure(result, "b.parquet: column 'image', row 2", "6x6 with 1 channel", "6x6 with 3")


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


@pytest.mark.slow
def test_encoded_images_larger_than_the_workers_memory(tmp_path: Path) -> None:
    """530 MB of PNGs (128x128, 3 channels) through one 250 MB worker: statistics equal
    numpy's and the worker's peak stays under its limit (row groups are decoded a slice
    of rows at a time, pixels ordered by counting)."""
    rng = np.random.default_rng(5)
    pixels, _ = datagen.draw_discs(rng, 300, size=128)
    encoded = [_png(p) for p in pixels]
    data = tmp_path / "big"
    data.mkdir()
    counts = np.zeros(300, dtype=np.int64)
    for f in range(4):
        picks = rng.integers(0, 300, size=4200)
        np.add.at(counts, picks, 1)
        table = pa.table({"image": pa.array([encoded[i] for i in picks], pa.binary()), "n": picks})
        pq.write_table(table, data / f"part-{f}.parquet", row_group_size=120, compression="none")
    size = sum(p.stat().st_size for p in data.iterdir())
    assert size > 2 * 250_000_000
    with dask_client(ClusterConfig(workers=1, threads_per_worker=1, memory_limit="250MB")) as client:
        stats = normpipe.fit(data, tensors={"image": {"per": "channel"}}, client=client)
        peaks = client.run(_peak_rss_bytes)
    assert max(peaks.values()) < 250_000_000, peaks
    # the oracle: each distinct image's per-channel sums, weighted by how often it occurs
    values = pixels.reshape(300, -1, 3).astype(np.float64)
    n = counts.sum() * values.shape[1]
    mean = (counts[:, None] * values.sum(axis=1)).sum(axis=0) / n
    var = (counts[:, None] * ((values - mean) ** 2).sum(axis=1)).sum(axis=0) / n
    state = stats.tensors["image"].state
    assert state.rows == 16_800
    np.testing.assert_allclose(state.moments.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(state.std, np.sqrt(var), rtol=1e-12)
    for channel in range(3):
        sketch = state.sketches[channel]
        seen = pixels[..., channel].reshape(300, -1)[np.repeat(np.arange(300), counts)]
        histogram = np.bincount(seen.reshape(-1), minlength=256)
        cdf = np.cumsum(histogram) / histogram.sum()
        (median,) = sketch.quantiles([0.5])
        below, upto = (cdf[int(median) - 1] if median >= 1 else 0.0), cdf[int(median)]
        assert below - sketch.rank_error <= 0.5 <= upto + sketch.rank_error


def test_large_tensor_row_groups_are_written_in_slices(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from normpipe import writer

    paths = datagen.images(tmp_path / "imgs", rows=300, files=1, size=16)
    normpipe.run(paths[0], tmp_path / "whole", tensors={"image": {}}, client=client)
    monkeypatch.setattr(writer, "ROW_GROUP_BYTES", 100_000)  # 3x16x16 float32: 3 KB a row
    normpipe.run(paths[0], tmp_path / "sliced", tensors={"image": {}}, client=client)
    name = paths[0].name
    sliced = pq.ParquetFile(tmp_path / "sliced" / name)
    assert pq.ParquetFile(paths[0]).metadata.num_row_groups == 1
    assert sliced.metadata.num_row_groups == 10  # 300 rows of 3 KB in slices of 32 rows
    assert sliced.read().equals(pq.read_table(tmp_path / "whole" / name))


def test_digits_images_per_channel_and_per_element(client: Client, tmp_path: Path) -> None:
    """scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels) as a uint8
    fixed_shape_tensor [1, 8, 8]: per channel and per pixel statistics equal numpy."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    storage = pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 64)
    column = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.uint8(), [1, 8, 8]), storage)
    table = pa.table({"pixels": column, "digit": digits.target.astype(np.float64)})
    data = tmp_path / "digits"
    data.mkdir()
    tensors = {"pixels": {"per": "channel"}, "pixels_by_element": {"per": "element"}}
    doubled = table.append_column("pixels_by_element", column)
    for i, start in enumerate(range(0, 1797, 600)):
        pq.write_table(doubled.slice(start, 600), data / f"part-{i}.parquet", row_group_size=250)
    stats = normpipe.fit(data, tensors=tensors, client=client)
    x = images.astype(np.float64)
    channel = stats.tensors["pixels"].state
    np.testing.assert_allclose(channel.moments.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(channel.std, [x.std()], rtol=1e-12)
    (median,) = channel.sketches[0].quantiles([0.5])
    assert median == np.quantile(x, 0.5, method="inverted_cdf")  # 16 levels: exact
    element = stats.tensors["pixels_by_element"].state
    flat = x.reshape(1797, 64)
    np.testing.assert_allclose(element.moments.mean, flat.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(element.std, flat.std(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(element.moments.max, flat.max(axis=0))
    # pixels that are 0 in every image (a constant element) map to 0 with scale 1
    out = stats.transform(doubled, columns=["pixels_by_element"]).column("pixels_by_element")
    mapped = np.asarray(out.combine_chunks().storage.values).reshape(1797, 64)
    constant = flat.max(axis=0) == flat.min(axis=0)
    assert constant.any()
    assert not mapped[:, constant].any()


@pytest.mark.slow
def test_tensor_output_larger_than_the_workers_memory(tmp_path: Path) -> None:
    """PNGs of 128x128 written as float32 tensors (390 MB of output, 67 MB a row group
    once decoded) through one 300 MB worker: row groups are mapped and written in slices
    of rows, without reading ahead, each slice's chunks kept apart."""
    rng = np.random.default_rng(6)
    pixels, _ = datagen.draw_discs(rng, 60, size=128)
    encoded = [_png(p) for p in pixels]
    data = tmp_path / "imgs"
    data.mkdir()
    picks = rng.integers(0, 60, size=2000)
    table = pa.table({"image": pa.array([encoded[i] for i in picks], pa.binary()), "n": picks})
    pq.write_table(table, data / "part-0.parquet", row_group_size=500)
    with dask_client(ClusterConfig(workers=1, threads_per_worker=1, memory_limit="300MB")) as client:
        stats, manifest = normpipe.run(data, tmp_path / "out", tensors={"image": {}}, client=client)
        peaks = client.run(_peak_rss_bytes)
    assert max(peaks.values()) < 300_000_000, peaks
    out = pq.ParquetFile(tmp_path / "out" / "part-0.parquet")
    assert manifest["rows_out"] == out.metadata.num_rows == 2000
    assert out.metadata.num_row_groups > 4  # 500-row groups of 98 MB cut into slices
    first = out.read_row_group(0).column("image").combine_chunks()
    expected = stats.transform(table.slice(0, len(first)), columns=["image"]).column("image")
    assert first.equals(expected.combine_chunks())


def test_variable_lists_per_position_through_the_pass_and_the_artifact(
    client: Client, tmp_path: Path, rng: np.random.Generator
) -> None:
    data = _dataset(tmp_path / "data", rng, files=2, rows=300)
    stats, _ = normpipe.run(
        tmp_path / "data", tmp_path / "out", tensors={"seq": {"per": "element"}}, client=client
    )
    lengths, values = data["lengths"], data["seq"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    state = stats.tensors["seq"].state
    assert state.slots == lengths.max()
    first = values[offsets[:-1]]  # position 0 of every list
    assert state.moments.mean[0] == pytest.approx(first.mean(), rel=1e-12)
    loaded = Stats.load(tmp_path / "out" / "_stats.json")
    assert loaded.to_bytes() == (tmp_path / "out" / "_stats.json").read_bytes()
    written = ds.dataset(tmp_path / "out", format="parquet").to_table().column("seq").combine_chunks()
    again = loaded.transform(ds.dataset(tmp_path / "data", format="parquet").to_table(), columns=["seq"])
    assert again.column("seq").combine_chunks().equals(written)


@pytest.mark.slow
def test_bad_images_in_every_file_are_one_line_with_process_workers(tmp_path: Path) -> None:
    """Every task fails on the same bad input at about the same time: the first failure
    ends the run, and the others, still executing while normpipe's cluster shuts down,
    must not print their workers' tracebacks."""
    import subprocess
    import sys

    datagen.images(tmp_path / "imgs", rows=400, files=4, size=8)
    config = tmp_path / "c.yaml"
    config.write_text("cluster: {workers: 2}\ntensors:\n  image: {shape: [3, 4, 4]}\n")
    for _ in range(4):  # a race: repeated
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "normpipe.cli",
                "run",
                str(tmp_path / "imgs"),
                "-o",
                str(tmp_path / "out"),
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert len(lines) == 1, done.stdout + done.stderr
        assert "images are 4x4 with 3" in lines[0]
