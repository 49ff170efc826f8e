"""One benchmark configuration, measured inside one fresh process.

The runner starts ``python -m edgerec.sdk.bench.worker '<json spec>'`` once per configuration
and round, with ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` set to the configuration's thread
count, and reads one JSON line from its stdout. A fresh process per configuration keeps idle
engine threads, caches and the parent's memory high-water mark out of each measurement.

Spec kinds:

- ``"encoder"``: one encoder artifact on one engine and thread count. Stages, each timed
  ``runs`` times after ``warmup`` untimed runs (and stopped early after ``max_seconds``; the
  sample count ``n`` is always reported):

  - ``decode``: encoded JPEG bytes -> RGB image at the model's input size (the pipeline's
    reduced-scale decode, resize and crop, fused as the encoder runs them);
  - ``preprocess``: that image -> the normalised float32 input batch;
  - ``encode_b{B}``: the engine on a preprocessed batch of B real photos, L2 norm and
    whitening included (ms per batch);
  - ``search``: ``Catalog.search(q, k)`` over the synthetic catalog, q a photo's vector;
  - ``rerank``: the bundle's scorer on C candidates (absent without a scorer);
  - ``end_to_end``: ``Recommender.similar(photo file, k)``: read, decode, preprocess, encode,
    search.

- ``"search"``: one catalog and kernel (``numpy``/``onnxruntime``) or ``faiss`` (faiss-cpu
  ``IndexFlatIP`` on the catalog's dequantised float32 vectors), single-query top-k:
  ``kernel`` (rows and scores only, what faiss's ``search()`` returns) and, for edgerec,
  ``search`` (``Catalog.search``: ids and metadata from SQLite included).
- ``"catalog"``: build a catalog for a bundle from jittered embeddings of real photos.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
from edgerec.sdk.bench.machine import peak_rss_mb, rss_mb

__all__ = ["build_catalog_for", "main", "measure_encoder", "measure_search", "timed"]


def timed(fn: Callable[[int], Any], runs: int, warmup: int, max_seconds: float) -> list[float]:
    """``fn(i)`` ``warmup`` times untimed, then up to ``runs`` times timed (ms each), stopping
    once ``max_seconds`` of timed runs have passed (at least 3 runs)."""
    for i in range(warmup):
        fn(i)
    out: list[float] = []
    start = time.perf_counter()
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1e3)
        if len(out) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return out


def _decoder(pre: Any, limits: Any) -> Callable[[bytes], Any]:
    """bytes -> RGB image at the input size, as the encoder decodes (reduced-scale JPEG decode,
    one resize, crop)."""
    try:
        from edgerec.sdk.image import _load  # the encoder's own fused decode + resize

        return lambda data: _load(data, limits, pre)
    except ImportError:  # pragma: no cover - a refactored image module
        from edgerec.sdk.image import load_image, resize_and_crop

        return lambda data: resize_and_crop(load_image(data, limits), pre)


def measure_encoder(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``"encoder"`` kind (see the module docstring); returns samples per stage."""
    from edgerec.sdk import (
        Bundle,
        Catalog,
        Encoder,
        EncoderOptions,
        Recommender,
        RecommenderOptions,
        Role,
        Scorer,
        ScorerOptions,
    )
    from edgerec.sdk.image import preprocess

    runs, warmup, cap = int(spec["runs"]), int(spec["warmup"]), float(spec["max_seconds"])
    stages: set[str] = set(spec.get("stages") or ["decode", "preprocess", "encode", "search",
                                                   "rerank", "end_to_end"])
    photos = [Path(p) for p in spec["photos"]]
    datas = [p.read_bytes() for p in photos]
    rss_start = rss_mb()
    bundle = Bundle.open(spec["bundle"])
    options = EncoderOptions(engine=spec["engine"], precision=spec["precision"],
                             num_threads=int(spec["threads"]), use_device_profile=False)
    out: dict[str, Any] = {"stages": {}, "notes": []}
    samples = out["stages"]
    t0 = time.perf_counter()
    enc = Encoder.create_from_bundle(bundle, options)
    out["load_ms"] = (time.perf_counter() - t0) * 1e3
    pre, layout, limits = bundle.preprocessing, enc.artifact.layout, options.limits
    decode = _decoder(pre, limits)
    images = [decode(d) for d in datas]
    if "decode" in stages:
        samples["decode"] = timed(lambda i: decode(datas[i % len(datas)]), runs, warmup, cap)
    if "preprocess" in stages:
        samples["preprocess"] = timed(
            lambda i: preprocess([images[i % len(images)]], pre, layout, limits=limits),
            runs, warmup, cap)
    if "encode" in stages:
        inputs = preprocess(images, pre, layout, limits=limits)
        for b in spec.get("batches") or [1]:
            batches = [np.concatenate([inputs[(s + j) % len(inputs)][None] for j in range(b)])
                       for s in range(0, len(inputs), max(1, b))]
            samples[f"encode_b{b}"] = timed(
                lambda i, bs=batches: enc.embed_preprocessed(bs[i % len(bs)]), runs, warmup, cap)
    queries = enc.embed(images) if stages & {"search", "rerank"} else None
    enc.close()
    catalog = Catalog.open(spec["catalog"], readonly=True) if spec.get("catalog") else None
    k = int(spec.get("k", 10))
    try:
        if catalog is not None and "search" in stages:
            samples["search"] = timed(lambda i: catalog.search(queries[i % len(queries)], k=k),
                                      runs, warmup, cap)
        if "rerank" in stages and bundle.has(Role.SCORER):
            c = int(spec.get("candidates") or 500)
            if catalog is not None:
                ids = catalog.search(queries[0], k=min(c, len(catalog))).ids
                _, items = catalog.vectors(list(ids))
            else:
                items = np.repeat(queries, -(-c // len(queries)), axis=0)[:c]
            with Scorer.create_from_bundle(bundle, ScorerOptions(
                    num_threads=int(spec["threads"]))) as scorer:
                out["scorer"] = scorer.key
                samples["rerank"] = timed(
                    lambda i: scorer.score(queries[i % len(queries)], items), runs, warmup, cap)
            out["candidates"] = len(items)
        elif "rerank" in stages:
            out["notes"].append("no scorer in the bundle: rerank not measured")
        if catalog is not None and "end_to_end" in stages:
            with Recommender.create_from_bundle(
                    bundle, catalog, RecommenderOptions(use_behaviour=False),
                    encoder_options=options) as rec:
                samples["end_to_end"] = timed(
                    lambda i: rec.similar(str(photos[i % len(photos)]), k=k), runs, warmup, cap)
    finally:
        if catalog is not None:
            catalog.close()
    out["artifact"] = enc.artifact.key
    out["size_bytes"] = int(bundle.artifact_path(enc.artifact).stat().st_size)
    out["rss_start_mb"] = rss_start
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def measure_search(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``"search"`` kind: single-query top-k on one catalog with one method."""
    from edgerec.sdk import Catalog
    from edgerec.sdk.catalog.prefilter import (
        SearchKernel,
        active_kernel,
        active_layout,
        set_search_kernel,
    )
    from edgerec.sdk.catalog.scan import exact_top_k

    runs, warmup, cap = int(spec["runs"]), int(spec["warmup"]), float(spec["max_seconds"])
    method, k = spec["method"], int(spec.get("k", 10))
    queries = np.load(spec["queries"])
    rss_start = rss_mb()
    out: dict[str, Any] = {"method": method}
    t0 = time.perf_counter()
    if method == "faiss":
        try:
            import faiss
        except ImportError:
            return {"absent": "faiss-cpu is not installed (pip install 'edgerec[bench]')"}
        faiss.omp_set_num_threads(int(spec["threads"]))
        with Catalog.open(spec["catalog"], readonly=True) as cat, cat._reading() as view:
            index = faiss.IndexFlatIP(cat.dim)
            for start in range(0, view.total_rows, 65536):  # the same dequantised vectors
                rows = np.arange(start, min(start + 65536, view.total_rows))
                index.add(view.dequantize(rows))
        out["setup_ms"] = (time.perf_counter() - t0) * 1e3
        out["version"] = faiss.__version__
        out["kernel"] = timed(lambda i: index.search(queries[i % len(queries)][None], k),
                              runs, warmup, cap)
    else:
        set_search_kernel(method)
        with Catalog.open(spec["catalog"], readonly=True) as cat:
            cat.search(queries[0], k=k)  # maps the file; the onnxruntime kernel builds its copy
            out["setup_ms"] = (time.perf_counter() - t0) * 1e3
            out["search"] = timed(lambda i: cat.search(queries[i % len(queries)], k=k),
                                  runs, warmup, cap)
            with cat._reading() as view:  # the kernel alone, as faiss's search() is timed
                if active_kernel(view) is SearchKernel.ONNXRUNTIME:
                    out["layout"] = active_layout(view.dim).value  # as the search chose it
                out["kernel"] = timed(lambda i: exact_top_k(view, queries[i % len(queries)][None],
                                                            k), runs, warmup, cap)
    out["rss_start_mb"] = rss_start
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def build_catalog_for(spec: dict[str, Any]) -> dict[str, Any]:
    """The ``"catalog"`` kind: ``n`` items around the bundle's embeddings of real photos."""
    from edgerec.sdk import Bundle, Encoder, EncoderOptions
    from edgerec.sdk.bench.catalogs import make_catalog

    bundle = Bundle.open(spec["bundle"])
    with Encoder.create_from_bundle(bundle, EncoderOptions(use_device_profile=False)) as enc:
        base = enc.embed([Path(p) for p in spec["photos"]])
    make_catalog(Path(spec["out"]), int(spec["n"]), base, encoder_id=bundle.encoder_id,
                 dtype=spec.get("dtype", "int8"), seed=int(spec.get("seed", 0)))
    return {"catalog": spec["out"], "n": int(spec["n"]), "dim": int(base.shape[1])}


KINDS = {"encoder": measure_encoder, "search": measure_search, "catalog": build_catalog_for}


def main(argv: Sequence[str] = ()) -> int:
    """``python -m edgerec.sdk.bench.worker SPEC``: print the result as one JSON line."""
    args = list(argv) or sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m edgerec.sdk.bench.worker '<json spec>'", file=sys.stderr)
        return 2
    spec = json.loads(args[0])
    result = KINDS[spec["kind"]](spec)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
