"""Reading and verifying bundles.

A bundle is a directory with ``manifest.json`` (the contract: :mod:`edgerec.sdk.bundle.manifest`)
and the model and weights files it lists. :meth:`Bundle.open` refuses a bundle whose files are
missing, do not match their sha256, or point outside the directory, whose manifest is larger
than :data:`MAX_MANIFEST_BYTES`, whose ``encoder_id`` is not the one its contents give, or whose
artifacts could not run (an output the model lacks, no inputs, an absurd ``embedding_dim``).
:meth:`Bundle.read_artifact` and :meth:`Bundle.read_weights` re-check the sha256 of the very
bytes they return, and the engines are handed those bytes, so a file swapped after
:meth:`Bundle.open` is refused, never run. Bundles are written by
:func:`edgerec.sdk.bundle.writer.write_bundle`.
"""

from __future__ import annotations

import hashlib
import math
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
    compute_encoder_id,
)
from edgerec.sdk.errors import ArtifactNotFoundError, BundleError, BundleIntegrityError
from edgerec.sdk.files import sha256_file

__all__ = ["MAX_EMBEDDING_DIM", "MAX_MANIFEST_BYTES", "Bundle"]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""Largest ``manifest.json`` read (real ones are under 20 kB); larger raises ``BundleError``."""

MAX_EMBEDDING_DIM = 65_536
"""Largest ``embedding_dim`` accepted (a (N, D) float32 result is allocated from it)."""

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
            BundleError: no such directory, no, oversized or malformed manifest, unknown
                format version, artifacts an engine could not run as listed.
            BundleIntegrityError: a listed file is missing, escapes the directory or has a name
                no file system takes, ``encoder_id`` differs from the one recomputed from the
                preprocessing and the encoder files' hashes, or (with ``verify``) a file does
                not match its sha256.
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
        manifest = Manifest.from_json(_read_manifest(manifest_path), str(manifest_path))
        _check_usable(manifest, str(manifest_path))
        bundle = cls(root, manifest)
        for spec in bundle._listed():
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
        try:
            unusable = "\x00" in spec.file or any(len(os.fsencode(p)) > 255 for p in rel.parts)
        except UnicodeError:  # a lone surrogate: no file system name
            unusable = True
        if unusable:
            raise BundleIntegrityError(
                f"Artifact {spec.key} names the file {spec.file[:80]!r}, which no file system "
                "can hold (a NUL byte, an unencodable character or a part over 255 bytes); do "
                "not use this bundle."
            )
        try:
            root = self.path.resolve()
            full = (root / rel).resolve()
            is_file = full.is_file()
        except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a name too long
            raise BundleIntegrityError(
                f"Artifact {spec.key} ({spec.file[:80]}) cannot be resolved in {self.path} "
                f"({exc}); copy the real file into the bundle or export it again."
            ) from None
        if root not in full.parents:
            raise BundleIntegrityError(
                f"Artifact {spec.key} ({spec.file}) resolves to {full}, outside the bundle "
                f"{root} (a symlink?); copy the real file into the bundle."
            )
        if not is_file:
            raise BundleIntegrityError(
                f"Artifact {spec.key} is missing: {spec.file} is not in {self.path}; copy the "
                "whole bundle again or export it again."
            )
        return full

    def verify(self) -> None:
        """Recompute every artifact's and weights file's sha256; raise
        ``BundleIntegrityError`` on a mismatch."""
        for spec in self._listed():
            check_digest(spec, sha256_file(self.artifact_path(spec)))

    def _listed(self) -> list[Union[ArtifactSpec, WeightsSpec]]:
        """Every hashed file the manifest lists (artifacts, weights, behaviour signals)."""
        m = self.manifest
        extra = ([m.behaviour.weights_spec()] if m.behaviour is not None and m.behaviour.shipped
                 else [])
        return [*m.artifacts, *m.weights, *extra]

    def weights(self, role: Optional[Role] = None) -> list[WeightsSpec]:
        """Weights files, optionally of one role."""
        return [w for w in self.manifest.weights if role is None or w.role is Role(role)]

    def read_artifact(self, spec: ArtifactSpec) -> bytes:
        """The bytes of a model file, checked against its sha256 *as read*: hand these to the
        engine (``open_runtime(data, spec.engine)``) so that what runs is exactly what the
        manifest lists, even if the file changed on disk after :meth:`open`.

        Raises:
            BundleIntegrityError: the file is missing, outside the bundle, or modified.
        """
        return self._read_checked(spec)

    def _read_checked(self, spec: Union[ArtifactSpec, WeightsSpec]) -> bytes:
        path = self.artifact_path(spec)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleIntegrityError(
                f"{spec.file} in {self.path} cannot be read ({exc.strerror or exc}); copy the "
                "bundle again."
            ) from None
        check_digest(spec, hashlib.sha256(data).hexdigest())
        return data

    def read_weights(self, spec: WeightsSpec) -> bytes:
        """The bytes of a weights file, checked against its sha256 *as read* (so what the
        caller parses is exactly what the manifest lists, even if the file changed on disk
        after :meth:`open`).

        Raises:
            BundleIntegrityError: the file is missing, outside the bundle, or modified.
        """
        return self._read_checked(spec)

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



def _read_manifest(path: Path) -> bytes:
    """At most :data:`MAX_MANIFEST_BYTES` of ``path``; more raises ``BundleError``."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{path} cannot be read ({exc.strerror or exc}); copy the bundle "
                          "again.") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{path} is larger than {MAX_MANIFEST_BYTES} bytes (real manifests are a few kB): "
            "it is not an edgerec manifest or was tampered with; export the bundle again."
        )
    return data


