"""``auto``: a method per column from its profile, with the reason in words."""

from __future__ import annotations

from typing import Literal

from normpipe.core.column import ColumnState, ColumnSummary
from normpipe.core.moments import Moments
from normpipe.methods import FittedScaler, Log1p, Method, MinMax, Robust, SignedLog, ZScore

__all__ = ["LOG_KURTOSIS_LIMIT", "LOG_SKEW_LIMIT", "Auto", "choose"]


class Auto(Method):
    """Choose a scaler or log transform per column from its profile (see :func:`choose`)."""

    method: Literal["auto"] = "auto"

    def probabilities(self) -> tuple[float, ...]:
        return (0.25, 0.5, 0.75)

    @property
    def needs_log(self) -> bool:
        return True

    def fit(self, s: ColumnSummary, state: ColumnState | None = None, name: str = "?") -> FittedScaler:
        chosen, reason = choose(s)
        fitted = chosen.fit(s, state, name)
        return FittedScaler(fitted.spec, fitted.params, reason)


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
