"""Global statistics of a dataset and the transform fitted on them, in memory.

A :class:`Stats` holds per column the mergeable state, its summary and the fitted
method (:class:`ColumnStats`), per-group moments with ``--group-by``
(:class:`GroupStats`), and the files it was computed from; it refits, merges more
partitions in, and maps frames through its :class:`~normpipe.fitted.FittedTransform`.
Its file format lives in :mod:`normpipe.artifact`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from normpipe.categories import CategorySpec, FittedCategories, choose, fit_categories
from normpipe.core.column import ColumnState, ColumnSummary, TableState
from normpipe.core.groups import GroupMoments
from normpipe.core.tensor import TensorState
from normpipe.core.vocab import VocabState
from normpipe.errors import ConfigError, InputError
from normpipe.fingerprint import Fingerprint
from normpipe.fitted import FittedTransform, unknown_column
from normpipe.impute import Imputed, ImputeSpec, category_fill, numeric_fill
from normpipe.mappers import GroupedScalers
from normpipe.scalers import (
    REPORTED_PROBABILITIES,
    FittedScaler,
    Method,
    Request,
    fit_scaler,
    group_params,
    parse_scaler,
)
from normpipe.statistics import (
    CategoryStatistics,
    ColumnStatistics,
    GroupStatistics,
    Statistics,
    TensorStatistics,
)
from normpipe.storage import locate
from normpipe.tensors import FittedTensor, TensorSpec, fit_tensor

if TYPE_CHECKING:
    from normpipe.export import ColumnMaps
    from normpipe.fitted import Frame

__all__ = ["CategoryStats", "ColumnStats", "GroupStats", "Stats", "TensorStats", "fit"]


class ColumnStats:
    """Statistics of one column, its mergeable state and its fitted scaler."""

    __slots__ = ("dtype", "exact", "fill", "impute", "request", "scaler", "state", "summary")

    def __init__(
        self,
        dtype: str,
        state: ColumnState,
        summary: ColumnSummary,
        scaler: FittedScaler,
        exact: Mapping[float, float] | None = None,
        request: Method | None = None,
        impute: ImputeSpec | None = None,
        fill: float | None = None,
    ):
        self.dtype = dtype
        self.state = state
        self.summary = summary
        self.scaler = scaler
        #: What was asked for: ``auto`` or a method with its options (``scaler`` holds
        #: what was fitted; the two differ only for ``auto``).
        self.request: Method = scaler.spec if request is None else request
        #: Exact quantiles (``--quantiles exact``) by probability, else ``None``.
        self.exact = dict(exact) if exact is not None else None
        #: What to do with missing values, and the fitted fill value (``None``: none).
        self.impute = impute if impute is not None else ImputeSpec()
        self.fill = fill

    @classmethod
    def fitted(
        cls,
        name: str,
        dtype: str,
        state: ColumnState,
        spec: Method,
        exact: Mapping[float, float] | None = None,
        impute: ImputeSpec | None = None,
    ) -> ColumnStats:
        """Finalize ``state`` and fit ``spec`` and ``impute``; quantiles from ``exact`` where given.

        Raises
        ------
        InputError
            ``exact`` lacks a probability that ``spec`` needs.
        """
        probabilities = sorted({*REPORTED_PROBABILITIES, *spec.probabilities()})
        summary = state.finalize(probabilities)
        if exact is not None and state.moments.count:
            lacking = [p for p in probabilities if p not in exact]
            if lacking:
                raise InputError(
                    f"column '{name}': the exact quantile {lacking[0]:g} is not in the artifact; "
                    "fit again with --quantiles exact and this method"
                )
            summary = replace(summary, quantiles={p: exact[p] for p in probabilities})
        impute = impute if impute is not None else ImputeSpec()
        fill = numeric_fill(name, impute, summary, state)
        return cls(dtype, state, summary, fit_scaler(spec, summary, state, name), exact, spec, impute, fill)

    @property
    def imputed(self) -> Imputed | None:
        """The scaler with its imputation, ``None`` when the column is not imputed."""
        if not self.impute.active:
            return None
        return Imputed(self.scaler, self.impute.strategy, self.fill, self.impute.missing_indicator)


class CategoryStats:
    """One categorical column: its counts (:class:`CategoryStatistics`), its vocabulary
    (``fitted``; ``None`` when ``auto`` left it as it is, for ``reason``) and imputation."""

    __slots__ = ("fill", "fitted", "impute", "reason", "statistics")

    def __init__(self, name: str, statistics: CategoryStatistics, impute: ImputeSpec | None = None) -> None:
        self.statistics = statistics
        impute = impute if impute is not None else ImputeSpec()
        if impute.strategy in ("mean", "median"):  # no meaning for categories: a global one skips them
            impute = impute.model_copy(update={"strategy": "none"})
        self.impute = impute
        coded, self.reason = choose(statistics.state) if statistics.auto else (True, "declared")
        self.fitted: FittedCategories | None = (
            fit_categories(name, statistics.spec, statistics.state) if coded else None
        )
        self.fill = category_fill(name, self.impute, statistics.state) if coded else None

    @property
    def dtype(self) -> str:
        return self.statistics.dtype

    @property
    def spec(self) -> CategorySpec:
        return self.statistics.spec

    @property
    def state(self) -> VocabState:
        return self.statistics.state

    @property
    def map(self) -> FittedCategories | Imputed | None:
        """The column's map: codes, after its imputation where it asks for one."""
        if self.fitted is None or not self.impute.active:
            return self.fitted
        return Imputed(self.fitted, self.impute.strategy, self.fill, self.impute.missing_indicator)


