"""The methods, one class each: their options, how parameters follow from statistics, and the maps.

The four scalers have scikit-learn's semantics and parameter names; the transforms
after them are fitted from the same single pass (mergeable states) and are invertible:

==========  ==========================================  ====================================
method      options                                     forward map
==========  ==========================================  ====================================
zscore      ``with_mean``, ``with_std``                 ``(x - mean) / std`` (ddof=0)
minmax      ``feature_range``, ``clip``                 ``x * scale + min``, then clip
robust      ``quantile_range``, ``with_centering``,      ``(x - median) / IQR``
            ``with_scaling``, ``unit_variance``
maxabs      (none)                                      ``x / max(|x|)``
log1p       (none)                                      z-score of ``log1p(x)``; needs x >= 0
signed_log  (none)                                      z-score of ``sign(x) log1p(|x|)``
quantile    ``n_quantiles``, ``output``                 the sketch's CDF, onto uniform [0, 1]
                                                        or standard normal (scikit-learn's
                                                        ``QuantileTransformer``, out of core)
clip        ``quantile_range``, ``then``                winsorize at fitted quantiles, then
                                                        ``none``, ``minmax`` or ``robust``
==========  ==========================================  ====================================

``log1p`` and ``signed_log`` take their mean and std from the moments of
``sign(x) log1p(|x|)`` kept in the same pass (for ``x >= 0`` that is ``log1p(x)``);
a value below -1 has no ``log1p`` and maps to NaN. ``quantile`` interpolates
linearly between ``n_quantiles`` quantiles of the sketch, so its output is uniform
(normal) within the sketch's rank error; values beyond the fitted range map to the
ends (0 and 1, or about +/-5.2 for normal). ``clip`` cannot recover clipped values.

A scale that would be zero (a constant column) is replaced by 1, as scikit-learn
does; a column with no finite value gets the identity map. One difference: for
z-score, scikit-learn also calls a column constant when its variance lies within the
rounding error of its own variance algorithm, ``n*eps*var + (n*mean*eps)**2``, which
flags genuinely varying columns with a large offset (``1e9 + N(0, 1e-3)`` over 20,000
rows). normpipe's moments are compensated, so it calls a column constant only when
its minimum equals its maximum or its std is below ``10 * eps``. Maps are pure numpy
functions: NaN stays NaN and +/-inf stay infinite (clipped by ``minmax`` with
``clip=True``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from normpipe.core.column import ColumnState, ColumnSummary, signed_log
from normpipe.core.groups import GroupMoments
from normpipe.core.moments import Moments
from normpipe.errors import InputError
from normpipe.params import Affine, Clipped, Linear, NoParams, Params

__all__ = [
    "Clip",
    "FittedScaler",
    "Form",
    "Log1p",
    "MaxAbs",
    "Method",
    "MinMax",
    "Quantile",
    "Robust",
    "SignedLog",
    "ZScore",
]

_EPS = float(np.finfo(np.float64).eps)

Array = npt.NDArray[np.float64]


def _nonzero(scale: float) -> float:
    """scikit-learn's ``_handle_zeros_in_scale``: near-zero scales become 1."""
    return 1.0 if scale < 10 * _EPS else scale


def _nonzero_each(scale: Array) -> Array:
    """:func:`_nonzero`, elementwise."""
    return np.where(scale < 10 * _EPS, 1.0, scale)


@dataclass(frozen=True)
class Form:
    """A fitted map written in primitives every runtime has (PyTorch, ONNX), for export.

    ``y = clip((pre(clip(x, low, high)) - center) / scale * mul + add, out_low, out_high)``
    with ``pre`` the identity, ``log1p`` (-1 and below: NaN) or ``signed_log``; or, when
    ``table`` is set, the quantile map through it (onto the standard normal with
    ``normal``). Each method gives its own (:meth:`Method.form`), with the very
    operations and order of its numpy map, so an exported map agrees with it to the
    last bit in float64 wherever the runtime's primitives do. Fields are floats, or
    arrays with one entry per group.
    """

    pre: Literal["identity", "log1p", "signed_log"] = "identity"
    low: Any = -math.inf
    high: Any = math.inf
    center: Any = 0.0
    scale: Any = 1.0
    mul: Any = 1.0
    add: Any = 0.0
    out_low: float = -math.inf
    out_high: float = math.inf
    table: tuple[float, ...] = ()
    normal: bool = False


