"""Encoder whitening on distillation runs already trained by distill_recipe.py.

For each ``--tags`` run (its line in results/distill_runs.jsonl and its checkpoint in
build/distill/<tag>/best.pt) this rebuilds the final student exactly as the run ended (best
weights, BatchNorm re-estimated on the same training crops), fits the export's whitening on
the training images' device crops and picks its power on the run's epoch-selection images
(``edgerec.export.distill.whiten.choose_whitening``, the rules ``edgerec export`` uses), both
kinds: ``total`` (PCA) and ``within_label`` (what the export uses when it has labels), then
measures seen and unseen mAP@10 with and without each (and, for within-label, at every
power, under ``by_power``: what each power would have given). One JSON line per run is
appended to results/whiten_runs.jsonl.

    python benchmarks/whiten_runs.py --tags r8-192px-ema-decay r12-default-seed1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import distill_recipe as recipe  # noqa: E402

RESULTS = HERE / "results"


def _run_line(tag: str) -> dict:
    text = (RESULTS / "distill_runs.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    found = [d for d in lines if d["tag"] == tag]
    if not found:
        sys.exit(f"no run {tag!r} in results/distill_runs.jsonl")
    return found[-1]


def measure(tag: str) -> dict:
    import torch
    from edgerec.export.distill.student import create_student
    from edgerec.export.distill.train import embed_views, recalibrate_batchnorm
    from edgerec.export.distill.whiten import DEFAULT_POWERS, choose_whitening
    from edgerec.export.options import DistillConfig
    from edgerec.sdk import Whitening
    from edgerec.sdk.evaluation.retrieval import label_retrieval

    run = _run_line(tag)
    if not run.get("select_holdout"):
        sys.exit(f"{tag} picked its epoch on validation; whitening needs its selection images")
    checkpoint = recipe.ROOT / "build" / "distill" / tag / "best.pt"
    if not checkpoint.is_file():
        sys.exit(f"{checkpoint} is missing: train the run again with distill_recipe.py")
    size, views = run["image_size"], run["views"]
    train, unlabeled, val, unseen = recipe._records()
    pool = train + (unlabeled if run["unlabeled"] else [])
    tr, va, un = recipe.teacher_caches(pool, val, unseen, image_size=size, views=views,
                                       cache_dir=recipe.ROOT / "build" / "cache")
    known = {f.name for f in fields(DistillConfig)}
    config = DistillConfig(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in run["config"].items() if k in known})
    extra = {} if run.get("width") is None else {"width": run["width"]}
    model = create_student(run["student"], dim=run["dim"], image_size=size, **extra)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu",
                                     weights_only=True)["model"])
    sel, _, held = recipe.holdouts(len(train), len(pool), run["select_holdout"],
                                   run.get("agree_holdout") or 0)
    keep = np.flatnonzero(~held)
    rows = (keep[:, None] * views + np.arange(views)).reshape(-1)
    recalibrate_batchnorm(model, np.asarray(tr.views)[rows], config, seed=config.seed)
    device_crops = np.asarray(tr.views)[::views]
    train_vectors = embed_views(model, device_crops[keep], config)
    labels = np.array([lab or "" for _, _, lab in pool])
    names = sorted({lab for lab in labels if lab})
    label_index = np.array([names.index(lab) if lab else -1 for lab in labels])
    sel = np.sort(sel)
    select_vectors = embed_views(model, device_crops[sel], config)
    val_labels = np.array([lab for _, _, lab in val])
    unseen_labels = np.array([lab for _, _, lab in unseen])
    v_val = embed_views(model, np.asarray(va.views), config)
    v_unseen = embed_views(model, np.asarray(un.views), config)
    line = {
        "tag": tag, "seed": config.seed, "image_size": size,
        "seen_map10": label_retrieval(v_val, val_labels).map_at_k,
        "unseen_map10": label_retrieval(v_unseen, unseen_labels).map_at_k,
    }
    for kind, train_labels in (("total", None), ("within_label", label_index[keep])):
        choice = choose_whitening(train_vectors, select_vectors, labels[sel],
                                  train_labels=train_labels)
        white = choice.whitening.apply if choice.whitening is not None else (lambda x: x)
        line[kind] = {
            "power": choice.power,
            "seen_map10": label_retrieval(white(v_val), val_labels).map_at_k,
            "unseen_map10": label_retrieval(white(v_unseen), unseen_labels).map_at_k,
            "choice": choice.to_dict(),
        }
    # the whole within-label curve, to see what each power trades (powers are picked on the
    # selection images only; this records what they would have given on seen and unseen labels)
    line["within_label"]["by_power"] = {
        f"{p:g}": {"seen_map10": label_retrieval(w.apply(v_val), val_labels).map_at_k,
                   "unseen_map10": label_retrieval(w.apply(v_unseen), unseen_labels).map_at_k}
        for p in DEFAULT_POWERS
        for w in [Whitening.fit(train_vectors, p, label_index[keep])]}
    line["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tags", nargs="+", required=True, help="distill_recipe.py run tags")
    parser.add_argument("--json", action="store_true", help="print each result as JSON")
    args = parser.parse_args()
    for tag in args.tags:
        line = measure(tag)
        with open(RESULTS / "whiten_runs.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        if args.json:
            print(json.dumps(line))
        else:
            print(f"{tag}: seen {line['seen_map10']:.3f} unseen {line['unseen_map10']:.3f}; "
                  + "; ".join(f"{kind} whitening (power {line[kind]['power']}) seen "
                              f"{line[kind]['seen_map10']:.3f} unseen "
                              f"{line[kind]['unseen_map10']:.3f}"
                              for kind in ("total", "within_label")))


if __name__ == "__main__":
    main()
