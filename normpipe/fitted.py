"""The fitted transform: per column a fitted method, and per-group parameters.

A pure function of the fitted parameters and a block of data: the same
:func:`~normpipe.mappers.apply_table` maps Parquet row groups, Arrow tables and Polars
frames, so they give identical numbers; pandas frames and numpy arrays go through the
same :class:`~normpipe.methods.FittedScaler` maps (missing values as NaN).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from normpipe.categories import FittedCategories
from normpipe.dataset import listing
from normpipe.errors import ArtifactError
from normpipe.impute import Imputed, indicator_name
from normpipe.mappers import ColumnMap, GroupedScalers, apply_table
from normpipe.methods import FittedScaler
from normpipe.tensors import FittedTensor

if TYPE_CHECKING:  # pandas and Polars are imported by callers that pass frames, not here
    import pandas as pd
    import polars as pl

    Frame = TypeVar("Frame", pd.DataFrame, pl.DataFrame, pa.Table)

__all__ = ["FittedTransform", "unknown_column"]


def unknown_column(name: str, columns: Iterable[str]) -> ArtifactError:
    """The error for a column the artifact does not hold, listing those it does."""
    return ArtifactError(f"column '{name}' is not in the stats artifact; columns: {listing(list(columns))}")


@dataclass(frozen=True)
class FittedTransform:
    """Each column's fitted method, and with ``groups`` each group's parameters.

    Built once per artifact (:attr:`normpipe.stats.Stats.fitted`); rows of groups
    unseen at fit time follow the artifact's ``unseen`` rule.
    """

    scalers: Mapping[str, FittedScaler]
    groups: GroupedScalers | None = None
    tensors: Mapping[str, FittedTensor] = field(default_factory=dict)
    #: The vocabulary of each coded categorical column.
    categories: Mapping[str, FittedCategories] = field(default_factory=dict)
    #: The map of each imputed column (a scaler's or a vocabulary's, with its fill).
    imputed: Mapping[str, Imputed] = field(default_factory=dict)

    @property
    def maps(self) -> dict[str, ColumnMap]:
        """Every column's map as the Parquet path applies it (imputation included)."""
        return {**self.scalers, **self.tensors, **self.categories, **self.imputed}

    def _scaler(self, name: str) -> FittedScaler:
        if name not in self.scalers:
            raise unknown_column(name, self.scalers)
        return self.scalers[name]

    def _scaler_for(self, name: str, keys: npt.ArrayLike | None) -> FittedScaler:
        """The scaler of ``name``; per row for a grouped artifact (``keys``: each row's group)."""
        scaler = self._scaler(name)
        grouped = self.groups
        if grouped is None or name not in grouped.params:
            return scaler
        if keys is None:
            raise ArtifactError(
                f"column '{name}' is normalized per '{grouped.by}' group; pass the groups of the values "
                f"(groups=...), or map a frame that has the '{grouped.by}' column"
            )
        at, known = grouped.rows(pa.array(keys, from_pandas=True), "the values")  # NaN/None: no group
        return grouped.scaler_rows(name, at, known, scaler)

    def transform_column(
        self, name: str, values: npt.ArrayLike, groups: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.float64]:
        """Forward map of one column's values (float64; NaN stays NaN unless the column is
        imputed); ``groups``: the group key of each value, for an artifact fitted per group."""
        values = np.asarray(values, dtype=np.float64)
        imputed = self.imputed.get(name)
        if imputed is not None and imputed.fill is not None:
            values = np.where(np.isnan(values), imputed.fill, values)
        return self._scaler_for(name, groups).apply(values)

    def inverse_column(
        self, name: str, values: npt.ArrayLike, groups: npt.ArrayLike | None = None
    ) -> npt.NDArray[np.float64]:
        """Inverse map of one column's values, back to original units (per group with
        ``groups``)."""
        return self._scaler_for(name, groups).invert(np.asarray(values, dtype=np.float64))

    def _map(self, data: Any, columns: Sequence[str] | None, inverse: bool) -> Any:
        """The one entry of :meth:`transform` and :meth:`inverse_transform`."""
        maps = self.maps
        names = list(maps) if columns is None else list(columns)
        present = set(data.column_names if isinstance(data, pa.Table) else data.columns)
        for name in names:
            if name not in maps:
                raise unknown_column(name, maps)
            if name not in present:
                raise ArtifactError(
                    f"column '{name}' is in the stats artifact but not in the frame; "
                    "add it, or pass columns=[...] to choose the columns to map"
                )
        grouped = self.groups
        if grouped is not None and grouped.by not in present:
            raise ArtifactError(
                f"the stats are per '{grouped.by}' group, and the frame has no '{grouped.by}' column; add it"
            )
        scalers = {name: maps[name] for name in names}
        if isinstance(data, pa.Table):  # the Parquet path's own function: the same numbers
            return apply_table(data, scalers, "float64", grouped, "the table", inverse)
        if type(data).__module__.split(".")[0] == "polars":
            import polars as pl

            mapped = apply_table(data.to_arrow(), scalers, "float64", grouped, "the frame", inverse)
            return pl.from_arrow(mapped)
        return self._map_pandas(data, scalers, grouped, inverse)

    @staticmethod
    def _map_pandas(
        df: pd.DataFrame, scalers: Mapping[str, ColumnMap], grouped: GroupedScalers | None, inverse: bool
    ) -> pd.DataFrame:
        rows = None
        if grouped is not None:
            rows = grouped.rows(pa.array(df[grouped.by], from_pandas=True), "the frame")
        out = df.copy()
        for name, scaler in scalers.items():
            if not isinstance(scaler, FittedScaler):  # arrays, categories, imputation: as Arrow
                FittedTransform._map_pandas_arrow(df, out, name, scaler, grouped, inverse)
                continue
            values = df[name].to_numpy(dtype=np.float64, na_value=np.nan)
            if grouped is not None and rows is not None and name in grouped.params:
                scaler = grouped.scaler_rows(name, *rows, scaler)
            out[name] = scaler.invert(values) if inverse else scaler.apply(values)
        return out

    @staticmethod
    def _map_pandas_arrow(
        df: pd.DataFrame,
        out: pd.DataFrame,
        name: str,
        found: ColumnMap,
        grouped: GroupedScalers | None,
        inverse: bool,
    ) -> None:
        """Map column ``name`` of ``df`` into ``out`` through :func:`apply_table`; an
        indicator column it adds goes right after it, one it reads is dropped."""
        flag = indicator_name(name)
        names = [name, *(n for n in (flag, grouped.by if grouped else None) if n is not None and n in df)]
        table = pa.table({n: pa.array(df[n], from_pandas=True) for n in dict.fromkeys(names)})
        mapped = apply_table(table, {name: found}, "float64", grouped, "the frame", inverse)
        out[name] = mapped.column(name).to_pandas().to_numpy()  # by position: df's index is kept
        if flag in mapped.column_names and flag not in df:
            out.insert(list(out.columns).index(name) + 1, flag, mapped.column(flag).to_numpy())
        elif inverse and flag in df and flag not in mapped.column_names:
            out.drop(columns=[flag], inplace=True)

    def transform(self, data: Frame, columns: Sequence[str] | None = None) -> Frame:
        """Normalize a pandas or Polars frame or an Arrow table; returns a new one of the
        same kind (the input is not changed).

        Parameters
        ----------
        data : pandas.DataFrame, polars.DataFrame or pyarrow.Table
            Must hold every artifact column (or those in ``columns``), and the group
            column of an artifact fitted per group.
        columns : sequence of str, optional
            The columns to map; default every column of the artifact.

        Returns
        -------
        The same kind as ``data``
            The mapped columns as float64. pandas: missing values as NaN. Arrow and
            Polars: nulls stay null and NaN stays NaN, as in the Parquet output (the
            same function maps both, so the numbers are identical).
        """
        mapped: Frame = self._map(data, columns, inverse=False)
        return mapped

    def inverse_transform(self, data: Frame, columns: Sequence[str] | None = None) -> Frame:
        """Map normalized values back to original units (e.g. predictions of a target);
        any kind of frame :meth:`transform` takes."""
        mapped: Frame = self._map(data, columns, inverse=True)
        return mapped
