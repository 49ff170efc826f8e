"""Views: deterministic, view 0 is the device crop, augmentations differ."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import sample_images
from edgerec.export.data.views import VIEW_RECIPE, AugmentOptions, make_views, view_recipe
from edgerec.sdk import Preprocessing, load_image, resize_and_crop
from PIL import Image


def _photos(n):
    return [p for p, _ in sample_images(1)][:n]


def test_views_are_deterministic_for_a_seed() -> None:
    path = _photos(1)[0]
    state = torch.get_rng_state()
    views = make_views(path, 4, 96, seed=11)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert views.shape == (4, 96, 96, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views, make_views(io.BytesIO(path.read_bytes()), 4, 96, 11))
    assert not np.array_equal(views[1:], make_views(path, 4, 96, seed=12)[1:])


def test_view_zero_is_the_device_crop_and_the_others_differ() -> None:
    path = _photos(2)[1]
    views = make_views(path, 3, 128, seed=0)
    device = np.asarray(resize_and_crop(load_image(path), Preprocessing(input_size=128)))
    np.testing.assert_array_equal(views[0], device)
    for view in views[1:]:
        assert np.abs(view.astype(np.int16) - device).mean() > 5
    np.testing.assert_array_equal(make_views(Image.open(path), 1, 128, seed=5)[0], device)
    with pytest.raises(ValueError, match="input_size"):
        make_views(path, 2, 128, 0, preprocessing=Preprocessing(input_size=96))


def test_recipe_name_changes_with_the_options() -> None:
    assert VIEW_RECIPE == view_recipe() != view_recipe(AugmentOptions(degrees=5.0))
