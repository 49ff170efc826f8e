"""The device scorer: the folded numpy path equals the unfolded network on an engine, weights
reach the device verified, bad input is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from edgerec.runtimes import open_runtime
from edgerec.sdk import (
    ArtifactNotFoundError,
    Bundle,
    BundleIntegrityError,
    InferenceError,
    ModelError,
    Precision,
    Role,
    Scorer,
    ScorerMode,
)
from edgerec.sdk.bundle.writer import NewArtifact, NewWeights, write_bundle
from edgerec.sdk.scorer import MLP_WEIGHTS_FORMAT, MlpWeights, ScorerOptions


def _random_mlp(dim: int, hidden=(12, 6), seed=0) -> MlpWeights:
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.normal(size=shape).astype(np.float32) * 0.5

    dense, width = [], hidden[0]
    for h in (*hidden[1:], 1):
        dense.append((r(h, width), r(h)))
        width = h
    return MlpWeights(r(hidden[0], dim), r(hidden[0], dim), r(hidden[0], dim), r(hidden[0]),
                      r(dim), r(dim), r(dim), np.float32(0.3), tuple(dense))


def _unfolded(w: MlpWeights, x: np.ndarray) -> np.ndarray:
    """The plain network on (C, 3D) rows [u, v, u*v], float64."""
    x = x.astype(np.float64)
    w1 = np.concatenate([w.first_u, w.first_v, w.first_uv], axis=1).astype(np.float64)
    ws = np.concatenate([w.skip_u, w.skip_v, w.skip_uv]).astype(np.float64)
    h = np.maximum(x @ w1.T + w.first_b, 0)
    for i, (wt, b) in enumerate(w.dense):
        h = (np.maximum(h, 0) if i else h) @ wt.T.astype(np.float64) + b
    return h[:, 0] + x @ ws + float(w.skip_b)


def _onnx_of(w: MlpWeights, path) -> None:
    """The same network as an unfolded ONNX graph (MatMul/Add/Relu), input (C, 3D)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    d = w.dim
    inits = [numpy_helper.from_array(
        np.concatenate([w.first_u, w.first_v, w.first_uv], 1).T.copy(), "w0"),
        numpy_helper.from_array(w.first_b, "b0"),
        numpy_helper.from_array(np.concatenate([w.skip_u, w.skip_v, w.skip_uv])[:, None], "ws"),
        numpy_helper.from_array(np.asarray(w.skip_b, np.float32).reshape(1), "bs")]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["m0"]),
             helper.make_node("Add", ["m0", "b0"], ["h0"])]
    last = "h0"
    for i, (wt, b) in enumerate(w.dense, start=1):
        inits += [numpy_helper.from_array(wt.T.copy(), f"w{i}"),
                  numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Relu", [last], [f"r{i}"]),
                  helper.make_node("MatMul", [f"r{i}", f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"h{i}"])]
        last = f"h{i}"
    nodes += [helper.make_node("MatMul", ["x", "ws"], ["ms"]),
              helper.make_node("Add", ["ms", "bs"], ["hs"]),
              helper.make_node("Add", [last, "hs"], ["logits"])]
    graph = helper.make_graph(
        nodes, "scorer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3 * d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def scored(tiny_bundle, tmp_path_factory):
    """The tiny encoder + an MLP scorer as ONNX and as folded weights; (bundle, weights)."""
    root = tmp_path_factory.mktemp("scorer")
    w = _random_mlp(tiny_bundle.embedding_dim)
    _onnx_of(w, root / "scorer.onnx")
    w.save(root / "scorer.npz")
    with open_runtime(root / "scorer.onnx") as rt:
        scorer = NewArtifact(root / "scorer.onnx", Role.SCORER, Precision.FP32,
                             tuple(rt.input_specs()), tuple(rt.output_specs()), "logits")
    arts = [NewArtifact(tiny_bundle.artifact_path(a), a.role, a.precision, a.inputs, a.outputs,
                        a.output, a.layout, a.file, a.engine)
            for a in tiny_bundle.artifacts(Role.ENCODER)]
    bundle = write_bundle(
        root / "bundle", artifacts=[*arts, scorer], preprocessing=tiny_bundle.preprocessing,
        embedding_dim=tiny_bundle.embedding_dim, name="tiny+mlp",
        weights=[NewWeights(root / "scorer.npz", Role.SCORER, Precision.FP32,
                            MLP_WEIGHTS_FORMAT)])
    return bundle, w


def _vectors(n: int, d: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v[0], v[1:]


def test_folded_scores_equal_the_unfolded_network_and_the_engine(scored):
    bundle, w = scored
    u, items = _vectors(301, bundle.embedding_dim)
    x = np.concatenate([np.broadcast_to(u, items.shape), items, items * u], axis=1)
    reference = _unfolded(w, x)
    engine_options = ScorerOptions(mode="engine", num_threads=1)
    with Scorer.create_from_bundle(bundle) as folded, \
            Scorer.create_from_bundle(bundle, engine_options) as engine:
        assert folded.mode is ScorerMode.FOLDED and folded.key == "scorer/folded/fp32"
        assert engine.mode is ScorerMode.ENGINE and engine.key == "scorer/onnx/fp32"
        a, b = folded.score(u, items), engine.score(u, items)
    assert a.dtype == np.float32 and a.shape == (300,)
    np.testing.assert_allclose(a, reference, atol=1e-4)
    np.testing.assert_allclose(b, reference, atol=1e-4)


def test_an_engine_or_int8_request_takes_the_artifact(scored):
    bundle, _ = scored
    with Scorer.create_from_bundle(bundle, ScorerOptions(engine="onnx")) as s:
        assert s.mode is ScorerMode.ENGINE
    with pytest.raises(ArtifactNotFoundError, match="no scorer/onnx/int8"):
        Scorer.create_from_bundle(bundle, ScorerOptions(engine="onnx", precision="int8"))
    with pytest.raises(ArtifactNotFoundError, match="folded"):
        Scorer.create_from_bundle(bundle, ScorerOptions(precision="int8", mode="folded"))


def test_bad_shapes_and_values_raise_inference_error(scored):
    bundle, _ = scored
    d = bundle.embedding_dim
    for mode in ("folded", "engine"):
        with Scorer.create_from_bundle(bundle, ScorerOptions(mode=mode)) as s:
            with pytest.raises(InferenceError, match="user vector"):
                s.score(np.zeros(d + 1), np.zeros((3, d)))
            with pytest.raises(InferenceError, match="item vectors"):
                s.score(np.zeros(d), np.zeros((3, d - 1)))
            with pytest.raises(InferenceError):
                s.score(np.zeros(d), np.zeros(d))
            assert s.score(np.zeros(d), np.zeros((0, d))).shape == (0,)
        with pytest.raises(InferenceError, match="closed"):
            s.score(np.zeros(d), np.zeros((3, d)))
    with Scorer.create_from_bundle(bundle) as s, pytest.raises(InferenceError, match="NaN"):
        s.score(np.full(d, np.nan), np.zeros((3, d)))


def test_a_tampered_weights_file_is_refused(scored, tmp_path):
    bundle, _ = scored
    copy = tmp_path / "b"
    shutil.copytree(bundle.path, copy)
    loaded = Bundle.open(copy)  # verified now; the file changes afterwards
    weights = copy / loaded.weights()[0].file
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"Weights file scorer\.fp32\.npz"):
        Scorer.create_from_bundle(loaded)  # the bytes it parses are checked, not the old load
    with pytest.raises(BundleIntegrityError, match="does not match its sha256"):
        Bundle.open(copy)
    weights.unlink()
    with pytest.raises(BundleIntegrityError, match="missing"):
        Bundle.open(copy)


def test_a_scorer_model_swapped_after_open_is_refused_not_run(scored, tmp_path):
    bundle, _ = scored
    copy = tmp_path / "b"
    shutil.copytree(bundle.path, copy)
    loaded = Bundle.open(copy)
    model = copy / loaded.select(Role.SCORER).file
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleIntegrityError, match="does not match its sha256"):
        Scorer.create_from_bundle(loaded, ScorerOptions(mode="engine"))


