"""Write the training side of the leave-last-out split of an events CSV: every line but each
user's newest item's, exactly the events ``edgerec evaluate --protocol leave-last-out`` (and
``benchmarks/feed_encoders.py``) trains on. An export given this file (``--events``) can learn
from the shop's behaviour without ever seeing an event the feed is then measured on.

    python benchmarks/leave_last_out_events.py build/movielens/events.csv \\
        --items build/movielens/items.csv --out build/movielens/events-train-llo.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from edgerec.sdk.evaluation.events import SplitProtocol, holdout_split, read_events
from edgerec.sdk.files import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("events", type=Path)
    parser.add_argument("--items", type=Path, required=True,
                        help="the catalog's items CSV (item_id column): events on other items "
                        "are dropped, as the evaluation drops them")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with open(args.items, newline="") as f:
        known = {row["item_id"] for row in csv.DictReader(f)}
    log = read_events(args.events, known_items=known)
    split = holdout_split(log, protocol=SplitProtocol.LEAVE_LAST_OUT)
    keep = sorted(it.line for events in split.train.values() for it in events)
    lines = args.events.read_text(encoding="utf-8").splitlines()
    atomic_write_text(args.out, "\n".join([lines[0]] + [lines[n - 1] for n in keep]) + "\n")
    print(f"{args.out}: {len(keep)} of {len(lines) - 1} events kept; "
          f"{sum(len(v) for v in split.test.values())} held out over {len(split.test)} users")


if __name__ == "__main__":
    main()
