"""The bundle contract: everything the export writes and the device reads, in one file.

``manifest.json`` holds::

    format_version   int: 1, or 2 when the encoder has a weights file (e.g. its whitening),
                     which an edgerec that reads only format 1 would silently skip
                     (:func:`format_version_for`)
    name             free text
    embedding_dim    D of the encoder's output vectors
    encoder_id       sha256 over the preprocessing and the encoder artifacts' and weights'
                     hashes (:func:`compute_encoder_id`): the identity a catalog records
    preprocessing    :class:`Preprocessing`: how a photo becomes the model's input tensor
    artifacts        one :class:`ArtifactSpec` per model file
    weights          optional: one :class:`WeightsSpec` per plain-array weights file, in one
                     of :data:`WEIGHTS_FORMATS` (read by :func:`read_numeric_npz`)
    scorer           optional: :class:`ScorerRecord`, how the bundle's scorer was trained and
                     how the device must rank with it (candidates C, the user-vector recipe,
                     the held-out split ``edgerec evaluate`` rebuilds)
    behaviour        optional: :class:`BehaviourRecord`, the behaviour signals learned from the
                     events (one hashed ``.npz`` in :data:`BEHAVIOUR_FORMAT`, the fusion weights)
                     or why there are none; a reader that does not know the key ranks as before
    teacher, metrics, recipe   free-form JSON objects written by the export (for people)
    created, edgerec_version   provenance

Parsing is strict: anything missing or of the wrong type raises ``BundleError`` naming it.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import math
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, Optional, Union

import numpy as np
from edgerec.runtimes import Engine, TensorSpec
from edgerec.sdk.errors import BundleError, ModelError

__all__ = [
    "BEHAVIOUR_FORMAT",
    "DEFAULT_EVENT_WEIGHTS",
    "FORMAT_VERSION",
    "FUSION_MAX_HIDDEN",
    "MLP_WEIGHTS_FORMAT",
    "WEIGHTS_FORMATS",
    "WHITENING_FORMAT",
    "ArtifactSpec",
    "BehaviourRecord",
    "FusionRecord",
    "HoldoutRecord",
    "Interpolation",
    "Layout",
    "Manifest",
    "Precision",
    "Preprocessing",
    "ResizeMode",
    "Role",
    "ScorerRecord",
    "UserVectorRecipe",
    "WeightsSpec",
    "compute_encoder_id",
    "format_version_for",
    "read_numeric_npz",
]

FORMAT_VERSION = 2  # the newest format this edgerec reads (and writes when needed)
MANIFEST_NAME = "manifest.json"


class Interpolation(str, enum.Enum):
    """Resampling filter for the resize (PIL's, with antialiasing when shrinking)."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


class ResizeMode(str, enum.Enum):
    """How the image becomes a square before the model sees it."""

    SHORTER_CENTER_CROP = "shorter_center_crop"  # keep aspect, shorter side, centre crop
    STRETCH = "stretch"  # ignore aspect ratio


class Layout(str, enum.Enum):
    """Axis order of the model's image input."""

    NCHW = "nchw"
    NHWC = "nhwc"


@dataclass(frozen=True)
class Preprocessing:
    """How a photo becomes the model's input tensor; export and device apply the same steps
    (:func:`edgerec.sdk.preprocess`):

    1. decode (path, bytes, file object, PIL image or uint8 array), apply the EXIF orientation,
       convert any mode to RGB (alpha composited on white);
    2. resize so the shorter side is ``round(input_size / crop_pct)`` (or stretch to a square
       when ``resize`` is ``stretch``), then centre-crop ``input_size`` x ``input_size``;
    3. scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel (RGB order);
    4. lay out as NCHW or NHWC float32 for the artifact (:class:`Layout`).

    Attributes:
        input_size: side of the square the model takes, in pixels.
        crop_pct: shorter side is resized to ``round(input_size / crop_pct)`` before the crop;
            1.0 resizes the shorter side straight to ``input_size``.
        resize: :class:`ResizeMode`.
        interpolation: :class:`Interpolation`.
        mean: per-channel (R, G, B) mean, on pixels scaled to [0, 1].
        std: per-channel (R, G, B) standard deviation, on pixels scaled to [0, 1].
    """

    input_size: int = 224
    crop_pct: float = 1.0
    resize: ResizeMode = ResizeMode.SHORTER_CENTER_CROP
    interpolation: Interpolation = Interpolation.BILINEAR
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", ResizeMode(self.resize))
        object.__setattr__(self, "interpolation", Interpolation(self.interpolation))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not 8 <= int(self.input_size) <= 4096:
            raise ValueError(f"input_size must be in [8, 4096], got {self.input_size}.")
        if not 0.1 <= self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in [0.1, 1.0], got {self.crop_pct}.")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need exactly 3 values (R, G, B).")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in ``manifest.json``."""
        return {
            "input_size": int(self.input_size),
            "crop_pct": float(self.crop_pct),
            "resize": self.resize.value,
            "interpolation": self.interpolation.value,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``ValueError`` on bad data."""
        return cls(
            input_size=int(data["input_size"]),
            crop_pct=float(data.get("crop_pct", 1.0)),
            resize=ResizeMode(data.get("resize", ResizeMode.SHORTER_CENTER_CROP.value)),
            interpolation=Interpolation(data.get("interpolation", "bilinear")),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
        )


