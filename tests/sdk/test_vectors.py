"""Vector helpers: cosine similarity (one, batches, int8) and int8 embedding output, checked on
hand-computed values and on real embeddings of the sample photos."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_images
from edgerec.sdk import (
    Encoder,
    EncoderOptions,
    cosine_similarity,
    dequantize_embedding,
    quantize_embedding,
)


@pytest.fixture(scope="module")
def embeddings(teacher_bundle):
    options = EncoderOptions(num_threads=1, use_device_profile=False)
    with Encoder.create_from_bundle(teacher_bundle, options) as encoder:
        return encoder.embed([p for p, _ in sample_images(2)])


def test_cosine_similarity_of_two_vectors_is_a_float_in_range():
    assert cosine_similarity(np.array([1.0, 0.0]), np.array([0.0, 2.0])) == 0.0
    assert cosine_similarity(np.array([3.0, 4.0]), np.array([6.0, 8.0])) == pytest.approx(1.0)
    assert cosine_similarity(np.array([1.0, 1.0]), np.array([-1.0, -1.0])) == pytest.approx(-1)
    v = np.array([0.6, 0.8], np.float32)
    value = cosine_similarity(v, v)
    assert isinstance(value, float) and value <= 1.0


def test_cosine_similarity_takes_batches_either_way_round():
    a = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [0.0, -3.0]])
    np.testing.assert_allclose(cosine_similarity(a, b),
                               [[1, 0], [0, -1], [2 ** -0.5, -(2 ** -0.5)]], atol=1e-12)
    np.testing.assert_allclose(cosine_similarity(a, b[0]), [1, 0, 2 ** -0.5])
    np.testing.assert_allclose(cosine_similarity(b[1], a), [0, -1, -(2 ** -0.5)])


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.ones(3), np.ones(4), "different dimensions: 3 and 4"),
    (np.zeros(3), np.ones(3), "zero a"),
    (np.ones((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]), r"zero b \(row 1\)"),
    (np.array([1.0, np.nan]), np.ones(2), "NaN"),
    (np.ones((1, 2, 3)), np.ones(3), r"\(D,\) or a batch"),
    (np.array(["a", "b"]), np.ones(2), "must hold numbers"),
])
def test_cosine_similarity_refuses_what_has_no_cosine(a, b, message):
    with pytest.raises(ValueError, match=message):
        cosine_similarity(a, b)


def test_real_embeddings_compare_like_their_inner_products(embeddings):
    sims = cosine_similarity(embeddings, embeddings)
    np.testing.assert_allclose(sims, np.clip(embeddings @ embeddings.T, -1, 1), atol=1e-5)
    assert np.all(np.diag(sims) <= 1.0) and np.allclose(np.diag(sims), 1.0, atol=1e-5)


def test_int8_embeddings_come_back_as_unit_vectors_of_the_same_direction(embeddings):
    codes = quantize_embedding(embeddings)
    assert codes.dtype == np.int8 and codes.shape == embeddings.shape
    assert (np.abs(codes).max(axis=1) == 127).all()  # each row uses the whole int8 range
    back = dequantize_embedding(codes)
    assert back.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)
    assert (np.sum(back * embeddings, axis=1) > 0.9999).all()
    np.testing.assert_array_equal(quantize_embedding(back), codes)


def test_int8_embeddings_keep_cosines_within_0_005(embeddings):
    exact = cosine_similarity(embeddings, embeddings)
    codes = quantize_embedding(embeddings)
    assert np.abs(cosine_similarity(codes, codes) - exact).max() < 0.005
    assert np.abs(cosine_similarity(codes, embeddings) - exact).max() < 0.005


def test_quantize_embedding_scales_each_row_and_refuses_codes():
    np.testing.assert_array_equal(
        quantize_embedding(np.array([[-0.5, 0.0, 0.25, 0.5], [0.0, 0.0, 0.0, 0.0]])),
        np.array([[-127, 0, 64, 127], [0, 0, 0, 0]], np.int8))
    np.testing.assert_array_equal(dequantize_embedding(np.zeros(3, np.int8)), np.zeros(3))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_embedding(np.array([1, 2], np.int8))
    with pytest.raises(ValueError, match="int8 codes"):
        dequantize_embedding(np.array([0.5]))
