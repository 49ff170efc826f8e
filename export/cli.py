"""``edgerec export`` and ``edgerec scorer train``: the export's commands, registered into the
``edgerec`` command through the ``edgerec.cli`` entry point (:func:`register`).

Nothing heavy is imported to register them: ``edgerec export --help`` works on a device
without torch, and running either command without the export extra says how to install it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Optional

from edgerec.export.errors import ExportError
from edgerec.sdk.cli.common import (
    add_json,
    add_ray_arguments,
    emit,
    option,
    stdout_to_stderr,
    usage,
)
from edgerec.sdk.errors import RuntimeUnavailableError

__all__ = ["add_scorer_arguments", "register", "scorer_options"]


def register(sub: Any) -> None:
    """Add ``export``, ``convert`` and ``scorer train`` to the ``edgerec`` sub-parsers ``sub``."""
    add_export_parser(sub)
    add_convert_parser(sub)
    add_scorer_parser(sub)


def _distill_overrides(config: Any, items: Sequence[str]) -> Any:
    """``config`` (a DistillConfig) with ``key=value`` overrides; numbers parsed."""
    names = {f.name: f for f in fields(config)}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in names:
            raise ExportError(f"--distill takes KEY=VALUE with KEY one of {sorted(names)}, "
                              f"got {item!r}")
        current = getattr(config, key)
        try:
            if isinstance(current, bool):
                value: Any = {"true": True, "false": False}[text.lower()]
            elif isinstance(current, (int, float)) or current is None:
                value = float(text) if any(c in text for c in ".eE") else int(text)
            else:
                value = text
        except (KeyError, ValueError):
            raise ExportError(f"--distill {key}: cannot read {text!r} as a "
                              f"{type(current).__name__}") from None
        try:
            config = replace(config, **{key: value})
        except ValueError as exc:
            raise ExportError(f"--distill {key}: {exc}") from None
    return config



def _path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None


def _export_options(args: argparse.Namespace) -> Any:
    """:class:`~edgerec.export.options.ExportOptions` from the flags, group by group."""
    from edgerec.export.options import (
        DataOptions,
        DistillConfig,
        ExportOptions,
        QuantizationOptions,
        RayCacheOptions,
        StudentOptions,
        TeacherOptions,
    )

    ray = None
    if args.ray is not None:  # --ray alone: "" (a local Ray)
        ray = RayCacheOptions(address=args.ray or None, workers=args.ray_workers,
                              batch_size=args.ray_batch_size,
                              cpus_per_worker=args.ray_cpus_per_worker)
    distill = DistillConfig(views=args.views)
    if args.epochs is not None:
        distill = replace(distill, epochs=args.epochs)
    if args.max_minutes is not None:
        distill = replace(distill, max_minutes=args.max_minutes)
    return ExportOptions(
        images=Path(args.images), out=Path(args.out),
        data=DataOptions(items=_path(args.items),
                         extra_images=tuple(Path(p) for p in args.extra_images),
                         eval_unseen=_path(args.eval_unseen),
                         select_fraction=args.select_fraction, use_labels=args.use_labels),
        teacher=TeacherOptions(source=_path(args.teacher), weights=_path(args.teacher_weights),
                               mean=tuple(args.teacher_mean) if args.teacher_mean else None,
                               std=tuple(args.teacher_std) if args.teacher_std else None,
                               output=args.teacher_output),
        student=StudentOptions(name=args.student, width=args.width,
                               image_size=args.image_size, dim=args.dim,
                               init=_path(args.student_init),
                               whiten=_whiten_value(args.whiten)),
        distill=_distill_overrides(distill, args.distill),
        quantization=QuantizationOptions(target=args.int8_target,
                                         allow_gate_failure=args.allow_gate_failure,
                                         qat_steps=args.qat_steps,
                                         qat_minutes=args.qat_minutes),
        quick=args.quick, resume=args.resume, force=args.force, work_dir=_path(args.work_dir),
        events=_path(args.events), scorer=scorer_options(args), ray=ray,
    )


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from edgerec.export.pipeline import export_bundle
    except ImportError as exc:
        raise _missing_extra(exc, "export") from exc
    try:
        options = _export_options(args)
    except ValueError as exc:  # a bad flag value, e.g. --scorer-test-fraction 1
        raise ExportError(f"bad export option: {exc}") from exc
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    with stdout_to_stderr():  # converters print progress to stdout; keep it for the result
        result = export_bundle(options, log=log)
    payload = {"bundle": str(result.bundle.path), "report": str(result.report),
               "metrics": result.metrics}
    from edgerec.export.report import summary_line

    emit(args, payload, summary_line(result.bundle.path, result.report, result.metrics,
                                     quick=options.quick))
    return 0


def _whiten_value(text: str):
    """``auto``/``off`` stay words; anything else must be a number (checked by the export)."""
    if text in ("auto", "off"):
        return text
    try:
        return float(text)
    except ValueError:
        raise ExportError(f"--whiten takes auto, off or a power in (0, 1]; got {text!r}.") \
            from None




def add_export_parser(sub: Any) -> None:
    """``edgerec export``."""
    exp = sub.add_parser(
        "export", help="distil a teacher into a small encoder and write a bundle (needs torch)",
        description="Distil an ImageNet teacher into a MobileNetV3 student on your photos, "
        "int8-quantize it with parity gates, convert to ONNX and TFLite and write a verified "
        "bundle with an HTML report. Needs `pip install 'edgerec[export]'`.",
    )
    from edgerec.export.artifacts.quantize_onnx import QuantTarget
    from edgerec.export.options import (
        STUDENTS,
        DataOptions,
        DistillConfig,
        ExportOptions,
        QuantizationOptions,
        RayCacheOptions,
        StudentOptions,
        TeacherOptions,
    )

    exp.add_argument("--images", required=True,
                     help="folder of photos: one sub-folder per label, or flat (no labels); "
                     "or the root of --items paths")
    exp.add_argument("--out", required=True, help="bundle directory to create")
    exp.add_argument("--items", help="CSV item_id,path[,label][,split] (label optional)")
    exp.add_argument("--extra-images", nargs="*", default=[],
                     help="folders of extra photos used for distillation only")
    exp.add_argument("--eval-unseen", help="labelled folder never trained on, for the report")
    exp.add_argument("--teacher", help="teacher .tflite/.onnx, bundle, or torchvision:ARCH "
                     "with --teacher-weights (default: the shipped MobileNetV1)")
    exp.add_argument("--teacher-weights",
                     help="state_dict file of a torchvision:ARCH teacher (never downloaded)")
    exp.add_argument("--teacher-mean", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="mean of a float-input teacher on [0,1] pixels")
    exp.add_argument("--teacher-std", type=float, nargs=3, metavar=("R", "G", "B"),
                     help="std of a float-input teacher on [0,1] pixels")
    option(exp, "--teacher-output", metavar="TENSOR", source=TeacherOptions, name="output",
           help="a tensor of a .tflite teacher to use as its embedding, e.g. "
           "MobilenetV2/Logits/AvgPool (the shipped MobileNetV2 classifier's pooled features)",
           none_means="the model's output")
    option(exp, "--student", choices=sorted(STUDENTS), source=StudentOptions, name="name",
           help="student recipe")
    option(exp, "--width", type=float, source=StudentOptions, name="width",
           help="student width multiplier", none_means="the recipe's")
    option(exp, "--image-size", type=int, source=StudentOptions, name="image_size",
           help="student input size (px)", none_means="the recipe's")
    option(exp, "--dim", type=int, source=StudentOptions, name="dim",
           help="embedding dimension", none_means="the recipe's")
    option(exp, "--student-init", metavar="PATH", source=StudentOptions, name="init",
           help="ImageNet weights for a mobilenet_v2 / mobilenet_v1 student (width 1.0): the "
           "MobileNetV2 1.0 classifier .tflite (mobilenet_v2_1.0_224_quant.tflite) or the "
           "MobileNetV1 teacher itself",
           none_means="random weights")
    option(exp, "--views", type=int, source=DistillConfig, name="views",
           help="augmented views per training image")
    option(exp, "--epochs", type=int, source=DistillConfig, name="epochs",
           help="maximum epochs")
    option(exp, "--max-minutes", type=float, source=DistillConfig, name="max_minutes",
           help="training time budget in minutes (with --resume it includes the minutes "
           "the interrupted run already trained)", none_means="none")
    exp.add_argument("--distill", nargs="*", default=[], metavar="KEY=VALUE",
                     help="distillation recipe overrides, e.g. ema_decay=0.995 "
                     "label_decay_from=0.6 w_label_end=0 w_behaviour=0.5 (with --events) "
                     "(fields of DistillConfig)")
    option(exp, "--ignore-labels", source=DataOptions, name="use_labels",
           action="store_false", dest="use_labels",
           help="train as if the images had no labels (random split; the epoch, the "
           "whitening and the int8 gates go by agreement with the teacher); the labels then "
           "only measure same-label mAP@10 in the report. Labels used")
    option(exp, "--select-fraction", type=float, source=DataOptions, name="select_fraction",
           help="share of the training images held out to pick the kept epoch on (0: the "
           "validation images, where seen quality is reported)")
    option(exp, "--whiten", metavar="auto|off|POWER", source=StudentOptions, name="whiten",
           help="the encoder's whitening (within-label when the images have labels, else PCA): "
           "auto picks its power on the epoch-selection images (within-label: the best "
           "mAP@10; PCA: the largest that keeps 99%%); off; or a power in (0, 1]")
    option(exp, "--int8-target", choices=[t.value for t in QuantTarget],
           source=QuantizationOptions, name="target",
           help="the CPU the int8 ONNX files are built for (x86 without VNNI, x86 with "
           "VNNI, ARM); LiteRT files are the same for all")
    option(exp, "--qat-steps", type=int, metavar="N", source=QuantizationOptions,
           name="qat_steps",
           help="steps of quantization-aware fine-tuning, the last rung of the ONNX int8 ladder, "
           "tried only when every post-training rung misses the gate: a copy of the student "
           "learns to keep its own embeddings under simulated int8 (no labels, no teacher); "
           "the int8 file is still gated against the original student. 0: no such rung")
    option(exp, "--qat-minutes", type=float, metavar="M", source=QuantizationOptions,
           name="qat_minutes", help="time budget of that fine-tune, per export")
    exp.add_argument("--quick", action="store_true",
                     help="a smoke configuration (minutes): 96 px, 2 epochs, a few images per "
                     "label; not a model to ship")
    exp.add_argument("--resume", action="store_true", help="continue an interrupted export")
    exp.add_argument("--force", action="store_true", help="replace --out if it exists")
    exp.add_argument("--allow-gate-failure", action="store_true",
                     help="drop an int8 artifact that fails its gate instead of failing")
    option(exp, "--work-dir", source=ExportOptions, name="work_dir",
           help="caches and checkpoints", none_means="<out>.work")
    add_ray_arguments(exp, RayCacheOptions, work="compute the teacher's features",
                      then="the same cache as local workers, resumable by either (the images "
                      "and --work-dir at the same paths on every node)", actors="teacher",
                      batch="images per actor call, recorded in the cache when it returns")
    add_scorer_arguments(exp, events_required=False)
    add_json(exp)
    exp.set_defaults(func=cmd_export)



def cmd_convert(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401  (imported by the rewrite only when it runs)
        from edgerec.export.artifacts.tflite_onnx import ConversionOptions, tflite_to_onnx
    except ImportError as exc:
        raise _missing_extra(exc, "convert") from exc
    from edgerec.sdk.cli.common import expand_images

    probes = expand_images(args.probe_images) if args.probe_images else []
    try:
        options = ConversionOptions(target=args.target, probe_images=probes,
                                    min_cosine=args.min_cosine, force=args.force)
    except ValueError as exc:
        raise ExportError(f"bad convert option: {exc}") from exc
    result = tflite_to_onnx(args.model, args.out, options)
    norm = " ".join(f"{v:.10g}" for v in result.mean)
    scale = " ".join(f"{v:.10g}" for v in result.std)
    convs = sum(op in ("CONV_2D", "DEPTHWISE_CONV_2D") for op in result.ops)
    command = (f"edgerec bundle import {result.source} {result.path} --mean {norm} "
               f"--std {scale} --out BUNDLE")
    payload = {**result.to_dict(), "import_command": command}
    text = (f"wrote {result.path}: {convs} convolutions as ONNX QLinearConv with "
            f"{result.weights} weights for {result.target}; on "
            f"{result.probes} probes ({result.probe_kind}) cosine to {result.source.name} "
            f"min {result.min_cosine:.6f}, largest difference {result.max_abs_diff:.2f} "
            f"output steps ({result.seconds:.1f} s)\nboth in one bundle: {command}")
    emit(args, payload, text)
    return 0


def add_convert_parser(sub: Any) -> None:
    """``edgerec convert``."""
    conv = sub.add_parser(
        "convert", help="rewrite a quantized .tflite CNN (e.g. the MobileNetV1 teacher) as ONNX",
        description="Write the same integers of a uint8/int8 TFLite CNN (a chain of "
        "convolutions and a global average pool, such as the shipped MobileNetV1 teacher) as "
        "an ONNX QLinearConv graph, so ONNX Runtime can run it; checked against the .tflite "
        "on probe inputs and written only when they agree. Needs `pip install "
        "'edgerec[export]'` (onnx).",
    )
    from edgerec.export.artifacts.quantize_onnx import QuantTarget
    from edgerec.export.artifacts.tflite_onnx import ConversionOptions

    conv.add_argument("model", help="the quantized .tflite model")
    option(conv, "--target", choices=[t.value for t in QuantTarget], source=ConversionOptions,
           name="target", help="the CPU the file is for: x86-vnni and arm get int8 weights "
           "(fast u8s8 kernels), x86-avx2 keeps uint8 weights (ONNX Runtime's AVX2 u8s8 "
           "kernels saturate on full-range weights)", none_means="this CPU's")
    conv.add_argument("--out", required=True, help=".onnx file to write")
    conv.add_argument("--probe-images", nargs="*", metavar="PATH",
                      help="photos (files or folders) to check agreement on (default: "
                      "generated colour fields)")
    option(conv, "--min-cosine", type=float, source=ConversionOptions, name="min_cosine",
           help="least cosine between the two models' outputs on any probe")
    conv.add_argument("--force", action="store_true", help="replace --out if it exists")
    add_json(conv)
    conv.set_defaults(func=cmd_convert)


def add_scorer_arguments(p: argparse.ArgumentParser, *, events_required: bool) -> None:
    """The events and scorer-training flags (``edgerec scorer train`` and ``edgerec export``);
    their defaults are read from :mod:`edgerec.export.options`."""
    from edgerec.export.options import (
        BehaviourOptions,
        NegativeSampling,
        ScorerConfig,
        ScorerExportOptions,
    )

    p.add_argument("--events", required=events_required,
                   help="events CSV user_id,item_id[,event][,timestamp][,weight]"
                   + ("" if events_required else "; trains a personalised scorer too, and "
                      "with --distill w_behaviour=W the encoder (photos taken together by the "
                      "same users should look alike)"))
    option(p, "--user-column", source=ScorerExportOptions, name="user_column",
           help="the events' user id column (e.g. owner_id)")
    option(p, "--item-column", source=ScorerExportOptions, name="item_column",
           help="the events' item id column")
    option(p, "--scorer-test-fraction", type=float, source=ScorerExportOptions,
           name="test_fraction",
           help="share of each user's items held out for `edgerec evaluate` and never "
           "trained on (0: train on everything, for production)")
    option(p, "--scorer-seed", type=int, source=ScorerExportOptions, name="split_seed",
           help="split and training seed")
    option(p, "--scorer-epochs", type=int, source=ScorerConfig, name="epochs",
           help="maximum scorer epochs")
    option(p, "--scorer-hidden", type=int, nargs="+", metavar="WIDTH", source=ScorerConfig,
           name="hidden", help="hidden layer widths")
    option(p, "--scorer-negatives", type=int, nargs=3, metavar=("UNIFORM", "POPULAR", "HARD"),
           source=NegativeSampling, name=("uniform", "popular", "hard"),
           help="negatives per positive: uniform, by popularity, and hard ones from the "
           "user's nearest items")
    p.add_argument("--scorer-strict-int8", action="store_true",
                   help="fail if an int8 scorer misses its gate (without it: leave that file "
                   "out and record why)")
    option(p, "--scorer-holdout", choices=["fraction", "leave-last-out"],
           source=ScorerExportOptions, name="holdout",
           help="what is held out for `edgerec evaluate` and never learned from: "
           "--scorer-test-fraction of each user's items, or each user's newest item")
    option(p, "--no-behaviour", source=BehaviourOptions, name="enabled", action="store_false",
           dest="behaviour",
           help="do not learn the behaviour signals (popularity, co-occurrence, collaborative "
           "vectors); the feed stays pixels-only. Learned")
    option(p, "--behaviour-dim", type=int, source=BehaviourOptions, name="dim",
           help="dimension of the collaborative item vectors (int8, one byte each per item)")
    option(p, "--behaviour-neighbours", type=int, source=BehaviourOptions, name="neighbours",
           help="co-occurrence neighbours kept per item (6 bytes each per item)")
    option(p, "--behaviour-session-gap", type=float, source=BehaviourOptions,
           name="session_gap_minutes", metavar="MINUTES",
           help="with timestamps, events this close form sessions whose co-occurrence adds to "
           "the users' (0: off)")
    option(p, "--behaviour-fusion", choices=["auto", "linear", "mlp"], source=BehaviourOptions,
           name="fusion",
           help="how the feed fuses its features: a linear listwise fusion, a small MLP "
           "trained with BCE on the device's own candidates, or (auto) whichever has the "
           "higher cross-validated NDCG@20 on the validation cuts")


def scorer_options(args: argparse.Namespace) -> Any:
    """:class:`edgerec.export.options.ScorerExportOptions` from the flags."""
    from edgerec.export.options import (
        BehaviourOptions,
        NegativeSampling,
        ScorerConfig,
        ScorerExportOptions,
    )

    uniform, popular, hard = args.scorer_negatives
    config = ScorerConfig(seed=args.scorer_seed, epochs=args.scorer_epochs,
                          hidden=tuple(args.scorer_hidden),
                          negatives=NegativeSampling(uniform=uniform, popular=popular,
                                                     hard=hard))
    return ScorerExportOptions(config=config, test_fraction=args.scorer_test_fraction,
                               split_seed=args.scorer_seed, user_column=args.user_column,
                               item_column=args.item_column,
                               fail_on_gate=args.scorer_strict_int8,
                               holdout=args.scorer_holdout,
                               behaviour=BehaviourOptions(enabled=args.behaviour,
                                                          dim=args.behaviour_dim,
                                                          neighbours=args.behaviour_neighbours,
                                                          fusion=args.behaviour_fusion,
                                                          session_gap_minutes=args.
                                                          behaviour_session_gap))


def _missing_extra(exc: ImportError, command: str) -> RuntimeUnavailableError:
    """The one-line error of ``edgerec COMMAND`` run without the export extra."""
    return RuntimeUnavailableError(
        f"`edgerec {command}` needs the export extra ({exc.name} is missing): "
        "pip install 'edgerec[export]'"
    )


def cmd_scorer_train(args: argparse.Namespace) -> int:
    try:
        from edgerec.export.scorer.bundle import add_scorer
        options = scorer_options(args)
    except ImportError as exc:
        raise _missing_extra(exc, "scorer train") from exc
    except ValueError as exc:  # a bad flag value, e.g. --scorer-test-fraction 1
        raise ExportError(f"bad scorer option: {exc}") from exc
    log = (lambda _msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    with stdout_to_stderr():  # converters print to stdout; keep it for the result
        result = add_scorer(args.bundle, args.catalog, args.events, Path(args.out), options,
                            force=args.force, log=log)
    m = result.metrics
    training = m["training"]
    if not m.get("shipped", True):
        emit(args, {"bundle": str(result.bundle.path), "metrics": m},
             f"wrote {result.bundle.path} without a scorer: {m['reason']}; "
             f"{result.seconds:.0f} s")
        return 0
    keys = sorted(m["parity"])
    text = (f"wrote {result.bundle.path}: {', '.join(keys)}; best epoch "
            f"{training['best_epoch']}, validation NDCG@10 {_fmt(training['best_val_ndcg'])} "
            f"(inner product {_fmt(training['inner_product_val_ndcg'])}); "
            f"{len(m['gate_failures'])} int8 file(s) left out; {result.seconds:.0f} s")
    emit(args, {"bundle": str(result.bundle.path), "metrics": m}, text)
    return 0


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def add_scorer_parser(sub: Any) -> None:
    """``edgerec scorer train``."""
    scorer = sub.add_parser("scorer", help="train the personalised re-ranking scorer",
                            description="Train the MLP scorer that re-ranks for_user "
                            "candidates (needs `pip install 'edgerec[export]'`).")
    ssub = scorer.add_subparsers(dest="scorer_command", metavar="ACTION")
    scorer.set_defaults(func=lambda _args: usage(scorer))
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
    add_json(train)
    train.set_defaults(func=cmd_scorer_train)
