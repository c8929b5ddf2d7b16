"""The stats artifact's file format: a versioned, human-readable JSON file.

This module alone knows the format: :func:`to_bytes` writes a :class:`~normpipe.stats.Stats`
and :func:`from_bytes` validates and reads one back (artifacts of earlier releases
still load).

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
          "sketch": "<base64 KLL sketch>", "compaction": 65536, "rank_error": 0.00077,
          "scaler": {"method": "zscore", "with_mean": true, "with_std": true},
          "params": {"center": 1.5, "scale": 1.22}
        }
      },
      "tensors": {
        "pixels": {
          "dtype": "fixed_size_list<item: uint8>[3072]",
          "spec": {"shape": [3, 32, 32], "layout": "CHW", "per": "channel", "method": {...}, ...},
          "shape": [3, 32, 32], "slots": 3, "rows": 60000, "nulls": 0, "nans": 0, ...,
          "moments": {"count": "<base64>", "mean": "<base64>", "m2": ..., "min": ..., "max": ...},
          "sketches": [{"sketch": "<base64 KLL sketch>", "compaction": 0}, ...],
          "mean": [125.3, 122.9, 113.8], "std": [63.0, 62.1, 66.7],
          "params": {"center": [125.3, 122.9, 113.8], "scale": [63.0, 62.1, 66.7]}
        }
      }
    }

``quantile_sketch.rank_error`` is the KLL bound for ``k``; a column's ``rank_error`` adds
the bound of the compactions before the sketch (``compaction``, see
:mod:`normpipe.core.sketch`): quantiles are within it with 99% confidence.
``count`` is the number of finite values; ``var`` and ``std`` use ddof=0; ``mean``,
``var``, ``std``, ``min``, ``max`` are ``null`` for a column with no finite value.
``categories`` (present only when there are categorical columns) holds each one's value
counts (exact, as ``[value, count]`` pairs by count, or past ``limit`` a base64
frequent-items sketch with ``max_error``, the largest error of a count), the vocabulary
in code order (code ``i`` is ``vocabulary[i]``; ``oov`` the first out-of-vocabulary code),
why ``auto`` coded it or not (``reason``), and its imputation (``impute``, ``fill``); a
scalar column's ``impute`` and ``fill`` likewise, and ``counts`` when ``most_frequent``
needs them.
``tensors`` (present only when there are tensor columns) holds per slot (element,
channel or all, see :mod:`normpipe.core.tensor`) the moments as exact base64 arrays,
one KLL sketch per slot for channel and all, readable means and stds for up to
:data:`SHOWN_SLOTS` slots, and the fitted parameters as lists, one entry per slot.
The artifact loads as data (``json``), never as code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from datasketches import frequent_strings_sketch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from normpipe.categories import CategorySpec
from normpipe.core.column import ColumnState
from normpipe.core.groups import GroupMoments
from normpipe.core.moments import Moments
from normpipe.core.sketch import DistinctSketch, QuantileSketch, rank_error_bound
from normpipe.core.tensor import TensorLayout, TensorState
from normpipe.core.vocab import Kind, VocabState
from normpipe.errors import ArtifactError, InputError, first_problem
from normpipe.fingerprint import Fingerprint
from normpipe.impute import ImputeSpec
from normpipe.scalers import Auto, FittedScaler, Method, RequestSpec, ScalerSpec
from normpipe.statistics import (
    CategoryStatistics,
    ColumnStatistics,
    GroupStatistics,
    Statistics,
    TensorStatistics,
)
from normpipe.stats import CategoryStats, ColumnStats, GroupStats, Stats, TensorStats, fit
from normpipe.storage import is_remote, locate
from normpipe.tensors import TensorSpec

__all__ = [
    "FORMAT",
    "VERSION",
    "ColumnStats",
    "GroupStats",
    "Stats",
    "from_bytes",
    "load",
    "to_bytes",
    "to_json",
]

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
    compaction: int = Field(default=0, ge=0)  # sum of squared pre-sketch strides; absent before them
    rank_error: float | None = None  # the stated bound of this column's quantiles (not read back)
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
    counts: _VocabModel | None = None  # value counts, for most_frequent
    impute: ImputeSpec = Field(default_factory=ImputeSpec)  # absent: none
    fill: float | None = None  # the fitted fill value (readable; checked against the statistics)


Value = str | bool | int | float


class _VocabModel(_Model):
    kind: Kind
    total: int = Field(ge=0, le=MAX_COUNT)
    nulls: int = Field(ge=0, le=MAX_COUNT)
    limit: int = Field(ge=1)
    lg_size: int = Field(ge=3, le=26)
    counts: list[tuple[Value, int]] | None = None  # exact: each value and its count, by count
    sketch: str | None = None  # past the limit: base64 frequent_strings_sketch
    max_error: int = 0  # the largest error of a count (not read back)

    @classmethod
    def of(cls, state: VocabState) -> dict[str, Any]:
        counts = None
        if state.sketch is None:
            vocabulary = state.vocabulary()
            counts = [[v, c] for v, c in zip(vocabulary.values, vocabulary.counts, strict=True)]
        return {
            "kind": state.kind,
            "total": state.total,
            "nulls": state.nulls,
            "limit": state.limit,
            "lg_size": state.lg_size,
            "counts": counts,
            "sketch": base64.b64encode(state.sketch).decode() if state.sketch is not None else None,
            "max_error": state.max_error,
        }

    def state(self) -> VocabState:
        if (self.counts is None) == (self.sketch is None):
            raise ValueError("counts hold either exact counts or a sketch")
        if self.sketch is not None:
            sketch = base64.b64decode(self.sketch, validate=True)
            frequent_strings_sketch.deserialize(sketch)  # damaged bytes fail here, as data
            return VocabState(self.kind, {}, self.nulls, self.total, sketch, self.limit, self.lg_size)
        for value, count in self.counts or []:
            if not isinstance(value, _KIND_VALUES[self.kind]) or (
                self.kind != "boolean" and isinstance(value, bool)
            ):
                raise ValueError(f"value {value!r} is not {self.kind}")
            if count < 1:
                raise ValueError(f"value {value!r} has the count {count}")
        counts = {_typed(v, self.kind): c for v, c in self.counts or []}
        if len(counts) != len(self.counts or []):
            raise ValueError("a value is counted twice")
        if sum(counts.values()) != self.total:
            raise ValueError("the counts do not add up to the total")
        return VocabState(self.kind, counts, self.nulls, self.total, None, self.limit, self.lg_size)


#: The JSON values each kind of counts holds.
_KIND_VALUES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "float": (int, float),
}


def _typed(value: Value, kind: Kind) -> Any:
    """A JSON value as the kind of the counts (JSON writes 2.0 as a float, reads it back as one)."""
    if kind == "float":
        return float(value)
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return value


class _CategoryModel(_Model):
    dtype: str
    spec: CategorySpec
    auto: bool = False  # found by categorical: auto
    counts: _VocabModel
    coded: bool  # false: auto left it as it is (reason)
    reason: str
    vocabulary: list[Value]  # the values in code order (code i: vocabulary[i])
    oov: int | None  # the first out-of-vocabulary code
    impute: ImputeSpec = Field(default_factory=ImputeSpec)
    fill: Value | None = None


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


class _TensorSketchModel(_Model):
    sketch: str
    compaction: int = Field(default=0, ge=0)


class _TensorModel(_Model):
    dtype: str
    spec: TensorSpec  # shape, layout, per, method, range, output dtype as declared
    shape: list[int] | None  # as resolved (declared, from the type, or from metadata)
    slots: int = Field(ge=0)  # 0: per position of variable-length lists, none seen
    rows: int = Field(ge=0, le=MAX_COUNT)
    nulls: int = Field(ge=0, le=MAX_COUNT)
    nans: int = Field(ge=0, le=MAX_COUNT)
    posinf: int = Field(ge=0, le=MAX_COUNT)
    neginf: int = Field(ge=0, le=MAX_COUNT)
    skipped: int = Field(default=0, ge=0, le=MAX_COUNT)  # undecodable images skipped (on_error: skip)
    moments: dict[str, str]  # per-slot count, mean, m2, min, max: base64 little-endian arrays
    sketches: list[_TensorSketchModel]  # one per slot (per channel or all); none per element
    mean: list[float | None] | None = None  # readable copies for up to SHOWN_SLOTS slots
    std: list[float | None] | None = None
    params: dict[str, list[float]]  # one entry per slot


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
    tensors: dict[str, _TensorModel] = Field(default_factory=dict)  # tensor columns
    categories: dict[str, _CategoryModel] = Field(default_factory=dict)  # categorical columns
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


def _column_json(column: ColumnStats) -> dict[str, Any]:
    s, m = column.summary, column.state.moments
    return {
        "dtype": column.dtype,
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
        "sketch": column.state.sketch.to_base64(),
        "compaction": column.state.sketch.compaction,
        "rank_error": s.rank_error,
        "scaler": column.scaler.spec.model_dump(mode="json"),
        "request": column.request.model_dump(mode="json"),
        "params": dict(column.scaler.params),
        "reason": column.scaler.reason,
        "profile": {
            "skewness": _finite_or_none(s.skewness),
            "kurtosis": _finite_or_none(s.kurtosis),
            "outside_fences": _finite_or_none(s.outside_fences),
            "zero_share": _finite_or_none(s.zero_share),
            "min_share": _finite_or_none(s.min_share),
            "max_share": _finite_or_none(s.max_share),
            "distinct": _finite_or_none(s.distinct),
        },
        "zeros": column.state.zeros,
        "at_min": column.state.at_min,
        "at_max": column.state.at_max,
        "log": _MomentsModel.of(column.state.log),
        "distinct": column.state.distinct.to_base64() if column.state.distinct is not None else None,
        "table": list(column.scaler.table) if column.scaler.table else None,
        "counts": _VocabModel.of(column.state.counts) if column.state.counts is not None else None,
        "impute": column.impute.model_dump(mode="json"),
        "fill": column.fill,
    }


def _category_json(category: CategoryStats) -> dict[str, Any]:
    fitted = category.fitted
    return {
        "dtype": category.dtype,
        "spec": category.spec.model_dump(mode="json"),
        "auto": category.statistics.auto,
        "counts": _VocabModel.of(category.state),
        "coded": fitted is not None,
        "reason": category.reason,
        "vocabulary": fitted.values.to_pylist() if fitted is not None else [],
        "oov": fitted.oov if fitted is not None else None,
        "impute": category.impute.model_dump(mode="json"),
        "fill": category.fill,
    }


def _column_from_model(model: _ColumnModel, k: int, is_exact: bool = False) -> ColumnStatistics:
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
        QuantileSketch.from_base64(model.sketch, k, model.compaction),
        model.nulls,
        model.nans,
        model.posinf,
        model.neginf,
        model.zeros,
        model.at_min,
        model.at_max,
        model.log.moments() if model.log is not None else None,
        DistinctSketch.from_base64(model.distinct) if model.distinct is not None else None,
        model.counts.state() if model.counts is not None else None,
    )
    exact = {float(p): q for p, q in model.quantiles.items() if q is not None} if is_exact else None
    return ColumnStatistics(model.dtype, state, exact)


def _request(model: _ColumnModel) -> Method:
    if model.request is not None:
        return model.request
    return Auto() if model.reason else model.scaler  # written before the request was stored


def _check_fitted(model: _ColumnModel, fitted: FittedScaler) -> None:
    """The stored parameters must be those that fitting the stored request on the
    stored statistics gives, else the file was edited or damaged (one without a checksum)."""
    stored = FittedScaler(
        model.scaler, model.scaler.params_of(model.params), model.reason, tuple(model.table or ())
    )
    stored.check()
    if not stored.agrees_with(fitted):
        raise ValueError(f"its {stored.method} parameters do not follow from its statistics")


def _groups_json(groups: GroupStats) -> dict[str, Any]:
    return {
        "by": groups.by,
        "unseen": groups.unseen,
        "keys": groups.keys.tolist(),
        "columns": {
            name: {**m.to_json(), "log": groups.logs[name].to_json() if name in groups.logs else None}
            for name, m in groups.moments.items()
        },
    }


def _groups_from_model(model: _GroupsModel) -> GroupStatistics:
    keys = np.array(model.keys, dtype=object if model.keys and isinstance(model.keys[0], str) else None)
    moments, logs = {}, {}
    for name, column in model.columns.items():
        doc = column.model_dump(exclude={"log"})
        moments[name] = GroupMoments.from_json(keys, doc)
        if column.log is not None:
            logs[name] = GroupMoments.from_json(keys, column.log)
    if not moments:
        raise ValueError("per-group statistics without columns")
    return GroupStatistics(model.by, moments, logs)


#: Tensor columns with up to this many slots also show their mean and std as numbers.
SHOWN_SLOTS = 64


def _tensor_json(tensor: TensorStats) -> dict[str, Any]:
    state, layout = tensor.state, tensor.state.layout
    shown = state.slots <= SHOWN_SLOTS
    fitted = tensor.fitted.scaler
    return {
        "dtype": tensor.dtype,
        "spec": tensor.spec.model_dump(mode="json"),
        "shape": list(layout.shape) if layout.shape is not None else None,
        "slots": state.slots,
        "rows": state.rows,
        "nulls": state.nulls,
        "nans": state.nans,
        "posinf": state.posinf,
        "neginf": state.neginf,
        "skipped": state.skipped,
        "moments": state.moments.to_json(),
        "sketches": [{"sketch": s.to_base64(), "compaction": s.compaction} for s in state.sketches],
        "mean": [_finite_or_none(v) for v in state.moments.mean] if shown else None,
        "std": [_finite_or_none(v) for v in state.std] if shown else None,
        "params": {key: [float(v) for v in values] for key, values in fitted.params.items()}
        if fitted
        else {},
    }


def _tensor_from_model(name: str, model: _TensorModel, k: int) -> TensorStatistics:
    layout = TensorLayout(
        tuple(model.shape) if model.shape is not None else None, model.spec.layout, model.spec.per
    )
    if not layout.positional and layout.slots != model.slots:
        raise ValueError(f"{model.slots} slots for a layout of {layout.slots}")
    moments = GroupMoments.from_json(np.arange(model.slots), model.moments)
    sketches = tuple(QuantileSketch.from_base64(s.sketch, k, s.compaction) for s in model.sketches)
    if len(sketches) != (0 if layout.per == "element" else model.slots):
        raise ValueError(f"{len(sketches)} sketches for {model.slots} slots")
    state = TensorState(
        layout, moments, sketches, model.rows, model.nulls, model.nans, model.posinf, model.neginf
    )
    return TensorStatistics(model.dtype, model.spec, state)


def _check_tensor(model: _TensorModel, fitted: TensorStats) -> None:
    """The stored per-slot parameters must follow from the stored statistics."""
    scaler = fitted.fitted.scaler
    mine = dict(scaler.params) if scaler is not None else {}
    if set(mine) != set(model.params) or not all(
        np.allclose(mine[key], model.params[key], rtol=1e-12, atol=0.0) for key in mine
    ):
        raise ValueError("its parameters do not follow from its statistics")


def to_json(stats: Stats) -> dict[str, Any]:
    """The artifact of ``stats`` as a JSON document (without its checksum)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "normpipe_version": stats.normpipe_version,
        "created": stats.created,
        "rows": stats.rows,
        "exact": stats.exact,
        "quantile_sketch": {
            "kind": "kll",
            "k": stats.k,
            "rank_error": rank_error_bound(stats.k),
            "confidence": 0.99,
        },
        "dataset": stats.dataset.to_json(),
        "columns": {name: _column_json(c) for name, c in stats.columns.items()},
        **({"groups": _groups_json(stats.groups)} if stats.groups is not None else {}),
        **({"tensors": {n: _tensor_json(t) for n, t in stats.tensors.items()}} if stats.tensors else {}),
        **(
            {"categories": {n: _category_json(c) for n, c in stats.categories.items()}}
            if stats.categories
            else {}
        ),
    }


