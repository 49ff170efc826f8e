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
from edgerec.sdk.cli.common import option, positive_int
from edgerec.sdk.errors import ProfileError
from edgerec.sdk.evaluation.baselines import BASELINES
from edgerec.sdk.evaluation.compare import RANKINGS, EncoderComparison, compare_encoders
from edgerec.sdk.evaluation.events import SplitProtocol, read_events
from edgerec.sdk.evaluation.protocol import EvaluateOptions, evaluate
from edgerec.sdk.evaluation.provenance import DEFAULT_SEED, DEFAULT_TEST_FRACTION
from edgerec.sdk.evaluation.ranker import BaselineOptions
from edgerec.sdk.evaluation.ranking_metrics import ConfidenceInterval
from edgerec.sdk.evaluation.results import EvaluationResult, SliceResult
from edgerec.sdk.files import atomic_write_text
from edgerec.sdk.progress import ProgressBar

__all__ = ["add_evaluate_parser", "format_comparison", "format_result"]


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


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _options(args: argparse.Namespace) -> EvaluateOptions:
    baselines = BaselineOptions(
        skip=tuple(args.skip), validation_users=args.validation_users,
        item_item_max=args.item_item_max, ease_lambdas=tuple(args.ease_lambdas),
        knn_neighbours=tuple(args.knn_neighbours),
    )
    return EvaluateOptions(
        protocol=SplitProtocol(args.protocol) if args.protocol else None, k=args.k,
        metrics=tuple(args.metrics), test_fraction=args.test_fraction, seed=args.seed,
        candidates=args.candidates, resamples=args.resamples,
        latency_users=args.latency_users,
        engine=Engine(args.engine) if args.engine else None,
        precision=Precision(args.precision) if args.precision else None,
        baselines=baselines,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
    except ValueError as exc:
        raise ProfileError(f"bad evaluation options: {exc}") from None
    bundle = Bundle.open(args.bundle)
    against = Bundle.open(args.against[0]) if args.against else None
    with Catalog.open(args.catalog, readonly=True) as catalog:
        log = read_events(args.events, known_items=set(catalog), user_column=args.user_column,
                          item_column=args.item_column)
        with ProgressBar(None, "evaluate", unit="user") as bar:
            if against is not None:
                result: Any = compare_encoders(
                    (against, args.against[1]), (bundle, catalog), log, options,
                    labels=tuple(args.labels), progress=bar.update_to)
            else:
                result = evaluate(bundle, catalog, log, options, progress=bar.update_to)
    payload = result.to_dict()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(payload, indent=2) + "\n")
    text = format_comparison(result) if against is not None else format_result(result)
    if args.out:
        text += f"\nwrote {args.out}"
    _emit(args, payload, text)
    return 0


# ------------------------------------------------------------------------- human output


def _ci(ci: Optional[ConfidenceInterval], signed: bool = False) -> str:
    if ci is None:
        return "-"
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]"


def _mean(part: Optional[SliceResult], name: str) -> str:
    value = part.mean(name) if part is not None else None
    return "-" if value is None else f"{value:.4f}"


def _header(result: EvaluationResult) -> list[str]:
    split = result.split
    held = split["cold_test_items"] + split["warm_test_items"]
    how = (f"{split['strategy']} (protocol {split['protocol']}), seed {split['seed']}"
           + (f", test fraction {split['test_fraction']}" if split["protocol"] == "fraction"
              else "") + f" ({split['source']})")
    return [
        f"evaluated {split['evaluated_users']} users on {held} held-out items "
        f"({split['cold_test_items']} cold, {split['warm_test_items']} warm): {how}; "
        f"{result.seconds:.1f} s",
        f"events: {result.events.summary()}",
    ]


