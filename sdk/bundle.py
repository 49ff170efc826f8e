"""Reading, verifying and writing bundles.

A bundle is a directory with ``manifest.json`` (schema in :mod:`edgerec.sdk.manifest`) and
the model files it lists (and, optionally, plain-array weights files such as the scorer's
``scorer.fp32.npz``). :meth:`Bundle.load` refuses a bundle whose files are missing, do not
match their sha256, or point outside the directory; :meth:`Bundle.read_weights` re-checks the
sha256 of the very bytes it returns. :func:`write_bundle` writes into a hidden
temporary sibling directory, writes the manifest last, fsyncs, and renames the directory into
place, so an interrupted write never leaves a directory that looks like a complete bundle.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from ..runtimes import Engine, TensorSpec
from .errors import ArtifactNotFoundError, BundleError, BundleIntegrityError
from .manifest import (
    MANIFEST_NAME,
    ArtifactSpec,
    Manifest,
    Precision,
    Role,
    WeightsSpec,
    compute_encoder_id,
)
from .preprocess import Layout, Preprocessing

__all__ = ["Bundle", "NewArtifact", "NewWeights", "sha256_file", "write_bundle"]

PathLike = Union[str, os.PathLike]
_CHUNK = 1 << 20


def sha256_file(path: PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _edgerec_version() -> str:
    try:
        from importlib.metadata import version

        return version("edgerec")
    except Exception:
        return "unknown"


class Bundle:
    """A loaded, verified bundle. Construct with :meth:`load`."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest

    @classmethod
    def load(cls, path: PathLike, *, verify: bool = True) -> Bundle:
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
            _check_digest(spec, sha256_file(self.artifact_path(spec)))

    def weights(self, role: Optional[Role] = None) -> list[WeightsSpec]:
        """Weights files, optionally of one role."""
        return [w for w in self.manifest.weights if role is None or w.role is Role(role)]

    def read_weights(self, spec: WeightsSpec) -> bytes:
        """The bytes of a weights file, checked against its sha256 *as read* (so what the
        caller parses is exactly what the manifest lists, even if the file changed on disk
        after :meth:`load`).

        Raises:
            BundleIntegrityError: the file is missing, outside the bundle, or modified.
        """
        data = self.artifact_path(spec).read_bytes()
        _check_digest(spec, hashlib.sha256(data).hexdigest())
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


@dataclass(frozen=True)
class NewArtifact:
    """A model file to put into a new bundle (see :func:`write_bundle`).

    Attributes:
        source: the model file to copy in.
        role, precision: what it is.
        inputs, outputs: its tensors (from ``open_runtime(source).input_specs()``, ...).
        output: the output holding the embedding or score.
        layout: image input layout (encoders).
        file: name inside the bundle; default ``<role>.<precision>.<engine>``.
    """

    source: Path
    role: Role
    precision: Precision
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    output: str
    layout: Optional[Layout] = None
    file: Optional[str] = None
    engine: Optional[Engine] = None

    def resolved_engine(self) -> Engine:
        from ..runtimes import engine_for_path

        return self.engine or engine_for_path(self.source)

    @property
    def key(self) -> str:
        """Short name, e.g. ``encoder/onnx/int8`` (as :attr:`ArtifactSpec.key`)."""
        return f"{self.role.value}/{self.resolved_engine().value}/{self.precision.value}"


@dataclass(frozen=True)
class NewWeights:
    """A plain-array weights file (``.npz``) to put into a new bundle (see :func:`write_bundle`).

    Attributes:
        source: the file to copy in.
        role, precision: what it belongs to.
        format: what the arrays mean (see :class:`~edgerec.sdk.manifest.WeightsSpec`).
        file: name inside the bundle; default ``<role>.<precision><source suffix>``.
    """

    source: Path
    role: Role
    precision: Precision
    format: str
    file: Optional[str] = None


