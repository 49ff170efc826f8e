"""``edgerec evaluate``: the device's personalised ranking against baselines, offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from edgerec.runtimes import Engine
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import Precision
from edgerec.sdk.catalog.catalog import Catalog
from edgerec.sdk.cli.common import add_json as _add_json
from edgerec.sdk.cli.common import emit as _emit
from edgerec.sdk.cli.common import option
from edgerec.sdk.evaluation.events import read_events
from edgerec.sdk.evaluation.protocol import EvaluateOptions, EvaluationResult, SliceResult, evaluate
from edgerec.sdk.evaluation.provenance import DEFAULT_SEED, DEFAULT_TEST_FRACTION
from edgerec.sdk.evaluation.ranking_metrics import ConfidenceInterval
from edgerec.sdk.files import atomic_write_text
from edgerec.sdk.progress import ProgressBar

__all__ = ["add_evaluate_parser", "format_result"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def cmd_evaluate(args: argparse.Namespace) -> int:
    options = EvaluateOptions(
        k=args.k, test_fraction=args.test_fraction, seed=args.seed,
        candidates=args.candidates, resamples=args.resamples, vbpr=not args.no_vbpr,
        engine=Engine(args.engine) if args.engine else None,
        precision=Precision(args.precision) if args.precision else None,
    )
    bundle = Bundle.open(args.bundle)
    with Catalog.open(args.catalog, readonly=True) as catalog:
        log = read_events(args.events, known_items=set(catalog), user_column=args.user_column,
                          item_column=args.item_column)
        with ProgressBar(None, "evaluate", unit="user") as bar:
            result = evaluate(bundle, catalog, log, options, progress=bar.update_to)
    payload = result.to_dict()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(payload, indent=2) + "\n")
    text = format_result(result)
    if args.out:
        text += f"\nwrote {args.out}"
    _emit(args, payload, text)
    return 0


# ------------------------------------------------------------------------- human output


def _ci(ci: ConfidenceInterval, signed: bool = False) -> str:
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]"


def _ndcg(part: Optional[SliceResult]) -> str:
    return f"{part.report.ndcg:.4f}" if part else "-"


def format_result(result: EvaluationResult) -> str:
    """The compact human summary ``edgerec evaluate`` prints."""
    k, split = result.k, result.split
    level = round(100 * result.options.level)
    lines = [
        f"evaluated {split['evaluated_users']} users on "
        f"{split['cold_test_items'] + split['warm_test_items']} held-out items "
        f"({split['cold_test_items']} cold, {split['warm_test_items']} warm): "
        f"{split['strategy']} holdout, seed {split['seed']}, test fraction "
        f"{split['test_fraction']} ({split['source']}); k={k}; {result.seconds:.1f} s",
        f"events: {result.events.summary()}",
        "",
        f"{'model':<17} {f'NDCG@{k} [{level}% CI]':<27} {f'Recall@{k}':>9} {f'HR@{k}':>7} "
        f"{f'MAP@{k}':>7} {'AUC':>6} {'cold NDCG':>9} {'warm NDCG':>9} {'time':>6}",
    ]
    for name, m in result.models.items():
        r = m.all.report
        auc = f"{r.auc:.3f}" if r.auc is not None else "-"
        lines.append(f"{name:<17} {_ci(m.all.ci['ndcg']):<27} {r.recall:>9.4f} "
                     f"{r.hit_rate:>7.4f} {r.map:>7.4f} {auc:>6} {_ndcg(m.cold):>9} "
                     f"{_ndcg(m.warm):>9} {m.seconds:>5.1f}s")
    if result.margins:
        lines += ["", f"margins: NDCG@{k} of {result.reference} minus each baseline "
                  f"(paired bootstrap, {level}% CI)"]
        lines += [f"  {name:<17} {_ci(ci, signed=True)}" for name, ci in result.margins.items()]
    if result.target_met is not None:
        lines.append(f"scorer ahead of every baseline (mean NDCG@{result.k}): "
                     f"{'yes' if result.ahead_of_all else 'no'}; significantly (CI above 0): "
                     + ("yes" if result.target_met else
                        "no, not against " + ", ".join(result.not_significant)))
    lines += _label_table(result)
    if result.classification is not None:
        c = result.classification
        lines += ["", f"scorer as a classifier (sigmoid(logit) >= {c.threshold}, held-out vs "
                  f"as many random items, n={c.support}): accuracy {c.accuracy:.3f}, precision "
                  f"{c.precision:.3f}, recall {c.recall:.3f}, F1 {c.f1:.3f}"]
    if result.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in result.warnings]
    return "\n".join(lines)


def _label_table(result: EvaluationResult) -> list[str]:
    labels = sorted({lab for m in result.models.values() for lab in m.labels})
    if not labels:
        return []
    names = list(result.models)
    width = max(10, *(len(n) for n in names))
    lines = ["", f"per-label NDCG@{result.k} (relevant: the user's held-out items of the label)",
             f"{'label':<14} {'users':>5} " + " ".join(f"{n:>{width}}" for n in names)]
    for lab in labels:
        parts = [result.models[n].labels.get(lab) for n in names]
        users = max((p.report.users for p in parts if p), default=0)
        lines.append(f"{lab:<14} {users:>5} " + " ".join(f"{_ndcg(p):>{width}}" for p in parts))
    return lines


def add_evaluate_parser(sub: Any) -> None:
    """Register ``edgerec evaluate``."""
    ev = sub.add_parser(
        "evaluate", help="measure the personalised ranking against baselines on held-out events",
        description="Hold out part of each user's events (the newest when every event has a "
        "timestamp, else a seeded random choice), rank the catalog for each user with the "
        "bundle's scorer (as the device does) and with baselines (visual kNN, popularity, label "
        "popularity, BPR, VBPR), and report NDCG/Recall/HR/MAP@k and AUC with bootstrap "
        "confidence intervals, the scorer's margin over each baseline, cold and warm items "
        "separately and per label.",
    )
    ev.add_argument("--bundle", required=True, help="bundle directory")
    ev.add_argument("--catalog", required=True, help="catalog directory built with the bundle")
    ev.add_argument("--events", required=True,
                    help="events CSV: user_id,item_id[,event][,timestamp][,weight]")
    option(ev, "--user-column", source=read_events, name="user_column",
           help="column of the user ids")
    option(ev, "--item-column", source=read_events, name="item_column",
           help="column of the item ids")
    option(ev, "-k", "--k", type=_positive_int, source=EvaluateOptions, name="k",
           help="metric cut-off")
    option(ev, "--test-fraction", type=_fraction, source=EvaluateOptions, name="test_fraction",
           help="share of each user's items held out",
           none_means=f"the scorer's recorded split, else {DEFAULT_TEST_FRACTION}")
    option(ev, "--seed", type=_non_negative_int, source=EvaluateOptions, name="seed",
           help="holdout and baseline seed",
           none_means=f"the scorer's recorded seed, else {DEFAULT_SEED}")
    option(ev, "--candidates", type=_positive_int, source=EvaluateOptions, name="candidates",
           help="candidates by inner product that the scorer re-ranks (the device's C)",
           none_means="the C the bundle's scorer records, as on the device")
    option(ev, "--resamples", type=_positive_int, source=EvaluateOptions, name="resamples",
           help="bootstrap resamples over users")
    ev.add_argument("--no-vbpr", action="store_true", help="skip the VBPR baseline")
    ev.add_argument("--engine", choices=[e.value for e in Engine],
                    help="scorer engine (default: any)")
    ev.add_argument("--precision", choices=[p.value for p in Precision],
                    help="scorer precision (default: fp32 when the bundle has it)")
    ev.add_argument("--out", help="also write the full results as JSON to this file")
    _add_json(ev)
    ev.set_defaults(func=cmd_evaluate)
