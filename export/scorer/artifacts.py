"""The scorer's bundle files: fp32 and int8 ONNX and TFLite, the folded weights, parity gates.

Every file is compared with the torch model on real candidate sets: for each validation user,
the top ``C`` catalog items by ``u . v`` (their history left out), which is what the device's
recommender hands the scorer (:func:`parity_sets`). :class:`ScorerParity` measures the logits'
largest difference, the top-k overlap and the rank (Spearman) correlation per user, and NDCG@k
of the re-ranked candidates against the held-out items, for the candidate and the reference.

- fp32 ONNX / TFLite and the folded ``.npz`` must match torch (largest logit difference
  <= :data:`FP32_MAX_ABS_DIFF`), else the export fails: a conversion bug.
- int8 files climb a ladder of remedies (:func:`~.quantize.quantize_with_ladder`) until they
  pass :class:`ScorerGate`; a file that never passes is left out and the reason recorded
  (``fail_on_gate``: the export fails instead).

Both engines keep float32 input and output, and three small parts of the network always stay
float (:data:`FLOAT_LAYERS`): the standardisation at the start, so that the first quantized
tensor is the standardised rows, where ``u``, ``v`` and ``u*v`` have comparable ranges
(quantizing the raw ``u*v`` block, ~1e-2, on the scale of ``u`` would erase it); and the output
layer and the skip path, because an 8-bit logit has 256 levels for the whole score range, too
coarse to order 200 close candidates. They are ~1/50 of the compute. ONNX quantizes only the
Gemm/MatMul nodes (U8S8, 7-bit weights on x86 without VNNI, as for the encoder).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from edgerec.export.artifacts.quantize import (
    ActivationType,
    Calibration,
    OnnxQuantOptions,
    Remedy,
    TfliteQuantOptions,
    _onnx_nodes_for,
    _pt2e_quantizer,
    quantize_with_ladder,
)
from edgerec.export.errors import ExportError
from edgerec.export.scorer.data import Examples, RankingSet, hits_at_k, mean_ndcg
from edgerec.export.scorer.train import ScorerNet
from edgerec.runtimes import Engine, RuntimeOptions, open_runtime
from edgerec.sdk import Precision, Role
from edgerec.sdk.bundle.writer import NewArtifact, NewWeights
from edgerec.sdk.scorer import MLP_WEIGHTS_FORMAT, MlpWeights

__all__ = [
    "FP32_MAX_ABS_DIFF",
    "BuiltScorer",
    "ParitySets",
    "ScorerGate",
    "ScorerParity",
    "build_scorer_artifacts",
    "calibration_rows",
    "parity_sets",
    "scorer_parity",
]

FP32_MAX_ABS_DIFF = 1e-3  # logits; fp32 files agree with torch to ~1e-5 in practice
FLOAT_LAYERS = ("standardize", "head", "skip")  # float in every rung (module docstring)
FIRST_LAYERS = ("deep.0", *FLOAT_LAYERS)  # the first hidden block too, in the last rung
INPUT_NAME, OUTPUT_NAME = "rows", "logits"


# --------------------------------------------------------------------------- candidate sets


@dataclass(frozen=True)
class ParitySets:
    """``u`` float32 ``(B, D)`` and each user's ``candidates`` int64 ``(B, C)`` catalog rows
    (best ``u . v`` first); ``ranking`` gives the held-out items (None: no NDCG)."""

    u: np.ndarray
    candidates: np.ndarray
    ranking: Optional[RankingSet]

    def rows(self, vectors: np.ndarray, b: int) -> np.ndarray:
        """float32 ``(C, 3D)`` ``[u, v, u*v]`` rows of user ``b``."""
        v = vectors[self.candidates[b]]
        u = np.broadcast_to(self.u[b], v.shape)
        return np.concatenate([u, v, u * v], axis=1)


def parity_sets(validation: RankingSet, examples: Examples, vectors: np.ndarray, *,
                candidates: int = 200, max_users: int = 300, seed: int = 0) -> ParitySets:
    """Candidate sets of up to ``max_users`` validation users (their ``seen`` items left out);
    without validation users, of training examples' leave-one-out vectors (no NDCG then)."""
    rng = np.random.default_rng(seed)
    c = min(candidates, len(vectors))
    if len(validation):
        pick = np.sort(rng.permutation(len(validation))[:max_users])
        u = validation.u[pick]
        seen = [validation.seen[i] for i in pick]
        ranking = RankingSet(tuple(validation.users[i] for i in pick), u, tuple(seen),
                             tuple(validation.relevant[i] for i in pick))
    else:
        pick = np.sort(rng.permutation(len(examples))[:max_users])
        u = examples.u[pick]
        seen = [examples.own[examples.user[i]] for i in pick]
        ranking = None
    sims = u @ vectors.T
    for b, rows in enumerate(seen):
        sims[b, rows] = -np.inf
    c = min(c, len(vectors) - max((len(s) for s in seen), default=0))
    if c < 1:
        raise ExportError("every catalog item is in the users' histories: no candidates to score")
    top = np.argsort(-sims, axis=1, kind="stable")[:, :c]
    return ParitySets(u.astype(np.float32), top.astype(np.int64), ranking)


