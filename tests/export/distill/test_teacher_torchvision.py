"""A torchvision architecture + local weights as the teacher (real torch, real ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from conftest import sample_images
from edgerec.export.data.views import make_views
from edgerec.export.distill.teacher import Teacher
from edgerec.export.distill.teacher_torchvision import torchvision_teacher
from edgerec.export.errors import ExportError
from edgerec.sdk import load_image

SIZE = 96  # small input keeps the export quick; the mechanism is size-independent


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "mnv3.pth"
    torch.save({"state_dict": model.state_dict()}, path)  # a wrapped checkpoint also loads
    return model, path


def test_a_torchvision_model_with_local_weights_embeds_like_its_penultimate_layer(weights,
                                                                                  tmp_path):
    model, path = weights
    bundle = torchvision_teacher("torchvision:mobilenet_v3_small", path, tmp_path,
                                 image_size=SIZE)
    teacher = Teacher.load(bundle, tmp_path)
    try:
        assert teacher.dim == 1024 and teacher.input_size == SIZE  # classifier[-1] dropped
        views = np.concatenate([make_views(load_image(p), 1, SIZE, i)
                                for i, (p, _) in enumerate(sample_images(1)[:3])])
        got = teacher.embed_views(views)
    finally:
        teacher.close()
    x = (torch.from_numpy(views).permute(0, 3, 1, 2).float() / 255
         - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model.classifier[-1] = torch.nn.Identity()
    with torch.no_grad():
        want = torch.nn.functional.normalize(model(x), dim=1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert torchvision_teacher("mobilenet_v3_small", path, tmp_path, image_size=SIZE) == bundle


def test_unknown_architectures_missing_or_wrong_weights_are_refused(weights, tmp_path):
    _, path = weights
    with pytest.raises(ExportError, match="unknown torchvision architecture"):
        torchvision_teacher("resnet9000", path, tmp_path)
    with pytest.raises(ExportError, match="nothing is downloaded"):
        torchvision_teacher("resnet18", tmp_path / "missing.pth", tmp_path)
    with pytest.raises(ExportError, match="does not fit torchvision resnet18"):
        torchvision_teacher("resnet18", path, tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="weights_only=True"):
        torchvision_teacher("mobilenet_v3_small", junk, tmp_path)
    assert not list(tmp_path.glob("teacher-tv-*"))  # nothing half-built is left to reuse
