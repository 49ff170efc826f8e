"""A personalised feed: record what two people bought in an on-device profile store, then
rank the catalog for each, with a reason per item. Public API only.

    python examples/personalized_feed.py --bundle BUNDLE --catalog CATALOG [--items CSV]
(build the catalog first, e.g. with examples/visual_search.py or `edgerec catalog build`)
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from edgerec.sdk import Event, EventKind, Recommender

parser = argparse.ArgumentParser(description="A feed for two people from their purchases.")
parser.add_argument("--bundle", required=True, help="bundle directory")
parser.add_argument("--catalog", required=True, help="catalog built with that bundle")
parser.add_argument("--items", default=str(Path(__file__).parent / "sample" / "items.csv"),
                    help="items CSV with an owner_id column: each owner bought their items")
parser.add_argument("--profiles", default="build/examples/profiles.sqlite", help="profile store")
args = parser.parse_args()

bought = defaultdict(list)
with open(args.items, newline="") as f:
    for row in csv.DictReader(f):
        bought[row["owner_id"]].append(row["item_id"])
people = sorted(bought, key=lambda user: -len(bought[user]))[:2]  # the two biggest wardrobes

Path(args.profiles).parent.mkdir(parents=True, exist_ok=True)
with Recommender.create_from_bundle_path(args.bundle, args.catalog,
                                         profiles=args.profiles) as rec:
    for user in people:
        rec.profiles.forget(user)  # start fresh on every run of the example
        rec.profiles.record(user, [Event(i, EventKind.PURCHASE) for i in bought[user][:-1]])
        feed = rec.for_user(user, k=5)  # a new event changes the next feed at once
        print(f"{user}: {len(bought[user]) - 1} purchases; {feed.note or 'ranked by the scorer'}")
        for r in feed:
            print(f"  {r.score:.3f}  {r.item_id}  [{r.metadata.get('label')}]  {r.reason}")
