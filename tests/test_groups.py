"""Per-group normalization (`--group-by`): pandas groupby as the oracle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

import normpipe
from normpipe.artifact import Stats
from normpipe.cluster import dask_client
from normpipe.config import ClusterConfig
from normpipe.errors import ArtifactError, ConfigError, InputError
from tests.conftest import WriteParts
from tests.helpers import assert_reads_everywhere
from tests.test_bad_input import Run, assert_clean_failure, cli  # noqa: F401
from tests.test_cluster import _peak_rss_bytes

N = 30_000


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(23)
    store = rng.choice(["north", "south", "east", "west", "tiny"], N, p=[0.4, 0.3, 0.2, 0.0999, 0.0001])
    scale = pd.Series(store).map({"north": 1.0, "south": 10.0, "east": 100.0, "west": 0.1, "tiny": 5.0})
    sales = rng.lognormal(3, 0.5, N) * scale.to_numpy()
    sales[rng.random(N) < 0.03] = np.nan
    temp = rng.normal(15, 8, N) + (store == "south") * 10
    temp[store == "tiny"] = 7.0  # a constant group
    return pd.DataFrame({"store": store, "sensor": rng.integers(0, 50, N), "sales": sales, "temp": temp})


def _parts(n: int, k: int) -> list[int]:
    return [n // k] * (k - 1) + [n - (k - 1) * (n // k)]


def oracle(frame: pd.DataFrame, by: str, column: str, method: str) -> np.ndarray:
    """The per-group map computed with pandas groupby on the whole column."""
    x = frame[column]
    if method in ("log1p", "signed_log"):
        x = np.sign(x) * np.log1p(np.abs(x))
    grouped = x.groupby(frame[by])
    if method == "minmax":
        low, high = grouped.transform("min"), grouped.transform("max")
        span = (high - low).where(high > low, 1.0)
        return ((x - low) / span).to_numpy()
    mean, std = grouped.transform("mean"), grouped.transform(lambda s: s.std(ddof=0))
    std = std.where((grouped.transform("max") > grouped.transform("min")) & (std >= 1e-15), 1.0)
    return ((x - mean) / std).to_numpy()


@pytest.mark.parametrize(
    ("by", "methods"), [("store", ("zscore", "minmax")), ("sensor", ("log1p", "zscore"))]
)
def test_per_group_output_equals_pandas_groupby(
    client: Client,
    write_parts: WriteParts,
    frame: pd.DataFrame,
    tmp_path: Path,
    by: str,
    methods: tuple[str, str],
) -> None:
    source = write_parts(frame, _parts(N, 5))
    overrides = {"sales": methods[0], "temp": methods[1]}
    exclude = ["sensor"] if by == "store" else ["store"]
    stats, _ = normpipe.run(
        source, tmp_path / "out", group_by=by, overrides=overrides, exclude=exclude, client=client
    )
    written = pd.read_parquet(tmp_path / "out")
    assert written[by].equals(frame[by])  # the key passes through
    for column, method in overrides.items():
        np.testing.assert_allclose(written[column], oracle(frame, by, column, method), rtol=1e-9, atol=1e-12)
    # the pandas path gives the same numbers, and inverts per group
    in_memory = stats.transform(frame)
    np.testing.assert_allclose(in_memory[["sales", "temp"]], written[["sales", "temp"]], rtol=1e-12)
    back = stats.inverse_transform(written)
    np.testing.assert_allclose(back[["sales", "temp"]], frame[["sales", "temp"]], rtol=1e-9)
    loaded = Stats.load(tmp_path / "out" / "_stats.json")
    assert loaded.groups is not None
    assert loaded.groups.by == by
    np.testing.assert_allclose(
        loaded.transform(frame)[["sales", "temp"]], in_memory[["sales", "temp"]], rtol=0
    )
    assert_reads_everywhere(tmp_path / "out")


def test_unseen_groups_follow_the_configured_fallback(
    client: Client, write_parts: WriteParts, frame: pd.DataFrame, tmp_path: Path
) -> None:
    fitted = normpipe.fit(
        write_parts(frame, _parts(N, 3)), group_by="store", exclude=["sensor"], client=client
    )
    new = pd.DataFrame({"store": ["north", "mars", None], "sensor": [1, 2, 3], "sales": [10.0, 10.0, 10.0]})
    new["temp"] = 20.0
    out = fitted.transform(new)
    north = frame.loc[frame["store"] == "north", "temp"]
    assert out["temp"][0] == pytest.approx((20.0 - north.mean()) / north.std(ddof=0), rel=1e-12)
    everything = frame["temp"]
    for row in (1, 2):  # unseen and null keys: the global statistics
        assert out["temp"][row] == pytest.approx(
            (20.0 - everything.mean()) / everything.std(ddof=0), rel=1e-12
        )
    strict = normpipe.fit(
        write_parts(frame, _parts(N, 3), name="again"),
        group_by="store",
        unseen="error",
        exclude=["sensor"],
        client=client,
    )
    with pytest.raises(InputError, match="group 'mars' of column 'store' was not seen at fit time"):
        strict.transform(new)
    with pytest.raises(ArtifactError, match="normalized per 'store' group"):
        strict.transform_column("temp", [1.0])
    assert strict.transform_column("temp", [20.0], groups=["north"])[0] == pytest.approx(out["temp"][0])


def test_unseen_error_through_the_cli_is_one_line_and_writes_nothing(
    cli: Run,  # noqa: F811
    write_parts: WriteParts,
    frame: pd.DataFrame,
    tmp_path: Path,
) -> None:
    train = write_parts(frame[frame["store"] != "west"], name="train")
    cli(
        "fit",
        train,
        "--stats",
        tmp_path / "s.json",
        "--group-by",
        "store",
        "--unseen",
        "error",
        "--exclude",
        "sensor",
    )
    result = cli(
        "transform", write_parts(frame, name="all"), "--stats", tmp_path / "s.json", "-o", tmp_path / "o"
    )
    assert_clean_failure(result, "group 'west' of column 'store' was not seen at fit time")
    assert not (tmp_path / "o").exists()


def test_plan_rejects_quantile_methods_and_bad_keys(write_parts: WriteParts, frame: pd.DataFrame) -> None:
    source = write_parts(frame)
    with pytest.raises(ConfigError, match="column 'sales': robust is not available per group"):
        normpipe.fit(source, group_by="store", method="robust", exclude=["sensor"])
    with pytest.raises(ConfigError, match="--group-by 'shop' is not a column"):
        normpipe.fit(source, group_by="shop")
    timed = frame.assign(when=pd.Timestamp("2026-01-01"))
    with pytest.raises(ConfigError, match="group keys must be integers, strings, booleans or floats"):
        normpipe.fit(write_parts(timed, name="t"), group_by="when", exclude=["sensor"])


def test_appends_merge_per_group(
    client: Client, write_parts: WriteParts, frame: pd.DataFrame, tmp_path: Path
) -> None:
    half = N // 2
    first = write_parts(frame.iloc[:half], name="first")
    second = write_parts(frame.iloc[half:], name="second")
    full = normpipe.fit(write_parts(frame, name="full"), group_by="store", method="signed_log", client=client)
    partial = normpipe.fit(first, group_by="store", method="signed_log", client=client)
    merged, _ = normpipe.update(second, partial, client=client)
    assert merged.groups is not None
    assert full.groups is not None
    for name, moments in full.groups.moments.items():
        other = merged.groups.moments[name]
        np.testing.assert_array_equal(other.keys, moments.keys)
        np.testing.assert_array_equal(other.count, moments.count)
        np.testing.assert_allclose(other.mean, moments.mean, rtol=1e-12)
        np.testing.assert_allclose(other.m2, moments.m2, rtol=1e-9)
        np.testing.assert_allclose(merged.groups.logs[name].m2, full.groups.logs[name].m2, rtol=1e-9)
    np.testing.assert_allclose(
        merged.transform(frame)[["sales", "temp"]], full.transform(frame)[["sales", "temp"]], rtol=1e-9
    )


def test_damaged_group_arrays_are_one_clear_line(
    client: Client, write_parts: WriteParts, frame: pd.DataFrame, tmp_path: Path
) -> None:
    stats = normpipe.fit(write_parts(frame), group_by="store", exclude=["sensor"], client=client)
    text = stats.to_bytes().decode()
    import json

    doc = json.loads(text)
    doc["groups"]["columns"]["temp"]["mean"] = doc["groups"]["columns"]["temp"]["mean"][:8]
    doc.pop("checksum")
    with pytest.raises(ArtifactError, match="damaged group arrays"):
        Stats.from_bytes(json.dumps(doc).encode())


@pytest.mark.slow
def test_100k_groups_within_the_worker_memory_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    rows, groups = 2_000_000, 100_000
    source = tmp_path / "many"
    source.mkdir()
    for i, bounds in enumerate(np.array_split(np.arange(rows), 8)):
        size = bounds.size
        table = pa.table(
            {
                "sensor": rng.integers(0, groups, size),
                "a": rng.normal(size=size),
                "b": rng.exponential(size=size),
            }
        )
        pq.write_table(table, source / f"part-{i}.parquet", row_group_size=65_536)
    with dask_client(ClusterConfig(workers=2, threads_per_worker=1, memory_limit="300MB")) as client:
        before = client.run(os.getpid)
        stats, manifest = normpipe.run(source, tmp_path / "out", group_by="sensor", client=client)
        after = client.run(os.getpid)
        peaks = client.run(_peak_rss_bytes)
    assert before == after, "a worker was restarted"
    assert max(peaks.values()) < 300_000_000
    assert stats.groups is not None
    assert len(stats.groups.keys) == groups
    assert manifest["rows_out"] == rows
    data = pq.read_table(source).to_pandas()
    out = pq.read_table(tmp_path / "out").to_pandas()
    sample = data["sensor"].isin(range(0, groups, 997))
    expected = oracle(data[sample].reset_index(drop=True), "sensor", "a", "zscore")
    # the oracle groups only the sampled rows, which hold every row of those sensors
    np.testing.assert_allclose(out.loc[sample, "a"].to_numpy(), expected, rtol=1e-9, atol=1e-12)
