"""``edgerec scorer train``: add a personalised scorer to an existing bundle (needs the export
extra, imported only when the command runs), and the scorer flags ``edgerec export`` shares."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli_common import add_json as _add_json
from .cli_common import emit as _emit
from .cli_common import usage as _usage
from .errors import ExportError, RuntimeUnavailableError

__all__ = ["add_scorer_arguments", "add_scorer_parser", "scorer_options"]


def add_scorer_arguments(p: argparse.ArgumentParser, *, events_required: bool) -> None:
    """The events and scorer-training flags (``edgerec scorer train`` and ``edgerec export``)."""
    p.add_argument("--events", required=events_required,
                   help="events CSV user_id,item_id[,event][,timestamp][,weight]"
                   + ("" if events_required else "; trains a personalised scorer too"))
    p.add_argument("--user-column", default="user_id",
                   help="the events' user id column (e.g. owner_id)")
    p.add_argument("--item-column", default="item_id", help="the events' item id column")
    p.add_argument("--scorer-test-fraction", type=float, default=0.2,
                   help="share of each user's items held out for `edgerec evaluate` and never "
                   "trained on (0: train on everything, for production)")
    p.add_argument("--scorer-seed", type=int, default=0, help="split and training seed")
    p.add_argument("--scorer-epochs", type=int, help="maximum scorer epochs (default: 40)")
    p.add_argument("--scorer-hidden", type=int, nargs="+", metavar="WIDTH",
                   help="hidden layer widths (default: 128 64)")
    p.add_argument("--scorer-negatives", type=int, nargs=3,
                   metavar=("UNIFORM", "POPULAR", "HARD"),
                   help="negatives per positive: uniform, by popularity, and hard ones from the "
                   "user's nearest items (default: 4 2 0)")
    p.add_argument("--scorer-strict-int8", action="store_true",
                   help="fail if an int8 scorer misses its gate (default: leave it out and "
                   "record why)")


def scorer_options(args: argparse.Namespace) -> Any:
    """:class:`edgerec.export.scorer_bundle.ScorerExportOptions` from the flags (imports the
    export extra)."""
    from dataclasses import replace

    from ..export.scorer_bundle import ScorerExportOptions
    from ..export.scorer_train import ScorerConfig

    config = ScorerConfig(seed=args.scorer_seed)
    if args.scorer_epochs is not None:
        config = replace(config, epochs=args.scorer_epochs)
    if args.scorer_hidden:
        config = replace(config, hidden=tuple(args.scorer_hidden))
    if args.scorer_negatives:
        uniform, popular, hard = args.scorer_negatives
        config = replace(config, negatives=replace(config.negatives, uniform=uniform,
                                                   popular=popular, hard=hard))
    return ScorerExportOptions(config=config, test_fraction=args.scorer_test_fraction,
                               split_seed=args.scorer_seed, user_column=args.user_column,
                               item_column=args.item_column,
                               fail_on_gate=args.scorer_strict_int8)


def _missing_extra(exc: ImportError) -> RuntimeUnavailableError:
    return RuntimeUnavailableError(
        f"`edgerec scorer train` needs the export extra ({exc.name} is missing): "
        "pip install 'edgerec[export]'"
    )


def cmd_scorer_train(args: argparse.Namespace) -> int:
    try:
        from ..export.scorer_bundle import add_scorer
        options = scorer_options(args)
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    except ValueError as exc:  # a bad flag value, e.g. --scorer-test-fraction 1
        raise ExportError(f"bad scorer option: {exc}") from exc
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    from .cli import _stdout_to_stderr  # converters print to stdout; keep it for the result

    with _stdout_to_stderr():
        result = add_scorer(args.bundle, args.catalog, args.events, Path(args.out), options,
                            force=args.force, log=log)
    m = result.metrics
    training = m["training"]
    keys = sorted(m["parity"])
    text = (f"wrote {result.bundle.path}: {', '.join(keys)}; best epoch "
            f"{training['best_epoch']}, validation NDCG@10 {_fmt(training['best_val_ndcg'])} "
            f"(inner product {_fmt(training['inner_product_val_ndcg'])}); "
            f"{len(m['gate_failures'])} int8 file(s) left out; {result.seconds:.0f} s")
    _emit(args, {"bundle": str(result.bundle.path), "metrics": m}, text)
    return 0


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def add_scorer_parser(sub: Any) -> None:
    """``edgerec scorer train``."""
    scorer = sub.add_parser("scorer", help="train the personalised re-ranking scorer",
                            description="Train the MLP scorer that re-ranks for_user "
                            "candidates (needs `pip install 'edgerec[export]'`).")
    ssub = scorer.add_subparsers(dest="scorer_command", metavar="ACTION")
    scorer.set_defaults(func=lambda _args: _usage(scorer))
    train = ssub.add_parser(
        "train", help="add a scorer to an existing bundle (new bundle, atomic)",
        description="Train a scorer on events with the item vectors of a catalog built with "
        "the bundle, convert and quantize it with parity gates, and write a new bundle: the "
        "bundle's encoder files copied, any old scorer replaced. The held-out split is "
        "recorded for `edgerec evaluate`.",
    )
    train.add_argument("--bundle", required=True, help="bundle directory (its encoder stays)")
    train.add_argument("--catalog", required=True, help="catalog built with that bundle")
    train.add_argument("--out", required=True, help="new bundle directory to write")
    train.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_scorer_arguments(train, events_required=True)
    _add_json(train)
    train.set_defaults(func=cmd_scorer_train)
