"""Tensor columns, end to end: what a user declares (:class:`TensorSpec`), how a column's
layout is found (:func:`resolve_layout`), fitting per slot (:func:`fit_tensor`) and the
fitted map (:class:`FittedTensor`), which keeps the column's type and shape.

The statistics themselves are :class:`~normpipe.core.tensor.TensorState`. Methods:

==========  =====================================================================
zscore      ``(x - mean) / std`` per slot (element, channel or all)
minmax      the slot's ``[min, max]`` onto ``feature_range``; with ``range`` the
            declared input range instead (``range: [0, 255]``: pixels to [0, 1]
            or, with ``feature_range: [-1, 1]``, to [-1, 1], whatever the data holds)
maxabs      ``x / max(|x|)`` per slot (or the declared ``range``'s largest magnitude)
robust      ``(x - median) / IQR`` per channel or all, from each slot's KLL sketch
l2          each row divided by its Euclidean norm (embeddings); nothing fitted, no inverse
==========  =====================================================================

Slots follow the scalar methods' rules: a constant slot gets scale 1, an empty one the
identity. Output is ``float32`` by default (``dtype``), in the input's kind of list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from normpipe.core.groups import GroupMoments
from normpipe.core.images import image_shape, is_image_type
from normpipe.core.tensor import (
    Layout,
    Per,
    TensorBlock,
    TensorLayout,
    TensorState,
    is_tensor_type,
    positions_of,
    row_chunks,
    tensor_block,
)
from normpipe.dataset import Dataset
from normpipe.errors import ArtifactError, InputError, first_problem
from normpipe.scalers import FittedScaler, Method, parse_scaler

__all__ = [
    "TENSOR_METHODS",
    "FittedTensor",
    "TensorSpec",
    "first_image_shape",
    "fit_tensor",
    "resolve_layout",
]

#: Methods a tensor column may use.
TENSOR_METHODS = ("zscore", "minmax", "robust", "maxabs", "l2")
#: Field metadata key that may declare a list column's shape (a JSON list of ints).
SHAPE_KEY = b"shape"


class TensorSpec(BaseModel):
    """How one tensor column is normalized (the ``tensors`` section of a config).

    ``shape`` may be left out when the column is an ``arrow.fixed_shape_tensor`` or its
    field metadata has ``shape``; without any, the column is a variable-length list,
    with statistics per position (``per: element``: position ``p`` pools the ``p``-th
    value of every list that long) or over every value (``per: all``). ``method`` is a
    name or a mapping with its options (``feature_range`` for minmax,
    ``quantile_range`` for robust).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: tuple[int, ...] | None = None
    layout: Layout = "CHW"
    per: Per = "channel"
    method: Any = Field(default="zscore", validate_default=True)
    range: tuple[float, float] | None = Field(
        default=None, description="the known input range (e.g. [0, 255]): minmax/maxabs without statistics"
    )
    dtype: Literal["float32", "float64"] = "float32"
    on_error: Literal["error", "skip"] = Field(
        default="error", description="encoded images that do not decode: stop, or skip them as null rows"
    )
    output: Literal["tensor", "none"] = Field(
        default="tensor",
        description="none: the Parquet output keeps the column as it is (statistics only; "
        "training decodes and normalizes on the fly)",
    )

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (not value or any(d < 1 for d in value)):
            raise ValueError("shape must list one or more sizes >= 1, e.g. [3, 64, 64]")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: Any) -> Any:
        name = value if isinstance(value, str) else value.get("method") if isinstance(value, dict) else None
        if name not in TENSOR_METHODS:
            raise ValueError(f"tensor columns take one of {', '.join(TENSOR_METHODS)} (got {name!r})")
        if name == "l2":
            return "l2"
        return parse_scaler(value).model_dump()

    @model_validator(mode="after")
    def _combination(self) -> TensorSpec:
        if self.range is not None:
            low, high = self.range
            if not low < high:
                raise ValueError(f"range must be [low, high] with low < high, got {list(self.range)}")
            if self.method_name not in ("minmax", "maxabs"):
                raise ValueError("range is for minmax and maxabs (a known input range)")
        if self.method_name == "robust" and self.per == "element":
            raise ValueError("robust per element would need a sketch per element; use per: channel or all")
        return self

    def with_method(self, method: Any, name: str = "?") -> TensorSpec:
        """This spec with another method (a declared ``range`` is kept for minmax and
        maxabs only); one that does not apply to tensors keeps this spec's method."""
        chosen = (
            method if isinstance(method, str) else method.get("method") if isinstance(method, dict) else None
        )
        if chosen not in TENSOR_METHODS:
            return self
        keep_range = chosen in ("minmax", "maxabs")
        try:
            return TensorSpec.model_validate(
                {**self.model_dump(), "method": method, "range": self.range if keep_range else None}
            )
        except ValueError as err:
            raise InputError(f"tensor column '{name}': {first_problem(err)[1]}") from None

    @property
    def method_name(self) -> str:
        return self.method if isinstance(self.method, str) else str(self.method["method"])

    def scaler(self) -> Method | None:
        """The scalar method applied per slot (``None`` for ``l2``)."""
        return None if self.method == "l2" else parse_scaler(self.method)