def _check_digest(spec: Union[ArtifactSpec, WeightsSpec], digest: str) -> None:
    if digest != spec.sha256:
        what = "Artifact" if isinstance(spec, ArtifactSpec) else "Weights file"
        raise BundleIntegrityError(
            f"{what} {spec.file} does not match its sha256 in the manifest (expected "
            f"{spec.sha256[:16]}..., got {digest[:16]}...): it was modified or damaged; "
            "copy the bundle again or export it again."
        )


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_hashed(src: Path, dst: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def _remove_stale_temps(out: Path) -> None:
    """Delete leftovers of interrupted writes of ``out`` whose writer process is gone."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass


def write_bundle(
    out: PathLike,
    *,
    artifacts: Sequence[NewArtifact],
    preprocessing: Preprocessing,
    embedding_dim: int,
    name: str = "",
    teacher: Optional[dict[str, Any]] = None,
    metrics: Optional[dict[str, Any]] = None,
    recipe: Optional[dict[str, Any]] = None,
    force: bool = False,
    extra_files: Optional[dict[str, PathLike]] = None,
    weights: Sequence[NewWeights] = (),
) -> Bundle:
    """Write a complete, verified bundle atomically.

    Files are copied and hashed into a hidden temporary directory beside ``out``; the manifest
    is written last; the directory is then renamed to ``out``. A crash or a full disk at any
    point leaves either no ``out`` (or the previous one, with ``force``) or a complete bundle.

    ``extra_files`` (``{"report/report.html": path}``) are copied in as they are, unhashed and
    unlisted: documentation for people (reports, plots), never read by the device.
    ``weights`` are hashed and listed in the manifest like artifacts (the device reads them).

    Raises:
        BundleError: ``out`` exists and ``force`` is false; no artifacts; duplicate names.
        OSError: the disk is full or not writable (the temporary directory is removed).
    """
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(
            f"{out} already exists; choose another --out or pass --force to replace it."
        )
    if not artifacts:
        raise BundleError("A bundle needs at least one artifact.")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        specs = []
        for art in artifacts:
            engine = art.resolved_engine()
            file = art.file or f"{art.role.value}.{art.precision.value}{engine.suffix}"
            if Path(file).name != file or file == MANIFEST_NAME:
                raise BundleError(f"Artifact file name {file!r} must be a plain file name.")
            if (tmp / file).exists():
                raise BundleError(f"Two artifacts would both be written as {file}.")
            digest = _copy_hashed(Path(art.source), tmp / file)
            specs.append(
                ArtifactSpec(
                    file=file,
                    sha256=digest,
                    role=art.role,
                    precision=art.precision,
                    engine=engine,
                    inputs=tuple(art.inputs),
                    outputs=tuple(art.outputs),
                    output=art.output,
                    layout=art.layout,
                    size_bytes=(tmp / file).stat().st_size,
                )
            )
        weight_specs = []
        for new in weights:
            file = new.file or f"{new.role.value}.{new.precision.value}{Path(new.source).suffix}"
            if Path(file).name != file or file == MANIFEST_NAME:
                raise BundleError(f"Weights file name {file!r} must be a plain file name.")
            if (tmp / file).exists():
                raise BundleError(f"Two bundle files would both be written as {file}.")
            digest = _copy_hashed(Path(new.source), tmp / file)
            weight_specs.append(WeightsSpec(file=file, sha256=digest, role=new.role,
                                            precision=new.precision, format=new.format,
                                            size_bytes=(tmp / file).stat().st_size))
        for rel, src in (extra_files or {}).items():
            target = tmp / rel
            if Path(rel).is_absolute() or ".." in Path(rel).parts or target.exists():
                raise BundleError(f"Extra file name {rel!r} must be a new relative path.")
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy_hashed(Path(src), target)
        manifest = Manifest(
            name=name,
            embedding_dim=int(embedding_dim),
            preprocessing=preprocessing,
            artifacts=tuple(specs),
            encoder_id=compute_encoder_id(preprocessing, specs, weight_specs),
            format_version=2 if any(w.role is Role.ENCODER for w in weight_specs) else 1,
            teacher=teacher or {},
            metrics=metrics or {},
            recipe=recipe or {},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            edgerec_version=_edgerec_version(),
            weights=tuple(weight_specs),
        )
        Manifest.from_json(manifest.to_json())  # the reader must accept what we write
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
        os.replace(tmp, out)
        _fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.load(out)

