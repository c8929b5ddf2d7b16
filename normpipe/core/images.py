"""Images stored as encoded bytes (PNG, JPEG, any format Pillow reads) in a ``binary``
column: decoded on the workers into pixel arrays for the tensor statistics and maps.

Every image of a column must have the column's shape: ``(height, width, channels)``
as Pillow decodes it (``L`` images have one channel, ``RGB`` three, ``RGBA`` four).
A row whose bytes do not decode, or whose image has another size or channel count,
stops the pass with one line naming the file, the row and the column, or with
``on_error: skip`` becomes a null row, counted as ``undecodable`` in the artifact.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from normpipe.errors import ConfigError, InputError

__all__ = ["DecodedImages", "chw_tensor", "decode_images", "image_shape", "is_image_type"]


def is_image_type(dtype: pa.DataType) -> bool:
    """A column of encoded images: ``binary`` or ``large_binary``."""
    return bool(pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype))


def _pillow() -> Any:
    """Pillow's ``Image`` module, imported on first use (workers without images skip it)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise ConfigError("decoding images needs Pillow: pip install pillow") from None
    return Image


def _decode_one(data: bytes) -> npt.NDArray[np.uint8]:
    """One image's pixels, ``(height, width, channels)`` (``ValueError`` when it does not
    decode)."""
    image = _pillow()
    try:
        with image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img)
    except Exception as err:  # Pillow raises many kinds for damaged data
        raise ValueError(str(err) or type(err).__name__) from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype != np.uint8:  # 16-bit PNGs and the like: their own values, as float
        return np.asarray(pixels)
    return pixels


def image_shape(data: bytes, where: str) -> tuple[int, int, int]:
    """The ``(height, width, channels)`` of one encoded image."""
    try:
        pixels = _decode_one(data)
    except ValueError as err:
        raise InputError(f"{where}: the first image does not decode ({err}); check the column") from None
    height, width, channels = pixels.shape
    return int(height), int(width), int(channels)


@dataclass(frozen=True)
class DecodedImages:
    """Decoded rows: ``pixels`` is ``rows x h x w x c`` (HWC; ``uint8``, or float64 when
    an image has deeper pixels; rows that are null or were skipped hold zeros), ``valid``
    marks the decoded rows, ``skipped`` counts the rows that did not decode or had
    another shape."""

    pixels: npt.NDArray[Any]
    valid: npt.NDArray[np.bool_]
    skipped: int


def decode_images(
    column: pa.Array, shape: tuple[int, int, int], where: str, first_row: int = 0, skip: bool = False
) -> DecodedImages:
    """Decode every row of a binary column into ``shape`` (HWC) pixels.

    Raises
    ------
    InputError
        A row does not decode or has another shape (unless ``skip``), naming it as
        ``where``, row ``first_row + i``.
    """
    rows = len(column)
    pixels: npt.NDArray[Any] = np.zeros((rows, *shape), dtype=np.uint8)
    valid = np.zeros(rows, dtype=bool)
    skipped = 0
    for i, value in enumerate(column):
        data = value.as_py()
        if data is None:
            continue
        try:
            decoded = _decode_one(data)
            problem = None
            if decoded.shape != shape:
                h, w, c = decoded.shape
                problem = (
                    f"an image of {h}x{w} with {c} channel{'s' if c != 1 else ''}, where the column's "
                    f"images are {shape[0]}x{shape[1]} with {shape[2]}; convert the images to one size "
                    "and mode, or set on_error: skip"
                )
        except ValueError as err:
            problem = f"bytes that do not decode as an image ({err}); fix the row, or set on_error: skip"
        if problem is not None:
            if not skip:
                raise InputError(f"{where}, row {first_row + i}: {problem}")
            skipped += 1
            continue
        if decoded.dtype != pixels.dtype:  # 16-bit or float images: keep their values
            pixels = pixels.astype(np.float64)
        pixels[i] = decoded
        valid[i] = True
    return DecodedImages(pixels, valid, skipped)


def chw_tensor(pixels: npt.NDArray[np.uint8], valid: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """HWC ``uint8`` pixels (``rows x h x w x c``) as a ``uint8`` ``fixed_shape_tensor``
    of shape ``[c, h, w]`` (null where not ``valid``): images stored as tensors."""
    _, h, w, c = pixels.shape
    chw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.uint8).reshape(-1)
    mask = pa.array(~valid) if valid is not None and not valid.all() else None
    storage = pa.FixedSizeListArray.from_arrays(pa.array(chw), c * h * w, mask=mask)
    return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.uint8(), [c, h, w]), storage)
