"""Crash faults at scale (issue 16): SIGKILL a catalog writer and a profile writer at random
points, and check after every kill that nothing that returned was lost or half applied.

**Catalog.**
The writer is the tests' crash worker (``tests/sdk/catalog/catalog_crash_worker.py``): a
deterministic schedule of add / update / remove steps of 20-item batches, with a compaction
after every 4th step. Each round it continues from what has committed so far and is killed
either at the N-th pass through a point of the commit protocol (``segment``: a segment written
and fsynced, nothing committed; ``generation``: inside the SQLite transaction; ``finish``: the
generation recorded, not yet committed) or after a random delay. After every kill the catalog
is reopened by a writer (which sweeps a dead writer's files) and checked:

- ``Catalog.verify()`` passes and the segment folder holds exactly the referenced files;
- every step whose ``done`` line was printed is there (durable when the call returned), and at
  most one more (the step in flight may have committed before the kill);
- no batch is half applied, and every item's vector is the one its batch and version name
  (within int8 rounding), so updates are checked by value, not only by id.

**Profiles.** A worker (this script with ``--profile-worker``) runs a deterministic schedule
of ``ProfileStore.record`` (3 events for one user) and ``forget`` (the oldest user) steps and
is killed after a random delay. After every kill: every step whose ``done`` line was printed is
there and at most one more; each user's history is exactly the recorded items in order; and
the bytes of ``profiles.sqlite`` and its ``-wal``, read before anything reopens them, hold no
trace of a user whose ``forget`` returned.

**Bundles.** The bundle worker (``tests/sdk/bundle/bundle_crash_worker.py``) rewrites one
bundle with ``write_bundle(..., force=True)`` in a loop and is killed at the N-th file copy,
the N-th rename (the kill between the swap's two renames included) or after a random delay.
After every kill the output is the last write that returned or the one in flight, and it
verifies (``Bundle.open``: every sha256, ``encoder_id``); or, killed between the swap's
renames, the previous bundle waits as a hidden ``.old-<pid>-*`` sibling that the next write
puts back; leftovers are hidden and swept by the next write.

**Power cuts.** SIGKILL keeps the page cache, so the parts above show what survives a process
crash. ``tests/sdk/catalog/catalog_crash_powercut.py`` runs the catalog schedule in process
under a file-system shim and checks the folder a power cut would leave after every fsync and
every SQLite commit (unsynced file content, renames and unlinks dropped; SQLite's files as
of its last returned commit; see that module for what it does not model).

    nice python benchmarks/crash_faults.py --kills 500 --profile-kills 200 --bundle-kills 200
    # writes results/crash_faults.{json,md}
    nice python benchmarks/crash_faults.py --parts power --power-steps 300
    # writes results/crash_faults-power.{json,md}
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
WORKER_PATH = ROOT / "tests" / "sdk" / "catalog" / "catalog_crash_worker.py"
_spec = importlib.util.spec_from_file_location("catalog_crash_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
BUNDLE_WORKER_PATH = ROOT / "tests" / "sdk" / "bundle" / "bundle_crash_worker.py"
_spec = importlib.util.spec_from_file_location("bundle_crash_worker", BUNDLE_WORKER_PATH)
bundle_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle_worker)
POWERCUT_PATH = ROOT / "tests" / "sdk" / "catalog" / "catalog_crash_powercut.py"
_spec = importlib.util.spec_from_file_location("catalog_crash_powercut", POWERCUT_PATH)
powercut = importlib.util.module_from_spec(_spec)
sys.modules["catalog_crash_powercut"] = powercut  # its dataclasses look their module up
_spec.loader.exec_module(powercut)
PARTS = ("catalog", "profiles", "bundles", "power")
COMPACT_EVERY = 4


def _spawn(cmd: list[str], delay: Optional[float]) -> tuple[int, list[int], str]:
    """Run a worker; with ``delay``, SIGKILL it ``delay`` s after its ``ready`` line. Returns
    ``(returncode, steps of its "done" lines, stderr)``.

    stdout is unbuffered bytes: a buffered ``readline()`` for ``ready`` reads ahead whatever
    else is in the pipe, and ``communicate()`` then reads the raw descriptor, so ``done``
    lines printed quickly after ``ready`` were silently lost (the harness then saw more
    committed steps than printed ones and reported a fault that was its own)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    first = b""
    if delay is not None:
        first = proc.stdout.readline()  # raw: one byte at a time, up to the newline
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    lines = (first + out).decode().splitlines()
    done = [int(line.split()[1]) for line in lines if line.startswith("done")]
    return proc.returncode, done, err.decode(errors="replace")


