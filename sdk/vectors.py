"""Small vector helpers for embeddings (numpy only): normalise, compare, quantize.

:func:`cosine_similarity` compares embeddings the way MediaPipe's
``ImageEmbedder.cosine_similarity`` does, and also takes batches and int8 embeddings.

:func:`quantize_embedding` turns a float embedding into int8, 4x smaller, to store or send:
each row is scaled so that its largest element is +-127 and rounded,
``q = round(127 v / max|v|)``. An embedding's meaning is its direction, which the codes keep,
so there is no scale to carry: :func:`dequantize_embedding` gives back the unit float32 vector
``q / ||q||``, and :func:`cosine_similarity` takes the codes as they are. On the sample photos
the teacher's 1024-d embeddings come back with cosine > 0.9999 to the originals and cosines
between photos change by less than 0.005. (MediaPipe's ``quantize=True`` uses a fixed scale,
``round(128 v)``, which on 1024-d unit vectors leaves most elements a few steps from zero and
moves cosines by about 0.015.) A :class:`~edgerec.sdk.Catalog` does its own int8 storage and
takes float32 queries: dequantize a received embedding before searching with it.
"""

from __future__ import annotations

from typing import Union

import numpy as np

__all__ = ["cosine_similarity", "dequantize_embedding", "l2_normalize", "quantize_embedding"]

_QMAX = 127.0  # the largest element of a row becomes +-127


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` (N, D) (or one (D,) vector) scaled to unit L2 norm; all-zero rows stay
    zero. float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(eps))


def _embedding(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise ValueError(f"{name} must be one embedding (D,) or a batch (N, D), got shape "
                         f"{x.shape}")
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise ValueError(f"{name} must hold numbers (float or int8 embeddings), got {x.dtype}")
    x = x.astype(np.float64)  # int8 codes and float16 alike; the norm cancels any scale
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinity")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norms == 0).any():
        where = "" if x.ndim == 1 else f" (row {int(np.flatnonzero(norms[:, 0] == 0)[0])})"
        raise ValueError(f"cannot compute a cosine similarity with a zero {name}{where}")
    return x / norms


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> Union[float, np.ndarray]:
    """Cosine similarity of embeddings, in [-1, 1].

    ``a`` and ``b``: float embeddings or int8 ones from :func:`quantize_embedding` (any scale:
    vectors are normalised first), each ``(D,)`` or ``(N, D)`` with the same D. Returns a
    ``float`` for two ``(D,)`` vectors, ``(N,)`` for a batch against one vector (either way
    round) and ``(N, M)`` for two batches (float64).

    Raises:
        ValueError: different dimensions, a shape other than (D,) or (N, D), NaN or
            infinity, or a zero vector (whose cosine is undefined).
    """
    x, y = _embedding(a, "a"), _embedding(b, "b")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"embeddings of different dimensions: {x.shape[-1]} and "
                         f"{y.shape[-1]}; compare embeddings from the same encoder")
    sims = np.clip(x @ y.T, -1.0, 1.0)
    return float(sims) if sims.ndim == 0 else sims


def quantize_embedding(v: np.ndarray) -> np.ndarray:
    """A float embedding ``(D,)`` or a batch ``(N, D)`` as int8 codes of the same shape:
    each row times ``127 / max|row|``, rounded (an all-zero row stays zero).

    The codes keep the direction, not the length; read them back with
    :func:`dequantize_embedding` (a unit vector), or compare them directly with
    :func:`cosine_similarity`.

    Raises:
        ValueError: not a float array, not (D,) or (N, D), NaN or infinity.
    """
    v = np.asarray(v)
    if v.dtype.kind != "f":
        raise ValueError(f"quantize_embedding() takes float embeddings, got {v.dtype} "
                         "(already quantized?)")
    if v.ndim not in (1, 2) or v.shape[-1] == 0:
        raise ValueError(f"quantize_embedding() takes (D,) or (N, D), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("the embedding contains NaN or infinity")
    v = v.astype(np.float32)
    peak = np.abs(v).max(axis=-1, keepdims=True)
    scale = np.float32(_QMAX) / np.where(peak > 0, peak, np.float32(1.0))
    return np.clip(np.rint(v * scale), -_QMAX, _QMAX).astype(np.int8)


def dequantize_embedding(q: np.ndarray) -> np.ndarray:
    """int8 codes from :func:`quantize_embedding` back to float32 unit vectors, ``q / ||q||``
    (same shape; an all-zero row stays zero)."""
    q = np.asarray(q)
    if q.dtype != np.int8:
        raise ValueError(f"dequantize_embedding() takes int8 codes, got {q.dtype}")
    return l2_normalize(q.astype(np.float32))
