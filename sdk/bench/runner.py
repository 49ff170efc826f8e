"""``edgerec bench`` and ``edgerec bench --choose``: configurations, rounds, aggregation.

Every configuration (an encoder artifact on one engine and thread count, or one catalog
search method at one size) runs in its own fresh process (:mod:`.worker`); configurations are
interleaved in rounds with a rotating order, so a machine that slows down (another job, a
thermal limit) slows every configuration alike, and ratios are taken *within* each round.
Reported per stage: ``p50`` (the median of the rounds' medians), ``p90``/``p99``/``n`` over
the pooled samples, and for the batch-1 encode and the end-to-end stage the ratio to the
first configuration (median over rounds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from edgerec.runtimes import Engine, available_engines
from edgerec.sdk.bench.catalogs import catalog_key, make_catalog, make_queries
from edgerec.sdk.bench.machine import machine_info, memory_bandwidth_gbs, percentiles
from edgerec.sdk.bench.profile import DeviceProfile, Measurement, machine_identity
from edgerec.sdk.bundle.bundle import Bundle
from edgerec.sdk.bundle.manifest import ArtifactSpec, Precision, Role
from edgerec.sdk.catalog.ingest import IMAGE_SUFFIXES
from edgerec.sdk.errors import (
    ArtifactNotFoundError,
    EdgeRecError,
    InferenceError,
    InvalidImageError,
)

__all__ = [
    "SEARCH_METHODS",
    "BenchOptions",
    "choose",
    "gated_artifacts",
    "run_bench",
]

PathLike = Union[str, os.PathLike]
Log = Callable[[str], None]

SEARCH_METHODS = ("int8/numpy", "int8/onnxruntime", "float16/numpy", "faiss")
"""Catalog search methods of the scaling table: storage/kernel, and faiss-cpu ``IndexFlatIP``
(float32, the int8 catalog's dequantised vectors) when faiss is importable."""

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _default_work() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "edgerec" / "bench"


@dataclass(frozen=True)
class BenchOptions:
    """What ``edgerec bench`` measures.

    Attributes:
        images: photo files or folders of photos (JPEG, PNG, ...) timed through the pipeline.
        photos: how many of them are used (the first, sorted).
        threads: engine (and BLAS) thread counts, one configuration each.
        batches: encode batch sizes.
        runs: timed runs per stage and process, after ``warmup`` untimed ones.
        warmup: untimed runs first.
        rounds: interleaved rounds (one process per configuration and round).
        max_seconds: a stage stops after this many seconds of timed runs in one process
            (big batches on slow engines); the sample count ``n`` is always reported.
        catalog_size: items in the catalog behind the search, re-rank and end-to-end stages
            (0: no catalog, those stages are skipped).
        search_sizes: catalog sizes of the search scaling table (empty: no table).
        search_dim: vector dimension of the scaling table.
        search_methods: :data:`SEARCH_METHODS` to time.
        k: results per search.
        work: folder for the cached synthetic catalogs (default
            ``~/.cache/edgerec/bench``).
    """

    images: tuple[str, ...] = ()
    photos: int = 32
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 8, 32)
    runs: int = 200
    warmup: int = 10
    rounds: int = 3
    max_seconds: float = 5.0
    catalog_size: int = 100_000
    search_sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    search_dim: int = 128
    search_methods: tuple[str, ...] = SEARCH_METHODS
    k: int = 10
    work: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("photos", "runs", "rounds", "k", "search_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("threads", "batches", "search_sizes"):
            values = tuple(int(v) for v in getattr(self, name))
            if any(v < 1 for v in values):
                raise ValueError(f"{name} must be positive integers, got {values}")
            object.__setattr__(self, name, values)
        if self.warmup < 0 or self.catalog_size < 0 or self.max_seconds <= 0:
            raise ValueError("warmup and catalog_size must be >= 0 and max_seconds > 0")
        unknown = set(self.search_methods) - set(SEARCH_METHODS)
        if unknown:
            raise ValueError(f"unknown search methods {sorted(unknown)}; choose from "
                             f"{list(SEARCH_METHODS)}")
        object.__setattr__(self, "images", tuple(str(i) for i in self.images))

    @classmethod
    def quick(cls, **changes: Any) -> BenchOptions:
        """A smoke configuration (seconds): few runs and photos, small catalogs, one round."""
        base = cls(photos=4, threads=(1,), batches=(1, 8), runs=5, warmup=1, rounds=1,
                   max_seconds=1.0, catalog_size=1000, search_sizes=(1000,))
        return replace(base, **changes)


# --------------------------------------------------------------------------- processes


def _spawn(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """Run one worker process; its JSON result, or ``{"error": ...}``."""
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-m", "edgerec.sdk.bench.worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def _rounds(jobs: Sequence[tuple[dict[str, Any], int]], rounds: int,
            tick: Callable[[], None]) -> list[list[dict[str, Any]]]:
    """``rounds`` passes over ``jobs`` ((spec, threads)), each in a rotated order;
    ``out[job][round]``."""
    out: list[list[dict[str, Any]]] = [[] for _ in jobs]
    for r in range(rounds):
        order = list(range(len(jobs)))
        shift = r % max(1, len(order))
        for i in order[shift:] + order[:shift]:
            out[i].append(_spawn(*jobs[i]))
            tick()
    return out


def _stage(results: Sequence[dict[str, Any]], key: str) -> Optional[dict[str, Any]]:
    """Percentiles of one stage over rounds: p50 = median of round medians."""
    per_round = [r["stages"][key] for r in results if key in r.get("stages", {})]
    if not per_round:
        return None
    pooled = [v for samples in per_round for v in samples]
    stats = percentiles(pooled)
    stats["p50"] = float(np.median([np.median(s) for s in per_round]))
    return stats


def _ratio(results: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]],
           key: str) -> Optional[float]:
    """Median over rounds of (this round's median / the baseline's median in that round)."""
    ratios = [float(np.median(a["stages"][key]) / np.median(b["stages"][key]))
              for a, b in zip(results, base)
              if key in a.get("stages", {}) and key in b.get("stages", {})]
    return float(np.median(ratios)) if ratios else None


