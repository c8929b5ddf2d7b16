"""The four scalers: their options, how parameters follow from statistics, and the maps.

Each scaler has scikit-learn's semantics and parameter names:

=========  ===========================================  =================================
method     options                                      forward map
=========  ===========================================  =================================
zscore     ``with_mean``, ``with_std``                  ``(x - mean) / std`` (ddof=0)
minmax     ``feature_range``, ``clip``                  ``x * scale + min``, then clip
robust     ``quantile_range``, ``with_centering``,       ``(x - median) / IQR``
           ``with_scaling``, ``unit_variance``
maxabs     (none)                                       ``x / max(|x|)``
=========  ===========================================  =================================

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

from dataclasses import dataclass
from statistics import NormalDist
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from normpipe.core.column import ColumnSummary

__all__ = [
    "METHODS",
    "REPORTED_PROBABILITIES",
    "Auto",
    "FittedScaler",
    "MaxAbs",
    "MinMax",
    "RequestSpec",
    "Robust",
    "ScalerSpec",
    "ZScore",
    "choose",
    "fit_scaler",
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


class Auto(_Spec):
    """Choose zscore, minmax or robust per column from its profile (see :func:`choose`)."""

    method: Literal["auto"] = "auto"

    def probabilities(self) -> tuple[float, ...]:
        return (0.25, 0.5, 0.75)


ScalerSpec = Annotated[ZScore | MinMax | Robust | MaxAbs, Field(discriminator="method")]
#: What a user may ask for: a scaler, or ``auto``.
RequestSpec = Annotated[ZScore | MinMax | Robust | MaxAbs | Auto, Field(discriminator="method")]
METHODS: tuple[str, ...] = ("zscore", "minmax", "robust", "maxabs", "auto")

_SPEC_ADAPTER: TypeAdapter[ZScore | MinMax | Robust | MaxAbs | Auto] = TypeAdapter(RequestSpec)


def parse_scaler(value: Any) -> ZScore | MinMax | Robust | MaxAbs | Auto:
    """A scaler spec from a method name or a mapping with ``method`` and options.

    >>> parse_scaler("minmax").feature_range
    (0.0, 1.0)
    >>> parse_scaler({"method": "robust", "quantile_range": [10, 90]}).quantile_range
    (10.0, 90.0)
    """
    if isinstance(value, str):
        value = {"method": value}
    return _SPEC_ADAPTER.validate_python(value)


@dataclass(frozen=True, slots=True)
class FittedScaler:
    """A scaler with its fitted parameters; applies and inverts the map.

    ``params`` holds ``center`` and ``scale`` (``y = (x - center) / scale``) for
    zscore, robust and maxabs, and ``scale`` and ``min`` (``y = x * scale + min``)
    for minmax, exactly as scikit-learn computes them.
    """

    spec: ZScore | MinMax | Robust | MaxAbs
    params: dict[str, float]
    reason: str = ""

    @property
    def method(self) -> str:
        return self.spec.method

    def apply(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Forward map of a float64 array (a new array; the input is not changed)."""
        p = self.params
        if isinstance(self.spec, MinMax):
            y = x * p["scale"] + p["min"]
            if self.spec.clip:
                np.clip(y, *self.spec.feature_range, out=y)
            return y
        return (x - p["center"]) / p["scale"]

    def invert(self, y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Inverse map (clipped values cannot be recovered)."""
        p = self.params
        if isinstance(self.spec, MinMax):
            return (y - p["min"]) / p["scale"]
        return y * p["scale"] + p["center"]


def _nonzero(scale: float) -> float:
    """scikit-learn's ``_handle_zeros_in_scale``: near-zero scales become 1."""
    return 1.0 if scale < 10 * _EPS else scale


def choose(s: ColumnSummary) -> tuple[ZScore | MinMax | Robust, str]:
    """The ``auto`` rules: a scaler for a column's profile, and the reason in words.

    1. no finite value, or a constant column: zscore (the identity / a shift);
    2. more than 1% of values beyond Tukey's fences, ``|skewness| > 1`` or excess
       kurtosis above 5 (outliers, skew, heavy tails): robust;
    3. excess kurtosis below -1 with ``|skewness| < 0.5`` (flat and bounded, as a
       uniform's -1.2): minmax;
    4. otherwise (near-Gaussian): zscore.
    """
    if s.count == 0 or s.min == s.max:
        return ZScore(), "zscore: constant column" if s.count else "zscore: no finite value"
    skew, kurt, outside = s.skewness, s.kurtosis, s.outside_fences
    shape = f"skewness {skew:.2f}, excess kurtosis {kurt:.2f}, {outside:.1%} beyond Tukey fences"
    if outside > 0.01 or abs(skew) > 1.0 or kurt > 5.0:
        return Robust(), f"robust: {shape}"
    if kurt < -1.0 and abs(skew) < 0.5:
        return MinMax(), f"minmax: flat and bounded ({shape})"
    return ZScore(), f"zscore: near-Gaussian ({shape})"


def fit_scaler(spec: ZScore | MinMax | Robust | MaxAbs | Auto, s: ColumnSummary) -> FittedScaler:
    """Parameters of ``spec`` from a column's statistics.

    ``s.quantiles`` must hold the probabilities of ``spec.probabilities()``.
    A column with no finite value gets the identity map. ``auto`` picks the scaler
    with :func:`choose` and keeps the reason.
    """
    if isinstance(spec, Auto):
        chosen, reason = choose(s)
        fitted = fit_scaler(chosen, s)
        return FittedScaler(fitted.spec, fitted.params, reason)
    if s.count == 0:
        if isinstance(spec, MinMax):
            return FittedScaler(spec, {"scale": 1.0, "min": 0.0})
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
    q_low, median, q_high = (s.quantiles[p] for p in spec.probabilities())
    scale = 1.0
    if spec.with_scaling:
        scale = _nonzero(q_high - q_low)
        if spec.unit_variance:
            normal = NormalDist()
            low, high = spec.quantile_range
            scale /= normal.inv_cdf(high / 100.0) - normal.inv_cdf(low / 100.0)
    return FittedScaler(spec, {"center": median if spec.with_centering else 0.0, "scale": scale})
