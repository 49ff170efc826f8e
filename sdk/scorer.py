"""The MLP scorer on the device: re-rank a user's candidates with a bundle's scorer.

The contract the export (:mod:`edgerec.export.scorer.bundle`) meets:

- artifacts with role ``scorer`` take one float32 input ``(C, 3*D)``: for a user vector ``u``
  (unit L2 norm, :func:`edgerec.sdk.profile.user_vector`) and ``C`` candidate item vectors ``v``
  (as stored in the catalog), each row is ``[u, v, u*v]`` (``D`` = the bundle's
  ``embedding_dim``); the output (named by the artifact's ``output``) is ``(C, 1)`` (or
  ``(C,)``) logits, higher = more likely to engage;
- optionally, the same fp32 network as a plain-array weights file (manifest ``weights``, format
  :data:`MLP_WEIGHTS_FORMAT`, an ``.npz`` read with ``allow_pickle=False`` from bytes whose
  sha256 was checked): :class:`MlpWeights`.

With the weights file the first layer folds into one matrix product per query (the "folded"
path, numpy only, no engine)::

    W x + b = W_u u + b + (W_v + W_uv diag(u)) v      for x = [u, v, u*v]
    H = V (W_v + W_uv * u)^T + (W_u u + b)              (C, H1): one GEMM over the candidates

then ReLU and the remaining small dense layers in numpy, plus a linear "skip" path (the same
fold, one more row) that carries the model's inner-product prior straight to the logit.
:meth:`Scorer.create_from_bundle` takes the folded path when the bundle has the weights and no
engine or int8 precision was asked for (it is faster than either engine for C in the hundreds;
see ``benchmarks/results/scorer_latency.md``); ``mode`` forces one or the other.

Threads: the folded path runs on numpy's BLAS, which may split a GEMM this small over all cores;
on a small or busy device that is slower, not faster. Start the app with
``OPENBLAS_NUM_THREADS=1`` (or ``OMP_NUM_THREADS=1``) unless a measurement says otherwise.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from edgerec.runtimes import Engine, RuntimeOptions, available_engines, open_runtime
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import (
    MLP_WEIGHTS_FORMAT,
    ArtifactSpec,
    Precision,
    Role,
    WeightsSpec,
    read_numeric_npz,
)
from edgerec.sdk.errors import (
    ArtifactNotFoundError,
    InferenceError,
    ModelError,
    RuntimeUnavailableError,
)

__all__ = ["MlpWeights", "Scorer", "ScorerMode", "ScorerOptions"]



class ScorerMode(str, enum.Enum):
    """How :class:`Scorer` computes logits."""

    AUTO = "auto"  # folded when the bundle has the fp32 weights and fp32 is wanted, else engine
    FOLDED = "folded"  # numpy, first layer folded into one GEMM per query (needs the weights)
    ENGINE = "engine"  # the scorer artifact on ONNX Runtime or LiteRT


@dataclass(frozen=True)
class ScorerOptions:
    """How to run a bundle's scorer.

    Attributes:
        mode: :class:`ScorerMode`. ``auto``: the folded numpy path when the bundle has the
            fp32 weights and neither an ``engine`` nor int8 ``precision`` is asked for (it is
            faster than either engine for C in the hundreds; see
            ``benchmarks/results/scorer_latency.md``), else an engine artifact; ``folded`` /
            ``engine`` force one.
        engine: the engine of the artifact (None: the first installed the bundle has).
        precision: ``fp32``/``int8`` of the artifact (None: fp32 first).
        num_threads: engine threads (numpy's folded path uses its BLAS's threads).
    """

    mode: ScorerMode = ScorerMode.AUTO
    engine: Optional[Engine] = None
    precision: Optional[Precision] = None
    num_threads: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ScorerMode(self.mode))
        if self.engine is not None:
            object.__setattr__(self, "engine", Engine(self.engine))
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision(self.precision))
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")


def _f32(name: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind != "f" or a.shape != shape or not np.all(np.isfinite(a)):
        raise ModelError(
            f"scorer weights {name!r} must be finite float {shape}, got {a.dtype} {a.shape}; "
            "export the scorer again"
        )
    return np.ascontiguousarray(a, dtype=np.float32)


@dataclass(frozen=True)
class MlpWeights:
    """The scorer network, first layer split by input block (standardisation folded in).

    ``logit(x) = skip(x) + dense_L(relu(... dense_1(relu(first(x)))))`` for ``x = [u, v, u*v]``.

    Attributes:
        first_u, first_v, first_uv: float32 ``(H1, D)``, the first dense layer's columns for
            ``u``, ``v`` and ``u*v``.
        first_b: float32 ``(H1,)``.
        skip_u, skip_v, skip_uv: float32 ``(D,)``, the linear path straight to the logit.
        skip_b: float32 ``()``.
        dense: ``((W, b), ...)`` the layers after the first (ReLU before each), ``W`` float32
            ``(H_next, H_prev)``; the last maps to one output.
    """

    first_u: np.ndarray
    first_v: np.ndarray
    first_uv: np.ndarray
    first_b: np.ndarray
    skip_u: np.ndarray
    skip_v: np.ndarray
    skip_uv: np.ndarray
    skip_b: np.ndarray
    dense: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def dim(self) -> int:
        return int(self.first_u.shape[1])

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> MlpWeights:
        """Validate named arrays (as in the ``.npz``); raises :class:`ModelError`."""
        try:
            hidden, dim = np.shape(arrays["first_u"])
            n = sum(1 for k in arrays if k.startswith("dense_") and k.endswith("_w"))
            first = [_f32(k, arrays[k], (hidden, dim)) for k in ("first_u", "first_v", "first_uv")]
            skip = [_f32(k, arrays[k], (dim,)) for k in ("skip_u", "skip_v", "skip_uv")]
            first_b = _f32("first_b", arrays["first_b"], (hidden,))
            skip_b = _f32("skip_b", arrays["skip_b"], ())
            dense, width = [], hidden
            for i in range(n):
                w = np.asarray(arrays[f"dense_{i}_w"])
                out = 1 if i == n - 1 else (w.shape[0] if w.ndim == 2 else -1)
                dense.append((_f32(f"dense_{i}_w", w, (out, width)),
                              _f32(f"dense_{i}_b", arrays[f"dense_{i}_b"], (out,))))
                width = out
        except KeyError as exc:
            raise ModelError(f"scorer weights lack the array {exc}; export the scorer again") \
                from None
        except ValueError as exc:
            raise ModelError(f"scorer weights are malformed ({exc}); export the scorer again") \
                from None
        if not dense:
            raise ModelError("scorer weights hold no dense_0_w: export the scorer again")
        return cls(*first, first_b, *skip, skip_b, tuple(dense))

    @classmethod
    def from_npz(cls, data: bytes) -> MlpWeights:
        """Parse ``.npz`` bytes (``allow_pickle=False``: object arrays are refused)."""
        return cls.from_arrays(read_numeric_npz(data, "scorer weights", "export the scorer again"))

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"first_u": self.first_u, "first_v": self.first_v, "first_uv": self.first_uv,
               "first_b": self.first_b, "skip_u": self.skip_u, "skip_v": self.skip_v,
               "skip_uv": self.skip_uv, "skip_b": self.skip_b}
        for i, (w, b) in enumerate(self.dense):
            out[f"dense_{i}_w"], out[f"dense_{i}_b"] = w, b
        return out

    def folded(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """The device's folded path: ``f(u, V) -> (C,)`` float32 logits for a float32 ``(D,)``
        user vector and ``(C, D)`` item vectors (no shape checks: see :meth:`Scorer.score`)."""
        return _Folded(self)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the ``.npz`` (uncompressed; numeric arrays only)."""
        with open(path, "wb") as f:
            np.savez(f, **{k: np.asarray(v, np.float32) for k, v in self.to_arrays().items()})


