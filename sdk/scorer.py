"""The MLP scorer seam: re-rank a user's candidates with a bundle's ``scorer`` artifact.

This is the device side of the contract that the scorer export (issue 5) must meet; it is kept
to the minimum the recommender needs, and only these points are fixed here:

- the artifact has role ``scorer`` in the manifest, one input and the output named by its
  ``output`` field;
- the input is float32 ``(C, 3*D)``: for a user vector ``u`` (unit L2 norm, see
  :func:`edgerec.sdk.profile.user_vector`) and ``C`` candidate item vectors ``v`` (as stored in
  the catalog), each row is ``[u, v, u*v]`` (``D`` = the bundle's ``embedding_dim``);
- the output is ``(C, 1)`` (or ``(C,)``) logits; higher means more likely to engage.

Everything else (hidden sizes, int8, folding the first layer into one GEMM per query as the
architecture notes suggest) is the export's business and may change this module's insides, not
its interface: ``Scorer.create_from_bundle(bundle) -> Scorer``, ``score(u, V) -> (C,)``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..runtimes import Engine, RuntimeOptions, available_engines, open_runtime
from .bundle import Bundle
from .errors import InferenceError, ModelError, RuntimeUnavailableError
from .manifest import ArtifactSpec, Precision, Role

__all__ = ["Scorer"]


class Scorer:
    """A bundle's scorer artifact on one engine. Create with :meth:`create_from_bundle`."""

    def __init__(self, bundle: Bundle, artifact: ArtifactSpec, options: RuntimeOptions) -> None:
        dim = bundle.embedding_dim
        if len(artifact.inputs) != 1 or artifact.inputs[0].shape[-1:] != (3 * dim,):
            shapes = [t.shape for t in artifact.inputs]
            raise ModelError(
                f"scorer {artifact.file} takes inputs {shapes}; a scorer for {dim}-d vectors "
                f"takes one (C, {3 * dim}) input [u, v, u*v]: export the scorer again"
            )
        self.bundle = bundle
        self.artifact = artifact
        self._input = artifact.inputs[0].name
        self._runtime = open_runtime(bundle.artifact_path(artifact), artifact.engine, options)

    @classmethod
    def create_from_bundle(
        cls,
        bundle: Bundle,
        *,
        engine: Optional[Engine] = None,
        precision: Optional[Precision] = None,
        num_threads: Optional[int] = None,
    ) -> Scorer:
        """Open the bundle's scorer (``engine``/``precision`` None: first installed, fp32 first).

        Raises:
            ArtifactNotFoundError: the bundle has no scorer for that engine/precision.
            RuntimeUnavailableError: no engine is installed.
            ModelError: the scorer's input does not take ``[u, v, u*v]`` rows.
        """
        engines = available_engines() if engine is None else [Engine(engine)]
        if not engines:
            raise RuntimeUnavailableError(
                "No inference engine is installed; `pip install edgerec[onnx]` or "
                "`pip install edgerec[tflite]`."
            )
        artifact = bundle.select(Role.SCORER, engine, precision, engines)
        return cls(bundle, artifact, RuntimeOptions(num_threads=num_threads))

    def score(self, user: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Logits ``(C,)`` float32 for user vector ``user`` ``(D,)`` and items ``(C, D)``."""
        u = np.asarray(user, dtype=np.float32).reshape(-1)
        v = np.asarray(items, dtype=np.float32)
        dim = self.bundle.embedding_dim
        if u.shape != (dim,) or v.ndim != 2 or v.shape[1] != dim:
            raise InferenceError(
                f"score() takes a ({dim},) user vector and (C, {dim}) item vectors, got "
                f"{u.shape} and {v.shape}"
            )
        x = np.concatenate([np.broadcast_to(u, v.shape), v, v * u], axis=1)
        out = self._runtime.run({self._input: x})[self.artifact.output]
        if out.shape not in ((v.shape[0], 1), (v.shape[0],)):
            raise InferenceError(
                f"scorer {self.artifact.file} returned shape {out.shape} for {v.shape[0]} "
                f"candidates; a scorer returns ({v.shape[0]}, 1) logits: export it again"
            )
        return out.reshape(-1).astype(np.float32, copy=False)

    def close(self) -> None:
        """Release the engine; idempotent."""
        self._runtime.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scorer({self.artifact.key}, dim={self.bundle.embedding_dim})"
