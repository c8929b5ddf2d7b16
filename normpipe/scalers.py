"""The scalers and transforms: their options, how parameters follow from statistics, and the maps.

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
from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from normpipe.core.column import ColumnState, ColumnSummary, signed_log
from normpipe.core.groups import GroupMoments
from normpipe.core.moments import Moments
from normpipe.errors import InputError

__all__ = [
    "GROUP_METHODS",
    "METHODS",
    "REPORTED_PROBABILITIES",
    "Auto",
    "Clip",
    "FittedScaler",
    "Log1p",
    "MaxAbs",
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

_EPS = float(np.finfo(np.float64).eps)


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def probabilities(self) -> tuple[float, ...]:
        """Quantile probabilities this scaler needs from the sketch."""
        return ()

    @property
    def needs_log(self) -> bool:
        """Whether fitting needs the moments of ``signed_log(x)`` from the pass."""
        return False


class ZScore(_Spec):
    """Standardize to zero mean and unit variance (population std, ddof=0)."""

    method: Literal["zscore"] = "zscore"
    with_mean: bool = True
    with_std: bool = True


class MinMax(_Spec):
    """Scale the fitted range ``[min, max]`` onto ``feature_range``."""

    method: Literal["minmax"] = "minmax"
    feature_range: tuple[float, float] = (0.0, 1.0)
    clip: bool = False

    @model_validator(mode="after")
    def _check_range(self) -> MinMax:
        low, high = self.feature_range
        if not low < high:
            raise ValueError(f"feature_range must be (low, high) with low < high, got {self.feature_range}")
        return self


class Robust(_Spec):
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


class MaxAbs(_Spec):
    """Divide by the largest absolute value, mapping onto ``[-1, 1]``."""

    method: Literal["maxabs"] = "maxabs"


class Log1p(_Spec):
    """Z-score of ``log1p(x)``, for non-negative right-skewed data."""

    method: Literal["log1p"] = "log1p"

    @property
    def needs_log(self) -> bool:
        return True


class SignedLog(_Spec):
    """Z-score of ``sign(x) log1p(|x|)``, for heavy tails of both signs."""

    method: Literal["signed_log"] = "signed_log"

    @property
    def needs_log(self) -> bool:
        return True


class Quantile(_Spec):
    """Map through the fitted CDF onto a uniform or a standard normal distribution."""

    method: Literal["quantile"] = "quantile"
    n_quantiles: int = Field(default=1000, ge=10, le=100_000)
    output: Literal["uniform", "normal"] = "uniform"


class Clip(_Spec):
    """Winsorize at the fitted ``quantile_range`` (percent), then optionally scale."""

    method: Literal["clip"] = "clip"
    quantile_range: tuple[float, float] = (1.0, 99.0)
    then: Literal["none", "minmax", "robust"] = "none"

    @model_validator(mode="after")
    def _check_range(self) -> Clip:
        low, high = self.quantile_range
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"quantile_range must satisfy 0 <= low < high <= 100, got {self.quantile_range}")
        return self

    def probabilities(self) -> tuple[float, ...]:
        low, high = self.quantile_range
        return (low / 100.0, 0.25, 0.5, 0.75, high / 100.0)


class Auto(_Spec):
    """Choose a scaler or log transform per column from its profile (see :func:`choose`)."""

    method: Literal["auto"] = "auto"

    def probabilities(self) -> tuple[float, ...]:
        return (0.25, 0.5, 0.75)

    @property
    def needs_log(self) -> bool:
        return True


Fitted = ZScore | MinMax | Robust | MaxAbs | Log1p | SignedLog | Quantile | Clip
Request = Fitted | Auto
ScalerSpec = Annotated[Fitted, Field(discriminator="method")]
#: What a user may ask for: a scaler or transform, or ``auto``.
RequestSpec = Annotated[Request, Field(discriminator="method")]
METHODS: tuple[str, ...] = (
    "zscore",
    "minmax",
    "robust",
    "maxabs",
    "log1p",
    "signed_log",
    "quantile",
    "clip",
    "auto",
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


#: Normal outputs of ``quantile`` are clipped to the quantiles of these
#: probabilities (scikit-learn's ``BOUNDS_THRESHOLD``), about +/-5.2.
_NORMAL_BOUND = 1e-7


@dataclass(frozen=True, slots=True)
class FittedScaler:
    """A scaler with its fitted parameters; applies and inverts the map.

    ``params`` holds ``center`` and ``scale`` (``y = (f(x) - center) / scale``) for
    zscore, robust, maxabs, log1p and signed_log (``f`` the identity or the log),
    ``scale`` and ``min`` (``y = x * scale + min``) for minmax, exactly as
    scikit-learn computes them, and ``low``, ``high``, ``center``, ``scale`` for clip.
    ``table`` holds the ``n_quantiles`` quantiles of ``quantile`` (at evenly spaced
    probabilities from 0 to 1).
    """

    spec: Fitted
    params: dict[str, float]
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
        needed = _PARAMS[self.method]
        if set(self.params) != set(needed):
            raise ValueError(f"{self.method} has the parameters {', '.join(needed) or 'none'}")
        for key, value in self.params.items():
            if not math.isfinite(value):
                raise ValueError(f"parameter '{key}' is {value}")
        if "scale" in self.params and not self.params["scale"] > 0:
            raise ValueError(f"parameter 'scale' is {self.params['scale']}; a fit gives a positive scale")
        if "low" in self.params and not self.params["low"] <= self.params["high"]:
            raise ValueError("parameter 'low' is above 'high'")
        if self.method == "quantile":
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

    def apply(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Forward map of a float64 array (a new array; the input is not changed)."""
        p, spec = self.params, self.spec
        if isinstance(spec, MinMax):
            y = x * p["scale"] + p["min"]
            if spec.clip:
                np.clip(y, *spec.feature_range, out=y)
            return y
        if isinstance(spec, Quantile):
            return self._quantile(x)
        if isinstance(spec, Log1p):
            with np.errstate(invalid="ignore", divide="ignore"):
                x = np.log1p(x)
            x[x == -np.inf] = np.nan  # x = -1: outside the domain, like x < -1
        elif isinstance(spec, SignedLog):
            x = signed_log(x)
        elif isinstance(spec, Clip):
            x = np.clip(x, p["low"], p["high"])
        y = x - p["center"]
        y /= p["scale"]  # in place: one temporary, the same values as (x - c) / s
        return y

    def invert(self, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Inverse map (clipped values cannot be recovered)."""
        p, spec = self.params, self.spec
        if isinstance(spec, MinMax):
            return (y - p["min"]) / p["scale"]
        if isinstance(spec, Quantile):
            return self._quantile_inverse(y)
        x = y * p["scale"] + p["center"]
        if isinstance(spec, Log1p):
            with np.errstate(over="ignore"):
                return np.expm1(x)
        if isinstance(spec, SignedLog):
            with np.errstate(over="ignore"):
                return np.copysign(np.expm1(np.abs(x)), x)
        return x

    def _references(self) -> npt.NDArray[np.float64]:
        return np.linspace(0.0, 1.0, len(self.table))

    def _quantile(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        table, refs = np.asarray(self.table), self._references()
        # scikit-learn's rule for repeated quantiles (ties): the mean of interpolating
        # upwards and downwards, so a value equal to a run of quantiles maps to its middle.
        with np.errstate(invalid="ignore"):
            u = 0.5 * (np.interp(x, table, refs) - np.interp(-x, -table[::-1], -refs[::-1]))
        u[np.isnan(x)] = np.nan
        if isinstance(self.spec, Quantile) and self.spec.output == "normal":
            return _ndtri(np.clip(u, _NORMAL_BOUND, 1.0 - _NORMAL_BOUND))
        return u

    def _quantile_inverse(self, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if isinstance(self.spec, Quantile) and self.spec.output == "normal":
            y = _ndtr(y)
        x: npt.NDArray[np.float64] = np.interp(y, self._references(), np.asarray(self.table))
        x[np.isnan(y)] = np.nan
        return x


#: The fitted parameters of each method (see :class:`FittedScaler`).
_PARAMS: dict[str, tuple[str, ...]] = {
    "zscore": ("center", "scale"),
    "robust": ("center", "scale"),
    "maxabs": ("center", "scale"),
    "log1p": ("center", "scale"),
    "signed_log": ("center", "scale"),
    "minmax": ("scale", "min"),
    "clip": ("low", "high", "center", "scale"),
    "quantile": (),
}


def _ndtri(u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The standard normal quantile function, elementwise."""
    from scipy import special  # on first use: workers that map no quantile skip 0.2 s of import

    return np.asarray(special.ndtri(u), dtype=np.float64)


def _ndtr(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The standard normal CDF, elementwise."""
    from scipy import special

    return np.asarray(special.ndtr(z), dtype=np.float64)


def _nonzero(scale: float) -> float:
    """scikit-learn's ``_handle_zeros_in_scale``: near-zero scales become 1."""
    return 1.0 if scale < 10 * _EPS else scale


#: A log transform is chosen when it leaves the column near-Gaussian: |skewness| and
#: excess kurtosis of the transformed values within these limits.
LOG_SKEW_LIMIT = 1.0
LOG_KURTOSIS_LIMIT = 1.5


def _near_gaussian(log: Moments | None) -> bool:
    if log is None:
        return False
    skew, kurt = log.skewness, log.kurtosis
    return abs(skew) <= LOG_SKEW_LIMIT and abs(kurt) <= LOG_KURTOSIS_LIMIT


def choose(s: ColumnSummary) -> tuple[ZScore | MinMax | Robust | Log1p | SignedLog, str]:
    """The ``auto`` rules: a method for a column's profile, and the reason in words.

    1. no finite value, or a constant column: zscore (the identity / a shift);
    2. more than 1% of values beyond Tukey's fences, ``|skewness| > 1`` or excess
       kurtosis above 5 (outliers, skew, heavy tails):

       a. ``log1p`` when every value is >= 0, the skew is to the right (> 1) and the
          log leaves the column near-Gaussian (``|skewness| <= 1`` and
          ``|excess kurtosis| <= 1.5`` after ``log1p``), as for lognormal,
          exponential or chi-squared data;
       b. ``signed_log`` when values take both signs and ``sign(x) log1p(|x|)`` is
          near-Gaussian in the same sense, as for Student-t tails;
       c. minmax when the interquartile range is 0 (half the values or more are one
          value, as rain amounts that are mostly 0), where robust would not scale;
       d. robust otherwise (outliers in an otherwise normal bulk, Pareto tails);
    3. excess kurtosis below -1 with ``|skewness| < 0.5`` (flat and bounded, as a
       uniform's -1.2): minmax;
    4. otherwise (near-Gaussian): zscore.

    ``quantile`` and ``clip`` are never chosen: both discard distances between
    values that a regression may need; ask for them explicitly.
    """
    if s.count == 0 or s.min == s.max:
        return ZScore(), "zscore: constant column" if s.count else "zscore: no finite value"
    skew, kurt, outside = s.skewness, s.kurtosis, s.outside_fences
    shape = f"skewness {skew:.2f}, excess kurtosis {kurt:.2f}, {outside:.1%} beyond Tukey fences"
    if outside > 0.01 or abs(skew) > 1.0 or kurt > 5.0:
        if s.log is not None and _near_gaussian(s.log):
            after = f"skewness {s.log.skewness:.2f}, excess kurtosis {s.log.kurtosis:.2f}"
            if s.min >= 0.0 and skew > 1.0:
                return Log1p(), f"log1p: right-skewed, non-negative ({shape}); after log1p {after}"
            if s.min < 0.0 < s.max:
                return (
                    SignedLog(),
                    f"signed_log: heavy tails of both signs ({shape}); after signed log {after}",
                )
        q1, q3 = s.quantiles.get(0.25), s.quantiles.get(0.75)
        if q1 is not None and q1 == q3:
            bounds = f"{s.min_share:.1%} at the minimum, {s.max_share:.1%} at the maximum"
            return MinMax(), f"minmax: interquartile range 0 ({bounds}), robust would not scale; {shape}"
        return Robust(), f"robust: {shape}"
    if kurt < -1.0 and abs(skew) < 0.5:
        return MinMax(), f"minmax: flat and bounded ({shape})"
    return ZScore(), f"zscore: near-Gaussian ({shape})"


def _zscore_params(moments: Moments) -> dict[str, float]:
    std = math.sqrt(moments.variance()) if moments.count else 1.0
    constant = moments.count == 0 or moments.min == moments.max
    return {"center": moments.mean if moments.count else 0.0, "scale": 1.0 if constant else _nonzero(std)}


def _log_params(spec: Log1p | SignedLog, s: ColumnSummary, name: str) -> dict[str, float]:
    if s.log is None:
        raise InputError(
            f"column '{name}': {spec.method} needs the log moments, which this artifact does not keep "
            f"(fitted with another method); fit again from the data with --method {spec.method}"
        )
    if isinstance(spec, Log1p) and s.min < 0.0:
        raise InputError(
            f"column '{name}': log1p needs values >= 0, its minimum is {s.min:.6g}; "
            "use --method signed_log for data of both signs"
        )
    return _zscore_params(s.log)


def fit_scaler(
    spec: Request, s: ColumnSummary, state: ColumnState | None = None, name: str = "?"
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
    if isinstance(spec, Auto):
        chosen, reason = choose(s)
        fitted = fit_scaler(chosen, s, state, name)
        return FittedScaler(fitted.spec, fitted.params, reason)
    if isinstance(spec, Quantile):
        if state is None:
            raise InputError(f"column '{name}': the quantile transform needs the column's sketch")
        if s.count == 0:
            return FittedScaler(spec, {}, table=(0.0, 1.0))
        probabilities = np.linspace(0.0, 1.0, spec.n_quantiles)
        table = np.maximum.accumulate(np.asarray(state.sketch.quantiles(list(probabilities))))
        return FittedScaler(spec, {}, table=tuple(float(v) for v in table))
    if s.count == 0:
        if isinstance(spec, MinMax):
            return FittedScaler(spec, {"scale": 1.0, "min": 0.0})
        if isinstance(spec, Clip):
            big = float(np.finfo(np.float64).max)
            return FittedScaler(spec, {"low": -big, "high": big, "center": 0.0, "scale": 1.0})
        return FittedScaler(spec, {"center": 0.0, "scale": 1.0})
    if isinstance(spec, ZScore):
        # Constant when every finite value is equal; else the std, unless it is below
        # 10 eps (scikit-learn's _handle_zeros_in_scale).
        std = 1.0 if s.min == s.max else _nonzero(s.std)
        return FittedScaler(
            spec,
            {"center": s.mean if spec.with_mean else 0.0, "scale": std if spec.with_std else 1.0},
        )
    if isinstance(spec, MinMax):
        low, high = spec.feature_range
        scale = (high - low) / _nonzero(s.max - s.min)
        return FittedScaler(spec, {"scale": scale, "min": low - s.min * scale})
    if isinstance(spec, MaxAbs):
        return FittedScaler(spec, {"center": 0.0, "scale": _nonzero(max(abs(s.min), abs(s.max)))})
    if isinstance(spec, Log1p | SignedLog):
        return FittedScaler(spec, _log_params(spec, s, name))
    if isinstance(spec, Clip):
        q_low, q1, median, q3, q_high = (s.quantiles[p] for p in spec.probabilities())
        center, scale = 0.0, 1.0
        if spec.then == "minmax":
            center, scale = q_low, _nonzero(q_high - q_low)
        elif spec.then == "robust":
            center, scale = median, _nonzero(q3 - q1)
        return FittedScaler(spec, {"low": q_low, "high": q_high, "center": center, "scale": scale})
    q_low, median, q_high = (s.quantiles[p] for p in spec.probabilities())
    scale = 1.0
    if spec.with_scaling:
        scale = _nonzero(q_high - q_low)
        if spec.unit_variance:
            normal = NormalDist()
            low, high = spec.quantile_range
            scale /= normal.inv_cdf(high / 100.0) - normal.inv_cdf(low / 100.0)
    return FittedScaler(spec, {"center": median if spec.with_centering else 0.0, "scale": scale})


#: Methods that per-group normalization supports: their parameters follow from
#: per-group moments. Quantile-based methods would need a sketch per group and column.
GROUP_METHODS: tuple[str, ...] = ("zscore", "minmax", "maxabs", "log1p", "signed_log")


def group_params(
    spec: Fitted, moments: GroupMoments, log: GroupMoments | None
) -> dict[str, npt.NDArray[np.float64]]:
    """:func:`fit_scaler`'s parameters for every group at once (same rules: a constant
    group gets scale 1, a group with no finite value the identity map)."""
    empty = moments.count == 0
    if isinstance(spec, Log1p | SignedLog):
        if log is None:
            raise InputError(f"{spec.method} per group needs the log moments of each group")
        moments = log

    def nonzero(scale: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.where(scale < 10 * _EPS, 1.0, scale)  # _nonzero, elementwise

    if isinstance(spec, MinMax):
        low, high = spec.feature_range
        scale = np.where(empty, 1.0, (high - low) / nonzero(np.where(empty, 1.0, moments.max - moments.min)))
        return {"scale": scale, "min": np.where(empty, 0.0, low - moments.min * scale)}
    if isinstance(spec, MaxAbs):
        extent = np.where(empty, 1.0, np.maximum(np.abs(moments.min), np.abs(moments.max)))
        return {"center": np.zeros(moments.count.size), "scale": nonzero(extent)}
    if isinstance(spec, ZScore | Log1p | SignedLog):
        constant = empty | (moments.min == moments.max)
        std = np.where(constant, 1.0, nonzero(moments.std))
        with_mean = spec.with_mean if isinstance(spec, ZScore) else True
        with_std = spec.with_std if isinstance(spec, ZScore) else True
        return {
            "center": np.where(empty | (not with_mean), 0.0, moments.mean),
            "scale": std if with_std else np.ones(moments.count.size),
        }
    raise InputError(f"{spec.method} is not available per group; use one of {', '.join(GROUP_METHODS)}")
