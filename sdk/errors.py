"""The edgerec error tree (defined in :mod:`edgerec.runtimes.errors`, the lowest layer).

See :mod:`edgerec.runtimes.errors` for the tree; every class is re-exported here.
"""

from __future__ import annotations

from ..runtimes.errors import (
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

__all__ = [
    "ArtifactNotFoundError",
    "BundleError",
    "BundleIntegrityError",
    "CatalogError",
    "CatalogLockedError",
    "EdgeRecError",
    "EncoderMismatchError",
    "ExportError",
    "InferenceError",
    "InvalidImageError",
    "ModelError",
    "ProfileError",
    "RuntimeUnavailableError",
]
