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
crash. The ``power`` part runs each writer's schedule in this process under a file-system shim
(``tests/powercut_disk.py``, which says exactly what each kind of cut keeps: file content as of
its last fsync, folder entries as of the folder's last fsync or, for a "journal" cut, every
metadata change so far; SQLite's own writes and fsyncs recorded through a VFS of the shim's,
with cuts inside its commits and checkpoints keeping part of its unsynced writes, torn at a
random byte or any subset of 512-byte sectors) and checks the folder a cut leaves, with the
kill parts' invariants, after every event or ``--power-cuts`` random ones per writer
(``--power-parts catalog,profiles,bundles``):

- catalog (``tests/sdk/catalog/catalog_crash_powercut.py``): the catalog schedule above;
- profiles (``tests/sdk/profile_crash_powercut.py``): the profile schedule above; the store does
  not fsync each commit (``synchronous=NORMAL``), so a cut may roll back to SQLite's last fsync,
  never further, never half a record, and never bring back a user whose ``forget`` returned;
- bundles (``tests/sdk/bundle/bundle_crash_powercut.py``): ``write_bundle(..., force=True)`` of
  the tiny fixture model with a ``report/`` extra file.

    nice python benchmarks/crash_faults.py --kills 500 --profile-kills 200 --bundle-kills 200 \
        --parts catalog,profiles,bundles   # writes results/crash_faults-catalog-profiles-bundles.*
    nice python benchmarks/crash_faults.py --parts power --power-steps 300 --power-cuts 1500
    # writes results/crash_faults-power.{json,md}
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

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


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_load("powercut_disk", ROOT / "tests" / "powercut_disk.py")
powercut = _load("catalog_crash_powercut",
                 ROOT / "tests" / "sdk" / "catalog" / "catalog_crash_powercut.py")
profile_powercut = _load("profile_crash_powercut",
                         ROOT / "tests" / "sdk" / "profile_crash_powercut.py")
bundle_powercut = _load("bundle_crash_powercut",
                        ROOT / "tests" / "sdk" / "bundle" / "bundle_crash_powercut.py")
PARTS = ("catalog", "profiles", "bundles", "power")
POWER_PARTS = ("catalog", "profiles", "bundles")
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
    # whole lines only: a kill can cut a "done N" line short (as conftest.done_steps says)
    whole = (first + out).decode().split("\n")[:-1]
    done = [int(m[1]) for m in map(re.compile(r"done (\d+)").fullmatch, whole) if m]
    return proc.returncode, done, err.decode(errors="replace")


def _run(path: Path, start: int, die_at: Optional[str], delay: Optional[float]
         ) -> tuple[int, list[int], str]:
    cmd = [sys.executable, str(WORKER_PATH), str(path), str(start), str(start + 10_000),
           "--compact-every", str(COMPACT_EVERY)]
    cmd += ["--die-at", die_at] if die_at else []
    return _spawn(cmd, delay)


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
                state = powercut.state_of(path)
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


def profile_worker(path: str, start: int) -> None:
    from edgerec.sdk.profile import Event, ProfileStore

    state, _ = profile_powercut.state_after(start)
    with ProfileStore.open(path) as store:
        print("ready", flush=True)
        for step in range(start, start + 100_000):
            op, user = profile_powercut.schedule(step, state)
            if op == "forget":
                store.forget(user)
                del state[user]
            else:
                items = profile_powercut.items_of(step)
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
    _, forgets = profile_powercut.state_after(last)
    forgotten = {user for step, user in forgets.items() if step in returned}
    raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    left = sorted(u for u in forgotten if u.encode() in raw)
    assert not left, f"forgotten users still in the file's bytes: {left[:5]}"
    with ProfileStore.open(path) as store:
        got = {u: tuple(e.item_id for e in store.history(u)) for u in store.users()}
    for steps in (last, last + 1):
        if got == profile_powercut.state_after(steps)[0]:
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
        _, forgets = profile_powercut.state_after(committed)
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


POWER_NOTE = """
What a power cut keeps (`tests/powercut_disk.py`): a file's bytes as of its last fsync, a
folder's entries as of the folder's last fsync, SQLite's files as of SQLite's last fsync of
each (its writes and fsyncs recorded through a VFS of the harness's). Events: `fsync` (after
each of edgerec's fsyncs) and `commit` (after each SQLite COMMIT) are the events the earlier
catalog-only runs checked; `sqlite-sync` (after each of SQLite's fsyncs), `journal` (after each
rename, mkdir, unlink or delete, with every metadata change so far on disk and file data still
only as fsynced), and `torn` / `sectors` (just before each of SQLite's fsyncs and after each
commit: part of SQLite's unsynced writes on disk, in order up to a random byte, or any subset
of 512-byte sectors: cuts inside a commit or a checkpoint) are new. With `--power-cuts`, a
random sample of each writer's events is checked.
"""


