"""How closely one encoder's embeddings follow another's on the same images.

:func:`parity` compares a candidate (an int8 or converted artifact) with a reference (the
torch fp32 student) row by row: cosine per image, how many of each image's nearest neighbours
survive, and, given labels, same-label retrieval quality of both. :func:`neighbour_overlap` is that
neighbour count alone, for two embeddings of any dimensions (the export's label-free quality
measure: a student's top-k neighbours against the teacher's). :func:`artifact_embeddings` and
:func:`torch_embeddings` produce the (N, D) arrays it compares from NCHW image batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Optional, Union

import numpy as np
from edgerec.runtimes import RuntimeOptions, open_runtime
from edgerec.sdk.encoder import l2_normalize
from edgerec.sdk.evaluation.retrieval import label_retrieval

__all__ = [
    "ParityReport",
    "artifact_embeddings",
    "neighbour_overlap",
    "parity",
    "torch_embeddings",
]


@dataclass(frozen=True)
class ParityReport:
    """Candidate vs reference embeddings of the same ``n`` images (rows L2-normalised first).

    Attributes:
        n: number of images.
        k: neighbours per query for the overlap and mAP.
        cosine_mean: mean over images of cos(reference_i, candidate_i).
        cosine_min: the worst image's cosine.
        neighbour_overlap: mean over queries of |top-k(reference) ∩ top-k(candidate)| / k, each
            top-k taken among the other n - 1 images in its own space.
        map_reference: same-label mAP@k of the reference (``None`` without labels).
        map_candidate: same-label mAP@k of the candidate (``None`` without labels).
        map_ratio: ``map_candidate / map_reference`` (``None`` without labels or when the
            reference mAP is 0).
    """

    n: int
    k: int
    cosine_mean: float
    cosine_min: float
    neighbour_overlap: float
    map_reference: Optional[float] = None
    map_candidate: Optional[float] = None
    map_ratio: Optional[float] = None

    def to_dict(self) -> dict:
        """JSON-ready form (for the bundle manifest's ``metrics``)."""
        return asdict(self)

    def __repr__(self) -> str:
        text = (f"ParityReport(n={self.n}, cosine mean={self.cosine_mean:.4f} "
                f"min={self.cosine_min:.4f}, top-{self.k} overlap={self.neighbour_overlap:.3f}")
        if self.map_ratio is not None:
            text += (f", mAP@{self.k} {self.map_candidate:.3f}/{self.map_reference:.3f}"
                     f"={self.map_ratio:.3f}")
        return text + ")"


def _neighbour_rows(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k nearest other rows by inner product, (N, k), order not kept."""
    top = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), 1024):
        sims = x[start : start + 1024] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        top[start : start + 1024] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return top


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean over the N images of |top-k(reference) ∩ top-k(candidate)| / k.

    Each image's top-k are the k other images (of the same N) with the largest inner product
    in that space, after L2-normalising the rows; the two spaces may have different
    dimensions (``reference`` (N, D1), ``candidate`` (N, D2)). ``k`` is capped at N - 1;
    by chance alone the overlap is about k / (N - 1).

    Raises:
        ValueError: fewer than two images, different N, or ``k`` < 1.
    """
    ref = l2_normalize(np.asarray(reference, dtype=np.float32))
    cand = l2_normalize(np.asarray(candidate, dtype=np.float32))
    if ref.ndim != 2 or cand.ndim != 2 or len(ref) != len(cand):
        raise ValueError(f"reference and candidate must be (N, D) arrays of the same N, got "
                         f"{ref.shape} and {cand.shape}.")
    if len(ref) < 2:
        raise ValueError("neighbour_overlap needs at least two images (neighbours are other "
                         "images).")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    k = min(k, len(ref) - 1)
    top_ref = np.sort(_neighbour_rows(ref, k), axis=1)
    top_cand = np.sort(_neighbour_rows(cand, k), axis=1)
    return float(np.mean([len(np.intersect1d(a, b, assume_unique=True))
                          for a, b in zip(top_ref, top_cand)]) / k)


def parity(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: Optional[Sequence] = None,
    k: int = 10,
) -> ParityReport:
    """Compare ``candidate`` (N, D) embeddings with ``reference`` (N, D) ones, row i = image i.

    Rows are L2-normalised here, so raw (un-normalised) model outputs can be passed. ``k`` is
    capped at N - 1. ``labels`` (N) adds same-label mAP@k (:func:`edgerec.sdk.label_retrieval`)
    of both and their ratio.
    """
    ref = l2_normalize(np.asarray(reference, dtype=np.float32))
    cand = l2_normalize(np.asarray(candidate, dtype=np.float32))
    if ref.ndim != 2 or ref.shape != cand.shape:
        raise ValueError(
            f"reference and candidate must be (N, D) arrays of one shape, got {ref.shape} "
            f"and {cand.shape}."
        )
    n = len(ref)
    if n < 2:
        raise ValueError("parity needs at least two images (neighbours are other images).")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    k = min(k, n - 1)
    cosines = (ref * cand).sum(axis=1)
    overlap = neighbour_overlap(ref, cand, k)
    map_ref = map_cand = ratio = None
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} embeddings.")
        map_ref = label_retrieval(ref, labels, k).map_at_k
        map_cand = label_retrieval(cand, labels, k).map_at_k
        ratio = map_cand / map_ref if map_ref > 0 else None
    return ParityReport(
        n=n,
        k=k,
        cosine_mean=float(cosines.mean()),
        cosine_min=float(cosines.min()),
        neighbour_overlap=float(overlap),
        map_reference=map_ref,
        map_candidate=map_cand,
        map_ratio=ratio,
    )


def artifact_embeddings(
    path: Union[str, os.PathLike],
    images: np.ndarray,
    *,
    batch_size: int = 32,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    """Run a ``.onnx``/``.tflite`` encoder over NCHW float32 ``images`` (N, 3, S, S).

    The batch goes through :func:`edgerec.runtimes.open_runtime` (which quantizes inputs and
    dequantizes outputs of int8 models itself); NHWC models (input shape ``(…, S, S, 3)``) get
    the images transposed. Returns the raw (N, D) float32 outputs, not normalised.
    """
    images = np.asarray(images, dtype=np.float32)
    with open_runtime(path, options=RuntimeOptions(num_threads=num_threads)) as rt:
        spec = rt.input_specs()[0]
        nhwc = len(spec.shape) == 4 and spec.shape[-1] == 3 and spec.shape[1] != 3
        out_name = rt.output_specs()[0].name
        parts = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            if nhwc:
                batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
            out = rt.run({spec.name: batch})[out_name]
            parts.append(out.reshape(len(batch), -1))
    return np.concatenate(parts).astype(np.float32, copy=False)


def torch_embeddings(model, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Run a torch encoder (in eval mode, no grad) over NCHW float32 ``images``; (N, D) float32.

    The model's train/eval mode is restored afterwards.
    """
    import torch

    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size],
                                                              dtype=np.float32))
                parts.append(model(batch).reshape(len(batch), -1).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(parts).astype(np.float32, copy=False)