def _declared_shape(field: pa.Field) -> tuple[int, ...] | None:
    if isinstance(field.type, pa.FixedShapeTensorType):
        return tuple(int(d) for d in field.type.shape)
    stored = (field.metadata or {}).get(SHAPE_KEY)
    if stored is None:
        return None
    try:
        shape = tuple(int(d) for d in json.loads(stored))
    except (ValueError, TypeError):
        return None
    return shape or None


def resolve_layout(name: str, field: pa.Field, spec: TensorSpec, where: str) -> TensorLayout:
    """The layout of column ``name`` from ``spec``, the extension type or the field's
    ``shape`` metadata, checked against the column's type.

    Raises
    ------
    InputError
        The column is not a list of numbers, or its shape is unknown or disagrees.
    """
    dtype = field.type
    if not is_tensor_type(dtype):
        raise InputError(
            f"{where}: column '{name}' is {dtype}, not a list of numbers; tensor columns are "
            "fixed_size_list, list or fixed_shape_tensor of integers or floats, or binary (encoded images)"
        )
    shape = spec.shape if spec.shape is not None else _declared_shape(field)
    if is_image_type(dtype):
        if shape is None or len(shape) != 3:
            raise InputError(
                f"{where}: column '{name}' holds encoded images; their shape must have three sizes "
                f"({'channels, height, width' if spec.layout == 'CHW' else 'height, width, channels'}), "
                f"got {list(shape) if shape else 'none'}"
            )
        return TensorLayout(shape, spec.layout, spec.per)
    storage = dtype.storage_type if isinstance(dtype, pa.FixedShapeTensorType) else dtype
    if (
        shape is not None
        and pa.types.is_fixed_size_list(storage)
        and storage.list_size != int(np.prod(shape))
    ):
        raise InputError(
            f"{where}: column '{name}' holds {storage.list_size} values a row, the shape {list(shape)} "
            f"needs {int(np.prod(shape))}; fix shape in the config"
        )
    if shape is None and pa.types.is_fixed_size_list(storage):
        shape = (storage.list_size,)
    if shape is None and spec.per == "channel":
        raise InputError(
            f"{where}: column '{name}' is a variable-length list; declare its shape (shape: [...]), "
            "or take statistics per position (per: element) or over every value (per: all)"
        )
    return TensorLayout(shape, spec.layout, spec.per)


def first_image_shape(dataset: Dataset, name: str, layout: str = "CHW") -> tuple[int, ...]:
    """The shape of ``dataset``'s first image in column ``name``, in ``layout`` (every
    image must have it), read from the first row group that holds one.

    Raises
    ------
    InputError
        The first image does not decode, or the column holds none.
    """
    for file in dataset.files:
        parquet = file.open(dataset.fs)
        for group in range(parquet.num_row_groups):
            column = file.read(parquet, group, [name]).column(0).drop_null()
            if len(column):
                h, w, c = image_shape(column[0].as_py(), f"{file.path}: column '{name}'")
                return (c, h, w) if layout == "CHW" else (h, w, c)
    raise InputError(f"{dataset.source}: column '{name}' holds no image; nothing to fit")


def _range_moments(slots: int, low: float, high: float) -> GroupMoments:
    """Moments that say only "every slot spans [low, high]": what minmax and maxabs read."""
    return GroupMoments(
        np.arange(slots),
        np.ones(slots, dtype=np.int64),
        np.zeros(slots),
        np.zeros(slots),
        np.full(slots, low),
        np.full(slots, high),
    )


def fit_tensor(name: str, spec: TensorSpec, state: TensorState) -> FittedTensor:
    """Per-slot parameters of ``spec``'s method from ``state``: a slot is a group of
    values, so a method with per-group rules (:meth:`Method.fit_groups`: zscore, minmax,
    maxabs) fits every slot at once from the per-slot moments; one fitted from quantiles
    (robust) fits slot by slot from the sketches; ``range`` fits minmax/maxabs from the
    declared range."""
    method = spec.scaler()
    layout = state.layout
    if method is None:
        return FittedTensor(spec, layout, None)
    slots = state.slots
    if spec.range is not None:
        params = method.fit_groups(_range_moments(slots, *spec.range), None)
    elif type(method).fit_groups is not Method.fit_groups:  # the method's own per-group rules
        params = method.fit_groups(state.moments, None)
    else:  # quantile-based: each slot from its sketch
        fitted = [
            method.fit(state.slot_state(s).finalize(method.probabilities()), None, f"{name}[{s}]")
            for s in range(slots)
        ]
        params = fitted[0].params.map(
            lambda key, _: np.array([f.params[key] for f in fitted], dtype=np.float64)
        )
    params = params.map(lambda _, v: np.asarray(v, dtype=np.float64).reshape(slots))
    return FittedTensor(spec, layout, FittedScaler(method, params))


