"""The student registry: each recipe builds what it names and exports at a tiny size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEACHER
from edgerec.export.artifacts.convert import ModelIO, to_onnx
from edgerec.export.cli import _export_options
from edgerec.export.distill.student import StudentEncoder, create_student
from edgerec.export.errors import ExportError
from edgerec.export.options import STUDENTS, StudentOptions, resolve_student
from edgerec.runtimes import open_runtime
from edgerec.sdk.cli import build_parser


def _body_parameters(model: StudentEncoder) -> int:
    return sum(p.numel() for p in model.features.parameters())


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_registered_student_builds_its_recipe_and_exports_at_a_tiny_size(name, tmp_path):
    recipe = STUDENTS[name]
    torch.manual_seed(0)
    model = create_student(name, image_size=64, dim=16, hidden=0)
    assert model.config == resolve_student(name, image_size=64, dim=16, hidden=0)
    assert model.config.width == recipe.width and model.config.arch == recipe.arch
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    path = to_onnx(model, tmp_path / f"{name}.onnx", ModelIO.image(64))
    with open_runtime(path) as rt:
        got = rt.run({"image": x.numpy()})["embedding"]
    assert got.shape == (2, 16)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_narrower_recipe_builds_a_narrower_network():
    full = create_student("mobilenet_v3_small", image_size=32, dim=8, hidden=0)
    narrow = create_student("mobilenet_v3_small_075", image_size=32, dim=8, hidden=0)
    assert _body_parameters(narrow) < 0.7 * _body_parameters(full)


def test_the_export_keeps_the_recipes_width_and_size_unless_told_otherwise():
    """The bug this guards against: the export's own width/size defaults overrode the recipe."""
    assert StudentOptions(name="mobilenet_v3_small_075").config().width == 0.75
    assert StudentOptions(name="mobilenet_v3_small_160").config().image_size == 160
    assert StudentOptions(name="mobilenet_v3_small_075", width=0.5).config().width == 0.5
    parser = build_parser()
    args = parser.parse_args(["export", "--images", "x", "--out", "y",
                              "--student", "mobilenet_v3_small_075"])
    config = _export_options(args).student.config()
    assert (config.width, config.image_size, config.dim) == (0.75, 192, 128)
    args = parser.parse_args(["export", "--images", "x", "--out", "y",
                              "--student", "mobilenet_v3_small_160", "--dim", "64"])
    config = _export_options(args).student.config()
    assert (config.width, config.image_size, config.dim) == (1.0, 160, 64)


def test_the_student_init_flag_reaches_the_recipe_and_only_a_mobilenet_v2_takes_it(tmp_path):
    parser = build_parser()
    args = parser.parse_args(["export", "--images", "x", "--out", "y", "--student",
                              "mobilenet_v2_160", "--student-init", "weights.tflite"])
    config = _export_options(args).student.config()
    assert (config.arch, config.image_size, config.init) == ("mobilenet_v2", 160,
                                                             Path("weights.tflite"))
    assert StudentOptions().config().init is None  # random weights unless asked
    args = parser.parse_args(["export", "--images", "x", "--out", "y", "--student",
                              "mobilenet_v1_160", "--student-init", str(TEACHER)])
    config = _export_options(args).student.config()
    assert (config.arch, config.image_size, config.hidden) == ("mobilenet_v1", 160, 0)
    model = create_student("mobilenet_v1_160", image_size=64, dim=16, init=config.init).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 16)
    with pytest.raises(ExportError, match="choose a mobilenet_v2 or mobilenet_v1 student"):
        create_student("mobilenet_v3_small", image_size=32, init=tmp_path / "w.tflite")
