"""Augmented views of a photo: the crops that both the teacher and the student see.

View 0 is the device's own centre crop (:func:`edgerec.sdk.resize_and_crop`); views 1..n-1
are random ``torchvision.transforms.v2`` augmentations (:class:`AugmentOptions`), reproducible
from a seed.
"""

from __future__ import annotations

import threading
from dataclasses import astuple, dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import torch
from edgerec.sdk import ImageInput, Preprocessing, load_image, resize_and_crop
from torchvision.transforms import InterpolationMode, v2

__all__ = ["VIEW_RECIPE", "AugmentOptions", "make_views", "view_recipe"]


@dataclass(frozen=True)
class AugmentOptions:
    """The random views of :func:`make_views` (``torchvision.transforms.v2`` parameters).

    Attributes:
        scale: RandomResizedCrop's range of the crop's area, as a fraction of the image.
        ratio: RandomResizedCrop's range of the crop's aspect ratio.
        flip_p: probability of a horizontal flip.
        degrees: rotation drawn from [-degrees, degrees]; corners are filled with ``fill``.
        brightness, contrast, saturation, hue: ColorJitter's strengths.
        fill: grey level (0..255) of the corners that a rotation uncovers.
    """

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    degrees: float = 10.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hue: float = 0.02
    fill: int = 0


@lru_cache(maxsize=16)
def _augmenter(size: int, options: AugmentOptions) -> v2.Compose:
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=options.scale, ratio=options.ratio, antialias=True),
        v2.RandomHorizontalFlip(options.flip_p),
        v2.RandomRotation(options.degrees, interpolation=InterpolationMode.BILINEAR,
                          fill=options.fill),
        v2.ColorJitter(options.brightness, options.contrast, options.saturation, options.hue),
    ])


_RNG_LOCK = threading.Lock()


def make_views(
    image: ImageInput,
    n: int,
    size: int,
    seed: int,
    *,
    options: Optional[AugmentOptions] = None,
    preprocessing: Optional[Preprocessing] = None,
) -> np.ndarray:
    """``n`` views of one image for the teacher and the student.

    View 0 is the device's view: :func:`edgerec.sdk.resize_and_crop` with ``preprocessing``
    (default ``Preprocessing(input_size=size)``). Views 1..n-1 are random crops, flips,
    rotations and colour jitter (:class:`AugmentOptions`), drawn from ``seed`` alone: the same
    image, ``n``, ``size``, ``seed`` and options give the same bytes (torch's global RNG is
    forked and restored, under a lock, so callers' random state is untouched).

    Returns:
        uint8 array (n, size, size, 3), RGB.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    pre = preprocessing or Preprocessing(input_size=size)
    if int(pre.input_size) != size:
        raise ValueError(f"preprocessing.input_size is {pre.input_size} but size is {size}.")
    img = load_image(image)
    out = np.empty((n, size, size, 3), np.uint8)
    out[0] = np.asarray(resize_and_crop(img, pre))
    if n > 1:
        augment = _augmenter(size, options or AugmentOptions())
        with _RNG_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for k in range(1, n):
                out[k] = np.asarray(augment(img))
    return out


def view_recipe(options: Optional[AugmentOptions] = None) -> str:
    """A string naming the view recipe, for cache keys: it changes whenever the options do."""
    return "views-v2|" + ",".join(str(v) for v in astuple(options or AugmentOptions()))


VIEW_RECIPE = view_recipe()
