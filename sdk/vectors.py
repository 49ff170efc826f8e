"""Small vector helpers shared by the device modules (numpy only)."""

from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize"]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, D) (or one (D,) vector) scaled to unit L2 norm; all-zero rows stay
    zero. float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(eps))