def _run(path: Path, start: int, die_at: Optional[str], delay: Optional[float]
         ) -> tuple[int, list[int], str]:
    cmd = [sys.executable, str(WORKER_PATH), str(path), str(start), str(start + 10_000),
           "--compact-every", str(COMPACT_EVERY)]
    cmd += ["--die-at", die_at] if die_at else []
    return _spawn(cmd, delay)


def _state(path: Path) -> dict[int, int]:
    """``{batch: version}`` after checking the catalog (raises AssertionError on a fault)."""
    from edgerec.sdk.catalog import store
    from edgerec.sdk.catalog.catalog import Catalog

    with Catalog.open(path) as cat:  # a writer's open sweeps a dead writer's files
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


def run(kills: int, seed: int) -> dict[str, Any]:
    """``kills`` rounds; returns counts per kill kind and every fault found."""
    from edgerec.sdk.catalog.catalog import Catalog

    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    faults: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgerec-crash-") as tmp:
        path = Path(tmp) / "cat"
        Catalog.create(path, dim=worker.DIM, encoder_id=worker.ENCODER).close()
        committed = 0
        for _ in range(kills):
            kind = rng.choice(["segment", "generation", "finish", "time"])
            die_at = None if kind == "time" else f"{kind}:{rng.randint(1, 6)}"
            delay = rng.uniform(0.0, 0.4) if kind == "time" else None
            rc, done, err = _run(path, committed, die_at, delay)
            if rc != -signal.SIGKILL:
                faults.append(f"worker exited {rc} instead of being killed: {err[-500:]}")
                break
            last = done[-1] + 1 if done else committed
            try:
                state = _state(path)
                if state == worker.state_after(last):
                    committed = last
                elif state == worker.state_after(last + 1) and not die_at:
                    committed = last + 1  # the step in flight committed before the kill
                else:
                    raise AssertionError(f"state after {last} printed steps is not a committed "
                                         "state (a returned call was lost?)")
            except AssertionError as exc:
                faults.append(f"{kind} {die_at} after step {last}: {exc}")
                break
            counts[kind] += 1
    return {"kills": sum(counts.values()), "by_kind": dict(counts), "steps_committed": committed,
            "compactions": committed // COMPACT_EVERY, "faults": faults,
            "wall_s": round(time.monotonic() - started, 1)}


# ------------------------------------------------------------------------------- profiles


def _profile_step(step: int, state: dict[str, tuple[str, ...]]) -> tuple[str, str]:
    """``(op, user)`` of a profile step: every 6th forgets the oldest user (never the one being
    recorded now, so a forgotten id never comes back), the others record for ``u{step // 3}``."""
    current = f"u{step // 3:05d}"
    older = sorted(u for u in state if u != current)
    if step % 6 == 5 and older:
        return "forget", older[0]
    return "record", current


def _profile_state(steps: int) -> tuple[dict[str, tuple[str, ...]], dict[int, str]]:
    """``({user: items in order}, {step: user it forgot})`` once ``steps`` steps have
    committed."""
    state: dict[str, tuple[str, ...]] = {}
    forgotten: dict[int, str] = {}
    for step in range(steps):
        op, user = _profile_step(step, state)
        if op == "forget":
            del state[user]
            forgotten[step] = user
        else:
            state[user] = (*state.get(user, ()), *(f"s{step}-{j}" for j in range(3)))
    return state, forgotten


def profile_worker(path: str, start: int) -> None:
    from edgerec.sdk.profile import Event, ProfileStore

    state, _ = _profile_state(start)
    with ProfileStore.open(path) as store:
        print("ready", flush=True)
        for step in range(start, start + 100_000):
            op, user = _profile_step(step, state)
            if op == "forget":
                store.forget(user)
                del state[user]
            else:
                items = [f"s{step}-{j}" for j in range(3)]
                store.record(user, [Event(i, "view", float(step)) for i in items])
                state[user] = (*state.get(user, ()), *items)
            print(f"done {step}", flush=True)


