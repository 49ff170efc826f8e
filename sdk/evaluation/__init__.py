"""Offline evaluation (not part of the device surface, never imported by ``edgerec.sdk``):

- :mod:`.events`: the events CSV reader and the per-user holdout split;
- :mod:`.task`: the catalog and the evaluated users in memory;
- :mod:`.retrieval`: same-label retrieval quality (mAP@k);
- :mod:`.ranking_metrics`: recommendation metrics, bootstrap confidence intervals;
- :mod:`.baselines`: the :class:`Ranker` protocol and the baselines (:mod:`.bpr`: BPR trainers);
- :mod:`.provenance`: which held-out events a bundle's scorer allows to score;
- :mod:`.protocol`: :func:`evaluate`, the whole comparison (``edgerec evaluate``), and
  :mod:`.results`, what it returns.
"""

from __future__ import annotations

from edgerec.sdk.evaluation.baselines import (
    BASELINES,
    Bpr,
    LabelPopularity,
    Popularity,
    Ranker,
    ScoreRanker,
    Vbpr,
    VisualKnn,
    make_baselines,
)
from edgerec.sdk.evaluation.bpr import (
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
    evaluate,
)
from edgerec.sdk.evaluation.provenance import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    check_split,
    has_scorer,
    holdout_params,
    recorded_holdout,
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
from edgerec.sdk.evaluation.results import (
    EvaluationResult,
    ModelResult,
    SliceResult,
)
from edgerec.sdk.evaluation.retrieval import (
    RetrievalReport,
    label_retrieval,
)
from edgerec.sdk.evaluation.task import (
    CatalogData,
    EvalTask,
    build_task,
)

__all__ = [
    "BASELINES",
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "BPRModel",
    "Bpr",
    "CatalogData",
    "ClassificationReport",
    "ConfidenceInterval",
    "EvalTask",
    "EvaluateOptions",
    "EvaluationResult",
    "EventLog",
    "EventsReport",
    "Holdout",
    "Interaction",
    "LabelPopularity",
    "ModelResult",
    "Popularity",
    "Ranker",
    "RankingReport",
    "RetrievalReport",
    "ScoreRanker",
    "SliceResult",
    "VBPRModel",
    "Vbpr",
    "VisualKnn",
    "auc",
    "average_precision_at_k",
    "bootstrap_ci",
    "build_task",
    "check_split",
    "classification_report",
    "evaluate",
    "has_scorer",
    "hit_rate_at_k",
    "holdout_params",
    "holdout_split",
    "label_retrieval",
    "make_baselines",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "per_user_metrics",
    "ranking_report",
    "read_events",
    "recall_at_k",
    "recorded_holdout",
    "train_bpr",
    "train_vbpr",
]
