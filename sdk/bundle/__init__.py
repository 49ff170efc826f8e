"""Bundles: the contract (:mod:`.manifest`), reading and verifying (:mod:`.bundle`), writing
(:mod:`.writer`) and wrapping existing models (:mod:`.importer`)."""

from __future__ import annotations

from edgerec.sdk.bundle.bundle import (
    Bundle,
)
from edgerec.sdk.bundle.importer import (
    ImportOptions,
    import_model,
    raw_pixel_normalization,
)
from edgerec.sdk.bundle.manifest import (
    FORMAT_VERSION,
    MLP_WEIGHTS_FORMAT,
    WEIGHTS_FORMATS,
    WHITENING_FORMAT,
    ArtifactSpec,
    Interpolation,
    Layout,
    Manifest,
    Precision,
    Preprocessing,
    ResizeMode,
    Role,
    WeightsSpec,
    compute_encoder_id,
    format_version_for,
    read_numeric_npz,
)
from edgerec.sdk.bundle.writer import (
    NewArtifact,
    NewWeights,
    subset_bundle,
    write_bundle,
)

__all__ = [
    "FORMAT_VERSION",
    "MLP_WEIGHTS_FORMAT",
    "WEIGHTS_FORMATS",
    "WHITENING_FORMAT",
    "ArtifactSpec",
    "Bundle",
    "ImportOptions",
    "Interpolation",
    "Layout",
    "Manifest",
    "NewArtifact",
    "NewWeights",
    "Precision",
    "Preprocessing",
    "ResizeMode",
    "Role",
    "WeightsSpec",
    "compute_encoder_id",
    "format_version_for",
    "import_model",
    "raw_pixel_normalization",
    "read_numeric_npz",
    "subset_bundle",
    "write_bundle",
]