def run_power(part: str, size: int, cuts: Optional[int], seed: int) -> dict[str, Any]:
    """One writer's schedule (``size`` catalog or profile steps, or bundle writes) under the
    power-cut shim; every cut checked, or ``cuts`` random ones."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgerec-powercut-") as tmp:
        if part == "catalog":
            result = powercut.run(Path(tmp), size, compact_every=COMPACT_EVERY, sample=cuts,
                                  seed=seed)
        elif part == "profiles":
            result = profile_powercut.run(Path(tmp), size, sample=cuts, seed=seed)
        else:
            result = bundle_powercut.run(Path(tmp), size, sample=cuts, seed=seed)
    return {**result, "wall_s": round(time.monotonic() - started, 1)}


def _power_line(part: str, r: dict[str, Any]) -> str:
    def kinds(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))

    inside = ", ".join(f"{v} {'after a commit' if k == 'after commit' else 'before a ' + k}"
                       for k, v in sorted(r["inside"].items()))
    checked = ("every one" if r["cuts_checked"] == r["events"]
               else f"{r['cuts_checked']:,} random ones: {kinds(r['by_event'])}")
    head = (f"- power cuts, {part}: {r['events']:,} events ({kinds(r['events_by_event'])}), "
            f"cuts checked at {checked}" + (f" (torn/sectors: {inside})" if inside else ""))
    if part == "catalog":
        return (f"{head} over {r['steps']} add/update/remove steps (compaction every "
                f"{COMPACT_EVERY}), each reopened at a committed generation holding every "
                f"returned step, batches whole, vectors by value, {r['wall_s']} s.")
    if part == "profiles":
        return (f"{head} over {r['steps']} record/forget steps ({r['forgets']} forgets): each "
                f"opened with integrity_check ok at a committed state no older than SQLite's "
                f"last fsync (older than the last returned step in {r['rolled_back']} cuts: "
                f"synchronous=NORMAL), no byte of a user whose forget returned, {r['wall_s']} s.")
    found = ", ".join(f"{k} {v}" for k, v in sorted(r["found"].items()))
    return (f"{head} over {r['writes']} forced rewrites of one bundle: each left no bundle "
            f"(before the first returned), the last returned or the one in flight, verified "
            f"with its report, or the previous one aside, put back by the next write ({found}), "
            f"{r['wall_s']} s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500, help="catalog writer kills")
    parser.add_argument("--profile-kills", type=int, default=200, help="profile writer kills")
    parser.add_argument("--bundle-kills", type=int, default=200, help="bundle writer kills")
    parser.add_argument("--power-parts", default=",".join(POWER_PARTS),
                        help=f"writers the power part runs, of {', '.join(POWER_PARTS)}")
    parser.add_argument("--power-steps", type=int, default=300,
                        help="catalog steps run under the power-cut shim")
    parser.add_argument("--power-profile-steps", type=int, default=600,
                        help="profile steps run under the power-cut shim")
    parser.add_argument("--power-bundle-writes", type=int, default=40,
                        help="bundle writes run under the power-cut shim")
    parser.add_argument("--power-cuts", type=int, default=None,
                        help="cuts checked per writer, a random sample (default: every one)")
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
    power_parts = [p for p in args.power_parts.split(",") if p]
    unknown = set(power_parts) - set(POWER_PARTS)
    if unknown:
        parser.error(f"unknown power parts {sorted(unknown)}; choose from "
                     f"{', '.join(POWER_PARTS)}")
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
        sizes = {"catalog": args.power_steps, "profiles": args.power_profile_steps,
                 "bundles": args.power_bundle_writes}
        power = results["power"] = {"faults": []}
        for part in power_parts:
            power[part] = run_power(part, sizes[part], args.power_cuts, args.seed)
            power["faults"] += [f"{part}: {f}" for f in power[part]["faults"]]
            lines.append(_power_line(part, power[part]))
    faults = [f for part in results.values() for f in part["faults"]]
    options = {"catalog": ["kills"], "profiles": ["profile_kills"],
               "bundles": ["bundle_kills"],
               "power": [f"power_{o}" for o, p in (("steps", "catalog"),
                                                   ("profile_steps", "profiles"),
                                                   ("bundle_writes", "bundles"))
                         if p in power_parts] + ["power_cuts"]}
    command = "python benchmarks/crash_faults.py " + " ".join(
        f"--{o.replace('_', '-')} {getattr(args, o)}" for p in parts for o in options[p]
        if getattr(args, o) is not None)
    if set(parts) != set(PARTS):
        command += f" --parts {','.join(parts)}"
    if "power" in parts and set(power_parts) != set(POWER_PARTS):
        command += f" --power-parts {','.join(power_parts)}"
    markdown = (f"# Crash faults\n\n`{command}`, {machine_info()['date']}, {len(faults)} "
                f"faults.\n\n" + "\n".join(lines) + "\n"
                + (POWER_NOTE if "power" in parts else "")
                + "".join(f"\n- fault: {f}" for f in faults))
    name = "crash_faults" if set(parts) == set(PARTS) else "crash_faults-" + "-".join(parts)
    write(name, {"machine": machine_info(), "args": vars(args), **results}, markdown)
    print(markdown)
    sys.exit(1 if faults else 0)


if __name__ == "__main__":
    main()
