"""The registry of methods: what a user may ask for, parsed by name, and fitting.

Each method is one class in :mod:`normpipe.methods` (``auto`` in :mod:`normpipe.auto`);
the table of methods, options and maps is there. Adding a method is one new class
there and its name in :data:`Fitted` below.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from normpipe.auto import LOG_KURTOSIS_LIMIT, LOG_SKEW_LIMIT, Auto, choose
from normpipe.core.column import ColumnState, ColumnSummary
from normpipe.core.groups import GroupMoments
from normpipe.methods import (
    Clip,
    FittedScaler,
    Log1p,
    MaxAbs,
    Method,
    MinMax,
    Quantile,
    Robust,
    SignedLog,
    ZScore,
)
from normpipe.params import Params

__all__ = [
    "GROUP_METHODS",
    "LOG_KURTOSIS_LIMIT",
    "LOG_SKEW_LIMIT",
    "METHODS",
    "REPORTED_PROBABILITIES",
    "Auto",
    "Clip",
    "FittedScaler",
    "Log1p",
    "MaxAbs",
    "Method",
    "MinMax",
    "Quantile",
    "RequestSpec",
    "Robust",
    "ScalerSpec",
    "SignedLog",
    "ZScore",
    "choose",
    "fit_scaler",
    "group_params",
    "parse_scaler",
]

#: Quantiles recorded for every column, besides those a scaler needs.
REPORTED_PROBABILITIES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

#: The registered methods: one class each (add a new one here).
Fitted = ZScore | MinMax | Robust | MaxAbs | Log1p | SignedLog | Quantile | Clip
Request = Fitted | Auto
ScalerSpec = Annotated[Fitted, Field(discriminator="method")]
#: What a user may ask for: a scaler or transform, or ``auto``.
RequestSpec = Annotated[Request, Field(discriminator="method")]
_CLASSES: tuple[type[Method], ...] = (ZScore, MinMax, Robust, MaxAbs, Log1p, SignedLog, Quantile, Clip, Auto)
METHODS: tuple[str, ...] = tuple(cls.model_fields["method"].default for cls in _CLASSES)
#: Methods that per-group normalization supports: their parameters follow from
#: per-group moments (the classes that define :meth:`Method.fit_groups`). Quantile-based
#: methods would need a sketch per group and column.
GROUP_METHODS: tuple[str, ...] = tuple(
    cls.model_fields["method"].default for cls in _CLASSES if cls.fit_groups is not Method.fit_groups
)

_SPEC_ADAPTER: TypeAdapter[Request] = TypeAdapter(RequestSpec)


def parse_scaler(value: Any) -> Request:
    """A scaler spec from a method name or a mapping with ``method`` and options.

    >>> parse_scaler("minmax").feature_range
    (0.0, 1.0)
    >>> parse_scaler({"method": "robust", "quantile_range": [10, 90]}).quantile_range
    (10.0, 90.0)
    """
    if isinstance(value, str):
        value = {"method": value}
    return _SPEC_ADAPTER.validate_python(value)


def fit_scaler(
    spec: Method, s: ColumnSummary, state: ColumnState | None = None, name: str = "?"
) -> FittedScaler:
    """Parameters of ``spec`` from a column's statistics.

    ``s.quantiles`` must hold the probabilities of ``spec.probabilities()``;
    ``quantile`` reads its table from ``state``'s sketch. A column with no finite
    value gets the identity map. ``auto`` picks the method with :func:`choose` and
    keeps the reason.

    Raises
    ------
    InputError
        ``log1p`` on negative values, a log method without log moments, or
        ``quantile`` without the column's state (``name`` says which column).
    """
    return spec.fit(s, state, name)


def group_params(spec: Method, moments: GroupMoments, log: GroupMoments | None) -> Params:
    """:func:`fit_scaler`'s parameters for every group at once (same rules: a constant
    group gets scale 1, a group with no finite value the identity map)."""
    return spec.fit_groups(moments, log)
