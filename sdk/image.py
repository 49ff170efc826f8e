"""Photos to model input: decoding with guards (:func:`load_image`) and the bundle's
:class:`~edgerec.sdk.bundle.manifest.Preprocessing` steps (:func:`resize_and_crop`,
:func:`preprocess`), the same code on the export's side and the device's.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from edgerec.sdk.bundle.manifest import Interpolation, Layout, Preprocessing, ResizeMode
from edgerec.sdk.errors import InvalidImageError
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["ImageInput", "ImageLimits", "load_image", "preprocess", "resize_and_crop"]

_PIL_FILTERS = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
}

ImageInput = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, np.ndarray]
"""Anything :func:`load_image` accepts."""


@dataclass(frozen=True)
class ImageLimits:
    """Guards against decompression bombs and images too small to mean anything.

    Attributes:
        max_pixels: largest width x height accepted, checked from the header before decoding.
        min_side: smallest width or height accepted, in pixels.
        max_bytes: largest encoded file accepted, in bytes.
    """

    max_pixels: int = 64_000_000
    min_side: int = 8
    max_bytes: int = 100 * 1024 * 1024


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return type(source).__name__


def _open(source: ImageInput, limits: ImageLimits) -> Image.Image:
    """Open without decoding pixels: PIL reads only the header here."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"No image file at {path}; check the path.")
        if path.stat().st_size > limits.max_bytes:
            raise InvalidImageError(
                f"{path} is {path.stat().st_size} bytes, over the {limits.max_bytes}-byte limit; "
                "shrink it or raise ImageLimits.max_bytes."
            )
        return Image.open(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImageError("Got 0 bytes of image data; pass the encoded file's bytes.")
        if len(source) > limits.max_bytes:
            raise InvalidImageError(f"Image data over the {limits.max_bytes}-byte limit.")
        return Image.open(io.BytesIO(bytes(source)))
    if hasattr(source, "read"):
        data = source.read(limits.max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidImageError("The file object must be opened in binary mode ('rb').")
        return _open(bytes(data), limits)
    raise InvalidImageError(
        f"Cannot read an image from a {type(source).__name__}; pass a path, bytes, a binary "
        "file object, a PIL image or an HxWx3 uint8 array."
    )


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise InvalidImageError(
            f"Image arrays must be uint8, got {array.dtype}; scale to 0..255 and cast with "
            "`.astype(np.uint8)`."
        )
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
        return Image.fromarray(np.ascontiguousarray(array), mode=mode)
    raise InvalidImageError(
        f"Image arrays must be HxWx3 (RGB), HxWx4 (RGBA) or HxW (grey), got shape {array.shape}."
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.nan_to_num(np.asarray(img, dtype=np.float32))
        top = float(a.max()) if a.size else 1.0
        hi = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0  # [0,1], 8- or 16-bit
        grey = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageInput, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode any supported image input to an upright RGB PIL image.

    Args:
        source: a path, encoded bytes, a binary file object, a PIL image, or a uint8 array
            (HxWx3 RGB, HxWx4 RGBA or HxW grey).
        limits: size guards; checked from the header before pixels are decoded.

    Raises:
        InvalidImageError: unreadable, undecodable, truncated, too large or too small.
    """
    if isinstance(source, np.ndarray):
        img = _from_array(source)
    elif isinstance(source, Image.Image):
        img = source
    else:
        try:
            img = _open(source, limits)
        except InvalidImageError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise InvalidImageError(
                f"{_describe(source)} is not a decodable image ({exc}); it may be corrupt or "
                "in an unsupported format (use JPEG, PNG, WebP, GIF, BMP or TIFF)."
            ) from exc
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(f"{_describe(source)} is a decompression bomb: {exc}") from exc
    width, height = img.size
    if width * height > limits.max_pixels:
        raise InvalidImageError(
            f"{_describe(source)} is {width}x{height} pixels, over the {limits.max_pixels}-pixel "
            "limit (a decompression bomb guard); downscale it or raise ImageLimits.max_pixels."
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"{_describe(source)} is {width}x{height} pixels; images need at least "
            f"{limits.min_side} pixels on each side."
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise InvalidImageError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so truncated files would pass silently; "
            "unset it to use edgerec."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(
            f"{_describe(source)} could not be decoded ({exc}); the file is probably truncated "
            "or corrupt: re-download or re-encode it."
        ) from exc


def resize_and_crop(img: Image.Image, pre: Preprocessing) -> Image.Image:
    """Step 2 of the contract: resize (shorter side or stretch), then centre-crop a square."""
    size = int(pre.input_size)
    if pre.resize is ResizeMode.STRETCH:
        return img.resize((size, size), _PIL_FILTERS[pre.interpolation])
    width, height = img.size
    short = max(size, round(size / pre.crop_pct))
    scale = short / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.resize((new_w, new_h), _PIL_FILTERS[pre.interpolation], reducing_gap=None)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def preprocess(
    images: Sequence[ImageInput],
    pre: Preprocessing,
    layout: Layout = Layout.NCHW,
    first_index: int = 0,
    limits: ImageLimits = ImageLimits(),
) -> np.ndarray:
    """Turn images into the model's input batch.

    Args:
        images: a sequence of anything :func:`load_image` accepts.
        pre: the bundle's preprocessing contract.
        layout: ``NCHW`` -> (N, 3, S, S); ``NHWC`` -> (N, S, S, 3), with S = ``input_size``.
        first_index: the batch position of ``images[0]``, for error messages.
        limits: size guards for every image.

    Returns:
        float32 array of normalised pixels.

    Raises:
        InvalidImageError: for the first image that cannot be used, naming its position
            (counted from ``first_index``).
    """
    if isinstance(images, (str, bytes, np.ndarray, Image.Image)) or hasattr(images, "read"):
        raise TypeError("preprocess() takes a sequence of images; wrap a single one in a list.")
    size = int(pre.input_size)
    out = np.empty((len(images), size, size, 3), dtype=np.float32)
    mean = np.asarray(pre.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(pre.std, np.float32) * 255.0)
    for i, source in enumerate(images):
        try:
            img = resize_and_crop(load_image(source, limits), pre)
        except InvalidImageError as exc:
            raise InvalidImageError(f"Image {first_index + i}: {exc}") from exc
        np.multiply(np.asarray(img, dtype=np.float32) - mean, inv_std, out=out[i])
    if Layout(layout) is Layout.NCHW:
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out
