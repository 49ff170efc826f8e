"""Teachers: the shipped model loads and embeds views; non-models and non-image models refused."""

from __future__ import annotations

import errno
import subprocess
import sys

import edgerec.export.distill.teacher as teacher_module
import numpy as np
import pytest
from conftest import ROOT, TEACHER, TINY_ONNX, sample_images
from edgerec.export.data.views import make_views
from edgerec.export.distill.teacher import Teacher
from edgerec.export.errors import ExportError
from edgerec.runtimes import Engine
from edgerec.sdk import Encoder, EncoderOptions, load_image
from edgerec.sdk.evaluation.retrieval import label_retrieval
from edgerec.sdk.files import sha256_file
from onnx import TensorProto, helper, save


def test_shipped_teacher_embeds_views_like_the_device_encoder(tmp_path):
    teacher = Teacher.load(TEACHER, tmp_path)
    try:
        paths = [p for p, _ in sample_images(1)][:4]
        views = np.concatenate([make_views(load_image(p), 1, 224, 0) for p in paths])
        vectors = teacher.embed_views(views)
        assert vectors.shape == (4, 1024) and teacher.dim == 1024 and teacher.input_size == 224
        with Encoder.create_from_bundle(teacher.bundle) as device:
            np.testing.assert_allclose(vectors, device.embed(paths), atol=1e-5)
        assert Teacher.load(TEACHER, tmp_path).identity == teacher.identity  # reuses the wrap
    finally:
        teacher.close()


def test_processes_wrapping_one_teacher_at_once_all_get_it(tmp_path):
    # the export's cache workers each open the teacher; a cold work dir once made two of them
    # wrap the model file at the same moment and the second rename failed
    code = ("import sys; from edgerec.export.distill.teacher import Teacher; "
            "print(Teacher.load(sys.argv[1], sys.argv[2]).identity)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(TEACHER), str(tmp_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in results]
    identities = {out.strip().splitlines()[-1] for out, _ in results}
    assert identities == {Teacher.load(TEACHER, tmp_path).identity}
    # one bundle, and no temporary directory left behind by the losers
    assert [p.name for p in tmp_path.iterdir()] == [f"teacher-{sha256_file(TEACHER)[:16]}"]


def test_a_wrap_that_loses_the_rename_race_loads_the_winner(tmp_path, monkeypatch):
    real_import = teacher_module.import_model

    def another_process_renames_first(sources, out, options, force):
        real_import(sources, out, options, force=True)  # the winner's complete bundle
        raise OSError(errno.ENOTEMPTY, "Directory not empty", str(out))  # our rename fails

    monkeypatch.setattr(teacher_module, "import_model", another_process_renames_first)
    teacher = Teacher.load(TEACHER, tmp_path)
    assert teacher.dim == 1024 and (teacher.bundle.path / "manifest.json").is_file()
    teacher.close()


def test_a_teacher_that_cannot_be_written_says_to_check_the_work_dir(tmp_path, monkeypatch):
    def disk_full(sources, out, options, force):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(teacher_module, "import_model", disk_full)
    with pytest.raises(ExportError, match="free space and permissions of the work directory"):
        Teacher.load(TEACHER, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_teacher_views_must_be_uint8_at_its_size(tmp_path):
    teacher = Teacher.load(TEACHER, tmp_path)
    with pytest.raises(ExportError, match=r"\(N, 224, 224, 3\) uint8"):
        teacher.embed_views(np.zeros((1, 96, 96, 3), np.uint8))
    teacher.close()


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "teacher.tflite"
    bad.write_bytes(b"not a model at all" * 8)
    with pytest.raises(ExportError, match=r"teacher\.tflite"):
        Teacher.load(bad, tmp_path)
    with pytest.raises(ExportError, match="No teacher model"):
        Teacher.load(tmp_path / "missing.onnx", tmp_path)


def test_a_model_whose_input_is_not_an_image_is_refused(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    save(model, str(tmp_path / "mlp.onnx"))
    with pytest.raises(ExportError, match=r"cannot serve as a teacher.*4-D"):
        Teacher.load(tmp_path / "mlp.onnx", tmp_path, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_a_float_model_needs_its_normalisation(tmp_path):
    with pytest.raises(ExportError, match="--teacher-mean"):
        Teacher.load(TINY_ONNX, tmp_path)
    t = Teacher.load(TINY_ONNX, tmp_path, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert t.dim == 16 and t.input_size == 32
    t.close()


def test_teacher_features_separate_labels_on_the_sample(tmp_path):
    teacher = Teacher.load(TEACHER, tmp_path)
    items = sample_images(6)
    views = np.concatenate([make_views(load_image(p), 1, 224, 0) for p, _ in items])
    report = label_retrieval(teacher.embed_views(views), [lab for _, lab in items], k=5)
    teacher.close()
    assert report.precision_at_k > 2.5 * 5 / 59  # chance: 5 same-label items among 59


def test_a_uint8_tflite_teacher_runs_on_its_onnx_rewrite(tmp_path):
    teacher = Teacher.load(TEACHER, tmp_path)
    try:
        keys = {a.key for a in teacher.bundle.manifest.artifacts}
        assert keys == {"encoder/tflite/int8", "encoder/onnx/int8"}
        assert teacher.describe()["artifact"] == "encoder/onnx/int8"
        paths = [p for p, _ in sample_images(1)][:6]
        views = np.concatenate([make_views(load_image(p), 1, 224, 0) for p in paths])
        with Encoder.create_from_bundle(teacher.bundle,
                                        EncoderOptions(engine="tflite")) as litert:
            cosines = (teacher.embed_views(views) * litert.embed(list(views))).sum(axis=1)
        assert (cosines >= 0.9999).all()
    finally:
        teacher.close()
    assert [p.name for p in tmp_path.iterdir()] == [f"teacher-{sha256_file(TEACHER)[:16]}"]


def test_without_onnx_runtime_the_teacher_is_the_tflite_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_module, "available_engines", lambda: [Engine.TFLITE])
    teacher = Teacher.load(TEACHER, tmp_path)
    assert [a.key for a in teacher.bundle.manifest.artifacts] == ["encoder/tflite/int8"]
    teacher.close()
