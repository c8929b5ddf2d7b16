"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normpipe.core.column import ColumnState

K = 64  # small sketches keep the properties fast; any k obeys the same rules

finite_floats = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
any_floats = st.one_of(finite_floats, st.just(np.nan), st.just(np.inf), st.just(-np.inf))

blocks = hnp.arrays(np.float64, st.integers(0, 60), elements=any_floats)


@st.composite
def column_states(draw: st.DrawFn) -> ColumnState:
    return ColumnState.from_block(draw(blocks), K)
