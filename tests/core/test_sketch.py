from __future__ import annotations

import struct

import numpy as np
import pytest
from datasketches import kll_doubles_sketch

from normpipe.core.sketch import (
    COMPACTION_SHARE,
    QuantileSketch,
    _capacity,
    compaction_bound,
    rank_error_bound,
)

PROBS = [0.01, 0.25, 0.5, 0.75, 0.99]


def rank_error(values: np.ndarray, estimates: list[float], probabilities: list[float]) -> float:
    """Largest distance between the requested rank and the true rank of the estimates."""
    ordered = np.sort(values)
    n = ordered.size
    worst = 0.0
    for p, q in zip(probabilities, estimates, strict=True):
        low = np.searchsorted(ordered, q, side="left") / n
        high = np.searchsorted(ordered, q, side="right") / n
        worst = max(worst, 0.0 if low <= p <= high else min(abs(p - low), abs(p - high)))
    return worst


@pytest.mark.parametrize("k", [200, 4000])
def test_quantiles_within_stated_bound(rng: np.random.Generator, k: int) -> None:
    values = rng.lognormal(0.0, 2.0, 300_000)
    parts = np.array_split(values, 37)
    sketch = QuantileSketch(k).merge_many([QuantileSketch.from_block(p, k) for p in parts])
    error = rank_error(values, sketch.quantiles(PROBS), PROBS)
    assert (sketch.compaction > 0) == (k == 200)  # blocks of 8,100 values: compacted at k=200
    assert sketch.rank_error == rank_error_bound(k) + compaction_bound(sketch.compaction, values.size)
    assert sketch.rank_error <= (1 + COMPACTION_SHARE) * rank_error_bound(k)
    assert error <= sketch.rank_error


def test_small_inputs_are_exact(rng: np.random.Generator) -> None:
    values = rng.normal(size=1000)
    sketch = QuantileSketch.from_block(values, 4000)
    assert sketch.quantiles([0.0, 1.0]) == [values.min(), values.max()]
    assert rank_error(values, sketch.quantiles(PROBS), PROBS) <= 1.0 / values.size


def test_empty_merge_and_serialization() -> None:
    empty = QuantileSketch(200)
    full = QuantileSketch.from_block(np.arange(10.0), 200)
    assert empty.is_empty
    assert empty.merge(full) is full
    assert full.merge(empty) is full
    assert np.isnan(empty.quantiles([0.5])[0])
    again = QuantileSketch.from_base64(full.to_base64(), 200)
    assert again.quantiles(PROBS) == full.quantiles(PROBS)


def test_readonly_and_float32_blocks() -> None:
    values = np.arange(100.0)[::-1]
    values.flags.writeable = False
    assert QuantileSketch.from_block(values, 200).quantiles([1.0]) == [99.0]
    assert QuantileSketch.from_block(values.astype(np.float32), 200).quantiles([0.0]) == [0.0]
    assert values[0] == 99.0  # the caller's array is not sorted in place


def test_damaged_sketch_is_rejected() -> None:
    data = QuantileSketch.from_block(np.arange(1000.0), 200).to_base64()
    with pytest.raises(ValueError, match="not a valid KLL sketch"):
        QuantileSketch.from_base64(data[: len(data) // 2], 200)
    with pytest.raises(ValueError, match="not a valid KLL sketch"):
        QuantileSketch.from_base64("not base64!", 200)


@pytest.mark.parametrize("k", [8, 200, 1000, 4000])
def test_capacity_is_the_librarys(rng: np.random.Generator, k: int) -> None:
    """A serialized KLL sketch's first level offset plus its items is its capacity."""
    for n in (2 * k, 10 * k, 300 * k):
        sketch = kll_doubles_sketch(k)
        sketch.update(rng.normal(size=n))
        data = sketch.serialize()
        levels = data[18]
        first = struct.unpack_from("<I", data, 20)[0]
        assert first + sketch.num_retained == _capacity(k, levels), (k, n)


@pytest.mark.parametrize("k", [200, 1000])
def test_compacted_blocks_are_kll_sketches_within_the_stated_bound(rng: np.random.Generator, k: int) -> None:
    """Blocks large enough become compacted KLL sketches that DataSketches reads,
    merges (with sketches fed value by value) and queries: every value counted, the
    extremes exact, quantiles within the KLL bound plus the compaction's."""
    blocks = [np.sort(rng.lognormal(0.0, 2.0, size)) for size in (16 * k, 250_001, 99_999, 500)]
    sketches = [QuantileSketch.from_sorted(b.copy(), k) for b in blocks]
    assert sketches[0].compaction > 0  # compacted
    assert sketches[-1].compaction == 0  # 500 values: into the sketch one by one
    assert all(s.rank_error <= (1 + COMPACTION_SHARE) * rank_error_bound(k) for s in sketches)
    for block, sketch in zip(blocks, sketches, strict=True):
        loaded = kll_doubles_sketch.deserialize(sketch.data)
        assert (loaded.n, sketch.n) == (block.size, block.size)
        assert (loaded.get_min_value(), loaded.get_max_value()) == (block[0], block[-1])
        assert loaded.get_rank(block[-1], True) == 1.0
        assert rank_error(block, sketch.quantiles(PROBS), PROBS) <= sketch.rank_error
    merged = sketches[0].merge_many(sketches[1:])
    values = np.concatenate(blocks)
    assert merged.n == values.size
    assert merged.compaction == sum(s.compaction for s in sketches)
    assert rank_error(values, merged.quantiles(PROBS), PROBS) <= merged.rank_error
    again = QuantileSketch.from_base64(merged.to_base64(), k, merged.compaction)
    assert again.quantiles(PROBS) == merged.quantiles(PROBS)
    assert again.rank_error == merged.rank_error


def test_the_compaction_bound_is_small_where_it_is_used() -> None:
    """16 M values in 64 blocks of 250 k at k=4000 (strides of 32): 2.6e-5 more than KLL's
    7.2e-4; one block of 250 k: 2.1e-4 more."""
    assert compaction_bound(64 * 32**2, 16_000_000) < 2.7e-5
    assert compaction_bound(32**2, 250_000) < 2.2e-4
    assert compaction_bound(0, 100) == 0.0