# --------------------------------------------------------------------------- weights formats

WHITENING_FORMAT = "edgerec.encoder.whitening/1"
"""Encoder whitening: ``mean`` (D,), ``projection`` (D, D), ``power`` () float32
(:class:`edgerec.sdk.Whitening`)."""

MLP_WEIGHTS_FORMAT = "edgerec.scorer.mlp/1"
"""The scorer's folded MLP: ``first_{u,v,uv}`` (H1, D), ``first_b`` (H1,), ``skip_{u,v,uv}``
(D,), ``skip_b`` (), ``dense_{i}_w`` / ``dense_{i}_b`` float32 (:class:`edgerec.sdk.MlpWeights`)."""

WEIGHTS_FORMATS = {WHITENING_FORMAT: "encoder", MLP_WEIGHTS_FORMAT: "scorer"}
"""Every weights format this edgerec reads, with the role it belongs to."""


def read_numeric_npz(data: bytes, what: str, remedy: str) -> dict[str, np.ndarray]:
    """The named arrays of ``.npz`` bytes, read with ``allow_pickle=False``.

    Raises:
        ModelError: the bytes are not an ``.npz`` or hold object arrays; the message names
            ``what`` (e.g. "scorer weights") and ends with ``remedy`` (e.g. "export the
            scorer again").
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"the {what} is not a numeric .npz ({exc}); {remedy}") from None


class Role(str, enum.Enum):
    """What an artifact does."""

    ENCODER = "encoder"  # image -> embedding
    SCORER = "scorer"  # (user vector, item vectors) -> interest score


class Precision(str, enum.Enum):
    """Numeric precision of an artifact's weights and compute."""

    FP32 = "fp32"
    INT8 = "int8"  # any 8-bit quantized model (int8 or uint8 tensors)


@dataclass(frozen=True)
class ArtifactSpec:
    """One model file in a bundle.

    Attributes:
        file: file name relative to the bundle directory (no sub-paths leaving it).
        sha256: hex digest of the file's bytes.
        role: :class:`Role`.
        precision: :class:`Precision`.
        engine: :class:`~edgerec.runtimes.Engine` that runs the file.
        inputs: the model's input tensors.
        outputs: the model's output tensors.
        layout: image input layout (encoders only).
        output: name of the output that holds the embedding or score.
        size_bytes: file size.
    """

    file: str
    sha256: str
    role: Role
    precision: Precision
    engine: Engine
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output: str
    layout: Optional[Layout] = None
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "role": self.role.value,
            "precision": self.precision.value,
            "engine": self.engine.value,
            "layout": self.layout.value if self.layout else None,
            "output": self.output,
            "size_bytes": self.size_bytes,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactSpec:
        def tensor(t: dict[str, Any]) -> TensorSpec:
            return TensorSpec(
                name=str(t["name"]),
                shape=tuple(None if d is None else int(d) for d in t["shape"]),
                dtype=str(t["dtype"]),
                scale=None if t.get("scale") is None else float(t["scale"]),
                zero_point=None if t.get("zero_point") is None else int(t["zero_point"]),
            )

        return cls(
            file=str(data["file"]),
            sha256=str(data["sha256"]).lower(),
            role=Role(data["role"]),
            precision=Precision(data["precision"]),
            engine=Engine(data["engine"]),
            inputs=tuple(tensor(t) for t in data["inputs"]),
            outputs=tuple(tensor(t) for t in data["outputs"]),
            output=str(data["output"]),
            layout=Layout(data["layout"]) if data.get("layout") else None,
            size_bytes=int(data.get("size_bytes", 0)),
        )

    @property
    def key(self) -> str:
        """Short name, e.g. ``encoder/onnx/int8``."""
        return f"{self.role.value}/{self.engine.value}/{self.precision.value}"


