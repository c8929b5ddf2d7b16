"""The regression MLP and the streaming Parquet dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from normpipe.train.data import ParquetBatches, split_mask
from normpipe.train.models import MLP


@pytest.fixture
def table_dir(tmp_path: Path) -> Path:
    """4 files x 3 row groups; `id` numbers every row so duplicates can be seen."""
    directory = tmp_path / "rows"
    directory.mkdir()
    rng = np.random.default_rng(0)
    start = 0
    for i, n in enumerate([700, 1000, 1, 1299]):
        ids = np.arange(start, start + n, dtype=np.float64)
        x = rng.normal(size=n)
        y = 3 * x + 0.1 * rng.normal(size=n)
        pq.write_table(pa.table({"id": ids, "x": x, "y": y}), directory / f"p{i}.parquet", row_group_size=400)
        start += n
    (directory / "_SUCCESS").write_text("{}")
    return directory


def ids_of(loader: DataLoader) -> np.ndarray:  # type: ignore[type-arg]
    return np.concatenate([xb[:, 0].numpy() for xb, _ in loader]).astype(np.int64)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_row_once_per_epoch_and_split_is_disjoint(table_dir: Path, workers: int) -> None:
    def loader(split: str, buffer: int) -> DataLoader:  # type: ignore[type-arg]
        data = ParquetBatches(
            table_dir, ["id", "x"], "y", split=split, batch_size=64, shuffle_buffer=buffer, seed=3
        )
        return DataLoader(data, batch_size=None, num_workers=workers)

    train = ids_of(loader("train", 500))
    valid = ids_of(loader("valid", 0))
    everything = ids_of(loader("all", 100))
    assert len(np.unique(train)) == len(train)
    assert len(np.unique(valid)) == len(valid)
    assert set(train).isdisjoint(valid)
    assert sorted(np.concatenate([train, valid])) == list(range(3000)) == sorted(everything)
    assert 0.15 < len(valid) / 3000 < 0.25
    assert not np.array_equal(train, np.sort(train))  # shuffled
    if workers == 0:  # two workers interleave their batches
        assert np.array_equal(valid, np.sort(valid))  # buffer 0 keeps file order


def test_split_does_not_depend_on_workers_or_batches(table_dir: Path) -> None:
    one = ParquetBatches(table_dir, ["id"], "y", split="valid", batch_size=7, shuffle_buffer=0, seed=1)
    two = ParquetBatches(table_dir, ["id"], "y", split="valid", batch_size=500, shuffle_buffer=50, seed=1)
    a = ids_of(DataLoader(one, batch_size=None))
    b = ids_of(DataLoader(two, batch_size=None, num_workers=2))
    assert sorted(a) == sorted(b)
    other_seed = ParquetBatches(table_dir, ["id"], "y", split="valid", shuffle_buffer=0, seed=2)
    assert sorted(ids_of(DataLoader(other_seed, batch_size=None))) != sorted(a)
    mask = split_mask(1, "p0.parquet", 0, 100_000, (0.0, 0.2))
    assert abs(mask.mean() - 0.2) < 0.01
    np.testing.assert_array_equal(mask[500:600], split_mask(1, "p0.parquet", 500, 100, (0.0, 0.2)))


def test_epochs_reshuffle_and_rows_with_nan_are_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "nan"
    directory.mkdir()
    frame = pd.DataFrame({"x": [1.0, np.nan, 3.0, 4.0], "y": [1.0, 2.0, np.inf, 4.0]})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), directory / "p.parquet")
    data = ParquetBatches(directory, ["x"], "y", split="all", batch_size=2, shuffle_buffer=0)
    rows = [float(v) for xb, _ in DataLoader(data, batch_size=None) for v in xb[:, 0]]
    assert rows == [1.0, 4.0]


def test_batches_are_full_except_the_last_per_worker(table_dir: Path) -> None:
    data = ParquetBatches(table_dir, ["x"], "y", split="all", batch_size=128, shuffle_buffer=256, seed=0)
    sizes = [len(yb) for _, yb in DataLoader(data, batch_size=None)]
    assert all(s == 128 for s in sizes[:-1])
    assert sum(sizes) == 3000


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_mlp_norm_layers_and_learning(norm: str) -> None:
    torch.manual_seed(0)
    model = MLP(3, hidden=(16, 16), norm=norm, dropout=0.1)
    kinds = {type(m).__name__ for m in model.modules()}
    expected = {"batch": "BatchNorm1d", "layer": "LayerNorm", "none": None}[norm]
    assert (expected in kinds) if expected else not kinds & {"BatchNorm1d", "LayerNorm"}
    x = torch.randn(512, 3)
    y = (x @ torch.tensor([1.0, -2.0, 0.5])).unsqueeze(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    first = last = None
    for _ in range(200):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
        last = loss.item()
    assert last < 0.2 * first
    model.eval()
    assert model(x[:5]).shape == (5, 1)


def test_mlp_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="norm must be"):
        MLP(3, norm="group")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        MLP(3, dropout=1.5)


def test_folds_partition_rows_and_sample_is_a_fixed_subset(table_dir: Path) -> None:
    def ids(**options) -> np.ndarray:  # type: ignore[no-untyped-def]
        data = ParquetBatches(table_dir, ["id"], "y", shuffle_buffer=0, seed=5, **options)
        return ids_of(DataLoader(data, batch_size=None))

    held = [ids(split="valid", fold=(i, 4)) for i in range(4)]
    assert sorted(np.concatenate(held)) == list(range(3000))  # every row in exactly one fold
    for i in range(4):
        assert sorted(np.concatenate([held[i], ids(split="train", fold=(i, 4))])) == list(range(3000))
        assert 600 < len(held[i]) < 900
    half = ids(split="all", sample=0.5)
    assert 1350 < len(half) < 1650
    np.testing.assert_array_equal(half, ids(split="all", sample=0.5))
    assert set(ids(split="all", sample=0.25)) <= set(half)  # a smaller sample is nested in a larger one
    with pytest.raises(ValueError, match="fold"):
        ParquetBatches(table_dir, ["id"], "y", fold=(4, 4))


def test_stats_applied_while_reading_equal_the_written_normalization(tmp_path: Path) -> None:
    import normpipe

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.lognormal(3, 1, 2000), "y": rng.normal(50, 5, 2000)})
    frame.to_parquet(tmp_path / "raw.parquet")
    stats = normpipe.fit(
        tmp_path / "raw.parquet", method="robust", cluster={"workers": 1, "processes": False}
    )
    on_read = ParquetBatches(tmp_path / "raw.parquet", ["x"], "y", split="all", shuffle_buffer=0, stats=stats)
    x, y = next(iter(on_read))
    expected = stats.transform(frame.iloc[: len(y)])
    np.testing.assert_allclose(x[:, 0].numpy(), expected["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y.numpy(), expected["y"], rtol=1e-6, atol=1e-6)
