"""Power cuts for the bundle writer: ``write_bundle(..., force=True)`` rewrites one bundle (the
tiny fixture model, with a ``report/report.html`` extra file) again and again under the power-cut
shim (:mod:`powercut_disk` says exactly what each kind of cut keeps), and the folder a cut leaves
is checked at every event (or a random sample of them): after every fsync, and after every
rename, mkdir, unlink and tree removal with all metadata so far on disk.

After every cut:

- nothing but hidden ``.bundle.*`` leftovers sits beside the bundle;
- the bundle at the final path is absent only before the first write returned, or (a cut
  between the swap's two renames, with the first on disk) waits aside as ``.bundle.old-*``;
- otherwise it verifies (``Bundle.open``: every sha256, ``encoder_id``), its report has the
  bytes written, and it is the last write that returned or the one in flight;
- the next writer (every process is gone after a power cut) puts an aside bundle back, and its
  ``write_bundle`` succeeds and sweeps every leftover.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

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

FIXTURES = Path(__file__).parents[2] / "fixtures"
REPORT = "report/report.html"


def sources(workdir: Path) -> dict[str, Any]:
    """The ``write_bundle`` arguments of every write: the tiny fixture model as a bundle, and
    a report file."""
    from edgerec.sdk import ImportOptions, import_model
    from edgerec.sdk.bundle.bundle import Bundle
    from edgerec.sdk.bundle.writer import NewArtifact

    src = workdir / "src"
    import_model([FIXTURES / "tiny_embedder.onnx"], src,
                 ImportOptions(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="tiny"))
    bundle = Bundle.open(src)
    report = workdir / "report.html"
    report.write_bytes(b"<html>" + bytes(range(256)) * 16 + b"</html>")
    arts = [NewArtifact(bundle.artifact_path(a), a.role, a.precision, a.inputs, a.outputs,
                        a.output, a.layout, a.file, a.engine) for a in bundle.artifacts()]
    return {"artifacts": arts, "preprocessing": bundle.preprocessing,
            "embedding_dim": bundle.embedding_dim, "extra_files": {REPORT: report}}


@contextmanager
def _after_reboot() -> Iterator[None]:
    """No writer process survives a power cut: every leftover's writer is gone."""
    from edgerec.sdk.bundle import writer

    real = writer._writer_gone
    writer._writer_gone = lambda leftover: True
    try:
        yield
    finally:
        writer._writer_gone = real


def _written(path: Path, report: bytes) -> int:
    """The write number of the bundle at ``path`` (``crash-<n>``), once it verifies."""
    from edgerec.sdk.bundle.bundle import Bundle
    from edgerec.sdk.errors import BundleError

    try:
        bundle = Bundle.open(path)
    except BundleError as exc:
        raise AssertionError(f"{path.name} does not verify: {exc}") from exc
    got = (path / REPORT).read_bytes() if (path / REPORT).is_file() else None
    assert got == report, f"{path.name}/{REPORT} is {'missing' if got is None else 'wrong'}"
    return int(bundle.manifest.name.split("-")[1])


def check(out: Path, returned: int, arguments: dict[str, Any]) -> str:
    """What a cut left at ``out`` after ``returned`` writes returned: ``"absent"``,
    ``"verified"`` or ``"aside"``; raises AssertionError on a fault."""
    from edgerec.sdk.bundle import writer

    report = Path(arguments["extra_files"][REPORT]).read_bytes()
    siblings = [p for p in out.parent.iterdir() if p != out]
    visible = [p.name for p in siblings if not p.name.startswith(f".{out.name}.")]
    assert not visible, f"visible leftovers: {visible}"
    allowed = {returned - 1, returned} if returned else {0}
    if out.exists():
        how, n = "verified", _written(out, report)
    else:
        aside = [p for p in siblings if ".old-" in p.name]
        assert returned == 0 or aside, f"{out.name} is gone after write {returned - 1} returned"
        assert len(aside) <= 1, f"{len(aside)} bundles wait aside: {[p.name for p in aside]}"
        how, n = ("aside", _written(aside[0], report)) if aside else ("absent", None)
        allowed = {returned - 1} if returned else {n}
    assert n is None or n in allowed, f"the bundle holds write {n}, expected {sorted(allowed)}"
    with _after_reboot():
        writer._remove_stale_temps(out)  # what the next write_bundle does first
        if how == "aside":
            assert _written(out, report) == n, "the bundle put back is not the one aside"
        writer.write_bundle(out, name="crash-999999", force=True, **arguments)
    rest = [p.name for p in out.parent.iterdir() if p != out]
    assert not rest, f"leftovers after the next write: {rest}"
    return how


def run(workdir: Path, writes: int, *, sample: Optional[int] = None, seed: int = 0
        ) -> dict[str, Any]:
    """``writes`` forced rewrites of one bundle under the shim, then the cut after every event
    (or ``sample`` random ones) checked. Returns counts and the faults found."""
    from edgerec.sdk.bundle.writer import write_bundle

    arguments = sources(workdir)
    root = (workdir / "out").resolve()
    root.mkdir()
    graveyard = workdir / "unlinked"
    graveyard.mkdir()
    disk = disk_model.Disk(root, graveyard, seed=seed)
    disk.baseline()
    with disk_model.shim(disk, sqlite=False):
        for n in range(writes):
            write_bundle(root / "bundle", name=f"crash-{n}", force=True, **arguments)
            disk.returned = n + 1
    cuts = disk_model.sample(disk.cuts, sample, seed)
    by_event, inside = disk_model.count(cuts)
    faults: list[str] = []
    found: Counter[str] = Counter()
    for n, cut in enumerate(cuts):
        out = workdir / f"cut-{n}"
        disk_model.materialize(cut, disk, out)
        try:
            found[check(out / "bundle", cut.returned, arguments)] += 1
        except Exception as exc:  # a BundleError is a fault here too
            faults.append(f"cut {n} ({cut.event}, {cut.returned} returned): {exc!r}")
        shutil.rmtree(out)
    return {"writes": writes, "events": len(disk.cuts),
            "events_by_event": disk_model.count(disk.cuts)[0], "cuts_checked": len(cuts),
            "by_event": by_event, "inside": inside, "found": dict(found), "faults": faults}
