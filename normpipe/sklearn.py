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
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from normpipe.core.column import ColumnState, TableState
from normpipe.core.sketch import DEFAULT_K
from normpipe.fingerprint import Fingerprint
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
    ) -> None:
        self.method = method
        self.overrides = overrides
        self.quantiles = quantiles
        self.sketch_k = sketch_k
        self.storage_options = storage_options

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
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=True)
        names = self._names()
        requests = {name: parse_scaler(self._request(name)) for name in names}
        k = int(self.sketch_k)
        columns = {
            name: ColumnState.from_values(np.array(values[:, j]), 0, k, requests[name].needs_log)
            for j, name in enumerate(names)
        }
        exact = None
        if self.quantiles == "exact":
            exact = {
                name: _quantiles(values[:, j], requests[name].probabilities()) for j, name in enumerate(names)
            }
        self.stats_ = Stats.from_state(
            TableState(values.shape[0], columns),
            requests,
            dict.fromkeys(names, "double"),
            k,
            Fingerprint.of("in-memory", "", ()),
            exact=exact,
        )
        return self

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
        self.feature_names_in_ = np.asarray(list(stats.columns), dtype=object)
        self.n_features_in_ = len(stats.columns)
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
        """Each feature mapped (float64; NaN stays NaN)."""
        return self._map(X, inverse=False)

    def inverse_transform(self, X: Any) -> npt.NDArray[np.float64]:
        """Back to original units (values clipped by ``clip`` or ``minmax(clip=True)``
        stay clipped)."""
        return self._map(X, inverse=True)

    def _map(self, X: Any, inverse: bool) -> npt.NDArray[np.float64]:
        check_is_fitted(self, "stats_")
        values = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=False)
        scalers = self.stats_.fitted.scalers
        out: npt.NDArray[np.float64] = np.empty(values.shape, dtype=np.float64)
        for j, name in enumerate(self._names()):
            scaler = scalers[name]
            column = np.array(values[:, j])
            out[:, j] = scaler.invert(column) if inverse else scaler.apply(column)
        return out


def _quantiles(values: npt.NDArray[np.float64], probabilities: tuple[float, ...]) -> dict[float, float]:
    """Exact quantiles (numpy's linear interpolation) of the finite values."""
    wanted = sorted({*REPORTED_PROBABILITIES, *probabilities})
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {}
    return dict(zip(wanted, (float(q) for q in np.quantile(finite, wanted)), strict=True))
