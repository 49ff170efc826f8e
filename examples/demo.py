"""The main job end to end on the data in the repo, gathered on one HTML page (`make demo`).

1. a ``--quick`` export of a student from the shipped teacher (distil, quantize, ONNX + TFLite,
   gates: the toolchain working; a smoke configuration, not a usable encoder);
2. with the shipped student (``examples/models/clothing-student``): a catalog of the sample,
   visual search from held-out photos (all labels, then one label with diversity);
3. a scorer trained on the sample's owners, and a personalised feed for two owners with reasons;
4. ``edgerec evaluate`` (the device's ranking against baselines, same run);
5. a short ``edgerec bench`` (latency per stage, student and teacher);
6. ``index.html`` linking or embedding all of it; its path is printed last.

    python examples/demo.py --out build/demo [--skip-export] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edgerec.sdk import (
    Bundle,
    Event,
    EventKind,
    ImportOptions,
    Recommender,
    build_catalog,
    import_model,
    items_from_csv,
)
from PIL import Image
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample"
TEACHER = SAMPLE / "teacher" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
STUDENT = HERE / "models" / "clothing-student"
EDGEREC = [sys.executable, "-m", "edgerec.sdk.cli"]


def run(step: str, args: list[str], log: Path) -> dict[str, Any]:
    """Run ``edgerec ARGS --json``, its stderr (progress) to ``log``; the parsed stdout."""
    with open(log, "w") as err:
        done = subprocess.run([*EDGEREC, *args, "--json"], stdout=subprocess.PIPE, stderr=err,
                              text=True)
    if done.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"demo: {step} failed (exit {done.returncode}); see {log}\n{tail}")
    return json.loads(done.stdout) if done.stdout.strip() else {}


def thumb(path: Path, out: Path, size: int = 128) -> str:
    """A small JPEG copy of ``path`` under ``out/img``; its path relative to ``out``."""
    target = out / "img" / f"{path.stem}.jpg"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            img.save(target, quality=85)
    return f"img/{target.name}"


def short_ids(text: str) -> str:
    """``text`` with every UUID-like item id cut to its first 8 characters."""
    return re.sub(r"\b([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
                  r"\1", text)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v if v is not None else ""))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def card(src: str, lines: list[str], mark: str = "") -> str:
    text = "<br>".join(html.escape(x) for x in lines)
    return (f'<figure class="{mark}"><img src="{src}" alt="">'
            f"<figcaption>{text}</figcaption></figure>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/demo", help="working directory and the page")
    parser.add_argument("--student", default=str(STUDENT), help="student bundle to demonstrate")
    parser.add_argument("--skip-export", action="store_true",
                        help="skip the --quick export (step 1), e.g. without the export extra")
    parser.add_argument("--threads", type=int, default=2, help="engine threads")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    sections: list[str] = []
    steps = tqdm(total=6, desc="demo", unit="step")

    # 1. The toolchain: a --quick student from the shipped teacher.
    t = time.perf_counter()
    if args.skip_export:
        sections.append("<h2>1. Export (skipped: --skip-export)</h2>")
    else:
        quick = out / "quick-bundle"
        run("quick export", ["export", "--images", str(SAMPLE / "images"), "--teacher",
                                   str(TEACHER), "--out", str(quick), "--quick", "--force",
                                   "--allow-gate-failure"], out / "export.log")
        metrics = Bundle.open(quick).manifest.metrics
        quality = [{"model": k, **v} for k, v in metrics.get("quality", {}).items()]
        failures = metrics.get("gate_failures", {})
        sections.append(
            "<h2>1. Export: a <code>--quick</code> student from the shipped teacher</h2>"
            '<p class="warn">A smoke configuration (tiny schedule on 200 photos): it shows the '
            "toolchain working (distil, quantize, ONNX + TFLite, gates), not a usable encoder. "
            f"Gates failed: {html.escape(', '.join(failures) or 'none')}.</p>"
            + table(quality, ["model", "seen_map@10", "seen_agree@10"])
            + f'<p><a href="{(quick / "report" / "report.html").relative_to(out)}">'
            "the export's own report</a></p>")
    times["export (--quick)"] = time.perf_counter() - t
    steps.update()

    # 2. Catalog of the sample with the shipped student; visual search from held-out photos.
    t = time.perf_counter()
    student = Bundle.open(args.student)
    teacher = import_model([TEACHER], out / "teacher-bundle",
                           ImportOptions(raw_pixels=True, name="mobilenet_v1 teacher"), force=True)
    catalog = out / "catalog"
    shutil.rmtree(catalog, ignore_errors=True)
    items = items_from_csv(SAMPLE / "items.csv")
    report = build_catalog(student, catalog, items)
    image_of = {i.item_id: Path(i.image) for i in items}
    with open(SAMPLE / "held_out.csv", newline="") as f:
        held_out = list(csv.DictReader(f))
    queries = [held_out[j] for j in (0, 35, 72)]
    blocks = []
    with Recommender.create_from_bundle(student, catalog) as rec:
        for q in queries:
            photo = SAMPLE / q["path"]
            alike = rec.similar(photo, k=6)
            diverse = rec.similar(photo, k=6, filters={"label": q["label"]}, diversity=0.5)
            for title, found in (("all labels", alike),
                                 (f"label = {q['label']}, diversity 0.5", diverse)):
                cards = [card(thumb(photo, out), ["query (held out)", q["label"]], "query")]
                cards += [card(thumb(image_of[r.item_id], out),
                               [f"{r.score:.3f} {r.metadata.get('label')}",
                                "✓ same label" if r.metadata.get("label") == q["label"]
                                else "✗ other label"],
                               "hit" if r.metadata.get("label") == q["label"] else "miss")
                          for r in found]
                blocks.append(f"<h3>{html.escape(title)}</h3>"
                              f"<div class=grid>{''.join(cards)}</div>")
    q_metrics = student.manifest.metrics.get("quality", {})
    quality = [{"model": k, **{m: v for m, v in row.items() if m.endswith("map@10")}}
               for k, row in q_metrics.items()]
    sections.append(
        f"<h2>2. Visual search with the shipped student ({html.escape(student.manifest.name)})"
        "</h2><p>Catalog of the 200 sample photos "
        f"({report.added} added, {len(report.failed)} failed); queries are held-out photos "
        "(clothing-small validation, never trained on). Its measured quality "
        "(same-label mAP@10 on the export's held-out sets):</p>"
        + table(quality, ["model", "seen_map@10", "unseen_map@10"]) + "".join(blocks))
    times["catalog + search"] = time.perf_counter() - t
    steps.update()

    # 3. A scorer trained on the sample's owners, and a feed for two of them.
    t = time.perf_counter()
    scored = out / "student-scorer"
    run("scorer train", ["scorer", "train", "--bundle", str(student.path), "--catalog",
                         str(catalog), "--events", str(SAMPLE / "items.csv"), "--user-column",
                         "owner_id", "--out", str(scored), "--force"], out / "scorer.log")
    owned: dict[str, list[str]] = defaultdict(list)
    label_of = {i.item_id: i.label for i in items}
    for i in items:
        owned[str(i.metadata.get("owner_id"))].append(i.item_id)
    people = sorted(owned, key=lambda u: -len(owned[u]))[:2]
    blocks = []
    with Recommender.create_from_bundle_path(scored, catalog,
                                             profiles=out / "profiles.sqlite") as rec:
        for user in people:
            rec.profiles.forget(user)
            history = owned[user][:-1]
            rec.profiles.record(user, [Event(i, EventKind.PURCHASE, float(n))
                                       for n, i in enumerate(history)])
            feed = rec.for_user(user, k=8)
            hist = "".join(card(thumb(image_of[i], out), [label_of[i]]) for i in history[-6:])
            cards = "".join(card(thumb(image_of[r.item_id], out),
                                 [f"{r.score:.2f} {r.metadata.get('label')}",
                                  short_ids(r.reason)])
                            for r in feed)
            note = "ranked by the scorer" if feed.scorer_used else feed.note
            blocks.append(f"<h3>owner {html.escape(user)}: {len(history)} purchases; "
                          f"{html.escape(note)}</h3><p>bought (newest 6):</p>"
                          f"<div class='grid hist'>{hist}</div><p>recommended, with reasons "
                          f"(ids shortened to 8 characters):</p><div class=grid>{cards}</div>")
    sections.append("<h2>3. A personalised feed for two owners</h2>" + "".join(blocks))
    times["scorer + feed"] = time.perf_counter() - t
    steps.update()

    # 4. edgerec evaluate: the device's ranking against baselines, in one run.
    t = time.perf_counter()
    ev = run("evaluate", ["evaluate", "--bundle", str(scored), "--catalog", str(catalog),
                          "--events", str(SAMPLE / "items.csv"), "--user-column", "owner_id",
                          "--resamples", "200"], out / "evaluate.log")
    (out / "evaluate.json").write_text(json.dumps(ev, indent=1))
    rows = []
    for name, model in ev.get("models", {}).items():
        m = model.get("all", {}).get("metrics", {})
        rows.append({"model": name, **{k: m[k]["mean"] for k in ("NDCG@20", "Recall@20", "AUC")
                                       if k in m}})
    split = ev.get("split", {})
    notes = "".join(f"<li>{html.escape(w)}</li>" for w in ev.get("warnings", []))
    sections.append("<h2>4. <code>edgerec evaluate</code> on the sample's owners</h2>"
                    f"<p>{split.get('evaluated_users')} owners with held-out items, "
                    f"{split.get('test_events')} held-out items, all cold (each photo has one "
                    "owner), so behaviour baselines have nothing to learn from: a tiny, honest "
                    f"test. The device's model is <b>{html.escape(str(ev.get('reference')))}"
                    "</b>; <a href='evaluate.json'>all figures with confidence intervals</a>."
                    "</p>" + table(rows, ["model", "NDCG@20", "Recall@20", "AUC"])
                    + (f"<ul>{notes}</ul>" if notes else ""))
    times["evaluate"] = time.perf_counter() - t
    steps.update()

    # 5. A short edgerec bench: latency per stage, student and teacher in the same run.
    t = time.perf_counter()
    bench_dir = out / "bench"
    bench = run("bench", ["bench", str(student.path), str(teacher.path), "--images",
                          str(SAMPLE / "images"), "--quick", "--out", str(bench_dir)],
                out / "bench.log")
    sections.append("<h2>5. <code>edgerec bench</code> (short run)</h2>"
                    + bench_html(bench, bench_dir, out))
    times["bench"] = time.perf_counter() - t
    steps.update()

    # 6. The page.
    timing = table([{"step": k, "seconds": round(v, 1)} for k, v in times.items()],
                   ["step", "seconds"])
    page = out / "index.html"
    page.write_text(PAGE.format(body="".join(sections), timing=timing))
    steps.update()
    steps.close()
    print(page)


def bench_html(bench: dict[str, Any], bench_dir: Path, out: Path) -> str:
    """The bench's latency table and plot (what ``edgerec bench --json`` printed)."""
    rows, stages = [], []
    for c in bench.get("configs", []):
        row = {"bundle": c.get("bundle"), "artifact": c.get("artifact"),
               "threads": c.get("threads")}
        for stage, figures in c.get("stages", {}).items():
            if isinstance(figures, dict) and "p50" in figures:
                key = f"{stage} p50 ms"
                row[key] = figures["p50"]
                if key not in stages:
                    stages.append(key)
        rows.append(row)
    parts = [table(rows, ["bundle", "artifact", "threads", *stages])] if rows else []
    for png in sorted(bench_dir.glob("*.png")):
        parts.append(f'<img class=plot src="{png.relative_to(out)}" alt="latency plot">')
    for md in sorted(bench_dir.glob("*.md")):
        parts.append(f'<p><a href="{md.relative_to(out)}">{md.name}</a></p>')
    return "".join(parts) or "<p>no bench output</p>"


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>edgerec demo</title><style>
body {{ font-family: sans-serif; max-width: 1150px; margin: 1em auto; color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; margin-top: 1.6em; }} h3 {{ font-size: 1em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; font-size: 13px; }}
th {{ background: #f2f2f2; }} td:first-child {{ text-align: left; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; width: 132px; font-size: 12px; border: 3px solid transparent; }}
figure img {{ width: 128px; height: 128px; object-fit: cover; display: block; }}
figure.query {{ border-color: #333; }} figure.hit {{ border-color: #2a7; }}
figure.miss {{ border: 3px dashed #c44; }} .hist figure {{ opacity: .75; }}
.warn {{ background: #fff3cd; padding: .5em; }} img.plot {{ max-width: 100%; }}
</style></head><body><h1>edgerec: the main job on the repo's sample</h1>
<p>Everything below was computed by <code>make demo</code> on this machine just now.</p>
{timing}{body}</body></html>
"""


if __name__ == "__main__":
    main()