def calibration_rows(sets: ParitySets, examples: Examples, vectors: np.ndarray, *,
                     max_rows: int = 4096, seed: int = 0) -> np.ndarray:
    """float32 ``(M, 3D)`` real rows for int8 calibration: candidate rows (what the device
    scores) and training positives, shuffled."""
    rng = np.random.default_rng(seed)
    parts = [sets.rows(vectors, b) for b in range(len(sets.u))]
    if len(examples):
        u = examples.u
        v = vectors[examples.item]
        parts.append(np.concatenate([u, v, u * v], axis=1))
    rows = np.concatenate(parts).astype(np.float32)
    return rows[rng.permutation(len(rows))[:max_rows]]


# --------------------------------------------------------------------------- parity


@dataclass(frozen=True)
class ScorerParity:
    """A scorer file against the torch model on :class:`ParitySets`.

    Attributes:
        users, candidates, k: the sets' size and the cut-off.
        max_abs_diff: largest |logit difference| over every scored row.
        top_k_overlap: mean over users of |top-k(reference) ∩ top-k(candidate)| / k.
        spearman: mean over users of the rank correlation of the C logits.
        ndcg_reference, ndcg_candidate: NDCG@k of the re-ranked candidates vs the held-out
            items (None without held-out items); ndcg_ratio: candidate / reference (None when
            not measured or the reference is 0); reference_hits: held-out items in the
            reference's top-k, all users together (what the NDCG rests on).
    """

    users: int
    candidates: int
    k: int
    max_abs_diff: float
    top_k_overlap: float
    spearman: float
    ndcg_reference: Optional[float] = None
    ndcg_candidate: Optional[float] = None
    ndcg_ratio: Optional[float] = None
    reference_hits: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __repr__(self) -> str:
        text = (f"ScorerParity({self.users} users x {self.candidates}: max |diff| "
                f"{self.max_abs_diff:.2e}, top-{self.k} overlap {self.top_k_overlap:.3f}, "
                f"spearman {self.spearman:.4f}")
        if self.ndcg_ratio is not None:
            text += (f", NDCG@{self.k} {self.ndcg_candidate:.4f}/{self.ndcg_reference:.4f}"
                     f"={self.ndcg_ratio:.3f}")
        return text + ")"


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(x.shape, dtype=np.float64)
    order = np.argsort(x, axis=1, kind="stable")
    np.put_along_axis(r, order, np.arange(x.shape[1], dtype=np.float64)[None], axis=1)
    return r


def scorer_parity(reference: np.ndarray, candidate: np.ndarray, sets: ParitySets,
                  k: int = 10) -> ScorerParity:
    """Compare ``candidate`` logits ``(B, C)`` with ``reference`` ``(B, C)`` on ``sets``."""
    ref = np.asarray(reference, np.float64)
    cand = np.asarray(candidate, np.float64)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ValueError(f"logits must be two (B, C) arrays of one shape, got {ref.shape} and "
                         f"{cand.shape}")
    kk = min(k, ref.shape[1])
    top_r = np.argsort(-ref, axis=1, kind="stable")[:, :kk]
    top_c = np.argsort(-cand, axis=1, kind="stable")[:, :kk]
    overlap = np.mean([len(np.intersect1d(a, b)) / kk for a, b in zip(top_r, top_c)])
    rr, rc = _ranks(ref), _ranks(cand)
    rr -= rr.mean(1, keepdims=True)
    rc -= rc.mean(1, keepdims=True)
    denom = np.sqrt((rr**2).sum(1) * (rc**2).sum(1))
    spearman = float(np.mean(np.where(denom > 0, (rr * rc).sum(1) / np.maximum(denom, 1e-300),
                                      1.0)))
    n_ref = n_cand = ratio = hits = None
    if sets.ranking is not None:
        hits = hits_at_k(ref, sets.ranking, k, sets.candidates)
        n_ref = mean_ndcg(ref, sets.ranking, k, sets.candidates)
        n_cand = mean_ndcg(cand, sets.ranking, k, sets.candidates)
        ratio = n_cand / n_ref if n_ref else None
    return ScorerParity(users=ref.shape[0], candidates=ref.shape[1], k=k,
                        max_abs_diff=float(np.abs(ref - cand).max()),
                        top_k_overlap=float(overlap), spearman=spearman,
                        ndcg_reference=n_ref, ndcg_candidate=n_cand, ndcg_ratio=ratio,
                        reference_hits=hits)


