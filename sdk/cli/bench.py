"""``edgerec bench``: latency per stage, catalog search scaling, and ``--choose`` (the device
profile that ``EncoderOptions(engine="auto", precision="auto")`` reads)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from edgerec.sdk.bench.profile import write_device_profile
from edgerec.sdk.bench.report import write_report
from edgerec.sdk.bench.runner import SEARCH_METHODS, BenchOptions, choose, run_bench
from edgerec.sdk.cli.common import add_json, emit, option, positive_int, progress
from edgerec.sdk.errors import OutputError

__all__ = ["add_bench_parser"]

MILLION = 1_000_000


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


class _Given(argparse._StoreAction):
    """``store``, also noting the option as given (so ``--quick`` keeps it)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Any = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        given = set(getattr(namespace, "given_options", None) or ())
        namespace.given_options = given | {self.dest}


_FIELDS = ("photos", "threads", "batches", "runs", "warmup", "rounds", "max_seconds",
           "catalog_size", "search_sizes", "search_dim", "search_methods", "k")


def bench_options(args: argparse.Namespace) -> BenchOptions:
    """The options the command line asks for; ``--quick`` starts from
    :meth:`BenchOptions.quick` and keeps every option given explicitly."""
    defaults = BenchOptions()
    explicit = getattr(args, "given_options", None) or set()
    given = {}
    for name in _FIELDS:
        value = getattr(args, name)
        value = tuple(value) if isinstance(value, list) else value
        if name in explicit or (not args.quick and value != getattr(defaults, name)):
            given[name] = value
    if args.million:
        given["search_sizes"] = (*given.get("search_sizes", defaults.search_sizes), MILLION)
    if args.no_search:
        given["search_sizes"] = ()
    base = BenchOptions.quick() if args.quick else defaults
    return dataclasses.replace(base, images=tuple(args.images), work=args.work, **given)


def _choose(args: argparse.Namespace, options: BenchOptions) -> int:
    if len(args.bundles) != 1:
        raise OutputError("--choose takes one bundle (the one whose encoder the device runs)")
    update, done = progress(None, "bench --choose")
    try:
        profile = choose(args.bundles[0], options, progress=lambda d, t: update(d, t))
    finally:
        done()
    path = write_device_profile(profile, args.profile)
    choice = profile.choice
    lines = [f"{'engine':<7} {'prec':<5} {'thr':>3} {'p50 ms':>8} {'ratio':>6}"]
    lines += [f"{m.engine.value:<7} {m.precision.value:<5} {m.threads:>3} {m.p50_ms:>8.2f} "
              f"{m.ratio:>6.2f}" for m in profile.measured]
    lines += [f"left out: {k}: {v}" for k, v in profile.left_out.items()]
    lines.append(f"chose encoder/{choice.engine.value}/{choice.precision.value} with "
                 f"{choice.threads} thread(s); wrote {path}")
    emit(args, {"profile": str(path), "encoder_id": profile.encoder_id, **profile.to_dict()},
         "\n".join(lines))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        options = bench_options(args)
    except ValueError as exc:
        raise OutputError(f"bad bench option: {exc}") from exc
    if args.choose:
        return _choose(args, options)
    log = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    update, done = progress(None, "bench")
    try:
        result = run_bench(args.bundles, options, log=log,
                           progress=lambda d, t: update(d, t))
    finally:
        done()
    result["command"] = "edgerec bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [])
    files = write_report(result, args.out)
    lines = [f"{'configuration':<40} {'encode b1 p50':>13} {'end to end p50':>14}  ms"]
    for cfg in result["configs"]:
        name = f"{cfg['bundle']} {cfg['artifact']} {cfg['threads']}t"
        if "error" in cfg:
            lines.append(f"{name:<40} error: {cfg['error']}")
            continue
        stages = cfg["stages"]
        enc = stages.get("encode_b1") or {}
        e2e = stages.get("end_to_end") or {}
        lines.append(f"{name:<40} {enc.get('p50', float('nan')):>13.2f} "
                     f"{e2e.get('p50', float('nan')):>14.2f}")
    lines.append("wrote " + ", ".join(files.values()))
    emit(args, {"files": files, **result}, "\n".join(lines))
    return 0


def add_bench_parser(sub: Any) -> None:
    """``edgerec bench``."""
    p = sub.add_parser(
        "bench", help="time the device pipeline per stage; --choose writes the device profile",
        description="Time decode, preprocess, encode (per batch size), search, re-rank and "
        "end to end (photo file -> top-10) for every encoder artifact of the bundles on every "
        "installed engine and thread count, each in its own process in interleaved rounds, "
        "plus catalog search scaling (numpy and onnxruntime kernels, faiss-cpu when "
        "installed). Writes bench.json, bench.md and bench.png (with matplotlib) to --out. "
        "With --choose: measure which gated engine x precision x threads encodes fastest "
        "here and write the device profile that the encoder's auto choice reads.",
    )
    p.add_argument("bundles", nargs="+", help="bundle folder(s); the first configuration of "
                   "the first bundle is the ratio baseline")
    p.add_argument("--images", nargs="+", required=True,
                   help="real photos or folders of photos to time (e.g. examples/sample/images)")
    p.add_argument("--out", default="edgerec-bench",
                   help="folder for bench.json, bench.md, bench.png")
    p.add_argument("--choose", action="store_true",
                   help="measure the gated encoder artifacts and write the device profile")
    p.add_argument("--profile", help="device profile file to write with --choose (default: "
                   "$EDGEREC_DEVICE_PROFILE, else ~/.cache/edgerec/device-profile.json)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke configuration (seconds): few runs and photos, 1 thread, "
                   "small catalogs, one round; explicit options still apply")
    def opt(flag: str, name: str, help: str, **kwargs: Any) -> None:
        option(p, flag, action=_Given, source=BenchOptions, name=name, help=help, **kwargs)

    opt("--photos", "photos", "photos used from --images", type=positive_int)
    opt("--threads", "threads", "engine thread counts", type=positive_int, nargs="+")
    opt("--batches", "batches", "encode batch sizes", type=positive_int, nargs="+")
    opt("--runs", "runs", "timed runs per stage and process", type=positive_int)
    opt("--warmup", "warmup", "untimed runs first", type=_non_negative_int)
    opt("--rounds", "rounds", "interleaved rounds (one process per configuration and round)",
        type=positive_int)
    opt("--max-seconds", "max_seconds", "stop a stage after this many seconds of runs in one "
        "process", type=_positive_float)
    opt("--catalog-size", "catalog_size", "items in the catalog behind search and end to end "
        "(0: skip those stages)", type=_non_negative_int)
    opt("--search-sizes", "search_sizes", "catalog sizes of the search scaling table",
        type=positive_int, nargs="+")
    p.add_argument("--million", action="store_true",
                   help="add a 1,000,000-item catalog to the scaling table (about 1 GB of "
                   "memory for faiss)")
    p.add_argument("--no-search", action="store_true", help="skip the search scaling table")
    opt("--search-dim", "search_dim", "vector dimension of the scaling table",
        type=positive_int)
    opt("--search-methods", "search_methods", "storage/kernel of the scaling table",
        nargs="+", choices=SEARCH_METHODS)
    opt("-k", "k", "results per search", type=positive_int)
    p.add_argument("--work", help="folder for the cached synthetic catalogs (default: "
                   "~/.cache/edgerec/bench)")
    add_json(p)
    p.set_defaults(func=cmd_bench)
