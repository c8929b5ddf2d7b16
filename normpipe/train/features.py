"""A model's input row: its features side by side, a tensor feature as all its values.

Scalar features take one position each, a tensor feature (an image, an embedding) the
``size`` values of its shape in its stored order, a categorical feature one position
holding its code (as a float; a null code becomes the extra "missing" index, the
vocabulary's size, so the embedding learns a row for it). Every reader of model inputs
(the training loader, predict) builds rows here, so they agree. A tensor column still
stored as encoded images (``output: none``), or raw data read with ``normalize``, is
decoded and normalized with the artifact's map as it is read; raw categories are coded
with the artifact's vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from normpipe.core.column import to_float64
from normpipe.core.images import is_image_type
from normpipe.core.tensor import TensorLayout, is_tensor_type, row_chunks, tensor_block
from normpipe.core.vocab import kind_of
from normpipe.dataset import Dataset, is_numeric, listing
from normpipe.errors import ArtifactError, InputError
from normpipe.mappers import apply_table
from normpipe.stats import Stats
from normpipe.tensors import first_image_shape

__all__ = ["FeatureLayout", "feature_layout", "feature_rows"]


@dataclass(frozen=True)
class FeatureLayout:
    """The features in order, with each one's width (1 for a scalar) and, for tensor
    features, their layout."""

    names: tuple[str, ...]
    widths: tuple[int, ...]
    tensors: dict[str, TensorLayout]
    #: Categorical features: how many indices each embedding has (codes and "missing").
    categories: dict[str, int] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return sum(self.widths)

    def embedded(self) -> list[tuple[int, int]]:
        """``(position, indices)`` of each categorical feature in a row."""
        return [(self.names.index(name), size) for name, size in self.categories.items()]


def feature_layout(
    schema: pa.Schema,
    features: Sequence[str],
    stats: Stats | None,
    where: str,
    dataset: Dataset | None = None,
) -> FeatureLayout:
    """The layout of ``features`` in a dataset of ``schema``: a tensor feature's shape from
    the artifact (``stats``), else from its type (``fixed_size_list``: one axis;
    ``fixed_shape_tensor``: its shape, read as CHW), else for encoded images from the
    first image of ``dataset`` (decoded as CHW, unnormalized).

    Raises
    ------
    InputError
        A feature is missing, not numeric, or a tensor without a known shape.
    """
    widths: list[int] = []
    tensors: dict[str, TensorLayout] = {}
    categories: dict[str, int] = {}
    for name in features:
        index = schema.get_field_index(name)
        if index < 0:
            raise InputError(f"feature '{name}' is not in {where}; columns: {listing(schema.names)}")
        dtype = schema.field(index).type
        coded = stats.categories.get(name) if stats is not None else None
        if coded is not None and coded.fitted is not None:
            if tensors:
                raise InputError(
                    f"feature '{name}': categorical features go with the MLP, not after a tensor"
                )
            widths.append(1)
            categories[name] = coded.fitted.size + 1
            continue
        if kind_of(dtype) in ("string", "boolean"):
            raise ArtifactError(
                f"feature '{name}' holds {dtype} values; declare it in categories (normpipe run) and "
                "train with that stats artifact, or leave it out of the features"
            )
        if is_numeric(dtype):
            widths.append(1)
            continue
        if not is_tensor_type(dtype):
            raise InputError(f"feature '{name}' is {dtype} in {where}; features are numbers or tensors")
        if stats is not None and name in stats.tensors:
            layout = stats.tensors[name].state.layout
        elif is_image_type(dtype) and dataset is not None:
            layout = TensorLayout(first_image_shape(dataset, name), "CHW", "all")
        elif is_image_type(dtype):
            raise ArtifactError(
                f"feature '{name}' holds encoded images; train with the stats artifact that has "
                "their per-channel statistics (normpipe run with tensors:)"
            )
        else:
            storage = dtype.storage_type if isinstance(dtype, pa.FixedShapeTensorType) else dtype
            if not pa.types.is_fixed_size_list(storage):
                raise InputError(
                    f"feature '{name}' is a variable-length list in {where}; a model input needs a fixed "
                    "shape (declare it in the tensors section and normalize the data first)"
                )
            shape = tuple(dtype.shape) if isinstance(dtype, pa.FixedShapeTensorType) else (storage.list_size,)
            layout = TensorLayout(tuple(int(d) for d in shape), "CHW", "all")
        if layout.shape is None:
            raise InputError(f"feature '{name}' has no fixed shape; a model input needs one")
        widths.append(math.prod(layout.shape))
        tensors[name] = layout
    return FeatureLayout(tuple(features), tuple(widths), tensors, categories)


def feature_rows(
    table: pa.Table, layout: FeatureLayout, stats: Stats | None, normalize: bool, where: str = "the data"
) -> npt.NDArray[np.float32]:
    """The model input of every row of ``table`` (float32, ``rows x layout.width``); a
    row with a missing value anywhere holds NaN there. ``normalize``: map the features
    with ``stats`` (raw data); encoded images are always decoded and normalized."""
    parts = []
    for name in layout.names:
        column = table.column(name)
        if name in layout.categories:
            parts.append(_codes(name, column, layout.categories[name], stats, normalize, where)[:, None])
            continue
        if name not in layout.tensors:
            values = to_float64(column)
            if normalize and stats is not None and name in stats.columns:
                values = stats.transform_column(name, values)
            parts.append(values[:, None])
            continue
        encoded = is_image_type(column.type)
        mapping = stats is not None and name in stats.tensors and (normalize or encoded)
        fitted = stats.tensors[name].fitted if stats is not None and mapping else None
        tensor = fitted.layout if fitted is not None else layout.tensors[name]
        slices = []
        for start, rows in row_chunks(column, tensor):  # float64 a slice of rows at a time
            block = tensor_block(rows, tensor, f"{where}: column '{name}'", start, skip=True)
            values = fitted.map_values(block.values) if fitted is not None else block.values
            slices.append(np.where(block.valid[:, None], values, np.nan).astype(np.float32))
        parts.append(
            np.concatenate(slices) if slices else np.empty((0, layout.widths[layout.names.index(name)]))
        )
    if not parts:
        return np.empty((table.num_rows, 0), dtype=np.float32)
    return np.concatenate(parts, axis=1, dtype=np.float32)


def _codes(
    name: str, column: pa.ChunkedArray, indices: int, stats: Stats | None, raw: bool, where: str
) -> npt.NDArray[np.float64]:
    """The embedding index of each row: its code, ``indices - 1`` where it is null."""
    category = stats.categories[name] if stats is not None else None
    if category is not None and category.map is not None and (raw or not is_numeric(column.type)):
        # raw values: the artifact's map (its imputation, then the vocabulary), as in the output
        column = apply_table(pa.table({name: column}), {name: category.map}, where=where).column(name)
    codes = to_float64(column)
    bad = (codes < 0) | (codes >= indices - 1)
    if bad.any():
        raise InputError(
            f"{where}: column '{name}' holds {codes[bad][0]:g}, not a code of its vocabulary "
            f"(0 .. {indices - 2}); train on the output written with this stats artifact"
        )
    return np.where(np.isnan(codes), indices - 1, codes)