class TensorStats:
    """Statistics of one tensor column (:class:`TensorStatistics`) and its fitted map."""

    __slots__ = ("fitted", "statistics")

    def __init__(self, name: str, statistics: TensorStatistics) -> None:
        self.statistics = statistics
        self.fitted: FittedTensor = fit_tensor(name, statistics.spec, statistics.state)

    @property
    def dtype(self) -> str:
        return self.statistics.dtype

    @property
    def spec(self) -> TensorSpec:
        return self.statistics.spec

    @property
    def state(self) -> TensorState:
        return self.statistics.state


class GroupStats:
    """Per-group moments of each column (``--group-by``): each group's parameters are
    fitted with the column's method; unseen groups follow ``unseen``."""

    __slots__ = ("by", "keys", "logs", "moments", "unseen")

    def __init__(
        self,
        by: str,
        moments: Mapping[str, GroupMoments],
        logs: Mapping[str, GroupMoments],
        unseen: Literal["global", "error"] = "global",
    ) -> None:
        first = next(iter(moments.values()))
        self.by = by
        self.keys = first.keys
        self.moments = dict(moments)
        self.logs = dict(logs)
        self.unseen = unseen

    def mapper(self, scalers: Mapping[str, FittedScaler]) -> GroupedScalers:
        """Per-group parameters of every column, with the column's fitted method."""
        params = {
            name: group_params(scalers[name].spec, moments, self.logs.get(name))
            for name, moments in self.moments.items()
        }
        return GroupedScalers(
            self.by, self.keys, {name: scalers[name].spec for name in params}, params, self.unseen
        )


