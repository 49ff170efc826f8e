"""benchmarks/encoder_paired_map.py: two real encoders on the sample's held-out photos, paired
per query."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

TEACHER = ROOT / "examples" / "sample" / "teacher" / \
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
STUDENT = ROOT / "examples" / "models" / "clothing-student"


@pytest.mark.slow
def test_the_margin_is_the_paired_difference_of_the_two_encoders_maps(tmp_path):
    out = tmp_path / "paired"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "encoder_paired_map.py"), "--name", str(out),
         "--a", str(TEACHER), "--a-label", "teacher", "--b", str(STUDENT), "--b-label",
         "student", "--b-precision", "int8", "--resamples", "200", "--",
         "--images", str(ROOT / "examples" / "sample"),
         "--items", str(ROOT / "examples" / "sample" / "items.csv")],
        check=True, capture_output=True, text=True, cwd=tmp_path)
    result = json.loads(out.with_suffix(".json").read_text())
    seen = result["splits"]["seen"]
    assert seen["images"] == seen["queries"] > 0
    maps, margin = seen["map@10"], seen["b_minus_a"]
    assert margin["mean"] == pytest.approx(maps["b"] - maps["a"])
    assert margin["low"] <= margin["mean"] <= margin["high"]
    assert seen["b_wins_queries"] + seen["a_wins_queries"] <= seen["queries"]
    assert "| seen |" in out.with_suffix(".md").read_text()
    assert not (ROOT / "build" / "paired-map-unused").exists()
