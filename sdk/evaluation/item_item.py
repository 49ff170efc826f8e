"""Item-item weight matrices from a Gram matrix ``G = X^T X`` (numpy; scipy speeds one step).

- :func:`ease_weights`: EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data",
  WWW 2019), the closed form ``B = I - P diag(1 / diag(P))`` with ``P = (G + lambda I)^-1``,
  i.e. ``B_ab = -P_ab / P_bb`` and a zero diagonal; a user's scores are ``x_u B``.
- :func:`cosine_neighbours`: item-kNN, ``S_ab = G_ab / sqrt(G_aa G_bb)`` with a zero diagonal,
  each row keeping its ``k`` largest entries (0: all); a user's scores are ``x_u S``.

Memory: ``G`` is ``(n, n)`` float32 (co-occurrence counts, exact); EASE needs one float64
copy for the inversion and returns float32, so a fit peaks near ``16 n^2`` bytes with ``G``
(n = 9,000: 1.3 GB; n = 20,000: 6.4 GB).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_neighbours", "ease_weights", "spd_inverse"]

_BLOCK = 1024


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of the symmetric positive-definite float64 matrix ``a`` (n, n), computed in
    place (``a`` is overwritten). LAPACK's Cholesky ``potrf`` + ``potri`` through scipy when it
    is installed (about 3x faster than LU), else :func:`numpy.linalg.inv`.

    Raises:
        numpy.linalg.LinAlgError: ``a`` is not positive definite.
    """
    try:
        from scipy.linalg import lapack
    except ImportError:
        return np.linalg.inv(a)
    # a.T is a's memory in Fortran order (and equal to a): LAPACK works on it in place
    factor, info = lapack.dpotrf(a.T, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the matrix is not positive definite (potrf info {info})")
    inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"the matrix is singular (potri info {info})")
    n = len(inverse)
    for start in range(0, n, _BLOCK):  # potri fills the lower triangle: mirror it by blocks
        stop = min(start + _BLOCK, n)
        diag = np.tril(inverse[start:stop, start:stop])
        inverse[start:stop, start:stop] = diag + np.tril(diag, -1).T
        inverse[start:stop, stop:] = inverse[stop:, start:stop].T
    return inverse


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE's ``(n, n)`` float32 item-item weights for the Gram matrix ``gram`` (n, n) and L2
    penalty ``lam`` > 0 (see the module docstring)."""
    if not lam > 0:
        raise ValueError(f"lambda must be > 0, got {lam!r}")
    a = np.array(gram, dtype=np.float64)
    a[np.diag_indices_from(a)] += lam
    p = spd_inverse(a)
    p /= -np.diag(p)[None, :]
    p[np.diag_indices_from(p)] = 0.0
    return p.astype(np.float32, order="C")


def cosine_neighbours(gram: np.ndarray, k: int = 0) -> np.ndarray:
    """Item-kNN's ``(n, n)`` float32 weights: cosine similarity of the item columns of ``X``
    from ``gram`` (n, n) (items without events have similarity 0), zero diagonal, and in each
    row only the ``k`` largest kept (``k`` 0 or >= n - 1: all; ties at the k-th value go to
    the order :func:`numpy.argpartition` leaves)."""
    g = np.asarray(gram, dtype=np.float32)
    norm = np.sqrt(np.diag(g)).astype(np.float32)
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    s = g * inv[:, None]
    s *= inv[None, :]
    s[np.diag_indices_from(s)] = 0.0
    n = len(s)
    if 0 < k < n - 1:
        for start in range(0, n, _BLOCK):
            block = s[start:start + _BLOCK]
            keep = np.argpartition(-block, k - 1, axis=1)[:, :k]
            pruned = np.zeros_like(block)
            rows = np.arange(len(block))[:, None]
            pruned[rows, keep] = block[rows, keep]
            s[start:start + _BLOCK] = pruned
    return s
