"""edgerec device SDK: bundles, preprocessing and encoders (numpy + pillow + one engine).

Never imports torch, onnx or tensorflow. Quick start::

    from edgerec.sdk import Encoder
    with Encoder.create_from_bundle_path("bundle/") as encoder:
        vectors = encoder.embed(["a.jpg", "b.jpg"])   # (2, D) float32, unit rows
"""

from ..runtimes import Device, Engine, RuntimeOptions, TensorSpec
from .bundle import Bundle, NewArtifact, sha256_file, write_bundle
from .catalog import Catalog, CatalogInfo, CatalogItem, VectorDType
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
    RuntimeUnavailableError,
)
from .importer import ImportOptions, import_model, raw_pixel_normalization
from .manifest import FORMAT_VERSION, ArtifactSpec, Manifest, Precision, Role
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
from .search import BatchMatches, Match, Matches

__all__ = [
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
    "ExportError",
    "ImageInput",
    "ImageLimits",
    "ImportOptions",
    "InferenceError",
    "Interpolation",
    "InvalidImageError",
    "Layout",
    "Manifest",
    "Match",
    "Matches",
    "ModelError",
    "NewArtifact",
    "Precision",
    "Preprocessing",
    "ResizeMode",
    "RetrievalReport",
    "Role",
    "RuntimeOptions",
    "RuntimeUnavailableError",
    "TensorSpec",
    "VectorDType",
    "import_model",
    "l2_normalize",
    "label_retrieval",
    "load_image",
    "preprocess",
    "raw_pixel_normalization",
    "resize_and_crop",
    "sha256_file",
    "write_bundle",
]
