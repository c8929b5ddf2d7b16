"""Missing values: what a user asks for (:class:`ImputeSpec`), the fill value fitted on
the full pass's statistics (:func:`numeric_fill`, :func:`category_fill`) and the map
that fills before it normalizes or codes (:class:`Imputed`).

A value is missing when it is null, or NaN in a numeric column (as scikit-learn's
``SimpleImputer(missing_values=np.nan)``; +/-inf are values). Strategies:

==============  ================================================================
none            missing stays missing (the default: null / NaN in the output)
mean            the mean of the finite values
median          their median: the sketch's (within its rank error), exact with
                ``quantiles: exact``
most_frequent   the most frequent value (ties: the smallest, as scikit-learn)
constant        ``fill_value``
==============  ================================================================

The fill is a value in the column's own units; the column's method then maps it like
any value (a z-scored column filled with its mean holds 0 there). ``missing_indicator``
adds a 0/1 ``int8`` column ``<name>_missing`` after the column; the inverse puts nulls
back where it says 1 and drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, model_validator

from normpipe.categories import KIND_TYPES, FittedCategories, value_type
from normpipe.core.column import ColumnState, ColumnSummary
from normpipe.core.vocab import VocabState
from normpipe.errors import InputError
from normpipe.methods import FittedScaler

__all__ = [
    "INDICATOR_SUFFIX",
    "INDICATOR_TYPE",
    "ImputeSpec",
    "Imputed",
    "Strategy",
    "category_fill",
    "indicator_name",
    "numeric_fill",
]

Strategy = Literal["none", "mean", "median", "most_frequent", "constant"]
#: The missing indicator of column ``x`` is ``x`` + this suffix.
INDICATOR_SUFFIX = "_missing"
INDICATOR_TYPE = pa.int8()


def indicator_name(name: str) -> str:
    return name + INDICATOR_SUFFIX


class ImputeSpec(BaseModel):
    """Imputation of one column (``impute:`` globally, ``impute_overrides:`` per column);
    a strategy name alone is short for ``{strategy: name}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Strategy = "none"
    fill_value: float | int | str | bool | None = None
    missing_indicator: bool = False

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"strategy": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _constant(self) -> ImputeSpec:
        if self.strategy == "constant" and self.fill_value is None:
            raise ValueError("strategy 'constant' needs fill_value")
        if self.strategy != "constant" and self.fill_value is not None:
            raise ValueError("fill_value is for strategy 'constant'")
        return self

    @property
    def active(self) -> bool:
        """Whether this spec changes the output at all."""
        return self.strategy != "none" or self.missing_indicator


def numeric_fill(name: str, spec: ImputeSpec, summary: ColumnSummary, state: ColumnState) -> float | None:
    """The fill value of a numeric column (``None``: missing stays missing).

    Raises
    ------
    InputError
        No value to compute it from, a constant that is not a number, or most_frequent
        without counts (fitted before they were kept).
    """
    if spec.strategy == "none":
        return None
    if spec.strategy == "constant":
        if isinstance(spec.fill_value, bool) or not isinstance(spec.fill_value, int | float):
            raise InputError(
                f"column '{name}': fill_value {spec.fill_value!r} is not a number; give a number"
            )
        return float(spec.fill_value)
    if summary.count == 0:
        raise InputError(
            f"column '{name}': no finite value to compute the {spec.strategy} from; use constant"
        )
    if spec.strategy == "mean":
        return float(summary.mean)
    if spec.strategy == "median":
        return float(summary.quantiles[0.5])
    if state.counts is None:
        raise InputError(
            f"column '{name}': the statistics hold no value counts for most_frequent; "
            "fit again with this setting"
        )
    return float(state.counts.most_frequent())


def category_fill(name: str, spec: ImputeSpec, state: VocabState) -> Any:
    """The fill value of a categorical column, a value of its type (``None``: nulls stay)."""
    if spec.strategy in ("none", "mean", "median"):  # no meaning for categories
        return None
    if spec.strategy == "most_frequent":
        top = state.most_frequent()
        if top is None:
            raise InputError(f"column '{name}': no value to take the most frequent of; use constant")
        return top
    target = KIND_TYPES[state.kind]
    if isinstance(spec.fill_value, bool) != (state.kind == "boolean") or (
        isinstance(spec.fill_value, str) != (state.kind == "string")
    ):
        raise InputError(
            f"column '{name}': fill_value {spec.fill_value!r} is not one of its {state.kind} values; "
            "give a value of that kind"
        )
    try:
        return pa.scalar(spec.fill_value).cast(target).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise InputError(
            f"column '{name}': fill_value {spec.fill_value!r} is not a {state.kind} value"
        ) from None


def _missing(column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    """Null, or NaN in a float column, per row."""
    missing = pc.is_null(column, nan_is_null=True)
    if isinstance(missing, pa.ChunkedArray):
        missing = missing.combine_chunks()
    return np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class Imputed:
    """A column's map with its missing values filled first (``fill``; ``None``: kept
    missing) and, with ``indicator``, a 0/1 column saying which were."""

    map: FittedScaler | FittedCategories
    strategy: Strategy
    fill: Any = None
    indicator: bool = False

    def filled(
        self, column: pa.Array | pa.ChunkedArray
    ) -> tuple[pa.Array | pa.ChunkedArray, npt.NDArray[np.bool_]]:
        """``column`` with missing values replaced by the fill, and which were missing."""
        missing = _missing(column)
        if self.fill is None or not missing.any():
            return column, missing
        if isinstance(self.map, FittedCategories):
            dtype = value_type(column.type)
            plain = column.cast(dtype) if pa.types.is_dictionary(column.type) else column
            return pc.fill_null(plain, pa.scalar(self.fill, dtype)), missing
        values = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        return pa.array(np.where(missing, self.fill, values)), missing