@dataclass(frozen=True)
class WeightsSpec:
    """One plain-array weights file in a bundle: an ``.npz`` of numeric arrays that the device
    reads with ``np.load(allow_pickle=False)`` (nothing is unpickled), hashed like an artifact.

    Attributes:
        file: file name relative to the bundle directory.
        sha256: hex digest of the file's bytes.
        role: :class:`Role` of the model the weights belong to.
        precision: :class:`Precision` of the arrays.
        format: what the arrays mean and how they are named, e.g. ``"edgerec.scorer.mlp/1"``
            (the reader refuses a format it does not know).
        size_bytes: file size.
    """

    file: str
    sha256: str
    role: Role
    precision: Precision
    format: str
    size_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "role": self.role.value,
                "precision": self.precision.value, "format": self.format,
                "size_bytes": self.size_bytes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightsSpec:
        return cls(file=str(data["file"]), sha256=str(data["sha256"]).lower(),
                   role=Role(data["role"]), precision=Precision(data["precision"]),
                   format=str(data["format"]), size_bytes=int(data.get("size_bytes", 0)))

    @property
    def key(self) -> str:
        """Short name, e.g. ``scorer/weights/fp32``."""
        return f"{self.role.value}/weights/{self.precision.value}"


def compute_encoder_id(pre: Preprocessing, artifacts: Iterable[ArtifactSpec],
                       weights: Iterable[WeightsSpec] = ()) -> str:
    """Identity of an encoder: sha256 over its preprocessing and its encoder files' hashes
    (model files, then encoder weights files such as its whitening).

    Every engine and precision of one exported network shares it, so a catalog built with the
    fp32 ONNX artifact accepts queries from the int8 TFLite one of the same bundle.
    """
    h = hashlib.sha256(json.dumps(pre.to_dict(), sort_keys=True).encode())
    for digest in sorted(a.sha256 for a in artifacts if a.role is Role.ENCODER):
        h.update(digest.encode())
    for digest in sorted(w.sha256 for w in weights if w.role is Role.ENCODER):
        h.update(b"weights:" + digest.encode())
    return h.hexdigest()[:32]


def format_version_for(weights: Iterable[WeightsSpec]) -> int:
    """The format a new bundle is written in: 2 when its encoder has a weights file (which an
    edgerec that reads only format 1 would silently skip, returning unwhitened vectors), else 1
    (so older readers keep reading bundles that do not need the newer format)."""
    return 2 if any(w.role is Role.ENCODER for w in weights) else 1