# --------------------------------------------------------------------------- inputs


def _photos(options: BenchOptions) -> list[Path]:
    paths: list[Path] = []
    for item in options.images:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            paths.append(p)
        else:
            raise InvalidImageError(f"{p} is neither a photo nor a folder of photos; pass "
                                    "--images with real photos (e.g. examples/sample/images)")
    if not paths:
        raise InvalidImageError("edgerec bench needs real photos to time decode and the "
                                "pipeline: pass --images FOLDER")
    step = max(1, len(paths) // options.photos)  # spread over the folder (all labels)
    return paths[::step][: options.photos]


def gated_artifacts(bundle: Bundle) -> tuple[list[ArtifactSpec], dict[str, str]]:
    """The encoder artifacts that passed the bundle's export gates, and why others are out.

    Out: an artifact recorded in ``metrics["gate_failures"]`` (left out of the bundle by
    ``--allow-gate-failure``), one whose last quantization attempt did not pass
    (``metrics["quantization"]``), or one marked ``passed: false`` in ``metrics["gates"]``.
    A bundle without gate records (an imported model) keeps all its artifacts.
    """
    metrics = bundle.manifest.metrics or {}
    failures = metrics.get("gate_failures") or {}
    ladders = metrics.get("quantization") or {}
    gates = metrics.get("gates") or {}
    keep: list[ArtifactSpec] = []
    out: dict[str, str] = {}
    for a in bundle.artifacts(Role.ENCODER):
        reason = None
        if isinstance(failures, dict) and a.key in failures:
            reason = f"failed its export gate: {str(failures[a.key])[:200]}"
        ladder = ladders.get(a.key) if isinstance(ladders, dict) else None
        attempts = ladder.get("attempts") if isinstance(ladder, dict) else None
        if reason is None and attempts and not attempts[-1].get("passed", True):
            reason = "its last quantization attempt did not pass the gate"
        gate = gates.get(a.key) if isinstance(gates, dict) else None
        if reason is None and isinstance(gate, dict) and gate.get("passed") is False:
            reason = "marked as failing its gate in metrics['gates']"
        if reason is None:
            keep.append(a)
        else:
            out[a.key] = reason
    return keep, out


def _encoder_jobs(bundles: Sequence[tuple[str, Bundle]], options: BenchOptions,
                  photos: Sequence[Path], catalogs: dict[str, Optional[str]],
                  artifacts: Optional[dict[str, list[ArtifactSpec]]] = None,
                  stages: Optional[list[str]] = None, batches: Optional[Sequence[int]] = None,
                  ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], int]]]:
    installed = available_engines()
    configs, jobs = [], []
    for label, bundle in bundles:
        arts = (artifacts or {}).get(label, bundle.artifacts(Role.ENCODER))
        for art in arts:
            if art.engine not in installed:
                continue
            for t in options.threads:
                spec = {"kind": "encoder", "bundle": str(bundle.path), "engine": art.engine.value,
                        "precision": art.precision.value, "threads": t,
                        "runs": options.runs, "warmup": options.warmup,
                        "max_seconds": options.max_seconds, "k": options.k,
                        "photos": [str(p) for p in photos],
                        "batches": list(batches or options.batches),
                        "catalog": catalogs.get(label), "stages": stages,
                        "candidates": _candidates(bundle)}
                configs.append({"bundle": label, "path": str(bundle.path), "artifact": art.key,
                                "engine": art.engine.value, "precision": art.precision.value,
                                "threads": t, "size_bytes": art.size_bytes})
                jobs.append((spec, t))
    return configs, jobs


