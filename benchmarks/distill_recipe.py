"""Distillation recipe experiments on the real data in ../shared (fp32 torch student), and
records of whole exports.

Trains a student on clothing-small/train (+ clothing-extra/unlabeled for distillation) and
measures same-label mAP@10 on clothing-small/validation (seen labels) and on
clothing-extra/unseen (never trained on), next to the teacher on the same crops. Each run
appends one JSON line to results/distill_runs.jsonl.

    python benchmarks/distill_recipe.py --set epochs=30 w_label=1 w_relational=1

With ``--export``, the rest of the command line is an ``edgerec export`` run on any data: it
runs in this process, and its line records the command, the seeds, every model's figures from
the bundle's manifest (the teacher, the torch student, each fp32 and int8 file), the minutes
and the machine's load average while it ran (2 shared cores: say so beside the figures).

    python benchmarks/distill_recipe.py --tag u1 --export -- --images DIR --out build/b ...

With ``--teacher-figures``, a teacher (``--teacher MODEL [--teacher-output TENSOR]``) is
measured on the held-out images of the export the rest of the line describes (same split):

    python benchmarks/distill_recipe.py --tag t1 --teacher M --teacher-figures -- --images DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import threading
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TEACHER = ROOT / "examples/sample/teacher/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))
from _report import parse_value  # noqa: E402


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _records():
    small = SHARED / "data" / "clothing-small"
    extra = SHARED / "data" / "clothing-extra"
    rows = _csv(small / "items.csv")
    train = [(r["item_id"], small / r["path"], r["label"]) for r in rows if r["split"] == "train"]
    val = [(r["item_id"], small / r["path"], r["label"]) for r in rows if r["split"] != "train"]
    xrows = _csv(extra / "items.csv")
    unlabeled = [(r["item_id"], extra / r["path"], None) for r in xrows if r["set"] == "unlabeled"]
    unseen = [(r["item_id"], extra / r["path"], r["label"]) for r in xrows if r["set"] == "unseen"]
    return train, unlabeled, val, unseen


def teacher_caches(pool: list, val: list, unseen: list, *, image_size: int, views: int,
                   cache_dir: Path) -> tuple:
    """The shipped teacher's feature caches (train pool with ``views`` views, validation and
    unseen with the device crop only), built on first use and reused after."""
    import hashlib

    from edgerec.export.data.views import VIEW_RECIPE, make_views
    from edgerec.export.distill.cache import build_feature_cache
    from edgerec.export.distill.teacher import Teacher

    teacher = Teacher.load(TEACHER, cache_dir)
    # the workers open this bundle rather than wrapping the model file again (as the export)
    tinfo = {"teacher_source": teacher.bundle.path, "teacher_id": teacher.identity,
             "teacher_dim": teacher.dim, "teacher_size": teacher.input_size}
    teacher.close()

    def cache(records, n_views):
        digests = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for _, p, _ in records]
        t = time.perf_counter()
        c = build_feature_cache(
            cache_dir, item_ids=[i for i, _, _ in records], paths=[p for _, p, _ in records],
            digests=digests, student_size=image_size, views_per_item=n_views,
            view_fn=make_views, view_recipe=VIEW_RECIPE, workers=2, **tinfo)
        print(f"cache {len(records)} x {n_views}: {time.perf_counter() - t:.0f} s", flush=True)
        return c

    return cache(pool, views), cache(val, 1), cache(unseen, 1)


def holdouts(n_train: int, n_pool: int, select_holdout: float,
             agree_holdout: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items held out of training: ``select_holdout`` of the labelled train items (to pick the
    epoch on) and ``agree_holdout`` unlabeled ones (teacher agreement), drawn with a fixed seed;
    returns (select items, agreement items, held-out mask over the pool)."""
    rng = np.random.default_rng(1234)
    sel_items = (rng.permutation(n_train)[: round(select_holdout * n_train)]
                 if select_holdout else np.array([], int))
    agree_items = (rng.permutation(np.arange(n_train, n_pool))[:agree_holdout]
                   if agree_holdout else np.array([], int))
    held = np.zeros(n_pool, bool)
    held[sel_items] = True
    held[agree_items] = True
    return sel_items, agree_items, held


