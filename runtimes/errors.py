"""The root of edgerec's error tree and the errors of the engine layer.

The whole tree is drawn once, in :mod:`edgerec.sdk.errors`; each class is defined in the lowest
layer that raises it (``export -> sdk -> runtimes``): here the root and what an engine adapter
can raise. Some classes also derive from a builtin exception where the meaning matches, so code
that catches ``ValueError`` or ``ImportError`` keeps working.
"""

from __future__ import annotations

__all__ = ["EdgeRecError", "InferenceError", "ModelError", "RuntimeUnavailableError"]


class EdgeRecError(Exception):
    """Root of every error edgerec raises on purpose."""


class ModelError(EdgeRecError, ValueError):
    """A model file is not a model, or its inputs/outputs do not fit the role it is used for."""


class InferenceError(EdgeRecError, RuntimeError):
    """An engine failed while running a model (wrong input shape or dtype, engine error)."""


class RuntimeUnavailableError(EdgeRecError, ImportError):
    """The requested engine, execution provider or delegate is not available on this machine."""