def _candidates(bundle: Bundle) -> int:
    record = bundle.manifest.scorer
    return int(getattr(record, "candidates", 0) or 500) if record is not None else 500


def _label(path: PathLike, bundle: Bundle, taken: set[str]) -> str:
    name = bundle.manifest.name or Path(path).name
    label, i = name, 2
    while label in taken:
        label, i = f"{name}-{i}", i + 1
    taken.add(label)
    return label


# --------------------------------------------------------------------------- bench


def _bundle_catalog(label: str, bundle: Bundle, options: BenchOptions, photos: Sequence[Path],
                    work: Path) -> Optional[str]:
    """The cached e2e catalog of ``bundle`` (built in a worker: it needs the encoder)."""
    if options.catalog_size == 0:
        return None
    key = catalog_key(options.catalog_size, bundle.embedding_dim, "int8", bundle.encoder_id)
    path = work / key
    if not (path / "catalog.json").exists():
        result = _spawn({"kind": "catalog", "bundle": str(bundle.path), "out": str(path),
                         "n": options.catalog_size, "photos": [str(p) for p in photos]}, 2)
        if "error" in result:
            raise EdgeRecError(f"could not build the {label} bench catalog: {result['error']}")
    return str(path)


def _search_table(options: BenchOptions, work: Path, log: Log,
                  tick: Callable[[], None]) -> dict[str, Any]:
    """Catalog scaling: every size x method, one process each, interleaved rounds."""
    if not options.search_sizes:
        return {}
    bandwidth = memory_bandwidth_gbs()
    jobs, rows = [], []
    for n in options.search_sizes:
        cats = {}
        for dtype in ("int8", "float16"):
            key = catalog_key(n, options.search_dim, dtype, "bench-scaling")
            path = work / key
            if not (path / "catalog.json").exists():
                log(f"building the {n:,} x {options.search_dim} {dtype} catalog ...")
            cats[dtype] = make_catalog(path, n, None, encoder_id="bench-scaling",
                                       dim=options.search_dim, dtype=dtype)
        queries = cats["int8"] / "bench-queries.npy"
        if not queries.exists():
            np.save(queries, make_queries(cats["int8"]))
        for method in options.search_methods:
            dtype, kernel = method.split("/") if "/" in method else ("int8", method)
            spec = {"kind": "search", "catalog": str(cats[dtype]), "queries": str(queries),
                    "method": kernel, "threads": 1, "k": options.k, "runs": options.runs,
                    "warmup": options.warmup, "max_seconds": options.max_seconds}
            rows.append({"items": n, "dim": options.search_dim, "method": method,
                         "bytes_scanned": n * options.search_dim * {"int8": 1, "float16": 2}[
                             dtype] + (4 * n if dtype == "int8" else 0)})
            if kernel == "faiss":
                rows[-1]["bytes_scanned"] = n * options.search_dim * 4
            jobs.append((spec, 1))
    results = _rounds(jobs, options.rounds, tick)
    for row, res in zip(rows, results):
        errors = [r["error"] for r in res if "error" in r]
        absent = [r["absent"] for r in res if "absent" in r]
        if errors or absent:
            row["absent" if absent else "error"] = (absent or errors)[0]
            continue
        stages = [{"stages": {k: r[k] for k in ("kernel", "search") if k in r}} for r in res]
        stats = _stage(stages, "kernel")
        row["kernel"] = stats
        row["search"] = _stage(stages, "search")
        row["setup_ms"] = float(np.median([r["setup_ms"] for r in res]))
        row["peak_rss_mb"] = float(np.median([r["peak_rss_mb"] for r in res]))
        if stats:
            gbs = row["bytes_scanned"] / (stats["p50"] / 1e3) / 1e9
            row["effective_gbs"] = gbs
            row["bandwidth_fraction"] = gbs / bandwidth
        if "version" in res[0]:
            row["version"] = res[0]["version"]
        if "layout" in res[0]:
            row["layout"] = res[0]["layout"]
    return {"memory_bandwidth_gbs": bandwidth, "threads": 1, "k": options.k, "rows": rows}


