"""`similar()` scores are cosines in [-1, 1], also for a photo against its own quantized copy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_images
from edgerec.sdk import Recommender, SourceItem, build_catalog


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_a_self_match_scores_at_most_one_and_the_order_is_the_searchs(
        teacher_bundle, tmp_path, dtype):
    photos = sample_images(3)
    build_catalog(teacher_bundle, tmp_path / "cat",
                  [SourceItem(p.stem, p, {"label": label}) for p, label in photos], dtype=dtype)
    with Recommender.create_from_bundle(teacher_bundle, tmp_path / "cat") as rec:
        vectors = rec.encoder().embed([p for p, _ in photos])
        raw = [rec.catalog.search(v, 5) for v in vectors]
        assert max(float(m.scores[0]) for m in raw) > 1.0  # the quantized copy overshoots
        for (photo, _), matches in zip(photos, raw):
            recs = rec.similar(photo, k=5)
            assert recs.ids == list(matches.ids) and recs.ids[0] == photo.stem
            assert all(-1.0 <= s <= 1.0 for s in recs.scores)
            np.testing.assert_allclose(recs.scores, np.clip(matches.scores, -1, 1))
            assert 0.99 <= recs[0].score <= 1.0


def test_excluding_the_query_photos_own_id_leaves_it_out(teacher_bundle, tmp_path):
    photos = sample_images(3)
    build_catalog(teacher_bundle, tmp_path / "cat",
                  [SourceItem(p.stem, p, {"label": label}) for p, label in photos])
    photo = photos[4][0]
    with Recommender.create_from_bundle(teacher_bundle, tmp_path / "cat") as rec:
        recs = rec.similar(photo, k=3, exclude=[photo.stem])
    assert photo.stem not in recs.ids and len(recs) == 3