def to_bytes(stats: Stats) -> bytes:
    """The artifact file's bytes: the document with its checksum, indented JSON."""
    doc = to_json(stats)
    doc["checksum"] = _checksum(doc)
    return (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()


def from_bytes(data: bytes, where: str = "stats artifact") -> Stats:
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
        raise ArtifactError(f"{where}: invalid artifact version {version!r}; recreate it with 'normpipe fit'")
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
        loc, message, _ = first_problem(err)
        raise ArtifactError(
            f"{where}: invalid stats artifact at '{loc}': {message}; recreate it with 'normpipe fit'"
        ) from None
    k = model.quantile_sketch.k
    columns = {}
    for name, column in model.columns.items():
        try:
            columns[name] = _column_from_model(column, k, model.exact)
        except (ValueError, RuntimeError) as err:  # damaged base64 or sketch bytes
            raise ArtifactError(
                f"{where}: column '{name}' is damaged ({err}); recreate it with 'normpipe fit'"
            ) from None
    try:
        groups = _groups_from_model(model.groups) if model.groups is not None else None
    except (ValueError, RuntimeError) as err:
        raise ArtifactError(
            f"{where}: damaged group arrays ({err}); recreate it with 'normpipe fit'"
        ) from None
    tensors = {}
    for name, tensor in model.tensors.items():
        try:
            tensors[name] = _tensor_from_model(name, tensor, k)
        except (ValueError, RuntimeError) as err:
            raise ArtifactError(
                f"{where}: tensor column '{name}' is damaged ({err}); recreate it with 'normpipe fit'"
            ) from None
    categories = {}
    for name, category in model.categories.items():
        try:
            state = category.counts.state()
        except (ValueError, RuntimeError, binascii.Error) as err:
            raise ArtifactError(
                f"{where}: categorical column '{name}' is damaged ({err}); recreate it with 'normpipe fit'"
            ) from None
        categories[name] = CategoryStatistics(category.dtype, category.spec, state, category.auto)
    fingerprint = Fingerprint.from_json(model.dataset.model_dump(mode="json"))
    statistics = Statistics(model.rows, k, fingerprint, columns, groups, model.exact, tensors, categories)
    requests = {name: _request(column) for name, column in model.columns.items()}
    imputes = {name: c.impute for name, c in model.columns.items()}
    imputes.update({name: c.impute for name, c in model.categories.items()})
    try:  # the summaries come from the states, as after a pass (ColumnState.finalize)
        unseen = model.groups.unseen if model.groups is not None else "global"
        stats = fit(statistics, requests, unseen, imputes)
    except (InputError, ValueError) as err:
        raise ArtifactError(f"{where}: {err}; recreate it with 'normpipe fit'") from None
    for name, column in model.columns.items():
        try:
            _check_fitted(column, stats.columns[name].scaler)
        except ValueError as err:
            raise ArtifactError(
                f"{where}: column '{name}' is damaged ({err}); recreate it with 'normpipe fit'"
            ) from None
    for name, category in model.categories.items():
        fitted = stats.categories[name]
        vocabulary = fitted.fitted.values.to_pylist() if fitted.fitted is not None else []
        if (category.coded, vocabulary, category.fill) != (
            fitted.fitted is not None,
            [_typed(v, fitted.state.kind) for v in category.vocabulary],
            fitted.fill,
        ):
            raise ArtifactError(
                f"{where}: categorical column '{name}' is damaged (its vocabulary does not follow from "
                "its counts); recreate it with 'normpipe fit'"
            )
    for name, column in model.columns.items():
        if column.fill != stats.columns[name].fill:
            raise ArtifactError(
                f"{where}: column '{name}' is damaged (its fill value does not follow from its statistics); "
                "recreate it with 'normpipe fit'"
            )
    for name, tensor in model.tensors.items():
        try:
            _check_tensor(tensor, stats.tensors[name])
        except ValueError as err:
            raise ArtifactError(
                f"{where}: tensor column '{name}' is damaged ({err}); recreate it with 'normpipe fit'"
            ) from None
    return stats.loaded(model.created, model.normpipe_version, hashlib.sha256(data).hexdigest())


def load(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Stats:
    """Read and validate a stats artifact written by :meth:`Stats.save` (a path or URL)."""
    if is_remote(path):
        location = locate(path, storage_options)
        try:
            data = location.read_bytes()
        except InputError as err:
            raise ArtifactError(f"stats artifact: {err}") from None
        return from_bytes(data, location.url)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: stats file not found; create it with 'normpipe fit'") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, not a stats file; pass the JSON file") from None
    return from_bytes(data, str(path))
