"""edgerec device SDK (numpy + pillow + one engine; never imports torch, onnx or tensorflow).

The device surface: bundles and preprocessing, the :class:`Encoder`, the local :class:`Catalog`
with exact search, the :class:`Scorer`, the :class:`Recommender` (``similar``, ``for_user``) and
on-device profiles. Offline evaluation lives in :mod:`edgerec.sdk.evaluation`. Quick start::

    from edgerec.sdk import Encoder
    with Encoder.create_from_bundle_path("bundle/") as encoder:
        vectors = encoder.embed(["a.jpg", "b.jpg"])   # (2, D) float32, unit rows
"""

from edgerec.runtimes import Device, Engine, RuntimeOptions, TensorSpec
from edgerec.sdk.bundle import (
    FORMAT_VERSION,
    ArtifactSpec,
    Bundle,
    ImportOptions,
    Interpolation,
    Layout,
    Manifest,
    Precision,
    Preprocessing,
    ResizeMode,
    Role,
    WeightsSpec,
    import_model,
    raw_pixel_normalization,
)
from edgerec.sdk.catalog import (
    BatchMatches,
    Catalog,
    CatalogInfo,
    CatalogItem,
    IngestReport,
    Match,
    Matches,
    SourceItem,
    VectorDType,
    add_images,
    build_catalog,
    items_from_csv,
    items_from_folder,
)
from edgerec.sdk.encoder import Encoder, EncoderOptions
from edgerec.sdk.errors import (
    ArtifactNotFoundError,
    BundleError,
    BundleIntegrityError,
    CatalogError,
    CatalogLockedError,
    EdgeRecError,
    EncoderMismatchError,
    InferenceError,
    InvalidImageError,
    ModelError,
    OutputError,
    ProfileError,
    RuntimeUnavailableError,
    UnknownFilterKeyError,
)
from edgerec.sdk.image import ImageInput, ImageLimits, load_image, preprocess, resize_and_crop
from edgerec.sdk.profile import (
    DEFAULT_EVENT_WEIGHTS,
    Event,
    EventKind,
    Profile,
    ProfileStore,
    user_vector,
)
from edgerec.sdk.recommender import (
    Recommendation,
    Recommendations,
    Recommender,
    RecommenderOptions,
)
from edgerec.sdk.scorer import MlpWeights, Scorer, ScorerMode, ScorerOptions
from edgerec.sdk.vectors import (
    cosine_similarity,
    dequantize_embedding,
    l2_normalize,
    quantize_embedding,
)
from edgerec.sdk.whitening import Whitening

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "FORMAT_VERSION",
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
    "Device",
    "EdgeRecError",
    "Encoder",
    "EncoderMismatchError",
    "EncoderOptions",
    "Engine",
    "Event",
    "EventKind",
    "ImageInput",
    "ImageLimits",
    "ImportOptions",
    "InferenceError",
    "IngestReport",
    "Interpolation",
    "InvalidImageError",
    "Layout",
    "Manifest",
    "Match",
    "Matches",
    "MlpWeights",
    "ModelError",
    "OutputError",
    "Precision",
    "Preprocessing",
    "Profile",
    "ProfileError",
    "ProfileStore",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "RecommenderOptions",
    "ResizeMode",
    "Role",
    "RuntimeOptions",
    "RuntimeUnavailableError",
    "Scorer",
    "ScorerMode",
    "ScorerOptions",
    "SourceItem",
    "TensorSpec",
    "UnknownFilterKeyError",
    "VectorDType",
    "WeightsSpec",
    "Whitening",
    "add_images",
    "build_catalog",
    "cosine_similarity",
    "dequantize_embedding",
    "import_model",
    "items_from_csv",
    "items_from_folder",
    "l2_normalize",
    "load_image",
    "preprocess",
    "quantize_embedding",
    "raw_pixel_normalization",
    "resize_and_crop",
    "user_vector",
]
