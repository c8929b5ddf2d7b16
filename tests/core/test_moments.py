from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normpipe.core.moments import Moments
from tests.strategies import finite_floats

SIZES = [1, 2, 50]


def fold(values: np.ndarray, size: int, split_every: int = 2) -> Moments:
    """Moments of ``values`` in blocks of ``size``, merged as a tree of fan-in ``split_every``."""
    level = [Moments.from_block(values[i : i + size]) for i in range(0, max(values.size, 1), size)]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), split_every):
            acc = level[i]
            for m in level[i + 1 : i + split_every]:
                acc = acc.merge(m)
            nxt.append(acc)
        level = nxt
    return level[0]


@pytest.mark.parametrize("size", [*SIZES, 1000, 1042])
def test_split_invariance_against_numpy(rng: np.random.Generator, size: int) -> None:
    values = rng.lognormal(2.0, 1.5, 1000)
    m = fold(values, size)
    assert m.count == values.size
    np.testing.assert_allclose(m.mean, values.mean(), rtol=1e-12)
    np.testing.assert_allclose(m.variance(), values.var(), rtol=1e-12)
    np.testing.assert_allclose(m.variance(ddof=1), values.var(ddof=1), rtol=1e-12)
    assert (m.min, m.max) == (values.min(), values.max())


def test_large_offset_tiny_variance(rng: np.random.Generator) -> None:
    values = 1e9 + rng.normal(0.0, 1e-3, 200_000)
    exact = np.std(values - 1e9)  # the offset removed exactly first
    for size in (1, 7, 1000, 200_000):
        m = fold(values, size, split_every=4) if size > 1 else fold(values[:5000], 1)
        reference = exact if size > 1 else np.std(values[:5000] - 1e9)
        np.testing.assert_allclose(np.sqrt(m.variance()), reference, rtol=1e-6)


def test_constant_and_single_value() -> None:
    m = Moments.from_block(np.full(1000, 3.25))
    assert (m.mean, m.m2, m.min, m.max) == (3.25, 0.0, 3.25, 3.25)
    one = Moments.from_block(np.array([7.0]))
    assert (one.count, one.mean, one.variance()) == (1, 7.0, 0.0)
    assert np.isnan(one.variance(ddof=1))


def test_empty_is_identity() -> None:
    m = Moments.from_block(np.array([1.0, 2.0, 4.0]))
    assert m.merge(Moments()) is m
    assert Moments().merge(m) is m
    assert Moments.from_block(np.array([])) == Moments()


def test_float32_input_is_accumulated_in_float64(rng: np.random.Generator) -> None:
    values = (1e4 + rng.normal(0, 1, 100_000)).astype(np.float32)
    m = Moments.from_block(values)
    np.testing.assert_allclose(m.variance(), values.astype(np.float64).var(), rtol=1e-10)


arrays = hnp.arrays(np.float64, st.integers(0, 40), elements=finite_floats)


@settings(max_examples=200, deadline=None)
@given(arrays, arrays, arrays)
def test_merge_associative_commutative(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    ma, mb, mc = (Moments.from_block(x) for x in (a, b, c))
    left = ma.merge(mb).merge(mc)
    right = ma.merge(mb.merge(mc))
    swapped = mc.merge(ma).merge(mb)
    for other in (right, swapped):
        assert left.count == other.count
        assert (left.min, left.max) == (other.min, other.max)
        scale = max(1.0, abs(left.mean), float(np.abs(np.concatenate([a, b, c])).max(initial=0)))
        assert abs(left.mean - other.mean) <= 1e-12 * scale
        assert abs(left.m2 - other.m2) <= 1e-9 * max(1.0, left.m2) + 1e-12 * scale**2
