"""The stats artifact: a versioned, human-readable JSON file, and the in-memory transform.

Layout (``format`` ``"normpipe.stats"``, ``version`` 1)::

    {
      "format": "normpipe.stats", "version": 1, "normpipe_version": "0.1.0",
      "created": "2026-11-25T10:00:00+00:00",
      "rows": 20000000,
      "quantile_sketch": {"kind": "kll", "k": 4000, "rank_error": 0.00072, "confidence": 0.99},
      "dataset": {"source": "...", "root": "...", "sha256": "...",
                  "files": [{"path": "year=2024/part-0.parquet", "size": 123, "mtime": 1.7e9}]},
      "columns": {
        "price": {
          "dtype": "double", "count": 19800000, "nulls": 0, "nans": 200000,
          "posinf": 0, "neginf": 0, "mean": 1.5, "m2": 3.0e7, "var": 1.5, "std": 1.22,
          "min": -4.1, "max": 7.9, "quantiles": {"0.25": 0.68, "0.5": 1.5, "0.75": 2.3},
          "sketch": "<base64 KLL sketch>",
          "scaler": {"method": "zscore", "with_mean": true, "with_std": true},
          "params": {"center": 1.5, "scale": 1.22}
        }
      }
    }

``count`` is the number of finite values; ``var`` and ``std`` use ddof=0; ``mean``,
``var``, ``std``, ``min``, ``max`` are ``null`` for a column with no finite value.
The artifact loads as data (``json``), never as code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from normpipe.core.column import ColumnState, ColumnSummary, TableState
from normpipe.core.groups import GroupMoments
from normpipe.core.moments import Moments
from normpipe.core.sketch import DistinctSketch, QuantileSketch, rank_error_bound
from normpipe.dataset import listing
from normpipe.errors import ArtifactError, InputError
from normpipe.fingerprint import Fingerprint
from normpipe.fitted import FittedTransform
from normpipe.mappers import GroupedScalers
from normpipe.scalers import (
    REPORTED_PROBABILITIES,
    Auto,
    FittedScaler,
    Method,
    Request,
    RequestSpec,
    ScalerSpec,
    fit_scaler,
    group_params,
    parse_scaler,
)
from normpipe.storage import is_remote, locate

if TYPE_CHECKING:
    from normpipe.fitted import Frame

__all__ = ["FORMAT", "VERSION", "ColumnStats", "GroupStats", "Stats"]

FORMAT = "normpipe.stats"
VERSION = 1
#: Counts are int64 everywhere (numpy, Arrow); a larger one is a damaged artifact.
MAX_COUNT = 2**63 - 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FileModel(_Model):
    path: str
    size: int = Field(ge=0)
    mtime: float | None


class _DatasetModel(_Model):
    source: str
    root: str
    sha256: str
    files: list[_FileModel]
    history: list[_DatasetModel] = Field(default_factory=list)  # merged-in earlier datasets


class _SketchModel(_Model):
    kind: Literal["kll"]
    k: int = Field(ge=8, le=65535)
    rank_error: float
    confidence: float


class _MomentsModel(_Model):
    count: int = Field(ge=1, le=MAX_COUNT)
    mean: float
    mean_lo: float = 0.0  # absent in artifacts written before it was kept
    m2: float
    m3: float | None
    m4: float | None
    min: float
    max: float

    @classmethod
    def of(cls, m: Moments | None) -> dict[str, Any] | None:
        if m is None or not m.count:
            return None
        return {
            "count": m.count,
            "mean": m.mean,
            "mean_lo": m.mean_lo,
            "m2": m.m2,
            "m3": _finite_or_none(m.m3),
            "m4": _finite_or_none(m.m4),
            "min": m.min,
            "max": m.max,
        }

    def moments(self) -> Moments:
        return Moments(
            self.count,
            self.mean,
            self.m2,
            self.min,
            self.max,
            self.mean_lo,
            _none_to_nan(self.m3),
            _none_to_nan(self.m4),
        )


class _ColumnModel(_Model):
    dtype: str
    count: int = Field(ge=0, le=MAX_COUNT)
    nulls: int = Field(ge=0, le=MAX_COUNT)
    nans: int = Field(ge=0, le=MAX_COUNT)
    posinf: int = Field(ge=0, le=MAX_COUNT)
    neginf: int = Field(ge=0, le=MAX_COUNT)
    mean: float | None
    mean_lo: float | None = None  # the mean's rounding error; absent in artifacts written before it was kept
    m2: float | None
    m3: float | None = None  # absent in artifacts written before skewness was kept
    m4: float | None = None
    var: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: dict[str, float | None]
    sketch: str
    scaler: ScalerSpec
    request: RequestSpec | None = None  # what was asked for (auto, or the method); absent in older files
    params: dict[str, float]
    reason: str = ""
    profile: dict[str, float | None] = Field(default_factory=dict)
    zeros: int | None = Field(
        default=None, ge=0, le=MAX_COUNT
    )  # absent in artifacts written before it was kept
    at_min: int | None = Field(default=None, ge=0, le=MAX_COUNT)  # likewise
    at_max: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    log: _MomentsModel | None = None  # moments of sign(x) log1p(|x|), when a method needed them
    distinct: str | None = None  # base64 HLL sketch, when asked for
    table: list[float] | None = None  # the quantile transform's quantiles


class _GroupColumnModel(_Model):
    count: str
    mean: str
    m2: str
    min: str
    max: str
    log: dict[str, str] | None = None


class _GroupsModel(_Model):
    by: str
    unseen: Literal["global", "error"]
    keys: list[int] | list[str] | list[bool] | list[float]
    columns: dict[str, _GroupColumnModel]


class _ArtifactModel(_Model):
    format: Literal["normpipe.stats"]
    version: int
    normpipe_version: str
    created: str
    rows: int = Field(ge=0, le=MAX_COUNT)
    exact: bool = False  # quantiles exact (--quantiles exact); absent in older files
    quantile_sketch: _SketchModel
    dataset: _DatasetModel
    columns: dict[str, _ColumnModel]
    groups: _GroupsModel | None = None  # per-group normalization (--group-by)
    checksum: str | None = None  # absent in files written before it was added


def _checksum(doc: Mapping[str, Any]) -> str:
    """sha256 of the artifact's content (every key but ``checksum``), canonical JSON."""
    content = {k: v for k, v in doc.items() if k != "checksum"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))  # NaN/inf: a mismatch
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _none_to_nan(value: float | None) -> float:
    return float("nan") if value is None else value


