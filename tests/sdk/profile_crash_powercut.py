"""Power cuts for the profile store: a schedule of ``record`` and ``forget`` steps runs under the
power-cut shim (:mod:`powercut_disk` says exactly what each kind of cut keeps) and the folder a
cut leaves is checked at every event (or a random sample of them).

The store runs in WAL mode with ``synchronous=NORMAL``: a commit is not fsynced, so a cut may
roll back the last writes, down to SQLite's last fsync of the file (a checkpoint, at the latest
the last ``forget``). So after every cut:

- the bytes of ``profiles.sqlite`` and its ``-wal``, read before anything opens them, hold no
  trace of a user whose ``forget`` had returned (see :func:`_left` for sectors cuts);
- ``ProfileStore.open`` works and ``PRAGMA integrity_check`` says ``ok``;
- the profiles are exactly the state after ``k`` steps (each user's items in order, no record
  half applied), with ``k`` at least the steps committed before SQLite's last fsync and at most
  the steps returned plus the one in flight.

The schedule is also the kill harness's (``benchmarks/crash_faults.py --parts profiles``).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any, Optional

try:
    import powercut_disk as disk_model
except ImportError:  # loaded by path from the benchmark
    import importlib.util
    import sys

    _spec = importlib.util.spec_from_file_location(
        "powercut_disk", Path(__file__).parents[1] / "powercut_disk.py")
    disk_model = importlib.util.module_from_spec(_spec)
    sys.modules["powercut_disk"] = disk_model  # its dataclasses look their module up
    _spec.loader.exec_module(disk_model)


def schedule(step: int, state: dict[str, tuple[str, ...]]) -> tuple[str, str]:
    """``(op, user)`` of a profile step: every 6th forgets the oldest user (never the one being
    recorded now, so a forgotten id never comes back), the others record for ``u{step // 3}``."""
    current = f"u{step // 3:05d}"
    older = sorted(u for u in state if u != current)
    if step % 6 == 5 and older:
        return "forget", older[0]
    return "record", current


def items_of(step: int) -> list[str]:
    """The 3 items a ``record`` step writes."""
    return [f"s{step}-{j}" for j in range(3)]


def state_after(steps: int) -> tuple[dict[str, tuple[str, ...]], dict[int, str]]:
    """``({user: items in order}, {step: user it forgot})`` once ``steps`` steps have
    committed."""
    state: dict[str, tuple[str, ...]] = {}
    forgotten: dict[int, str] = {}
    for step in range(steps):
        op, user = schedule(step, state)
        if op == "forget":
            del state[user]
            forgotten[step] = user
        else:
            state[user] = (*state.get(user, ()), *items_of(step))
    return state, forgotten


def _left(path: Path, cut: disk_model.Cut, disk: disk_model.Disk, users: list[str]
          ) -> list[str]:
    """The ``users`` whose id is in the bytes of ``path`` or its ``-wal`` as the cut left them.

    A ``sectors`` cut can splice two versions of a page into a string neither held (it made
    ``u00010`` of the ``u000`` of an old ``u00032`` and the ``10`` of a new ``s100-``), so an
    id counts only if it is also in bytes written to that file: its durable content or one of
    SQLite's writes since."""
    found = set()
    names = cut.folders.get(disk.root_inode, {})
    for file in (path, Path(f"{path}-wal")):
        if not file.exists():
            continue
        raw, inode = file.read_bytes(), names[file.name]
        written = [b"".join(cut.contents.get(inode, ()))]
        if inode in cut.partial:
            written += [data for _, data in cut.partial[inode].ops if data]
        found |= {u for u in users if u.encode() in raw
                  and any(u.encode() in piece for piece in written)}
    return sorted(found)


def check(path: Path, cut: disk_model.Cut, disk: disk_model.Disk) -> int:
    """The number of steps the profiles at ``path`` hold after ``cut``; raises AssertionError
    on a fault."""
    from edgerec.sdk.profile import ProfileStore

    _, forgets = state_after(cut.returned)
    left = _left(path, cut, disk, list(forgets.values()))
    assert not left, f"users whose forget returned are still in the file's bytes: {left[:5]}"
    with ProfileStore.open(path) as store:
        got = {u: tuple(e.item_id for e in store.history(u)) for u in store.users()}
    with sqlite3.connect(path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
    conn.close()
    assert integrity == [("ok",)], f"integrity_check: {integrity[:3]}"
    # one COMMIT per step: those committed before SQLite's last fsync are durable
    for steps in range(cut.returned + 1, cut.durable_commits - 1, -1):
        if got == state_after(steps)[0]:
            return steps
    raise AssertionError(f"the profiles are no state between {cut.durable_commits} durable and "
                         f"{cut.returned} returned steps (+1 in flight)")


def run(workdir: Path, steps: int, *, sample: Optional[int] = None, seed: int = 0
        ) -> dict[str, Any]:
    """Run ``steps`` steps of :func:`schedule` under the shim, then check the cut after every
    event (or ``sample`` random ones). Returns counts and the faults found."""
    from edgerec.sdk.profile import Event, ProfileStore

    root = (workdir / "profiles").resolve()
    root.mkdir()
    graveyard = workdir / "unlinked"
    graveyard.mkdir()
    disk = disk_model.Disk(root, graveyard, seed=seed)
    disk.baseline()
    state: dict[str, tuple[str, ...]] = {}
    with disk_model.shim(disk), ProfileStore.open(root / "profiles.sqlite") as store:
        for step in range(steps):
            op, user = schedule(step, state)
            if op == "forget":
                store.forget(user)
                del state[user]
            else:
                store.record(user, [Event(i, "view", float(step)) for i in items_of(step)])
                state[user] = (*state.get(user, ()), *items_of(step))
            disk.returned = step + 1
            if disk.commits != step + 1:
                raise RuntimeError(f"step {step} made {disk.commits - step} commits, not 1: "
                                   "the durable-step count below assumes one")
    cuts = disk_model.sample(disk.cuts, sample, seed)
    by_event, inside = disk_model.count(cuts)
    faults: list[str] = []
    lost = 0
    for n, cut in enumerate(cuts):
        out = workdir / f"cut-{n}"
        disk_model.materialize(cut, disk, out)
        try:
            lost += check(out / "profiles.sqlite", cut, disk) < cut.returned
        except Exception as exc:  # a ProfileError is a fault here too
            faults.append(f"cut {n} ({cut.event}, {cut.returned} returned, "
                          f"{cut.durable_commits} durable): {exc!r}")
        shutil.rmtree(out)
    _, forgets = state_after(steps)
    return {"steps": steps, "forgets": len(forgets), "events": len(disk.cuts),
            "events_by_event": disk_model.count(disk.cuts)[0],
            "cuts_checked": len(cuts), "by_event": by_event, "inside": inside,
            "rolled_back": lost, "faults": faults}
