"""Mergeable first and second moments plus the range, in float64.

A :class:`Moments` is computed from one block of finite values with a corrected
two-pass algorithm and merged with the pairwise update of Chan, Golub and LeVeque
(1979), the same update that scikit-learn's ``_incremental_mean_and_var`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Moments"]


def _two_sum(a: float, b: float) -> tuple[float, float]:
    """``a + b`` rounded, and the rounding error exactly (Knuth's TwoSum)."""
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean, sum of squared deviations (M2), minimum and maximum.

    Parameters
    ----------
    count : int
        Number of values summarized.
    mean : float
        Their mean (0.0 when ``count == 0``).
    m2 : float
        Sum of squared deviations from the mean (0.0 when ``count == 0``).
    min, max : float
        Smallest and largest value (+inf and -inf when ``count == 0``).
    m3, m4 : float
        Sums of cubed and fourth-power deviations from the mean (skewness and
        kurtosis; merged exactly with Pébay's update, NaN when unknown).
    mean_lo : float
        Rounding error of ``mean`` (``mean + mean_lo`` is the mean to about twice
        float64 precision), carried so that many merges of blocks with a large
        common offset, such as ``1e9 + N(0, 1e-3)`` in blocks of one row, keep
        the variance accurate.

    Notes
    -----
    The population variance is ``m2 / count`` (ddof=0, like scikit-learn's
    ``StandardScaler``); :meth:`variance` takes ``ddof``. Merging is exact up to
    float64 rounding, so results do not depend on how rows were split into blocks
    beyond a few units in the last place.

    Examples
    --------
    >>> import numpy as np
    >>> a = Moments.from_block(np.array([1.0, 2.0]))
    >>> b = Moments.from_block(np.array([3.0, 4.0, 5.0]))
    >>> m = a.merge(b)
    >>> (m.count, m.mean, m.variance(), m.min, m.max)
    (5, 3.0, 2.0, 1.0, 5.0)
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    mean_lo: float = 0.0
    m3: float = 0.0
    m4: float = 0.0

    @classmethod
    def from_block(cls, values: npt.NDArray[np.floating], ordered: bool = False) -> Moments:
        """Summarize a 1-D array of finite values (no NaN, no inf); ``ordered``: they
        are in ascending order (the extremes are then read, not searched).

        The mean is taken first; M2 is then ``sum(d**2) - sum(d)**2 / n`` with
        ``d = values - mean``, the corrected two-pass formula, which stays accurate
        for data such as ``1e9 + N(0, 1e-3)``.
        """
        n = int(values.size)
        if n == 0:
            return cls()
        x = values if values.dtype == np.float64 else values.astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # |x| near 1e308: inf, caught later
            mean = float(np.mean(x))
            d = x - mean
            s = float(np.sum(d))
            d2 = d * d
            s2, s3, s4 = float(np.sum(d2)), float(np.dot(d2, d)), float(np.dot(d2, d2))
            # central sums about the exact mean (mean + delta), from those about ``mean``
            delta = np.float64(s) / n  # numpy floats overflow to inf instead of raising
            m2 = float(s2 - s * delta)
            m3 = float(s3 - 3 * delta * s2 + 2 * n * delta**3)
            m4 = float(s4 - 4 * delta * s3 + 6 * delta**2 * s2 - 3 * n * delta**4)
        hi, lo = _two_sum(mean, float(delta))
        low, high = (float(x[0]), float(x[-1])) if ordered else (float(np.min(x)), float(np.max(x)))
        return cls(n, hi, max(m2, 0.0), low, high, lo, m3, max(m4, 0.0))

    def merge(self, other: Moments) -> Moments:
        """Combine two summaries of disjoint blocks (Chan et al. update)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = (other.mean - self.mean) + (other.mean_lo - self.mean_lo)
        hi, err = _two_sum(self.mean, delta * (other.count / n))
        updated_mean, updated_lo = _two_sum(hi, self.mean_lo + err)
        na, nb = self.count, other.count
        updated_m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        # Pébay (2008): third and fourth central sums of the union (numpy floats, so
        # that values near 1e308 overflow to inf, reported later, instead of raising)
        d = np.float64(delta)
        with np.errstate(over="ignore", invalid="ignore"):
            updated_m3 = float(
                self.m3
                + other.m3
                + d**3 * na * nb * (na - nb) / n**2
                + 3 * d * (na * other.m2 - nb * self.m2) / n
            )
            updated_m4 = float(
                self.m4
                + other.m4
                + d**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
                + 6 * d**2 * (na * na * other.m2 + nb * nb * self.m2) / n**2
                + 4 * d * (na * other.m3 - nb * self.m3) / n
            )
        return Moments(
            n,
            updated_mean,
            updated_m2,
            min(self.min, other.min),
            max(self.max, other.max),
            updated_lo,
            updated_m3,
            updated_m4,
        )

    @property
    def skewness(self) -> float:
        """Sample skewness ``g1 = sqrt(n) m3 / m2**1.5`` (scipy.stats.skew, bias=True)."""
        with np.errstate(all="ignore"):
            value = np.sqrt(self.count) * np.float64(self.m3) / np.float64(self.m2) ** 1.5
        return float(value) if self.count >= 2 and self.m2 > 0 and np.isfinite(value) else math.nan

    @property
    def kurtosis(self) -> float:
        """Excess kurtosis ``g2 = n m4 / m2**2 - 3`` (scipy.stats.kurtosis, Fisher, bias=True)."""
        with np.errstate(all="ignore"):
            value = self.count * np.float64(self.m4) / np.float64(self.m2) ** 2 - 3.0
        return float(value) if self.count >= 2 and self.m2 > 0 and np.isfinite(value) else math.nan

    def variance(self, ddof: int = 0) -> float:
        """``m2 / (count - ddof)``, or NaN when there are too few values."""
        if self.count - ddof <= 0:
            return math.nan
        return self.m2 / (self.count - ddof)
