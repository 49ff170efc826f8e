"""The one error tree of edgerec.

Every failure that a caller can act on raises a subclass of :class:`EdgeRecError`, and every
message is a sentence that says what was wrong and what to do about it::

    EdgeRecError                                 (edgerec.runtimes.errors)
    ├── ModelError (ValueError)                  a model file that is not usable for its role
    ├── InferenceError (RuntimeError)            an engine that failed on inputs of the right kind
    ├── RuntimeUnavailableError (ImportError)    an engine, provider or delegate not installed
    ├── InvalidImageError (ValueError)           an image that cannot be decoded or used
    ├── BundleError (ValueError)                 a bundle that is missing, malformed or unusable
    │   ├── BundleIntegrityError                 a file that is missing, tampered or escapes it
    │   └── ArtifactNotFoundError (LookupError)  no artifact for the engine/precision asked for
    ├── CatalogError (ValueError)                a catalog that is missing, corrupt or mismatched
    │   ├── CatalogLockedError                   another writer holds the catalog
    │   ├── EncoderMismatchError                 vectors or queries from another encoder
    │   └── UnknownFilterKeyError                a filter on a metadata key no item has
    ├── ProfileError (ValueError)                a profile store, user id or event that is unusable
    ├── OutputError (ValueError)                 an output path that cannot be written
    ├── RayUnavailableError (RuntimeError)       no Ray installed, or its cluster unreachable
    └── ExportError (RuntimeError)               an export step that failed (edgerec.export.errors)
        └── LadderFailedError                    no int8 rung passed its gate (its attempts kept)

Each class is defined in the layer that raises it: the first three in
:mod:`edgerec.runtimes.errors` (re-exported here), the device's here, ``ExportError`` in
:mod:`edgerec.export.errors` and ``LadderFailedError`` in :mod:`edgerec.export.artifacts.ladder`
(the device never raises them). Some classes also derive from a
builtin exception where the meaning matches, so code that catches ``ValueError`` or
``ImportError`` keeps working.
"""

from __future__ import annotations

from edgerec.runtimes.errors import (
    EdgeRecError,
    InferenceError,
    ModelError,
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
    "InferenceError",
    "InvalidImageError",
    "ModelError",
    "OutputError",
    "ProfileError",
    "RayUnavailableError",
    "RuntimeUnavailableError",
    "UnknownFilterKeyError",
]


class InvalidImageError(EdgeRecError, ValueError):
    """An image could not be read, decoded or used (corrupt, truncated, absurd size, bad array)."""


class BundleError(EdgeRecError, ValueError):
    """A bundle directory or its manifest is missing, malformed or from an unknown format."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, does not match its sha256, or points outside the bundle."""


class ArtifactNotFoundError(BundleError, LookupError):
    """The bundle has no artifact for the requested role, engine and precision."""


class CatalogError(EdgeRecError, ValueError):
    """A catalog is missing, corrupt, from a newer format, or used with the wrong arguments."""


class CatalogLockedError(CatalogError):
    """Another process is writing to the catalog."""


class EncoderMismatchError(CatalogError):
    """Vectors or a query come from a different encoder than the one that built the catalog."""


class UnknownFilterKeyError(CatalogError):
    """A search filter asks for a metadata key that no item in the catalog has (usually a typo),
    which would match nothing. ``missing``: the keys asked for that no item has; ``known``: the
    keys items do have (sorted, at most 40)."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = (),
                 known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing
        self.known = known


class ProfileError(EdgeRecError, ValueError):
    """A profile file that cannot be opened or used, or a bad user id or event."""


class OutputError(EdgeRecError, ValueError):
    """An output path that cannot be written (a folder where a file is expected, no permission);
    checked before any work starts."""


class RayUnavailableError(EdgeRecError, RuntimeError):
    """Ray (the ``scale`` extra) is not installed, or the cluster address cannot be reached;
    raised before any work starts."""
