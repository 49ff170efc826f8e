"""Power cuts for the catalog writer: what the disk holds if every write not yet fsynced is lost.

SIGKILL keeps the page cache, so the kill tests only show what survives a process crash. Here
the crash worker's schedule (:mod:`catalog_crash_worker`) runs in this process under a small
file-system shim that records, at every *event*, what a power cut at that moment would leave:

- a file's content is the bytes it had at its last ``os.fsync`` (never fsynced: empty);
- a folder's entries (names and the files they point to) are those at the folder's last
  ``fsync`` (``fsync_dir``): renames and unlinks since then are lost; unlinked files are parked
  outside the catalog, not deleted, so their inode numbers are never reused;
- SQLite's files are copied as they are right after each ``COMMIT`` returns. SQLite's own
  writes go through its VFS, which Python cannot see: in WAL mode with ``synchronous=FULL`` the
  WAL is fsynced before a commit returns, and SQLite's recovery discards frames after the last
  complete commit, so the state after the newest returned commit is what a cut leaves of it
  (SQLite's own power-loss testing covers the inside of a commit and of a checkpoint; this
  harness does not).

Events are every fsync of a file or folder and every ``COMMIT``. :func:`run` replays the
schedule and, at every event (or a random sample of them), builds the folder a cut there would
leave and checks it: a writer's ``Catalog.open`` works (sweeping what the dead writer left),
``verify()`` passes, and the catalog holds exactly the state after the steps that had returned,
or one more (the step in flight may have committed), each batch whole with its vectors' values.
So it tests the ordering the commit protocol relies on: segment content fsynced, renamed, and
the segment folder fsynced before the SQLite commit that names the segment.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import stat
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass
class Cut:
    """What a power cut right after one event leaves: ``folders[dir] = {name: inode}``,
    ``contents[inode] = bytes``, the SQLite files, and how many steps had returned."""

    event: str
    returned: int
    folders: dict[str, dict[str, int]]
    contents: dict[int, bytes]
    sqlite: dict[str, bytes]


@dataclass
class _Disk:
    root: Path
    graveyard: Path
    folders: dict[str, dict[str, int]] = field(default_factory=dict)
    contents: dict[int, bytes] = field(default_factory=dict)
    sqlite: dict[str, bytes] = field(default_factory=dict)
    returned: int = 0
    cuts: list[Cut] = field(default_factory=list)

    def inside(self, path: str) -> bool:
        return Path(path).resolve().is_relative_to(self.root)

    def list_folder(self, folder: Path) -> dict[str, int]:
        return {e.name: e.inode() for e in os.scandir(folder)}

    def snapshot_sqlite(self) -> None:
        self.sqlite = {name: (self.root / name).read_bytes()
                       for name in ("catalog.sqlite", "catalog.sqlite-wal")
                       if (self.root / name).exists()}

    def record(self, event: str) -> None:
        self.cuts.append(Cut(event, self.returned, {k: dict(v) for k, v in self.folders.items()},
                             dict(self.contents), dict(self.sqlite)))

    def baseline(self) -> None:
        """Everything on disk before the run is durable (the catalog was created and closed)."""
        for folder in (self.root, self.root / "segments"):
            self.folders[str(folder)] = self.list_folder(folder)
            for entry in os.scandir(folder):
                if entry.is_file():
                    self.contents[entry.inode()] = Path(entry.path).read_bytes()
        self.snapshot_sqlite()


@contextmanager
def _shim(disk: _Disk) -> Iterator[None]:
    """Patch ``os.fsync``, ``os.unlink`` and ``sqlite3.connect`` while the schedule runs."""
    real_fsync, real_unlink, real_connect = os.fsync, os.unlink, sqlite3.connect

    def fsync(fd: int) -> None:
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not disk.inside(path):
            return
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            disk.folders[str(Path(path).resolve())] = disk.list_folder(Path(path))
        else:
            disk.contents[os.fstat(fd).st_ino] = Path(path).read_bytes()
        disk.record(f"fsync {Path(path).name}")

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if args or kwargs or not disk.inside(os.fspath(path)):
            return real_unlink(path, *args, **kwargs)
        os.rename(path, disk.graveyard / uuid.uuid4().hex)  # keeps the inode number taken

    class Connection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            cursor = super().execute(sql, *args)
            if sql.strip().upper() == "COMMIT":
                disk.snapshot_sqlite()
                disk.record("commit")
            return cursor

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", Connection)
        return real_connect(*args, **kwargs)

    os.fsync, os.unlink, sqlite3.connect = fsync, unlink, connect
    try:
        yield
    finally:
        os.fsync, os.unlink, sqlite3.connect = real_fsync, real_unlink, real_connect


def materialize(cut: Cut, root: Path, out: Path) -> None:
    """Build at ``out`` the catalog folder a power cut after ``cut`` leaves of ``root``."""
    out.mkdir()
    for folder, entries in cut.folders.items():
        target = out / Path(folder).relative_to(root)
        target.mkdir(exist_ok=True)
        for name, inode in entries.items():
            if name.startswith("catalog.sqlite") or name == "segments":
                continue
            (target / name).write_bytes(cut.contents.get(inode, b""))
    for name, data in cut.sqlite.items():
        (out / name).write_bytes(data)


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
    disk = _Disk(root, graveyard)
    disk.baseline()
    disk.record("start")
    state: dict[int, int] = {}
    with _shim(disk), Catalog.open(root) as catalog:
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
    cuts = disk.cuts
    if sample is not None and sample < len(cuts):
        cuts = random.Random(seed).sample(cuts, sample)
    faults: list[str] = []
    events: dict[str, int] = defaultdict(int)
    for n, cut in enumerate(cuts):
        out = workdir / f"cut-{n}"
        materialize(cut, root, out)
        try:
            got = state_of(out)
            allowed = [worker.state_after(cut.returned), worker.state_after(cut.returned + 1)]
            assert got in allowed, (f"the catalog after a cut at '{cut.event}' with "
                                    f"{cut.returned} steps returned is no committed state")
        except Exception as exc:  # a CatalogError is a fault here too
            faults.append(f"cut {n} ({cut.event}, {cut.returned} returned): {exc!r}")
        events[cut.event.split()[0]] += 1
        shutil.rmtree(out)
    return {"steps": steps, "events": len(disk.cuts), "cuts_checked": len(cuts),
            "by_event": dict(events), "faults": faults}
