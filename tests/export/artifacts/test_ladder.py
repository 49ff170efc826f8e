"""The gated ladder of remedies (edgerec.export.artifacts.ladder) and the two gates that
implement its Gate protocol: the encoder's and the scorer's."""

import pytest
from edgerec.export.artifacts.encoder import EncoderGate
from edgerec.export.artifacts.ladder import (
    Gate,
    LadderFailedError,
    Remedy,
    quantize_with_ladder,
)
from edgerec.export.artifacts.parity import ParityReport
from edgerec.export.errors import ExportError
from edgerec.export.scorer.artifacts import ScorerGate, ScorerParity


def _report(cos=0.99, ratio=1.0):
    return ParityReport(n=10, k=10, cosine_mean=cos, cosine_min=cos - 0.1,
                        neighbour_overlap=0.9, map_reference=0.5, map_candidate=0.5 * ratio,
                        map_ratio=ratio)


def _scorer_report(overlap=0.95, spearman=0.995):
    return ScorerParity(users=10, candidates=200, k=10, max_abs_diff=0.1,
                        top_k_overlap=overlap, spearman=spearman)


def test_both_roles_gates_implement_the_gate_protocol():
    for gate in (EncoderGate(), ScorerGate()):
        assert isinstance(gate, Gate)
    assert not isinstance(object(), Gate)


def test_encoder_gate_lists_what_falls_short():
    gate = EncoderGate()
    assert gate.shortfalls(_report()) == {}
    assert gate.shortfalls(_report(cos=0.97, ratio=0.995)) == {"cosine_mean": (0.97, 0.98)}
    assert gate.margin(_report(cos=0.97, ratio=1.0)) == pytest.approx(-0.01)


def test_without_labels_the_encoder_gate_checks_neighbour_overlap_instead_of_map():
    gate = EncoderGate()
    no_labels = ParityReport(n=10, k=10, cosine_mean=0.99, cosine_min=0.9, neighbour_overlap=1)
    assert gate.applied(labelled=False) == ("neighbour_overlap", "cosine_mean")
    assert gate.applied(labelled=True) == ("map_ratio", "cosine_mean")
    assert gate.shortfalls(no_labels) == {}
    drifted = ParityReport(n=10, k=10, cosine_mean=0.99, cosine_min=0.9, neighbour_overlap=0.5)
    assert gate.shortfalls(drifted) == {"neighbour_overlap": (0.5, 0.8)}
    assert gate.margin(drifted) == pytest.approx(-0.3)
    # with the label-free check turned off, the mAP check still applies and fails unmeasured:
    # a gate is never skipped silently
    strict = EncoderGate(min_neighbour_overlap=None)
    assert strict.shortfalls(no_labels) == {"map_ratio": (None, 0.99)}
    assert strict.margin(no_labels) == float("-inf")
    assert EncoderGate(min_map_ratio=None, min_neighbour_overlap=None).shortfalls(
        no_labels) == {}


def test_ladder_stops_at_the_first_remedy_that_passes(tmp_path):
    reports = {"minmax": _report(cos=0.95), "percentile": _report(), "entropy": _report()}
    built = []

    def build(remedy):
        built.append(remedy.name)
        return tmp_path / f"{remedy.name}.onnx"

    result = quantize_with_ladder(
        [Remedy(n) for n in reports], build, lambda p: reports[p.stem], EncoderGate())
    assert built == ["minmax", "percentile"]
    assert result.remedy == "percentile" and result.artifact == tmp_path / "percentile.onnx"
    assert [(a.remedy, a.passed) for a in result.attempts] == [
        ("minmax", False), ("percentile", True)]
    assert result.report == reports["percentile"]
    assert result.to_dict()["attempts"][0]["report"]["cosine_mean"] == 0.95


def test_one_ladder_serves_the_scorer_gate_and_its_reports(tmp_path):
    reports = {"histogram": _scorer_report(overlap=0.7), "minmax": _scorer_report()}
    result = quantize_with_ladder(
        [Remedy(n) for n in reports], lambda r: tmp_path / f"{r.name}.tflite",
        lambda p: reports[p.stem], ScorerGate(), artifact="scorer.int8.tflite")
    assert result.remedy == "minmax" and result.report == reports["minmax"]
    assert result.to_dict()["attempts"][0]["report"]["top_k_overlap"] == 0.7
    with pytest.raises(ExportError, match=r"scorer.int8.tflite failed .* top_k_overlap 0.7000 "
                                          r"< 0.9 \(short by 0.2000\)"):
        quantize_with_ladder([Remedy("histogram")], lambda r: tmp_path / "histogram.tflite",
                             lambda p: reports[p.stem], ScorerGate(),
                             artifact="scorer.int8.tflite")


