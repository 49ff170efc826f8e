"""Writing bundles atomically: the export's (and ``edgerec bundle import``'s) only way to make one.

:func:`write_bundle` copies and hashes every file into a hidden temporary sibling directory,
writes the manifest last, fsyncs, and renames the directory into place, so an interrupted write
never leaves a directory that looks like a complete bundle. The manifest it writes is parsed
back by the reader before the rename: the two sides cannot drift.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

from edgerec.runtimes import Engine, TensorSpec, engine_for_path
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import (
    MANIFEST_NAME,
    ArtifactSpec,
    BehaviourRecord,
    Layout,
    Manifest,
    Precision,
    Preprocessing,
    Role,
    ScorerRecord,
    WeightsSpec,
    compute_encoder_id,
    format_version_for,
)
from edgerec.sdk.errors import BundleError
from edgerec.sdk.files import atomic_write, copy_hashed, fsync_dir, temporary_sibling

__all__ = ["NewArtifact", "NewWeights", "subset_bundle", "write_bundle"]

PathLike = Union[str, os.PathLike]


def _edgerec_version() -> str:
    try:
        from importlib.metadata import version

        return version("edgerec")
    except Exception:
        return "unknown"


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
        format: what the arrays mean (see :class:`~edgerec.sdk.bundle.manifest.WeightsSpec`).
        file: name inside the bundle; default ``<role>.<precision><source suffix>``.
    """

    source: Path
    role: Role
    precision: Precision
    format: str
    file: Optional[str] = None


