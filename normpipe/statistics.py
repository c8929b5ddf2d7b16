"""The statistics of a dataset, without any fitted method: what the full pass produced.

:class:`Statistics` holds, per column, the Arrow type, the mergeable state (moments,
counts, quantile sketch) and exact quantiles where they were measured; per group the
moments with ``--group-by``; and the :class:`~normpipe.fingerprint.Fingerprint` of the
files counted. It merges with the state of more partitions (:meth:`Statistics.absorb`)
or another dataset's statistics (:meth:`Statistics.merge`), refusing files counted
twice. Fitting methods on it is :func:`normpipe.stats.fit`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from normpipe.categories import CategorySpec
from normpipe.core.column import ColumnState, TableState
from normpipe.core.groups import GroupMoments
from normpipe.core.tensor import TensorState
from normpipe.core.vocab import VocabState
from normpipe.dataset import listing
from normpipe.errors import InputError
from normpipe.fingerprint import Fingerprint
from normpipe.tensors import TensorSpec

__all__ = ["CategoryStatistics", "ColumnStatistics", "GroupStatistics", "Statistics", "TensorStatistics"]


@dataclass(frozen=True)
class ColumnStatistics:
    """One column: its Arrow type, its mergeable state, and its exact quantiles by
    probability (``--quantiles exact``; ``None`` when the sketch's are used)."""

    dtype: str
    state: ColumnState
    exact: Mapping[float, float] | None = None


@dataclass(frozen=True)
class TensorStatistics:
    """One tensor column: its Arrow type, what was declared for it (shape, layout,
    ``per``, method) and its per-slot mergeable state."""

    dtype: str
    spec: TensorSpec
    state: TensorState


@dataclass(frozen=True)
class CategoryStatistics:
    """One categorical column: its Arrow type, what was declared for it, whether it was
    found by ``categorical: auto`` (then the fit decides whether it is coded), and its
    value counts."""

    dtype: str
    spec: CategorySpec
    state: VocabState
    auto: bool = False


@dataclass(frozen=True)
class GroupStatistics:
    """Per-group moments of each column (and of its signed log where kept), by ``by``."""

    by: str
    moments: Mapping[str, GroupMoments]
    logs: Mapping[str, GroupMoments]


@dataclass(frozen=True)
class Statistics:
    """The merged statistics of every file in ``dataset`` (and its history)."""

    rows: int
    k: int
    dataset: Fingerprint
    columns: Mapping[str, ColumnStatistics]
    groups: GroupStatistics | None = None
    exact: bool = False
    tensors: Mapping[str, TensorStatistics] = field(default_factory=dict)
    categories: Mapping[str, CategoryStatistics] = field(default_factory=dict)

    @classmethod
    def from_state(
        cls,
        state: TableState,
        dtypes: Mapping[str, str],
        k: int,
        dataset: Fingerprint,
        exact: Mapping[str, Mapping[float, float]] | None = None,
        group_by: str | None = None,
        tensors: Mapping[str, TensorSpec] | None = None,
        categories: Mapping[str, tuple[CategorySpec, bool]] | None = None,
    ) -> Statistics:
        """The statistics of a merged :class:`TableState` of the columns in ``dtypes``
        (``exact``: measured quantiles by column and probability; ``tensors``: the
        tensor columns' specs; ``categories``: the categorical columns' specs and whether
        ``auto`` found them; their types also in ``dtypes``).

        Raises
        ------
        InputError
            A column's values are too large for float64 moments.
        """
        columns = {}
        tensors = tensors or {}
        categories = categories or {}
        for name, dtype in dtypes.items():
            if name in tensors or name in categories:
                continue
            column = state.columns[name]
            moments = column.moments
            if moments.count and not (math.isfinite(moments.mean) and math.isfinite(moments.m2)):
                raise InputError(
                    f"column '{name}': values too large for float64 statistics (the "
                    f"{'mean' if not math.isfinite(moments.mean) else 'variance'} overflows; "
                    f"largest magnitude {max(abs(moments.min), abs(moments.max)):.3g}); rescale or exclude it"
                )
            columns[name] = ColumnStatistics(dtype, column, None if exact is None else exact.get(name, {}))
        groups = None
        if group_by is not None and state.groups:
            groups = GroupStatistics(group_by, state.groups, state.group_logs)
        found = {
            name: TensorStatistics(dtypes[name], spec, state.tensors[name]) for name, spec in tensors.items()
        }
        coded = {
            name: CategoryStatistics(dtypes[name], spec, state.categories[name], auto)
            for name, (spec, auto) in categories.items()
        }
        return cls(state.rows, k, dataset, columns, groups, exact is not None, found, coded)

    def table_state(self) -> TableState:
        """These statistics as a :class:`TableState`, to merge into other statistics."""
        return TableState(
            self.rows,
            {name: c.state for name, c in self.columns.items()},
            self.groups.moments if self.groups is not None else {},
            self.groups.logs if self.groups is not None else {},
            {name: t.state for name, t in self.tensors.items()},
            {name: c.state for name, c in self.categories.items()},
        )

    def check_not_counted(self, files: Mapping[tuple[str, int], str], what: str) -> None:
        """Refuse ``files`` (from :meth:`Fingerprint.counted`) that these statistics already count."""
        repeated = sorted(set(self.dataset.counted()) & set(files))
        if repeated:
            location, size = repeated[0]
            more = f" (and {len(repeated) - 1} more)" if len(repeated) > 1 else ""
            raise InputError(
                f"{location} ({size:,} bytes){more} is already counted in {what}; leave it out, "
                "or pass --allow-repeat to count it again"
            )

    def absorb(
        self, state: TableState, dataset: Fingerprint, allow_repeat: bool = False, what: str = "the stats"
    ) -> Statistics:
        """These statistics merged with ``state`` of more rows (``dataset`` lists their files).

        Moments, counts, min/max merge exactly (equal to a full pass up to float64
        rounding); sketches merge within their bound. Exact quantiles cannot be merged:
        the result holds the sketch's. A signed-log moment or distinct sketch kept on one
        side only is dropped (it would not cover every row). Files already counted are
        refused unless ``allow_repeat``.

        Raises
        ------
        InputError
            Columns or grouping differ, or a file is counted twice.
        """
        if not allow_repeat:
            self.check_not_counted(dataset.counted(), what)
        missing = [name for name in self.columns if name not in state.columns]
        extra = [name for name in state.columns if name not in self.columns]
        if missing or extra:
            name = (missing or extra)[0]
            side = "new data" if missing else what
            raise InputError(
                f"column '{name}' is not in the {side}; merge statistics of the same columns "
                f"(have: {listing(list(self.columns))})"
            )
        columns = {}
        for name, column in self.columns.items():
            other = state.columns[name]
            merged = ColumnState.merge_all([column.state, other])
            if (column.state.log is None) != (other.log is None):
                merged = replace(merged, log=None)
            if (column.state.distinct is None) != (other.distinct is None):
                merged = replace(merged, distinct=None)
            if (column.state.counts is None) != (other.counts is None):
                merged = replace(merged, counts=None)
            columns[name] = ColumnStatistics(column.dtype, merged)
        k = min([self.k, *(c.sketch.k for c in state.columns.values())])
        return Statistics(
            self.rows + state.rows,
            k,
            dataset.after(self.dataset),
            columns,
            self._absorb_groups(state, what),
            tensors=self._absorb_tensors(state, what),
            categories=self._absorb_categories(state, what),
        )

    def _absorb_categories(self, state: TableState, what: str) -> dict[str, CategoryStatistics]:
        _same_names(set(self.categories), set(state.categories), "categorical", what)
        merged = {}
        for name, column in self.categories.items():
            other = state.categories[name]
            if other.kind != column.state.kind:
                raise InputError(
                    f"categorical column '{name}' holds {other.kind} values in the new data and "
                    f"{column.state.kind} values in {what}; merge statistics of the same types"
                )
            merged[name] = replace(column, state=column.state.merge(other))
        return merged

    def _absorb_tensors(self, state: TableState, what: str) -> dict[str, TensorStatistics]:
        _same_names(set(self.tensors), set(state.tensors), "tensor", what)
        merged = {}
        for name, tensor in self.tensors.items():
            other = state.tensors[name]
            if other.layout != tensor.state.layout:
                raise InputError(
                    f"tensor column '{name}' is {other.layout.describe()} in the new data and "
                    f"{tensor.state.layout.describe()} in {what}; merge statistics declared alike"
                )
            merged[name] = TensorStatistics(tensor.dtype, tensor.spec, tensor.state.merge(other))
        return merged

    def _absorb_groups(self, state: TableState, what: str) -> GroupStatistics | None:
        if self.groups is None:
            if state.groups:
                raise InputError(
                    f"the new statistics are per group and {what} is not; "
                    "merge statistics fitted the same way"
                )
            return None
        if set(state.groups) != set(self.groups.moments):
            raise InputError(
                f"{what} is normalized per '{self.groups.by}' group and the new statistics are not "
                "(or not by the same columns); merge statistics fitted the same way"
            )
        moments = {n: m.merge(state.groups[n]) for n, m in self.groups.moments.items()}
        logs = {n: m.merge(state.group_logs[n]) for n, m in self.groups.logs.items() if n in state.group_logs}
        return GroupStatistics(self.groups.by, moments, logs)

    def merge(
        self, other: Statistics, allow_repeat: bool = False, names: tuple[str, str] = ("A", "B")
    ) -> Statistics:
        """The statistics of both datasets' rows (see :meth:`absorb`)."""
        if not allow_repeat:
            self.check_not_counted(other.dataset.counted(), f"both {names[0]} and {names[1]}")
        mine, theirs = self.groups, other.groups
        if (mine is None) != (theirs is None) or (
            mine is not None and theirs is not None and mine.by != theirs.by
        ):
            raise InputError(
                f"{names[0]} and {names[1]} are not grouped the same way; merge statistics fitted alike"
            )
        return self.absorb(other.table_state(), other.dataset, allow_repeat=True, what=names[0])


def _same_names(mine: set[str], theirs: set[str], kind: str, what: str) -> None:
    """Both sides of a merge must hold the same ``kind`` columns."""
    if mine != theirs:
        name = sorted(mine ^ theirs)[0]
        raise InputError(
            f"{kind} column '{name}' is in one side only ({what} and the new data); "
            f"merge statistics of the same {kind} columns"
        )
