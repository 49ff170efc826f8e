"""The synthetic catalogs that ``edgerec bench`` times search on, built once and cached.

A catalog of ``n`` items is made of jittered copies of base vectors (the bundle's embeddings
of real photos, or random unit vectors for the scaling table), so that a photo's query has
a realistic spread of neighbours rather than a flat field of near-zero scores. Catalogs are
cached under the bench's work folder by ``(n, dim, dtype, encoder_id, base)`` and reused.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["catalog_key", "make_catalog", "make_queries"]

JITTER = 0.75
"""Norm of the noise added to a unit base vector before normalising (cosine to the base about
0.8)."""
_BLOCK = 32768


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def catalog_key(n: int, dim: int, dtype: str, encoder_id: str,
                base: Optional[np.ndarray] = None) -> str:
    """A folder name for a cached catalog, e.g. ``c-100000x128-int8-<hash>``."""
    h = hashlib.sha256(encoder_id.encode())
    if base is not None:
        h.update(np.ascontiguousarray(base, np.float32).tobytes())
    return f"c-{n}x{dim}-{dtype}-{h.hexdigest()[:12]}"


def make_catalog(path: Path, n: int, base: Optional[np.ndarray], *, encoder_id: str,
                 dim: Optional[int] = None, dtype: str = "int8", seed: int = 0) -> Path:
    """Create the catalog ``path`` (if it is not there yet) with ``n`` items: item ``i`` is
    ``base[i % len(base)]`` plus noise of norm :data:`JITTER`, normalised (``base`` None:
    random unit vectors of ``dim``). Built in a sibling folder and renamed, so a crash never
    leaves a half catalog to be reused."""
    from edgerec.sdk import Catalog

    if (path / "catalog.json").exists():
        return path
    rng = np.random.default_rng(seed)
    d = int(base.shape[1]) if base is not None else int(dim or 0)
    if d < 1:
        raise ValueError("make_catalog needs base vectors or a dim")
    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    labels = ("shoes", "bag", "hat", "shirt", "dress", "coat", "watch")
    with Catalog.create(tmp, dim=d, encoder_id=encoder_id, dtype=dtype) as cat:
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            noise = rng.standard_normal((stop - start, d), dtype=np.float32)
            if base is None:
                x = _unit(noise)
            else:
                rows = np.arange(start, stop) % len(base)
                x = _unit(base[rows] + noise * (JITTER / np.sqrt(d)))
            meta = [{"label": labels[r % len(labels)], "price": float(r % 100)}
                    for r in range(start, stop)]
            cat.add([f"item-{r}" for r in range(start, stop)], x, meta)
        cat.compact()
    tmp.rename(path)
    return path


def make_queries(path: Path, count: int = 64, seed: int = 1) -> np.ndarray:
    """``count`` "more like this" queries for a catalog: noisy copies of random items."""
    from edgerec.sdk import Catalog

    with Catalog.open(path, readonly=True) as cat, cat._reading() as view:
        rng = np.random.default_rng(seed)
        rows = rng.choice(view.total_rows, min(count, view.total_rows), replace=False)
        x = view.dequantize(np.sort(rows))
    noise = rng.standard_normal(x.shape).astype(np.float32) * (0.3 / np.sqrt(x.shape[1]))
    return _unit(x + noise)
