"""subset_bundle: a smaller bundle with some of the artifacts, everything else carried over."""

import numpy as np
import pytest
from edgerec.sdk import Bundle, Encoder, EncoderOptions
from edgerec.sdk.bundle import subset_bundle
from edgerec.sdk.errors import BundleError


def test_a_subset_keeps_only_the_named_artifacts_and_embeds_the_same(tiny_bundle, tmp_path,
                                                                   jpeg_bytes):
    keys = sorted(a.key for a in tiny_bundle.artifacts())
    keep = [k for k in keys if "/onnx/" in k]
    small = subset_bundle(tiny_bundle, tmp_path / "small", keep)
    assert sorted(a.key for a in Bundle.open(small.path).artifacts()) == keep
    assert small.manifest.preprocessing == tiny_bundle.manifest.preprocessing
    assert small.manifest.metrics == tiny_bundle.manifest.metrics
    with Encoder.create_from_bundle(tiny_bundle, EncoderOptions(engine="onnx")) as a, \
            Encoder.create_from_bundle(small, EncoderOptions(engine="onnx")) as b:
        np.testing.assert_array_equal(a.embed([jpeg_bytes]), b.embed([jpeg_bytes]))


def test_a_subset_of_an_artifact_the_bundle_lacks_is_refused_naming_what_it_has(tiny_bundle,
                                                                              tmp_path):
    with pytest.raises(BundleError, match="encoder/onnx/fp32"):
        subset_bundle(tiny_bundle, tmp_path / "x", ["encoder/onnx/int8"])
    assert not (tmp_path / "x").exists()


def test_the_bundle_subset_command_writes_the_smaller_bundle(tiny_bundle, tmp_path):
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "edgerec.sdk.cli", "bundle", "subset",
                           str(tiny_bundle.path), "--keep", "encoder/tflite/fp32", "--out",
                           str(tmp_path / "lite"), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert [a["key"] for a in info["artifacts"]] == ["encoder/tflite/fp32"]
    bad = subprocess.run([sys.executable, "-m", "edgerec.sdk.cli", "bundle", "subset",
                          str(tiny_bundle.path), "--keep", "encoder/onnx/int8", "--out",
                          str(tmp_path / "no")], capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "encoder/onnx/fp32" in bad.stderr