def run_bench(bundles: Sequence[PathLike], options: BenchOptions, *,
              log: Optional[Log] = None,
              progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Measure every encoder artifact x installed engine x thread count of ``bundles`` (the
    first configuration is the ratio baseline) and the catalog scaling table.

    Returns the JSON-ready result (see :mod:`.report` for its files): ``machine``,
    ``options``, ``configs`` (one per configuration: stages with p50/p90/p99/n, ratios, peak
    RSS, sizes, or ``error``), ``search`` (the scaling table).

    Raises:
        InvalidImageError: no usable photos.
        BundleError: a bundle that cannot be opened.
    """
    log = log or (lambda _m: None)
    photos = _photos(options)
    work = Path(options.work) if options.work else _default_work()
    work.mkdir(parents=True, exist_ok=True)
    opened, taken = [], set()
    for path in bundles:
        bundle = Bundle.open(path)
        opened.append((_label(path, bundle, taken), bundle))
    catalogs = {}
    for label, bundle in opened:
        if options.catalog_size and not (work / catalog_key(
                options.catalog_size, bundle.embedding_dim, "int8", bundle.encoder_id)).exists():
            log(f"building the {options.catalog_size:,}-item catalog for {label} ...")
        catalogs[label] = _bundle_catalog(label, bundle, options, photos, work)
    configs, jobs = _encoder_jobs(opened, options, photos, catalogs)
    n_search = len(options.search_sizes) * len(options.search_methods)
    total, done = options.rounds * (len(jobs) + n_search), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    t0 = time.perf_counter()
    results = _rounds(jobs, options.rounds, tick)
    base = results[0] if results else []
    for cfg, res in zip(configs, results):
        errors = [r["error"] for r in res if "error" in r]
        if errors:
            cfg["error"] = errors[0]
            continue
        keys = sorted({k for r in res for k in r["stages"]}, key=_stage_order)
        cfg["stages"] = {k: _stage(res, k) for k in keys}
        cfg["ratio_encode_b1"] = _ratio(res, base, "encode_b1")
        cfg["ratio_end_to_end"] = _ratio(res, base, "end_to_end")
        cfg["load_ms"] = float(np.median([r["load_ms"] for r in res]))
        cfg["peak_rss_mb"] = float(np.median([r["peak_rss_mb"] for r in res]))
        cfg["notes"] = sorted({n for r in res for n in r.get("notes", [])})
        if any("scorer" in r for r in res):
            cfg["scorer"] = next(r["scorer"] for r in res if "scorer" in r)
            cfg["candidates"] = next(r["candidates"] for r in res if "candidates" in r)
    search = _search_table(options, work, log, tick)
    return {
        "benchmark": "edgerec bench",
        "machine": machine_info(),
        "options": {**asdict(options), "photos_used": [str(p) for p in photos]},
        "bundles": [{"label": label, "path": str(b.path), "encoder_id": b.encoder_id,
                     "dim": b.embedding_dim, "input_size": b.preprocessing.input_size,
                     "catalog": catalogs.get(label),
                     "artifacts": {a.key: a.size_bytes for a in b.artifacts()}}
                    for label, b in opened],
        "baseline": (f"{configs[0]['bundle']} {configs[0]['artifact']} "
                     f"{configs[0]['threads']}t") if configs else None,
        "configs": configs,
        "search": search,
        "seconds": time.perf_counter() - t0,
    }


_ORDER = ["decode", "preprocess", "encode", "search", "rerank", "end_to_end"]


def _stage_order(key: str) -> tuple[int, int]:
    head = key.split("_b")[0] if key.startswith("encode") else key
    batch = int(key.split("_b")[1]) if key.startswith("encode_b") else 0
    return (_ORDER.index(head) if head in _ORDER else len(_ORDER), batch)


# --------------------------------------------------------------------------- choose


def choose(bundle_path: PathLike, options: BenchOptions, *,
           progress: Optional[Callable[[int, int], None]] = None) -> DeviceProfile:
    """Measure, on this machine, the batch-1 encode time of every gated encoder artifact of
    the bundle on every installed engine and thread count, and return the device profile
    (write it with :func:`~.profile.write_device_profile`).

    Raises:
        ArtifactNotFoundError: no gated encoder artifact runs on an installed engine.
        InferenceError: every configuration failed to run.
    """
    bundle = Bundle.open(bundle_path)
    keep, left_out = gated_artifacts(bundle)
    installed = available_engines()
    for a in keep:
        if a.engine not in installed:
            left_out[a.key] = f"its engine ({a.engine.value}) is not installed here"
    keep = [a for a in keep if a.engine in installed]
    if not keep:
        raise ArtifactNotFoundError(
            f"bundle {bundle.path} has no encoder artifact that passed its gates and runs on "
            f"an installed engine ({', '.join(f'{k}: {v}' for k, v in left_out.items())}); "
            "install an engine (`pip install edgerec[onnx]`) or export the bundle again")
    photos = _photos(options)
    label = "bundle"
    configs, jobs = _encoder_jobs([(label, bundle)], options, photos, {},
                                  artifacts={label: keep}, stages=["encode"], batches=[1])
    total, done = options.rounds * len(jobs), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    results = _rounds(jobs, options.rounds, tick)
    base_index = next((i for i, res in enumerate(results)
                       if not any("error" in r for r in res)), None)
    if base_index is None:
        raise InferenceError("every configuration failed: "
                             + "; ".join(r[0].get("error", "") for r in results))
    measured = []
    for cfg, res in zip(configs, results):
        errors = [r["error"] for r in res if "error" in r]
        if errors:
            left_out[f"{cfg['artifact']} {cfg['threads']}t"] = errors[0]
            continue
        stats = _stage(res, "encode_b1")
        ratio = _ratio(res, results[base_index], "encode_b1")
        measured.append(Measurement(engine=Engine(cfg["engine"]),
                                    precision=Precision(cfg["precision"]),
                                    threads=int(cfg["threads"]), p50_ms=stats["p50"],
                                    ratio=float(ratio)))
    best = min(m.ratio for m in measured)
    measured = [replace(m, ratio=m.ratio / best) for m in measured]
    measured.sort(key=lambda m: (m.ratio, m.p50_ms))
    return DeviceProfile(encoder_id=bundle.encoder_id, measured=tuple(measured),
                         machine=machine_identity(), bundle=str(Path(bundle.path).resolve()),
                         left_out=left_out,
                         metric=f"encode p50 ms, batch 1, median of {options.rounds} round "
                                f"medians of <= {options.runs} runs; ratio within rounds")