def _check_usable(manifest: Manifest, where: str) -> None:
    """What a manifest promises the device, checked before anything runs: every artifact has
    inputs and the output it names, the encoder's output has ``embedding_dim`` values, and
    ``encoder_id`` is the one its preprocessing and encoder files give."""
    dim = manifest.embedding_dim
    if dim > MAX_EMBEDDING_DIM:
        raise BundleError(f"{where}: embedding_dim {dim} is over {MAX_EMBEDDING_DIM}; the "
                          "manifest is damaged or tampered with: export the bundle again.")
    for a in manifest.artifacts:
        if not a.inputs:
            raise BundleError(f"{where}: artifact {a.key} lists no input tensor; export the "
                              "bundle again.")
        outputs = {t.name: t for t in a.outputs}
        if a.output not in outputs:
            raise BundleError(
                f"{where}: artifact {a.key} names the output {a.output!r}, which is not among "
                f"its outputs {sorted(outputs)[:8]}; export the bundle again."
            )
        shape = outputs[a.output].shape[1:]
        if a.role is Role.ENCODER and shape and None not in shape and math.prod(shape) != dim:
            raise BundleError(
                f"{where}: artifact {a.key} outputs {math.prod(shape)} values per image but "
                f"embedding_dim is {dim}; export the bundle again."
            )
    expected = compute_encoder_id(manifest.preprocessing, manifest.artifacts, manifest.weights)
    if manifest.encoder_id != expected:
        raise BundleIntegrityError(
            f"{where}: encoder_id {manifest.encoder_id[:16]}... is not the {expected[:16]}... "
            "its preprocessing and encoder files give: the manifest was edited (its vectors "
            "would no longer match catalogs built with it); export the bundle again."
        )


def check_digest(spec: Union[ArtifactSpec, WeightsSpec], digest: str) -> None:
    if digest != spec.sha256:
        what = "Artifact" if isinstance(spec, ArtifactSpec) else "Weights file"
        raise BundleIntegrityError(
            f"{what} {spec.file} does not match its sha256 in the manifest (expected "
            f"{spec.sha256[:16]}..., got {digest[:16]}...): it was modified or damaged; "
            "copy the bundle again or export it again."
        )