class Method(BaseModel):
    """A method: its options (the fields), and its rules. Each method is one class:
    which quantiles it needs, how its parameters follow from a column's statistics
    (:meth:`fit`, and :meth:`fit_groups` for every group at once), and its forward and
    inverse maps. Register a new one in :data:`normpipe.scalers.Fitted`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The method's name (each class narrows it to a literal: the registry's key).
    method: str
    #: The class of the fitted parameters.
    params_type: ClassVar[type[Params]] = NoParams

    def probabilities(self) -> tuple[float, ...]:
        """Quantile probabilities this scaler needs from the sketch."""
        return ()

    def params_of(self, values: Mapping[str, Any]) -> Params:
        """This method's parameters from an artifact's ``"params"`` (exactly its keys).

        Raises
        ------
        ValueError
            A key is missing or unknown.
        """
        try:
            return self.params_type.of(values)
        except ValueError as err:
            raise ValueError(f"{self.method} {err}") from None

    @property
    def needs_log(self) -> bool:
        """Whether fitting needs the moments of ``signed_log(x)`` from the pass."""
        return False

    @property
    def clips(self) -> bool:
        """Whether the map clips values (which the inverse cannot recover)."""
        return False

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        """The parameters of this method for a column's statistics (see :func:`fit_scaler`)."""
        raise NotImplementedError

    def fit_groups(self, moments: GroupMoments, log: GroupMoments | None) -> Params:
        """:meth:`fit`'s parameters for every group at once, from per-group moments."""
        from normpipe.scalers import GROUP_METHODS  # the registry imports this module

        raise InputError(f"{self.method} is not available per group; use one of {', '.join(GROUP_METHODS)}")

    def apply(self, x: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        """Forward map of a float64 array (a new array; the input is not changed)."""
        raise NotImplementedError

    def invert(self, y: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        """Inverse map."""
        raise NotImplementedError

    def form(self, p: Params, table: tuple[float, ...] = ()) -> Form:
        """The forward map as a :class:`Form` (its inverse follows from the same fields)."""
        raise NotImplementedError


class _Affine(Method):
    """``y = (f(x) - center) / scale``: ``f`` is the identity unless a method changes it."""

    params_type: ClassVar[type[Params]] = Affine
    #: ``f`` in the form's terms.
    pre: ClassVar[Literal["identity", "log1p", "signed_log"]] = "identity"

    def form(self, p: Params, table: tuple[float, ...] = ()) -> Form:
        return Form(pre=self.pre, center=p["center"], scale=p["scale"])

    def _forward(self, x: Array, p: Params) -> Array:
        return x

    def _backward(self, x: Array) -> Array:
        return x

    def _empty(self) -> Params:
        """The identity map, for a column with no finite value."""
        return Affine(center=0.0, scale=1.0)

    def apply(self, x: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        y: Array = self._forward(x, p) - p["center"]
        y /= p["scale"]  # in place: one temporary, the same values as (x - c) / s
        return y

    def invert(self, y: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        return self._backward(y * p["scale"] + p["center"])


def _standardize_groups(
    moments: GroupMoments, empty: npt.NDArray[np.bool_], with_mean: bool = True, with_std: bool = True
) -> Params:
    """Per-group z-score parameters (a constant group gets scale 1, an empty one the identity)."""
    constant = empty | (moments.min == moments.max)
    std = np.where(constant, 1.0, _nonzero_each(moments.std))
    return Affine(
        center=np.where(empty | (not with_mean), 0.0, moments.mean),
        scale=std if with_std else np.ones(moments.count.size),
    )


class ZScore(_Affine):
    """Standardize to zero mean and unit variance (population std, ddof=0)."""

    method: Literal["zscore"] = "zscore"
    with_mean: bool = True
    with_std: bool = True

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if s.count == 0:
            return FittedScaler(self, self._empty())
        # Constant when every finite value is equal; else the std, unless it is below
        # 10 eps (scikit-learn's _handle_zeros_in_scale).
        std = 1.0 if s.min == s.max else _nonzero(s.std)
        return FittedScaler(
            self, Affine(center=s.mean if self.with_mean else 0.0, scale=std if self.with_std else 1.0)
        )

    def fit_groups(self, moments: GroupMoments, log: GroupMoments | None) -> Params:
        return _standardize_groups(moments, moments.count == 0, self.with_mean, self.with_std)


class MinMax(Method):
    """Scale the fitted range ``[min, max]`` onto ``feature_range``."""

    method: Literal["minmax"] = "minmax"
    feature_range: tuple[float, float] = (0.0, 1.0)
    clip: bool = False
    params_type: ClassVar[type[Params]] = Linear

    @model_validator(mode="after")
    def _check_range(self) -> MinMax:
        low, high = self.feature_range
        if not low < high:
            raise ValueError(f"feature_range must be (low, high) with low < high, got {self.feature_range}")
        return self

    @property
    def clips(self) -> bool:
        return self.clip

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if s.count == 0:
            return FittedScaler(self, Linear(scale=1.0, min=0.0))
        low, high = self.feature_range
        scale = (high - low) / _nonzero(s.max - s.min)
        return FittedScaler(self, Linear(scale=scale, min=low - s.min * scale))

    def fit_groups(self, moments: GroupMoments, log: GroupMoments | None) -> Params:
        empty = moments.count == 0
        low, high = self.feature_range
        extent = _nonzero_each(np.where(empty, 1.0, moments.max - moments.min))
        scale = np.where(empty, 1.0, (high - low) / extent)
        return Linear(scale=scale, min=np.where(empty, 0.0, low - moments.min * scale))

    def apply(self, x: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        y: Array = x * p["scale"] + p["min"]
        if self.clip:
            np.clip(y, *self.feature_range, out=y)
        return y

    def invert(self, y: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        x: Array = (y - p["min"]) / p["scale"]
        return x

    def form(self, p: Params, table: tuple[float, ...] = ()) -> Form:
        low, high = self.feature_range if self.clip else (-math.inf, math.inf)
        return Form(mul=p["scale"], add=p["min"], out_low=low, out_high=high)


class Robust(_Affine):
    """Center on the median and scale by the interquantile range."""

    method: Literal["robust"] = "robust"
    quantile_range: tuple[float, float] = (25.0, 75.0)
    with_centering: bool = True
    with_scaling: bool = True
    unit_variance: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> Robust:
        low, high = self.quantile_range
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"quantile_range must satisfy 0 <= low < high <= 100, got {self.quantile_range}")
        if self.unit_variance and (low == 0.0 or high == 100.0):
            raise ValueError("unit_variance needs a quantile_range strictly inside (0, 100)")
        return self

    def probabilities(self) -> tuple[float, ...]:
        low, high = self.quantile_range
        return (low / 100.0, 0.5, high / 100.0)

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if s.count == 0:
            return FittedScaler(self, self._empty())
        q_low, median, q_high = (s.quantiles[p] for p in self.probabilities())
        scale = 1.0
        if self.with_scaling:
            scale = _nonzero(q_high - q_low)
            if self.unit_variance:
                normal = NormalDist()
                low, high = self.quantile_range
                scale /= normal.inv_cdf(high / 100.0) - normal.inv_cdf(low / 100.0)
        return FittedScaler(self, Affine(center=median if self.with_centering else 0.0, scale=scale))


class MaxAbs(_Affine):
    """Divide by the largest absolute value, mapping onto ``[-1, 1]``."""

    method: Literal["maxabs"] = "maxabs"

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if s.count == 0:
            return FittedScaler(self, self._empty())
        return FittedScaler(self, Affine(center=0.0, scale=_nonzero(max(abs(s.min), abs(s.max)))))

    def fit_groups(self, moments: GroupMoments, log: GroupMoments | None) -> Params:
        extent = np.where(moments.count == 0, 1.0, np.maximum(np.abs(moments.min), np.abs(moments.max)))
        return Affine(center=np.zeros(moments.count.size), scale=_nonzero_each(extent))


class _Log(_Affine):
    """Z-score of a log of ``x``, fitted from the moments of ``sign(x) log1p(|x|)``."""

    @property
    def needs_log(self) -> bool:
        return True

    def _check(self, s: ColumnSummary, name: str) -> Moments:
        if s.log is None:
            raise InputError(
                f"column '{name}': {self.method} needs the log moments, which this artifact does not keep "
                f"(fitted with another method); fit again from the data with --method {self.method}"
            )
        return s.log

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if s.count == 0:
            return FittedScaler(self, self._empty())
        log = self._check(s, name)
        std = math.sqrt(log.variance()) if log.count else 1.0
        constant = log.count == 0 or log.min == log.max
        center = log.mean if log.count else 0.0
        return FittedScaler(self, Affine(center=center, scale=1.0 if constant else _nonzero(std)))

    def fit_groups(self, moments: GroupMoments, log: GroupMoments | None) -> Params:
        if log is None:
            raise InputError(f"{self.method} per group needs the log moments of each group")
        return _standardize_groups(log, moments.count == 0)


class Log1p(_Log):
    """Z-score of ``log1p(x)``, for non-negative right-skewed data."""

    method: Literal["log1p"] = "log1p"
    pre: ClassVar[Literal["identity", "log1p", "signed_log"]] = "log1p"

    def _check(self, s: ColumnSummary, name: str) -> Moments:
        log = super()._check(s, name)
        if s.min < 0.0:
            raise InputError(
                f"column '{name}': log1p needs values >= 0, its minimum is {s.min:.6g}; "
                "use --method signed_log for data of both signs"
            )
        return log

    def _forward(self, x: Array, p: Params) -> Array:
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.log1p(x)
        x[x == -np.inf] = np.nan  # x = -1: outside the domain, like x < -1
        return x

    def _backward(self, x: Array) -> Array:
        with np.errstate(over="ignore"):
            return np.expm1(x)


class SignedLog(_Log):
    """Z-score of ``sign(x) log1p(|x|)``, for heavy tails of both signs."""

    method: Literal["signed_log"] = "signed_log"
    pre: ClassVar[Literal["identity", "log1p", "signed_log"]] = "signed_log"

    def _forward(self, x: Array, p: Params) -> Array:
        return signed_log(x)

    def _backward(self, x: Array) -> Array:
        with np.errstate(over="ignore"):
            return np.copysign(np.expm1(np.abs(x)), x)


#: Normal outputs of ``quantile`` are clipped to the quantiles of these
#: probabilities (scikit-learn's ``BOUNDS_THRESHOLD``), about +/-5.2.
_NORMAL_BOUND = 1e-7


class Quantile(Method):
    """Map through the fitted CDF onto a uniform or a standard normal distribution."""

    method: Literal["quantile"] = "quantile"
    n_quantiles: int = Field(default=1000, ge=10, le=100_000)
    output: Literal["uniform", "normal"] = "uniform"

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if state is None:
            raise InputError(f"column '{name}': the quantile transform needs the column's sketch")
        if s.count == 0:
            return FittedScaler(self, NoParams(), table=(0.0, 1.0))
        probabilities = np.linspace(0.0, 1.0, self.n_quantiles)
        table = np.maximum.accumulate(np.asarray(state.sketch.quantiles(list(probabilities))))
        return FittedScaler(self, NoParams(), table=tuple(float(v) for v in table))

    def apply(self, x: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        quantiles, refs = np.asarray(table), np.linspace(0.0, 1.0, len(table))
        # scikit-learn's rule for repeated quantiles (ties): the mean of interpolating
        # upwards and downwards, so a value equal to a run of quantiles maps to its middle.
        with np.errstate(invalid="ignore"):
            u = 0.5 * (np.interp(x, quantiles, refs) - np.interp(-x, -quantiles[::-1], -refs[::-1]))
        u[np.isnan(x)] = np.nan
        if self.output == "normal":
            return _ndtri(np.clip(u, _NORMAL_BOUND, 1.0 - _NORMAL_BOUND))
        return u

    def invert(self, y: Array, p: Params, table: tuple[float, ...] = ()) -> Array:
        if self.output == "normal":
            y = _ndtr(y)
        x: Array = np.interp(y, np.linspace(0.0, 1.0, len(table)), np.asarray(table))
        x[np.isnan(y)] = np.nan
        return x

    def form(self, p: Params, table: tuple[float, ...] = ()) -> Form:
        return Form(table=table, normal=self.output == "normal")


class Clip(_Affine):
    """Winsorize at the fitted ``quantile_range`` (percent), then optionally scale."""

    method: Literal["clip"] = "clip"
    quantile_range: tuple[float, float] = (1.0, 99.0)
    then: Literal["none", "minmax", "robust"] = "none"
    params_type: ClassVar[type[Params]] = Clipped

    @model_validator(mode="after")
    def _check_range(self) -> Clip:
        low, high = self.quantile_range
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"quantile_range must satisfy 0 <= low < high <= 100, got {self.quantile_range}")
        return self

    def probabilities(self) -> tuple[float, ...]:
        low, high = self.quantile_range
        return (low / 100.0, 0.25, 0.5, 0.75, high / 100.0)

    @property
    def clips(self) -> bool:
        return True

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        if s.count == 0:
            big = float(np.finfo(np.float64).max)
            return FittedScaler(self, Clipped(low=-big, high=big, center=0.0, scale=1.0))
        q_low, q1, median, q3, q_high = (s.quantiles[p] for p in self.probabilities())
        center, scale = 0.0, 1.0
        if self.then == "minmax":
            center, scale = q_low, _nonzero(q_high - q_low)
        elif self.then == "robust":
            center, scale = median, _nonzero(q3 - q1)
        return FittedScaler(self, Clipped(low=q_low, high=q_high, center=center, scale=scale))

    def _forward(self, x: Array, p: Params) -> Array:
        return np.clip(x, p["low"], p["high"])

    def form(self, p: Params, table: tuple[float, ...] = ()) -> Form:
        return Form(low=p["low"], high=p["high"], center=p["center"], scale=p["scale"])


@dataclass(frozen=True, slots=True)
class FittedScaler:
    """A method with its fitted parameters; applies and inverts the map.

    ``params`` holds ``center`` and ``scale`` (``y = (f(x) - center) / scale``) for
    zscore, robust, maxabs, log1p and signed_log (``f`` the identity or the log),
    ``scale`` and ``min`` (``y = x * scale + min``) for minmax, exactly as
    scikit-learn computes them, and ``low``, ``high``, ``center``, ``scale`` for clip.
    ``table`` holds the ``n_quantiles`` quantiles of ``quantile`` (at evenly spaced
    probabilities from 0 to 1). Parameters may be arrays (one entry per row): the maps
    broadcast.
    """

    spec: Method  # one of :data:`normpipe.scalers.Fitted`
    params: Params
    reason: str = ""
    table: tuple[float, ...] = ()

    @property
    def method(self) -> str:
        return self.spec.method

    def check(self) -> None:
        """Refuse parameters that no fit gives (an edited or damaged artifact): the
        method's keys, finite values, a positive ``scale``, ``low <= high``, and for
        ``quantile`` a finite, non-decreasing table of two or more values.

        Raises
        ------
        ValueError
            Naming the first parameter at fault.
        """
        needed = self.spec.params_type.names()
        if set(self.params) != set(needed):
            raise ValueError(f"{self.method} has the parameters {', '.join(needed) or 'none'}")
        for key, value in self.params.items():
            if not math.isfinite(value):
                raise ValueError(f"parameter '{key}' is {value}")
        if "scale" in self.params and not self.params["scale"] > 0:
            raise ValueError(f"parameter 'scale' is {self.params['scale']}; a fit gives a positive scale")
        if "low" in self.params and not self.params["low"] <= self.params["high"]:
            raise ValueError("parameter 'low' is above 'high'")
        if isinstance(self.spec, Quantile):
            table = np.asarray(self.table, dtype=np.float64)
            if table.size < 2 or not np.isfinite(table).all() or (np.diff(table) < 0).any():
                raise ValueError("the quantile table must be two or more finite, non-decreasing values")

    def agrees_with(self, other: FittedScaler) -> bool:
        """The same method, options and reason, and parameters equal up to rounding
        (1e-12 relative): ``other`` fitted on the same statistics."""
        if (self.spec, self.reason, set(self.params)) != (other.spec, other.reason, set(other.params)):
            return False
        mine = [*(self.params[k] for k in sorted(self.params)), *self.table]
        theirs = [*(other.params[k] for k in sorted(other.params)), *other.table]
        return len(mine) == len(theirs) and bool(np.allclose(mine, theirs, rtol=1e-12, atol=0.0))

    def apply(self, x: Array) -> Array:
        """Forward map of a float64 array (a new array; the input is not changed)."""
        return self.spec.apply(x, self.params, self.table)

    def invert(self, y: Array) -> Array:
        """Inverse map (clipped values cannot be recovered)."""
        return self.spec.invert(y, self.params, self.table)

    def form(self) -> Form:
        """The map in primitives, for export (see :class:`Form`)."""
        return self.spec.form(self.params, self.table)


def _ndtri(u: Array) -> Array:
    """The standard normal quantile function, elementwise."""
    from scipy import special  # on first use: workers that map no quantile skip 0.2 s of import

    return np.asarray(special.ndtri(u), dtype=np.float64)


def _ndtr(z: Array) -> Array:
    """The standard normal CDF, elementwise."""
    from scipy import special

    return np.asarray(special.ndtr(z), dtype=np.float64)
