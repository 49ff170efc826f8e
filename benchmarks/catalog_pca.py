"""A diagnostic catalog: another catalog's vectors cut to fewer dimensions by PCA.

Does the device feed get less from a 128-d student than from the 1024-d teacher *because of the
dimension*? This writes the teacher's catalog vectors projected on their top ``--dim``
principal directions (uncentred, so inner products are kept as well as a rank-``dim``
projection can; then L2-normalised) into a new catalog stamped with the encoder id of a
``--dim``-wide bundle, so ``edgerec scorer train`` and ``benchmarks/feed_encoders.py`` can run
the same feed on them. Only for this comparison: the catalog's vectors do not come from that
bundle's encoder, so searching it by photo would be meaningless.

    python benchmarks/catalog_pca.py --src build/movielens-teacher-catalog \\
        --bundle build/u18/movielens-u16 --out build/movielens-tpca128-catalog
"""

from __future__ import annotations

import argparse

import numpy as np
from edgerec.sdk import Bundle, Catalog


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="catalog to project")
    ap.add_argument("--bundle", required=True, help="a bundle of the target width (its id)")
    ap.add_argument("--out", required=True, help="new catalog folder")
    args = ap.parse_args(argv)
    bundle = Bundle.open(args.bundle)
    with Catalog.open(args.src, readonly=True) as src:
        gen, ids, rows = src.item_rows()
        x = src.vectors_at(rows, gen).astype(np.float64)
        meta = src.metadata_of(list(ids))
        dtype = src.dtype
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    dim = bundle.embedding_dim
    y = x @ vt[:dim].T
    y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    with Catalog.create(args.out, bundle, dtype=dtype) as cat:
        cat.add(list(ids), y.astype(np.float32), [meta[i] for i in ids])
    kept = float((s[:dim] ** 2).sum() / (s ** 2).sum())
    print(f"wrote {args.out}: {len(ids)} items, {x.shape[1]} -> {dim} dims, "
          f"{kept:.1%} of the energy kept")


if __name__ == "__main__":
    main()