def _model_table(result: EvaluationResult, level: int) -> list[str]:
    primary = result.primary
    rest = [m for m in result.metrics[1:] if m in result.options.metrics or m in ("MRR", "AUC")]
    head = (f"{'model':<17} {f'{primary} [{level}% CI]':<27} "
            + " ".join(f"{m:>9}" for m in rest)
            + f" {'cold ' + primary:>13} {'warm ' + primary:>13} {'time':>7}")
    lines = [head]
    for name, m in result.models.items():
        lines.append(f"{name:<17} {_ci(m.all.metrics.get(primary)):<27} "
                     + " ".join(f"{_mean(m.all, x):>9}" for x in rest)
                     + f" {_mean(m.cold, primary):>13} {_mean(m.warm, primary):>13} "
                     f"{m.seconds:>6.1f}s")
    return lines


def _at_k_table(result: EvaluationResult) -> list[str]:
    extra = [m for m in result.metrics if m not in result.options.metrics and m != "AUC"]
    if not extra:
        return []
    lines = ["", "at k=" + str(result.options.k) + ": " + ", ".join(extra),
             f"{'model':<17} " + " ".join(f"{m:>10}" for m in extra)]
    lines += [f"{name:<17} " + " ".join(f"{_mean(m.all, x):>10}" for x in extra)
              for name, m in result.models.items()]
    return lines


def _margin_table(result: EvaluationResult, level: int) -> list[str]:
    if not any(result.margins.values()):
        return []
    shown = [result.primary] + [m for m in result.metrics[1:]
                                if m in result.options.metrics or m == "MRR"]
    shown = list(dict.fromkeys(shown))[:4]
    lines = ["", f"margins: {result.reference} minus each baseline (paired bootstrap, "
             f"{level}% CI)", f"{'baseline':<17} " + " ".join(f"{m:<28}" for m in shown)]
    for name in result.margins[result.primary]:
        lines.append(f"{name:<17} " + " ".join(
            f"{_ci(result.margins[m].get(name), signed=True):<28}" for m in shown))
    if result.target_met is not None:
        lines.append(f"scorer ahead of every baseline (mean {result.primary}): "
                     f"{'yes' if result.ahead_of_all else 'no'}; significantly (CI above 0): "
                     + ("yes" if result.target_met else
                        "no, not against " + ", ".join(result.not_significant)))
    return lines


def _latency(result: EvaluationResult) -> list[str]:
    lat = result.latency
    if lat is None:
        return []
    return ["", f"device for_user: median {lat.median_ms:.2f} ms, p90 {lat.p90_ms:.2f} ms per "
            f"user ({lat.users} users, k={lat.k}, BLAS threads {lat.threads}, scorer "
            f"{'used' if lat.scorer_used else 'not used'}); same top-{lat.k} as evaluated for "
            f"{100 * lat.agreement:.0f}% of them"]


def format_result(result: EvaluationResult) -> str:
    """The compact human summary ``edgerec evaluate`` prints."""
    level = round(100 * result.options.level)
    lines = [*_header(result), "", *_model_table(result, level), *_at_k_table(result),
             *_margin_table(result, level), *_latency(result), *_label_table(result)]
    if result.classification is not None:
        c = result.classification
        lines += ["", f"scorer as a classifier (sigmoid(logit) >= {c.threshold}, held-out vs "
                  f"as many random items, n={c.support}): accuracy {c.accuracy:.3f}, precision "
                  f"{c.precision:.3f}, recall {c.recall:.3f}, F1 {c.f1:.3f}"]
    if result.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in result.warnings]
    return "\n".join(lines)


