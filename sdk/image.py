"""Photos to model input: decoding with guards (:func:`load_image`) and the bundle's
:class:`~edgerec.sdk.bundle.manifest.Preprocessing` steps (:func:`resize_and_crop`,
:func:`preprocess`), the same code on the export's side and the device's.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

import numpy as np
from edgerec.sdk.bundle.manifest import Interpolation, Layout, Preprocessing, ResizeMode
from edgerec.sdk.errors import InvalidImageError
from PIL import Image, ImageFile, ImageMode, UnidentifiedImageError

__all__ = [
    "DEFAULT_FORMATS",
    "ImageInput",
    "ImageLimits",
    "load_image",
    "preprocess",
    "resize_and_crop",
]

_PIL_FILTERS = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
}

ImageInput = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, np.ndarray]
"""Anything :func:`load_image` accepts."""


DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""PIL decoders tried on encoded input by default (GIF and TIFF: first frame). Every other
PIL plugin (EPS, which runs Ghostscript, PSD, ICNS, ...) is never reached unless
:attr:`ImageLimits.formats` names it."""


@dataclass(frozen=True)
class ImageLimits:
    """Guards against decompression bombs, absurd shapes and unvetted decoders, all checked
    from the image header before any pixel is decoded.

    Attributes:
        max_pixels: largest width x height accepted.
        min_side: smallest width or height accepted, in pixels.
        max_bytes: largest encoded file accepted, in bytes.
        max_aspect_ratio: largest long side / short side accepted (wider than any camera
            panorama; the model sees only the centre of such an image anyway).
        max_decoded_bytes: largest decoded frame accepted, in bytes as PIL holds it in memory
            (4 bytes a pixel for colour, 1 for grey or palette, 2 for 16-bit grey).
        formats: PIL format names tried on encoded input, in order (:data:`DEFAULT_FORMATS`);
            add e.g. ``"PCX"`` to accept more. Images passed as PIL images or arrays are
            already decoded and are not checked against it.
    """

    max_pixels: int = 64_000_000
    min_side: int = 8
    max_bytes: int = 100 * 1024 * 1024
    max_aspect_ratio: float = 50.0
    max_decoded_bytes: int = 256 * 1024 * 1024
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if isinstance(self.formats, str):
            raise ValueError("formats must be a tuple of PIL format names, e.g. ('JPEG', 'PNG').")
        object.__setattr__(self, "formats", tuple(str(f).upper() for f in self.formats))
        for name in ("max_pixels", "min_side", "max_bytes", "max_decoded_bytes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.max_aspect_ratio >= 1:
            raise ValueError(f"max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}.")


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return type(source).__name__


def _refused_format(data: bytes, limits: ImageLimits) -> Optional[str]:
    """The name of a PIL format outside the allow-list whose signature ``data`` carries (the
    plugins' prefix checks only: no decoder runs)."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name in limits.formats or accept is None:
            continue
        try:
            if accept(data[:16]):
                return name
        except Exception:  # a prefix check that cannot read these bytes did not match
            continue
    return None


def _open(source: ImageInput, limits: ImageLimits) -> Image.Image:
    """Open without decoding pixels: PIL reads only the header here, with only the decoders
    of ``limits.formats``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"No image file at {path}; check the path.")
        if path.stat().st_size > limits.max_bytes:
            raise InvalidImageError(
                f"{path} is {path.stat().st_size} bytes, over the {limits.max_bytes}-byte limit; "
                "shrink it or raise ImageLimits.max_bytes."
            )
        with open(path, "rb") as f:
            return _open(f.read(limits.max_bytes + 1), limits)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImageError("Got 0 bytes of image data; pass the encoded file's bytes.")
        if len(source) > limits.max_bytes:
            raise InvalidImageError(f"Image data over the {limits.max_bytes}-byte limit.")
        data = bytes(source)
        try:
            return Image.open(io.BytesIO(data), formats=limits.formats)
        except UnidentifiedImageError:
            refused = _refused_format(data, limits)
            if refused is None:
                raise
            raise InvalidImageError(
                f"the data is a {refused} image, which is not among the allowed formats "
                f"{', '.join(limits.formats)}; convert it to one of those, or add {refused!r} "
                "to ImageLimits.formats if you trust its decoder."
            ) from None
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
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
        return Image.fromarray(np.ascontiguousarray(array), mode=mode)
    raise InvalidImageError(
        "Image arrays must be HxWx3 (RGB), HxWx4 (RGBA), HxW or HxWx1 (grey), got shape "
        f"{array.shape}."
    )


def _decoded_bytes(img: Image.Image) -> int:
    """Bytes PIL allocates for the frame: one sample for single-band modes, else 4 a pixel."""
    try:
        mode = ImageMode.getmode(img.mode)
        per_pixel = np.dtype(mode.typestr).itemsize if len(mode.bands) == 1 else 4
    except (KeyError, TypeError, ValueError):
        per_pixel = 4
    return img.size[0] * img.size[1] * max(per_pixel, 1)


