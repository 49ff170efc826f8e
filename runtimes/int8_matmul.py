"""Exact int8 x uint8 matrix products on ONNX Runtime's ``MatMulInteger`` (numpy in, numpy out).

The catalog's int8 pre-filter (:mod:`edgerec.sdk.catalog.prefilter`) scores a quantized query
against a transposed copy of the stored codes with these two tiny graphs, because numpy has no
integer matrix product and ONNX Runtime's MLAS runs a one-row ``uint8 (1, K) x int8 (K, N)``
product near memory speed:

- ``prepare``: codes ``X`` int8 ``(N, K)`` -> ``Xt = X^T`` int8 ``(K, N)`` and each row's code sum
  ``(1, N)`` int32;
- ``score``: ``S = float(A @ Bt - offset) * scales``, ``A`` uint8 ``(M, K)``, ``Bt`` int8
  ``(K, N)``, ``offset`` int32 ``(N,)``, ``scales`` float32 ``(N,)`` -> ``(M, N)`` float32;
- ``score_rows``, the other way round: ``S = float((X - 128) @ Q) * scales``, ``X`` the codes
  + 128 as uint8 ``(N, K)`` (:meth:`Int8MatMul.shift`) with 128 as its zero point, ``Q`` int8
  ``(K, M)``, ``scales`` float32 ``(N, 1)`` -> ``(N, M)`` float32. Which of the two is faster
  depends on the CPU (MLAS picks different kernels), so the pre-filter measures.

The graphs are written as protobuf bytes here, so a device needs no ``onnx`` package; they run
on one thread, CPU only.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from edgerec.runtimes.errors import RuntimeUnavailableError

__all__ = ["Int8MatMul", "int8_matmul_available", "prepare_model", "score_model",
           "score_rows_model"]


def int8_matmul_available() -> bool:
    """True when ONNX Runtime can be imported (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class Int8MatMul:
    """The graphs on one-thread ONNX Runtime sessions. Create with :meth:`create`."""

    def __init__(self, prepare: Any, score: Any, score_rows: Any) -> None:
        self._prepare = prepare
        self._score = score
        self._score_rows = score_rows

    @classmethod
    def create(cls) -> Int8MatMul:
        """Build both sessions; :class:`RuntimeUnavailableError` without ONNX Runtime."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailableError(
                "the int8 matrix product needs ONNX Runtime: `pip install edgerec[onnx]`"
            ) from exc
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        cpu = ["CPUExecutionProvider"]
        return cls(ort.InferenceSession(prepare_model(), so, providers=cpu),
                   ort.InferenceSession(score_model(), so, providers=cpu),
                   ort.InferenceSession(score_rows_model(), so, providers=cpu))

    def prepare(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes int8 ``(N, K)`` -> (``codes^T`` int8 ``(K, N)``, row sums int32 ``(1, N)``)."""
        ones = np.ones((1, codes.shape[1]), np.uint8)
        codes_t, sums = self._prepare.run(None, {"X": np.ascontiguousarray(codes), "ones": ones})
        return codes_t, sums

    def scaled_product(self, a: np.ndarray, codes_t: np.ndarray, offset: np.ndarray,
                       scales: np.ndarray) -> np.ndarray:
        """``float32((a @ codes_t) - offset) * scales``: ``a`` uint8 ``(M, K)`` -> ``(M, N)``."""
        feed = {"A": a, "Bt": codes_t, "offset": offset, "scales": scales}
        return self._score.run(None, feed)[0]

    @staticmethod
    def shift(codes: np.ndarray) -> np.ndarray:
        """Codes int8 ``(N, K)`` -> ``codes + 128`` uint8 ``(N, K)`` (a new array)."""
        return np.bitwise_xor(np.ascontiguousarray(codes).view(np.uint8), np.uint8(0x80))

    def scaled_product_rows(self, shifted: np.ndarray, q: np.ndarray,
                            scales: np.ndarray) -> np.ndarray:
        """``float32((shifted - 128) @ q) * scales``: ``shifted`` uint8 ``(N, K)`` (from
        :meth:`shift`), ``q`` int8 ``(K, M)``, ``scales`` float32 ``(N, 1)`` -> ``(N, M)``."""
        feed = {"X": shifted, "Q": q, "zero": _ZERO, "scales": scales}
        return self._score_rows.run(None, feed)[0]


# --------------------------------------------------------------------------- ONNX graphs

_FLOAT, _UINT8, _INT8, _INT32 = 1, 2, 3, 6
_ZERO = np.array(128, np.uint8)  # score_rows' zero point: the codes' shift


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    shape = b"".join(
        _field(1, _field(1, d) if isinstance(d, int) else _field(2, d)) for d in dims
    )
    tensor = _field(1, elem_type) + _field(2, shape)
    return _field(1, name) + _field(2, _field(1, tensor))


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: int | list[int]) -> bytes:
    out = b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs)
    out += _field(4, op)
    for name, value in attrs.items():
        if isinstance(value, list):
            attr = _field(1, name) + b"".join(_field(8, v) for v in value) + _field(20, 7)
        else:
            attr = _field(1, name) + _field(3, value) + _field(20, 2)
        out += _field(5, attr)
    return out


def _model(nodes: list[bytes], inputs: list[bytes], outputs: list[bytes]) -> bytes:
    graph = b"".join(_field(1, n) for n in nodes) + _field(2, "edgerec_search")
    graph += b"".join(_field(11, i) for i in inputs) + b"".join(_field(12, o) for o in outputs)
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 7) + _field(2, "edgerec") + _field(7, graph) + _field(8, opset)


def score_model() -> bytes:
    """``S = Cast(MatMulInteger(A, Bt) - offset, float) * scales``: ``(M, N)`` float32."""
    return _model(
        [_node("MatMulInteger", ["A", "Bt"], ["Y"]),
         _node("Sub", ["Y", "offset"], ["D"]),
         _node("Cast", ["D"], ["F"], to=_FLOAT),
         _node("Mul", ["F", "scales"], ["S"])],
        [_value_info("A", _UINT8, ["M", "K"]), _value_info("Bt", _INT8, ["K", "N"]),
         _value_info("offset", _INT32, ["N"]), _value_info("scales", _FLOAT, ["N"])],
        [_value_info("S", _FLOAT, ["M", "N"])],
    )


def score_rows_model() -> bytes:
    """``S = Cast(MatMulInteger(X, Q, zero), float) * scales``: ``(N, M)`` float32."""
    return _model(
        [_node("MatMulInteger", ["X", "Q", "zero"], ["Y"]),
         _node("Cast", ["Y"], ["F"], to=_FLOAT),
         _node("Mul", ["F", "scales"], ["S"])],
        [_value_info("X", _UINT8, ["N", "K"]), _value_info("Q", _INT8, ["K", "M"]),
         _value_info("zero", _UINT8, []), _value_info("scales", _FLOAT, ["N", 1])],
        [_value_info("S", _FLOAT, ["N", "M"])],
    )


def prepare_model() -> bytes:
    """``Xt = X^T`` and ``sums = ones @ X^T`` (each row's code sum): int8, int32."""
    return _model(
        [_node("Transpose", ["X"], ["Xt"], perm=[1, 0]),
         _node("MatMulInteger", ["ones", "Xt"], ["sums"])],
        [_value_info("X", _INT8, ["N", "K"]), _value_info("ones", _UINT8, [1, "K"])],
        [_value_info("Xt", _INT8, ["K", "N"]), _value_info("sums", _INT32, [1, "N"])],
    )
