"""Fusion latency: scoring C candidates' feature rows with the feed's MLP fusion, in numpy (the
device's :func:`edgerec.sdk.behaviour.fuse`) against the same network in ONNX Runtime.

The question it answers: does the feed's fusion MLP (F = 12 features, one hidden layer of 16,
a linear skip) gain anything from an engine file? Both paths take the raw feature rows
``(C, 12)`` float32 and return ``(C,)`` scores (the ONNX graph standardises too); one process,
one thread (``OPENBLAS_NUM_THREADS=1``, ORT ``intra_op_num_threads=1``), rounds interleaved,
the median of each round and the ratio within each round reported; the scores of the two
paths are checked to agree. Random weights: latency does not depend on them.

    OPENBLAS_NUM_THREADS=1 python benchmarks/fusion_latency.py   # ~20 s; results/fusion_latency.*
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _report import machine_info, write


def _record(hidden: int, seed: int = 0):
    from edgerec.sdk.behaviour import FEATURES
    from edgerec.sdk.bundle.manifest import FusionRecord

    rng = np.random.default_rng(seed)
    f = len(FEATURES)
    return FusionRecord(FEATURES, tuple(rng.normal(size=f)), tuple(rng.normal(size=f)),
                        tuple(rng.uniform(0.5, 2.0, size=f)), bias=0.1, fitted=True,
                        hidden_weights=tuple(map(tuple, rng.normal(size=(hidden, f)))),
                        hidden_bias=tuple(rng.normal(size=hidden)),
                        output_weights=tuple(rng.normal(size=hidden)))


def _onnx_session(record):
    """The record's network as an ONNX graph: standardise, hidden layer + skip, sum."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    f32 = np.float32
    inits = [numpy_helper.from_array(np.asarray(a, f32), name) for name, a in (
        ("mean", record.mean), ("inv_scale", 1.0 / np.asarray(record.scale)),
        ("w1", np.asarray(record.hidden_weights).T), ("b1", record.hidden_bias),
        ("w2", np.asarray(record.output_weights)[:, None]),
        ("skip", np.asarray(record.weights)[:, None]), ("bias", [record.bias]))]
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]),
             helper.make_node("Mul", ["c", "inv_scale"], ["z"]),
             helper.make_node("MatMul", ["z", "w1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["o1"]),
             helper.make_node("MatMul", ["z", "skip"], ["o2"]),
             helper.make_node("Add", ["o1", "o2"], ["o3"]),
             helper.make_node("Add", ["o3", "bias"], ["y"])]
    graph = helper.make_graph(
        nodes, "fusion", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["C", 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["C", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=500, help="C, rows per call")
    parser.add_argument("--hidden", type=int, default=16, help="the MLP's hidden width")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per path and round")
    args = parser.parse_args(argv)
    from edgerec.sdk.behaviour import fuse

    record = _record(args.hidden)
    session = _onnx_session(record)
    x = np.random.default_rng(1).normal(size=(args.candidates, 12)).astype(np.float32)
    paths = {"numpy (sdk fuse)": lambda: fuse(x, record),
             "onnxruntime": lambda: session.run(None, {"x": x})[0]}
    agree = float(np.abs(paths["numpy (sdk fuse)"]() - paths["onnxruntime"]()[:, 0]).max())
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, call in paths.items():
            for _ in range(30):
                call()
            times = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                call()
                times.append((time.perf_counter() - t0) * 1e6)
            rounds[name].append(float(np.median(times)))
    ratio = [o / n for n, o in zip(rounds["numpy (sdk fuse)"], rounds["onnxruntime"])]
    payload = {"machine": machine_info(), "candidates": args.candidates, "hidden": args.hidden,
               "features": 12, "rounds": args.rounds, "calls": args.calls,
               "max_abs_difference": agree,
               "median_us": {k: float(np.median(v)) for k, v in rounds.items()},
               "round_medians_us": rounds, "onnx_over_numpy": ratio}
    m = payload["machine"]
    md = (f"# Fusion latency (`benchmarks/fusion_latency.py`)\n\n{m['date']}, {m['cpu']} "
          f"({m['cores']} cores), numpy {m['numpy']}, engines {m['engines']}; one thread.\n\n"
          f"Scoring C = {args.candidates} feature rows (12 features) with the feed's MLP "
          f"fusion (hidden {args.hidden}, linear skip); median of {args.calls} calls per "
          f"round, {args.rounds} interleaved rounds; the two paths' scores differ by at most "
          f"{agree:.1e}.\n\n| path | median us per call | ratio to numpy (per round, "
          "median) |\n|---|---|---|\n")
    for name, values in rounds.items():
        r = 1.0 if name.startswith("numpy") else float(np.median(ratio))
        md += f"| {name} | {np.median(values):.1f} | {r:.2f} |\n"
    js, mdp = write("fusion_latency", payload, md)
    print(md)
    print(f"wrote {js} and {mdp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