def _writer_gone(leftover: Path) -> bool:
    """Whether the process named in a ``.<out>.<tag>-<pid>-<random>`` leftover is gone."""
    try:
        os.kill(int(leftover.name.rsplit("-", 2)[1]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return True
    except PermissionError:
        pass
    return False


def _remove_stale_temps(out: Path) -> None:
    """Clean up after interrupted writes of ``out`` whose writer process is gone: delete their
    temporary directories, and put back a previous bundle that a writer killed between its two
    renames had moved aside (or delete it, when the new one made it into place)."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        if _writer_gone(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if _writer_gone(old):
            if not out.exists():
                os.replace(old, out)
            else:
                shutil.rmtree(old, ignore_errors=True)


def _plain_name(file: str, what: str, tmp: Path) -> str:
    if Path(file).name != file or file == MANIFEST_NAME:
        raise BundleError(f"{what} file name {file!r} must be a plain file name.")
    if (tmp / file).exists():
        raise BundleError(f"Two bundle files would both be written as {file}.")
    return file


def _copy_artifacts(artifacts: Sequence[NewArtifact], tmp: Path) -> list[ArtifactSpec]:
    specs = []
    for art in artifacts:
        engine = art.resolved_engine()
        file = _plain_name(art.file or f"{art.role.value}.{art.precision.value}{engine.suffix}",
                           "Artifact", tmp)
        digest = copy_hashed(Path(art.source), tmp / file)
        specs.append(ArtifactSpec(
            file=file, sha256=digest, role=art.role, precision=art.precision, engine=engine,
            inputs=tuple(art.inputs), outputs=tuple(art.outputs), output=art.output,
            layout=art.layout, size_bytes=(tmp / file).stat().st_size))
    return specs


def _copy_weights(weights: Sequence[NewWeights], tmp: Path) -> list[WeightsSpec]:
    specs = []
    for new in weights:
        file = _plain_name(new.file or f"{new.role.value}.{new.precision.value}"
                           f"{Path(new.source).suffix}", "Weights", tmp)
        digest = copy_hashed(Path(new.source), tmp / file)
        specs.append(WeightsSpec(file=file, sha256=digest, role=new.role,
                                 precision=new.precision, format=new.format,
                                 size_bytes=(tmp / file).stat().st_size))
    return specs


def _copy_extra_files(extra_files: dict[str, PathLike], tmp: Path) -> None:
    folders: set[Path] = set()
    for rel, src in extra_files.items():
        target = tmp / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or target.exists():
            raise BundleError(f"Extra file name {rel!r} must be a new relative path.")
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_hashed(Path(src), target)
        folders.update(p for p in target.parents if p != tmp and p.is_relative_to(tmp))
    # _swap_in fsyncs ``tmp`` itself; the entries of its subfolders (``report/``) need their
    # own fsync, or a power cut can leave them empty in a bundle that was swapped in.
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(folder, strict=False)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out`` (moving an old ``out`` aside first)."""
    fsync_dir(tmp, strict=False)
    old = None
    if out.exists():
        old = temporary_sibling(out, "old")
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent, strict=False)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    scorer: Optional[ScorerRecord] = None,
    behaviour: Optional[BehaviourRecord] = None,
    behaviour_source: Optional[PathLike] = None,
) -> Bundle:
    """Write a complete, verified bundle atomically.

    Files are copied and hashed into a hidden temporary directory beside ``out``; the manifest
    is written last; the directory is then renamed to ``out``. A crash or a full disk at any
    point leaves either no ``out`` (or the previous one, with ``force``) or a complete bundle.

    ``extra_files`` (``{"report/report.html": path}``) are copied in as they are, unhashed and
    unlisted: documentation for people (reports, plots), never read by the device.
    ``weights`` are hashed and listed in the manifest like artifacts (the device reads them).
    ``scorer``: how the device must rank with the bundle's scorer (its C, user-vector recipe
    and held-out split). ``behaviour``: the behaviour signals' record; when it is shipped,
    ``behaviour_source`` (the ``.npz``) is copied in as ``behaviour.file`` (default
    ``behaviour.npz``) and its sha256 and size are filled in.

    Raises:
        BundleError: ``out`` exists and ``force`` is false; no artifacts; duplicate names.
        OSError: the disk is full or not writable (the temporary directory is removed).
    """
    out = Path(out)
    _remove_stale_temps(out)  # first: it may put back a bundle a killed writer moved aside
    if out.exists() and not force:
        raise BundleError(
            f"{out} already exists; choose another --out or pass --force to replace it."
        )
    if not artifacts:
        raise BundleError("A bundle needs at least one artifact.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(out)
    tmp.mkdir()
    try:
        specs = _copy_artifacts(artifacts, tmp)
        weight_specs = _copy_weights(weights, tmp)
        if behaviour is not None and behaviour.shipped:
            if behaviour_source is None:
                raise BundleError("a shipped behaviour record needs behaviour_source")
            file = _plain_name(behaviour.file or "behaviour.npz", "Behaviour", tmp)
            digest = copy_hashed(Path(behaviour_source), tmp / file)
            behaviour = replace(behaviour, file=file, sha256=digest,
                                size_bytes=(tmp / file).stat().st_size)
        _copy_extra_files(extra_files or {}, tmp)
        manifest = Manifest(
            name=name, embedding_dim=int(embedding_dim), preprocessing=preprocessing,
            artifacts=tuple(specs),
            encoder_id=compute_encoder_id(preprocessing, specs, weight_specs),
            format_version=format_version_for(weight_specs),
            teacher=teacher or {}, metrics=metrics or {}, recipe=recipe or {},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            edgerec_version=_edgerec_version(), weights=tuple(weight_specs), scorer=scorer,
            behaviour=behaviour,
        )
        Manifest.from_json(manifest.to_json())  # the reader must accept what we write
        with atomic_write(tmp / MANIFEST_NAME, sync_dir=False) as f:
            f.write(manifest.to_json().encode("utf-8"))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Bundle.open(out)


def subset_bundle(bundle: Bundle, out: PathLike, keep: Sequence[str], *,
                  force: bool = False, name: Optional[str] = None) -> Bundle:
    """Write a new bundle with only the artifacts of ``bundle`` whose key is in ``keep``
    (``"encoder/onnx/int8"``, ...), e.g. what one device needs, or a smaller file to ship.

    Weights (whitening, scorer weights), the scorer and behaviour records, metrics, recipe,
    teacher and the ``report/`` folder are carried over unchanged. The new bundle's
    ``encoder_id`` is computed over the encoder files it keeps, so it differs from the
    source's when an encoder artifact is left out: catalogs are built with the bundle the
    device runs.

    Raises:
        BundleError: a key in ``keep`` that the bundle does not have (naming the ones it has),
            or nothing kept.
    """
    have = {a.key: a for a in bundle.artifacts()}
    unknown = [k for k in keep if k not in have]
    if unknown:
        raise BundleError(f"{bundle.path} has no {', '.join(unknown)}; it has "
                          f"{', '.join(sorted(have))}.")
    manifest = bundle.manifest
    artifacts = [NewArtifact(source=bundle.artifact_path(a), role=a.role, precision=a.precision,
                             inputs=a.inputs, outputs=a.outputs, output=a.output,
                             layout=a.layout, file=a.file, engine=a.engine)
                 for k, a in have.items() if k in keep]
    weights = [NewWeights(source=bundle.artifact_path(w), role=w.role, precision=w.precision,
                          format=w.format, file=w.file) for w in manifest.weights]
    report = bundle.path / "report"
    extra = ({f"report/{p.relative_to(report)}": p for p in sorted(report.rglob("*"))
              if p.is_file() and not p.is_symlink()} if report.is_dir() else {})
    behaviour = manifest.behaviour
    return write_bundle(
        out, artifacts=artifacts, weights=weights, preprocessing=manifest.preprocessing,
        embedding_dim=manifest.embedding_dim, name=name or manifest.name,
        teacher=dict(manifest.teacher), metrics=dict(manifest.metrics),
        recipe=dict(manifest.recipe), force=force, extra_files=extra,
        scorer=manifest.scorer, behaviour=behaviour,
        behaviour_source=(bundle.path / behaviour.file
                          if behaviour is not None and behaviour.shipped and behaviour.file
                          else None),
    )
