"""Recommend from every camera frame on a Raspberry Pi: the catalog items that look like it.

Frames come from the Pi camera (picamera2, when installed and no --watch folder is given) or
from image files that appear in a watched folder (any camera app, a phone upload, a test).
One JSON line per frame on stdout: {"frame", "ms", "results": [{"item_id", "score", "label"}]}.

    python camera_loop.py --bundle BUNDLE --catalog CATALOG [--watch DIR] [--once] [-k 5]
"""

import argparse
import json
import time
from pathlib import Path

from edgerec.sdk import EdgeRecError, EncoderOptions, Recommender

parser = argparse.ArgumentParser(description="Recommend from each camera frame.")
parser.add_argument("--bundle", required=True, help="bundle directory")
parser.add_argument("--catalog", required=True, help="catalog built with that bundle")
parser.add_argument("--watch", help="folder whose new image files are the frames")
parser.add_argument("--once", action="store_true", help="the folder's files now, then exit")
parser.add_argument("--interval", type=float, default=0.5, help="seconds between frames")
parser.add_argument("-k", type=int, default=5, help="results per frame")
parser.add_argument("--threads", type=int, default=None, help="engine threads (Pi 4/5: 4)")
args = parser.parse_args()
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def frames():
    """(name, image) pairs: file paths from the watched folder, or RGB arrays from picamera2."""
    if args.watch:
        seen: set[Path] = set()
        while True:
            new = sorted(p for p in Path(args.watch).iterdir()
                         if p.suffix.lower() in PHOTO_SUFFIXES and p not in seen)
            yield from ((p.name, p) for p in new)
            seen.update(new)
            if args.once:
                return
            time.sleep(args.interval)
    from picamera2 import Picamera2  # Raspberry Pi OS: sudo apt install python3-picamera2

    camera = Picamera2()
    camera.configure(camera.create_still_configuration(main={"format": "RGB888",
                                                             "size": (640, 480)}))
    camera.start()
    for n in range(1 if args.once else 10**12):
        yield f"frame-{n}", camera.capture_array()[:, :, ::-1]  # BGR buffer -> RGB
        time.sleep(args.interval)


options = EncoderOptions(num_threads=args.threads)
with Recommender.create_from_bundle_path(args.bundle, args.catalog, encoder_options=options) as rec:
    for name, image in frames():
        start = time.perf_counter()
        try:
            recs = rec.similar(image, k=args.k)
        except EdgeRecError as exc:  # a half-written or corrupt file: report it, keep going
            print(json.dumps({"frame": name, "error": str(exc)}), flush=True)
            continue
        ms = round(1000 * (time.perf_counter() - start), 1)
        results = [{"item_id": r.item_id, "score": round(r.score, 4),
                    "label": r.metadata.get("label")} for r in recs]
        print(json.dumps({"frame": name, "ms": ms, "results": results}), flush=True)