class Stats:
    """Global statistics of a dataset and the transform fitted on them.

    Build one with :func:`normpipe.fit` or :meth:`Stats.load`; apply it to pandas
    frames with :meth:`transform` and :meth:`inverse_transform`, or to Parquet with
    :func:`normpipe.transform`.
    """

    def __init__(
        self,
        columns: Mapping[str, ColumnStats],
        rows: int,
        k: int,
        dataset: Fingerprint | Mapping[str, Any],
        exact: bool = False,
        groups: GroupStats | None = None,
        tensors: Mapping[str, TensorStats] | None = None,
        categories: Mapping[str, CategoryStats] | None = None,
    ) -> None:
        from normpipe import __version__

        self.columns: dict[str, ColumnStats] = dict(columns)
        #: Categorical columns: value counts, vocabulary and imputation.
        self.categories: dict[str, CategoryStats] = dict(categories or {})
        #: Tensor columns (images, embeddings, windows): per-slot statistics and maps.
        self.tensors: dict[str, TensorStats] = dict(tensors or {})
        #: Whether the recorded quantiles are exact (``--quantiles exact``).
        self.exact = exact
        #: Per-group statistics (``--group-by``), else ``None``.
        self.groups = groups
        self.rows = rows
        self.k = k
        #: The files these statistics were computed from (a mapping is read as the
        #: artifact's ``dataset`` entry).
        self.dataset = dataset if isinstance(dataset, Fingerprint) else Fingerprint.from_json(dataset)
        self.created = datetime.now(UTC).isoformat(timespec="seconds")
        self.normpipe_version: str = __version__
        self._file_sha256: str | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_state(
        cls,
        state: TableState,
        specs: Mapping[str, Request],
        dtypes: Mapping[str, str],
        k: int,
        dataset: Fingerprint | Mapping[str, Any],
        exact: Mapping[str, Mapping[float, float]] | None = None,
        group_by: str | None = None,
        unseen: Literal["global", "error"] = "global",
        tensors: Mapping[str, TensorSpec] | None = None,
        categories: Mapping[str, tuple[CategorySpec, bool]] | None = None,
        imputes: Mapping[str, ImputeSpec] | None = None,
    ) -> Stats:
        """Finalize a merged :class:`TableState` and fit each column's scaler
        (with ``exact``, quantiles by column and probability replace the sketch's;
        with ``group_by``, the state's per-group moments fit each group's parameters;
        ``tensors``: each tensor column's :class:`~normpipe.tensors.TensorSpec`;
        ``categories``: each categorical column's spec and whether ``auto`` found it;
        ``imputes``: the imputation of each column that has one)."""
        files = dataset if isinstance(dataset, Fingerprint) else Fingerprint.from_json(dataset)
        names = [*specs, *(tensors or {}), *(categories or {})]
        statistics = Statistics.from_state(
            state, {n: dtypes[n] for n in names}, k, files, exact, group_by, tensors, categories
        )
        return fit(statistics, specs, unseen, imputes)

    @cached_property
    def statistics(self) -> Statistics:
        """The statistics alone, without the fitted methods."""
        groups = self.groups
        return Statistics(
            self.rows,
            self.k,
            self.dataset,
            {name: ColumnStatistics(c.dtype, c.state, c.exact) for name, c in self.columns.items()},
            GroupStatistics(groups.by, groups.moments, groups.logs) if groups is not None else None,
            self.exact,
            {name: t.statistics for name, t in self.tensors.items()},
            {name: c.statistics for name, c in self.categories.items()},
        )

    @property
    def requests(self) -> dict[str, Method]:
        """What was asked for, by column (``auto`` where it was)."""
        return {name: c.request for name, c in self.columns.items()}

    @property
    def imputes(self) -> dict[str, ImputeSpec]:
        """The imputation of each scalar and categorical column that has one."""
        found = {name: c.impute for name, c in self.columns.items()}
        found.update({name: c.impute for name, c in self.categories.items()})
        return {name: spec for name, spec in found.items() if spec.active}

    @property
    def unseen(self) -> Literal["global", "error"]:
        return self.groups.unseen if self.groups is not None else "global"

    def refit(self, method: Any = None, overrides: Mapping[str, Any] | None = None) -> Stats:
        """The same statistics with other scalers; no pass over the data.

        The artifact keeps each column's full state (moments and quantile sketch), so
        any method can be fitted from it. ``method`` (a name or a spec) applies to every
        column not in ``overrides``; left out, a column keeps what was asked for
        (an ``auto`` column stays ``auto`` and chooses again), e.g. ``stats.refit("minmax")``.
        Tensor columns take the method too (per slot, as declared) when it is one of
        theirs (:data:`~normpipe.tensors.TENSOR_METHODS`), else keep theirs.
        """
        overrides = dict(overrides or {})
        requests = {
            name: request if (chosen := overrides.get(name, method)) is None else parse_scaler(chosen)
            for name, request in self.requests.items()
        }
        statistics = self.statistics
        tensors = {}
        for name, tensor in statistics.tensors.items():
            chosen = overrides.get(name, method)
            tensors[name] = (
                tensor if chosen is None else replace(tensor, spec=tensor.spec.with_method(chosen, name))
            )
        return fit(replace(statistics, tensors=tensors), requests, self.unseen, self.imputes)

    # ---------------------------------------------------------------- merging
    def absorb(
        self,
        state: TableState,
        dataset: Fingerprint,
        allow_repeat: bool = False,
        what: str = "the stats",
    ) -> Stats:
        """These statistics merged with ``state`` of more rows (``dataset`` lists their
        files; see :meth:`Statistics.absorb`), each column fitted with what was asked for
        (``auto`` columns choose again on the merged profile).

        Raises
        ------
        InputError
            Columns differ, a file is counted twice, or a log method lost its log
            moments (one side was fitted without them).
        """
        merged = self.statistics.absorb(state, dataset, allow_repeat, what)
        return fit(merged, self.requests, self.unseen, self.imputes)

    def like(self, state: TableState, dataset: Fingerprint) -> Stats:
        """The statistics of ``state`` alone (the rows of other files, ``dataset``), fitted
        as these are: the same columns, requests, imputation and specs. What a scheduled
        run compares with a frozen artifact to see whether new files drifted."""
        statistics = self.statistics
        dtypes = {name: c.dtype for name, c in statistics.columns.items()}
        dtypes.update({name: t.dtype for name, t in statistics.tensors.items()})
        dtypes.update({name: c.dtype for name, c in statistics.categories.items()})
        fresh = Statistics.from_state(
            state,
            dtypes,
            self.k,
            dataset,
            group_by=self.groups.by if self.groups is not None else None,
            tensors={name: t.spec for name, t in statistics.tensors.items()},
            categories={name: (c.spec, c.auto) for name, c in statistics.categories.items()},
        )
        return fit(fresh, self.requests, self.unseen, self.imputes)

    def merge(self, other: Stats, allow_repeat: bool = False, names: tuple[str, str] = ("A", "B")) -> Stats:
        """The statistics of both artifacts' rows (see :meth:`Statistics.merge`)."""
        merged = self.statistics.merge(other.statistics, allow_repeat, names)
        return fit(merged, self.requests, self.unseen, self.imputes)

    # ---------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        """The artifact as a JSON document (see :mod:`normpipe.artifact`)."""
        from normpipe import artifact  # the format module imports this one

        return artifact.to_json(self)

    def to_bytes(self) -> bytes:
        """The artifact file's bytes (see :mod:`normpipe.artifact`)."""
        from normpipe import artifact

        return artifact.to_bytes(self)

    def loaded(self, created: str, normpipe_version: str, file_sha256: str) -> Stats:
        """These statistics with the provenance of the artifact file they were read from."""
        self.created, self.normpipe_version, self._file_sha256 = created, normpipe_version, file_sha256
        return self

    @property
    def sha256(self) -> str:
        """sha256 of the artifact file it was loaded from, else of :meth:`to_bytes`."""
        return self._file_sha256 or hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> str:
        """Write the artifact atomically (a temporary file then rename locally; one object
        on an object store; ``path`` may be any fsspec URL); returns its sha256, which
        :attr:`sha256` then gives without serializing again."""
        data = self.to_bytes()
        locate(path, storage_options).write_bytes(data)
        self._file_sha256 = hashlib.sha256(data).hexdigest()  # the bytes are deterministic
        return self._file_sha256

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "stats artifact") -> Stats:
        """Parse and validate an artifact; any problem is an :class:`ArtifactError`."""
        from normpipe import artifact

        return artifact.from_bytes(data, where)

    @classmethod
    def load(cls, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Stats:
        """Read and validate a stats artifact written by :meth:`save` (a path or URL)."""
        from normpipe import artifact

        return artifact.load(path, storage_options)

    # ---------------------------------------------------------------- access
    @property
    def scalers(self) -> dict[str, FittedScaler]:
        return {name: c.scaler for name, c in self.columns.items()}

    def summary(self, name: str) -> ColumnSummary:
        return self._column(name).summary

    def _column(self, name: str) -> ColumnStats:
        if name not in self.columns:
            raise unknown_column(name, self.columns)
        return self.columns[name]

    # ---------------------------------------------------------------- in-memory transform
    @cached_property
    def fitted(self) -> FittedTransform:
        """The fitted transform (per-group parameters computed here, once)."""
        groups = self.groups.mapper(self.scalers) if self.groups is not None else None
        imputed = {name: c.imputed for name, c in self.columns.items() if c.imputed is not None}
        imputed.update({name: m for name, c in self.categories.items() if isinstance(m := c.map, Imputed)})
        categories = {name: c.fitted for name, c in self.categories.items() if c.fitted is not None}
        return FittedTransform(self.scalers, groups, self.tensor_maps, categories, imputed)

    @property
    def tensor_maps(self) -> dict[str, FittedTensor]:
        """The fitted map of each tensor column."""
        return {name: t.fitted for name, t in self.tensors.items()}

    def transform_column(
        self, name: str, values: npt.ArrayLike, groups: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.float64]:
        """See :meth:`FittedTransform.transform_column`."""
        return self.fitted.transform_column(name, values, groups)

    def inverse_column(
        self, name: str, values: npt.ArrayLike, groups: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.float64]:
        """See :meth:`FittedTransform.inverse_column`."""
        return self.fitted.inverse_column(name, values, groups)

    def transform(self, data: Frame, columns: Sequence[str] | None = None) -> Frame:
        """Normalize a pandas or Polars frame or an Arrow table (see
        :meth:`FittedTransform.transform`)."""
        mapped: Frame = self.fitted.transform(data, columns)
        return mapped

    def inverse_transform(self, data: Frame, columns: Sequence[str] | None = None) -> Frame:
        """Map normalized values back to original units (see
        :meth:`FittedTransform.inverse_transform`)."""
        mapped: Frame = self.fitted.inverse_transform(data, columns)
        return mapped

    def to_torch(self, columns: Sequence[str] | None = None, inverse: bool = False) -> ColumnMaps:
        """The fitted maps of ``columns`` (default: all, in the artifact's order) as a
        PyTorch module on float64 ``(rows, columns)`` tensors, forward or ``inverse``:
        scriptable and exportable to ONNX (see :mod:`normpipe.export`)."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError("Stats.to_torch needs PyTorch: pip install 'normpipe[train]'")
        from normpipe.export import maps_of  # torch is imported on first use

        return maps_of(self, columns, inverse)

    def __repr__(self) -> str:
        methods = ", ".join(f"{n}={c.scaler.method}" for n, c in self.columns.items())
        tensors = ", ".join(
            f"{n}={t.spec.method_name} per {t.state.layout.per}" for n, t in self.tensors.items()
        )
        coded = ", ".join(
            f"{n}={c.fitted.size} codes" if c.fitted is not None else f"{n}=left as it is"
            for n, c in self.categories.items()
        )
        return (
            f"Stats(rows={self.rows}, k={self.k}, columns: {methods}"
            + (f"; tensors: {tensors}" if tensors else "")
            + (f"; categories: {coded}" if coded else "")
            + ")"
        )


def fit(
    statistics: Statistics,
    requests: Mapping[str, Method],
    unseen: Literal["global", "error"] = "global",
    imputes: Mapping[str, ImputeSpec] | None = None,
) -> Stats:
    """Each column's requested method and imputation fitted on ``statistics``, with
    per-group parameters where they were kept, and each categorical column's vocabulary:
    a pure function, no pass over the data.

    Raises
    ------
    InputError
        A method cannot be fitted on these statistics (log1p on negative values, a log
        method without log moments, a missing exact quantile, a method without
        per-group rules on grouped statistics).
    """
    imputes = imputes or {}
    columns = {
        name: ColumnStats.fitted(name, c.dtype, c.state, requests[name], c.exact, imputes.get(name))
        for name, c in statistics.columns.items()
    }
    categories = {
        name: CategoryStats(name, c, imputes.get(name)) for name, c in statistics.categories.items()
    }
    found = statistics.groups
    groups = GroupStats(found.by, found.moments, found.logs, unseen) if found is not None else None
    tensors = {name: TensorStats(name, t) for name, t in statistics.tensors.items()}
    stats = Stats(
        columns,
        statistics.rows,
        statistics.k,
        statistics.dataset,
        statistics.exact,
        groups,
        tensors,
        categories,
    )
    stats.fitted  # noqa: B018  # fits each group now: a method without per-group rules fails here
    return stats
