"""What ``edgerec export`` does, as option groups that compose.

:class:`ExportOptions` holds what to read and write and one group per concern: the data
(:class:`DataOptions`), the teacher (:class:`TeacherOptions`), the student
(:class:`StudentOptions`, resolved against the :data:`STUDENTS` registry once), the
distillation recipe (:class:`DistillConfig`), int8 quantization (:class:`QuantizationOptions`,
with the CPU :class:`~edgerec.export.artifacts.quantize_onnx.QuantTarget`) and the scorer
(:class:`~edgerec.export.scorer.bundle.ScorerExportOptions`); the teacher's features on Ray
(:class:`~edgerec.export.distill.cache_ray.RayCacheOptions`) where one machine is too slow.
The CLI's defaults are read from these dataclasses. Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from edgerec.export.artifacts.quantize_onnx import QuantTarget
from edgerec.export.distill.cache_ray import RayCacheOptions
from edgerec.export.errors import ExportError
from edgerec.runtimes import Engine

if TYPE_CHECKING:
    from edgerec.export.scorer.artifacts import ScorerGate

__all__ = [
    "DEFAULT_TEACHER",
    "STUDENTS",
    "BehaviourOptions",
    "DataOptions",
    "DistillConfig",
    "ExportOptions",
    "NegativeSampling",
    "QuantizationOptions",
    "RayCacheOptions",
    "ScorerConfig",
    "ScorerExportOptions",
    "StudentConfig",
    "StudentOptions",
    "TeacherOptions",
    "default_teacher",
    "resolve_student",
]

DEFAULT_TEACHER = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def default_teacher() -> Optional[Path]:
    """The shipped MobileNetV1 teacher, when this is a source checkout (or ``$EDGEREC_TEACHER``)."""
    env = os.environ.get("EDGEREC_TEACHER")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1] / "examples" / "sample" / "teacher"
    candidate = here / DEFAULT_TEACHER
    return candidate if candidate.is_file() else None


# --------------------------------------------------------------------------- the student


@dataclass(frozen=True)
class StudentConfig:
    """A student recipe (:class:`edgerec.export.distill.student.StudentEncoder`).

    Attributes:
        arch: ``"mobilenet_v3_small"``, ``"mobilenet_v3_large"``, ``"mobilenet_v2"`` or
            ``"mobilenet_v1"`` (the last two with TensorFlow's SAME padding on their stride-2
            convolutions, as the TFLite weights :attr:`init` loads were trained with).
        width: width multiplier of the torchvision body.
        dim: embedding dimension D.
        image_size: square input side the student is trained and served at, in pixels.
        hidden: width of the head's hidden layer (0: a single linear layer).
        dropout: dropout before the embedding layer (training only).
        bn_momentum: BatchNorm momentum for every BatchNorm layer.
        init: ImageNet weights for the body (``mobilenet_v2`` / ``mobilenet_v1`` width 1.0
            only): the MobileNetV2 1.0 classifier ``.tflite`` (the shipped
            ``mobilenet_v2_1.0_224_quant.tflite``) or the MobileNetV1 teacher ``.tflite``,
            read by :mod:`edgerec.export.distill.tflite_weights`. None: random weights.
    """

    arch: str = "mobilenet_v3_small"
    width: float = 1.0
    dim: int = 128
    image_size: int = 192
    hidden: int = 1024
    dropout: float = 0.1
    bn_momentum: float = 0.1
    init: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.init is not None:
            object.__setattr__(self, "init", Path(self.init))


STUDENTS: dict[str, StudentConfig] = {
    "mobilenet_v3_small": StudentConfig(),
    "mobilenet_v3_small_160": StudentConfig(image_size=160),
    "mobilenet_v3_small_075": StudentConfig(width=0.75),
    "mobilenet_v3_large": StudentConfig(arch="mobilenet_v3_large"),
    # ~153 M MACs at 160 px (the MobileNetV1 teacher: 568 M); meant for init= ImageNet weights
    "mobilenet_v2_160": StudentConfig(arch="mobilenet_v2", image_size=160, hidden=0),
    # ~300 M MACs at 224 px: the same body at the teacher's resolution, for photos whose
    # detail a 160-px input loses (posters: README "Exporting without labels")
    "mobilenet_v2_224": StudentConfig(arch="mobilenet_v2", image_size=224, hidden=0),
    # ~290 M MACs at 160 px; meant for init= the MobileNetV1 teacher's own weights
    "mobilenet_v1_160": StudentConfig(arch="mobilenet_v1", image_size=160, hidden=0),
}
"""Named recipes (the first is the export's default: 192 px, 128-d, width 1.0)."""


def resolve_student(name: str = "mobilenet_v3_small", **overrides: Any) -> StudentConfig:
    """The registered recipe ``name`` with the ``overrides`` that are not None.

    Raises:
        ValueError: an unknown name or field.
    """
    if name not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; registered: {sorted(STUDENTS)}")
    return replace(STUDENTS[name], **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class StudentOptions:
    """The encoder the export ships.

    Attributes:
        name: a :data:`STUDENTS` recipe.
        width, image_size, dim: overrides of the recipe (None: the recipe's).
        init: ImageNet weights for the body (:attr:`StudentConfig.init`; None: the recipe's,
            i.e. random weights).
        whiten: the encoder's whitening (within-label when the training images have labels,
            else PCA): ``"auto"`` picks the power on the epoch-selection images, ``"off"``
            ships none, a number in (0, 1] forces it.
    """

    name: str = "mobilenet_v3_small"
    width: Optional[float] = None
    image_size: Optional[int] = None
    dim: Optional[int] = None
    init: Optional[Path] = None
    whiten: Union[str, float] = "auto"

    def config(self) -> StudentConfig:
        """The recipe with the overrides applied (:func:`resolve_student`)."""
        try:
            return resolve_student(self.name, width=self.width, image_size=self.image_size,
                                   dim=self.dim, init=self.init)
        except ValueError as exc:
            raise ExportError(f"{exc}; choose --student from {sorted(STUDENTS)}.") from None


# --------------------------------------------------------------------------- the others


@dataclass(frozen=True)
class DataOptions:
    """Which photos train, select, validate and report.

    Attributes:
        items: an optional CSV ``item_id,path[,label][,split]`` (paths relative to the images
            folder); a ``split`` column (train/validation) is honoured, else a deterministic
            split is made: stratified by label, or at random (by item id) when the images
            have no labels to train with.
        extra_images: folders of extra photos used for distillation only (labels ignored).
        eval_unseen: a labelled folder never trained on, measured in the report.
        val_fraction: share of each label (of the images, when unlabelled) held out for
            validation.
        select_fraction: share of the training images held out to pick the kept epoch on
            (0: pick on the validation images, which are also where quality is reported, so
            that figure is then slightly optimistic).
        max_per_label: at most this many training images per label (None: all).
        max_unlabelled: at most this many unlabelled training images (None: all).
        use_labels: train with the images' labels when they have some; False trains as if
            they had none (random split, teacher-neighbour agreement picks the epoch and the
            whitening, int8 gated on neighbour overlap) and uses the labels only to measure
            same-label mAP@10 in the report.
    """

    items: Optional[Path] = None
    extra_images: tuple[Path, ...] = ()
    eval_unseen: Optional[Path] = None
    val_fraction: float = 0.1
    select_fraction: float = 0.1
    max_per_label: Optional[int] = None
    max_unlabelled: Optional[int] = None
    use_labels: bool = True


@dataclass(frozen=True)
class TeacherOptions:
    """The model the student learns from.

    Attributes:
        source: a ``.tflite``/``.onnx`` model or a bundle, or ``torchvision:ARCH`` (e.g.
            ``torchvision:resnet50``) with ``weights``; None: the shipped MobileNetV1.
        weights: the ``state_dict`` file of a ``torchvision:`` teacher (loaded with
            ``weights_only=True``; its classification layer is dropped; never downloaded).
        mean, std: normalisation of a float-input teacher (on [0, 1] pixels); a
            quantized-input teacher gets raw pixels without them.
        output: the name of a tensor of a ``.tflite`` teacher to use as its embedding
            instead of its output (e.g. ``MobilenetV2/Logits/AvgPool``, the pooled features
            of the shipped MobileNetV2 classifier); None: the model's output.
    """

    source: Optional[Path] = None
    weights: Optional[Path] = None
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    output: Optional[str] = None


@dataclass(frozen=True)
class DistillConfig:
    """The distillation recipe (the loss terms: :mod:`edgerec.export.distill.train`).

    ``views``: cached augmented views per training image (view 0 = the device's centre crop).
    ``target_mean``: how much of each view's teacher target is the mean of its image's views
    (0: the view's own teacher vector; 1: the normalised mean of the image's ``views`` teacher
    vectors, a test-time-augmentation ensemble of the teacher, for every view of the image).
    ``w_behaviour``: with the export's events, the weight of the co-interaction term: half of
    each batch is a co-occurrence neighbour of the other half (one of the
    ``behaviour_neighbours`` best, drawn by score, on the events' training side), and each
    image's similarities over the batch, at temperature ``tau_behaviour``, should put it next
    to its neighbours (0: off, the batches are random).
    ``max_minutes``: the training's wall-time budget (None: none); checked after each epoch. A
    resumed export counts the minutes its interrupted run already trained.
    """

    epochs: int = 24
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    w_relational: float = 1.0
    w_cosine: float = 0.5
    w_label: float = 1.0
    tau_teacher: float = 0.05
    tau_student: float = 0.05
    queue_size: int = 4096
    label_scale: float = 16.0
    label_smoothing: float = 0.1
    label_decay_from: float = 0.6  # training progress (0..1) after which w_label ramps ...
    w_label_end: float = 0.5  # ... linearly down to this weight at the end
    ema_decay: float = 0.995  # > 0: evaluate and keep an exponential moving average of weights
    patience: int = 8
    max_minutes: Optional[float] = None
    seed: int = 0
    threads: int = 2
    views: int = 4
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    target_mean: float = 0.0
    w_behaviour: float = 0.0
    tau_behaviour: float = 0.1
    behaviour_neighbours: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_mean <= 1.0:
            raise ValueError(f"target_mean must be in [0, 1], got {self.target_mean!r}")
        if self.w_behaviour < 0:
            raise ValueError(f"w_behaviour must be >= 0, got {self.w_behaviour!r}")
        if self.tau_behaviour <= 0:
            raise ValueError(f"tau_behaviour must be > 0, got {self.tau_behaviour!r}")
        if self.behaviour_neighbours < 1:
            raise ValueError("behaviour_neighbours must be at least 1, got "
                             f"{self.behaviour_neighbours!r}")


@dataclass(frozen=True)
class QuantizationOptions:
    """int8 files and their gates.

    Attributes:
        target: the CPU the int8 ONNX files are built for (activation type and weight range);
            the LiteRT files are the same for every target.
        calibration_images: training images for int8 calibration; the first rungs of each
            ladder use 256 of them, the "more images" rungs all.
        allow_gate_failure: ship without an int8 file whose gate fails (recorded in the
            manifest) instead of failing the export.
        qat_steps: steps of the quantization-aware fine-tune that ends the ONNX int8 ladder,
            tried only when every post-training rung missed the gate
            (:mod:`edgerec.export.artifacts.qat`); 0 turns that rung off.
        qat_minutes: the fine-tune's wall-time budget (it stops at whichever comes first).
    """

    target: QuantTarget = QuantTarget.X86_AVX2
    calibration_images: int = 768
    allow_gate_failure: bool = False
    qat_steps: int = 300
    qat_minutes: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", QuantTarget(self.target))
        if isinstance(self.qat_steps, bool) or not isinstance(self.qat_steps, int) \
                or self.qat_steps < 0:
            raise ValueError(f"qat_steps must be an int >= 0 (0: no QAT rung), got "
                             f"{self.qat_steps!r}")
        if not self.qat_minutes > 0:
            raise ValueError(f"qat_minutes must be > 0, got {self.qat_minutes!r}")


# --------------------------------------------------------------------------- the scorer


@dataclass(frozen=True)
class NegativeSampling:
    """Negatives drawn per positive, per epoch (see the module docstring).

    ``hard`` defaults to 0: when a user's items share a look (one owner's background and camera
    in clothing-small), the nearest items the user has no event on are mostly their own unseen
    items, i.e. false negatives, and hard negatives lowered validation NDCG there. Turn them on
    where unobserved look-alikes really are uninteresting (e.g. logged impressions).
    ``uniform`` 16 (and no popularity negatives) measured best of the few recipes tried
    (README, "Personalised scorer"; benchmarks/results/scorer_runs.jsonl); ``popular`` matters
    where popularity is skewed.
    """

    uniform: int = 16
    popular: int = 0
    hard: int = 0
    hard_pool: int = 50

    def __post_init__(self) -> None:
        for name in ("uniform", "popular", "hard", "hard_pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.uniform + self.popular + self.hard == 0:
            raise ValueError("at least one negative per positive is needed")

    @property
    def per_positive(self) -> int:
        """Negatives per example and epoch (a few unlucky draws may be dropped)."""
        return self.uniform + self.popular + self.hard


@dataclass(frozen=True)
class ScorerConfig:
    """The scorer recipe.

    Attributes:
        hidden: widths of the deep path's hidden layers.
        dropout: dropout after each hidden ReLU (training only).
        lr: Adam learning rate.
        weight_decay: Adam L2 on the deep path.
        batch_size: rows per step.
        epochs: epochs each validation fold trains (the refit trains the best of them).
        epoch_rows: rows (positives and negatives) per epoch at most; with more examples an
            epoch takes the next slice of a shuffled cycle through them (module docstring).
        max_minutes: wall-time budget of the whole training: each fold may use
            ``max_minutes / (folds + 1)``, the refit the rest (a fold or refit that runs out
            stops after its current epoch; ``stopped`` says so).
        negatives: :class:`NegativeSampling` per positive.
        inner_product_prior: start from ``prior_scale * u.v`` (see the module docstring).
        prior_scale: the logit per unit of ``u.v`` at the start.
        half_life_days: recency half-life of the user vector (the device's default is 30).
        val_fraction: share of each user's training items a validation fold holds out
            (0: no validation, train ``epochs`` epochs on everything).
        folds: validation folds (at most) whose mean NDCG curve picks the epoch count.
        val_relevant: no further fold once the folds' validation sets hold this many
            held-out items together.
        val_users: validation users per fold at most (a seeded sample).
        candidates: validation re-ranks each user's top-``candidates`` items by ``u . v`` (the
            device's C, :class:`~edgerec.sdk.RecommenderOptions`).
        refit: retrain on all training events for that many epochs (else: fold 0's fit).
        user_balance: examples of a user with ``n`` examples weigh ``n ** -user_balance``
            (0: every example alike, so a bulk user dominates; 1: every user alike, as NDCG
            averages over users).
        k: the NDCG cut-off.
        seed: sampling, initialisation and split seed (validation folds use seed + 1, ...).
        threads: torch threads while training (a network this small gains nothing from more,
            and on a busy machine loses a lot).
    """

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 20
    epoch_rows: int = 65_536
    max_minutes: float = 20.0
    negatives: NegativeSampling = field(default_factory=NegativeSampling)
    inner_product_prior: bool = True
    prior_scale: float = 10.0
    half_life_days: float = 30.0
    val_fraction: float = 0.2
    folds: int = 3
    val_relevant: int = 2000
    val_users: int = 300
    candidates: int = 500
    refit: bool = True
    user_balance: float = 0.0
    k: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be positive widths, got {self.hidden!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        for name in ("epochs", "batch_size", "k", "threads", "folds", "epoch_rows",
                     "val_relevant", "val_users", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


@dataclass(frozen=True)
class BehaviourOptions:
    """The behaviour signals learned from the events beside the scorer
    (:mod:`edgerec.export.behaviour`), shipped in the bundle.

    Attributes:
        enabled: learn them (False: the bundle stays pixels-only, as before they existed).
        dim: d of the collaborative (ALS) item vectors, stored int8 (d bytes per item).
        neighbours: K co-occurrence neighbours kept per item (6 bytes each).
        popularity_half_life_days: an event this much older than the newest counts half.
        regularization, alpha, iterations: the ALS (``implicit``): L2, confidence
            ``1 + alpha * weight``, sweeps.
        shrink: co-occurrence score ``c_ij / (sqrt(n_i n_j) + shrink)``.
        session_gap_minutes: where every event has a timestamp, a user's events with gaps of at
            most this long form a session, and items sharing sessions add
            ``session_weight`` times their session co-occurrence score (the same formula over
            sessions) to their user-level one; 0 (the default): sessions are not used (on
            MovieLens, gaps of 30 and 240 minutes changed the fusion's validation NDCG@20 by
            -0.001 and +0.001: noise, so off).
        session_weight: see ``session_gap_minutes``.
        ridge: the image -> collaborative mapping's L2 penalties, one chosen on held-out warm
            items.
        validation_users: at most this many training users (seeded) whose newest training
            item is held out to fit the fusion weights.
        validation_cuts: how many newest training items per user are held out in turn (cut
            ``k`` learns the signals without the newest ``k`` items and holds out the ``k``-th):
            more lists to fit the fusion on; the choice between fusions is measured on cut 1.
        fusion: ``"auto"`` (the linear listwise fusion or the MLP, whichever has the higher
            cross-validated NDCG@20 on the validation cut), ``"linear"`` or ``"mlp"``.
        fusion_hidden: the MLP's hidden width (ReLU; a linear skip beside it).
        fusion_epochs: the MLP's epochs (BCE, Adam, L2, dropout; negatives: the other
            candidates the device's generator gives the same user).
        fusion_folds: user folds of the cross-validation that chooses the fusion.
        seed: ALS and sampling seed.
    """

    enabled: bool = True
    dim: int = 32
    neighbours: int = 4
    popularity_half_life_days: float = 30.0
    regularization: float = 0.1
    alpha: float = 1.0
    iterations: int = 30
    shrink: float = 1.0
    session_gap_minutes: float = 0.0
    session_weight: float = 1.0
    ridge: tuple[float, ...] = (0.1, 1.0, 10.0)
    validation_users: int = 1000
    validation_cuts: int = 3
    fusion: str = "auto"
    fusion_hidden: int = 16
    fusion_epochs: int = 30
    fusion_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fusion not in ("auto", "linear", "mlp"):
            raise ValueError(f"behaviour fusion must be 'auto', 'linear' or 'mlp', got "
                             f"{self.fusion!r}")
        if not 1 <= self.fusion_hidden <= 64 or self.fusion_folds < 2:
            raise ValueError("behaviour fusion_hidden must be in 1..64 and fusion_folds >= 2")
        for name in ("dim", "neighbours", "iterations", "validation_users", "validation_cuts",
                     "fusion_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"behaviour {name} must be a positive int, got {value!r}")
        for name in ("popularity_half_life_days", "regularization", "alpha"):
            if not 0 < float(getattr(self, name)) < float("inf"):
                raise ValueError(f"behaviour {name} must be a positive number")
        if not (0 <= self.session_gap_minutes < float("inf")
                and 0 <= self.session_weight < float("inf")):
            raise ValueError("behaviour session_gap_minutes and session_weight must be >= 0")
        if self.shrink < 0 or not self.ridge or any(r <= 0 for r in self.ridge):
            raise ValueError("behaviour shrink must be >= 0 and ridge positive numbers")


@dataclass(frozen=True)
class ScorerExportOptions:
    """How the scorer is trained, split, gated and exported.

    Attributes:
        config: the training recipe (:class:`ScorerConfig`; its ``candidates`` is the C the
            parity gate measures and the bundle records for the device).
        test_fraction: share of each user's items held out for ``edgerec evaluate`` and never
            trained on (0: train on everything, for production; recorded).
        split_seed: seed of that split.
        user_column, item_column: the events CSV's id columns (e.g. ``owner_id``).
        gate: what int8 files must reach (None: the defaults of
            :class:`~edgerec.export.scorer.artifacts.ScorerGate`); fail_on_gate: fail the export
            instead of leaving a failing int8 file out.
        int8: engines to build int8 files for.
        holdout: ``"fraction"`` (hold out ``test_fraction`` of each user's items) or
            ``"leave-last-out"`` (each user's newest item, what ``edgerec evaluate
            --protocol leave-last-out`` measures; ``test_fraction`` is not used).
        behaviour: the behaviour signals learned beside the scorer (:class:`BehaviourOptions`).
    """

    config: ScorerConfig = field(default_factory=ScorerConfig)
    test_fraction: float = 0.2
    split_seed: int = 0
    user_column: str = "user_id"
    item_column: str = "item_id"
    gate: Optional[ScorerGate] = None
    fail_on_gate: bool = False
    int8: tuple[Engine, ...] = (Engine.ONNX, Engine.TFLITE)
    holdout: str = "fraction"
    behaviour: BehaviourOptions = field(default_factory=BehaviourOptions)

    def __post_init__(self) -> None:
        if self.holdout not in ("fraction", "leave-last-out"):
            raise ValueError(f"holdout must be 'fraction' or 'leave-last-out', got "
                             f"{self.holdout!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction!r}")
        object.__setattr__(self, "int8", tuple(Engine(e) for e in self.int8))


# --------------------------------------------------------------------------- the export


@dataclass(frozen=True)
class ExportOptions:
    """What ``edgerec export`` reads and writes, and how (the CLI's flags map onto the groups).

    Attributes:
        images: image folder (one sub-folder per label) or the root for ``data.items`` paths.
        out: bundle directory to create.
        data, teacher, student, distill, quantization, scorer: the groups.
        events: an events CSV ``user_id,item_id[,...]`` (ids of ``images``' items): also
            train the personalised scorer (read and checked before anything slow starts).
        quick: a tiny configuration (minutes) for tests and demos: 96 px, 2 views, 2 epochs,
            at most 8 images per label (or 160 unlabelled), one quantization remedy, gate
            failures allowed; a smoke test, not a model to ship.
        resume: continue from the work directory; force: replace ``out``.
        work_dir: caches and checkpoints (None: ``<out>.work`` beside the bundle).
        workers: processes computing the teacher's features.
        ray: compute the teacher's features on Ray actors instead (None: the ``workers``
            local processes); the same cache either way, and either resumes the other's.
        seed: the splits' and the caches' seed.
    """

    images: Path
    out: Path
    data: DataOptions = field(default_factory=DataOptions)
    teacher: TeacherOptions = field(default_factory=TeacherOptions)
    student: StudentOptions = field(default_factory=StudentOptions)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quantization: QuantizationOptions = field(default_factory=QuantizationOptions)
    scorer: ScorerExportOptions = field(default_factory=lambda: ScorerExportOptions())
    events: Optional[Path] = None
    quick: bool = False
    resume: bool = False
    force: bool = False
    work_dir: Optional[Path] = None
    workers: int = 2
    ray: Optional[RayCacheOptions] = None
    seed: int = 0

    def resolved(self) -> ExportOptions:
        """Apply ``quick``; check ``student.whiten`` and the student's name."""
        whiten = self.student.whiten
        if whiten not in ("auto", "off") and not (
                isinstance(whiten, (int, float)) and 0 < whiten <= 1):
            raise ExportError(f"whiten must be 'auto', 'off' or a power in (0, 1]; got "
                              f"{whiten!r}.")
        config = self.student.config()
        if not self.quick:
            return self
        return replace(
            self,
            student=replace(self.student, image_size=min(config.image_size, 96)),
            data=replace(self.data, max_per_label=self.data.max_per_label or 8,
                         max_unlabelled=self.data.max_unlabelled or 160),
            distill=replace(self.distill, epochs=min(self.distill.epochs, 2), batch_size=16,
                            patience=2, queue_size=256, views=min(self.distill.views, 2)),
            quantization=replace(self.quantization, allow_gate_failure=True,
                                 calibration_images=min(self.quantization.calibration_images,
                                                        32)),
            scorer=replace(self.scorer, config=replace(
                self.scorer.config, epochs=min(self.scorer.config.epochs, 3))))