class _Folded:
    """The numpy fast path over :class:`MlpWeights` (see the module docstring)."""

    def __init__(self, w: MlpWeights) -> None:
        self.first_v, self.first_uv, self.first_u = w.first_v, w.first_uv, w.first_u
        self.first_b = w.first_b
        self.skip_v, self.skip_uv, self.skip_u = w.skip_v, w.skip_uv, w.skip_u
        self.skip_b = np.float32(w.skip_b)
        self.dense = [(np.ascontiguousarray(wt.T), b) for wt, b in w.dense]  # (H_prev, H_next)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a = self.first_v + self.first_uv * u  # (H1, D): W_v + W_uv diag(u)
        h = v @ a.T  # (C, H1): the one GEMM over the candidates
        h += self.first_u @ u + self.first_b
        np.maximum(h, 0.0, out=h)
        skip = v @ (self.skip_v + self.skip_uv * u)  # (C,): the skip path, folded alike
        skip += self.skip_u @ u + self.skip_b
        x = h
        for i, (wt, b) in enumerate(self.dense):
            if i:
                np.maximum(x, 0.0, out=x)
            x = x @ wt
            x += b
        return x[:, 0] + skip


class Scorer:
    """A bundle's scorer, folded in numpy or on an engine. Create with
    :meth:`create_from_bundle`; ``artifact`` is the engine artifact (None when folded)."""

    def __init__(self, token: object, bundle: Bundle, artifact: Optional[ArtifactSpec],
                 options: RuntimeOptions, weights: Optional[WeightsSpec] = None) -> None:
        if token is not _TOKEN:
            raise TypeError("use Scorer.create_from_bundle or create_from_bundle_path")
        dim = bundle.embedding_dim
        self.bundle = bundle
        self.artifact = artifact
        self.weights = weights
        self._runtime = None
        self._folded: Optional[_Folded] = None
        self._closed = False
        if weights is not None:
            if weights.format != MLP_WEIGHTS_FORMAT:
                raise ModelError(
                    f"scorer weights {weights.file} are format {weights.format!r}; this edgerec "
                    f"reads {MLP_WEIGHTS_FORMAT!r}: upgrade edgerec or use mode='engine'"
                )
            mlp = MlpWeights.from_npz(bundle.read_weights(weights))
            if mlp.dim != dim:
                raise ModelError(f"scorer weights {weights.file} are for {mlp.dim}-d vectors; "
                                 f"the bundle's are {dim}-d: export the scorer again")
            self._folded = _Folded(mlp)
            return
        if artifact is None:
            raise TypeError("a Scorer needs an engine artifact or a weights file")
        if len(artifact.inputs) != 1 or artifact.inputs[0].shape[-1:] != (3 * dim,):
            shapes = [t.shape for t in artifact.inputs]
            raise ModelError(
                f"scorer {artifact.file} takes inputs {shapes}; a scorer for {dim}-d vectors "
                f"takes one (C, {3 * dim}) input [u, v, u*v]: export the scorer again"
            )
        self._input = artifact.inputs[0].name
        self._runtime = open_runtime(bundle.read_artifact(artifact), artifact.engine, options,
                                     name=artifact.file)  # the very bytes whose sha256 matched
        names = ([s.name for s in self._runtime.input_specs()],
                 [s.name for s in self._runtime.output_specs()])
        if names[0] != [self._input] or artifact.output not in names[1]:
            self._runtime.close()
            raise ModelError(f"scorer {artifact.file} takes {names[0]} and gives {names[1]}, "
                             f"but the manifest lists {self._input!r} and {artifact.output!r}: "
                             "export the scorer again")

    @classmethod
    def create_from_bundle(cls, bundle: Bundle,
                           options: Optional[ScorerOptions] = None) -> Scorer:
        """Open the bundle's scorer as ``options`` ask (see :class:`ScorerOptions`).

        Raises:
            ArtifactNotFoundError: no scorer (weights) for that mode/engine/precision.
            RuntimeUnavailableError: the engine path is needed and no engine is installed.
            BundleIntegrityError: the weights file does not match its sha256.
            ModelError: the scorer does not take ``[u, v, u*v]`` rows of this bundle's size.
        """
        options = options or ScorerOptions()
        mode, engine, precision = options.mode, options.engine, options.precision
        weights = next(iter(bundle.weights(Role.SCORER)), None)
        fp32 = precision in (None, Precision.FP32)
        runtime = RuntimeOptions(num_threads=options.num_threads)
        if mode is ScorerMode.FOLDED or (mode is ScorerMode.AUTO and weights is not None
                                         and engine is None and fp32):
            if weights is None or not fp32 or weights.precision is not Precision.FP32:
                have = ", ".join(w.key for w in bundle.weights()) or "no weights file"
                raise ArtifactNotFoundError(
                    f"bundle {bundle.path} has no fp32 scorer weights for the folded path (it "
                    f"has {have}); use mode='engine', or add a scorer with `edgerec scorer train`"
                )
            return cls(_TOKEN, bundle, None, runtime, weights)
        engines = available_engines() if engine is None else [engine]
        if not engines:
            raise RuntimeUnavailableError(
                "No inference engine is installed; `pip install edgerec[onnx]` or "
                "`pip install edgerec[tflite]`."
            )
        artifact = bundle.select(Role.SCORER, engine, precision, engines)
        return cls(_TOKEN, bundle, artifact, runtime)

    @classmethod
    def create_from_bundle_path(cls, path: Union[str, os.PathLike],
                                options: Optional[ScorerOptions] = None) -> Scorer:
        """Open (and verify) the bundle at ``path``, then :meth:`create_from_bundle`."""
        return cls.create_from_bundle(Bundle.open(path), options)

    @property
    def mode(self) -> ScorerMode:
        """FOLDED or ENGINE: the path this scorer takes."""
        return ScorerMode.FOLDED if self._folded is not None else ScorerMode.ENGINE

    @property
    def key(self) -> str:
        """What scores, e.g. ``scorer/folded/fp32`` or ``scorer/onnx/int8``."""
        return "scorer/folded/fp32" if self.artifact is None else self.artifact.key

    def score(self, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Logits ``(C,)`` float32 for user vector ``user`` ``(D,)`` and items ``(C, D)``.

        Raises:
            InferenceError: wrong shapes, non-finite input, or the engine failed.
        """
        u = np.asarray(user, dtype=np.float32).reshape(-1)
        v = np.asarray(items, dtype=np.float32)
        dim = self.bundle.embedding_dim
        if u.shape != (dim,) or v.ndim != 2 or v.shape[1] != dim:
            raise InferenceError(
                f"score() takes a ({dim},) user vector and (C, {dim}) item vectors, got "
                f"{u.shape} and {v.shape}"
            )
        if self._closed:
            raise InferenceError("this scorer is closed; create it again")
        if self._folded is not None:
            if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))):
                raise InferenceError("score() got non-finite (NaN or inf) vectors")
            return self._folded(u, v)
        x = np.concatenate([np.broadcast_to(u, v.shape), v, v * u], axis=1)
        out = self._runtime.run({self._input: x})[self.artifact.output]
        if out.shape not in ((v.shape[0], 1), (v.shape[0],)):
            raise InferenceError(
                f"scorer {self.artifact.file} returned shape {out.shape} for {v.shape[0]} "
                f"candidates; a scorer returns ({v.shape[0]}, 1) logits: export it again"
            )
        return out.reshape(-1).astype(np.float32, copy=False)

    def close(self) -> None:
        """Release the engine (or the weights); idempotent."""
        self._closed = True
        if self._runtime is not None:
            self._runtime.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scorer({self.key}, dim={self.bundle.embedding_dim})"


_TOKEN = object()