@dataclass(frozen=True)
class ScorerGate:
    """What an int8 scorer must reach against torch fp32; ``None`` skips a check.

    The NDCG ratio is checked only when the reference's top-k holds at least ``min_hits``
    held-out items: below that one hit more or less moves the ratio by more than the 1% the
    check is about (on clothing-small, 169 validation users, 16 hits: an int8 file with top-10
    overlap 0.992 and rank correlation 0.9998 had an NDCG ratio of 0.86, one hit fewer), so
    the fidelity checks (overlap, rank correlation) decide alone, and the manifest says so.
    """

    min_ndcg_ratio: Optional[float] = 0.99
    min_top_k_overlap: Optional[float] = 0.9
    min_spearman: Optional[float] = 0.99
    min_hits: int = 50

    def ndcg_checked(self, r: ScorerParity) -> bool:
        return r.ndcg_ratio is not None and (r.reference_hits or 0) >= self.min_hits

    def _checks(self, r: ScorerParity) -> dict[str, tuple[Optional[float], Optional[float]]]:
        checks = {"top_k_overlap": (r.top_k_overlap, self.min_top_k_overlap),
                  "spearman": (r.spearman, self.min_spearman)}
        if self.ndcg_checked(r):
            checks["ndcg_ratio"] = (r.ndcg_ratio, self.min_ndcg_ratio)
        return checks

    def shortfalls(self, report: ScorerParity) -> dict[str, tuple[Optional[float], float]]:
        """``{metric: (value, required)}`` for every check ``report`` fails (empty: passes)."""
        return {m: (v, need) for m, (v, need) in self._checks(report).items()
                if need is not None and (v is None or not v >= need)}

    def margin(self, report: ScorerParity) -> float:
        """The worst (value - required); >= 0 when the report passes."""
        return float(min((v - need for v, need in self._checks(report).values()
                          if need is not None and v is not None), default=np.inf))


# --------------------------------------------------------------------------- files


def scorer_logits(path: Path, sets: ParitySets, vectors: np.ndarray) -> np.ndarray:
    """``(B, C)`` logits of a ``.onnx``/``.tflite`` scorer on the candidate sets (1 thread)."""
    with open_runtime(path, options=RuntimeOptions(num_threads=1)) as rt:
        name, out = rt.input_specs()[0].name, rt.output_specs()[0].name
        return np.stack([rt.run({name: sets.rows(vectors, b)})[out].reshape(-1)
                         for b in range(len(sets.u))])


def torch_logits(model: ScorerNet, sets: ParitySets, vectors: np.ndarray) -> np.ndarray:
    """``(B, C)`` logits of the torch model (eval mode) on the candidate sets."""
    model.eval()
    with torch.no_grad():
        return np.stack([model(torch.from_numpy(sets.rows(vectors, b)))[:, 0].numpy()
                         for b in range(len(sets.u))])


def folded_logits(weights: MlpWeights, sets: ParitySets, vectors: np.ndarray) -> np.ndarray:
    """``(B, C)`` logits of the device's folded numpy path on the candidate sets."""
    score = weights.folded()
    return np.stack([score(sets.u[b], vectors[sets.candidates[b]]) for b in range(len(sets.u))])


def scorer_to_onnx(model: ScorerNet, path: Path) -> Path:
    """fp32 ONNX, input ``rows`` ``(C, 3D)`` with a dynamic C, output ``logits`` ``(C, 1)``."""
    x = torch.zeros(2, 3 * model.dim)
    c = torch.export.Dim("candidates", min=1, max=1 << 20)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, opset_version=18,
                      external_data=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes={"x": {0: c}}, verbose=False)
    return path


def scorer_to_tflite(model: ScorerNet, path: Path) -> Path:
    """fp32 TFLite saved with C = 1 (LiteRT resizes it to the batch it is given)."""
    import litert_torch

    litert_torch.convert(model.eval(), (torch.zeros(1, 3 * model.dim),)).export(str(path))
    return path


class _Rows:
    """An onnxruntime CalibrationDataReader over float32 ``(M, 3D)`` rows."""

    def __init__(self, name: str, rows: np.ndarray) -> None:
        self._feeds = [{name: rows}]  # one batch: the histogram calibrators need equal batches

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return self._feeds.pop(0) if self._feeds else None


