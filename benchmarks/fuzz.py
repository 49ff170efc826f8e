"""The long fuzz run (issue 16): the properties of the fuzz tests with a large budget.

Targets, each a property from the tests (``tests/sdk/...``) and the hypothesis strategy that
feeds it:

    image-bytes      mutated JPEG/PNG/GIF/BMP/TIFF/WebP and random bytes -> preprocess
    image-arrays     random arrays of any dtype and shape -> preprocess
    manifest         a real manifest with random values anywhere, keys dropped, encoder_id
                     recomputed or not, bytes damaged -> Bundle.open -> Encoder.embed
    catalog-header   catalog.json with random fields or bytes -> Catalog.open -> search
    catalog-segment  a segment's .npy header with damaged bytes -> Catalog.open -> search
    events           events CSVs with random headers, cells and bytes -> read_events

Each property passes when the input is refused with the EdgeRecError subclass its reader
documents or gives a valid result; anything else (another exception, a bad result) is a crash,
counted and printed with hypothesis's shrunk example. Hypothesis runs batches of
``--batch`` examples with a new seed each until the target's share of ``--minutes`` is spent
(only generation: shrinking runs on a failure only).

    nice python benchmarks/fuzz.py --minutes 30     # writes results/fuzz.{json,md}
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _module(rel: str) -> ModuleType:
    """A test module by path (the tests are not a package)."""
    path = TESTS / rel
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _targets(work: Path) -> dict[str, tuple[Any, Callable[..., str]]]:
    """name -> (strategy of argument tuples, property returning its outcome)."""
    from hypothesis import strategies as st

    sys.path.insert(0, str(TESTS))
    import conftest
    from edgerec.sdk import Engine, ImportOptions, import_model

    images = _module("sdk/test_image_fuzz.py")
    manifests = _module("sdk/bundle/test_manifest_fuzz.py")
    catalogs = _module("sdk/catalog/test_catalog_fuzz.py")
    events = _module("sdk/evaluation/test_events_fuzz.py")

    bundle = import_model([conftest.TINY_ONNX, conftest.TINY_TFLITE], work / "bundle",
                          ImportOptions(mean=(0.5,) * 3, std=(0.25,) * 3, name="tiny"))
    base_manifest = json.loads((bundle.path / "manifest.json").read_text())
    pristine = catalogs.make_catalog(work / "catalog")
    base_header = json.loads((pristine / "catalog.json").read_text())
    scratch = work / "scratch"

    return {
        "image-bytes": (st.tuples(images.image_bytes), images.check_image),
        "image-arrays": (st.tuples(images.image_arrays), images.check_image),
        "manifest": (st.tuples(manifests.manifests(base_manifest), st.sampled_from(list(Engine))),
                     lambda text, engine: manifests.check_manifest(bundle.path, text, engine)),
        "catalog-header": (st.tuples(catalogs.headers(base_header)), lambda text: (
            catalogs.check_catalog(catalogs.write_header(pristine, scratch, text)))),
        "catalog-segment": (st.tuples(catalogs.segment_edits), lambda edits: (
            catalogs.check_catalog(catalogs.write_segment_edits(pristine, scratch, edits)))),
        "events": (st.tuples(events.events_files(), st.booleans()),
                   lambda data, known: events.check_events(work / "events.csv", data, known)),
    }


def run_target(strategy: Any, prop: Callable[..., str], seconds: float,
               batch: int) -> dict[str, Any]:
    """Batches of ``batch`` hypothesis examples, a new seed each, for ``seconds``."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    counts: Counter[str] = Counter()
    crashes: list[str] = []
    cpu, wall, batches = time.process_time(), time.monotonic(), 0
    while time.monotonic() - wall < seconds:
        @settings(max_examples=batch, deadline=None, database=None,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
                  print_blob=True)
        @seed(batches)
        @given(strategy)
        def case(args: tuple) -> None:
            counts[prop(*args)] += 1

        try:
            case()
        except Exception as exc:  # the property failed: a crash outside EdgeRecError
            counts["crash"] += 1
            crashes.append("".join(traceback.format_exception_only(type(exc), exc))[-2000:])
            print(crashes[-1], file=sys.stderr)
        batches += 1
    return {"cases": sum(v for k, v in counts.items() if k != "crash"),
            "outcomes": dict(counts), "crashes": crashes, "batches": batches,
            "cpu_s": round(time.process_time() - cpu, 1),
            "wall_s": round(time.monotonic() - wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="total wall time, shared equally by the targets")
    parser.add_argument("--batch", type=int, default=500, help="examples per hypothesis run")
    parser.add_argument("--only", nargs="*", default=None, help="run only these targets")
    parser.add_argument("--name", default="fuzz", help="results/<name>.{json,md}")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # PIL warns on the mangled metadata it skips
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgerec-fuzz-") as tmp:
        targets = _targets(Path(tmp))
        names = [n for n in targets if args.only is None or n in args.only]
        for name in names:
            strategy, prop = targets[name]
            results[name] = run_target(strategy, prop, args.minutes * 60 / len(names),
                                       args.batch)
            print(name, {k: v for k, v in results[name].items() if k != "crashes"}, flush=True)
    total = {"cases": sum(r["cases"] for r in results.values()),
             "crashes": sum(len(r["crashes"]) for r in results.values()),
             "cpu_s": round(sum(r["cpu_s"] for r in results.values()), 1)}
    rows = "\n".join(
        f"| {name} | {r['cases']} | {len(r['crashes'])} | "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()) if k != "crash")
        + f" | {r['cpu_s']} |" for name, r in results.items())
    markdown = (
        f"# Fuzz run\n\n`python benchmarks/fuzz.py --minutes {args.minutes:g}"
        + (f" --only {' '.join(args.only)}" if args.only else "") + "`, "
        f"{machine_info()['date']}: {total['cases']} cases, {total['crashes']} crashes, "
        f"{total['cpu_s']} s CPU.\n\n| target | cases | crashes | outcomes | CPU s |\n"
        f"|---|---|---|---|---|\n{rows}\n")
    write(args.name, {"machine": machine_info(), "args": vars(args), "total": total,
                   "targets": results}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