def format_comparison(result: EncoderComparison) -> str:
    """The compact human summary ``edgerec evaluate --against`` prints."""
    level = round(100 * result.options.level)
    split = result.split
    a, b = result.labels
    shown = [m for m in result.metrics if m in result.options.metrics or m == "AUC"][:5]
    lines = [f"compared {b!r} (this bundle) with {a!r} on {split['evaluated_users']} users, "
             f"{split['strategy']} (protocol {split['protocol']}), seed {split['seed']} "
             f"({split['source']}); {result.seconds:.1f} s",
             "device rankings: " + ", ".join(f"{k}: {v}" for k, v in
                                             result.device_models.items()), "",
             f"{'model':<24} {f'{result.primary} [{level}% CI]':<27} "
             + " ".join(f"{m:>9}" for m in shown[1:])
             + f" {'cold ' + result.primary:>13} {'warm ' + result.primary:>13}"]
    for name, m in result.models.items():
        lines.append(f"{name:<24} {_ci(m.all.metrics.get(result.primary)):<27} "
                     + " ".join(f"{_mean(m.all, x):>9}" for x in shown[1:])
                     + f" {_mean(m.cold, result.primary):>13} {_mean(m.warm, result.primary):>13}")
    lines += ["", f"margins: {b} minus {a} (paired bootstrap, {level}% CI)",
              f"{'ranking':<24} " + " ".join(f"{m:<28}" for m in shown[:4])]
    for ranking in RANKINGS:
        per = result.margins[ranking]
        lines.append(f"{ranking:<24} " + " ".join(
            f"{_ci(per.get(m), signed=True):<28}" for m in shown[:4]).rstrip())
    mv = result.moves["device"]
    lines.append(f"device ranking, {a} -> {b}: {mv.changed} of {mv.items} held-out items ranked "
                 f"differently ({mv.up} up, {mv.down} down); {mv.within_k} of them in a top "
                 f"{mv.k}, moved " + ", ".join(f"{n}: {c}" for n, c in mv.by_size.items())
                 + f" places; {mv.crossed_k} crossed the top-{mv.k} line")
    lines.append(f"{b} at least {a} on the device ranking (mean {result.primary}): "
                 f"{'yes' if result.b_at_least_a else 'no'}")
    if result.warnings:
        lines += ["", "warnings:"] + [f"  - {w}" for w in result.warnings]
    return "\n".join(lines)


def _label_table(result: EvaluationResult) -> list[str]:
    labels = sorted({lab for m in result.models.values() for lab in m.labels})
    if not labels:
        return []
    names = list(result.models)
    width = max(10, *(len(n) for n in names))
    lines = ["", f"per-label {result.primary} (relevant: the user's held-out items of the label)",
             f"{'label':<14} {'users':>5} " + " ".join(f"{n:>{width}}" for n in names)]
    for lab in labels:
        parts = [result.models[n].labels.get(lab) for n in names]
        users = max((p.users for p in parts if p), default=0)
        lines.append(f"{lab:<14} {users:>5} "
                     + " ".join(f"{_mean(p, result.primary):>{width}}" for p in parts))
    return lines


