"""Quantization-aware fine-tuning, the last rung of the encoder's int8 ladders
(edgerec.export.artifacts.qat), on real photos, a real student and real ORT quantization.

The student that makes post-training quantization fail is the kind that failed it in a real
export: a MobileNetV2 body with the shipped MobileNetV2 classifier's ImageNet weights (here at
64 px, a random 32-d head). Measured on this machine (2-vCPU AVX2, x86-avx2 target: U8S8,
7-bit weights; 160 calibration and 40 held-out sample photos, no labels, 1 thread): the five
post-training rungs reach mean cosine 0.84-0.90 and top-10 overlap 0.59-0.70 to the fp32
student (best: keep_float, 0.902 and 0.703); 100 fine-tune steps (24 s) reach 0.961 and
0.800 (150 steps: 0.961, 0.805). The default gate's 0.98 cosine is out of this budget's
reach, so the test's gate sits between the two (cosine 0.94, overlap 0.75): every
post-training rung fails it, the "qat" rung passes, its parity measured against the
original fp32 student.
"""

import copy

import numpy as np
import pytest
import torch
from conftest import SHARED, sample_images
from edgerec.export.artifacts.convert import ModelIO, to_onnx
from edgerec.export.artifacts.encoder import EncoderGate, encoder_ladders
from edgerec.export.artifacts.ladder import quantize_with_ladder
from edgerec.export.artifacts.parity import artifact_embeddings, parity, torch_embeddings
from edgerec.export.artifacts.qat import QatOptions, QatRung, Scheme, fine_tune_for_int8
from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions, QuantTarget, quantize_onnx
from edgerec.export.distill.student import create_student
from edgerec.export.errors import ExportError
from edgerec.export.report import artifact_rows
from edgerec.runtimes import Engine
from edgerec.sdk import Preprocessing, preprocess

V2 = SHARED / "models" / "teachers" / "mobilenet_v2_1.0_224_quant.tflite"
PTQ_ONNX = ["minmax", "percentile", "entropy", "more_images", "keep_float"]
PTQ_TFLITE = ["histogram", "minmax", "more_images", "more_images_minmax", "keep_float",
              "keep_float_minmax"]


def _rung(model, tmp_path, **options):
    io = ModelIO.image(32)
    return QatRung(model, [np.zeros((2, 3, 32, 32), np.float32)], io, tmp_path,
                   options=QatOptions(**options), log=lambda _m: None)


def test_without_qat_the_ladders_are_the_post_training_rungs_as_before(tmp_path):
    model = create_student(image_size=32, hidden=0, dim=8, width=0.25).eval()
    engines = (Engine.ONNX, Engine.TFLITE)
    plain = encoder_ladders(model, engines, QuantTarget.X86_AVX2, 64)
    assert [r.name for r in plain[Engine.ONNX]] == PTQ_ONNX
    assert [r.name for r in plain[Engine.TFLITE]] == PTQ_TFLITE
    assert all(r.build is None for rungs in plain.values() for r in rungs)
    with_qat = encoder_ladders(model, engines, QuantTarget.X86_AVX2, 64,
                               qat=_rung(model, tmp_path))
    assert [r.name for r in with_qat[Engine.ONNX]] == [*PTQ_ONNX, "qat"]
    assert with_qat[Engine.TFLITE] == plain[Engine.TFLITE]  # LiteRT: no qat rung (qat.py)
    assert with_qat[Engine.ONNX][:-1] == plain[Engine.ONNX]  # the same rungs, same options
    assert with_qat[Engine.ONNX][-1].build is not None
    assert with_qat[Engine.ONNX][-1].options.calibration.value == "minmax"
    # a whitened encoder's float-head rungs move first; qat stays last; quick keeps one rung
    whitened = encoder_ladders(model, engines, QuantTarget.X86_AVX2, 64, float_head=True,
                               qat=_rung(model, tmp_path))
    names = [r.name for r in whitened[Engine.ONNX]]
    assert (names[0], names[-1]) == ("keep_float", "qat")
    quick = encoder_ladders(model, engines, QuantTarget.X86_AVX2, 64, first_only=True,
                            qat=_rung(model, tmp_path))
    assert [r.name for r in quick[Engine.ONNX]] == ["minmax"]


@pytest.mark.parametrize("bad", [dict(steps=0), dict(max_minutes=0), dict(lr=0.0),
                                 dict(batch_size=0), dict(threads=0), dict(steps=True)])
def test_qat_options_refuse_an_empty_budget(bad):
    with pytest.raises(ValueError):
        QatOptions(**bad)


def test_the_simulated_grid_follows_the_onnx_target():
    assert Scheme.for_onnx(OnnxQuantOptions()) == Scheme((0, 255), 64, True)  # U8S8, 7-bit
    assert Scheme.for_onnx(OnnxQuantOptions(target="arm")) == Scheme((-128, 127), 127, True)
    assert Scheme.for_onnx(OnnxQuantOptions(target="x86-vnni", per_channel=False)) == Scheme(
        (0, 255), 127, False)


