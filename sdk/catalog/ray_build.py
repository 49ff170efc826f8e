"""Building a catalog on a Ray cluster (the ``scale`` extra): the same vectors, one commit.

::

    report = build_catalog_on_ray("bundle/", "shop.catalog", listing.require(),
                                  RayBuildOptions(address="10.0.0.5:6379", workers=8))

What runs where:

- the **driver** (this process) reads the listing, skips ids already in the catalog and ids that
  an earlier, interrupted run already staged, and hands the rest to Ray Data as rows
  ``(item_id, path, meta)``;
- ``map_batches`` runs :class:`_EmbedBlock`, a callable class: each actor opens the bundle's
  :class:`~edgerec.sdk.encoder.Encoder` once, and for every batch (``batch_size`` items)
  decodes and embeds it with :func:`~edgerec.sdk.catalog.build.embed_items` (the local build's
  own step, so the vectors are the local build's) and writes one **staged block** next to the
  catalog: ``<out>.ray-staging/blk-<sha>.vec.npy`` (float32 ``(n, dim)``, the store's ``.npy``
  writer: atomic, fsynced, no pickle), then ``blk-<sha>.json`` (ids, metadata, bad images)
  atomically last: a block without its ``.json`` does not exist;
- the driver then adds every staged block to the catalog in **one** generation (one SQLite
  commit, :meth:`Catalog.add`: quantised exactly as a local build), and deletes the staging
  folder.

Failure semantics: a worker or node that dies mid-batch is restarted by Ray and its batch
retried (a block's file names are its content's hash, so a retry rewrites the same files); a
driver that dies at any point leaves the catalog at its previous generation, and a re-run with
the same inputs skips every item of a staged block without embedding it again. Bad images are
reported per item in :class:`~edgerec.sdk.catalog.build.IngestReport`, never fatal.

The staging folder must be reachable by every worker under the same path (NFS or another shared
mount); Ray is imported (:mod:`edgerec.sdk.cluster`) only when a build starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.catalog.build import IngestReport, embed_items
from edgerec.sdk.catalog.catalog import Catalog, VectorDType
from edgerec.sdk.catalog.ingest import SourceItem, _check_unique
from edgerec.sdk.catalog.store import write_npy
from edgerec.sdk.cluster import RayJobOptions, connected, require_ray
from edgerec.sdk.encoder import Encoder, EncoderOptions
from edgerec.sdk.errors import CatalogError, EncoderMismatchError, RayUnavailableError
from edgerec.sdk.files import atomic_write_text, fsync_dir

__all__ = ["RayBuildOptions", "RayUnavailableError", "build_catalog_on_ray", "staging_dir"]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class RayBuildOptions(RayJobOptions):
    """How a Ray build runs: :class:`~edgerec.sdk.cluster.RayJobOptions` with one
    :class:`Encoder` per actor; ``batch_size`` (default 64) items per actor call are also
    one staged block (the unit of resumption); ``cpus_per_worker`` is also the engine's
    threads unless the encoder options set them. Options out of range raise
    :class:`CatalogError`."""

    @classmethod
    def invalid(cls, message: str) -> Exception:
        return CatalogError(message)


def staging_dir(out: PathLike) -> Path:
    """Where a Ray build of the catalog ``out`` stages its blocks until the commit."""
    out = Path(out)
    return out.with_name(out.name + ".ray-staging")


def _block_name(ids: Sequence[str], encoder_id: str) -> str:
    digest = hashlib.sha256(encoder_id.encode())
    for i in ids:
        digest.update(b"\0" + i.encode())
    return "blk-" + digest.hexdigest()[:32]


class _EmbedBlock:
    """Ray Data callable class: one Encoder per actor, one staged block per batch."""

    def __init__(self, bundle: str, options: EncoderOptions, staging: str) -> None:
        self.encoder = Encoder.create_from_bundle_path(bundle, options)
        self.staging = Path(staging)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [SourceItem(str(i), Path(str(p)), json.loads(str(m)))
                 for i, p, m in zip(batch["item_id"], batch["path"], batch["meta"])]
        good, vectors, failed = embed_items(self.encoder, items)
        name = _block_name([s.item_id for s in items], self.encoder.encoder_id)
        write_npy(self.staging / f"{name}.vec.npy", vectors.astype(np.float32))
        record = {"ids": [s.item_id for s in good], "meta": [dict(s.metadata) for s in good],
                  "failed": [list(f) for f in failed], "pid": os.getpid(),
                  "encoder_id": self.encoder.encoder_id}
        atomic_write_text(self.staging / f"{name}.json", json.dumps(record))
        return {"block": np.array([name]), "rows": np.array([len(items)])}


@dataclass
class _Staged:
    ids: list[str]
    meta: list[dict[str, Any]]
    vectors: list[np.ndarray]
    failed: list[tuple[str, str, str]]


def _read_staged(staging: Path, dim: int, encoder_id: str) -> _Staged:
    """Every complete block in ``staging`` (a ``.json`` and its ``.vec.npy``)."""
    out = _Staged([], [], [], [])
    seen: set[str] = set()
    for manifest in sorted(staging.glob("blk-*.json")):
        vec = manifest.with_name(manifest.stem + ".vec.npy")
        try:
            record = json.loads(manifest.read_text())
            vectors = np.load(vec, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CatalogError(f"the staged block {manifest} cannot be read ({exc}); delete "
                               f"{staging} and build again") from exc
        if record.get("encoder_id") != encoder_id:
            raise EncoderMismatchError(
                f"the staged block {manifest} was embedded with encoder "
                f"{record.get('encoder_id')!r}, not {encoder_id!r}; delete {staging} (or use "
                "the bundle that started this build) and build again")
        if vectors.shape != (len(record["ids"]), dim):
            raise CatalogError(f"the staged block {vec} holds {vectors.shape}, not "
                               f"({len(record['ids'])}, {dim}); delete {staging} and build again")
        keep = [k for k, i in enumerate(record["ids"]) if i not in seen]
        seen.update(record["ids"])
        out.ids += [record["ids"][k] for k in keep]
        out.meta += [record["meta"][k] for k in keep]
        out.vectors.append(vectors[keep])
        out.failed += [tuple(f) for f in record["failed"] if f[0] not in seen]
        seen.update(f[0] for f in record["failed"])
    return out


def _open_catalog(bundle: Bundle, out: Path, dtype: Any) -> Catalog:
    """Create ``out`` or reopen it; refuse another encoder or dtype (as the local build)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        catalog = Catalog.open(out)
        if dtype is not None and str(getattr(dtype, "value", dtype)) != catalog.dtype:
            catalog.close()
            raise CatalogError(f"the catalog at {out} stores {catalog.dtype} vectors, not "
                               f"{dtype!s}: resume it without a dtype, or build elsewhere")
        return catalog
    return Catalog.create(out, bundle, dtype=dtype or VectorDType.INT8)


