"""Reading and verifying bundles.

A bundle is a directory with ``manifest.json`` (the contract: :mod:`edgerec.sdk.bundle.manifest`)
and the model and weights files it lists. :meth:`Bundle.open` refuses a bundle whose files are
missing, do not match their sha256, or point outside the directory; :meth:`Bundle.read_weights`
re-checks the sha256 of the very bytes it returns. Bundles are written by
:func:`edgerec.sdk.bundle.writer.write_bundle`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from edgerec.runtimes import Engine
from edgerec.sdk.bundle.manifest import (
    MANIFEST_NAME,
    ArtifactSpec,
    Manifest,
    Precision,
    Preprocessing,
    Role,
    WeightsSpec,
)
from edgerec.sdk.errors import ArtifactNotFoundError, BundleError, BundleIntegrityError
from edgerec.sdk.files import sha256_file

__all__ = ["Bundle"]

PathLike = Union[str, os.PathLike]


class Bundle:
    """A loaded, verified bundle. Construct with :meth:`open`."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: PathLike, *, verify: bool = True) -> Bundle:
        """Read ``path/manifest.json`` and check every artifact.

        Args:
            path: the bundle directory.
            verify: also recompute every artifact's sha256 (a few ms per MB); existence and
                containment are always checked.

        Raises:
            BundleError: no such directory, no or malformed manifest, unknown format version.
            BundleIntegrityError: a listed file is missing, escapes the directory, or (with
                ``verify``) does not match its sha256.
        """
        root = Path(path)
        if not root.is_dir():
            raise BundleError(
                f"No bundle directory at {root}; pass the directory that holds manifest.json "
                "(create one with `edgerec bundle import` or `edgerec export`)."
            )
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(
                f"{root} has no {MANIFEST_NAME}: it is not a bundle, or its export did not "
                "finish; export it again."
            )
        manifest = Manifest.from_json(
            manifest_path.read_text(encoding="utf-8", errors="strict"), str(manifest_path)
        )
        bundle = cls(root, manifest)
        for spec in (*manifest.artifacts, *manifest.weights):
            bundle.artifact_path(spec)  # containment + existence
        if verify:
            bundle.verify()
        return bundle


    def artifact_path(self, spec: Union[ArtifactSpec, WeightsSpec]) -> Path:
        """Absolute path of an artifact (or weights file), checked to exist inside the bundle
        directory."""
        rel = Path(spec.file)
        if rel.is_absolute() or ".." in rel.parts or spec.file in ("", "."):
            raise BundleIntegrityError(
                f"Artifact {spec.key} names the file {spec.file!r}, which is outside the bundle; "
                "the manifest was tampered with: do not use this bundle."
            )
        root = self.path.resolve()
        full = (root / rel).resolve()
        if root not in full.parents:
            raise BundleIntegrityError(
                f"Artifact {spec.key} ({spec.file}) resolves to {full}, outside the bundle "
                f"{root} (a symlink?); copy the real file into the bundle."
            )
        if not full.is_file():
            raise BundleIntegrityError(
                f"Artifact {spec.key} is missing: {spec.file} is not in {self.path}; copy the "
                "whole bundle again or export it again."
            )
        return full

    def verify(self) -> None:
        """Recompute every artifact's and weights file's sha256; raise
        ``BundleIntegrityError`` on a mismatch."""
        for spec in (*self.manifest.artifacts, *self.manifest.weights):
            check_digest(spec, sha256_file(self.artifact_path(spec)))

    def weights(self, role: Optional[Role] = None) -> list[WeightsSpec]:
        """Weights files, optionally of one role."""
        return [w for w in self.manifest.weights if role is None or w.role is Role(role)]

    def read_weights(self, spec: WeightsSpec) -> bytes:
        """The bytes of a weights file, checked against its sha256 *as read* (so what the
        caller parses is exactly what the manifest lists, even if the file changed on disk
        after :meth:`open`).

        Raises:
            BundleIntegrityError: the file is missing, outside the bundle, or modified.
        """
        data = self.artifact_path(spec).read_bytes()
        check_digest(spec, hashlib.sha256(data).hexdigest())
        return data

    @property
    def embedding_dim(self) -> int:
        return self.manifest.embedding_dim

    @property
    def encoder_id(self) -> str:
        return self.manifest.encoder_id

    @property
    def preprocessing(self) -> Preprocessing:
        return self.manifest.preprocessing

    def artifacts(self, role: Optional[Role] = None) -> list[ArtifactSpec]:
        """Artifacts, optionally of one role."""
        return [a for a in self.manifest.artifacts if role is None or a.role is Role(role)]

    def has(self, role: Role) -> bool:
        return bool(self.artifacts(role))

    def select(
        self,
        role: Role,
        engine: Optional[Engine] = None,
        precision: Optional[Precision] = None,
        engines: Sequence[Engine] = tuple(Engine),
    ) -> ArtifactSpec:
        """Pick one artifact.

        ``engine``/``precision`` of ``None`` mean "any": among the matches, engines are tried in
        the order of ``engines`` (pass the installed ones) and fp32 comes before int8 (on CPUs
        without int8 dot-product instructions fp32 is faster; see the README's latency table).

        Raises:
            ArtifactNotFoundError: nothing matches; the message lists what the bundle has.
        """
        role = Role(role)
        engine = Engine(engine) if engine is not None else None
        precision = Precision(precision) if precision is not None else None
        order = list(engines) if engine is None else [engine]
        matches = [
            a
            for a in self.artifacts(role)
            if a.engine in order and (precision is None or a.precision is precision)
        ]
        if not matches:
            have = ", ".join(a.key for a in self.manifest.artifacts) or "nothing"
            want = f"{role.value}/{engine.value if engine else '*'}/"
            want += precision.value if precision else "*"
            installed = "" if engine else f" among installed engines {[e.value for e in order]}"
            raise ArtifactNotFoundError(
                f"Bundle {self.path} has no {want} artifact{installed}; it has: {have}. Choose "
                "one of those (or install its engine), or export the bundle with it."
            )
        precisions = list(Precision)
        return min(matches, key=lambda a: (order.index(a.engine), precisions.index(a.precision)))

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``edgerec bundle info`` prints)."""
        m = self.manifest
        return {
            "path": str(self.path),
            "name": m.name,
            "format_version": m.format_version,
            "embedding_dim": m.embedding_dim,
            "encoder_id": m.encoder_id,
            "preprocessing": m.preprocessing.to_dict(),
            "artifacts": [
                {
                    "key": a.key,
                    "file": a.file,
                    "size_bytes": a.size_bytes,
                    "layout": a.layout.value if a.layout else None,
                    "input": a.inputs[0].to_dict() if a.inputs else None,
                    "output": a.output,
                }
                for a in m.artifacts
            ],
            "weights": [w.to_dict() for w in m.weights],
            "teacher": m.teacher,
            "metrics": m.metrics,
            "recipe": m.recipe,
            "created": m.created,
            "edgerec_version": m.edgerec_version,
        }

    def __repr__(self) -> str:
        keys = ", ".join(a.key for a in self.manifest.artifacts)
        return f"Bundle({str(self.path)!r}, dim={self.embedding_dim}, artifacts=[{keys}])"



def check_digest(spec: Union[ArtifactSpec, WeightsSpec], digest: str) -> None:
    if digest != spec.sha256:
        what = "Artifact" if isinstance(spec, ArtifactSpec) else "Weights file"
        raise BundleIntegrityError(
            f"{what} {spec.file} does not match its sha256 in the manifest (expected "
            f"{spec.sha256[:16]}..., got {digest[:16]}...): it was modified or damaged; "
            "copy the bundle again or export it again."
        )
