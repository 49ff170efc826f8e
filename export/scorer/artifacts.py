"""The scorer's bundle files: fp32 and int8 ONNX and TFLite, the folded weights, parity gates.

Every file is compared with the torch model on real candidate sets: for each validation user,
the top ``C`` catalog items by ``u . v`` (their history left out), which is what the device's
recommender hands the scorer (:func:`parity_sets`). :class:`ScorerParity` measures the logits'
largest difference, the top-k overlap and the rank (Spearman) correlation per user, and NDCG@k
of the re-ranked candidates against the held-out items, for the candidate and the reference.

- fp32 ONNX / TFLite and the folded ``.npz`` must match torch (largest logit difference
  <= :data:`FP32_MAX_ABS_DIFF`), else the export fails: a conversion bug.
- int8 files climb :func:`onnx_remedies` / :func:`tflite_remedies`
  (:func:`~edgerec.export.artifacts.ladder.quantize_with_ladder`) until they pass
  :class:`ScorerGate`; a file that never passes is left out and the reason recorded
  (``fail_on_gate``: the export fails instead).

The files are built by the shared driver (:func:`~edgerec.export.artifacts.build.build_model_files`)
with float32 ``(C, 3D)`` input ``rows`` and ``(C, 1)`` output ``logits``. Both engines keep
float32 input and output, and three small parts of the network always stay float
(:data:`FLOAT_LAYERS`): the standardisation at the start, so that the first quantized tensor is
the standardised rows, where ``u``, ``v`` and ``u*v`` have comparable ranges (quantizing the
raw ``u*v`` block, ~1e-2, on the scale of ``u`` would erase it); and the output layer and the
skip path, because an 8-bit logit has 256 levels for the whole score range, too coarse to order
200 close candidates. They are ~1/50 of the compute. ONNX quantizes only the Gemm/MatMul
nodes, with the activation type and weight range of the quantization target (as the encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from edgerec.export.artifacts.build import BuiltFiles, build_model_files
from edgerec.export.artifacts.calibration import Calibration
from edgerec.export.artifacts.convert import ModelIO
from edgerec.export.artifacts.ladder import Remedy, remedies_from
from edgerec.export.artifacts.quantize_onnx import OnnxQuantOptions, QuantTarget
from edgerec.export.artifacts.quantize_tflite import TfliteQuantOptions
from edgerec.export.errors import ExportError
from edgerec.export.scorer.data import (
    Examples,
    RankingSet,
    device_candidates,
    hits_at_k,
    mean_ndcg,
)
from edgerec.export.scorer.train import ScorerNet
from edgerec.runtimes import Engine, RuntimeOptions, open_runtime
from edgerec.sdk import Precision, Role
from edgerec.sdk.bundle.writer import NewWeights
from edgerec.sdk.scorer import MLP_WEIGHTS_FORMAT, MlpWeights

__all__ = [
    "CALIBRATION_BATCH",
    "FIRST_LAYERS",
    "FLOAT_LAYERS",
    "FP32_MAX_ABS_DIFF",
    "BuiltScorer",
    "ParitySets",
    "ScorerGate",
    "ScorerParity",
    "build_scorer_artifacts",
    "calibration_rows",
    "folded_logits",
    "onnx_remedies",
    "parity_sets",
    "scorer_logits",
    "scorer_parity",
    "tflite_remedies",
    "torch_logits",
]

FP32_MAX_ABS_DIFF = 1e-3  # logits; fp32 files agree with torch to ~1e-5 in practice
FLOAT_LAYERS = ("standardize", "head", "skip")  # float in every rung (module docstring)
FIRST_LAYERS = ("deep.0", *FLOAT_LAYERS)  # the first hidden block too, in the last rung
CALIBRATION_BATCH = 512  # rows per calibration batch


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
                candidates: int = 500, max_users: int = 300, seed: int = 0) -> ParitySets:
    """The device's candidate sets (:func:`~.data.device_candidates`, C = ``candidates``) of up
    to ``max_users`` validation users (their ``seen`` items left out); without validation users,
    of training examples' leave-one-out vectors (no NDCG then)."""
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
    if min(c, len(vectors) - max((len(s) for s in seen), default=0)) < 1:
        raise ExportError("every catalog item is in the users' histories: no candidates to score")
    top = device_candidates(u, seen, vectors, c)
    return ParitySets(u.astype(np.float32), top, ranking)


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
    """What an int8 scorer must reach against torch fp32 (a
    :class:`~edgerec.export.artifacts.ladder.Gate` over :class:`ScorerParity`); ``None``
    skips a check.

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


def onnx_remedies(target: Union[QuantTarget, str] = QuantTarget.X86_AVX2) -> list[Remedy]:
    """minmax -> percentile -> first layer kept float too (percentile): Gemm/MatMul nodes
    only, with ``target``'s activation type and weight range; the standardisation, the output
    layer and the skip path always stay float (:data:`FLOAT_LAYERS`)."""
    base = OnnxQuantOptions(target=QuantTarget(target), keep_float=FLOAT_LAYERS,
                            op_types=("Gemm", "MatMul"))
    return remedies_from(base, [
        ("minmax", {"calibration": Calibration.MINMAX}),
        ("percentile", {"calibration": Calibration.PERCENTILE}),
        ("keep_first_float", {"calibration": Calibration.PERCENTILE,
                              "keep_float": FIRST_LAYERS}),
    ])


def tflite_remedies() -> list[Remedy]:
    """histogram -> minmax -> first layer kept float too (histogram); the standardisation,
    the output layer and the skip path always stay float (:data:`FLOAT_LAYERS`)."""
    return remedies_from(TfliteQuantOptions(keep_float=FLOAT_LAYERS), [
        ("histogram", {"calibration": Calibration.HISTOGRAM}),
        ("minmax", {"calibration": Calibration.MINMAX}),
        ("keep_first_float", {"calibration": Calibration.HISTOGRAM,
                              "keep_float": FIRST_LAYERS}),
    ])


@dataclass
class BuiltScorer(BuiltFiles):
    """The scorer's bundle files and what was measured on the way
    (:class:`~edgerec.export.artifacts.build.BuiltFiles`), with the folded weights."""

    weights: list[NewWeights] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """JSON-ready ``parity``, ``quantization``, ``gate_failures`` and ``sizes``."""
        return {"parity": {k: v.to_dict() for k, v in self.parity.items()},
                "quantization": self.ladder_records, "gate_failures": self.gate_failures,
                "sizes": self.sizes}


def _folded(model: ScorerNet, out_dir: Path, check: Callable[[str, np.ndarray], ScorerParity],
            sets: ParitySets, vectors: np.ndarray) -> tuple[NewWeights, ScorerParity]:
    """Write the folded weights ``scorer.fp32.npz`` and check them against torch."""
    npz = out_dir / "scorer.fp32.npz"
    model.to_weights().save(npz)
    report = check("scorer/folded/fp32", folded_logits(MlpWeights.from_npz(npz.read_bytes()),
                                                       sets, vectors))
    return NewWeights(npz, Role.SCORER, Precision.FP32, MLP_WEIGHTS_FORMAT), report


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
    target: Union[QuantTarget, str] = QuantTarget.X86_AVX2,
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
        target: the CPU family the int8 ONNX file is made for (:class:`QuantTarget`).

    Raises:
        ExportError: an fp32 file or the folded weights disagree with torch; an int8 file
            fails its gate and ``fail_on_gate``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = torch_logits(model, sets, vectors)

    def check(key: str, logits: np.ndarray) -> ScorerParity:
        report = scorer_parity(reference, logits, sets, k)
        if not report.max_abs_diff <= FP32_MAX_ABS_DIFF:
            raise ExportError(f"{key} disagrees with the torch scorer (max |logit difference| "
                              f"{report.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF}): a conversion "
                              "bug; please report it")
        return report

    weights, folded = _folded(model, out_dir, check, sets, vectors)
    log(f"  scorer/folded/fp32: {folded}")
    ladders = {Engine.ONNX: onnx_remedies(target), Engine.TFLITE: tflite_remedies()}
    files = build_model_files(
        model, out_dir, role=Role.SCORER, io=ModelIO.rows(3 * model.dim),
        check_fp32=lambda art: check(art.key, scorer_logits(art.source, sets, vectors)),
        evaluate=lambda p: scorer_parity(reference, scorer_logits(p, sets, vectors), sets, k),
        gate=gate, ladders={Engine(e): ladders[Engine(e)] for e in int8},
        calibration=[calibration[i : i + CALIBRATION_BATCH]
                     for i in range(0, len(calibration), CALIBRATION_BATCH)],
        fail_on_gate=fail_on_gate, log=log)
    return BuiltScorer(
        artifacts=files.artifacts, parity={"scorer/folded/fp32": folded, **files.parity},
        ladder_records=files.ladder_records, gate_failures=files.gate_failures,
        sizes={"scorer/weights/fp32": weights.source.stat().st_size, **files.sizes},
        weights=[weights])
