"""The teacher-feature cache: built in worker processes, reused, resumed, float teachers too."""

from __future__ import annotations

import json

import numpy as np
from conftest import TINY_ONNX, sample_images
from edgerec.export.data.views import VIEW_RECIPE, make_views
from edgerec.export.distill.cache import build_feature_cache
from edgerec.export.distill.teacher import Teacher
from edgerec.sdk import load_image


def _build(tmp_path, paths, **kw):
    teacher = Teacher.load(TINY_ONNX, tmp_path, mean=(0.5,) * 3, std=(0.25,) * 3)
    info = {"teacher_id": teacher.identity, "teacher_dim": teacher.dim,
            "teacher_size": teacher.input_size}
    teacher.close()
    return build_feature_cache(
        tmp_path / "cache", item_ids=[p.stem for p in paths], paths=paths,
        digests=[p.stem for p in paths], teacher_source=TINY_ONNX, student_size=24,
        views_per_item=2, view_fn=make_views, view_recipe=VIEW_RECIPE, workers=2, chunk=2,
        teacher_mean=(0.5,) * 3, teacher_std=(0.25,) * 3, **info, **kw)


def test_cache_holds_teacher_features_of_each_view_and_is_reused(tmp_path):
    paths = [p for p, _ in sample_images(1)][:5]
    cache = _build(tmp_path, paths)
    assert cache.views.shape == (10, 24, 24, 3) and cache.features.shape == (10, 16)
    teacher = Teacher.load(TINY_ONNX, tmp_path, mean=(0.5,) * 3, std=(0.25,) * 3)
    view0 = make_views(load_image(paths[0]), 1, 32, 0)
    expected = teacher.embed_views(view0)[0]
    teacher.close()
    np.testing.assert_allclose(np.asarray(cache.features[0], np.float32), expected, atol=2e-3)
    again = _build(tmp_path, paths)  # same key: reused, not rebuilt
    assert again.path == cache.path
    np.testing.assert_array_equal(np.asarray(again.features), np.asarray(cache.features))


def test_an_interrupted_build_resumes_from_where_it_stopped(tmp_path):
    paths = [p for p, _ in sample_images(1)][:6]
    full = _build(tmp_path / "a", paths)
    partial = _build(tmp_path / "b", paths)
    meta_path = partial.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["done"] = 2  # as if killed after the first chunk
    meta_path.write_text(json.dumps(meta))
    seen = []
    resumed = _build(tmp_path / "b", paths, progress=seen.append)
    assert seen[0] == 2 and seen[-1] == 6
    np.testing.assert_array_equal(np.asarray(resumed.views), np.asarray(full.views))
