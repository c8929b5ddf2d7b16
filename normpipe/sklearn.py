"""normpipe's methods as a scikit-learn transformer.

:class:`Normalizer` follows scikit-learn's conventions (constructor parameters only,
learned attributes ending in ``_``, ``set_output``, ``get_feature_names_out``) and
passes scikit-learn's own estimator checks. It learns from an in-memory array or frame
(the same mergeable states as the Dask pass, with exact quantiles), from a Parquet
source through the Dask pass, or is built from a saved stats artifact; it maps with
the very functions of the Parquet path, so all give the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from normpipe.categories import CategorySpec
from normpipe.core.column import ColumnState, TableState, to_float64
from normpipe.core.sketch import DEFAULT_K
from normpipe.core.vocab import VocabState, kind_of
from normpipe.fingerprint import Fingerprint
from normpipe.impute import ImputeSpec
from normpipe.mappers import apply_table
from normpipe.scalers import REPORTED_PROBABILITIES, parse_scaler
from normpipe.stats import Stats

__all__ = ["Normalizer"]


class Normalizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Normalize each feature with a normpipe method (``zscore``, ``minmax``, ``robust``,
    ``maxabs``, ``log1p``, ``signed_log``, ``quantile``, ``clip`` or ``auto``).

    Parameters
    ----------
    method : str or dict, default "zscore"
        The method of every feature: a name, or a mapping with ``method`` and its
        options (``{"method": "robust", "quantile_range": [10, 90]}``).
    overrides : dict, optional
        Per feature name, another method (names are the frame's columns, or ``x0``,
        ``x1``... for arrays).
    quantiles : {"exact", "sketch"}, default "exact"
        ``"exact"``: quantiles equal numpy's (linear interpolation, as scikit-learn's
        ``RobustScaler``); from a Parquet source that is a second pass over the files.
        ``"sketch"``: the KLL sketch's, within its stated rank error.
    sketch_k : int, default 4000
        The KLL sketch's ``k`` (the ``quantile`` method's table comes from the sketch).
    storage_options : dict, optional
        fsspec options of a Parquet source given to :meth:`fit` (e.g. S3 credentials).
    categories : dict, optional
        Categorical features by name, each with its options (``min_frequency``,
        ``max_categories``, ``hash_buckets``; ``{}`` for the defaults): raw values
        (strings, integers, booleans) in, codes out as floats (by frequency then value,
        out-of-vocabulary values one code past the vocabulary, NaN for missing), as
        scikit-learn's ``OrdinalEncoder``; the inverse gives the values back. Needs a
        frame with named columns.
    impute : str or dict, optional
        Missing values of every feature: ``mean``, ``median``, ``most_frequent`` or
        ``{"strategy": "constant", "fill_value": v}`` (filled before the map, as
        ``SimpleImputer`` then the scaler); categorical features take most_frequent and
        constant only. Missing indicators change the number of features: use
        scikit-learn's ``MissingIndicator`` beside this transformer.

    Attributes
    ----------
    stats_ : normpipe.Stats
        The statistics and fitted methods; ``stats_.save(path)`` writes the artifact.
    n_features_in_, feature_names_in_
        As in scikit-learn.

    Notes
    -----
    ``fit(X)`` with ``X`` a path or URL runs normpipe's out-of-core pass over the
    Parquet files there (a local Dask cluster). NaN is kept (and ignored by ``fit``);
    +/-inf follow the map, as in the Parquet path. :meth:`from_stats` returns a fitted
    transformer; scikit-learn's ``clone`` gives an unfitted one, so wrap it in
    ``sklearn.frozen.FrozenEstimator`` to keep it fixed inside a pipeline.
    """

    def __init__(
        self,
        method: str | Mapping[str, Any] = "zscore",
        overrides: Mapping[str, str | Mapping[str, Any]] | None = None,
        quantiles: Literal["exact", "sketch"] = "exact",
        sketch_k: int = DEFAULT_K,
        storage_options: Mapping[str, Any] | None = None,
        categories: Mapping[str, Mapping[str, Any]] | None = None,
        impute: str | Mapping[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.overrides = overrides
        self.quantiles = quantiles
        self.sketch_k = sketch_k
        self.storage_options = storage_options
        self.categories = categories
        self.impute = impute

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN is kept as NaN, and ignored by fit
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any = None) -> Normalizer:
        """Learn each feature's statistics from ``X`` (array-like or frame), or from the
        Parquet dataset at ``X`` (a path or URL) through normpipe's Dask pass."""
        if isinstance(X, str | os.PathLike):
            return self._fit_source(os.fspath(X))
        coded = dict(self.categories or {})
        frame = X if coded else None
        if coded:
            validate_data(self, X, dtype=None, ensure_all_finite=False, reset=True, skip_check_array=True)
            self._check_frame(X, coded)
            values = _numeric(X, [n for n in self._names() if n not in coded])
        else:
            values = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=True)
        imputes = self._imputes()
        names = [n for n in self._names() if n not in coded]
        requests = {name: parse_scaler(self._request(name)) for name in names}
        k = int(self.sketch_k)
        columns = {
            name: ColumnState.from_values(
                np.array(values[:, j]), 0, k, requests[name].needs_log, counts=name in imputes
            )
            for j, name in enumerate(names)
        }
        vocabs = {}
        for name, options in coded.items():
            column = pa.array(frame[name], from_pandas=True)  # type: ignore[index]
            kind = kind_of(column.type)
            if kind is None or kind == "float":
                raise ValueError(
                    f"categorical feature '{name}' holds {column.type}; give strings, integers or booleans"
                )
            spec = CategorySpec(**options)
            vocabs[name] = VocabState.from_block(column, kind, spec.limit, spec.lg_size)
        exact = None
        if self.quantiles == "exact":
            exact = {
                name: _quantiles(values[:, j], requests[name].probabilities()) for j, name in enumerate(names)
            }
        self.stats_ = Stats.from_state(
            TableState(values.shape[0], columns, categories=vocabs),
            requests,
            {**dict.fromkeys(names, "double"), **{n: str(v.kind) for n, v in vocabs.items()}},
            k,
            Fingerprint.of("in-memory", "", ()),
            exact=exact,
            categories={name: (CategorySpec(**options), False) for name, options in coded.items()},
            imputes={name: imputes[name] for name in self._names() if name in imputes},
        )
        return self

    def _imputes(self) -> dict[str, ImputeSpec]:
        """The imputation of every feature (none when ``impute`` is unset)."""
        if self.impute is None:
            return {}
        spec = ImputeSpec.model_validate(self.impute)
        if spec.missing_indicator:
            raise ValueError("missing_indicator adds features; use sklearn.impute.MissingIndicator beside it")
        coded = set(self.categories or {})
        names = self._names()
        if spec.strategy in ("mean", "median"):  # a categorical feature keeps its missing values
            return {name: spec for name in names if name not in coded}
        return dict.fromkeys(names, spec) if spec.active else {}

    def _check_frame(self, X: Any, coded: Mapping[str, Any]) -> None:
        if not hasattr(X, "columns"):
            raise ValueError("categorical features need a frame with named columns (pandas)")
        missing = [name for name in coded if name not in X.columns]
        if missing:
            raise ValueError(f"categorical feature '{missing[0]}' is not a column of X")

    def _fit_source(self, source: str) -> Normalizer:
        from normpipe.api import fit

        stats = fit(
            source,
            method=self.method,
            overrides=dict(self.overrides or {}),
            quantiles=self.quantiles,
            sketch_k=self.sketch_k,
            storage_options=dict(self.storage_options or {}),
        )
        return self._adopt(stats)

    def _adopt(self, stats: Stats) -> Normalizer:
        self.stats_ = stats
        self.feature_names_in_ = np.asarray([*stats.columns, *stats.categories], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        if stats.categories:
            self.categories = {name: c.spec.model_dump() for name, c in stats.categories.items()}
        return self

    @classmethod
    def from_stats(cls, stats: Stats | str | os.PathLike[str]) -> Normalizer:
        """A fitted transformer from a saved stats artifact (a path or URL) or a
        :class:`~normpipe.Stats`: its columns, in the artifact's order, are the features."""
        loaded = stats if isinstance(stats, Stats) else Stats.load(os.fspath(stats))
        return cls()._adopt(loaded)

    def _names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def _request(self, name: str) -> Any:
        return (self.overrides or {}).get(name, self.method)

    # ------------------------------------------------------------------ mapping
    def transform(self, X: Any) -> npt.NDArray[np.float64]:
        """Each feature mapped (float64; NaN stays NaN unless imputed); categorical
        features as their codes."""
        return self._map(X, inverse=False)

    def inverse_transform(self, X: Any) -> npt.NDArray[Any]:
        """Back to original units (values clipped by ``clip`` or ``minmax(clip=True)``
        stay clipped); with categorical features an object array holding their values
        (out-of-vocabulary codes: None)."""
        return self._map(X, inverse=True)

    def _map(self, X: Any, inverse: bool) -> npt.NDArray[Any]:
        check_is_fitted(self, "stats_")
        coded = self.stats_.categories
        if coded:  # a frame of numbers and raw categories: each column converted on its own
            validate_data(self, X, dtype=None, ensure_all_finite=False, reset=False, skip_check_array=True)
        else:
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=False)
        fitted = self.stats_.fitted
        names = self._names()
        out: npt.NDArray[Any] = np.empty(
            (len(X), len(names)), dtype=object if coded and inverse else np.float64
        )
        for j, name in enumerate(names):
            column = _column(X, j, name)
            if name in coded:
                table = pa.table({name: pa.array(column, from_pandas=True)})
                if inverse:
                    table = table.set_column(0, name, pa.compute.cast(table.column(0), pa.int64()))
                mapped = apply_table(table, {name: fitted.maps[name]}, "float64", None, "X", inverse).column(
                    0
                )
                out[:, j] = mapped.to_pylist() if inverse else to_float64(mapped)
                continue
            values = _as_float(column)
            out[:, j] = (
                fitted.inverse_column(name, values) if inverse else fitted.transform_column(name, values)
            )
        return out


