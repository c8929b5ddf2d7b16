"""The numeric core: mergeable statistic states. Imports numpy and pyarrow only."""

from normpipe.core.column import ColumnState, ColumnSummary, TableState
from normpipe.core.moments import Moments
from normpipe.core.sketch import DEFAULT_K, QuantileSketch, rank_error_bound

__all__ = [
    "DEFAULT_K",
    "ColumnState",
    "ColumnSummary",
    "Moments",
    "QuantileSketch",
    "TableState",
    "rank_error_bound",
]
