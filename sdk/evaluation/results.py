"""What :func:`~edgerec.sdk.evaluation.evaluate` measured: per model and slice, the mean
metrics with their bootstrap confidence intervals, and the margins of the device's model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from edgerec.sdk.evaluation.events import EventsReport
from edgerec.sdk.evaluation.ranking_metrics import (
    ClassificationReport,
    ConfidenceInterval,
    RankingReport,
)

if TYPE_CHECKING:
    from edgerec.sdk.evaluation.protocol import EvaluateOptions

__all__ = ["EvaluationResult", "ModelResult", "SliceResult"]


@dataclass(frozen=True)
class SliceResult:
    """One model on one slice of the held-out items: mean metrics (``report``) and their
    bootstrap CIs (``ci``: ``"ndcg"``, ``"recall"``, ``"hit_rate"``, ``"map"``, and ``"auc"``
    when AUCs were computed for the slice)."""

    report: RankingReport
    ci: Mapping[str, ConfidenceInterval]

    def to_dict(self) -> dict[str, Any]:
        return {**self.report.to_dict(), "ci": {k: v.to_dict() for k, v in self.ci.items()}}


@dataclass(frozen=True)
class ModelResult:
    """One model: ``all`` held-out items, the ``cold`` and ``warm`` ones (None when the split
    has none), and one slice per label (AUC only on ``all``/``cold``/``warm``). ``seconds``:
    training plus ranking time. ``extras``: e.g. ``{"losses": [...]}`` per epoch for BPR."""

    name: str
    description: str
    all: SliceResult
    cold: Optional[SliceResult]
    warm: Optional[SliceResult]
    labels: Mapping[str, SliceResult]
    seconds: float
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> RankingReport:
        return self.all.report

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
class EvaluationResult:
    """Everything :func:`evaluate` measured.

    ``models``: name -> :class:`ModelResult`, in the order of the module docstring.
    ``reference``: the device's model (``"scorer"``, or ``"visual_knn"`` without a scorer);
    ``margins``: baseline -> CI of ``NDCG@k(reference) - NDCG@k(baseline)`` over the same
    users. ``classification``: the scorer's ``sigmoid(logit) >= 0.5`` on held-out positives
    against as many seeded uniform negatives (None without a scorer). ``split``: the holdout's
    ``describe()`` plus where its parameters came from (``source``), the evaluated users, and
    the held-out (user, item) pairs that are cold or warm (``cold_test_items``,
    ``warm_test_items``). ``warnings``: sentences for people.
    """

    k: int
    models: Mapping[str, ModelResult]
    reference: str
    margins: Mapping[str, ConfidenceInterval]
    classification: Optional[ClassificationReport]
    split: Mapping[str, Any]
    events: EventsReport
    options: EvaluateOptions
    warnings: tuple[str, ...]
    seconds: float

    @property
    def target_met(self) -> Optional[bool]:
        """True when the scorer's NDCG@k beats every baseline *significantly* (each margin's
        CI above 0); None without a scorer."""
        if self.reference != "scorer":
            return None
        return all(ci.low > 0 for ci in self.margins.values())

    @property
    def ahead_of_all(self) -> Optional[bool]:
        """True when the scorer's mean NDCG@k is above every baseline's (the point estimate,
        whatever the CIs say); None without a scorer."""
        if self.reference != "scorer":
            return None
        return all(ci.mean > 0 for ci in self.margins.values())

    @property
    def not_significant(self) -> list[str]:
        """Baselines whose margin's CI reaches 0 or below."""
        return [name for name, ci in self.margins.items() if not ci.low > 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "k": self.k, "reference": self.reference, "target_met": self.target_met,
            "ahead_of_all": self.ahead_of_all, "not_significant": self.not_significant,
            "models": {k: v.to_dict() for k, v in self.models.items()},
            "margins": {k: v.to_dict() for k, v in self.margins.items()},
            "classification": self.classification.to_dict() if self.classification else None,
            "split": dict(self.split), "events": self.events.to_dict(),
            "options": self.options.to_dict(), "warnings": list(self.warnings),
            "seconds": self.seconds,
        }