def build_catalog_on_ray(
    bundle: Union[Bundle, PathLike],
    out: PathLike,
    items: Iterable[SourceItem],
    options: RayBuildOptions = RayBuildOptions(),
    *,
    encoder_options: Optional[EncoderOptions] = None,
    dtype: Union[str, VectorDType, None] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> IngestReport:
    """Create (or resume) the catalog ``out`` for ``bundle`` with the items not yet in it,
    embedded on Ray (see the module docstring), committed in one generation, then compacted to
    one segment. The bundle and ``out``'s parent must be at the same path on every worker.

    Raises:
        RayUnavailableError: Ray is not installed, or ``options.address`` is unreachable.
        EncoderMismatchError: ``out`` exists and was built with another encoder.
        CatalogError: ``out`` has another dtype, or the items repeat an id.
    """
    ray = require_ray(options.address, options.connect_timeout_s)
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    out = Path(out).absolute()
    items = list(items)
    _check_unique(items, "the items to build")
    enc_options = encoder_options or EncoderOptions(
        num_threads=max(1, int(options.cpus_per_worker)))
    with _open_catalog(bundle, out, dtype) as catalog:
        encoder_id = _encoder_id(bundle, enc_options)
        if encoder_id != catalog.encoder_id:
            raise EncoderMismatchError(
                f"the catalog at {out} was built with encoder {catalog.encoder_id!r}, but this "
                f"bundle's encoder is {encoder_id!r}: use the bundle that built it, or build a "
                "new catalog")
        present = set(catalog) & {s.item_id for s in items}
        staging = staging_dir(out)
        staging.mkdir(parents=True, exist_ok=True)
        staged = _read_staged(staging, catalog.dim, catalog.encoder_id)
        done = set(staged.ids) | {f[0] for f in staged.failed}
        todo = [s for s in items if s.item_id not in present and s.item_id not in done]
        if progress is not None:
            progress(len(items) - len(todo))
        if todo:
            with connected(ray, options.address):
                _run_blocks(ray, bundle, todo, options, enc_options, staging, len(items),
                            progress)
            staged = _read_staged(staging, catalog.dim, catalog.encoder_id)
        wanted = {s.item_id for s in items} - present
        keep = [k for k, i in enumerate(staged.ids) if i in wanted]
        if keep:
            vectors = np.concatenate(staged.vectors)[keep]
            catalog.add([staged.ids[k] for k in keep], vectors, [staged.meta[k] for k in keep],
                        encoder_id=catalog.encoder_id)
        if catalog.info().segments > 1:
            catalog.compact()
        failed = tuple(f for f in staged.failed if f[0] in wanted)
        report = IngestReport(catalog.path, len(keep), len(present), failed, len(catalog))
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(staging.parent, strict=False)
    return report


def _encoder_id(bundle: Bundle, options: EncoderOptions) -> str:
    with Encoder.create_from_bundle(bundle, options) as encoder:
        return encoder.encoder_id


def _run_blocks(ray: Any, bundle: Bundle, todo: Sequence[SourceItem], options: RayBuildOptions,
                enc_options: EncoderOptions, staging: Path, total: int,
                progress: Optional[Callable[[int], None]]) -> None:
    rows = [{"item_id": s.item_id, "path": str(Path(s.image).absolute()),
             "meta": json.dumps(dict(s.metadata))} for s in todo]
    blocks = max(1, -(-len(rows) // options.batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(
        _EmbedBlock,
        fn_constructor_kwargs={"bundle": str(Path(bundle.path).absolute()),
                               "options": enc_options, "staging": str(staging)},
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.workers),
        num_cpus=options.cpus_per_worker,
    )
    done = total - len(todo)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        done += int(np.sum(batch["rows"]))
        if progress is not None:
            progress(done)
