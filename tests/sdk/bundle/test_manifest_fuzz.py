"""Property-based fuzzing of manifests (issue 16): a real bundle's manifest with random values
put anywhere in its tree, keys dropped, ``encoder_id`` recomputed (an attacker can do that
too) or not, and its bytes then mutated. ``Bundle.open`` either refuses it with a BundleError,
or the bundle it opens gives an Encoder that embeds a photo to a unit vector or raises an
EdgeRecError; nothing else ever escapes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgerec.sdk import Bundle, BundleError, EdgeRecError, Encoder, EncoderOptions, Engine
from edgerec.sdk.bundle.manifest import ArtifactSpec, Preprocessing, WeightsSpec, compute_encoder_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

IMAGE = np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 1, 2, 3, 16, 10**12, 2**63])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", ".", "..", "/etc/passwd", "a\x00b", "\ud800.onnx", "x" * 300,
                      "encoder.fp32.onnx", "manifest.json", "onnx", "tflite", "fp32", "int8",
                      "encoder", "scorer", "nchw", "nhwc", "bicubic", "stretch", "image",
                      "embedding"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(root: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


def _rehash(data: Any) -> None:
    """Recompute encoder_id the way an attacker who edited the manifest would."""
    try:
        pre = Preprocessing.from_dict(data["preprocessing"])
        arts = [ArtifactSpec.from_dict(a) for a in data["artifacts"]]
        weights = [WeightsSpec.from_dict(w) for w in data.get("weights") or []]
        data["encoder_id"] = compute_encoder_id(pre, arts, weights)
    except Exception:  # what cannot be parsed cannot be rehashed; the reader will refuse it
        pass


@st.composite
def manifests(draw: st.DrawFn, base: dict) -> bytes:
    data = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(data)))
        data = _set(data, path, draw(json_values), draw(st.booleans()))
    if draw(st.booleans()):
        _rehash(data)
    text = json.dumps(data).encode()
    for _ in range(draw(st.integers(0, 2))):  # byte-level damage too, now and then
        pos = draw(st.integers(0, max(len(text) - 1, 0)))
        text = text[:pos] + draw(st.binary(max_size=3)) + text[pos + 1:]
    return text


@pytest.fixture(scope="module")
def fuzz_dir(tiny_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(tiny_bundle.path, out)
    return out


def _base(fuzz_dir: Path) -> dict:
    return json.loads((fuzz_dir / "manifest.json").read_text())


def check_manifest(root: Path, text: bytes, engine: Engine) -> str:
    """The property: BundleError at open, or an Encoder that embeds a photo to a unit vector
    or raises an EdgeRecError. Returns which."""
    (root / "manifest.json").write_bytes(text)
    try:
        bundle = Bundle.open(root)
    except BundleError:
        return "refused"
    json.dumps(bundle.info(), default=str)
    try:
        with Encoder.create_from_bundle(bundle, EncoderOptions(engine=engine,
                                                               num_threads=1)) as enc:
            vectors = enc.embed([IMAGE])
    except EdgeRecError:
        return "opened, encoder refused"
    assert vectors.shape == (1, bundle.embedding_dim) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    return "embedded"


def test_manifest_fuzzing_finds_only_edgerec_errors(fuzz_dir):
    base = _base(fuzz_dir)
    outcomes: dict[str, int] = {}

    @FUZZ
    @given(manifests(base), st.sampled_from(list(Engine)))
    def check(text: bytes, engine: Engine) -> None:
        outcome = check_manifest(fuzz_dir, text, engine)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    try:
        check()
    finally:
        (fuzz_dir / "manifest.json").write_text(json.dumps(base))
    assert outcomes.get("refused") and outcomes.get("embedded"), outcomes  # both sides reached
