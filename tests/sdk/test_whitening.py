"""Encoder whitening: the transform, its file, and the Encoder applying it on real engines."""

import io
import json

import numpy as np
import pytest
from conftest import sample_images
from edgerec.sdk import (
    Bundle,
    BundleError,
    BundleIntegrityError,
    Encoder,
    EncoderOptions,
    Engine,
    ModelError,
    Precision,
    Role,
    Whitening,
)
from edgerec.sdk.bundle.manifest import WHITENING_FORMAT
from edgerec.sdk.bundle.writer import NewArtifact, NewWeights, write_bundle


def _anisotropic(n: int = 2000, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10.0, 0.1, d)
    return (rng.normal(size=(n, d)) * scales + 3.0).astype(np.float32)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_full_whitening_makes_the_training_covariance_the_identity():
    z = _anisotropic()
    w = Whitening.fit(z, power=1.0)
    y = (_unit(z) - w.mean) @ w.projection
    np.testing.assert_allclose(np.cov(y.T), np.eye(z.shape[1]), atol=1e-2)


def test_power_zero_only_centres_and_rotates():
    z = _anisotropic()
    w = Whitening.fit(z, power=0.0)
    centred = _unit(_unit(z) - w.mean)
    out = w.apply(z)
    np.testing.assert_allclose(out @ out.T, centred @ centred.T, atol=1e-4)


def test_half_power_shrinks_the_variance_spread_between_none_and_full():
    z = _anisotropic()

    def spread(power):
        w = Whitening.fit(z, power)
        var = np.var((_unit(z) - w.mean) @ w.projection, axis=0)
        return var.max() / var.min()

    assert spread(0.0) > spread(0.5) > spread(1.0)
    assert spread(1.0) < 1.1


