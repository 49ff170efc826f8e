"""The MediaPipe peer benchmark without MediaPipe: its help, and its ratios and report on
hand-made numbers (the measurement itself needs build/peers/mediapipe-venv and is run by hand)."""

import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "peers" / "mediapipe_embedder.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("mediapipe_embedder", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_runs_without_mediapipe_or_its_venv():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--images" in out.stdout and "--rounds" in out.stdout
    assert "mediapipe-venv" in out.stdout


def test_bad_counts_are_refused_before_any_install(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])


def _samples():
    # two rounds of three photos, ms per call
    return {
        "ms": {"mediapipe": [[10.0, 12.0, 14.0], [11.0, 13.0, 15.0]],
               "edgerec-crop": [[5.0, 6.0, 7.0], [6.0, 6.5, 6.0]],
               "edgerec-stretch": [[10.0, 12.0, 14.0], [22.0, 26.0, 30.0]],
               "edgerec-onnx-crop": [[4.0, 5.0, 6.0], [5.0, 5.5, 5.0]],
               "edgerec-onnx-stretch": [[4.0, 5.0, 6.0], [5.0, 5.5, 5.0]]},
        "cpu_over_wall": {"mediapipe": 0.9, "edgerec-crop": 1.0, "edgerec-stretch": 0.8,
                          "edgerec-onnx-crop": 1.0, "edgerec-onnx-stretch": 1.0},
        "cpu_ms_per_call": {"mediapipe": 11.0, "edgerec-crop": 6.0, "edgerec-stretch": 12.0,
                            "edgerec-onnx-crop": 5.0, "edgerec-onnx-stretch": 5.0},
    }


def test_ratios_are_taken_within_each_round_then_the_median_over_rounds(bench):
    s = bench.summarise(_samples())
    crop, stretch = s["ratios"]["edgerec-crop"], s["ratios"]["edgerec-stretch"]
    assert crop["per_round_p50_ratio"] == pytest.approx([6 / 12, 6 / 13])
    assert crop["median_p50_ratio"] == pytest.approx((6 / 12 + 6 / 13) / 2)
    # per photo: 5/10, 6/12, 7/14; then 6/11, 6.5/13, 6/15
    assert crop["per_round_paired_median"] == pytest.approx([0.5, 0.5])
    assert stretch["per_round_p50_ratio"] == pytest.approx([1.0, 2.0])
    assert s["latency"]["mediapipe"]["p50"] == pytest.approx(12.5)
    assert s["latency"]["mediapipe"]["n"] == 6
    assert "mediapipe" not in s["ratios"]


def test_report_shows_each_path_ratio_and_agreement_row(bench):
    agree = {k: {"n": 3, "mean": 0.97, "p50": 0.971, "p10": 0.95, "min": 0.94, "max": 0.99}
             for k in ("mediapipe~edgerec-stretch", "mediapipe~edgerec-crop",
                       "edgerec-crop~edgerec-stretch", "mediapipe~edgerec-onnx-stretch",
                       "edgerec-stretch~edgerec-onnx-stretch", "edgerec-crop~edgerec-onnx-crop",
                       "same_pixels", "opencv_resize", "decode_mean_abs", "decode_identical")}
    payload = {
        "command": "nice python benchmarks/peers/mediapipe_embedder.py --images 3",
        "machine": {"date": "2026-01-01", "cpu": "test CPU", "cores": 2, "commit": "abc"},
        "versions": {"mediapipe": "0.0", "edgerec_engine": "ai_edge_litert 0.0",
                     "numpy": "2", "pillow": "1"},
        "model": "teacher.tflite", "model_sha256": "f" * 64, "photos": 3, "photos_refused": 1,
        "photo_sources": {"clothing-small/validation": 2, "examples/sample/images": 1},
        "refused": ["x.jpg: RuntimeError: no"], "exif_rotated": 0, "rounds": 2, "warmup": 1,
        "load_before": 1.0, "load_after": 2.0, "agreement": agree,
        "summary": bench.summarise(_samples()),
        "busy_threads": {n: {"busy": ["python"]} for n in bench.PATHS},
        "stages_cpu_ms": {"mediapipe decode": {"p50": 1.0, "mean": 1.1, "n": 3}},
        "notes": bench.NOTES,
        "conversion": {"ops": ["CONV_2D"] * 27 + ["AVERAGE_POOL_2D"], "probes": 16,
                       "probe_kind": "photos", "min_cosine": 0.99998,
                       "max_abs_diff_steps": 0.49},
    }
    md = bench.markdown(payload)
    for name in bench.PATHS:
        assert f"| {name} | " in md
    assert "| edgerec-crop | 0.481 |" in md  # median of 0.500 and 0.462
    assert "both stretch (same geometry) | 0.9700 |" in md
    assert "x.jpg: RuntimeError" in md
    assert "| mediapipe decode | 1.00 | 1.10 |" in md
    assert ("28 TFLite ops, checked against the .tflite on 16 probes (photos): cosine min "
            "0.999980") in md
    assert md.endswith("\n")