# --------------------------------------------------------------------------- scorer record

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "view": 0.25, "click": 0.5, "add_to_cart": 1.0, "purchase": 2.0, "dismiss": -1.0,
})
"""The weight of each event kind in a user vector (negative: pushes look-alikes down)."""


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            0 < float(value) < float("inf")):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class UserVectorRecipe:
    """How a history becomes a user vector (:func:`edgerec.sdk.user_vector`): each event
    weighs ``event_weights[kind] * 0.5 ** (age / half_life_days)``, age in days from the
    history's newest event; the weighted mean of the items' vectors is L2-normalised.

    The scorer is trained on user vectors made this way, so the device must make them the same
    way: a bundle with a scorer records the recipe and the recommender uses it.
    """

    half_life_days: float = 30.0
    event_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_EVENT_WEIGHTS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "half_life_days", _positive("half_life_days",
                                                             self.half_life_days))
        weights = dict(DEFAULT_EVENT_WEIGHTS)
        for kind, w in dict(self.event_weights).items():
            if kind not in DEFAULT_EVENT_WEIGHTS:
                raise ValueError(f"unknown event kind {kind!r} in event_weights")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or w != w or abs(w) == float(
                    "inf"):
                raise ValueError(f"the weight of {kind!r} must be a finite number, got {w!r}")
            weights[kind] = float(w)
        object.__setattr__(self, "event_weights", MappingProxyType(weights))

    def to_dict(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days, "event_weights": dict(self.event_weights)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserVectorRecipe:
        return cls(half_life_days=data.get("half_life_days", 30.0),
                   event_weights=dict(data.get("event_weights") or {}))


@dataclass(frozen=True)
class HoldoutRecord:
    """The events a scorer never trained on, so that ``edgerec evaluate`` can rebuild them:
    the split (:func:`edgerec.sdk.evaluation.holdout_split` with ``strategy``, ``seed``,
    ``test_fraction``), the events file's sha256 and id columns, and the split's sizes."""

    strategy: str
    seed: int
    test_fraction: float
    events_sha256: str = ""
    user_column: str = "user_id"
    item_column: str = "item_id"
    train_events: int = 0
    test_events: int = 0
    test_users: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HoldoutRecord:
        return cls(strategy=str(data["strategy"]), seed=int(data["seed"]),
                   test_fraction=float(data["test_fraction"]),
                   events_sha256=str(data.get("events_sha256", "")),
                   user_column=str(data.get("user_column", "user_id")),
                   item_column=str(data.get("item_column", "item_id")),
                   train_events=int(data.get("train_events", 0)),
                   test_events=int(data.get("test_events", 0)),
                   test_users=int(data.get("test_users", 0)))


@dataclass(frozen=True)
class ScorerRecord:
    """How the device ranks with the bundle's scorer, and what the scorer learned from.

    Attributes:
        candidates: C, the top-C by inner product the scorer re-ranks
            (:func:`edgerec.sdk.ranking.rank_for_user`); the parity gate measured this C.
        user_vector: the :class:`UserVectorRecipe` the scorer was trained with.
        holdout: the held-out split (None: trained on every event).
        shipped: False when training ran but no trained epoch beat the inner-product order on
            validation, so the bundle carries no scorer files and the device ranks by inner
            product; ``reason`` says why.
    """

    candidates: int = 500
    user_vector: UserVectorRecipe = field(default_factory=UserVectorRecipe)
    holdout: Optional[HoldoutRecord] = None
    shipped: bool = True
    reason: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or (
                self.candidates < 1):
            raise ValueError(f"scorer candidates must be a positive int, got {self.candidates!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "user_vector": self.user_vector.to_dict(),
                "holdout": self.holdout.to_dict() if self.holdout else None,
                "shipped": self.shipped, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerRecord:
        holdout = data.get("holdout")
        return cls(candidates=int(data.get("candidates", 500)),
                   user_vector=UserVectorRecipe.from_dict(data.get("user_vector") or {}),
                   holdout=HoldoutRecord.from_dict(holdout) if holdout else None,
                   shipped=bool(data.get("shipped", True)), reason=str(data.get("reason", "")))

    @classmethod
    def from_legacy_metrics(cls, metrics: Mapping[str, Any]) -> Optional[ScorerRecord]:
        """The record of a bundle written before records existed (its split was in
        ``metrics["scorer"]["holdout"]``; the device then ranked 500 candidates)."""
        scorer = metrics.get("scorer")
        holdout = scorer.get("holdout") if isinstance(scorer, Mapping) else None
        if not isinstance(holdout, Mapping) or "strategy" not in holdout:
            return None
        return cls(holdout=HoldoutRecord.from_dict(holdout))


# --------------------------------------------------------------------------- behaviour record

BEHAVIOUR_FORMAT = "edgerec.behaviour/1"
"""The behaviour signals, one ``.npz`` keyed by item id (:mod:`edgerec.sdk.behaviour.model`):
``ids`` (N,) utf-8 bytes; ``popularity``, ``count`` (N,) float16; ``neighbours`` (N, K) int32
rows (-1: none) with ``neighbour_scores`` (N, K) float16; ``collab`` (N, d) int8 with
``collab_scale`` (d,) float32; ``gram`` (d, d), ``mapping_w`` (D, d), ``mapping_b`` (d,)
float32; ``regularization``, ``alpha`` () float32."""


FUSION_MAX_HIDDEN = 64
"""The widest hidden layer a :class:`FusionRecord` may carry (its weights live in the
manifest)."""


@dataclass(frozen=True)
class FusionRecord:
    """How the device fuses a candidate's features into one score. With ``z = (x - mean) /
    scale`` over ``features`` (names of :data:`edgerec.sdk.behaviour.FEATURES`)::

        score = bias + weights . z + output_weights . relu(hidden_weights @ z + hidden_bias)

    a linear model when ``hidden_weights`` is empty (``kind == "linear"``), else a one-hidden-
    layer MLP with a linear skip (``kind == "mlp"``; ``hidden_weights`` (H, F), ``hidden_bias``
    (H,), ``output_weights`` (H,), H <= :data:`FUSION_MAX_HIDDEN`). ``fitted``: fitted at
    export on a validation cut of the training events (``validation`` says how it measured and
    why this kind was chosen); else hand-set defaults."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    bias: float = 0.0
    fitted: bool = False
    validation: Mapping[str, Any] = field(default_factory=dict)
    hidden_weights: tuple[tuple[float, ...], ...] = ()
    hidden_bias: tuple[float, ...] = ()
    output_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.features)

        def finite(name: str, values: Any, size: int) -> tuple[float, ...]:
            out = tuple(float(v) for v in values)
            if len(out) != size or not all(v == v and abs(v) < float("inf") for v in out):
                raise ValueError(f"fusion {name} must be {size} finite numbers, got {out!r}")
            return out

        for name in ("weights", "mean", "scale"):
            object.__setattr__(self, name, finite(name, getattr(self, name), n))
        if any(s <= 0 for s in self.scale):
            raise ValueError(f"fusion scale must be positive, got {self.scale!r}")
        h = len(self.hidden_weights)
        if h > FUSION_MAX_HIDDEN:
            raise ValueError(f"fusion hidden layer has {h} units; at most {FUSION_MAX_HIDDEN}")
        object.__setattr__(self, "hidden_weights", tuple(
            finite("hidden_weights row", row, n) for row in self.hidden_weights))
        object.__setattr__(self, "hidden_bias", finite("hidden_bias", self.hidden_bias, h))
        object.__setattr__(self, "output_weights",
                           finite("output_weights", self.output_weights, h))
        object.__setattr__(self, "bias", finite("bias", (self.bias,), 1)[0])
        object.__setattr__(self, "features", tuple(str(f) for f in self.features))

    @property
    def kind(self) -> str:
        """``"mlp"`` with a hidden layer, else ``"linear"``."""
        return "mlp" if self.hidden_weights else "linear"

    def to_dict(self) -> dict[str, Any]:
        out = {"features": list(self.features), "weights": list(self.weights),
               "mean": list(self.mean), "scale": list(self.scale), "bias": self.bias,
               "fitted": self.fitted, "validation": dict(self.validation)}
        if self.hidden_weights:
            out.update(kind=self.kind, hidden_weights=[list(r) for r in self.hidden_weights],
                       hidden_bias=list(self.hidden_bias),
                       output_weights=list(self.output_weights))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionRecord:
        return cls(features=tuple(data["features"]), weights=tuple(data["weights"]),
                   mean=tuple(data["mean"]), scale=tuple(data["scale"]),
                   bias=float(data.get("bias", 0.0)), fitted=bool(data.get("fitted", False)),
                   validation=dict(data.get("validation") or {}),
                   hidden_weights=tuple(tuple(r) for r in data.get("hidden_weights") or ()),
                   hidden_bias=tuple(data.get("hidden_bias") or ()),
                   output_weights=tuple(data.get("output_weights") or ()))


@dataclass(frozen=True)
class BehaviourRecord:
    """The behaviour signals the export learned from the events, or why it learned none.

    Attributes:
        shipped: False when the events gave nothing to learn (e.g. no item with events from
            two users): no file, ``reason`` says why, the device ranks by pixels as before.
        file, sha256, size_bytes, format: the ``.npz`` (:data:`BEHAVIOUR_FORMAT`), read through
            :meth:`weights_spec` and :meth:`edgerec.sdk.Bundle.read_weights` (hash checked).
        items: N items it describes; warm_items: those with training events.
        dim: d of the collaborative vectors; neighbours: K per item.
        popularity_half_life_days: the popularity's decay (an event this much older than the
            newest training event counts half).
        fusion: how the device fuses the signals (:class:`FusionRecord`).
        holdout: the held-out split the signals never saw (as the scorer's).
        bytes_per_item: size of the per-item arrays over N; model_bytes: the rest.
    """

    shipped: bool = True
    reason: str = ""
    file: str = ""
    sha256: str = ""
    size_bytes: int = 0
    format: str = BEHAVIOUR_FORMAT
    items: int = 0
    warm_items: int = 0
    dim: int = 0
    neighbours: int = 0
    popularity_half_life_days: float = 30.0
    fusion: Optional[FusionRecord] = None
    holdout: Optional[HoldoutRecord] = None
    bytes_per_item: float = 0.0
    model_bytes: int = 0

    def __post_init__(self) -> None:
        if self.shipped and not (self.file and self.sha256):
            raise ValueError("a shipped behaviour record needs its file and sha256")

    def weights_spec(self) -> WeightsSpec:
        """The file as a :class:`WeightsSpec`, for :meth:`Bundle.read_weights`."""
        return WeightsSpec(file=self.file, sha256=self.sha256, role=Role.SCORER,
                           precision=Precision.INT8, format=self.format,
                           size_bytes=self.size_bytes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fusion"] = self.fusion.to_dict() if self.fusion else None
        out["holdout"] = self.holdout.to_dict() if self.holdout else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BehaviourRecord:
        fusion, holdout = data.get("fusion"), data.get("holdout")
        return cls(shipped=bool(data.get("shipped", True)), reason=str(data.get("reason", "")),
                   file=str(data.get("file", "")), sha256=str(data.get("sha256", "")).lower(),
                   size_bytes=int(data.get("size_bytes", 0)),
                   format=str(data.get("format", BEHAVIOUR_FORMAT)),
                   items=int(data.get("items", 0)), warm_items=int(data.get("warm_items", 0)),
                   dim=int(data.get("dim", 0)), neighbours=int(data.get("neighbours", 0)),
                   popularity_half_life_days=float(data.get("popularity_half_life_days", 30.0)),
                   fusion=FusionRecord.from_dict(fusion) if isinstance(fusion, dict) else None,
                   holdout=HoldoutRecord.from_dict(holdout) if isinstance(holdout, dict) else None,
                   bytes_per_item=float(data.get("bytes_per_item", 0.0)),
                   model_bytes=int(data.get("model_bytes", 0)))


@dataclass(frozen=True)
class Manifest:
    """Parsed ``manifest.json`` (see the module docstring)."""

    embedding_dim: int
    preprocessing: Preprocessing
    artifacts: tuple[ArtifactSpec, ...]
    encoder_id: str
    name: str = ""
    format_version: int = FORMAT_VERSION
    teacher: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    edgerec_version: str = ""
    weights: tuple[WeightsSpec, ...] = ()
    scorer: Optional[ScorerRecord] = None
    behaviour: Optional[BehaviourRecord] = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "embedding_dim": self.embedding_dim,
            "encoder_id": self.encoder_id,
            "preprocessing": self.preprocessing.to_dict(),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "teacher": self.teacher,
            "metrics": self.metrics,
            "recipe": self.recipe,
            "created": self.created,
            "edgerec_version": self.edgerec_version,
        }
        if self.weights:  # optional: manifests without weights stay as they were
            out["weights"] = [w.to_dict() for w in self.weights]
        if self.scorer is not None:
            out["scorer"] = self.scorer.to_dict()
        if self.behaviour is not None:
            out["behaviour"] = self.behaviour.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: Union[str, bytes], where: str = MANIFEST_NAME) -> Manifest:
        """Parse and validate; every problem raises ``BundleError`` saying what to do (never
        another exception: bytes that are not UTF-8, nesting deeper than the parser's stack,
        integers over 32 digits, values of the wrong type included). ``NaN`` and ``Infinity``
        are refused everywhere but in the free-form ``teacher``, ``metrics`` and ``recipe``."""
        try:
            if isinstance(text, (bytes, bytearray)):
                text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(
                f"{where} is not UTF-8 text (byte {exc.start}); the bundle is damaged: export "
                "or copy it again."
            ) from None
        try:
            data = json.loads(text, parse_int=_bounded_int)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise BundleError(
                f"{where} is not valid JSON ({reason}); the bundle is damaged: export or copy "
                "it again."
            ) from None
        if not isinstance(data, dict):
            raise BundleError(f"{where} must hold a JSON object; export or copy the bundle again.")
        for key, value in data.items():
            if key not in _FREE_FORM and not _finite(value):
                raise BundleError(f"{where} has NaN or Infinity in {key!r}; the bundle is "
                                  "damaged: export it again.")
        version = _check_version(data.get("format_version"), where)
        try:
            manifest = cls._from_fields(data, version)
        except KeyError as exc:
            raise BundleError(
                f"{where} lacks the field {exc}; the bundle is incomplete: export it again."
            ) from exc
        except (TypeError, ValueError, LookupError, ArithmeticError, AttributeError,
                RecursionError) as exc:
            raise BundleError(f"{where} has an invalid value ({str(exc)[:200]}); export it "
                              "again.") from exc
        manifest._check(where)
        return manifest

    @classmethod
    def _from_fields(cls, data: dict[str, Any], version: int) -> Manifest:
        weights_data = data.get("weights") or []
        if not isinstance(weights_data, list):
            raise TypeError("weights must be a list")
        metrics = dict(data.get("metrics") or {})
        scorer = data.get("scorer")
        return cls(
            format_version=version,
            name=str(data.get("name", "")),
            embedding_dim=int(data["embedding_dim"]),
            encoder_id=str(data["encoder_id"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            artifacts=tuple(ArtifactSpec.from_dict(a) for a in data["artifacts"]),
            teacher=dict(data.get("teacher") or {}),
            metrics=metrics,
            recipe=dict(data.get("recipe") or {}),
            created=str(data.get("created", "")),
            edgerec_version=str(data.get("edgerec_version", "")),
            weights=tuple(WeightsSpec.from_dict(w) for w in weights_data),
            scorer=(ScorerRecord.from_dict(scorer) if isinstance(scorer, dict)
                    else ScorerRecord.from_legacy_metrics(metrics)),
            behaviour=(BehaviourRecord.from_dict(data["behaviour"])
                       if isinstance(data.get("behaviour"), dict) else None),
        )

    def _check(self, where: str) -> None:
        if self.embedding_dim < 1:
            raise BundleError(f"{where}: embedding_dim must be >= 1.")
        if not self.artifacts:
            raise BundleError(f"{where} lists no artifacts; export the bundle again.")
        keys = [a.key for a in self.artifacts]
        if len(set(keys)) != len(keys):
            raise BundleError(f"{where} lists the same role/engine/precision twice: {keys}.")
        wkeys = [w.key for w in self.weights]
        if len(set(wkeys)) != len(wkeys):
            raise BundleError(f"{where} lists the same weights twice: {wkeys}.")
        files = [a.file for a in self.artifacts] + [w.file for w in self.weights]
        if self.behaviour is not None and self.behaviour.file:
            files.append(self.behaviour.file)
        if len(set(files)) != len(files):
            raise BundleError(f"{where} lists one file for two entries: {files}.")


_MAX_INT_DIGITS = 32  # no field needs more; Python's own limit (4,300) raises ValueError


_FREE_FORM = ("teacher", "metrics", "recipe")  # written for people; may hold any JSON number


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a parsed JSON value (iterative: any depth)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


def _check_version(version: Any, where: str) -> int:
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{where} has no integer format_version: not an edgerec bundle.")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{where} is bundle format {version}, newer than the {FORMAT_VERSION} this edgerec "
            "reads; upgrade edgerec (`pip install -U edgerec`)."
        )
    if version < 1:
        raise BundleError(f"{where} has an invalid format_version {version}.")
    return version