def test_fine_tune_is_seeded_bounded_and_leaves_the_student_unchanged(tiny_net, photos32):
    model = tiny_net[0]
    before = copy.deepcopy(model.state_dict())
    threads = torch.get_num_threads()
    options = QatOptions(steps=4, batch_size=4, threads=1, lr=1e-3)
    batches = [photos32[0][:10], photos32[0][10:]]
    a = fine_tune_for_int8(model, batches, options=options)
    b = fine_tune_for_int8(model, batches, options=options)
    assert (a.steps, a.stopped) == (4, "steps") and torch.get_num_threads() == threads
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    tuned = a.model.state_dict()
    assert all(torch.equal(tuned[k], v) for k, v in b.model.state_dict().items())  # seeded
    assert not torch.equal(tuned["head.weight"], before["head.weight"])  # it did train
    assert not a.model.stem[0].__dict__.get("parametrizations")  # plain float again
    assert a.model.stem[0].weight.requires_grad is False
    with pytest.raises(ExportError, match="needs calibration images"):
        fine_tune_for_int8(model, [], options=options)


@pytest.mark.slow
@pytest.mark.skipif(not V2.is_file(), reason="needs ../shared (the MobileNetV2 weights)")
def test_qat_passes_the_gate_where_every_post_training_rung_fails(tmp_path):
    items = sample_images(20)
    x = preprocess([p for p, _ in items], Preprocessing(input_size=64))
    held, cal = x[::5], np.delete(x, np.s_[::5], axis=0)  # 40 held out, 160 calibration
    torch.manual_seed(0)
    model = create_student("mobilenet_v2_160", image_size=64, dim=32, init=V2).eval()
    before = copy.deepcopy(model.state_dict())
    reference = torch_embeddings(model, held)  # the ORIGINAL fp32 student
    io = ModelIO.image(64)
    fp32 = to_onnx(model, tmp_path / "encoder.fp32.onnx", io)
    calibration = [cal[i : i + 16] for i in range(0, len(cal), 16)]
    rung = QatRung(model, calibration, io, tmp_path, options=QatOptions(steps=100, lr=3e-5,
                   threads=1), log=lambda _m: None)
    ladder = encoder_ladders(model, [Engine.ONNX], QuantTarget.X86_AVX2, 256, qat=rung)
    gate = EncoderGate(min_mean_cosine=0.94, min_neighbour_overlap=0.75)

    def build(remedy):
        return quantize_onnx(fp32, tmp_path / f"int8-{remedy.name}.onnx", calibration,
                             remedy.options)

    def evaluate(path):
        return parity(reference, artifact_embeddings(path, held, num_threads=2))

    result = quantize_with_ladder(ladder[Engine.ONNX], build, evaluate, gate,
                                  artifact="encoder.int8.onnx")
    attempts = {a.remedy: a for a in result.attempts}
    assert list(attempts) == [*PTQ_ONNX, "qat"] and result.remedy == "qat"
    assert not any(attempts[n].passed for n in PTQ_ONNX) and attempts["qat"].passed
    best_ptq = max((attempts[n].report for n in PTQ_ONNX), key=lambda r: r.cosine_mean)
    qat = result.report
    print(f"\nbest PTQ {best_ptq}\nQAT {qat}")
    assert qat.cosine_mean > best_ptq.cosine_mean + 0.03  # measured +0.058
    assert qat.neighbour_overlap > best_ptq.neighbour_overlap + 0.05  # measured +0.097
    # the gate compared the int8 file with the original student, not with the fine-tuned
    # copy (which itself drifted from the student), and the student was left alone
    tuned = rung.fine_tuned()
    assert tuned.steps == 100 and tuned.loss_last < tuned.loss_first
    drift = parity(reference, torch_embeddings(tuned.model, held))
    assert drift.cosine_mean < 0.999
    assert qat == parity(reference, artifact_embeddings(result.artifact, held, num_threads=2))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # the export report names the rung that passed
    record = {"quantization": {"encoder/onnx/int8": result.to_dict()},
              "parity": {"encoder/onnx/int8": qat.to_dict()}}
    (row,) = artifact_rows(record, {})
    assert row["rung"] == "qat (rung 6 of ladder)"


def test_the_export_flags_set_the_qat_budget_and_0_turns_the_rung_off():
    from edgerec.export.cli import _export_options
    from edgerec.export.options import QuantizationOptions
    from edgerec.sdk.cli.app import build_parser

    def quantization(*flags):
        args = build_parser().parse_args(["export", "--images", "x", "--out", "y", *flags])
        return _export_options(args).quantization

    assert (quantization().qat_steps, quantization().qat_minutes) == (300, 10.0)
    assert quantization("--qat-steps", "0").qat_steps == 0
    assert quantization("--qat-steps", "50", "--qat-minutes", "2.5").qat_minutes == 2.5
    for bad in (dict(qat_steps=-1), dict(qat_minutes=0.0), dict(qat_steps=1.5)):
        with pytest.raises(ValueError):
            QuantizationOptions(**bad)
