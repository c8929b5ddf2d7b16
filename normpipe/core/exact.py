"""Exact quantiles out of core: the sketch brackets each order statistic, a second pass
counts values below the bracket and keeps only those inside it.

For a quantile ``p`` of ``n`` finite values, numpy's default (``method="linear"``)
interpolates between the order statistics ``floor(h)`` and ``floor(h) + 1`` (0-based)
with ``h = (n - 1) p``; :func:`numpy_linear` repeats numpy's arithmetic exactly,
so the results equal ``numpy.quantile`` on the whole column. The sketch puts both order
statistics, with 99% confidence each, between its quantiles at ``rank/n -/+ width``;
the pass keeps ``below`` (how many values lie under the bracket) and the values inside
it (about ``2 * width * n``, a few thousand per quantile for a million values); the
order statistic is then ``sorted(inside)[rank - below]``. A bracket that missed is
widened (x4, x16, then the whole range) and only its column read again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from normpipe.core.sketch import QuantileSketch

__all__ = ["Bracket", "BracketState", "brackets_for", "numpy_linear", "resolve"]


@dataclass(frozen=True, slots=True)
class Bracket:
    """Values in ``[low, high]`` hold the order statistics ``rank`` and ``rank + 1``."""

    probability: float
    rank: int  # 0-based rank of the lower order statistic
    low: float
    high: float


#: Per column, per bracket: (number of values below ``low``, values inside).
BracketState = dict[str, list[tuple[int, npt.NDArray[np.float64]]]]


def _virtual_index(n: int, p: float) -> float:
    """numpy's virtual index for ``method="linear"``: ``(n - 1) * p``."""
    return float((n - 1) * np.float64(p))


def _lower_rank(n: int, p: float) -> int:
    h = _virtual_index(n, p)
    return n - 1 if h >= n - 1 else max(math.floor(h), 0)


def brackets_for(
    sketch: QuantileSketch, count: int, probabilities: Sequence[float], widen: float
) -> list[Bracket]:
    """One bracket per probability; ``widen`` times the sketch's rank error either side
    (``math.inf``: the whole range)."""
    out = []
    for p in probabilities:
        rank = _lower_rank(count, p)
        if math.isinf(widen):
            low, high = -math.inf, math.inf
        else:
            margin = widen * sketch.rank_error
            lo_p = max(rank / count - margin, 0.0)
            hi_p = min((rank + 2) / count + margin, 1.0)
            low, high = sketch.quantiles([lo_p, hi_p])
            low = -math.inf if lo_p == 0.0 else low
            high = math.inf if hi_p == 1.0 else high
        out.append(Bracket(p, rank, low, high))
    return out


def collect(
    values: npt.NDArray[np.float64], brackets: Sequence[Bracket]
) -> list[tuple[int, npt.NDArray[np.float64]]]:
    """One block's share of each bracket (``values`` finite)."""
    return [
        (int(np.count_nonzero(values < b.low)), values[(values >= b.low) & (values <= b.high)])
        for b in brackets
    ]


def merge(states: Sequence[BracketState]) -> BracketState:
    """Combine bracket states of disjoint blocks (sums and concatenations, each value
    copied once however many states there are)."""
    below: dict[str, list[int]] = {}
    inside: dict[str, list[list[npt.NDArray[np.float64]]]] = {}
    for state in states:
        for name, parts in state.items():
            if name not in below:
                below[name], inside[name] = [0] * len(parts), [[] for _ in parts]
            if len(parts) != len(below[name]):
                raise ValueError(f"column '{name}': states of different brackets")
            for i, (count, values) in enumerate(parts):
                below[name][i] += count
                inside[name][i].append(values)
    return {
        name: [(count, np.concatenate(inside[name][i])) for i, count in enumerate(counts)]
        for name, counts in below.items()
    }


def numpy_linear(lower: float, upper: float, n: int, p: float) -> float:
    """numpy's linear interpolation between the two order statistics, bit for bit."""
    h = _virtual_index(n, p)
    if h >= n - 1:
        return lower  # numpy takes the last value (the lower order statistic is rank n - 1)
    if h < 0:
        return lower
    t = np.float64(h - math.floor(h))
    a, b = np.float64(lower), np.float64(upper)
    diff = b - a
    value = b - diff * (1 - t) if t >= 0.5 else a + diff * t
    return float(value)


def resolve(
    brackets: Mapping[str, Sequence[Bracket]], state: BracketState, counts: Mapping[str, int]
) -> tuple[dict[str, dict[float, float]], dict[str, list[float]]]:
    """The exact quantiles found, and per column the probabilities whose bracket missed."""
    found: dict[str, dict[float, float]] = {}
    missed: dict[str, list[float]] = {}
    for name, column_brackets in brackets.items():
        n = counts[name]
        for bracket, (below, inside) in zip(column_brackets, state[name], strict=True):
            index = bracket.rank - below
            need = 1 if bracket.rank >= n - 1 else 2
            if index < 0 or index + need > inside.size:
                missed.setdefault(name, []).append(bracket.probability)
                continue
            ordered = np.partition(inside, [index, index + need - 1]) if inside.size > 1 else inside
            lower = float(ordered[index])
            upper = float(ordered[index + need - 1])
            found.setdefault(name, {})[bracket.probability] = numpy_linear(
                lower, upper, n, bracket.probability
            )
    return found, missed