def _flag(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` in an argument list (None when absent)."""
    return args[args.index(name) + 1] if name in args else None


def record_export(tag: str, export_args: list[str], note: str = "") -> dict:
    """Run ``edgerec export EXPORT_ARGS`` here, then append its record to distill_runs.jsonl.

    The record holds the command, the seeds, the teacher, what the student trained with, each
    model's figures (``metrics.quality``: mAP@10 where labels exist, teacher-neighbour
    agree@10), what the measured sets hold, the whitening, the int8 gates and remedies, the
    minutes and the 1-minute load average sampled every 30 s while it ran.
    """
    from edgerec.sdk.cli.app import main as edgerec

    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(30):
            loads.append(os.getloadavg()[0])

    thread = threading.Thread(target=sample, daemon=True)
    loads.append(os.getloadavg()[0])
    thread.start()
    t0 = time.perf_counter()
    code = edgerec(["export", *export_args])
    done.set()
    minutes = (time.perf_counter() - t0) / 60
    line: dict = {"tag": tag, "mode": "export", "note": note,
                  "command": "edgerec export " + shlex.join(export_args), "exit_code": code,
                  "wall_minutes": minutes,
                  "load_avg_1min": {"start": loads[0], "mean": float(np.mean(loads)),
                                    "max": float(np.max(loads)), "samples": len(loads)},
                  "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    out = _flag(export_args, "--out")
    if code == 0 and out is not None:
        manifest = json.loads((Path(out) / "manifest.json").read_text())
        m, recipe = manifest["metrics"], manifest["recipe"]
        line.update({
            "seed": recipe.get("seed"), "distill_seed": recipe.get("distill_seed"),
            "teacher": manifest.get("teacher", {}), "student": recipe.get("student"),
            "student_init": recipe.get("init"), "image_size": recipe.get("image_size"),
            "views": recipe.get("views"),
            "trained_with_labels": recipe.get("trained_with_labels"),
            "distill": recipe.get("distill"), "quality": m["quality"],
            "quality_sets": m.get("quality_sets"), "whitening": m.get("whitening"),
            "training": m.get("training"), "data": m.get("data"),
            "int8_gate_checks": m.get("int8_gate_checks"),
            "int8_remedies": {k: v.get("remedy") for k, v in m.get("quantization", {}).items()},
            "gate_failures": m.get("gate_failures"), "export_minutes": m.get("export_minutes"),
            "macs": m.get("macs"),
        })
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "distill_runs.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def _print_export(line: dict) -> None:
    print(f"{line['tag']}: exit {line['exit_code']}, {line['wall_minutes']:.1f} min, load "
          f"{line['load_avg_1min']['mean']:.2f} mean / {line['load_avg_1min']['max']:.2f} max")
    for model, values in line.get("quality", {}).items():
        shown = "  ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in values.items())
        print(f"  {model:34s} {shown}")


def teacher_figures(tag: str, model: str, output: str | None, export_args: list[str]) -> dict:
    """A teacher's figures on the held-out images an export with ``export_args`` measures on
    (the same scan, split and seed, through the export's own data step), with their labels
    where they have them: mAP@10, and top-10 agreement with that export's own teacher."""
    from edgerec.export.artifacts.parity import neighbour_overlap
    from edgerec.export.cli import _export_options
    from edgerec.export.data.views import make_views
    from edgerec.export.distill.teacher import Teacher
    from edgerec.export.distill.tflite_output import with_output
    from edgerec.export.pipeline import _label_map, _read_data, _teacher_source
    from edgerec.sdk import load_image
    from edgerec.sdk.cli.app import build_parser

    options = _export_options(build_parser().parse_args(["export", *export_args]))
    data, _ = _read_data(options, log=lambda m: print(m, flush=True))
    work = ROOT / "build" / "cache"
    work.mkdir(parents=True, exist_ok=True)
    source = Path(model)
    if output:
        source = with_output(source, output, work / f"{source.stem}-{output.replace('/', '_')}"
                             ".tflite")
    line: dict = {"tag": tag, "mode": "teacher", "teacher": model, "teacher_output": output,
                  "command": "edgerec export " + shlex.join(export_args), "figures": {}}
    own_source = _teacher_source(options, work, lambda _m: None)
    for name, records in (("seen", data.val), ("unseen", data.unseen)):
        if not records:
            continue
        vectors = {}
        for which, path in (("this", source), ("export", own_source)):
            teacher = Teacher.load(path, work)
            try:
                views = np.concatenate([make_views(load_image(r.path), 1, teacher.input_size, 0)
                                        for r in records])
                vectors[which] = teacher.embed_views(views)
            finally:
                teacher.close()
        line["figures"][name] = {
            "images": len(records),
            "map@10": _label_map(vectors["this"], data.measured(records)),
            "agree@10_with_export_teacher": neighbour_overlap(vectors["export"],
                                                              vectors["this"], 10)}
    line["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(RESULTS / "distill_runs.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def main() -> None:
    if "--teacher-figures" in sys.argv:
        at = sys.argv.index("--teacher-figures")
        head = argparse.ArgumentParser(description="a teacher's figures on an export's split")
        head.add_argument("--tag", required=True, help="name of the record")
        head.add_argument("--teacher", required=True, help="the .tflite/.onnx teacher to measure")
        head.add_argument("--teacher-output", help="its tensor to use as the embedding")
        ours = head.parse_args(sys.argv[1:at])
        rest = sys.argv[at + 1:]
        line = teacher_figures(ours.tag, ours.teacher, ours.teacher_output,
                               rest[1:] if rest[:1] == ["--"] else rest)
        print(json.dumps(line["figures"], indent=1))
        return
    if "--export" in sys.argv:
        at = sys.argv.index("--export")
        head = argparse.ArgumentParser(description="record an edgerec export run")
        head.add_argument("--tag", required=True, help="name of the run in the results")
        head.add_argument("--note", default="", help="free text kept with the record")
        ours = head.parse_args(sys.argv[1:at])
        rest = sys.argv[at + 1:]
        _print_export(record_export(ours.tag, rest[1:] if rest[:1] == ["--"] else rest,
                                    ours.note))
        return

    import torch
    from edgerec.export.distill.student import create_student
    from edgerec.export.distill.train import embed_views, train_student
    from edgerec.export.options import DistillConfig
    from edgerec.sdk.evaluation.retrieval import label_retrieval

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default="mobilenet_v3_small", help="registered student")
    parser.add_argument("--image-size", type=int, default=160, help="student input size")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension")
    parser.add_argument("--width", type=float, default=None, help="width multiplier override")
    parser.add_argument("--views", type=int, default=4, help="cached views per train image")
    parser.add_argument("--no-unlabeled", action="store_true", help="skip clothing-extra/unlabeled")
    parser.add_argument("--set", nargs="*", default=[], help="DistillConfig overrides key=value")
    parser.add_argument("--cache", default=str(ROOT / "build" / "cache"), help="cache directory")
    parser.add_argument("--tag", default="", help="free-text label for the results line")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--select-holdout", type=float, default=0.0,
                        help="fraction of labelled train items held out to pick the epoch "
                             "(0: pick on clothing-small/validation, which is also 'seen')")
    parser.add_argument("--agree-holdout", type=int, default=0,
                        help="unlabeled photos held out of training to log the student/teacher "
                             "top-10 neighbour agreement per epoch (a label-free signal)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run TAG from build/distill/TAG/last.pt (same options)")
    parser.add_argument("--probe-unseen", action="store_true",
                        help="log unseen and validation mAP@10 every epoch (diagnostics only; "
                             "never used to pick the epoch unless select_on names them)")
    args = parser.parse_args()

    config = DistillConfig()
    names = {f.name for f in fields(DistillConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in names:
            sys.exit(f"unknown DistillConfig field {key!r}; fields: {sorted(names)}")
        config = replace(config, **{key: parse_value(value)})

    train, unlabeled, val, unseen = _records()
    pool = train + ([] if args.no_unlabeled else unlabeled)
    tr, va, un = teacher_caches(pool, val, unseen, image_size=args.image_size, views=args.views,
                                cache_dir=Path(args.cache))
    label_names = sorted({lab for _, _, lab in train})
    labels = np.array([label_names.index(lab) if lab else -1 for _, _, lab in pool])
    val_labels = np.array([lab for _, _, lab in val])
    unseen_labels = np.array([lab for _, _, lab in unseen])
    teacher_seen = label_retrieval(np.asarray(va.features, np.float32), val_labels).map_at_k
    teacher_unseen = label_retrieval(np.asarray(un.features, np.float32), unseen_labels).map_at_k

    sel_items, agree_items, held = holdouts(len(train), len(pool), args.select_holdout,
                                            args.agree_holdout)
    V = args.views
    if held.any():
        keep = np.flatnonzero(~held)
        rows = (keep[:, None] * V + np.arange(V)).reshape(-1)
        train_views, train_feats = np.asarray(tr.views)[rows], np.asarray(tr.features)[rows]
        train_labels = labels[keep]
    else:
        train_views, train_feats, train_labels = tr.views, tr.features, labels
    if len(sel_items):
        select_views = np.asarray(tr.views)[np.sort(sel_items) * V]  # view 0 = centre crop
        select_labels = labels[np.sort(sel_items)]
    else:
        select_views, select_labels = np.asarray(va.views), val_labels
    agree_views = np.asarray(tr.views)[np.sort(agree_items) * V] if len(agree_items) else None
    agree_teacher = (np.asarray(tr.features)[np.sort(agree_items) * V].astype(np.float32)
                     if len(agree_items) else None)

    def neighbours(x: np.ndarray, k: int = 10) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    teacher_nn = neighbours(agree_teacher) if agree_teacher is not None else None

    def probe(model) -> dict:
        out = {}
        if agree_views is not None:
            s_nn = neighbours(embed_views(model, agree_views, config))
            out["agree@10"] = float(np.mean([len(set(a) & set(b)) / 10
                                             for a, b in zip(s_nn, teacher_nn)]))
        if args.probe_unseen:
            out["probe_seen"] = label_retrieval(
                embed_views(model, np.asarray(va.views), config), val_labels).map_at_k
            out["probe_unseen"] = label_retrieval(
                embed_views(model, np.asarray(un.views), config), unseen_labels).map_at_k
        return out

    extra = {} if args.width is None else {"width": args.width}
    model = create_student(args.student, dim=args.dim, image_size=args.image_size, **extra)
    out_dir = ROOT / "build" / "distill" / (args.tag or "run")
    result = train_student(
        model, views=train_views, features=train_feats, views_per_item=args.views,
        labels=train_labels, val_views=select_views, val_labels=select_labels, config=config,
        checkpoint_dir=out_dir, resume=args.resume, probe=probe, log=lambda r: print(json.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True))
    seen = label_retrieval(embed_views(model, np.asarray(va.views), config), val_labels)
    unseen_r = label_retrieval(embed_views(model, np.asarray(un.views), config), unseen_labels)
    line = {
        "tag": args.tag, "student": args.student, "image_size": args.image_size, "dim": args.dim,
        "width": args.width,
        "views": args.views, "unlabeled": not args.no_unlabeled, "config": asdict(config),
        "seen_map10": seen.map_at_k, "unseen_map10": unseen_r.map_at_k,
        "teacher_seen_map10": teacher_seen, "teacher_unseen_map10": teacher_unseen,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped": result.stopped, "train_minutes": result.seconds / 60,
        "select_holdout": args.select_holdout, "agree_holdout": args.agree_holdout,
        "history": result.history,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch_threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "distill_runs.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(json.dumps(line, indent=2) if args.json else
          f"seen mAP@10 {seen.map_at_k:.3f} (teacher {teacher_seen:.3f})  unseen mAP@10 "
          f"{unseen_r.map_at_k:.3f} (teacher {teacher_unseen:.3f})  "
          f"best epoch {result.best_epoch}, {result.seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
