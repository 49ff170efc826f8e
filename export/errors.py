"""The export's error (drawn in the tree of :mod:`edgerec.sdk.errors`)."""

from __future__ import annotations

from edgerec.runtimes.errors import EdgeRecError

__all__ = ["ExportError"]


class ExportError(EdgeRecError, RuntimeError):
    """An export step failed: unusable data, a teacher that is not an image model, a failed gate."""