def _check_profiles(path: Path, last: int, returned: set[int]) -> int:
    """The committed step count (``last`` or ``last + 1``); raises AssertionError on a fault.
    ``returned``: every step whose ``done`` line was printed, in any round."""
    from edgerec.sdk.profile import ProfileStore

    # No byte may remain of a user whose forget() returned. A forget killed after its delete
    # committed (its VACUUM not done) promised nothing: the user is gone from the profiles but
    # the next forget scrubs the file.
    _, forgets = _profile_state(last)
    forgotten = {user for step, user in forgets.items() if step in returned}
    raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    left = sorted(u for u in forgotten if u.encode() in raw)
    assert not left, f"forgotten users still in the file's bytes: {left[:5]}"
    with ProfileStore.open(path) as store:
        got = {u: tuple(e.item_id for e in store.history(u)) for u in store.users()}
    for steps in (last, last + 1):
        if got == _profile_state(steps)[0]:
            return steps
    raise AssertionError(f"the profiles after {last} printed steps are no committed state")


def run_profiles(kills: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    faults: list[str] = []
    done_kills, committed, started = 0, 0, time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgerec-crash-") as tmp:
        path = Path(tmp) / "profiles.sqlite"
        returned: set[int] = set()
        for _ in range(kills):
            cmd = [sys.executable, __file__, "--profile-worker", str(path), str(committed)]
            rc, done, err = _spawn(cmd, rng.uniform(0.0, 0.3))
            if rc != -signal.SIGKILL:
                faults.append(f"profile worker exited {rc}: {err[-500:]}")
                break
            returned.update(done)
            last = done[-1] + 1 if done else committed
            try:
                committed = _check_profiles(path, last, returned)
            except AssertionError as exc:
                faults.append(f"after profile step {last}: {exc}")
                break
            done_kills += 1
        _, forgets = _profile_state(committed)
    return {"kills": done_kills, "steps_committed": committed,
            "forgets": sum(step in returned for step in forgets),
            "faults": faults, "wall_s": round(time.monotonic() - started, 1)}


# -------------------------------------------------------------------------------- bundles


def run_bundles(kills: int, seed: int) -> dict[str, Any]:
    """``kills`` rounds of the bundle worker's ``write_bundle`` loop, each killed at the N-th
    copy or rename or after a random delay; :func:`bundle_worker.check` after each."""
    from edgerec.sdk import ImportOptions, import_model
    from edgerec.sdk.bundle.writer import write_bundle

    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    found: Counter[str] = Counter()
    faults: list[str] = []
    started = time.monotonic()
    teacher = (ROOT / "examples" / "sample" / "teacher"
               / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    with tempfile.TemporaryDirectory(prefix="edgerec-crash-") as tmp:
        src = Path(tmp) / "src" / "teacher"  # the sample's 4 MB teacher: kills land in copies
        import_model([teacher], src, ImportOptions(raw_pixels=True, name="teacher"))
        out = Path(tmp) / "out" / "bundle"
        out.parent.mkdir()
        last: Optional[int] = None
        live_pids: set[int] = set()
        for _ in range(kills):
            kind = rng.choice(["copy", "rename", "time"])
            die_at = None if kind == "time" else f"{kind}:{rng.randint(1, 9)}"
            delay = rng.uniform(0.0, 0.5) if kind == "time" else None
            start = 0 if last is None else last + 1
            cmd = [sys.executable, str(BUNDLE_WORKER_PATH), str(src), str(out), str(start)]
            cmd += ["--die-at", die_at] if die_at else []
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    bufsize=0)
            first = b""
            if delay is not None:
                first = proc.stdout.readline()
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
            out_bytes, err = proc.communicate(timeout=120)
            if proc.returncode != -signal.SIGKILL:
                faults.append(f"bundle worker exited {proc.returncode}: {err[-500:]!r}")
                break
            done = [int(x.split()[1]) for x in (first + out_bytes).decode().splitlines()
                    if x.startswith("done")]
            live_pids = {proc.pid} if done else live_pids | {proc.pid}
            last = done[-1] if done else last
            try:
                n, how = bundle_worker.check(out, last, live_pids)
            except AssertionError as exc:
                faults.append(f"bundle {kind} {die_at} after write {last}: {exc}")
                break
            last = n if how == "verified" else last
            counts[kind] += 1
            found[how] += 1
        if not faults:  # one more write sweeps every leftover
            write_bundle(out, name="crash-final", force=True, **bundle_worker.sources(src))
            rest = [p.name for p in out.parent.iterdir() if p != out]
            if rest:
                faults.append(f"leftovers after a final write: {rest}")
    return {"kills": sum(counts.values()), "by_kind": dict(counts), "found": dict(found),
            "writes_completed": 0 if last is None else last + 1, "faults": faults,
            "wall_s": round(time.monotonic() - started, 1)}


def run_power(steps: int, seed: int) -> dict[str, Any]:
    """The catalog schedule's ``steps`` under the power-cut shim, every cut checked."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgerec-powercut-") as tmp:
        result = powercut.run(Path(tmp), steps, compact_every=COMPACT_EVERY, seed=seed)
    return {**result, "wall_s": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500, help="catalog writer kills")
    parser.add_argument("--profile-kills", type=int, default=200, help="profile writer kills")
    parser.add_argument("--bundle-kills", type=int, default=200, help="bundle writer kills")
    parser.add_argument("--power-steps", type=int, default=300,
                        help="catalog steps run under the power-cut shim")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-worker", nargs=2, metavar=("PATH", "START"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile_worker:
        profile_worker(args.profile_worker[0], int(args.profile_worker[1]))
        return
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    results: dict[str, Any] = {}
    lines = []
    if "catalog" in parts:
        catalog = results["catalog"] = run(args.kills, args.seed)
        lines.append(
            f"- catalog writer: {catalog['kills']} SIGKILLs survived "
            f"({', '.join(f'{k} {v}' for k, v in sorted(catalog['by_kind'].items()))}), "
            f"{catalog['steps_committed']} add/update/remove steps committed "
            f"({catalog['compactions']} compactions), {catalog['wall_s']} s.")
    if "profiles" in parts:
        profiles = results["profiles"] = run_profiles(args.profile_kills, args.seed)
        lines.append(
            f"- profile writer: {profiles['kills']} SIGKILLs survived, "
            f"{profiles['steps_committed']} record/forget steps committed "
            f"({profiles['forgets']} forgets returned, no byte of those users left), "
            f"{profiles['wall_s']} s.")
    if "bundles" in parts:
        bundles = results["bundles"] = run_bundles(args.bundle_kills, args.seed)
        lines.append(
            f"- bundle writer (`write_bundle`, force): {bundles['kills']} SIGKILLs survived "
            f"({', '.join(f'{k} {v}' for k, v in sorted(bundles['by_kind'].items()))}), "
            f"{bundles['writes_completed']} writes completed; after each kill the output was "
            f"the last returned write or the one in flight "
            f"({', '.join(f'{k} {v}' for k, v in sorted(bundles['found'].items()))}), and "
            f"every leftover was swept by the next write, {bundles['wall_s']} s.")
    if "power" in parts:
        power = results["power"] = run_power(args.power_steps, args.seed)
        lines.append(
            f"- power cuts (catalog, unsynced writes dropped): {power['cuts_checked']} cuts "
            f"checked ({', '.join(f'{k} {v}' for k, v in sorted(power['by_event'].items()))}"
            f") over {power['steps']} steps, each reopened at a committed generation holding "
            f"every returned step, {power['wall_s']} s.")
    faults = [f for part in results.values() for f in part["faults"]]
    counts = {"catalog": "kills", "profiles": "profile_kills", "bundles": "bundle_kills",
              "power": "power_steps"}
    command = "python benchmarks/crash_faults.py " + " ".join(
        f"--{counts[p].replace('_', '-')} {getattr(args, counts[p])}" for p in parts)
    if set(parts) != set(PARTS):
        command += f" --parts {','.join(parts)}"
    markdown = (f"# Crash faults\n\n`{command}`, {machine_info()['date']}, {len(faults)} "
                f"faults.\n\n" + "\n".join(lines) + "\n"
                + "".join(f"\n- fault: {f}" for f in faults))
    name = "crash_faults" if set(parts) == set(PARTS) else "crash_faults-" + "-".join(parts)
    write(name, {"machine": machine_info(), "args": vars(args), **results}, markdown)
    print(markdown)
    sys.exit(1 if faults else 0)


if __name__ == "__main__":
    main()