def _float_inputs(path: Path, nodes: Sequence[str]) -> None:
    """Feed the float ``nodes`` the float tensors again: ORT's QDQ quantizer gives every
    consumer of a quantized activation the dequantized copy (8-bit), the excluded ones too."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    quantized_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    original = {n.output[0]: quantized_from[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in quantized_from}
    keep = set(nodes)
    for node in graph.node:
        if node.name in keep:
            for i, name in enumerate(node.input):
                node.input[i] = original.get(name, name)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def quantize_scorer_onnx(fp32: Path, out: Path, rows: np.ndarray,
                         options: Optional[OnnxQuantOptions] = None) -> Path:
    """Static int8 QDQ of the Gemm/MatMul nodes, per-channel weights, calibrated on ``rows``
    (``options.keep_float``: torch module names, e.g. :data:`FIRST_LAYERS`, stay float)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    options = options or OnnxQuantOptions()
    method = {Calibration.MINMAX: CalibrationMethod.MinMax,
              Calibration.PERCENTILE: CalibrationMethod.Percentile,
              Calibration.ENTROPY: CalibrationMethod.Entropy}[options.calibration]
    extra = {CalibrationMethod.Percentile: {"percentile": options.percentile},
             CalibrationMethod.Entropy: {"num_bins": options.entropy_bins}}.get(method, {})
    keep = _onnx_nodes_for(onnx.load(str(fp32)), options.keep_float)
    with tempfile.TemporaryDirectory(prefix="edgerec-scorer-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _Rows(INPUT_NAME, rows[: options.max_images]),
            quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
            reduce_range=options.reduce_range,
            activation_type=(QuantType.QUInt8 if options.activation is ActivationType.UINT8
                             else QuantType.QInt8),
            weight_type=QuantType.QInt8, op_types_to_quantize=["Gemm", "MatMul"],
            nodes_to_exclude=keep, calibrate_method=method, extra_options=extra,
        )
    _float_inputs(out, keep)
    return out


def quantize_scorer_tflite(model: ScorerNet, out: Path, rows: np.ndarray,
                           options: Optional[TfliteQuantOptions] = None) -> Path:
    """PT2E int8 (litert-torch's symmetric per-channel quantizer) calibrated on ``rows``; the
    standardisation stays float, so the input tensor stays float32."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    options = options or TfliteQuantOptions()
    width = 3 * model.dim
    quantizer = _pt2e_quantizer(options)
    c = torch.export.Dim("candidates", min=1, max=1 << 20)
    graph = torch.export.export(copy.deepcopy(model).eval(), (torch.zeros(2, width),),
                                dynamic_shapes=({0: c},)).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for start in range(0, len(rows[: options.max_images]), 512):
            prepared(torch.from_numpy(np.ascontiguousarray(rows[start : start + 512])))
    converted = convert_pt2e(prepared, fold_quantize=False)
    edge = litert_torch.convert(converted, (torch.zeros(1, width),),
                                quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out))
    return out


def onnx_ladder(base: Optional[OnnxQuantOptions] = None) -> list[Remedy]:
    """minmax -> percentile -> first layer kept float too (percentile); the output layer and
    the skip path always stay float. ``base`` defaults to U8S8 with 7-bit weights (x86
    without VNNI, like the encoder)."""
    base = replace(base or OnnxQuantOptions(), keep_float=FLOAT_LAYERS)
    return [Remedy("minmax", replace(base, calibration=Calibration.MINMAX)),
            Remedy("percentile", replace(base, calibration=Calibration.PERCENTILE)),
            Remedy("keep_first_float", replace(base, calibration=Calibration.PERCENTILE,
                                               keep_float=FIRST_LAYERS))]


def tflite_ladder(base: Optional[TfliteQuantOptions] = None) -> list[Remedy]:
    """histogram -> minmax -> first layer kept float too (histogram); the output layer and
    the skip path always stay float."""
    base = replace(base or TfliteQuantOptions(), keep_float=FLOAT_LAYERS)
    return [Remedy("histogram", replace(base, calibration=Calibration.HISTOGRAM)),
            Remedy("minmax", replace(base, calibration=Calibration.MINMAX)),
            Remedy("keep_first_float", replace(base, calibration=Calibration.HISTOGRAM,
                                               keep_float=FIRST_LAYERS))]


@dataclass
class BuiltScorer:
    """The scorer's bundle files and what was measured on the way."""

    artifacts: list[NewArtifact] = field(default_factory=list)
    weights: list[NewWeights] = field(default_factory=list)
    parity: dict[str, ScorerParity] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    gate_failures: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return {"parity": {k: v.to_dict() for k, v in self.parity.items()},
                "quantization": self.quantization, "gate_failures": self.gate_failures,
                "sizes": self.sizes}