def _check_header(img: Image.Image, source: Any, limits: ImageLimits) -> None:
    width, height = img.size
    what = _describe(source)
    if width * height > limits.max_pixels:
        raise InvalidImageError(
            f"{what} is {width}x{height} pixels, over the {limits.max_pixels}-pixel "
            "limit (a decompression bomb guard); downscale it or raise ImageLimits.max_pixels."
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"{what} is {width}x{height} pixels; images need at least "
            f"{limits.min_side} pixels on each side."
        )
    if max(width, height) > limits.max_aspect_ratio * min(width, height):
        raise InvalidImageError(
            f"{what} is {width}x{height} pixels, an aspect ratio over "
            f"{limits.max_aspect_ratio:g}:1; crop it to its subject or raise "
            "ImageLimits.max_aspect_ratio."
        )
    if _decoded_bytes(img) > limits.max_decoded_bytes:
        raise InvalidImageError(
            f"{what} ({width}x{height}, mode {img.mode}) would take {_decoded_bytes(img)} bytes "
            f"decoded, over the {limits.max_decoded_bytes}-byte limit; downscale it or raise "
            "ImageLimits.max_decoded_bytes."
        )


# ------------------------------------------------------------------ bounded-memory decoding

_GAP = 3
"""reduce() keeps at least this many source pixels per output pixel for the final
antialiased resize (PIL: "indistinguishable from fair resampling" from 3 on)."""

_DRAFT_GAP = 1
"""JPEG draft() keeps at least this many source pixels per output pixel: the DCT-domain
scaling is itself a low-pass filter, so the smallest scale that still covers the output is
followed by one antialiased resize (quality and time against full-size decoding:
``benchmarks/draft_decode.py``)."""

_STRIP_PIXELS = 1 << 16  # mode conversion runs on strips of about this many pixels (256 kB RGB)

_EXACT_PIXELS = 4 << 20
"""Images up to this size that need no reduction take the contract's literal path (convert
the whole image, resize the whole image, crop): bit for bit what edgerec always computed.
Larger ones resample only the crop (PIL's ``box``), which differs by rounding (+-1 level)."""

_SUPPORT = {Interpolation.NEAREST: 0.5, Interpolation.BILINEAR: 1.0, Interpolation.BICUBIC: 2.0}

_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}

Box = tuple[float, float, float, float]


def _orient_box(orientation: int, box: Box, width: float, height: float) -> Box:
    """``box`` on a ``width`` x ``height`` image -> the same pixels after the EXIF
    ``orientation`` transpose (continuous coordinates)."""
    x0, y0, x1, y1 = box
    w, h = width, height
    corners = {
        1: ((x0, y0), (x1, y1)), 2: ((w - x0, y0), (w - x1, y1)),
        3: ((w - x0, h - y0), (w - x1, h - y1)), 4: ((x0, h - y0), (x1, h - y1)),
        5: ((y0, x0), (y1, x1)), 6: ((h - y0, x0), (h - y1, x1)),
        7: ((h - y0, w - x0), (h - y1, w - x1)), 8: ((y0, w - x0), (y1, w - x1)),
    }[orientation]
    (ax, ay), (bx, by) = corners
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def _orientation(img: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": then there is no orientation
            value = img.getexif().get(0x0112, 1)
    except Exception:  # unreadable EXIF is no orientation (as ImageOps.exif_transpose does)
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


def _crop_box(size: tuple[float, float], pre: Preprocessing) -> Box:
    """The area of a ``size`` = (width, height) image that becomes the model's input: the
    centre crop of the shorter-side resize (the whole image for ``stretch``), in its pixels."""
    width, height = size
    side = int(pre.input_size)
    if pre.resize is ResizeMode.STRETCH:
        return 0.0, 0.0, float(width), float(height)
    short = max(side, round(side / pre.crop_pct))
    scale = short / min(width, height)
    new_w, new_h = max(side, round(width * scale)), max(side, round(height * scale))
    left, top = (new_w - side) // 2, (new_h - side) // 2
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + side) * sx, (top + side) * sy


