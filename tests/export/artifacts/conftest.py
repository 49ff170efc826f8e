"""Real photos and small real networks for the artifact tests: an image encoder in miniature
and a scorer, each with its calibration data.

A randomly initialised network needs its BatchNorm statistics re-estimated on real images
before it means anything: with the running averages reset and ``momentum=None`` (an exact
cumulative average) one pass suffices; a few passes with momentum 0.1 leave the running
variance far from the batch statistics and every image maps to nearly the same vector (mean
pairwise cosine 0.99999 instead of 0.30).
"""

import numpy as np
import pytest
import torch
from conftest import sample_images
from edgerec.export.artifacts.convert import ModelIO, to_onnx
from edgerec.export.artifacts.parity import torch_embeddings
from edgerec.export.distill.student import create_student
from edgerec.export.scorer.train import ScorerNet
from edgerec.runtimes import open_runtime
from edgerec.sdk import Preprocessing, preprocess
from torch import nn


def photos(size: int, per_label: int):
    """Preprocessed NCHW float32 sample photos: (calibration, held out), alternating."""
    items = sample_images(per_label)
    x = preprocess([p for p, _ in items], Preprocessing(input_size=size))
    return x[0::2], x[1::2]


def recalibrate_batchnorm(model: nn.Module, x) -> nn.Module:
    """Re-estimate every BatchNorm's statistics on ``x`` exactly; returns the model in eval."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: exact in one pass
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


class TinyNet(nn.Module):
    """The student's op kinds in miniature: conv + BN + hardswish, a residual depthwise block,
    a spatial mean and a linear head. 32 px in, 16-d out."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.Hardswish())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8),
                                   nn.ReLU())
        self.head = nn.Linear(8, 16)

    def forward(self, x):
        x = self.stem(x)
        return self.head((x + self.block(x)).mean((2, 3)))


@pytest.fixture(scope="package")
def photos32():
    """20 calibration and 20 held-out 32-px photos."""
    return photos(32, 4)


@pytest.fixture(scope="package")
def tiny_net(photos32):
    """:class:`TinyNet` with BatchNorm re-estimated, and its torch embeddings of the held-out
    photos."""
    torch.manual_seed(0)
    model = recalibrate_batchnorm(TinyNet(), photos32[0])
    return model, torch_embeddings(model, photos32[1])


@pytest.fixture(scope="package")
def scorer_net():
    """A 4-d scorer (hidden 16, 8): the inner product prior plus noise in its output layer;
    1,200 float32 (C, 12) ``[u, v, u*v]`` rows of random unit vectors; the (1200, 4) vectors."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1200, 4)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    u = v[rng.permutation(len(v))]
    rows = np.concatenate([u, v, u * v], axis=1)
    model = ScorerNet(4, (16, 8), 0.0, rows.mean(0), rows.std(0)).eval()
    model.init_inner_product_prior(10.0, 0.0)
    with torch.no_grad():
        model.head.weight.normal_(0, 0.1)
    return model, rows, v


@pytest.fixture(scope="package")
def scorer_check(scorer_net):
    """A function: a scorer file -> (its input spec, the correlation of its logits with the
    torch scorer's on 300 rows)."""
    model, rows, _ = scorer_net
    with torch.no_grad():
        reference = model(torch.from_numpy(rows[:300]))[:, 0].numpy()

    def check(path):
        with open_runtime(path) as rt:
            spec = rt.input_specs()[0]
            logits = rt.run({spec.name: rows[:300]})[rt.output_specs()[0].name][:, 0]
        return spec, float(np.corrcoef(logits, reference)[0, 1])

    return check


@pytest.fixture(scope="package")
def student_setup(tmp_path_factory):
    """An untrained 64-px student (width 0.5, 32-d) with BatchNorm re-estimated on 40 photos,
    its fp32 ONNX, calibration batches of 20, 40 held-out photos and their torch embeddings."""
    cal, held = photos(64, 8)
    torch.manual_seed(0)
    model = create_student("mobilenet_v3_small", image_size=64, hidden=0, dim=32, width=0.5)
    recalibrate_batchnorm(model, cal)
    fp32 = to_onnx(model, tmp_path_factory.mktemp("student") / "student.onnx", ModelIO.image(64))
    batches = [cal[i : i + 20] for i in range(0, len(cal), 20)]
    return model, fp32, batches, held, torch_embeddings(model, held)
