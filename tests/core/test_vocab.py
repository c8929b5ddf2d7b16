"""Value counts: exact against pandas, split invariance, the sketch within its bound."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from normpipe.core.vocab import VocabState


def _state(values: pd.Series, kind: str = "string", parts: int = 1, limit: int = 100_000) -> VocabState:
    chunks = np.array_split(np.arange(len(values)), parts)
    array = pa.array(values, from_pandas=True)
    return VocabState.merge_all(
        [VocabState.from_block(array.take(pa.array(c)), kind, limit) for c in chunks]  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("column", ["carrier", "origin", "dest", "tailnum"])
def test_counts_equal_pandas_value_counts_on_flights(flights: pd.DataFrame, column: str) -> None:
    values = flights[column]
    state = _state(values, parts=7)
    expected = values.value_counts()
    vocabulary = state.vocabulary()
    assert vocabulary.exact
    assert state.nulls == values.isna().sum()
    assert state.total == values.notna().sum()
    assert dict(zip(vocabulary.values, vocabulary.counts, strict=True)) == expected.to_dict()
    # order: count descending, then value
    ordered = sorted(expected.items(), key=lambda vc: (-vc[1], vc[0]))
    assert list(vocabulary.values) == [v for v, _ in ordered]


def test_any_split_gives_the_same_state(flights: pd.DataFrame) -> None:
    values = flights["tailnum"]
    whole = _state(values)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(values))
    shuffled = _state(values.iloc[order].reset_index(drop=True), parts=13)
    assert dict(whole.counts) == dict(shuffled.counts)
    assert whole.nulls == shuffled.nulls


def test_dictionary_and_boolean_and_integer_columns() -> None:
    strings = pa.chunked_array([pa.array(["a", "b", None]), pa.array(["b", "b"])])
    assert dict(VocabState.from_block(strings, "string").counts) == {"a": 1, "b": 3}
    assert dict(VocabState.from_block(pa.array(["a", "b", None]).dictionary_encode(), "string").counts) == {
        "a": 1,
        "b": 1,
    }
    flags = VocabState.from_block(pa.array([True, None, False, True]), "boolean")
    assert dict(flags.counts) == {True: 2, False: 1}
    assert flags.nulls == 1
    codes = VocabState.from_block(pa.array([3, 1, 3], pa.int16()), "integer")
    assert codes.vocabulary().values == (3, 1)


def test_floats_count_nan_as_missing_and_ties_go_to_the_smallest() -> None:
    state = VocabState.from_block(pa.array([2.0, np.nan, None, 1.0, 2.0, 1.0]), "float")
    assert state.nulls == 2
    assert state.total == 4
    assert state.most_frequent() == 1.0  # 1.0 and 2.0 tie: the smallest, as SimpleImputer


def test_past_the_limit_the_sketch_stays_within_its_stated_error() -> None:
    rng = np.random.default_rng(0)
    values = rng.zipf(1.3, size=400_000)
    parts = [
        VocabState.from_block(pa.array(values[i : i + 40_000]), "integer", limit=500)
        for i in range(0, 400_000, 40_000)
    ]
    state = VocabState.merge_all(parts)
    assert not state.exact
    assert state.distinct is None
    bound = state.max_error
    assert 0 < bound <= 0.001 * len(values)
    truth = pd.Series(values).value_counts()
    vocabulary = state.vocabulary(threshold=2 * bound)
    for value, count in zip(vocabulary.values, vocabulary.counts, strict=True):
        assert abs(count - truth[value]) <= bound
    # no value whose true count is above threshold + bound is missed
    must = set(truth[truth > 3 * bound].index)
    assert must <= set(vocabulary.values)
    assert vocabulary.values[:3] == (1, 2, 3)
