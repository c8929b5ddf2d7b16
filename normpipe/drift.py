"""Drift between two stats artifacts, column by column, from their sketches alone.

For each column present in both:

- **PSI** (population stability index) over ten bins cut at the reference's deciles:
  ``sum((c - r) * ln(c / r))`` with the shares ``r`` (reference) and ``c`` (current) of
  each bin read from the two KLL sketches (shares floored at 1e-4). Common reading:
  < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant.
- **KS** distance: the largest gap between the two CDFs, evaluated at 201 quantile
  points of each sketch. Each CDF is within its sketch's rank error, so the KS value
  is within the sum of the two bounds (stated in the result).
- **mean shift** in reference standard deviations, and the **std ratio**.
- the change in the share of missing values (null or NaN).

For each categorical column present in both:

- **PSI** over the shares of the reference's :data:`CATEGORY_BINS` most frequent values
  and one bin for all others (from the two artifacts' value counts; shares floored as
  above), so a category that grows, shrinks or appears moves it;
- the **unseen share**: values of the current run that the reference never counted;
- the change in the share of missing values.

A column is flagged when any measure passes its threshold, or when it is in one
artifact only. No pass over the data: the artifacts hold everything needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from normpipe.config import Thresholds
from normpipe.core.vocab import VocabState
from normpipe.stats import Stats

__all__ = ["CATEGORY_BINS", "ColumnDrift", "Thresholds", "drift"]

_FLOOR = 1e-4
#: A categorical column's PSI bins: the reference's most frequent values, then "other".
CATEGORY_BINS = 20


@dataclass
class ColumnDrift:
    column: str
    psi: float = math.nan
    ks: float = math.nan
    ks_error_bound: float = math.nan
    mean_shift: float = math.nan
    std_ratio: float = math.nan
    missing_change: float = math.nan
    unseen_share: float = math.nan
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["drifted"] = self.drifted
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in doc.items()}


def _missing_share(stats: Stats, name: str) -> float:
    s = stats.summary(name)
    total = s.count + s.nulls + s.nans + s.posinf + s.neginf
    return (s.nulls + s.nans) / total if total else math.nan


def _column(name: str, ref: Stats, cur: Stats, limits: Thresholds) -> ColumnDrift:
    result = ColumnDrift(name)
    r_sketch, c_sketch = ref.columns[name].state.sketch, cur.columns[name].state.sketch
    r, c = ref.summary(name), cur.summary(name)
    if r_sketch.is_empty or c_sketch.is_empty:
        if r_sketch.is_empty != c_sketch.is_empty:
            result.reasons.append("no finite value in one of the two runs")
        return result
    edges = sorted(set(r_sketch.quantiles([i / 10 for i in range(1, 10)])))
    r_cdf = np.array([0.0, *r_sketch.cdf(edges), 1.0])
    c_cdf = np.array([0.0, *c_sketch.cdf(edges), 1.0])
    result.psi = _psi(np.diff(r_cdf), np.diff(c_cdf))
    levels = [i / 200 for i in range(201)]
    grid = sorted({*r_sketch.quantiles(levels), *c_sketch.quantiles(levels)})
    result.ks = float(np.max(np.abs(np.array(r_sketch.cdf(grid)) - np.array(c_sketch.cdf(grid)))))
    result.ks_error_bound = r_sketch.rank_error + c_sketch.rank_error
    if r.std > 0:
        result.mean_shift = abs(c.mean - r.mean) / r.std
        result.std_ratio = c.std / r.std
    result.missing_change = abs(_missing_share(cur, name) - _missing_share(ref, name))
    return _flagged(
        result,
        ("PSI", result.psi, limits.psi),
        ("KS", result.ks, limits.ks),
        ("mean shift", result.mean_shift, limits.mean_shift),
        ("missing share change", result.missing_change, limits.missing),
    )


def _psi(reference: npt.NDArray[np.float64], current: npt.NDArray[np.float64]) -> float:
    """The population stability index of two vectors of bin shares (floored at 1e-4)."""
    r, c = np.maximum(reference, _FLOOR), np.maximum(current, _FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def _flagged(result: ColumnDrift, *checks: tuple[str, float, float]) -> ColumnDrift:
    """``result`` with a reason for each measure above its limit."""
    for label, value, limit in checks:
        if math.isfinite(value) and value > limit:
            result.reasons.append(f"{label} {value:.3g} > {limit:g}")
    return result


def _shares(state: VocabState, values: list[Any]) -> npt.NDArray[np.float64]:
    """The share of each of ``values`` among the counted values, and of all others last."""
    counts = state.vocabulary()
    found = dict(zip(counts.values, counts.counts, strict=True))
    shares = np.array([found.get(v, 0) for v in values], dtype=np.float64) / max(state.total, 1)
    return np.append(shares, max(1.0 - shares.sum(), 0.0))


def _category(name: str, ref: Stats, cur: Stats, limits: Thresholds) -> ColumnDrift:
    result = ColumnDrift(name)
    r_state, c_state = ref.categories[name].state, cur.categories[name].state
    if not r_state.total or not c_state.total:
        if bool(r_state.total) != bool(c_state.total):
            result.reasons.append("no value in one of the two runs")
        return result
    top = list(r_state.vocabulary().values[:CATEGORY_BINS])
    result.psi = _psi(_shares(r_state, top), _shares(c_state, top))
    seen = set(r_state.vocabulary().values)
    current = c_state.vocabulary()
    result.unseen_share = sum(
        c for v, c in zip(current.values, current.counts, strict=True) if v not in seen
    ) / (c_state.total)
    missing = [s.nulls / (s.nulls + s.total) for s in (r_state, c_state)]
    result.missing_change = abs(missing[1] - missing[0])
    return _flagged(
        result,
        ("PSI", result.psi, limits.psi),
        ("unseen share", result.unseen_share, limits.unseen),
        ("missing share change", result.missing_change, limits.missing),
    )


def drift(reference: Stats, current: Stats, thresholds: Thresholds | None = None) -> list[ColumnDrift]:
    """Per-column drift of ``current`` against ``reference`` (see the module notes)."""
    limits = thresholds or Thresholds()
    results = []
    for kind, measure in (("columns", _column), ("categories", _category)):
        mine, theirs = getattr(reference, kind), getattr(current, kind)
        for name in dict.fromkeys([*mine, *theirs]):
            if name not in theirs or name not in mine:
                where = "current" if name not in theirs else "reference"
                results.append(ColumnDrift(name, reasons=[f"column missing from the {where} artifact"]))
            else:
                results.append(measure(name, reference, current, limits))
    return results
