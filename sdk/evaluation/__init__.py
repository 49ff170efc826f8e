"""Offline evaluation (not part of the device surface, never imported by ``edgerec.sdk``):

- :mod:`.events`: the events CSV reader and the per-user holdout split;
- :mod:`.retrieval`: same-label retrieval quality (mAP@k);
- :mod:`.ranking_metrics`: recommendation metrics, bootstrap confidence intervals;
- :mod:`.baselines`: the rankers the device's feed is compared with;
- :mod:`.protocol`: :func:`evaluate`, the whole comparison (``edgerec evaluate``)."""

from __future__ import annotations

from edgerec.sdk.evaluation.baselines import (
    BPRModel,
    VBPRModel,
    train_bpr,
    train_vbpr,
)
from edgerec.sdk.evaluation.events import (
    EventLog,
    EventsReport,
    Holdout,
    Interaction,
    holdout_split,
    read_events,
)
from edgerec.sdk.evaluation.protocol import (
    EvaluateOptions,
    EvaluationResult,
    ModelResult,
    SliceResult,
    evaluate,
)
from edgerec.sdk.evaluation.ranking_metrics import (
    ClassificationReport,
    ConfidenceInterval,
    RankingReport,
    auc,
    average_precision_at_k,
    bootstrap_ci,
    classification_report,
    hit_rate_at_k,
    ndcg_at_k,
    paired_bootstrap_ci,
    per_user_metrics,
    ranking_report,
    recall_at_k,
)
from edgerec.sdk.evaluation.retrieval import (
    RetrievalReport,
    label_retrieval,
)

__all__ = [
    "BPRModel",
    "ClassificationReport",
    "ConfidenceInterval",
    "EvaluateOptions",
    "EvaluationResult",
    "EventLog",
    "EventsReport",
    "Holdout",
    "Interaction",
    "ModelResult",
    "RankingReport",
    "RetrievalReport",
    "SliceResult",
    "VBPRModel",
    "auc",
    "average_precision_at_k",
    "bootstrap_ci",
    "classification_report",
    "evaluate",
    "hit_rate_at_k",
    "holdout_split",
    "label_retrieval",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "per_user_metrics",
    "ranking_report",
    "read_events",
    "recall_at_k",
    "train_bpr",
    "train_vbpr",
]