def _describe(path: Path, precision: Precision) -> NewArtifact:
    with open_runtime(path, options=RuntimeOptions(num_threads=1)) as rt:
        inputs, outputs, engine = tuple(rt.input_specs()), tuple(rt.output_specs()), rt.engine
    return NewArtifact(source=path, role=Role.SCORER, precision=precision, inputs=inputs,
                       outputs=outputs, output=outputs[0].name, engine=engine)


def build_scorer_artifacts(
    model: ScorerNet,
    out_dir: Path,
    *,
    sets: ParitySets,
    vectors: np.ndarray,
    calibration: np.ndarray,
    k: int = 10,
    gate: ScorerGate = ScorerGate(),
    fail_on_gate: bool = False,
    int8: Sequence[Engine] = (Engine.ONNX, Engine.TFLITE),
    log: Callable[[str], None] = print,
) -> BuiltScorer:
    """Write and check the folded weights, fp32 ONNX + TFLite and int8 ONNX + TFLite.

    Args:
        model: the trained :class:`ScorerNet` (eval mode).
        out_dir: where the files go (a work directory; the bundle copies them).
        sets: the candidate sets the parity is measured on (:func:`parity_sets`).
        vectors: float32 ``(N, D)`` catalog vectors the sets index.
        calibration: float32 ``(M, 3D)`` real rows (:func:`calibration_rows`).
        int8: the engines to build int8 files for.

    Raises:
        ExportError: an fp32 file or the folded weights disagree with torch; an int8 file
            fails its gate and ``fail_on_gate``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = BuiltScorer()
    reference = torch_logits(model, sets, vectors)

    def check_fp32(key: str, logits: np.ndarray) -> ScorerParity:
        report = scorer_parity(reference, logits, sets, k)
        if not report.max_abs_diff <= FP32_MAX_ABS_DIFF:
            raise ExportError(f"{key} disagrees with the torch scorer (max |logit difference| "
                              f"{report.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF}): a conversion "
                              "bug; please report it")
        built.parity[key] = report
        log(f"  {key}: {report}")
        return report

    weights = model.to_weights()
    npz = out_dir / "scorer.fp32.npz"
    weights.save(npz)
    check_fp32("scorer/folded/fp32", folded_logits(MlpWeights.from_npz(npz.read_bytes()),
                                                   sets, vectors))
    built.weights.append(NewWeights(npz, Role.SCORER, Precision.FP32, MLP_WEIGHTS_FORMAT))
    built.sizes["scorer/weights/fp32"] = npz.stat().st_size
    for engine, convert in ((Engine.ONNX, scorer_to_onnx), (Engine.TFLITE, scorer_to_tflite)):
        path = convert(model, out_dir / f"scorer.fp32{engine.suffix}")
        art = _describe(path, Precision.FP32)
        check_fp32(art.key, scorer_logits(path, sets, vectors))
        built.artifacts.append(art)
        built.sizes[art.key] = path.stat().st_size

    fp32_onnx = out_dir / "scorer.fp32.onnx"
    ladders = {
        Engine.ONNX: (onnx_ladder(), lambda r: quantize_scorer_onnx(
            fp32_onnx, out_dir / f"int8-{r.name}.onnx", calibration, r.options)),
        Engine.TFLITE: (tflite_ladder(), lambda r: quantize_scorer_tflite(
            model, out_dir / f"int8-{r.name}.tflite", calibration, r.options)),
    }
    for engine in int8:
        remedies, quantize = ladders[Engine(engine)]
        name, key = f"scorer.int8{engine.suffix}", f"scorer/{engine.value}/int8"
        log(f"quantizing {name} ...")
        try:
            result = quantize_with_ladder(
                remedies, quantize,
                lambda p: scorer_parity(reference, scorer_logits(p, sets, vectors), sets, k),
                gate, artifact=name)  # type: ignore[arg-type]  # duck-typed gate and report
        except ExportError as exc:
            if fail_on_gate:
                raise
            built.gate_failures[key] = str(exc)
            log(f"  left out: {exc}")
            continue
        final = out_dir / name
        result.artifact.replace(final)
        built.quantization[key] = result.to_dict()
        built.parity[key] = result.report
        built.artifacts.append(_describe(final, Precision.INT8))
        built.sizes[key] = final.stat().st_size
        log(f"  {key}: {result.report} (remedy {result.remedy!r})")
    return built
