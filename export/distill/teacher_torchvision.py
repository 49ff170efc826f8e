"""A torchvision architecture with a local weights file as the teacher.

``torchvision_teacher("resnet50", "resnet50.pth", work_dir)`` builds the architecture with
random weights (never a hub download), loads the file with ``torch.load(weights_only=True)``
(tensors only, nothing else is unpickled), drops the classification layer (the model's last
``nn.Linear``, so the teacher's embedding is the penultimate feature: 2048-d for ResNet-50,
1024-d for MobileNetV3-Small), exports it to ONNX and wraps it as a bundle that
:meth:`edgerec.export.distill.teacher.Teacher.load` opens like any other teacher. The bundle is
kept in
``work_dir/teacher-tv-<arch>-<sha>`` so later runs and the cache's worker processes reuse it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

from edgerec.export.errors import ExportError
from edgerec.sdk import ImportOptions, import_model
from edgerec.sdk.files import sha256_file

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TORCHVISION_PREFIX", "torchvision_teacher"]

PathLike = Union[str, os.PathLike]
TORCHVISION_PREFIX = "torchvision:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _state_dict(weights: Path) -> dict:
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise ExportError(f"{weights} is not a torch weights file that loads with "
                          f"weights_only=True ({type(exc).__name__}: {exc}). Save the "
                          "model's state_dict() with torch.save.") from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise ExportError(f"{weights} holds no state_dict (a mapping of parameter names to "
                          "tensors).")
    return state


def _drop_classifier(model):
    """Replace the model's last ``nn.Linear`` with ``nn.Identity`` (in place)."""
    from torch import nn

    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ExportError("the architecture has no nn.Linear classification layer to drop")
    *parents, leaf = last[-1].split(".")
    owner = model
    for part in parents:
        owner = getattr(owner, part)
    setattr(owner, leaf, nn.Identity())
    return model


def torchvision_teacher(
    arch: str,
    weights: PathLike,
    work_dir: PathLike,
    *,
    image_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Path:
    """Build (or reuse) a teacher bundle from ``torchvision.models.<arch>`` + ``weights``.

    Args:
        arch: a torchvision classification model name, e.g. ``"resnet50"`` (an optional
            ``"torchvision:"`` prefix is accepted).
        weights: the model's ``state_dict`` saved with ``torch.save`` (``.pth``/``.pt``).
        work_dir: where the bundle is written.
        image_size: the teacher's input size (px); mean, std: its normalisation on [0, 1]
            pixels (ImageNet's by default, as torchvision's weights expect).

    Returns:
        The bundle directory.

    Raises:
        ExportError: unknown architecture, missing/unreadable weights, weights that do not fit
            the architecture, or a model that does not export.
    """
    import torch
    import torchvision

    arch = arch.removeprefix(TORCHVISION_PREFIX)
    weights = Path(weights)
    known = set(torchvision.models.list_models(module=torchvision.models))
    if arch not in known:
        raise ExportError(f"unknown torchvision architecture {arch!r}; pick one of "
                          f"torchvision.models.list_models(), e.g. resnet50, efficientnet_b0, "
                          "mobilenet_v3_large.")
    if not weights.is_file():
        raise ExportError(f"No weights file at {weights}: a torchvision teacher needs its "
                          "pretrained state_dict on disk (--teacher-weights FILE); nothing is "
                          "downloaded.")
    out = Path(work_dir) / f"teacher-tv-{arch}-{sha256_file(weights)[:16]}-{image_size}"
    if (out / "manifest.json").is_file():
        return out
    model = torchvision.models.get_model(arch, weights=None)
    try:
        model.load_state_dict(_state_dict(weights), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ExportError(f"{weights.name} does not fit torchvision {arch}: {first} Pass the "
                          "weights saved from that architecture.") from exc
    model = _drop_classifier(model).eval()
    from edgerec.export.artifacts.convert import ModelIO, to_onnx

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".teacher-tv-", dir=work_dir))
    try:
        with torch.no_grad():
            dim = model(torch.zeros(1, 3, image_size, image_size)).shape[-1]
        onnx_path = to_onnx(model, tmp / f"{arch}.onnx", ModelIO.image(image_size))
        import_model([onnx_path], out, ImportOptions(
            mean=tuple(mean), std=tuple(std), input_size=image_size,
            name=f"torchvision-{arch}-{dim}d"), force=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"torchvision {arch} did not export to ONNX: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
