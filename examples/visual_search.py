"""Visual search: build a catalog from a folder of photos, then find what looks like a photo,
within a label and with diversity. Public API only; numpy, pillow and one engine.

    python examples/visual_search.py --bundle BUNDLE [--items CSV] [--photo FILE] [--out DIR]
"""

import argparse
from pathlib import Path

from edgerec.sdk import Recommender, build_catalog, items_from_csv

SAMPLE = Path(__file__).parent / "sample"

parser = argparse.ArgumentParser(description="Visual search over a folder of photos.")
parser.add_argument("--bundle", required=True, help="bundle directory (edgerec export/import)")
parser.add_argument("--items", default=str(SAMPLE / "items.csv"), help="items CSV to index")
parser.add_argument("--photo", help="query photo (default: the first item's photo)")
parser.add_argument("--out", default="build/examples/catalog", help="catalog directory")
args = parser.parse_args()

items = items_from_csv(args.items)  # item_id, path, label and any other column as metadata
report = build_catalog(args.bundle, args.out, items)  # resumable; bad photos are reported
print(f"catalog {args.out}: {report.added} added, {len(report.failed)} failed")

photo = args.photo or items[0].image
with Recommender.create_from_bundle_path(args.bundle, args.out) as rec:
    alike = rec.similar(photo, k=5, exclude=[items[0].item_id])  # not the photo itself
    same_label = rec.similar(photo, k=5, exclude=[items[0].item_id],
                             filters={"label": items[0].label},
                             diversity=0.5)  # near-duplicates spread out
for title, results in (("looks like the photo", alike), ("same label, diverse", same_label)):
    print(title)
    for r in results:
        print(f"  {r.score:.3f}  {r.item_id}  [{r.metadata.get('label')}]  {r.reason}")