def test_weights_are_listed_in_the_manifest_and_old_manifests_have_none(scored, tiny_bundle):
    bundle, _ = scored
    data = json.loads((bundle.path / "manifest.json").read_text())
    assert data["format_version"] == 1
    [entry] = data["weights"]
    assert entry["file"] == "scorer.fp32.npz" and entry["format"] == MLP_WEIGHTS_FORMAT
    assert entry["role"] == "scorer" and len(entry["sha256"]) == 64
    assert "weights" not in json.loads((tiny_bundle.path / "manifest.json").read_text())
    assert bundle.info()["weights"][0]["file"] == "scorer.fp32.npz"
    assert bundle.encoder_id == tiny_bundle.encoder_id  # a scorer does not change the encoder


def test_weights_that_are_not_plain_arrays_are_refused(tmp_path):
    import io

    buf = io.BytesIO()
    np.savez(buf, first_u=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelError, match=r"not a numeric \.npz"):
        MlpWeights.from_npz(buf.getvalue())
    with pytest.raises(ModelError, match=r"not a numeric \.npz"):
        MlpWeights.from_npz(b"not a zip file")
    good = _random_mlp(4).to_arrays()
    assert MlpWeights.from_arrays(good).dim == 4
    with pytest.raises(ModelError, match="first_v"):
        MlpWeights.from_arrays({**good, "first_v": good["first_v"][:, :3]})
    with pytest.raises(ModelError, match="dense_1_w"):
        MlpWeights.from_arrays({**good, "dense_1_w": np.zeros(3, np.float32)})
    with pytest.raises(ModelError, match="skip_b"):
        MlpWeights.from_arrays({k: v for k, v in good.items() if k != "skip_b"})


def test_a_bundle_without_weights_uses_the_engine(tiny_bundle):
    with pytest.raises(ArtifactNotFoundError, match="no fp32 scorer weights"):
        Scorer.create_from_bundle(tiny_bundle, ScorerOptions(mode="folded"))