def test_a_remedy_can_bring_its_own_builder(tmp_path):
    qat = Remedy("qat", build=lambda r: tmp_path / "qat.tflite")
    result = quantize_with_ladder(
        [Remedy("minmax"), qat], lambda r: tmp_path / "ptq.tflite",
        lambda p: _report() if p.stem == "qat" else _report(ratio=0.9), EncoderGate())
    assert result.remedy == "qat" and result.artifact.name == "qat.tflite"


def test_ladder_fails_loudly_naming_the_artifact_the_best_attempt_and_the_shortfall(tmp_path):
    reports = {"minmax": _report(cos=0.90, ratio=0.95), "entropy": _report(cos=0.975, ratio=0.98)}

    def build(remedy):
        if remedy.name == "broken":
            raise RuntimeError("converter crashed")
        return tmp_path / f"{remedy.name}.onnx"

    remedies = [Remedy("minmax"), Remedy("broken"), Remedy("entropy")]
    with pytest.raises(ExportError) as info:
        quantize_with_ladder(remedies, build, lambda p: reports[p.stem], EncoderGate(),
                             artifact="encoder.int8.onnx")
    message = str(info.value)
    assert "encoder.int8.onnx" in message and "'entropy'" in message
    assert "map_ratio 0.9800 < 0.99 (short by 0.0100)" in message
    assert "cosine_mean 0.9750 < 0.98 (short by 0.0050)" in message
    assert "broken failed: RuntimeError: converter crashed" in message


def test_a_failed_ladder_carries_every_rung_with_its_gate_figures(tmp_path):
    reports = {"minmax": _report(cos=0.90, ratio=0.95), "entropy": _report(cos=0.975)}

    def build(remedy):
        if remedy.name == "broken":
            raise RuntimeError("converter crashed")
        return tmp_path / f"{remedy.name}.onnx"

    with pytest.raises(LadderFailedError) as info:
        quantize_with_ladder([Remedy("minmax"), Remedy("broken"), Remedy("entropy")], build,
                             lambda p: reports[p.stem], EncoderGate(),
                             artifact="encoder.int8.onnx")
    record = info.value.to_dict()
    assert (record["remedy"], record["passed"], record["best"]) == (None, False, "entropy")
    minmax, broken, entropy = record["attempts"]
    assert minmax["shortfalls"] == {"map_ratio": {"value": 0.95, "required": 0.99},
                                    "cosine_mean": {"value": 0.90, "required": 0.98}}
    assert minmax["report"]["cosine_mean"] == 0.90 and not minmax["passed"]
    assert broken["shortfalls"] is None and broken["error"].startswith("RuntimeError")
    assert entropy["shortfalls"] == {"cosine_mean": {"value": 0.975, "required": 0.98}}


def test_a_failed_ladder_that_ended_with_qat_advises_a_larger_qat_budget(tmp_path):
    with pytest.raises(LadderFailedError) as info:
        quantize_with_ladder([Remedy("minmax"), Remedy("qat")],
                             lambda r: tmp_path / f"{r.name}.onnx",
                             lambda p: _report(cos=0.95), EncoderGate())
    assert "more steps or minutes" in str(info.value)
    with pytest.raises(LadderFailedError, match="train with quantization-aware fine-tuning"):
        quantize_with_ladder([Remedy("minmax")], lambda r: tmp_path / "minmax.onnx",
                             lambda p: _report(cos=0.95), EncoderGate())


def test_ladder_whose_every_rung_fails_to_build_says_so():
    def build(remedy):
        raise ValueError("no converter")

    with pytest.raises(ExportError, match="every quantization remedy failed to build"):
        quantize_with_ladder([Remedy("a")], build, lambda p: _report(), EncoderGate())


def test_a_ladder_needs_a_rung():
    with pytest.raises(ValueError, match="at least one remedy"):
        quantize_with_ladder([], lambda r: r, lambda p: _report(), EncoderGate())
