"""The teacher bundle on real photos: deterministic, unit-norm, meaningful, batch-invariant."""

import io

import numpy as np
import pytest
from conftest import SHARED, TEACHER, sample_images
from edgerec.sdk import (
    ArtifactNotFoundError,
    Encoder,
    EncoderOptions,
    Engine,
    InvalidImageError,
    Precision,
    load_image,
)
from edgerec.sdk.evaluation.retrieval import label_retrieval


@pytest.fixture(scope="module")
def teacher(teacher_bundle):
    with Encoder.create_from_bundle(teacher_bundle, EncoderOptions(num_threads=2)) as enc:
        yield enc


@pytest.fixture(scope="module")
def sample_vectors(teacher):
    items = sample_images()
    return teacher.embed([p for p, _ in items]), [label for _, label in items]


def test_teacher_embeddings_are_unit_norm_1024d_float32(sample_vectors):
    vectors, _ = sample_vectors
    assert vectors.shape == (200, 1024) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embeddings_are_deterministic(teacher, sample_vectors):
    paths = [p for p, _ in sample_images(1)]
    np.testing.assert_array_equal(teacher.embed(paths), teacher.embed(paths))
    np.testing.assert_allclose(teacher.embed(paths), sample_vectors[0][::20], atol=1e-6)


def test_same_label_neighbours_beat_chance(sample_vectors):
    vectors, labels = sample_vectors
    report = label_retrieval(vectors, labels, k=10)
    chance = 19 / 199  # 19 other items of the same label among 199
    assert report.precision_at_k > 2.5 * chance, report


def test_a_batch_of_8_equals_8_singles(teacher_bundle):
    paths = [p for p, _ in sample_images(1)][:8]
    with Encoder.create_from_bundle(teacher_bundle, EncoderOptions(batch_size=8)) as enc:
        batch = enc.embed(paths)
        singles = np.stack([enc.embed_one(p) for p in paths])
    np.testing.assert_allclose(batch, singles, atol=1e-6)


def test_raw_pixel_contract_feeds_the_teacher_exactly_the_pixels(teacher):
    path = sample_images(1)[0][0]
    img = load_image(path)
    w, h = img.size
    s = 224 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), resample=2, reducing_gap=None)
    left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
    pixels = np.asarray(img.crop((left, top, left + 224, top + 224)))[None]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(TEACHER))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], pixels)
    it.invoke()
    out = it.get_output_details()[0]
    raw = (it.get_tensor(out["index"]).astype(np.float32).reshape(-1)) * out["quantization"][0]
    np.testing.assert_allclose(teacher.embed_one(path), raw / np.linalg.norm(raw), atol=1e-6)


def test_all_input_kinds_embed_the_same(teacher):
    path = sample_images(1)[0][0]
    data = path.read_bytes()
    kinds = [path, data, io.BytesIO(data), load_image(path), np.asarray(load_image(path))]
    vectors = teacher.embed(kinds)
    np.testing.assert_allclose(vectors, np.repeat(vectors[:1], 5, axis=0), atol=1e-6)


def test_a_bad_image_in_a_batch_is_named_by_its_index(teacher_bundle):
    paths = [p for p, _ in sample_images(1)][:3]
    enc = Encoder.create_from_bundle(teacher_bundle, EncoderOptions(batch_size=2))
    with enc, pytest.raises(InvalidImageError, match="Image 3: "):
        enc.embed([*paths, b"not an image"])


def test_an_empty_list_embeds_to_an_empty_matrix(teacher):
    assert teacher.embed([]).shape == (0, 1024)


def test_asking_for_an_artifact_the_bundle_lacks_says_what_it_has(teacher_bundle):
    with pytest.raises(ArtifactNotFoundError, match="encoder/tflite/int8"):
        Encoder.create_from_bundle(teacher_bundle, EncoderOptions(engine=Engine.ONNX))
    with pytest.raises(ArtifactNotFoundError):
        Encoder.create_from_bundle(teacher_bundle, EncoderOptions(precision=Precision.FP32))


def test_encoder_picks_each_engine_of_a_two_engine_bundle(tiny_bundle):
    paths = [p for p, _ in sample_images(1)]
    vectors = {}
    for engine in Engine:
        with Encoder.create_from_bundle(tiny_bundle, EncoderOptions(engine=engine)) as enc:
            assert enc.engine is engine and enc.dim == 16
            vectors[engine] = enc.embed(paths)
    np.testing.assert_allclose(vectors[Engine.ONNX], vectors[Engine.TFLITE], atol=1e-5)


def test_close_is_idempotent_and_single_image_input_is_refused(teacher_bundle):
    enc = Encoder.create_from_bundle_path(teacher_bundle.path)
    with pytest.raises(TypeError, match="embed_one"):
        enc.embed(str(sample_images(1)[0][0]))
    enc.close()
    enc.close()


@pytest.mark.skipif(not (SHARED / "data" / "clothing-extra").is_dir(), reason="needs ../shared")
@pytest.mark.slow
def test_teacher_reproduces_the_published_unseen_label_figures(teacher):
    """../shared/data/clothing-extra/README.md: teacher mAP@10 0.422, P@10 0.530 on unseen."""
    root = SHARED / "data" / "clothing-extra" / "unseen"
    paths = sorted(root.glob("*/*.jpg"))
    report = label_retrieval(teacher.embed(paths), [p.parent.name for p in paths], k=10)
    assert report.map_at_k == pytest.approx(0.422, abs=0.002)
    assert report.precision_at_k == pytest.approx(0.530, abs=0.002)



def test_none_instead_of_a_list_is_an_invalid_image_error(teacher):
    with pytest.raises(InvalidImageError, match="None"):
        teacher.embed(None)  # type: ignore[arg-type]


def test_an_h_w_1_array_embeds_like_the_h_w_array(teacher):
    grey = np.asarray(load_image(sample_images(1)[0][0]).convert("L"))
    vectors = teacher.embed([grey, grey[..., None]])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