def _labelled(n: int = 3000, d: int = 12, seed: int = 0):
    """Three labels apart along axis 0; inside a label the variance falls 100-fold over the
    other axes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) * np.geomspace(3.0, 0.03, d)
    x[:, 0] = labels * 4.0 + rng.normal(size=n) * 0.1
    return (x + 5.0).astype(np.float32), labels


def _within_cov(y, labels):
    dev = np.concatenate([y[labels == k] - y[labels == k].mean(0) for k in np.unique(labels)])
    return dev.T @ dev / len(dev)


def test_within_label_whitening_makes_the_spread_inside_labels_the_identity():
    z, labels = _labelled()
    w = Whitening.fit(z, power=1.0, labels=labels)
    assert w.within_labels and not Whitening.fit(z, 1.0).within_labels
    y = (_unit(z) - w.mean) @ w.projection
    np.testing.assert_allclose(_within_cov(y, labels), np.eye(z.shape[1]), atol=1e-2)
    # the total covariance is not the identity: what separates the labels stays large
    assert np.cov(y.T).max() > 2


def test_within_label_whitening_skips_unlabelled_rows_and_single_row_labels():
    z, labels = _labelled()
    noisy = np.concatenate([z, np.random.default_rng(1).normal(size=(50, z.shape[1])) * 40])
    marked = np.concatenate([labels, np.full(49, -1), [7]])  # 49 unlabelled and one singleton
    a = Whitening.fit(noisy, 1.0, labels=marked)
    b = Whitening.fit(z, 1.0, labels=labels)
    # the same within-label variances; only the centring mean sees the extra rows
    np.testing.assert_allclose(np.abs(a.projection), np.abs(b.projection), rtol=1e-3, atol=1e-3)
    assert not np.allclose(a.mean, b.mean)


@pytest.mark.parametrize("labels, message", [
    (np.zeros(5, int), r"\(N,\)"), (np.arange(6), "at least 2 rows"),
    (np.array(list("aabbcc")), "ints"),
])
def test_within_label_fit_refuses_unusable_labels(labels, message):
    z, _ = _labelled(n=6)
    with pytest.raises(ValueError, match=message):
        Whitening.fit(z, 0.5, labels=labels)


def test_apply_returns_unit_float32_rows():
    z = _anisotropic()
    out = Whitening.fit(z, 0.5).apply(z[:10])
    assert out.dtype == np.float32 and out.shape == (10, z.shape[1])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_fewer_rows_than_dimensions_still_gives_finite_vectors():
    z = _anisotropic(n=5, d=32)
    out = Whitening.fit(z, 1.0).apply(z)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("power", [-0.1, 1.5])
def test_fit_refuses_a_power_outside_0_1(power):
    with pytest.raises(ValueError, match="power"):
        Whitening.fit(_anisotropic(), power)


def test_fit_refuses_one_row_or_nan():
    with pytest.raises(ValueError, match="rows"):
        Whitening.fit(np.ones((1, 4), np.float32), 0.5)
    bad = _anisotropic()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        Whitening.fit(bad, 0.5)


def test_save_and_load_round_trip(tmp_path):
    w = Whitening.fit(_anisotropic(), 0.5)
    w.save(tmp_path / "w.npz")
    back = Whitening.from_npz((tmp_path / "w.npz").read_bytes())
    assert back.power == 0.5
    np.testing.assert_array_equal(back.mean, w.mean)
    np.testing.assert_array_equal(back.projection, w.projection)


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("data, message", [
    (b"not a zip file", r"not a numeric \.npz"),
    (_npz(mean=np.zeros(4, np.float32), projection=np.eye(4, dtype=np.float32)), "power"),
    (_npz(mean=np.zeros(4, np.float32), projection=np.eye(3, dtype=np.float32),
          power=np.float32(0.5)), "shapes"),
    (_npz(mean=np.full(4, np.nan, np.float32), projection=np.eye(4, dtype=np.float32),
          power=np.float32(0.5)), "finite"),
    (_npz(mean=np.array(["a", "b"]), projection=np.eye(2, dtype=np.float32),
          power=np.float32(0.5)), "finite floats"),
])
def test_a_damaged_whitening_file_raises_model_error(data, message):
    with pytest.raises(ModelError, match=message):
        Whitening.from_npz(data)


def test_a_pickled_object_array_is_refused_not_unpickled():
    data = _npz(mean=np.array([{"x": 1}], dtype=object), projection=np.eye(1, dtype=np.float32),
                power=np.float32(0.5))
    with pytest.raises(ModelError, match=r"not a numeric \.npz"):
        Whitening.from_npz(data)


# ---- the Encoder applies a bundle's whitening, on both real engines ----

def _rebundle(bundle: Bundle, out, weights=()) -> Bundle:
    arts = [NewArtifact(source=bundle.artifact_path(a), role=a.role, precision=a.precision,
                        inputs=a.inputs, outputs=a.outputs, output=a.output, layout=a.layout,
                        engine=a.engine, file=a.file) for a in bundle.artifacts()]
    return write_bundle(out, artifacts=arts, preprocessing=bundle.preprocessing,
                        embedding_dim=bundle.embedding_dim, weights=weights)


@pytest.fixture(scope="module")
def whitened(tiny_bundle, tmp_path_factory):
    """(plain bundle, bundle with whitening, the whitening) from the tiny fixture network."""
    paths = [p for p, _ in sample_images(10)]
    with Encoder.create_from_bundle(tiny_bundle) as enc:
        whitening = Whitening.fit(enc.embed(paths), 0.5)
    root = tmp_path_factory.mktemp("whitened")
    whitening.save(root / "w.npz")
    bundle = _rebundle(tiny_bundle, root / "bundle", [NewWeights(
        source=root / "w.npz", role=Role.ENCODER, precision=Precision.FP32,
        format=WHITENING_FORMAT, file="encoder.whitening.npz")])
    return tiny_bundle, bundle, whitening


@pytest.mark.parametrize("engine", [Engine.ONNX, Engine.TFLITE])
def test_the_encoder_whitens_what_the_engine_outputs(whitened, engine):
    plain, bundle, whitening = whitened
    paths = [p for p, _ in sample_images(2)]
    options = EncoderOptions(engine=engine)
    with Encoder.create_from_bundle(plain, options) as a, \
            Encoder.create_from_bundle(bundle, options) as b:
        assert a.whitening is None and b.whitening is not None
        raw, out = a.embed(paths), b.embed(paths)
    np.testing.assert_allclose(out, whitening.apply(raw), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.abs(out - raw).max() > 0.05  # it really changed the vectors


def test_a_whitened_bundle_is_format_2_with_its_own_encoder_id(whitened):
    plain, bundle, _ = whitened
    assert plain.manifest.format_version == 1 and bundle.manifest.format_version == 2
    assert bundle.encoder_id != plain.encoder_id  # catalogs keep the two apart
    assert bundle.weights(Role.ENCODER)[0].file == "encoder.whitening.npz"


def test_an_edgerec_that_reads_only_format_1_refuses_the_whitened_bundle(whitened, tmp_path,
                                                                         monkeypatch):
    from edgerec.sdk.bundle import manifest as manifest_module

    monkeypatch.setattr(manifest_module, "FORMAT_VERSION", 1)
    with pytest.raises(BundleError, match="upgrade edgerec"):
        Bundle.open(whitened[1].path)


def test_a_tampered_whitening_file_fails_verification(whitened, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(whitened[1].path, copy)
    target = copy / "encoder.whitening.npz"
    target.write_bytes(target.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleIntegrityError, match=r"encoder\.whitening\.npz"):
        Bundle.open(copy)


def test_an_unknown_encoder_weights_format_asks_to_upgrade(whitened, tmp_path):
    plain, _, whitening = whitened
    whitening.save(tmp_path / "w.npz")
    bundle = _rebundle(plain, tmp_path / "bundle", [NewWeights(
        source=tmp_path / "w.npz", role=Role.ENCODER, precision=Precision.FP32,
        format="edgerec.encoder.whitening/99")])
    with pytest.raises(ModelError, match="upgrade edgerec"):
        Encoder.create_from_bundle(bundle)


def test_whitening_of_another_dimension_is_refused(whitened, tmp_path):
    plain = whitened[0]
    other = Whitening.fit(_anisotropic(d=plain.embedding_dim + 1), 0.5)
    other.save(tmp_path / "w.npz")
    bundle = _rebundle(plain, tmp_path / "bundle", [NewWeights(
        source=tmp_path / "w.npz", role=Role.ENCODER, precision=Precision.FP32,
        format=WHITENING_FORMAT)])
    with pytest.raises(ModelError, match="-d"):
        Encoder.create_from_bundle(bundle)
    assert json.loads((bundle.path / "manifest.json").read_text())["format_version"] == 2
