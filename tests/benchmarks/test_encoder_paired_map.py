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


def _run(tmp_path, *extra):
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "encoder_paired_map.py"), "--name",
         str(tmp_path / "paired"), "--a", str(TEACHER), "--b", str(STUDENT), "--resamples",
         "200", "--whole", "--", "--images", str(ROOT / "examples" / "sample"),
         "--items", str(ROOT / "examples" / "sample" / "items.csv"), *extra],
        capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.slow
def test_whole_adds_every_photo_of_an_unlabelled_export_as_the_catalog_split(tmp_path):
    done = _run(tmp_path, "--ignore-labels")
    assert done.returncode == 0, done.stderr
    splits = json.loads((tmp_path / "paired.json").read_text())["splits"]
    assert splits["catalog"]["queries"] > splits["seen"]["queries"] > 0
    assert "| catalog |" in (tmp_path / "paired.md").read_text()


def test_whole_refuses_a_labelled_export_whose_labels_it_would_measure(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 2 and "--whole measures an export without labels" in done.stderr
    assert not (tmp_path / "paired.json").exists()
