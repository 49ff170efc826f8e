"""What ``edgerec export`` does: :class:`ExportOptions` and the shipped default teacher."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Union

from edgerec.export.distill.teacher import DEFAULT_TEACHER
from edgerec.export.distill.train import DistillConfig
from edgerec.export.errors import ExportError
from edgerec.export.scorer.bundle import ScorerExportOptions

__all__ = ["ExportOptions", "default_teacher"]


def default_teacher() -> Optional[Path]:
    """The shipped MobileNetV1 teacher, when this is a source checkout (or ``$EDGEREC_TEACHER``)."""
    env = os.environ.get("EDGEREC_TEACHER")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1] / "examples" / "sample" / "teacher"
    candidate = here / DEFAULT_TEACHER
    return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how (the CLI's flags, one to one).

    Attributes:
        images: image folder (one sub-folder per label) or the root for ``items`` paths.
        out: bundle directory to create.
        items: optional CSV ``item_id,path[,label][,split]``; a ``split`` column
            (train/validation) is honoured, else a deterministic split is made.
        extra_images: folders of extra photos used for distillation only (labels ignored).
        eval_unseen: a labelled folder never trained on, measured in the report.
        teacher: teacher model file or bundle, or ``torchvision:ARCH`` (e.g.
            ``torchvision:resnet50``) with ``teacher_weights``; default: the shipped MobileNetV1.
        teacher_weights: the ``state_dict`` file of a ``torchvision:`` teacher (loaded with
            ``weights_only=True``; its classification layer is dropped).
        teacher_mean, teacher_std: normalisation of a float-input teacher file (on [0, 1]
            pixels); a quantized-input teacher gets raw pixels without them.
        student, width, image_size, dim: the student recipe (see :data:`STUDENTS`).
        views: cached augmented views per training image (view 0 = centre crop).
        distill: training recipe.
        select_fraction: share of the training images held out to pick the kept epoch on
            (default 0.1; 0: pick on the validation images, which are also where seen-label
            quality is reported, so that figure is then slightly optimistic).
        whiten: the encoder's whitening (:mod:`.whiten_step`; within-label when the training
            images have labels, else total): ``"auto"`` picks the power on the epoch selection
            images, ``"off"`` ships none, a number in (0, 1] forces it.
        quick: a tiny configuration (minutes) for tests and demos: 96 px, 2 views, 2 epochs,
            at most 8 images per label, one quantization remedy, gate failures allowed.
        calibration_images: training images for int8 calibration; the first rungs of each
            ladder use 256 of them, the "more images" rungs all.
        allow_gate_failure: ship without an int8 artifact whose gate fails (recorded in the
            manifest) instead of failing the export.
        resume: continue from the work directory; force: replace ``out``.
        events: an events CSV ``user_id,item_id[,...]`` (ids of ``images``' items): also
            train the personalised scorer (read and checked before anything slow starts).
        scorer: how the scorer is split, trained and gated (``quick`` caps its epochs at 3).
    """

    images: Path
    out: Path
    items: Optional[Path] = None
    extra_images: tuple[Path, ...] = ()
    eval_unseen: Optional[Path] = None
    teacher: Optional[Path] = None
    teacher_mean: Optional[tuple[float, float, float]] = None
    teacher_std: Optional[tuple[float, float, float]] = None
    teacher_weights: Optional[Path] = None
    student: str = "mobilenet_v3_small"
    width: float = 1.0
    image_size: int = 192
    dim: int = 128
    views: int = 4
    distill: DistillConfig = field(default_factory=DistillConfig)
    quick: bool = False
    calibration_images: int = 768
    val_fraction: float = 0.1
    select_fraction: float = 0.1
    whiten: Union[str, float] = "auto"
    allow_gate_failure: bool = False
    resume: bool = False
    force: bool = False
    work_dir: Optional[Path] = None
    workers: int = 2
    seed: int = 0
    max_per_label: Optional[int] = None
    events: Optional[Path] = None
    scorer: ScorerExportOptions = field(default_factory=ScorerExportOptions)

    def resolved(self) -> ExportOptions:
        """Apply ``quick`` and defaults; check ``whiten``."""
        opts = self
        if self.whiten not in ("auto", "off") and not (
                isinstance(self.whiten, (int, float)) and 0 < self.whiten <= 1):
            raise ExportError(f"whiten must be 'auto', 'off' or a power in (0, 1]; got "
                              f"{self.whiten!r}.")
        if self.quick:
            opts = replace(opts, image_size=min(opts.image_size, 96), views=min(opts.views, 2),
                           calibration_images=min(opts.calibration_images, 32),
                           max_per_label=opts.max_per_label or 8, allow_gate_failure=True,
                           distill=replace(opts.distill, epochs=min(opts.distill.epochs, 2),
                                           batch_size=16, patience=2, queue_size=256),
                           scorer=replace(opts.scorer, config=replace(
                               opts.scorer.config, epochs=min(opts.scorer.config.epochs, 3))))
        return opts


