from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings

from normpipe.core.column import ColumnState, TableState
from tests.strategies import column_states


def test_counts_every_kind_of_missing_value() -> None:
    block = pa.array([1.0, None, np.nan, np.inf, -np.inf, 3.0, None])
    s = ColumnState.from_block(block, 200)
    assert (s.moments.count, s.nulls, s.nans, s.posinf, s.neginf) == (2, 2, 1, 1, 1)
    assert s.rows == 7
    summary = s.finalize([0.5])
    assert (summary.mean, summary.min, summary.max) == (2.0, 1.0, 3.0)


def test_all_nan_column_finalizes_to_nan() -> None:
    s = ColumnState.from_block(np.full(10, np.nan), 200)
    summary = s.finalize([0.5])
    assert summary.count == 0
    assert summary.nans == 10
    assert all(
        np.isnan(v) for v in (summary.mean, summary.std, summary.min, summary.max, summary.quantiles[0.5])
    )


def test_integer_and_float32_blocks() -> None:
    ints = ColumnState.from_block(pa.array([1, 2, None, 4], type=pa.int32()), 200)
    assert (ints.moments.count, ints.nulls, ints.moments.mean) == (3, 1, 7 / 3)
    f32 = ColumnState.from_block(pa.array(np.array([0.5, 1.5], dtype=np.float32)), 200)
    assert f32.moments.mean == 1.0


def test_chunked_and_empty_blocks() -> None:
    chunked = pa.chunked_array([[1.0, 2.0], [], [3.0, None]])
    s = ColumnState.from_block(chunked, 200)
    assert (s.moments.count, s.nulls) == (3, 1)
    empty = ColumnState.from_block(pa.array([], type=pa.float64()), 200)
    assert empty.rows == 0
    assert empty.sketch.is_empty


def test_table_state_merges_rows_and_columns() -> None:
    t1 = pa.table({"a": [1.0, 2.0], "b": [1, 2]})
    t2 = pa.table({"a": [3.0], "b": [None]}, schema=pa.schema([("a", pa.float64()), ("b", pa.int64())]))
    merged = TableState.from_block(t1, ["a", "b"], 200).merge(TableState.from_block(t2, ["a", "b"], 200))
    assert merged.rows == 3
    assert merged.columns["a"].moments.mean == 2.0
    assert merged.columns["b"].nulls == 1


def _same(a: ColumnState, b: ColumnState) -> None:
    assert (a.nulls, a.nans, a.posinf, a.neginf) == (b.nulls, b.nans, b.posinf, b.neginf)
    assert a.moments.count == b.moments.count
    if a.moments.count:
        assert (a.moments.min, a.moments.max) == (b.moments.min, b.moments.max)
        assert a.moments.mean == pytest.approx(b.moments.mean, rel=1e-9, abs=1e-3)
        assert a.moments.m2 == pytest.approx(b.moments.m2, rel=1e-7, abs=1e-3)
    assert a.sketch.is_empty == b.sketch.is_empty


@settings(max_examples=150, deadline=None)
@given(column_states(), column_states(), column_states())
def test_merge_properties(a: ColumnState, b: ColumnState, c: ColumnState) -> None:
    _same(a.merge(b).merge(c), a.merge(b.merge(c)))
    _same(a.merge(b), b.merge(a))
    empty = ColumnState.empty(a.sketch.k)
    assert a.merge(empty) == a
    assert empty.merge(a) == a
    assert a.merge(b).rows == a.rows + b.rows


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.0, -0.0, 3.0, 3.0, -2.0, -2.0, -2.0, np.nan, np.inf]),  # ties at both ends, both zeros
        np.array([5.0] * 7),  # constant: every value is the minimum and the maximum
        np.array([np.nan, -np.inf]),  # no finite value
        np.array([], dtype=np.float64),
    ],
)
def test_zero_and_bound_counts_match_numpy(values: np.ndarray) -> None:
    state = ColumnState.from_block(pa.array(values))
    finite = values[np.isfinite(values)]
    assert state.zeros == np.count_nonzero(finite == 0.0)
    assert state.at_min == (np.count_nonzero(finite == finite.min()) if finite.size else 0)
    assert state.at_max == (np.count_nonzero(finite == finite.max()) if finite.size else 0)
