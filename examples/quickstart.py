"""Quickstart: wrap an embedding model as a bundle, embed photos, search a catalog, recommend.

Runs on the data shipped in the repo (``examples/sample``), needs only numpy, pillow and one
engine (``pip install edgerec[tflite]``)::

    python examples/quickstart.py --out build/demo
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
from edgerec.sdk import (
    Catalog,
    Encoder,
    EncoderOptions,
    Event,
    EventKind,
    ImportOptions,
    Recommender,
    import_model,
)
from edgerec.sdk.evaluation.retrieval import label_retrieval

HERE = Path(__file__).parent
TEACHER = HERE / "sample" / "teacher" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="build/demo", help="working directory for the bundle")
    parser.add_argument("--images", default=str(HERE / "sample" / "images"),
                        help="folder of <label>/<image> files")
    parser.add_argument("--model", default=str(TEACHER), help=".tflite/.onnx embedding model")
    parser.add_argument("--queries", type=int, default=4, help="how many queries to show")
    parser.add_argument("--threads", type=int, default=None, help="engine threads")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    # 1. Bring your own model: the Coral MobileNetV1 takes raw 0..255 pixels.
    bundle = import_model([args.model], Path(args.out) / "teacher-bundle",
                          ImportOptions(raw_pixels=True, name="mobilenet_v1 teacher"), force=True)

    # 2. Embed every photo (unit vectors, so inner product = cosine).
    paths = sorted(Path(args.images).glob("*/*.jpg"))
    labels = [p.parent.name for p in paths]
    with Encoder.create_from_bundle(bundle, EncoderOptions(num_threads=args.threads)) as encoder:
        start = time.perf_counter()
        vectors = encoder.embed(paths)
        seconds = time.perf_counter() - start
        artifact = encoder.artifact.key

    # 3. Nearest neighbours of a few photos, and how often they share the query's label.
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    step = max(1, len(paths) // max(1, args.queries))
    shown = []
    for q in range(0, len(paths), step)[: args.queries]:
        top = np.argsort(-sims[q])[:5]
        shown.append({"query": paths[q].name, "label": labels[q], "neighbours": [
            {"item": paths[i].name, "label": labels[i], "cosine": round(float(sims[q, i]), 3)}
            for i in top]})
    report = label_retrieval(vectors, labels, k=10)

    # 4. A local catalog (int8 vectors + SQLite metadata) and the recommender on top of it.
    catalog_dir = Path(args.out) / "catalog"
    shutil.rmtree(catalog_dir, ignore_errors=True)
    with Catalog.create(catalog_dir, bundle) as catalog:
        catalog.add([p.stem for p in paths], vectors, [{"label": lab} for lab in labels])
    owners: dict[str, list[str]] = {}
    items_csv = Path(args.images).parent / "items.csv"
    if items_csv.is_file():
        with open(items_csv, newline="") as f:
            for row in csv.DictReader(f):
                owners.setdefault(row["owner_id"], []).append(row["item_id"])
    with Recommender.create_from_bundle(bundle, catalog_dir) as rec:
        alike = rec.similar(item_id=paths[len(paths) // 2].stem, k=3,
                            filters={"label": labels[len(paths) // 2]})
        owner, owned = max(owners.items(), key=lambda kv: len(kv[1])) if owners else ("", [])
        history = [Event(i, EventKind.PURCHASE, timestamp=float(n)) for n, i in enumerate(owned)]
        feed = rec.for_user(history, k=5) if history else None
    chance = float(np.mean([(labels.count(lab) - 1) / (len(labels) - 1) for lab in labels]))
    result = {"bundle": str(bundle.path), "artifact": artifact, "images": len(paths),
              "embed_ms_per_image": round(1000 * seconds / len(paths), 2),
              "retrieval": report.to_dict(), "chance_precision_at_10": round(chance, 3),
              "queries": shown, "similar_same_label": alike.to_list(),
              "feed": None if feed is None else {"user": owner, "history": len(history),
                                                 **feed.to_dict()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"bundle {bundle.path} ({artifact}, {bundle.embedding_dim}-d)")
    print(f"embedded {len(paths)} photos in {seconds:.1f} s "
          f"({result['embed_ms_per_image']} ms/photo incl. JPEG decode)\n")
    for item in shown:
        print(f"query {item['query'][:8]}  [{item['label']}]")
        for n in item["neighbours"]:
            mark = "*" if n["label"] == item["label"] else " "
            print(f"   {mark} {n['cosine']:.3f}  {n['item'][:8]}  [{n['label']}]")
    print(f"\nsame-label retrieval over all {len(paths)} photos: {report}")
    print(f"(chance P@10 = {chance:.3f}; * marks a neighbour with the query's label)")
    middle = len(paths) // 2
    print(f"\ncatalog {catalog_dir}: {len(paths)} items; similar to "
          f"{paths[middle].stem[:8]} with label={labels[middle]}:")
    for r in alike:
        print(f"   {r.score:.3f}  {r.item_id[:8]}  {r.reason}")
    if feed is not None:
        print(f"\nfeed for owner {owner} ({len(history)} items in their wardrobe); {feed.note}")
        for r in feed:
            print(f"   {r.score:.3f}  {r.item_id[:8]}  [{r.metadata.get('label')}]  {r.reason}")


if __name__ == "__main__":
    main()
