"""What :func:`~edgerec.sdk.evaluation.evaluate` measured: per model and slice, each metric's
mean with its bootstrap confidence interval; the paired margins of the device's model over
each baseline; the device's per-user ``for_user`` latency."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from edgerec.sdk.evaluation.events import EventsReport
from edgerec.sdk.evaluation.ranking_metrics import ClassificationReport, ConfidenceInterval

if TYPE_CHECKING:
    from edgerec.sdk.evaluation.protocol import EvaluateOptions

__all__ = ["EvaluationResult", "LatencyReport", "ModelResult", "SliceResult"]


@dataclass(frozen=True)
class SliceResult:
    """One model on one slice of the held-out items: the ``users`` with an item in the slice,
    and per metric name (``"NDCG@20"``, ``"MRR"``, ``"AUC"``, ...) the mean over them with its
    percentile-bootstrap CI (``result["NDCG@20"].mean``)."""

    users: int
    metrics: Mapping[str, ConfidenceInterval]

    def __getitem__(self, name: str) -> ConfidenceInterval:
        return self.metrics[name]

    def __contains__(self, name: object) -> bool:
        return name in self.metrics

    def mean(self, name: str) -> Optional[float]:
        """The metric's mean, or None when the slice has none (e.g. AUC on a label)."""
        ci = self.metrics.get(name)
        return None if ci is None else ci.mean

    def __repr__(self) -> str:
        means = ", ".join(f"{k}={v.mean:.4f}" for k, v in self.metrics.items())
        return f"SliceResult(users={self.users}, {means})"

    def to_dict(self) -> dict[str, Any]:
        return {"users": self.users, "metrics": {k: v.to_dict() for k, v in self.metrics.items()}}


@dataclass(frozen=True)
class ModelResult:
    """One model: ``all`` held-out items, the ``cold`` and ``warm`` ones (None when the split
    has none), one slice per label (AUC only on ``all``/``cold``/``warm``). ``seconds``:
    training plus ranking time. ``extras``: e.g. the chosen hyperparameters and their
    validation table, VBPR's losses."""

    name: str
    description: str
    all: SliceResult
    cold: Optional[SliceResult]
    warm: Optional[SliceResult]
    labels: Mapping[str, SliceResult]
    seconds: float
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description, "seconds": self.seconds,
            "all": self.all.to_dict(),
            "cold": self.cold.to_dict() if self.cold else None,
            "warm": self.warm.to_dict() if self.warm else None,
            "labels": {k: v.to_dict() for k, v in self.labels.items()},
            "extras": dict(self.extras),
        }


@dataclass(frozen=True)
class LatencyReport:
    """The device's ``Recommender.for_user`` timed per user on the evaluated histories (the
    bundle, the catalog on disk, ``k`` items): ``users`` calls after one warm-up, their
    ``median_ms``/``p90_ms``/``mean_ms``; ``threads``: how BLAS was limited; ``scorer_used``;
    ``agreement``: the share of those users whose ``for_user`` top-k is the evaluated
    ranking's (the catalog's storage precision and the device's ``max_history`` can make them
    differ)."""

    users: int
    k: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    threads: str
    scorer_used: bool
    agreement: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    ``metrics``: the metric names, in report order; ``primary``: the headline one (margins'
    first column, ``target_met``). ``models``: name -> :class:`ModelResult`, the reference
    first. ``reference``: the device's model (``"scorer"``, or ``"visual_knn"`` without a
    scorer); ``margins``: metric -> baseline -> CI of ``metric(reference) - metric(baseline)``
    over the same users (paired bootstrap). ``classification``: the scorer's
    ``sigmoid(logit) >= 0.5`` on held-out positives against as many seeded uniform negatives
    (None without a scorer). ``split``: the holdout's ``describe()`` plus where its parameters
    came from (``source``), the evaluated users, and the held-out (user, item) pairs that are
    cold or warm. ``latency``: the device's ``for_user`` (None when not measured).
    ``skipped``: baselines that could not run here, with the reason. ``warnings``: sentences
    for people.
    """

    metrics: tuple[str, ...]
    primary: str
    models: Mapping[str, ModelResult]
    reference: str
    margins: Mapping[str, Mapping[str, ConfidenceInterval]]
    classification: Optional[ClassificationReport]
    split: Mapping[str, Any]
    events: EventsReport
    options: EvaluateOptions
    latency: Optional[LatencyReport]
    skipped: Mapping[str, str]
    warnings: tuple[str, ...]
    seconds: float

    @property
    def target_met(self) -> Optional[bool]:
        """True when the scorer's primary metric beats every baseline's *significantly* (each
        margin's CI above 0); None without a scorer."""
        if self.reference != "scorer":
            return None
        return all(ci.low > 0 for ci in self.margins[self.primary].values())

    @property
    def ahead_of_all(self) -> Optional[bool]:
        """True when the scorer's mean primary metric is above every baseline's (the point
        estimate, whatever the CIs say); None without a scorer."""
        if self.reference != "scorer":
            return None
        return all(ci.mean > 0 for ci in self.margins[self.primary].values())

    @property
    def not_significant(self) -> list[str]:
        """Baselines whose primary margin's CI reaches 0 or below."""
        return [name for name, ci in self.margins.get(self.primary, {}).items()
                if not ci.low > 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "metrics": list(self.metrics), "primary": self.primary,
            "reference": self.reference, "target_met": self.target_met,
            "ahead_of_all": self.ahead_of_all, "not_significant": self.not_significant,
            "models": {k: v.to_dict() for k, v in self.models.items()},
            "margins": {m: {k: v.to_dict() for k, v in per.items()}
                        for m, per in self.margins.items()},
            "classification": self.classification.to_dict() if self.classification else None,
            "split": dict(self.split), "events": self.events.to_dict(),
            "options": self.options.to_dict(),
            "latency": self.latency.to_dict() if self.latency else None,
            "skipped": dict(self.skipped), "warnings": list(self.warnings),
            "seconds": self.seconds,
        }