@dataclass(frozen=True)
class FittedTensor:
    """A tensor column's fitted map: ``scaler`` holds one parameter per slot (``None``
    for ``l2``)."""

    spec: TensorSpec
    layout: TensorLayout
    scaler: FittedScaler | None

    def output_type(self, dtype: pa.DataType) -> pa.DataType:
        """The column's type with float values of the spec's ``dtype``."""
        value = pa.float32() if self.spec.dtype == "float32" else pa.float64()
        if is_image_type(dtype):  # decoded: a tensor of the layout's shape
            assert self.layout.shape is not None
            return pa.fixed_shape_tensor(value, list(self.layout.shape))
        if isinstance(dtype, pa.FixedShapeTensorType):
            return pa.fixed_shape_tensor(
                value, dtype.shape, dim_names=dtype.dim_names, permutation=dtype.permutation
            )
        if pa.types.is_fixed_size_list(dtype):
            return pa.list_(pa.field(dtype.value_field.name, value), dtype.list_size)
        if pa.types.is_large_list(dtype):
            return pa.large_list(pa.field(dtype.value_field.name, value))
        return pa.list_(pa.field(dtype.value_field.name, value))

    def map_values(
        self,
        values: npt.NDArray[np.float64],
        inverse: bool = False,
        offsets: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """The map of ``rows x size`` values (or the pooled values of variable-length
        lists, which per position need their ``offsets``)."""
        if self.scaler is None:
            if inverse:
                raise ArtifactError("l2 normalization has no inverse (each row's norm is not kept)")
            norm = np.sqrt(np.einsum("ij,ij->i", values, values))[:, None]
            return values / np.where((norm > 0) & np.isfinite(norm), norm, 1.0)
        if self.layout.positional:
            assert offsets is not None
            positions = positions_of(offsets)
            slots = int(next(iter(self.scaler.params.values())).size)
            if positions.size and positions.max() >= slots:
                raise InputError(
                    f"a list holds {int(positions.max()) + 1} values, longer than any seen at fit time "
                    f"({slots}); fit on data that includes such lists, or use per: all"
                )
            per_position = self.scaler.params.map(lambda _, v: np.take(v, positions))
        else:
            per_position = self.scaler.params.map(lambda _, v: self.layout.expand(v))
        scaler = FittedScaler(self.scaler.spec, per_position)
        return scaler.invert(values) if inverse else scaler.apply(values)

    def map_column(
        self, column: pa.ChunkedArray | pa.Array, where: str, inverse: bool = False
    ) -> pa.Array | pa.ChunkedArray:
        """The mapped column: the same kind of list (decoded images: a tensor of the
        layout's shape), null rows null, float values; mapped a slice of rows at a
        time, each slice one chunk of the result (not copied into one array)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        target = self.output_type(column.type)
        parts = []
        for start, rows in row_chunks(column, self.layout):
            block = tensor_block(rows, self.layout, where, start, skip=self.spec.on_error == "skip")
            if self.scaler is None and block.offsets is not None:
                raise InputError(f"{where}: l2 normalization needs a fixed shape; declare shape: [...]")
            mapped = self.map_values(block.values, inverse, block.offsets)
            parts.append(_rebuild(target, block, mapped))
        if len(parts) == 1:
            return parts[0]
        return pa.chunked_array(parts, type=target)


def _rebuild(target: pa.DataType, block: TensorBlock, mapped: npt.NDArray[np.float64]) -> pa.Array:
    """``mapped`` values as ``target``: null rows null (a fixed-size list holds zeros under
    them), each value converted to the output type once."""
    storage = target.storage_type if isinstance(target, pa.FixedShapeTensorType) else target
    dtype = storage.value_type.to_pandas_dtype()
    everywhere = bool(block.valid.all())
    mask = None if everywhere else pa.array(~block.valid)
    if pa.types.is_fixed_size_list(storage):
        if block.offsets is not None:  # the valid rows' values, pooled: spread back over every row
            full = np.zeros((block.rows, storage.list_size), dtype=dtype)
            full[block.valid] = mapped.reshape(-1, storage.list_size)
        else:
            full = mapped if everywhere else np.where(block.valid[:, None], mapped, 0.0)
        values = pa.array(np.ascontiguousarray(full, dtype=dtype).reshape(-1))
        array = pa.FixedSizeListArray.from_arrays(values, type=storage, mask=mask)
    else:
        offsets, kept = block.offsets, mapped
        if offsets is None:  # a fixed shape read from a list: the valid rows' values
            offsets = np.concatenate([[0], np.cumsum(np.where(block.valid, mapped.shape[1], 0))])
            kept = mapped if everywhere else mapped[block.valid]
        values = pa.array(np.ascontiguousarray(kept, dtype=dtype).reshape(-1))
        kind = pa.LargeListArray if pa.types.is_large_list(storage) else pa.ListArray
        index_type = pa.int64() if pa.types.is_large_list(storage) else pa.int32()
        array = kind.from_arrays(pa.array(offsets, type=index_type), values, type=storage, mask=mask)
    if isinstance(target, pa.FixedShapeTensorType):
        return pa.ExtensionArray.from_storage(target, array)
    return array
