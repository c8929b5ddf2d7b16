from __future__ import annotations

import numpy as np
import pytest

from normpipe.core.sketch import QuantileSketch, rank_error_bound

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
    assert error <= sketch.rank_error == rank_error_bound(k)


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