class ColumnStats:
    """Statistics of one column, its mergeable state and its fitted scaler."""

    __slots__ = ("dtype", "exact", "request", "scaler", "state", "summary")

    def __init__(
        self,
        dtype: str,
        state: ColumnState,
        summary: ColumnSummary,
        scaler: FittedScaler,
        exact: Mapping[float, float] | None = None,
        request: Method | None = None,
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

    @classmethod
    def fitted(
        cls,
        name: str,
        dtype: str,
        state: ColumnState,
        spec: Method,
        exact: Mapping[float, float] | None = None,
    ) -> ColumnStats:
        """Finalize ``state`` and fit ``spec``; quantiles from ``exact`` where given.

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
        return cls(dtype, state, summary, fit_scaler(spec, summary, state, name), exact, spec)

    def to_json(self) -> dict[str, Any]:
        s, m = self.summary, self.state.moments
        return {
            "dtype": self.dtype,
            "count": s.count,
            "nulls": s.nulls,
            "nans": s.nans,
            "posinf": s.posinf,
            "neginf": s.neginf,
            "mean": _finite_or_none(s.mean),
            "mean_lo": m.mean_lo if s.count else None,
            "m2": m.m2 if s.count else None,
            "m3": _finite_or_none(m.m3) if s.count else None,
            "m4": _finite_or_none(m.m4) if s.count else None,
            "var": _finite_or_none(s.var),
            "std": _finite_or_none(s.std),
            "min": _finite_or_none(s.min),
            "max": _finite_or_none(s.max),
            "quantiles": {repr(p): _finite_or_none(q) for p, q in s.quantiles.items()},
            "sketch": self.state.sketch.to_base64(),
            "scaler": self.scaler.spec.model_dump(mode="json"),
            "request": self.request.model_dump(mode="json"),
            "params": self.scaler.params,
            "reason": self.scaler.reason,
            "profile": {
                "skewness": _finite_or_none(s.skewness),
                "kurtosis": _finite_or_none(s.kurtosis),
                "outside_fences": _finite_or_none(s.outside_fences),
                "zero_share": _finite_or_none(s.zero_share),
                "min_share": _finite_or_none(s.min_share),
                "max_share": _finite_or_none(s.max_share),
                "distinct": _finite_or_none(s.distinct),
            },
            "zeros": self.state.zeros,
            "at_min": self.state.at_min,
            "at_max": self.state.at_max,
            "log": _MomentsModel.of(self.state.log),
            "distinct": self.state.distinct.to_base64() if self.state.distinct is not None else None,
            "table": list(self.scaler.table) if self.scaler.table else None,
        }

    @classmethod
    def from_model(cls, model: _ColumnModel, k: int, is_exact: bool = False) -> ColumnStats:
        count = model.count
        moments = (
            Moments(
                count,
                _none_to_nan(model.mean),
                _none_to_nan(model.m2),
                _none_to_nan(model.min),
                _none_to_nan(model.max),
                model.mean_lo or 0.0,
                _none_to_nan(model.m3),
                _none_to_nan(model.m4),
            )
            if count
            else Moments()
        )
        state = ColumnState(
            moments,
            QuantileSketch.from_base64(model.sketch, k),
            model.nulls,
            model.nans,
            model.posinf,
            model.neginf,
            model.zeros or 0,
            model.at_min or 0,
            model.at_max or 0,
            model.log.moments() if model.log is not None else None,
            DistinctSketch.from_base64(model.distinct) if model.distinct is not None else None,
        )
        summary = ColumnSummary(
            count=count,
            nulls=model.nulls,
            nans=model.nans,
            posinf=model.posinf,
            neginf=model.neginf,
            mean=_none_to_nan(model.mean),
            var=_none_to_nan(model.var),
            std=_none_to_nan(model.std),
            min=_none_to_nan(model.min),
            max=_none_to_nan(model.max),
            quantiles={float(p): _none_to_nan(q) for p, q in model.quantiles.items()},
            rank_error=rank_error_bound(k),
            skewness=moments.skewness,
            kurtosis=moments.kurtosis,
            outside_fences=state.outside_fences(),
            zero_share=model.zeros / count if count and model.zeros is not None else math.nan,
            min_share=model.at_min / count if count and model.at_min is not None else math.nan,
            max_share=model.at_max / count if count and model.at_max is not None else math.nan,
            distinct=state.distinct.estimate if state.distinct is not None else math.nan,
            log=state.log,
        )
        scaler = FittedScaler(model.scaler, dict(model.params), model.reason, tuple(model.table or ()))
        scaler.check()
        exact = {float(p): q for p, q in model.quantiles.items() if q is not None} if is_exact else None
        request = model.request
        if request is None:  # written before the request was stored: auto left its reason
            request = Auto() if model.reason else model.scaler
        # The parameters are a function of the request and the statistics: fitting again
        # must give them back, else the file was edited or damaged (one without a checksum).
        missing = [
            p for p in (*REPORTED_PROBABILITIES, *request.probabilities()) if p not in summary.quantiles
        ]
        if missing:
            raise ValueError(f"the quantile {missing[0]!r} is missing")
        if not scaler.agrees_with(fit_scaler(request, summary, state)):
            raise ValueError(f"its {scaler.method} parameters do not follow from its statistics")
        return cls(model.dtype, state, summary, scaler, exact, request)


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

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "unseen": self.unseen,
            "keys": self.keys.tolist(),
            "columns": {
                name: {**m.to_json(), "log": self.logs[name].to_json() if name in self.logs else None}
                for name, m in self.moments.items()
            },
        }

    @classmethod
    def from_model(cls, model: _GroupsModel) -> GroupStats:
        keys = np.array(model.keys, dtype=object if model.keys and isinstance(model.keys[0], str) else None)
        moments, logs = {}, {}
        for name, column in model.columns.items():
            doc = column.model_dump(exclude={"log"})
            moments[name] = GroupMoments.from_json(keys, doc)
            if column.log is not None:
                logs[name] = GroupMoments.from_json(keys, column.log)
        if not moments:
            raise ValueError("per-group statistics without columns")
        return cls(model.by, moments, logs, model.unseen)


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
        created: str | None = None,
        normpipe_version: str | None = None,
        file_sha256: str | None = None,
        exact: bool = False,
        groups: GroupStats | None = None,
    ) -> None:
        from normpipe import __version__

        self.columns: dict[str, ColumnStats] = dict(columns)
        #: Whether the recorded quantiles are exact (``--quantiles exact``).
        self.exact = exact
        #: Per-group statistics (``--group-by``), else ``None``.
        self.groups = groups
        self.rows = rows
        self.k = k
        #: The files these statistics were computed from (a mapping is read as the
        #: artifact's ``dataset`` entry).
        self.dataset = dataset if isinstance(dataset, Fingerprint) else Fingerprint.from_json(dataset)
        self.created = created or datetime.now(UTC).isoformat(timespec="seconds")
        self.normpipe_version = normpipe_version or __version__
        self._file_sha256 = file_sha256

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
    ) -> Stats:
        """Finalize a merged :class:`TableState` and fit each column's scaler
        (with ``exact``, quantiles by column and probability replace the sketch's;
        with ``group_by``, the state's per-group moments fit each group's parameters)."""
        columns = {}
        for name, spec in specs.items():
            column_state = state.columns[name]
            moments = column_state.moments
            if moments.count and not (math.isfinite(moments.mean) and math.isfinite(moments.m2)):
                raise InputError(
                    f"column '{name}': values too large for float64 statistics (the "
                    f"{'mean' if not math.isfinite(moments.mean) else 'variance'} overflows; "
                    f"largest magnitude {max(abs(moments.min), abs(moments.max)):.3g}); rescale or exclude it"
                )
            exact_quantiles = None if exact is None else exact.get(name, {})
            columns[name] = ColumnStats.fitted(name, dtypes[name], column_state, spec, exact_quantiles)
        groups = None
        if group_by is not None and state.groups:
            groups = GroupStats(group_by, state.groups, state.group_logs, unseen)
        stats = cls(columns, state.rows, k, dataset, exact=exact is not None, groups=groups)
        stats.fitted  # noqa: B018  # fits each group now: a method without per-group rules fails here
        return stats

    def refit(self, method: Any = None, overrides: Mapping[str, Any] | None = None) -> Stats:
        """The same statistics with other scalers; no pass over the data.

        The artifact keeps each column's full state (moments and quantile sketch), so
        any method can be fitted from it. ``method`` (a name or a spec) applies to every
        column not in ``overrides``; left out, a column keeps what was asked for
        (an ``auto`` column stays ``auto`` and chooses again).

        Examples
        --------
        >>> import pyarrow as pa
        >>> from normpipe.core.column import TableState
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"x": np.arange(5.0)})
        >>> state = TableState.from_block(pa.table(frame), ["x"], 200)
        >>> files = Fingerprint.of("memory", "", [])
        >>> stats = Stats.from_state(state, {"x": parse_scaler("zscore")}, {"x": "double"}, 200, files)
        >>> stats.refit("minmax").transform(frame)["x"].tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        """
        overrides = dict(overrides or {})
        columns = {}
        for name, column in self.columns.items():
            chosen = overrides.get(name, method)
            spec = column.request if chosen is None else parse_scaler(chosen)
            columns[name] = ColumnStats.fitted(name, column.dtype, column.state, spec, column.exact)
        refitted = Stats(columns, self.rows, self.k, self.dataset, exact=self.exact, groups=self.groups)
        refitted.fitted  # noqa: B018  # as in from_state
        return refitted

    # ---------------------------------------------------------------- merging
    def counted_files(self) -> dict[tuple[str, int], str]:
        """Every file whose rows are in these statistics (see :meth:`Fingerprint.counted`)."""
        return self.dataset.counted()

    def check_not_counted(self, files: Mapping[tuple[str, int], str], what: str) -> None:
        """Refuse ``files`` (from :meth:`Fingerprint.counted`) that these statistics already count."""
        repeated = sorted(set(self.counted_files()) & set(files))
        if repeated:
            location, size = repeated[0]
            more = f" (and {len(repeated) - 1} more)" if len(repeated) > 1 else ""
            raise InputError(
                f"{location} ({size:,} bytes){more} is already counted in {what}; leave it out, "
                "or pass --allow-repeat to count it again"
            )

    def absorb(
        self,
        state: TableState,
        dataset: Fingerprint,
        allow_repeat: bool = False,
        what: str = "the stats",
    ) -> Stats:
        """These statistics merged with ``state`` of more rows (``dataset`` lists their files).

        Moments, counts, min/max merge exactly (equal to a full fit up to float64
        rounding); sketches merge within their bound. Each column keeps its method
        (``auto`` columns choose again on the merged profile). Exact quantiles cannot
        be merged: the result holds the sketch's. Files already counted are refused
        unless ``allow_repeat``.

        Raises
        ------
        InputError
            Columns differ, a file is counted twice, or a log method lost its log
            moments (one side was fitted without them).
        """
        new_files = dataset.counted()
        if not allow_repeat:
            self.check_not_counted(new_files, what)
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
                merged = replace(merged, log=None)  # kept on one side only: not the whole data
            if (column.state.distinct is None) != (other.distinct is None):
                merged = replace(merged, distinct=None)
            columns[name] = ColumnStats.fitted(name, column.dtype, merged, column.request)
        combined = dataset.after(self.dataset)
        k = min([self.k, *(c.sketch.k for c in state.columns.values())])
        groups = None
        if self.groups is not None:
            if set(state.groups) != set(self.groups.moments):
                raise InputError(
                    f"{what} is normalized per '{self.groups.by}' group and the new statistics are not "
                    "(or not by the same columns); merge statistics fitted the same way"
                )
            moments = {n: self.groups.moments[n].merge(state.groups[n]) for n in self.groups.moments}
            logs = {
                n: m.merge(state.group_logs[n]) for n, m in self.groups.logs.items() if n in state.group_logs
            }
            groups = GroupStats(self.groups.by, moments, logs, self.groups.unseen)
        elif state.groups:
            raise InputError(
                f"the new statistics are per group and {what} is not; merge statistics fitted the same way"
            )
        absorbed = Stats(columns, self.rows + state.rows, k, combined, groups=groups)
        absorbed.fitted  # noqa: B018  # as in from_state
        return absorbed

    def merge(self, other: Stats, allow_repeat: bool = False, names: tuple[str, str] = ("A", "B")) -> Stats:
        """The statistics of both artifacts' rows (see :meth:`absorb`)."""
        if not allow_repeat:
            self.check_not_counted(other.counted_files(), f"both {names[0]} and {names[1]}")
        state = TableState(
            other.rows,
            {name: c.state for name, c in other.columns.items()},
            other.groups.moments if other.groups is not None else {},
            other.groups.logs if other.groups is not None else {},
        )
        if (self.groups is None) != (other.groups is None) or (
            self.groups is not None and other.groups is not None and self.groups.by != other.groups.by
        ):
            raise InputError(
                f"{names[0]} and {names[1]} are not grouped the same way; merge statistics fitted alike"
            )
        return self.absorb(state, other.dataset, allow_repeat=True, what=names[0])

    # ---------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "normpipe_version": self.normpipe_version,
            "created": self.created,
            "rows": self.rows,
            "exact": self.exact,
            "quantile_sketch": {
                "kind": "kll",
                "k": self.k,
                "rank_error": rank_error_bound(self.k),
                "confidence": 0.99,
            },
            "dataset": self.dataset.to_json(),
            "columns": {name: c.to_json() for name, c in self.columns.items()},
            **({"groups": self.groups.to_json()} if self.groups is not None else {}),
        }

    def to_bytes(self) -> bytes:
        doc = self.to_json()
        doc["checksum"] = _checksum(doc)
        return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()

    @property
    def sha256(self) -> str:
        """sha256 of the artifact file it was loaded from, else of :meth:`to_bytes`."""
        return self._file_sha256 or hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> str:
        """Write the artifact atomically (a temporary file then rename locally; one object
        on an object store; ``path`` may be any fsspec URL); returns its sha256."""
        data = self.to_bytes()
        locate(path, storage_options).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "stats artifact") -> Stats:
        """Parse and validate an artifact; any problem is an :class:`ArtifactError`."""
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ArtifactError(
                f"{where}: not a normpipe stats file (invalid JSON: {err}); "
                "it may be truncated; recreate it with 'normpipe fit'"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ArtifactError(
                f'{where}: not a normpipe stats file (no "format": "{FORMAT}"); '
                "pass a file written by 'normpipe fit'"
            )
        version = doc.get("version")
        if not isinstance(version, int) or version < 1:
            raise ArtifactError(
                f"{where}: invalid artifact version {version!r}; recreate it with 'normpipe fit'"
            )
        if version > VERSION:
            raise ArtifactError(
                f"{where}: artifact version {version} is newer than this normpipe reads ({VERSION}); "
                "upgrade normpipe"
            )
        if "checksum" in doc and doc["checksum"] != _checksum(doc):
            raise ArtifactError(
                f"{where}: checksum does not match the content (the file was edited or damaged); "
                "recreate it with 'normpipe fit'"
            )
        try:
            model = _ArtifactModel.model_validate(doc)
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ArtifactError(
                f"{where}: invalid stats artifact at '{loc}': {first['msg']}; recreate it with 'normpipe fit'"
            ) from None
        k = model.quantile_sketch.k
        columns = {}
        for name, column in model.columns.items():
            try:
                columns[name] = ColumnStats.from_model(column, k, model.exact)
            except (ValueError, RuntimeError) as err:  # damaged parameters, base64 or sketch bytes
                raise ArtifactError(
                    f"{where}: column '{name}' is damaged ({err}); recreate it with 'normpipe fit'"
                ) from None
        try:
            groups = GroupStats.from_model(model.groups) if model.groups is not None else None
        except (ValueError, RuntimeError) as err:
            raise ArtifactError(
                f"{where}: damaged group arrays ({err}); recreate it with 'normpipe fit'"
            ) from None
        return cls(
            columns,
            model.rows,
            k,
            Fingerprint.from_json(model.dataset.model_dump(mode="json")),
            created=model.created,
            normpipe_version=model.normpipe_version,
            file_sha256=hashlib.sha256(data).hexdigest(),
            exact=model.exact,
            groups=groups,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Stats:
        """Read and validate a stats artifact written by :meth:`save` (a path or URL)."""
        if is_remote(path):
            location = locate(path, storage_options)
            try:
                data = location.read_bytes()
            except InputError as err:
                raise ArtifactError(f"stats artifact: {err}") from None
            return cls.from_bytes(data, location.url)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path}: stats file not found; create it with 'normpipe fit'") from None
        except IsADirectoryError:
            raise ArtifactError(f"{path}: is a directory, not a stats file; pass the JSON file") from None
        return cls.from_bytes(data, str(path))

    # ---------------------------------------------------------------- access
    @property
    def scalers(self) -> dict[str, FittedScaler]:
        return {name: c.scaler for name, c in self.columns.items()}

    def summary(self, name: str) -> ColumnSummary:
        return self._column(name).summary

    def _column(self, name: str) -> ColumnStats:
        try:
            return self.columns[name]
        except KeyError:
            raise ArtifactError(
                f"column '{name}' is not in the stats artifact; columns: {listing(list(self.columns))}"
            ) from None

    # ---------------------------------------------------------------- in-memory transform
    @cached_property
    def fitted(self) -> FittedTransform:
        """The fitted transform (per-group parameters computed here, once)."""
        groups = self.groups.mapper(self.scalers) if self.groups is not None else None
        return FittedTransform(self.scalers, groups)

    def mapper(self) -> GroupedScalers | None:
        """The per-group parameters (``None`` without ``--group-by``)."""
        return self.fitted.groups

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

    def __repr__(self) -> str:
        methods = ", ".join(f"{n}={c.scaler.method}" for n, c in self.columns.items())
        return f"Stats(rows={self.rows}, k={self.k}, columns: {methods})"
