"""A catalog writer to be killed: runs a deterministic schedule of add/update/remove steps.

    python catalog_crash_worker.py PATH START STOP [--die-at POINT:N] [--compact-every K]
                                   [--dim D --encoder ID]

Prints ``ready`` once the catalog is open, then ``done S`` after step ``S`` has committed.
With ``--compact-every K`` it also compacts after every K-th step (which changes no item).
``--die-at`` sends SIGKILL to itself at the N-th pass through a point of the commit protocol:

- ``segment``: just after a segment file was written and fsynced (nothing committed yet);
- ``generation``: inside the SQLite transaction, items changed, generation row not yet written;
- ``finish``: the generation is fully recorded, the transaction not yet committed.

The test imports :func:`schedule`, :func:`state_after` and :func:`vectors_of` to know what the
catalog must hold after any number of committed steps.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import numpy as np

BATCH = 20
DIM = 16
ENCODER = "crash-test-encoder"


def item_ids(batch: int) -> list[str]:
    return [f"b{batch:04d}-{i:02d}" for i in range(BATCH)]


def vectors_of(batch: int, version: int, dim: int = DIM) -> np.ndarray:
    """The float32 ``(BATCH, dim)`` vectors of a batch at a version."""
    return np.random.default_rng([batch, version]).standard_normal((BATCH, dim)).astype(np.float32)


def schedule(step: int, state: dict[int, int]) -> tuple[str, int]:
    """The operation of ``step`` given the state before it: ``(op, batch)``."""
    if step % 5 == 4 and len(state) >= 2:
        return "remove", min(state)
    if step % 3 == 2 and state:
        return "update", max(state)
    return "add", step


def apply(step: int, state: dict[int, int]) -> dict[int, int]:
    op, batch = schedule(step, state)
    state = dict(state)
    if op == "add":
        state[batch] = 0
    elif op == "update":
        state[batch] += 1
    else:
        del state[batch]
    return state


def state_after(steps: int) -> dict[int, int]:
    """``{batch: version}`` once steps ``0 .. steps - 1`` have committed."""
    state: dict[int, int] = {}
    for s in range(steps):
        state = apply(s, state)
    return state


def _die_at(point: str, nth: int) -> None:
    from edgerec.sdk.catalog import store as catalog_store
    from edgerec.sdk.catalog import writer as catalog_writer

    calls = {"n": 0}

    def hit() -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "segment":
        original = catalog_store.write_npy

        def write_npy(path, array):  # type: ignore[no-untyped-def]
            digest = original(path, array)
            hit()
            return digest

        catalog_store.write_npy = write_npy
    elif point == "generation":
        original_ins = catalog_store.insert_generation

        def insert_generation(*args, **kwargs):  # type: ignore[no-untyped-def]
            hit()
            return original_ins(*args, **kwargs)

        catalog_store.insert_generation = insert_generation
    elif point == "finish":
        original_fin = catalog_writer.GenerationWriter.finish

        def finish(self):  # type: ignore[no-untyped-def]
            result = original_fin(self)
            hit()
            return result

        catalog_writer.GenerationWriter.finish = finish
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("start", type=int)
    parser.add_argument("stop", type=int)
    parser.add_argument("--die-at", default=None, help="POINT:N, e.g. segment:3")
    parser.add_argument("--compact-every", type=int, default=0, help="compact after every K")
    parser.add_argument("--dim", type=int, default=DIM, help="the catalog's dimension")
    parser.add_argument("--encoder", default=ENCODER, help="the catalog's encoder_id")
    args = parser.parse_args(argv)
    if args.die_at:
        point, nth = args.die_at.split(":")
        _die_at(point, int(nth))
    from edgerec.sdk.catalog.catalog import Catalog

    state = state_after(args.start)
    with Catalog.open(args.path) as catalog:
        print("ready", flush=True)
        for step in range(args.start, args.stop):
            op, batch = schedule(step, state)
            state = apply(step, state)
            ids = item_ids(batch)
            if op == "add":
                meta = [{"batch": batch, "i": i, "v": 0} for i in range(BATCH)]
                catalog.add(ids, vectors_of(batch, 0, args.dim), meta, encoder_id=args.encoder)
            elif op == "update":
                v = state[batch]
                meta = [{"batch": batch, "i": i, "v": v} for i in range(BATCH)]
                catalog.update(ids, vectors_of(batch, v, args.dim), meta)
            else:
                catalog.remove(ids)
            print(f"done {step}", flush=True)
            if args.compact_every and (step + 1) % args.compact_every == 0:
                catalog.compact()
    return 0


if __name__ == "__main__":
    sys.exit(main())
