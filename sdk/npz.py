"""Plain-array weights files (``.npz``) as the device reads them: numbers only, never pickles."""

from __future__ import annotations

import io
import zipfile

import numpy as np

from .errors import ModelError

__all__ = ["numeric_npz"]


def numeric_npz(data: bytes, what: str, remedy: str) -> dict[str, np.ndarray]:
    """The named arrays of ``.npz`` bytes, read with ``allow_pickle=False``.

    Raises:
        ModelError: the bytes are not an ``.npz`` or hold object arrays; the message names
            ``what`` (e.g. "scorer weights") and ends with ``remedy`` (e.g. "export the
            scorer again").
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"the {what} is not a numeric .npz ({exc}); {remedy}") from None