def _grey16(strip: Image.Image) -> Image.Image:
    """I;16*, I and F -> L by bit depth, never by the image's own maximum: 16-bit and 32-bit
    integers are on 0..65535 (clipped), floats on [0, 1]."""
    a = np.asarray(strip)
    if strip.mode == "F":
        a = np.nan_to_num(a.astype(np.float32)) * 255.0
    else:
        a = a.astype(np.float32) * (255.0 / 65535.0)
    grey = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white; 16-bit by bit depth."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _grey16(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _region_to_rgb(img: Image.Image, region: tuple[int, int, int, int], k: int) -> Image.Image:
    """The ``region`` of ``img`` in RGB, shrunk ``k`` times by box averaging, converted strip
    by strip so that no full-size copy in another mode is ever made."""
    x0, y0, x1, y1 = region
    width = x1 - x0
    out = Image.new("RGB", (-(-width // k), -(-(y1 - y0) // k)))
    rows = max(k, (_STRIP_PIXELS // max(width, 1)) // k * k)
    for top in range(y0, y1, rows):
        strip = _to_rgb(img.crop((x0, top, x1, min(y1, top + rows))))
        out.paste(strip.reduce(k) if k > 1 else strip, (0, (top - y0) // k))
    return out


def _decode(source: ImageInput, limits: ImageLimits, pre: Optional[Preprocessing]
            ) -> Image.Image:
    """An upright RGB image; with ``pre``, already resized and cropped to the model's input.

    Memory: the decoded frame in its own mode (JPEG: at the smallest DCT scale that keeps
    ``_DRAFT_GAP`` source pixels per output pixel), one strip in RGB, and the part of the
    image the crop reads, in RGB, shrunk by box averaging to about ``_GAP`` times the output.
    """
    if isinstance(source, np.ndarray):
        img = _from_array(source)
    elif isinstance(source, Image.Image):
        img = source
    else:
        img = _open(source, limits)
    _check_header(img, source, limits)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise InvalidImageError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set, so truncated files would pass silently; "
            "unset it to use edgerec."
        )
    full_w, full_h = img.size
    side = int(pre.input_size) if pre is not None else 0
    need = 0
    if pre is not None:
        need = side if pre.resize is ResizeMode.STRETCH else max(side, round(side / pre.crop_pct))
    draft_scale = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        ours = not isinstance(source, Image.Image)  # never shrink a caller's own image object
        if ours and need and min(full_w, full_h) >= 2 * need * _DRAFT_GAP and getattr(
                img, "format", None) in ("JPEG", "MPO") and img.tile:
            k = min(full_w, full_h) // (need * _DRAFT_GAP)
            drafted = img.draft(None, (full_w // k, full_h // k))  # PIL: >= this size
            if drafted is not None:
                draft_scale = full_w / drafted[1][2]
        img.load()
    orientation = _orientation(img)
    w, h = img.size
    k = max(1, min(w, h) // (need * _GAP)) if need else 1
    swap = orientation in (5, 6, 7, 8)
    logical = (full_h, full_w) if swap else (full_w, full_h)
    box = _crop_box(logical, pre) if pre is not None else (0.0, 0.0, *map(float, logical))
    region = (0, 0, w, h)
    if pre is not None and pre.resize is not ResizeMode.STRETCH:
        per_out = (box[2] - box[0]) / side  # source pixels per output pixel
        margin = _SUPPORT[pre.interpolation] * max(per_out, 1.0) + 2.0
        wanted = (max(0.0, box[0] - margin), max(0.0, box[1] - margin),
                  min(logical[0], box[2] + margin), min(logical[1], box[3] + margin))
        sx0, sy0, sx1, sy1 = _orient_box(_INVERSE[orientation], wanted, *logical)
        sx0, sy0, sx1, sy1 = (v / draft_scale for v in (sx0, sy0, sx1, sy1))
        region = (int(sx0) // k * k, int(sy0) // k * k,
                  min(w, int(np.ceil(sx1))), min(h, int(np.ceil(sy1))))
    if k == 1 and draft_scale == 1.0 and w * h <= _EXACT_PIXELS:
        rgb = _to_rgb(img)
        rgb = rgb.transpose(_ORIENT[orientation]) if orientation != 1 else rgb
        return rgb if pre is None else resize_and_crop(rgb, pre)
    rgb = _region_to_rgb(img, region, k)
    if orientation != 1:
        rgb = rgb.transpose(_ORIENT[orientation])
    if pre is None:
        return rgb
    # Where the shrunk region lies in the upright full-size image, then the crop box in it.
    # Each shrunk pixel stands for k x k drafted ones; a partial last block is taken as whole
    # (extending past the image edge), which keeps every full block exactly in place.
    step = k * draft_scale
    x0, y0 = region[0] * draft_scale, region[1] * draft_scale
    ext_w, ext_h = (rgb.size[1], rgb.size[0]) if swap else rgb.size
    virtual = (x0, y0, x0 + ext_w * step, y0 + ext_h * step)
    lx0, ly0, lx1, ly1 = _orient_box(orientation, virtual, full_w, full_h)
    px, py = (lx1 - lx0) / rgb.size[0], (ly1 - ly0) / rgb.size[1]
    rw, rh = rgb.size
    small = (min(max((box[0] - lx0) / px, 0.0), rw), min(max((box[1] - ly0) / py, 0.0), rh),
             min(max((box[2] - lx0) / px, 0.0), rw), min(max((box[3] - ly0) / py, 0.0), rh))
    return rgb.resize((side, side), _PIL_FILTERS[pre.interpolation], box=small,
                      reducing_gap=None)


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                  ZeroDivisionError, struct.error, MemoryError, Image.DecompressionBombError)


def _load(source: ImageInput, limits: ImageLimits, pre: Optional[Preprocessing]) -> Image.Image:
    try:
        return _decode(source, limits, pre)
    except InvalidImageError:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"{_describe(source)} is not a decodable image ({exc}); it may be corrupt or in a "
            f"format outside the allowed {', '.join(limits.formats)} (ImageLimits.formats)."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"{_describe(source)} is a decompression bomb: {exc}") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(
            f"{_describe(source)} could not be decoded ({str(exc)[:200]}); the file is probably "
            "truncated or corrupt: re-download or re-encode it."
        ) from exc


def load_image(source: ImageInput, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode any supported image input to an upright RGB PIL image at full size.

    Args:
        source: a path, encoded bytes, a binary file object, a PIL image, or a uint8 array
            (HxWx3 RGB, HxWx4 RGBA, HxW or HxWx1 grey).
        limits: size, shape and format guards; checked from the header before pixels are
            decoded.

    Raises:
        InvalidImageError: unreadable, undecodable, truncated, too large, too small, too
            elongated, or in a format outside ``limits.formats``.
    """
    return _load(source, limits, None)


def resize_and_crop(img: Image.Image, pre: Preprocessing) -> Image.Image:
    """Step 2 of the contract: resize (shorter side or stretch), then centre-crop a square.

    Images over ``_EXACT_PIXELS`` resample only the crop (PIL's ``box``): the same result up
    to rounding, without ever holding the resized whole (a 50:1 panorama would be 50 crops).
    """
    side = int(pre.input_size)
    resample = _PIL_FILTERS[pre.interpolation]
    if pre.resize is ResizeMode.STRETCH:
        return img.resize((side, side), resample)
    if img.size[0] * img.size[1] > _EXACT_PIXELS:
        return img.resize((side, side), resample, box=_crop_box(img.size, pre),
                          reducing_gap=None)
    width, height = img.size
    short = max(side, round(side / pre.crop_pct))
    scale = short / min(width, height)
    new_w, new_h = max(side, round(width * scale)), max(side, round(height * scale))
    img = img.resize((new_w, new_h), resample, reducing_gap=None)
    left, top = (new_w - side) // 2, (new_h - side) // 2
    return img.crop((left, top, left + side, top + side))


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
    if images is None:
        raise InvalidImageError("preprocess() got None instead of a list of images; pass a list "
                                "(paths, bytes, file objects, PIL images or arrays).")
    if isinstance(images, (str, bytes, np.ndarray, Image.Image)) or hasattr(images, "read"):
        raise TypeError("preprocess() takes a sequence of images; wrap a single one in a list.")
    size = int(pre.input_size)
    nchw = Layout(layout) is Layout.NCHW
    out = np.empty((len(images), 3, size, size) if nchw else (len(images), size, size, 3),
                   dtype=np.float32)
    mean = np.asarray(pre.mean, np.float32) * 255.0
    inv_std = 1.0 / (np.asarray(pre.std, np.float32) * 255.0)
    # NHWC: one image row at a time against the constants tiled along it (a 3-long inner
    # broadcast is 4x slower); NCHW: straight into each channel plane (no transposed copy)
    row_mean, row_inv = np.tile(mean, size), np.tile(inv_std, size)
    for i, source in enumerate(images):
        try:
            img = _load(source, limits, pre)
        except InvalidImageError as exc:
            raise InvalidImageError(f"Image {first_index + i}: {exc}") from exc
        _normalise(np.asarray(img), out[i], mean, inv_std, row_mean, row_inv, nchw)
    return out


def _normalise(pixels: np.ndarray, out: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
               row_mean: np.ndarray, row_inv: np.ndarray, nchw: bool) -> None:
    """``out = (pixels - mean) * inv_std`` in float32, from (S, S, 3) uint8 RGB into ``out``:
    (3, S, S) when ``nchw``, else (S, S, 3). The same float32 operations in the same order as
    a broadcast over the last axis, so the same bits."""
    if nchw:
        for c in range(3):
            plane = out[c]
            np.subtract(pixels[:, :, c], mean[c], out=plane, dtype=np.float32)
            plane *= inv_std[c]
    else:
        rows = out.reshape(out.shape[0], -1)  # (S, 3S), a view of the contiguous image
        np.subtract(pixels.reshape(rows.shape), row_mean, out=rows, dtype=np.float32)
        rows *= row_inv
