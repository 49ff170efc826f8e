"""Offline evaluation (not part of the device surface, never imported by ``edgerec.sdk``):

- :mod:`.events`: the events CSV reader and the per-user holdout split (leave-last-out or a
  fraction);
- :mod:`.task`: the catalog and the evaluated users in memory;
- :mod:`.retrieval`: same-label retrieval quality (mAP@k);
- :mod:`.metrics`: ranking metrics at several cut-offs from the ranks of the relevant items;
  :mod:`.ranking_metrics`: list-based metrics, AUC, bootstrap confidence intervals;
- :mod:`.ranker`: the :class:`Ranker` protocol and the baselines' options and context;
  :mod:`.baselines`: the baselines (:mod:`.cf_baselines`: co-occurrence, item-kNN, EASE;
  :mod:`.implicit_baselines`: BPR and ALS from ``implicit``; :mod:`.bpr`: the visual BPR
  trainer), built on :mod:`.interactions`, :mod:`.item_item` and :mod:`.tuning`;
- :mod:`.provenance`: which held-out events a bundle's scorer allows to score;
- :mod:`.protocol`: :func:`evaluate`, the whole comparison (``edgerec evaluate``), with
  :mod:`.device`, the device's ranking as a model;
  :mod:`.summary`, its numbers; :mod:`.latency`, the device's ``for_user`` timed; and
  :mod:`.results`, what it returns; :mod:`.loop`, the ranking loop it shares with
- :mod:`.compare`: :func:`compare_encoders`, two encoders' feeds paired on one split
  (``edgerec evaluate --against``).
"""

from __future__ import annotations

from edgerec.sdk.evaluation.baselines import (
    BASELINES,
    LabelPopularity,
    Popularity,
    RandomScores,
    Vbpr,
    VisualKnn,
    VisualKnnMean,
    make_baselines,
)
from edgerec.sdk.evaluation.bpr import VBPRModel, train_vbpr
from edgerec.sdk.evaluation.cf_baselines import Cooccurrence, Ease, ItemItemScores, ItemKnn
from edgerec.sdk.evaluation.compare import EncoderComparison, compare_encoders
from edgerec.sdk.evaluation.device import DeviceRanker
from edgerec.sdk.evaluation.events import (
    EventLog,
    EventsReport,
    Holdout,
    Interaction,
    SplitProtocol,
    holdout_split,
    read_events,
    strategy_protocol,
)
from edgerec.sdk.evaluation.implicit_baselines import ImplicitAls, ImplicitBpr, implicit_version
from edgerec.sdk.evaluation.interactions import Interactions
from edgerec.sdk.evaluation.item_item import cosine_neighbours, ease_weights, spd_inverse
from edgerec.sdk.evaluation.latency import measure_for_user
from edgerec.sdk.evaluation.metrics import (
    NDCG,
    AveragePrecision,
    HitRate,
    Metric,
    Recall,
    ReciprocalRank,
    item_ranks,
    parse_metric,
)
from edgerec.sdk.evaluation.protocol import (
    DEFAULT_METRICS,
    EvaluateOptions,
    evaluate,
)
from edgerec.sdk.evaluation.provenance import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    SplitChoice,
    check_split,
    choose_split,
    has_scorer,
    recorded_holdout,
)
from edgerec.sdk.evaluation.ranker import (
    BaselineContext,
    BaselineOptions,
    BaselineUnavailableError,
    Ranker,
    ScoreRanker,
    one_blas_thread,
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
    LatencyReport,
    ModelResult,
    SliceResult,
)
from edgerec.sdk.evaluation.retrieval import (
    QueryRetrieval,
    RetrievalReport,
    label_retrieval,
    label_retrieval_per_query,
)
from edgerec.sdk.evaluation.summary import (
    Bootstrap,
    PerUser,
    auc_by_slice,
    margins,
    slice_result,
)
from edgerec.sdk.evaluation.task import (
    CatalogData,
    EvalTask,
    build_task,
)
from edgerec.sdk.evaluation.tuning import (
    ScoreFn,
    ValidationCut,
    edge_warning,
    grid,
    grid_search,
)

__all__ = [
    "BASELINES",
    "DEFAULT_METRICS",
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "NDCG",
    "AveragePrecision",
    "BaselineContext",
    "BaselineOptions",
    "BaselineUnavailableError",
    "Bootstrap",
    "CatalogData",
    "ClassificationReport",
    "ConfidenceInterval",
    "Cooccurrence",
    "DeviceRanker",
    "Ease",
    "EncoderComparison",
    "EvalTask",
    "EvaluateOptions",
    "EvaluationResult",
    "EventLog",
    "EventsReport",
    "HitRate",
    "Holdout",
    "ImplicitAls",
    "ImplicitBpr",
    "Interaction",
    "Interactions",
    "ItemItemScores",
    "ItemKnn",
    "LabelPopularity",
    "LatencyReport",
    "Metric",
    "ModelResult",
    "PerUser",
    "Popularity",
    "QueryRetrieval",
    "RandomScores",
    "Ranker",
    "RankingReport",
    "Recall",
    "ReciprocalRank",
    "RetrievalReport",
    "ScoreFn",
    "ScoreRanker",
    "SliceResult",
    "SplitChoice",
    "SplitProtocol",
    "VBPRModel",
    "ValidationCut",
    "Vbpr",
    "VisualKnn",
    "VisualKnnMean",
    "auc",
    "auc_by_slice",
    "average_precision_at_k",
    "bootstrap_ci",
    "build_task",
    "check_split",
    "choose_split",
    "classification_report",
    "compare_encoders",
    "cosine_neighbours",
    "ease_weights",
    "edge_warning",
    "evaluate",
    "grid",
    "grid_search",
    "has_scorer",
    "hit_rate_at_k",
    "holdout_split",
    "implicit_version",
    "item_ranks",
    "label_retrieval",
    "label_retrieval_per_query",
    "make_baselines",
    "margins",
    "measure_for_user",
    "ndcg_at_k",
    "one_blas_thread",
    "paired_bootstrap_ci",
    "parse_metric",
    "per_user_metrics",
    "ranking_report",
    "read_events",
    "recall_at_k",
    "recorded_holdout",
    "slice_result",
    "spd_inverse",
    "strategy_protocol",
    "train_vbpr",
]
