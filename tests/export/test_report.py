"""The export report page and the export's stdout summary, from manifest-shaped metrics and
real sample photos (fast: no training; the end-to-end page is checked in test_pipeline)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import sample_images
from edgerec.export.artifacts.encoder import EncoderGate
from edgerec.export.artifacts.ladder import LadderFailedError, Remedy, quantize_with_ladder
from edgerec.export.artifacts.parity import ParityReport
from edgerec.export.report import (
    FAIL,
    PASS,
    artifact_rows,
    plot_curves,
    plot_neighbours,
    summary_line,
    write_html_report,
)
from PIL import Image

PARITY = {"n": 20, "k": 10, "cosine_mean": 0.99, "cosine_min": 0.95,
          "neighbour_overlap": 0.9, "map_reference": 0.5, "map_candidate": 0.49,
          "map_ratio": 0.98}
FAILED = ("encoder.int8.onnx failed the int8 gate after 1 remedies (minmax); the best, "
          "'minmax', reached cosine_mean 0.898 < 0.98 (short by 0.082).")


def _metrics() -> dict:
    """Metrics shaped as the export writes them: fp32 ONNX/TFLite, a passing TFLite int8
    (second rung), an ONNX int8 left out."""
    attempt = {"report": {**PARITY, "cosine_mean": 0.93}, "passed": False, "error": None}
    return {
        "parity": {"encoder/onnx/fp32": {**PARITY, "cosine_mean": 1.0},
                   "encoder/tflite/fp32": {**PARITY, "cosine_mean": 1.0},
                   "encoder/tflite/int8": PARITY},
        "quantization": {
            "encoder/tflite/int8": {"remedy": "minmax", "attempts": [
                {**attempt, "remedy": "histogram"},
                {**attempt, "remedy": "minmax", "passed": True, "report": PARITY}]},
            "encoder/onnx/int8": {"remedy": None, "attempts": [
                {**attempt, "remedy": "minmax", "report": {**PARITY, "cosine_mean": 0.898}}]},
        },
        "gate_failures": {"encoder/onnx/int8": FAILED},
        "int8_gate_checks": ["map_ratio", "cosine_mean"],
        "macs": {"student": 12_300_000, "teacher": 570_000_000},
        "latency": {k: {"p50_ms": 1.5, "p90_ms": 2.0, "runs": 20, "threads": 1}
                    for k in ("encoder/onnx/fp32", "encoder/tflite/fp32",
                              "encoder/tflite/int8")},
    }


SIZES = {"encoder/onnx/fp32": 400_000, "encoder/tflite/fp32": 390_000,
         "encoder/tflite/int8": 120_000}


def test_artifact_rows_name_every_file_with_its_gate_rung_cost_and_latency():
    rows = {r["artifact"]: r for r in artifact_rows(_metrics(), SIZES)}
    assert set(rows) == {"encoder/onnx/fp32", "encoder/tflite/fp32", "encoder/tflite/int8",
                         "encoder/onnx/int8"}
    assert rows["encoder/tflite/int8"]["gate"] == f"{PASS} passed"
    assert rows["encoder/tflite/int8"]["rung"].startswith("minmax (rung 2")
    assert rows["encoder/onnx/int8"]["gate"].startswith(f"{FAIL} failed")
    assert rows["encoder/onnx/int8"]["rung"] == "none passed; tried minmax"
    assert rows["encoder/onnx/int8"]["size_kb"] is None  # not shipped
    assert rows["encoder/onnx/int8"]["cosine_mean"] == pytest.approx(0.898)
    assert rows["encoder/tflite/int8"]["latency_p50_ms"] == 1.5
    assert rows["encoder/tflite/int8"]["MMACs"] == 12.3
    assert rows["encoder/tflite/int8"]["size_kb"] == round(120_000 / 1024)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report page from the metrics above, with real plots of sample photos."""
    root = tmp_path_factory.mktemp("report")
    pairs = sample_images(per_label=3)
    views = np.stack([np.asarray(Image.open(p).convert("RGB").resize((48, 48)))
                      for p, _ in pairs])
    vectors = np.random.default_rng(0).normal(size=(len(pairs), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    history = [{"epoch": e, "loss": 1.0 / (e + 1), "val_map@10": 0.1 * e, "agree@10": 0.2}
               for e in range(3)]
    metrics = _metrics()
    out = write_html_report(
        root / "report.html", title="edgerec export: t",
        summary=[{"model": "teacher"}, {"model": "student_torch_fp32_unwhitened",
                                        "seen_map@10": 0.25, "unseen_map@10": 0.1}],
        artifacts=artifact_rows(metrics, SIZES),
        data={"counts": {"images": 18, "labels": {"dress": 3, "hat": 3}}, "issues": []},
        curves=plot_curves(history, root / "c.png"),
        neighbours=plot_neighbours(views, vectors, [lab for _, lab in pairs], root / "n.png"),
        recipe={"seed": 0}, whitening={"power": 0.5, "covariance": "within-label"},
        quick=True, gate_failures=metrics["gate_failures"],
        gate_checks=metrics["int8_gate_checks"],
        sets={"seen": {"images": 9, "labelled": True},
              "whitening_by_power": {"0.5": {"seen_map@10": 0.3, "unseen_map@10": 0.2}}})
    return out.read_text()


def test_report_names_each_artifact_with_its_gate_result(page):
    for key in ("encoder/onnx/fp32", "encoder/tflite/fp32", "encoder/tflite/int8",
                "encoder/onnx/int8"):
        assert f"<td>{key}</td>" in page
    assert f"<td>{FAIL} failed: left out (best: cosine_mean 0.898 &lt; 0.98" in page
    assert f"<td>{PASS} passed</td>" in page
    assert "map_ratio, cosine_mean" in page


def test_quick_report_says_it_is_a_smoke_run_and_lists_failed_gates(page):
    banner = re.search(r"<div class='banner'.*?</div>", page, re.S).group(0)
    assert "smoke configuration" in banner
    assert "encoder/onnx/int8" in banner and "0.898" in banner


def test_report_shows_data_counts_and_validation_whitening_as_tables(page):
    data = page.split("<h2>Data</h2>")[1]
    assert data.lstrip().startswith("<table>") and "<td>labels: dress</td><td>3</td>" in data
    whitening = page.split("Whitening on the validation set")[1]
    assert "<th>seen_map@10</th>" in whitening
    assert "<td>none (unwhitened)</td><td>0.2500</td>" in whitening
    assert f"<td>0.5 {PASS} kept</td><td>0.3000</td>" in whitening


def test_a_failed_int8_without_ladder_record_still_names_the_rungs_tried():
    metrics = {**_metrics(), "quantization": {}}
    (row,) = [r for r in artifact_rows(metrics, SIZES) if r["artifact"] == "encoder/onnx/int8"]
    assert row["rung"] == "none passed; tried minmax" and "0.898" in row["gate"]


def test_a_failed_int8_shows_every_rung_tried_with_the_gate_figures_it_fell_short_of(
        tmp_path):
    reports = {"minmax": ParityReport(**{**PARITY, "cosine_mean": 0.898}),
               "percentile": ParityReport(**{**PARITY, "cosine_mean": 0.95, "map_ratio": 1.0})}
    with pytest.raises(LadderFailedError) as info:  # the record as the export writes it
        quantize_with_ladder([Remedy("minmax"), Remedy("percentile")],
                             lambda r: tmp_path / f"{r.name}.onnx", lambda p: reports[p.stem],
                             EncoderGate(), artifact="encoder.int8.onnx")
    metrics = {**_metrics(), "gate_failures": {"encoder/onnx/int8": str(info.value)},
               "quantization": {"encoder/onnx/int8": {**info.value.to_dict(),
                                                      "outcome": "left out"}}}
    (row,) = [r for r in artifact_rows(metrics, SIZES) if r["artifact"] == "encoder/onnx/int8"]
    assert row["gate"].startswith(f"{FAIL} failed: left out (best: cosine_mean 0.9500 < 0.98")
    assert row["rung"] == ("none passed; tried minmax (map_ratio 0.9800 < 0.99; cosine_mean "
                           "0.8980 < 0.98), percentile (cosine_mean 0.9500 < 0.98)")
    assert row["cosine_mean"] == pytest.approx(0.95)  # the best attempt's parity
    page = write_html_report(
        tmp_path / "report.html", title="t", summary=[], artifacts=artifact_rows(metrics, SIZES),
        data={}, curves=None, neighbours=None, recipe={},
        gate_failures=metrics["gate_failures"]).read_text()
    assert "percentile (cosine_mean 0.9500 &lt; 0.98)" in page


def test_summary_line_states_quick_and_failed_gates():
    text = summary_line("b", "b/report/report.html", _metrics(), quick=True)
    assert "smoke configuration" in text and "encoder/onnx/int8" in text
    full = summary_line("b", "r", {**_metrics(), "gate_failures": {}}, quick=False)
    assert "smoke" not in full and "every int8 gate passed" in full
