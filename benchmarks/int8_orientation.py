"""Which way round should the int8 catalog scan call ONNX Runtime's ``MatMulInteger``?

The search pre-filter (:mod:`edgerec.sdk.catalog.prefilter`) scores one query against N stored
int8 codes as ``query uint8 (1, D) x codes^T int8 (D, N)`` (:class:`edgerec.runtimes.int8_matmul.
Int8MatMul`), because on the machine it was built on the other orientation took a much
slower MLAS path (its docstring). This times, on this CPU, at 1 thread, interleaved per run:

- ``query-row``: the pre-filter's own graph, ``uint8 (1, D) x int8 (D, N)`` with its per-row
  offset and scales (``Int8MatMul.scaled_product``);
- ``codes-rows``: ``MatMulInteger`` of ``codes + 128`` as uint8 ``(N, D)`` with zero point
  128 by the query as int8 ``(D, 1)``, times the per-row scales: the same scores (checked),
  the same work after the product (a ``Sub`` of ``128 * sum(q)`` instead of the zero point
  measured 1.9 ms at 100k here: ONNX Runtime runs that broadcast slowly);

p50 ms and the median over rounds of the per-round ratio ``codes-rows / query-row``. It needs
the ``onnx`` package (the export extra) to write the second graph.

    python benchmarks/int8_orientation.py     # ~1 min; writes results/int8_orientation.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from edgerec.runtimes.int8_matmul import Int8MatMul
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write


def _codes_rows_session(n: int, dim: int) -> ort.InferenceSession:
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "a_zero"], ["P"]),
         helper.make_node("Cast", ["P"], ["F"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["F", "scales"], ["S"])], "codes_rows",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, dim]),
         helper.make_tensor_value_info("B", TensorProto.INT8, [dim, 1]),
         helper.make_tensor_value_info("a_zero", TensorProto.UINT8, []),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [n, 1])],
        [helper.make_tensor_value_info("S", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def measure(n: int, dim: int, runs: int, rounds: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    codes = rng.integers(-127, 128, (n, dim), dtype=np.int8)
    engine = Int8MatMul.create()
    codes_t, sums = engine.prepare(codes)
    offset = (sums[0].astype(np.int64) * 64).astype(np.int32)
    scales = np.full(n, 1e-2, np.float32)
    query_u8 = rng.integers(1, 128, (1, dim), dtype=np.uint8)
    shifted = (codes.astype(np.int16) + 128).astype(np.uint8)
    query_s8 = (query_u8.astype(np.int16) - 64).astype(np.int8).reshape(dim, 1)
    other = _codes_rows_session(n, dim)
    # ((codes + 128) - 128) . q with 128 as A's zero point: the codes' own products, exactly
    feed = {"A": shifted, "B": query_s8, "a_zero": np.array(128, np.uint8),
            "scales": scales.reshape(n, 1)}
    a = engine.scaled_product(query_u8, codes_t, offset, scales)[0]
    b = other.run(None, feed)[0][:, 0]
    assert np.allclose(a, b, rtol=1e-6, atol=1e-6), "the two orientations disagree"
    calls = {"query-row": lambda: engine.scaled_product(query_u8, codes_t, offset, scales),
             "codes-rows": lambda: other.run(None, feed)}
    for call in calls.values():
        for _ in range(5):
            call()
    samples = {name: [[] for _ in range(rounds)] for name in calls}
    for r in range(rounds):
        for _ in range(runs):
            for name, call in calls.items():
                t0 = time.perf_counter()
                call()
                samples[name][r].append((time.perf_counter() - t0) * 1e3)
    out: dict = {"items": n, "dim": dim}
    for name in calls:
        out[name] = float(np.median(np.concatenate(samples[name])))
    ratios = [np.median(samples["codes-rows"][r]) / np.median(samples["query-row"][r])
              for r in range(rounds)]
    out["ratio"] = float(np.median(ratios))
    out["ratio_rounds"] = [float(x) for x in ratios]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--name", default="int8_orientation")
    args = ap.parse_args(argv)
    rows = [measure(n, args.dim, args.runs, args.rounds) for n in args.sizes]
    info = machine_info()
    md = ["# int8 catalog scan: MatMulInteger orientation", "",
          f"Machine: {info.get('cpu')}, {info.get('cores')} cores, flags "
          f"{', '.join(info.get('cpu_flags') or [])}; onnxruntime {ort.__version__}; "
          f"{info.get('date')}; commit {info.get('commit')}. One query, 1 thread, "
          f"{args.rounds} rounds x {args.runs} runs, interleaved.", "",
          "| items x dim | query-row (the pre-filter's graph) p50 ms | codes-rows p50 ms | "
          "codes-rows / query-row (median of rounds; rounds) |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['items']:,} x {r['dim']} | {r['query-row']:.3f} | "
                  f"{r['codes-rows']:.3f} | {r['ratio']:.2f} "
                  f"({', '.join(f'{x:.2f}' for x in r['ratio_rounds'])}) |")
    text = "\n".join(md) + "\n"
    write(args.name, {"machine": info, "rows": rows, "runs": args.runs,
                      "rounds": args.rounds}, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