def _column(X: Any, j: int, name: str) -> Any:
    """Feature ``j`` (named ``name``) of a frame or an array."""
    return X[name] if hasattr(X, "columns") else np.asarray(X)[:, j]


def _as_float(column: Any) -> npt.NDArray[np.float64]:
    """A column's values as float64, missing ones (pandas' NA included) as NaN."""
    if hasattr(column, "to_numpy"):
        return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return np.array(column, dtype=np.float64)


def _numeric(X: Any, names: list[str]) -> npt.NDArray[np.float64]:
    """The columns ``names`` of frame ``X`` as float64 (missing values as NaN)."""
    columns = []
    for name in names:
        try:
            columns.append(_as_float(X[name]))
        except (TypeError, ValueError):
            raise ValueError(
                f"feature '{name}' is not numeric; list it in categories, or leave it out"
            ) from None
    return np.column_stack(columns) if columns else np.empty((len(X), 0))


def _quantiles(values: npt.NDArray[np.float64], probabilities: tuple[float, ...]) -> dict[float, float]:
    """Exact quantiles (numpy's linear interpolation) of the finite values."""
    wanted = sorted({*REPORTED_PROBABILITIES, *probabilities})
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    return dict(zip(wanted, (float(q) for q in np.quantile(finite, wanted)), strict=True))
