"""Diagnostic catalogs: another catalog's vectors cut by PCA, permuted, or perturbed.

What in an encoder's vectors does the device feed use? Each mode writes the source catalog's
items with changed vectors into a new catalog stamped with the encoder id of ``--bundle``, so
``edgerec scorer train`` and ``benchmarks/feed_encoders.py`` run the same feed on them. Only
for these comparisons: the vectors do not come from that bundle's encoder, so searching the
catalog by photo would be meaningless.

- ``--pca`` (the default): the top ``dim`` principal directions (uncentred, so inner products
  are kept as well as a rank-``dim`` projection can; ``dim`` is ``--bundle``'s width), then
  L2-normalised. Does the feed lose from a narrower encoder *because of the width*?
- ``--shuffle SEED``: the vectors handed to the wrong items (a seeded permutation of the
  rows): the floor of a feed that gets nothing from the pixels while the vectors keep their
  geometry.
- ``--noise COS --seed SEED``: each vector mixed with seeded Gaussian noise so that its cosine
  with the original is ``COS`` on average: the same information, a different fit; how far the
  feed moves when nothing but the exact numbers change (the refit jitter).

``--shuffle`` and ``--noise`` keep the width: ``--bundle`` must be as wide as the source.

    python benchmarks/catalog_variant.py --src build/movielens-teacher-catalog \\
        --bundle build/u18/movielens-u16 --out build/movielens-tpca128-catalog
    python benchmarks/catalog_variant.py --src build/movielens-teacher-catalog \\
        --bundle build/teacher-bundle --out build/movielens-tshuf-catalog --shuffle 0
"""

from __future__ import annotations

import argparse

import numpy as np
from edgerec.sdk import Bundle, Catalog, l2_normalize


def pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, str]:
    """``x`` (N, D) projected on its top ``dim`` uncentred principal directions, rows
    L2-normalised: (N, dim) float32 and a description."""
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    y = l2_normalize(x @ vt[:dim].T)
    kept = float((s[:dim] ** 2).sum() / (s ** 2).sum())
    return y, f"{x.shape[1]} -> {dim} dims, {kept:.1%} of the energy kept"


def shuffle(x: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """The rows of ``x`` (N, D) in a seeded random order."""
    return (x[np.random.default_rng(seed).permutation(len(x))],
            f"vectors permuted among the items (seed {seed})")


def noise(x: np.ndarray, cos: float, seed: int) -> tuple[np.ndarray, str]:
    """Each row of ``x`` (N, D), L2-normalised, plus Gaussian noise scaled so that the
    expected cosine of the result with the row is ``cos`` (0 < cos <= 1), re-normalised
    (float32)."""
    x = l2_normalize(x)
    # |n| ~ sigma * sqrt(D); cos = 1 / sqrt(1 + sigma^2 D) for noise orthogonal in expectation
    sigma = np.sqrt(1.0 / cos ** 2 - 1.0) / np.sqrt(x.shape[1])
    y = l2_normalize(x + sigma * np.random.default_rng(seed).standard_normal(x.shape))
    got = float(np.mean(np.sum(x * y, axis=1)))
    return y, f"vectors with Gaussian noise (seed {seed}): mean cosine to the source {got:.4f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="catalog whose vectors to change")
    ap.add_argument("--bundle", required=True, help="a bundle of the target width (its id)")
    ap.add_argument("--out", required=True, help="new catalog folder")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                      help="the source's vectors permuted among the items")
    mode.add_argument("--noise", type=float, default=None, metavar="COS",
                      help="the source's vectors with noise, mean cosine COS to the originals")
    ap.add_argument("--seed", type=int, default=0, help="the noise's seed (with --noise)")
    args = ap.parse_args(argv)
    if args.noise is not None and not 0.0 < args.noise <= 1.0:
        ap.error(f"--noise is a cosine in (0, 1], got {args.noise}")
    bundle = Bundle.open(args.bundle)
    with Catalog.open(args.src, readonly=True) as src:
        gen, ids, rows = src.item_rows()
        x = src.vectors_at(rows, gen).astype(np.float64)
        meta = src.metadata_of(list(ids))
        dtype = src.dtype
    dim = bundle.embedding_dim
    if (args.shuffle is not None or args.noise is not None) and dim != x.shape[1]:
        ap.error(f"--shuffle and --noise keep the width: --bundle is {dim}-d, the catalog "
                 f"{x.shape[1]}-d")
    if args.shuffle is not None:
        y, done = shuffle(x, args.shuffle)
    elif args.noise is not None:
        y, done = noise(x, args.noise, args.seed)
    else:
        y, done = pca(x, dim)
    with Catalog.create(args.out, bundle, dtype=dtype) as cat:
        cat.add(list(ids), y.astype(np.float32), [meta[i] for i in ids])
    print(f"wrote {args.out}: {len(ids)} items, {done}")


if __name__ == "__main__":
    main()
