"""Shared fixtures: the sample shipped in the repo, the real teacher, and bundles made from them.

Tests use the small sample in ``examples/sample`` (always present) and the full
``../shared`` data when it is beside the checkout.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from edgerec.runtimes import open_runtime
from edgerec.sdk import Bundle, ImportOptions, Precision, Role, import_model
from edgerec.sdk.bundle.manifest import ScorerRecord
from edgerec.sdk.bundle.writer import NewArtifact, write_bundle

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample"
TEACHER = SAMPLE / "teacher" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
FIXTURES = Path(__file__).parent / "fixtures"
TINY_ONNX = FIXTURES / "tiny_embedder.onnx"
TINY_TFLITE = FIXTURES / "tiny_embedder.tflite"
SHARED = ROOT.parent / "shared"


def done_steps(stdout: bytes) -> list[int]:
    """The N of every whole ``done N`` line a killed worker printed, in order. A line the kill
    cut short (CI once saw a bare ``done``) does not count: that step's call returned, but the
    harness allows one more step than it saw anyway."""
    pattern = re.compile(r"done (\d+)")
    return [int(m[1]) for m in map(pattern.fullmatch, stdout.decode().split("\n")[:-1]) if m]


def sample_images(per_label: int = 20) -> list[tuple[Path, str]]:
    """(path, label) for the first ``per_label`` sample images of each label, sorted."""
    out = []
    for label_dir in sorted(p for p in (SAMPLE / "images").iterdir() if p.is_dir()):
        for path in sorted(label_dir.glob("*.jpg"))[:per_label]:
            out.append((path, label_dir.name))
    return out


@pytest.fixture(autouse=True, scope="session")
def _no_device_profile(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never read a developer's own device profile (``edgerec bench --choose``): the
    default encoder choice stays the documented rule unless a test writes a profile."""
    import os

    os.environ["EDGEREC_DEVICE_PROFILE"] = str(tmp_path_factory.mktemp("profile") / "none.json")


RAY_MISSING = "ray is not installed: pip install 'edgerec[scale]' (make test installs it)"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs on this machine for one test module, shut down after it."""
    try:
        import ray
    except ImportError:
        pytest.skip(RAY_MISSING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def teacher_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The shipped MobileNetV1 teacher wrapped as a bundle (raw uint8 pixels)."""
    out = tmp_path_factory.mktemp("bundles") / "teacher"
    return import_model([TEACHER], out, ImportOptions(raw_pixels=True, name="teacher"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The tiny fixture network in ONNX (NCHW) and TFLite (NHWC), one bundle."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    options = ImportOptions(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny")
    return import_model([TINY_ONNX, TINY_TFLITE], out, options)


@pytest.fixture()
def jpeg_bytes() -> bytes:
    """One real sample photo as encoded JPEG bytes."""
    return sample_images(1)[0][0].read_bytes()


def reversing_scorer_bundle(tiny_bundle: Bundle, out: Path, width: int,
                            scorer: Optional[ScorerRecord] = None) -> Bundle:
    """The tiny encoder plus an ONNX scorer whose logit is -sum(u*v) (reverses the order)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    dim = tiny_bundle.embedding_dim
    w = np.zeros((width, 1), np.float32)
    w[2 * dim:3 * dim, 0] = -1.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = out.parent / f"scorer-{width}.onnx"
    onnx.save(model, path)
    runtime = open_runtime(path)
    arts = [NewArtifact(tiny_bundle.artifact_path(a), a.role, a.precision, a.inputs,
                        a.outputs, a.output, a.layout, a.file, a.engine)
            for a in tiny_bundle.artifacts(Role.ENCODER)]
    arts.append(NewArtifact(path, Role.SCORER, Precision.FP32, tuple(runtime.input_specs()),
                            tuple(runtime.output_specs()), "logits"))
    runtime.close()
    return write_bundle(out, artifacts=arts, preprocessing=tiny_bundle.preprocessing,
                        embedding_dim=dim, name="tiny+scorer", scorer=scorer)


def label_events(path: Path, items: list[tuple[str, str]], *, users: int = 40,
                 per_user: int = 5, pool: int = 5, seed: int = 0) -> Path:
    """An events CSV ``user_id,item_id,event,timestamp`` generated from labels, for tests that
    need warm items (the sample's owners own one photo each, so every item is cold): user
    ``u`` buys ``per_user`` of the first ``pool`` items of label ``u % labels`` (so items are
    shared by several users and co-occur within a label), one a day, in a seeded order.
    ``items``: (item_id, label) pairs."""
    import csv

    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for item, label in items:
        by_label.setdefault(label, []).append(item)
    labels = sorted(by_label)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "event", "timestamp"])
        for u in range(users):
            choice = by_label[labels[u % len(labels)]][:pool]
            for j, item in enumerate(rng.permutation(choice)[:per_user]):
                writer.writerow([f"user-{u}", item, "purchase", 1_700_000_000 + 86400 * (u + j)])
    return path


def behaviour_bundle(tiny_bundle: Bundle, catalog: Path, events: Path, out: Path, *,
                     leave_last_out: bool = False, validation_cuts: int = 1,
                     fusion: str = "auto") -> Bundle:
    """The tiny encoder plus behaviour signals learned from ``events`` over the items of
    ``catalog`` (small ALS, 3 neighbours); with ``leave_last_out`` they are learned without
    each user's newest item, and the bundle records that split. One validation cut by default:
    in :func:`label_events`' world every user buys within one label, so the fusion has nothing
    to learn about a person switching labels (the default's three cuts are measured on
    MovieLens, where they help)."""
    from edgerec.export.behaviour import build_behaviour
    from edgerec.export.options import BehaviourOptions
    from edgerec.sdk import Catalog
    from edgerec.sdk.bundle.manifest import HoldoutRecord, UserVectorRecipe
    from edgerec.sdk.evaluation.events import SplitProtocol, holdout_split, read_events

    with Catalog.open(catalog, readonly=True) as cat:
        ids = list(cat)
        _, vectors = cat.vectors(ids)
    log = read_events(events, known_items=ids)
    protocol = SplitProtocol.LEAVE_LAST_OUT if leave_last_out else SplitProtocol.FRACTION
    split = holdout_split(log, test_fraction=0, protocol=protocol)
    holdout = (HoldoutRecord("leave_last_out", 0, 0.0, log.report.sha256,
                             **{k: v for k, v in split.describe().items()
                                if k in ("train_events", "test_events", "test_users")})
               if leave_last_out else None)
    build = build_behaviour(split.train, ids, vectors, out.parent / f"{out.name}.work",
                            BehaviourOptions(dim=4, neighbours=3, iterations=5,
                                             validation_cuts=validation_cuts, fusion=fusion),
                            recipe=UserVectorRecipe(), candidates=40, holdout=holdout,
                            log=lambda _m: None)
    arts = [NewArtifact(tiny_bundle.artifact_path(a), a.role, a.precision, a.inputs, a.outputs,
                        a.output, a.layout, a.file, a.engine) for a in tiny_bundle.artifacts()]
    return write_bundle(out, artifacts=arts, preprocessing=tiny_bundle.preprocessing,
                        embedding_dim=tiny_bundle.embedding_dim, name="tiny+behaviour",
                        behaviour=build.record, behaviour_source=build.file)
