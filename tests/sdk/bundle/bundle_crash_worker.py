"""A bundle writer to be killed: writes one bundle again and again with ``write_bundle``.

    python bundle_crash_worker.py SRC OUT START [--die-at POINT:N]

Copies the bundle at ``SRC`` to ``OUT`` (``force``) in a loop, naming write ``n`` ``crash-<n>``
from ``n = START``; prints ``ready`` once the sources are read, then ``done n`` after write
``n`` returned. ``--die-at`` sends SIGKILL to itself right after the N-th pass through:

- ``copy``: a file copied (and hashed) into the hidden temporary directory;
- ``rename``: any rename (the manifest's atomic write, moving the old bundle aside, moving the
  new one into place: the kill between the swap's two renames is ``rename:4``, ``rename:7``, ...).

:func:`check` is what must hold after any kill; the test and ``benchmarks/crash_faults.py``
both use it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Optional


def sources(src: Path) -> dict[str, Any]:
    """The ``write_bundle`` arguments that copy the bundle at ``src``."""
    from edgerec.sdk.bundle.bundle import Bundle
    from edgerec.sdk.bundle.writer import NewArtifact

    bundle = Bundle.open(src)
    arts = [NewArtifact(bundle.artifact_path(a), a.role, a.precision, a.inputs, a.outputs,
                        a.output, a.layout, a.file, a.engine) for a in bundle.artifacts()]
    return {"artifacts": arts, "preprocessing": bundle.preprocessing,
            "embedding_dim": bundle.embedding_dim}


def check(out: Path, last: Optional[int], live_pids: set[int]) -> tuple[Optional[int], str]:
    """What a kill left at ``out``: ``(number of the bundle there or None, how)`` where how is
    ``"absent"`` (no write returned yet), ``"verified"`` or ``"aside"`` (killed between the
    swap's two renames: the previous bundle waits as ``.<out>.old-<pid>-*`` and the next
    ``write_bundle`` puts it back). Raises AssertionError on a fault.

    ``last``: the newest write that returned; the bundle must be it or the one in flight.
    ``live_pids``: the killed workers whose leftovers may remain (those since the last one
    that completed a write, which swept older ones); leftovers are hidden siblings only.
    """
    from edgerec.sdk.bundle.bundle import Bundle
    from edgerec.sdk.errors import BundleError

    siblings = [p for p in out.parent.iterdir() if p != out]
    leftovers = [p for p in siblings if p.name.startswith(f".{out.name}.")]
    assert len(leftovers) == len(siblings), f"visible leftovers: {siblings}"
    stray = [p.name for p in leftovers if int(p.name.rsplit("-", 2)[1]) not in live_pids]
    assert not stray, f"leftovers a later write should have cleaned: {stray}"
    target, how = out, "verified"
    if not out.exists():
        aside = [p for p in leftovers if ".old-" in p.name]
        if last is None and not aside:
            return None, "absent"
        assert len(aside) == 1, f"{out} is gone after write {last} returned"
        target, how = aside[0], "aside"
    try:
        bundle = Bundle.open(target)  # every sha256, encoder_id, the manifest
    except BundleError as exc:
        raise AssertionError(f"{target.name} does not verify: {exc}") from exc
    n = int(bundle.manifest.name.split("-")[1])
    allowed = {last, last + 1} if last is not None else {0}
    if how == "aside":
        allowed = {last} if last is not None else set()
    assert n in allowed, f"{target.name} holds write {n}, expected one of {sorted(allowed)}"
    return n, how


def _die_at(point: str, nth: int) -> None:
    from edgerec.sdk.bundle import writer

    calls = {"n": 0}

    def hit() -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "copy":
        original_copy = writer.copy_hashed

        def copy_hashed(src, dst):  # type: ignore[no-untyped-def]
            digest = original_copy(src, dst)
            hit()
            return digest

        writer.copy_hashed = copy_hashed
    elif point == "rename":
        original_replace = os.replace

        def replace(src, dst):  # type: ignore[no-untyped-def]
            original_replace(src, dst)
            hit()

        os.replace = replace
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src")
    parser.add_argument("out")
    parser.add_argument("start", type=int)
    parser.add_argument("--die-at", default=None, help="POINT:N, e.g. rename:2")
    args = parser.parse_args(argv)
    from edgerec.sdk.bundle.writer import write_bundle

    arguments = sources(Path(args.src))
    if args.die_at:
        point, nth = args.die_at.split(":")
        _die_at(point, int(nth))
    print("ready", flush=True)
    for n in range(args.start, args.start + 100_000):
        write_bundle(args.out, name=f"crash-{n}", force=True, **arguments)
        print(f"done {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
