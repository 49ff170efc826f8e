"""Power cuts for the catalog writer: what the disk holds if every write not yet fsynced is lost.

The crash worker's schedule (:mod:`catalog_crash_worker`) runs in this process under the
power-cut shim (:mod:`powercut_disk`, which says exactly what each kind of cut keeps), and the
folder a cut leaves is checked at every event (or a random sample of them): after every fsync
of edgerec's, every SQLite commit and fsync, every rename or unlink with all metadata on disk,
and inside SQLite's commits and checkpoints (part of SQLite's unsynced WAL and database writes
on disk). Each cut must open with a writer's ``Catalog.open`` (sweeping what the dead writer
left), pass ``verify()``, hold exactly the segment files its generations reference, and hold
the state after the steps that had returned, or one more (the step in flight may have
committed), each batch whole with its vectors' values.

So it tests the ordering the commit protocol relies on (segment content fsynced, renamed, the
segment folder fsynced, then the SQLite commit that names the segment) and that
``synchronous=FULL`` makes every returned commit durable whatever part of SQLite's own writes
a cut keeps.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

try:
    import catalog_crash_worker as worker
except ImportError:  # loaded by path from the benchmark
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "catalog_crash_worker", Path(__file__).with_name("catalog_crash_worker.py"))
    worker = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(worker)
try:
    import powercut_disk as disk_model
except ImportError:  # loaded by path from the benchmark
    import importlib.util
    import sys

    _spec = importlib.util.spec_from_file_location(
        "powercut_disk", Path(__file__).parents[2] / "powercut_disk.py")
    disk_model = importlib.util.module_from_spec(_spec)
    sys.modules["powercut_disk"] = disk_model  # its dataclasses look their module up
    _spec.loader.exec_module(disk_model)


def state_of(path: Path) -> dict[int, int]:
    """``{batch: version}`` of the catalog at ``path`` after a writer's open and ``verify()``;
    raises AssertionError (or ``CatalogError``) on a fault."""
    from edgerec.sdk.catalog import store
    from edgerec.sdk.catalog.catalog import Catalog

    with Catalog.open(path) as cat:  # a writer's open sweeps what the dead writer left
        cat.verify()
        with sqlite3.connect(path / "catalog.sqlite") as conn:
            referenced = store.referenced_files(conn)
        on_disk = {f.name for f in (path / "segments").iterdir()}
        assert on_disk == referenced, f"stray or missing segment files: {on_disk ^ referenced}"
        ids, vectors = cat.vectors(list(cat)) if len(cat) else ((), np.zeros((0, worker.DIM)))
        groups: dict[int, list[tuple[int, int, np.ndarray]]] = defaultdict(list)
        for item_id, vector in zip(ids, vectors):
            meta = cat.get(item_id).metadata
            groups[meta["batch"]].append((meta["i"], meta["v"], vector))
    state = {}
    for batch, rows in groups.items():
        assert len(rows) == worker.BATCH, f"batch {batch} is half applied"
        versions = {v for _, v, _ in rows}
        assert len(versions) == 1, f"batch {batch} mixes versions {versions}"
        version = versions.pop()
        got = np.stack([vec for _, _, vec in sorted(rows, key=lambda r: r[0])])
        want = worker.vectors_of(batch, version)
        tol = np.abs(want).max(axis=1, keepdims=True) / 254 + 1e-6
        assert np.all(np.abs(got - want) <= tol), f"batch {batch} has wrong vector values"
        state[batch] = version
    return state


def run(workdir: Path, steps: int, *, compact_every: int = 4, sample: Optional[int] = None,
        seed: int = 0) -> dict[str, Any]:
    """Run ``steps`` steps of the crash worker's schedule under the shim, then check the cut
    after every event (or ``sample`` random ones). Returns counts and the faults found."""
    from edgerec.sdk.catalog.catalog import Catalog

    root = (workdir / "cat").resolve()
    Catalog.create(root, dim=worker.DIM, encoder_id=worker.ENCODER).close()
    graveyard = workdir / "unlinked"
    graveyard.mkdir()
    disk = disk_model.Disk(root, graveyard, seed=seed)
    disk.baseline()
    state: dict[int, int] = {}
    with disk_model.shim(disk), Catalog.open(root) as catalog:
        for step in range(steps):
            op, batch = worker.schedule(step, state)
            state = worker.apply(step, state)
            ids = worker.item_ids(batch)
            if op == "add":
                meta = [{"batch": batch, "i": i, "v": 0} for i in range(worker.BATCH)]
                catalog.add(ids, worker.vectors_of(batch, 0), meta, encoder_id=worker.ENCODER)
            elif op == "update":
                meta = [{"batch": batch, "i": i, "v": state[batch]} for i in range(worker.BATCH)]
                catalog.update(ids, worker.vectors_of(batch, state[batch]), meta)
            else:
                catalog.remove(ids)
            disk.returned = step + 1
            if compact_every and (step + 1) % compact_every == 0:
                catalog.compact()
    cuts = disk_model.sample(disk.cuts, sample, seed)
    by_event, inside = disk_model.count(cuts)
    faults: list[str] = []
    for n, cut in enumerate(cuts):
        out = workdir / f"cut-{n}"
        disk_model.materialize(cut, disk, out)
        try:
            got = state_of(out)
            allowed = [worker.state_after(cut.returned), worker.state_after(cut.returned + 1)]
            assert got in allowed, (f"the catalog after a cut at '{cut.event}' with "
                                    f"{cut.returned} steps returned is no committed state")
        except Exception as exc:  # a CatalogError is a fault here too
            faults.append(f"cut {n} ({cut.event}, {cut.returned} returned): {exc!r}")
        shutil.rmtree(out)
    return {"steps": steps, "events": len(disk.cuts),
            "events_by_event": disk_model.count(disk.cuts)[0], "cuts_checked": len(cuts),
            "by_event": by_event, "inside": inside, "faults": faults}
