"""The feed against its baselines on MovieLens, leave-last-out: ``edgerec evaluate``'s library
call (:func:`edgerec.sdk.evaluation.evaluate`) on the teacher's 1024-d poster vectors.

Each of the 610 users' newest rated movie is held out (ties by CSV line), the rest is history
and training; every model ranks all 9,517 posters minus the user's history: the bundle's
trained scorer (the device's learned feed, the reference; trained with the newest fifth of each
user's items held out, so it never saw a leave-last-out item; ``--no-scorer`` evaluates the
bare teacher bundle instead), the device's pixels-only feed (``visual_knn``: the
recency-weighted user vector, ``u . v``), its plain-mean variant, random, popularity, label
popularity, co-occurrence, item-kNN, EASE, BPR and ALS (``implicit``) and VBPR (numpy).
NDCG@20, Recall@20, HR@10, MRR and AUC with bootstrap CIs, paired margins, cold/warm slices,
the device's per-user ``for_user`` latency.

Inputs (built when missing; never committed: see ``../shared/data/movielens/README.md``):
``build/movielens/{items,events}.csv``; ``build/teacher-bundle`` (``edgerec bundle import``
of the shipped teacher, raw pixels); ``build/movielens-teacher-catalog``;
``build/movielens-teacher-scorer-f20`` (``edgerec scorer train --scorer-test-fraction 0.2``,
a few minutes; needs the export extra). When another process is building one of these paths,
this waits for it instead.

    OPENBLAS_NUM_THREADS=1 python benchmarks/feed_baselines.py [--no-scorer]
    # ~6 minutes on 2 shared vCPUs; writes results/feed_baselines.{json,md}
    OPENBLAS_NUM_THREADS=1 python benchmarks/feed_baselines.py --behaviour
    # the new feed: build/movielens-teacher-behaviour (`edgerec scorer train
    # --scorer-holdout leave-last-out`: behaviour signals and scorer learned on exactly the
    # training side of this split, ~3 minutes), ranked as `behaviour_feed` beside today's
    # device feed (`scorer`) and every baseline; writes results/feed_behaviour.{json,md}
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: reproducible fits

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
DATA = BUILD / "movielens"
TEACHER = ROOT / "examples/sample/teacher/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
EDGEREC = str(Path(sys.executable).parent / "edgerec")
WAIT_S = 1800


def _building(path: Path) -> list[int]:
    """Ids of other processes whose command line names ``path``."""
    mine, found = os.getpid(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == mine:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path.relative_to(ROOT)) in cmd and "feed_baselines" not in cmd:
            found.append(int(proc.name))
    return found


def _ensure(path: Path, ready: Callable[[], bool], command: list[str]) -> None:
    """Wait for another process building ``path``, else run ``command`` if not ``ready()``."""
    start = time.time()
    while not ready() and _building(path):
        if time.time() - start > WAIT_S:
            raise SystemExit(f"gave up waiting for {path} ({_building(path)} still running)")
        print(f"waiting for another process building {path} ...", file=sys.stderr)
        time.sleep(15)
    if ready():
        return
    print("$ " + " ".join(shlex.quote(c) for c in command), file=sys.stderr)
    subprocess.run(command, cwd=ROOT, check=True)


def inputs(with_scorer: bool, behaviour: bool = False) -> Path:
    """The bundle to evaluate, every input built or waited for."""
    for name in ("items.csv", "events.csv"):
        if not (DATA / name).is_file():
            raise SystemExit(f"{DATA / name} is missing: build it with "
                             "../shared/data/movielens/extract.sh (see its README)")
    bundle, catalog = BUILD / "teacher-bundle", BUILD / "movielens-teacher-catalog"
    _ensure(bundle, lambda: (bundle / "manifest.json").is_file(),
            [EDGEREC, "bundle", "import", str(TEACHER), "--out", str(bundle), "--raw-pixels"])
    _ensure(catalog, lambda: _catalog_ready(catalog),
            [EDGEREC, "catalog", "build", "--items", str(DATA / "items.csv"), "--bundle",
             str(bundle), "--out", str(catalog)])
    if behaviour:
        out = BUILD / "movielens-teacher-behaviour"
        _ensure(out, lambda: (out / "manifest.json").is_file(),
                [EDGEREC, "scorer", "train", "--bundle", str(bundle), "--catalog",
                 str(catalog), "--events", str(DATA / "events.csv"), "--scorer-holdout",
                 "leave-last-out", "--out", str(out)])
        return out
    if not with_scorer:
        return bundle
    scorer = BUILD / "movielens-teacher-scorer-f20"
    _ensure(scorer, lambda: (scorer / "manifest.json").is_file(),
            [EDGEREC, "scorer", "train", "--bundle", str(bundle), "--catalog", str(catalog),
             "--events", str(DATA / "events.csv"), "--scorer-test-fraction", "0.2",
             "--out", str(scorer)])
    return scorer


def _items() -> int:
    with open(DATA / "items.csv", encoding="utf-8") as f:
        return sum(1 for _ in f) - 1


def _catalog_ready(path: Path) -> bool:
    from edgerec.sdk import Catalog

    items = _items()
    try:
        with Catalog.open(path, readonly=True) as cat:
            return len(cat) == items
    except Exception:  # absent or half-written: not ready
        return False


def run(bundle: Path, resamples: int, latency_users: int) -> tuple[Any, float, float]:
    """One evaluation; returns the result and the load averages before and after."""
    from edgerec.sdk import Catalog
    from edgerec.sdk.evaluation import EvaluateOptions, SplitProtocol, evaluate, read_events

    load_before = os.getloadavg()[0]
    with Catalog.open(BUILD / "movielens-teacher-catalog", readonly=True) as cat:
        log = read_events(DATA / "events.csv", known_items=set(cat))
        options = EvaluateOptions(protocol=SplitProtocol.LEAVE_LAST_OUT, resamples=resamples,
                                  latency_users=latency_users)
        result = evaluate(bundle, cat, log, options,
                          progress=lambda done, total: print(f"\r{done}/{total} users", end="",
                                                             file=sys.stderr))
    print(file=sys.stderr)
    return result, load_before, os.getloadavg()[0]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("edgerec", "numpy", "scipy", "implicit", "threadpoolctl"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(result: Any, payload: dict[str, Any]) -> str:
    split, lat = result.split, result.latency
    ref = result.reference
    lines = [
        "# Feed against baselines: MovieLens, leave-last-out (`benchmarks/feed_baselines.py`)",
        "",
        f"`{payload['command']}`, {payload['machine']['date']}, {payload['machine']['cpu']} "
        f"({payload['machine']['cores']} cores), load average {payload['load_before']:.2f} "
        f"before / {payload['load_after']:.2f} after; {result.seconds:.0f} s; versions "
        + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()) + ".",
        "",
        f"Bundle `{payload['bundle']}`; {split['evaluated_users']} users, one held-out item each "
        f"({split['cold_test_items']} cold, {split['warm_test_items']} warm), "
        f"{split['train_events']} training events, catalog {payload['catalog_items']} items; "
        f"{result.options.resamples} bootstrap resamples (95% CIs over users); margins are "
        f"`{ref}` minus the model (paired).",
        "",
        "| model | NDCG@20 [95% CI] | Recall@20 | HR@10 | MRR | AUC | cold NDCG@20 | "
        f"warm NDCG@20 | {ref}'s NDCG@20 margin [95% CI] | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result.models.items():
        ci = m.all["NDCG@20"]
        margin = result.margins["NDCG@20"].get(name)
        lines.append(
            f"| {name} | {ci.mean:.4f} [{ci.low:.4f}, {ci.high:.4f}] | "
            f"{_fmt(m.all.mean('Recall@20'))} | {_fmt(m.all.mean('HR@10'))} | "
            f"{_fmt(m.all.mean('MRR'))} | {_fmt(m.all.mean('AUC'), 3)} | "
            f"{_fmt(m.cold.mean('NDCG@20') if m.cold else None)} | "
            f"{_fmt(m.warm.mean('NDCG@20') if m.warm else None)} | "
            + (f"{margin.mean:+.4f} [{margin.low:+.4f}, {margin.high:+.4f}]" if margin else "")
            + f" | {m.seconds:.0f} |")
    lines += ["", "Chosen on the validation cut (each training user's newest training item, "
              "NDCG@20):", ""]
    for name, m in result.models.items():
        chosen = {k: v for k, v in m.extras.items()
                  if k not in ("validation", "losses", "fit_seconds", "warning", "implicit",
                               "columns")}
        if m.extras.get("validation"):
            lines.append(f"- {name}: {chosen} (grid of {len(m.extras['validation'])})")
    if lat is not None:
        lines += ["", f"Device `for_user` latency ({lat.users} users, k={lat.k}, BLAS threads "
                  f"{lat.threads}, scorer {'used' if lat.scorer_used else 'not used'}): median "
                  f"{lat.median_ms:.2f} ms, p90 {lat.p90_ms:.2f} ms; same top-{lat.k} as the "
                  f"evaluated ranking for {100 * lat.agreement:.0f}% of them."]
    if result.skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result.skipped.items())]
    if result.warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-scorer", action="store_true",
                        help="evaluate the bare teacher bundle (reference: visual_knn) instead "
                        "of the teacher with a scorer trained on MovieLens (built when missing)")
    parser.add_argument("--behaviour", action="store_true",
                        help="evaluate the teacher with behaviour signals and a scorer learned "
                        "on the leave-last-out training events (`edgerec scorer train "
                        "--scorer-holdout leave-last-out`, built when missing): the new feed "
                        "(behaviour_feed, the reference) beside today's (scorer)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--latency-users", type=int, default=610,
                        help="users whose for_user is timed")
    args = parser.parse_args()
    bundle = inputs(not args.no_scorer, args.behaviour)
    result, before, after = run(bundle, args.resamples, args.latency_users)
    command = ("OPENBLAS_NUM_THREADS=1 python benchmarks/feed_baselines.py"
               + (" --no-scorer" if args.no_scorer else "")
               + (" --behaviour" if args.behaviour else ""))
    payload = {
        "command": command, "machine": machine_info(), "versions": _versions(),
        "load_before": before, "load_after": after,
        "bundle": str(bundle.relative_to(ROOT)),
        "catalog_items": _items(),
        "result": result.to_dict(),
    }
    text = markdown(result, payload)
    paths = write("feed_behaviour" if args.behaviour else "feed_baselines", payload, text)
    print(text)
    print("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in paths))


if __name__ == "__main__":
    main()