def add_evaluate_parser(sub: Any) -> None:
    """Register ``edgerec evaluate``."""
    ev = sub.add_parser(
        "evaluate", help="measure the personalised ranking against baselines on held-out events",
        description="Hold out each user's newest item (leave-last-out) or a fraction of their "
        "items, rank the whole catalog minus the user's history for each user with the device's "
        "ranking (the bundle's scorer, else visual kNN) and, in the same run, with the "
        "baselines (visual kNN mean and recency-weighted, random, popularity, label "
        "popularity, co-occurrence, item-kNN, EASE, BPR and ALS from implicit, VBPR; "
        "hyperparameters chosen on a validation cut of the training events), and report "
        "NDCG@20, Recall@20, HR@10, MRR, AUC and the metrics at k with bootstrap confidence "
        "intervals, the device model's paired margin over each baseline, cold and warm items "
        "and each label separately, and the device's per-user for_user latency.",
    )
    ev.add_argument("--bundle", required=True, help="bundle directory")
    ev.add_argument("--catalog", required=True, help="catalog directory built with the bundle")
    ev.add_argument("--events", required=True,
                    help="events CSV: user_id,item_id[,event][,timestamp][,weight]")
    option(ev, "--user-column", source=read_events, name="user_column",
           help="column of the user ids")
    option(ev, "--item-column", source=read_events, name="item_column",
           help="column of the item ids")
    option(ev, "--protocol", choices=[p.value for p in SplitProtocol], source=EvaluateOptions,
           name="protocol", help="leave-last-out: each user's newest distinct item held out; "
           "fraction: a share of each user's items (the newest, or random without timestamps)",
           none_means="the scorer's recorded split, else leave-last-out when every event has a "
           "timestamp, else fraction")
    option(ev, "-k", "--k", type=positive_int, source=EvaluateOptions, name="k",
           help="a further cut-off: NDCG, Recall, HR and MAP at k are reported too")
    option(ev, "--metrics", nargs="+", metavar="METRIC", source=EvaluateOptions, name="metrics",
           help="headline metrics (NDCG@n, Recall@n, HR@n, MAP@n, MRR), the first the primary")
    option(ev, "--test-fraction", type=_fraction, source=EvaluateOptions, name="test_fraction",
           help="share of each user's items held out by the fraction protocol",
           none_means=f"the scorer's recorded split, else {DEFAULT_TEST_FRACTION}")
    option(ev, "--seed", type=_non_negative_int, source=EvaluateOptions, name="seed",
           help="holdout, tie, baseline and bootstrap seed",
           none_means=f"the scorer's recorded seed, else {DEFAULT_SEED}")
    option(ev, "--candidates", type=positive_int, source=EvaluateOptions, name="candidates",
           help="candidates by inner product that the scorer re-ranks (the device's C)",
           none_means="the C the bundle's scorer records, as on the device")
    option(ev, "--resamples", type=positive_int, source=EvaluateOptions, name="resamples",
           help="bootstrap resamples over users")
    option(ev, "--latency-users", type=_non_negative_int, source=EvaluateOptions,
           name="latency_users", help="users whose for_user is timed on the device path (0: none)")
    names = [b.name for b in BASELINES]
    ev.add_argument("--skip", nargs="+", choices=names, default=[], metavar="BASELINE",
                    help="baselines not to run (default: none; one of " + ", ".join(names) + ")")
    option(ev, "--ease-lambdas", nargs="+", type=_positive_float, metavar="LAMBDA",
           source=BaselineOptions,
           name="ease_lambdas", help="EASE's L2 penalties tried on the validation cut")
    option(ev, "--knn-neighbours", nargs="+", type=_non_negative_int, metavar="K",
           source=BaselineOptions,
           name="knn_neighbours", help="item-kNN neighbourhood sizes tried (0: all items)")
    option(ev, "--validation-users", type=positive_int, source=BaselineOptions,
           name="validation_users", help="most training users in the validation cut")
    option(ev, "--item-item-max", type=positive_int, source=BaselineOptions,
           name="item_item_max", help="most item columns of co-occurrence, item-kNN and EASE "
           "(the most popular; they need ~24 bytes per column squared)")
    ev.add_argument("--engine", choices=[e.value for e in Engine],
                    help="scorer engine (default: any)")
    ev.add_argument("--precision", choices=[p.value for p in Precision],
                    help="scorer precision (default: fp32 when the bundle has it)")
    ev.add_argument("--against", nargs=2, metavar=("BUNDLE", "CATALOG"),
                    help="instead of the baselines, compare this bundle's feed with another "
                    "encoder's on the same split: its bundle and the catalog it built from the "
                    "same items (e.g. the teacher's); margins are this bundle minus that one")
    ev.add_argument("--labels", nargs=2, metavar=("AGAINST", "THIS"),
                    default=("reference", "this"), help="names of the two sides in "
                    "--against's report (default: reference this)")
    ev.add_argument("--out", help="also write the full results as JSON to this file")
    _add_json(ev)
    ev.set_defaults(func=cmd_evaluate)
