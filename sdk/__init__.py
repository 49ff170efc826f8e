"""edgerec device SDK (numpy + pillow + one engine; never imports torch, onnx or tensorflow).

Bundles and preprocessing, the :class:`Encoder`, the local :class:`Catalog` with exact search,
the :class:`Recommender` (``similar``, ``for_user``), on-device profiles, metrics. Quick start::

    from edgerec.sdk import Encoder
    with Encoder.create_from_bundle_path("bundle/") as encoder:
        vectors = encoder.embed(["a.jpg", "b.jpg"])   # (2, D) float32, unit rows
"""

from ..runtimes import Device, Engine, RuntimeOptions, TensorSpec
from .bundle import Bundle, NewArtifact, NewWeights, sha256_file, write_bundle
from .catalog import Catalog, CatalogInfo, CatalogItem, VectorDType
from .catalog_build import (
    IngestReport,
    SourceItem,
    add_images,
    build_catalog,
    items_from_csv,
    items_from_folder,
)
from .encoder import Encoder, EncoderOptions, l2_normalize
from .errors import (
    ArtifactNotFoundError,
    BundleError,
    BundleIntegrityError,
    CatalogError,
    CatalogLockedError,
    EdgeRecError,
    EncoderMismatchError,
    ExportError,
    InferenceError,
    InvalidImageError,
    ModelError,
    ProfileError,
    RuntimeUnavailableError,
)
from .evaluate import EvaluateOptions, EvaluationResult
from .events import EventLog, EventsReport, Holdout, Interaction, holdout_split, read_events
from .importer import ImportOptions, import_model, raw_pixel_normalization
from .manifest import FORMAT_VERSION, ArtifactSpec, Manifest, Precision, Role, WeightsSpec
from .metrics import RetrievalReport, label_retrieval
from .preprocess import (
    ImageInput,
    ImageLimits,
    Interpolation,
    Layout,
    Preprocessing,
    ResizeMode,
    load_image,
    preprocess,
    resize_and_crop,
)
from .profile import (
    DEFAULT_EVENT_WEIGHTS,
    Event,
    EventKind,
    Profile,
    ProfileStore,
    user_vector,
)
from .rank_metrics import (
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
from .recommender import Recommendation, Recommendations, Recommender, RecommenderOptions
from .scorer import MLP_WEIGHTS_FORMAT, MlpWeights, Scorer, ScorerMode
from .search import BatchMatches, Match, Matches
from .whitening import WHITENING_FORMAT, Whitening

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "FORMAT_VERSION",
    "MLP_WEIGHTS_FORMAT",
    "WHITENING_FORMAT",
    "ArtifactNotFoundError",
    "ArtifactSpec",
    "BatchMatches",
    "Bundle",
    "BundleError",
    "BundleIntegrityError",
    "Catalog",
    "CatalogError",
    "CatalogInfo",
    "CatalogItem",
    "CatalogLockedError",
    "ClassificationReport",
    "ConfidenceInterval",
    "Device",
    "EdgeRecError",
    "Encoder",
    "EncoderMismatchError",
    "EncoderOptions",
    "Engine",
    "EvaluateOptions",
    "EvaluationResult",
    "Event",
    "EventKind",
    "EventLog",
    "EventsReport",
    "ExportError",
    "Holdout",
    "ImageInput",
    "ImageLimits",
    "ImportOptions",
    "InferenceError",
    "IngestReport",
    "Interaction",
    "Interpolation",
    "InvalidImageError",
    "Layout",
    "Manifest",
    "Match",
    "Matches",
    "MlpWeights",
    "ModelError",
    "NewArtifact",
    "NewWeights",
    "Precision",
    "Preprocessing",
    "Profile",
    "ProfileError",
    "ProfileStore",
    "RankingReport",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "RecommenderOptions",
    "ResizeMode",
    "RetrievalReport",
    "Role",
    "RuntimeOptions",
    "RuntimeUnavailableError",
    "Scorer",
    "ScorerMode",
    "SourceItem",
    "TensorSpec",
    "VectorDType",
    "WeightsSpec",
    "Whitening",
    "add_images",
    "auc",
    "average_precision_at_k",
    "bootstrap_ci",
    "build_catalog",
    "classification_report",
    "hit_rate_at_k",
    "holdout_split",
    "import_model",
    "items_from_csv",
    "items_from_folder",
    "l2_normalize",
    "label_retrieval",
    "load_image",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "per_user_metrics",
    "preprocess",
    "ranking_report",
    "raw_pixel_normalization",
    "read_events",
    "recall_at_k",
    "resize_and_crop",
    "sha256_file",
    "user_vector",
    "write_bundle",
]
