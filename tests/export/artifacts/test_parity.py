"""Parity of one encoder's embeddings with another's (edgerec.export.artifacts.parity).

Named ``test_parity_report`` because ``tests/runtimes/test_parity.py`` already uses the module
name ``test_parity`` (tests are collected without package ``__init__`` files).
"""

import numpy as np
import pytest
import torch
from conftest import TINY_ONNX, TINY_TFLITE
from edgerec.export.artifacts.parity import (
    ParityReport,
    artifact_embeddings,
    neighbour_overlap,
    parity,
    torch_embeddings,
)
from edgerec.sdk.evaluation.retrieval import label_retrieval


def _at(degrees, scale=1.0):
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return (scale * np.stack([np.cos(rad), np.sin(rad)], axis=1)).astype(np.float32)


# Four 2-d unit vectors at these angles (no ties between neighbours):
#   reference: a 0°, b 80°, c 30°, d 180°  -> nearest other: a:c, b:c, c:a, d:b
#   candidate: a 0°, b 55°, c 30°, d 170°  -> nearest other: a:c, b:c, c:b, d:b
REF, CAND = [0, 80, 30, 180], [0, 55, 30, 170]


def test_cosines_are_computed_per_row_after_normalising():
    report = parity(_at(REF, 0.5), _at(CAND, 3.0), k=1)
    cosines = np.cos(np.deg2rad([0, 25, 0, 10]))
    assert report.n == 4 and report.k == 1
    assert report.cosine_mean == pytest.approx(cosines.mean(), abs=1e-6)
    assert report.cosine_min == pytest.approx(np.cos(np.deg2rad(25)), abs=1e-6)


def test_neighbour_overlap_counts_shared_nearest_neighbours():
    # three of the four queries keep their nearest neighbour (c loses a for b)
    assert parity(_at(REF), _at(CAND), k=1).neighbour_overlap == pytest.approx(0.75)
    # with k=2 every query keeps both of its neighbours
    #   ref top-2: a:{c,b} b:{c,a} c:{a,b} d:{b,c};  cand: a:{c,b} b:{c,a} c:{b,a} d:{b,c}
    assert parity(_at(REF), _at(CAND), k=2).neighbour_overlap == pytest.approx(1.0)


def test_neighbour_overlap_compares_spaces_of_different_dimensions():
    # the reference in 2-d, the candidate the same points embedded in 5-d and rotated
    ref = _at(REF)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    lifted = np.hstack([ref, np.zeros((4, 3), np.float32)]) @ q.astype(np.float32)
    assert neighbour_overlap(ref, lifted, k=1) == 1.0
    assert neighbour_overlap(_at(REF), _at(CAND), k=1) == pytest.approx(0.75)
    assert neighbour_overlap(ref, lifted, k=10) == 1.0  # k capped at N - 1
    with pytest.raises(ValueError, match="same N"):
        neighbour_overlap(ref, lifted[:3])


def test_map_ratio_compares_same_label_retrieval_of_both():
    labels = ["x", "y", "x", "y"]
    report = parity(_at(REF), _at(CAND), labels, k=1)
    # reference hits: a->c yes, b->c no, c->a yes, d->b yes; candidate: c->b is now a miss
    assert report.map_reference == pytest.approx(0.75)
    assert report.map_candidate == pytest.approx(0.5)
    assert report.map_ratio == pytest.approx(0.5 / 0.75)
    assert report.map_reference == label_retrieval(_at(REF), labels, 1).map_at_k


def test_identical_embeddings_are_in_perfect_parity():
    x = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    labels = np.arange(30) % 3
    report = parity(x, x * 2.0, labels)
    assert report.cosine_mean == pytest.approx(1.0, abs=1e-6)
    assert report.cosine_min == pytest.approx(1.0, abs=1e-6)
    assert report.neighbour_overlap == 1.0 and report.map_ratio == pytest.approx(1.0)


def test_without_labels_there_is_no_map_and_k_is_capped():
    report = parity(_at(REF), _at(CAND))
    assert report.k == 3 and report.neighbour_overlap == 1.0  # all other items are neighbours
    assert report.map_ratio is report.map_reference is report.map_candidate is None
    assert set(report.to_dict()) == {"n", "k", "cosine_mean", "cosine_min", "neighbour_overlap",
                                     "map_reference", "map_candidate", "map_ratio"}
    assert "cosine mean=" in repr(report)


@pytest.mark.parametrize(("ref", "cand", "labels"), [
    (np.zeros((4, 2)), np.zeros((4, 3)), None),
    (np.zeros((1, 2)), np.zeros((1, 2)), None),
    (np.ones((4, 2)), np.ones((4, 2)), ["a", "b"]),
])
def test_mismatched_inputs_are_rejected(ref, cand, labels):
    with pytest.raises(ValueError):
        parity(ref, cand, labels)


def test_artifact_embeddings_feed_nchw_images_to_onnx_and_nhwc_models_alike():
    images = np.random.default_rng(1).normal(size=(5, 3, 32, 32)).astype(np.float32)
    a = artifact_embeddings(TINY_ONNX, images, batch_size=2)
    b = artifact_embeddings(TINY_TFLITE, images, batch_size=2)
    assert a.shape == b.shape == (5, 16) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
    assert isinstance(parity(a, b), ParityReport)


def test_torch_embeddings_run_in_eval_mode_and_restore_the_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.9), torch.nn.Linear(12, 4))
    model.train()
    images = np.ones((3, 3, 2, 2), np.float32)
    out = torch_embeddings(model, images, batch_size=2)
    assert out.shape == (3, 4) and model.training
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)  # dropout was off
