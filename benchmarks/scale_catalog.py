"""Issue 17: the catalog build locally and on a local Ray with 1 and 2 workers, same photos.

The photos are the 200 sample photos repeated with small augmentations (a random crop of
88-100 %, a mirror, a brightness change of +-10 %), written once as JPEGs under
``build/bench/scale``; the encoder is the shipped MobileNetV1 teacher (1024-d, int8 catalog)
or the bundle ``--bundle`` names, one engine thread per worker. For each configuration: wall
time of the build (Ray already started: its start-up is reported apart), photos/s,
CPU-seconds per 1,000 photos (machine-wide, from ``/proc/stat``: run it on an otherwise idle
machine; Ray's raylet, GCS and workers included), and Ray's overhead per photo against the local
build. Then the driver's commit alone (:meth:`Catalog.add` of random vectors in one
generation) at a few sizes, extrapolated linearly to 10 M items.

    python benchmarks/scale_catalog.py                   # 1,000 photos (~3 min on 2 cores)
    python benchmarks/scale_catalog.py --items 100000 --bundle examples/models/clothing-student
"""

from __future__ import annotations

import os
import shlex

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _report import machine_info, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample"
TEACHER = SAMPLE / "teacher" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
WORK = ROOT / "build" / "bench" / "scale"


def machine_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine so far (``/proc/stat``: user, nice, system, irq,
    softirq over all cores). Ray's actors are started by its raylet and exit before the end of
    a build, so a process-tree count misses them; the machine-wide count catches everything,
    and equals the build's cost when nothing else runs (the report records the load)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / tick


def make_photos(n: int, seed: int = 0) -> list:
    """``n`` items: the sample photos, then augmented copies (see the module docstring)."""
    from edgerec.sdk.catalog import SourceItem, listing_from_folder
    from PIL import Image, ImageEnhance

    base = listing_from_folder(SAMPLE / "images").require()
    folder = WORK / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        src = base[k % len(base)]
        path = folder / f"p{k:06d}.jpg"
        if not path.exists():
            if k < len(base):
                shutil.copyfile(src.image, path)
            else:
                with Image.open(src.image) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    f = rng.uniform(0.88, 1.0)
                    x, y = int(rng.uniform(0, w * (1 - f))), int(rng.uniform(0, h * (1 - f)))
                    im = im.crop((x, y, x + int(w * f), y + int(h * f)))
                    if rng.random() < 0.5:
                        im = im.transpose(Image.FLIP_LEFT_RIGHT)
                    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.9, 1.1))
                    im.save(path, quality=90)
        items.append(SourceItem(f"p{k:06d}", path, {"label": src.label or ""}))
    return items


def bundle(path: Path | None = None):
    """The bundle ``path`` (e.g. the shipped student), else the shipped teacher wrapped."""
    from edgerec.sdk import Bundle, ImportOptions, import_model

    if path is not None:
        return Bundle.open(path)
    out = WORK / "teacher-bundle"
    if out.exists():
        return Bundle.open(out)
    return import_model([TEACHER], out, ImportOptions(raw_pixels=True, name="teacher"))


def run_local(b, items) -> dict:
    from edgerec.sdk.catalog import build_catalog
    from edgerec.sdk.encoder import EncoderOptions

    out = WORK / "local.catalog"
    shutil.rmtree(out, ignore_errors=True)
    cpu0, t0 = machine_cpu_seconds(), time.perf_counter()
    report = build_catalog(b, out, items, encoder_options=EncoderOptions(num_threads=1))
    wall, cpu = time.perf_counter() - t0, machine_cpu_seconds() - cpu0
    return {"config": "local", "workers": 1, "wall_s": wall, "cpu_s": cpu,
            "added": report.added, "failed": len(report.failed)}


def run_ray(b, items, workers: int, batch: int) -> dict:
    import ray
    from edgerec.sdk.catalog.ray_build import RayBuildOptions, build_catalog_on_ray

    out = WORK / f"ray{workers}.catalog"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t0
    try:
        cpu0, t0 = machine_cpu_seconds(), time.perf_counter()
        report = build_catalog_on_ray(b, out, items,
                                      RayBuildOptions(workers=workers, batch_size=batch))
        wall, cpu = time.perf_counter() - t0, machine_cpu_seconds() - cpu0
    finally:
        ray.shutdown()
    return {"config": f"ray x{workers}", "workers": workers, "wall_s": wall, "cpu_s": cpu,
            "ray_start_s": startup, "added": report.added, "failed": len(report.failed)}


def commit_cost(b, sizes: list[int]) -> list[dict]:
    """The driver's commit alone: one ``Catalog.add`` of ``n`` random vectors (one generation)."""
    from edgerec.sdk.catalog import Catalog

    dim = b.embedding_dim
    rows = []
    for n in sizes:
        out = WORK / f"commit-{n}.catalog"
        shutil.rmtree(out, ignore_errors=True)
        rng = np.random.default_rng(n)
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        ids = [f"i{k:08d}" for k in range(n)]
        metas = [{"label": f"l{k % 10}", "path": f"p/{k}.jpg"} for k in range(n)]
        with Catalog.create(out, b) as catalog:
            t0 = time.perf_counter()
            catalog.add(ids, vectors, metas, encoder_id=catalog.encoder_id)
            secs = time.perf_counter() - t0
            segments = catalog.info().segments
        import sqlite3

        with sqlite3.connect(out / "catalog.sqlite") as conn:
            sql_rows = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                           for t in ("items", "attrs"))
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        rows.append({"items": n, "commit_s": secs, "segments": segments, "sqlite_rows": sql_rows,
                     "bytes": size})
        shutil.rmtree(out, ignore_errors=True)
    return rows


def markdown(payload: dict) -> str:
    n = payload["items"]
    lines = [
        "# Catalog build: local vs Ray (issue 17)", "",
        f"{n} photos (the 200 sample photos, then augmented copies), {payload['encoder']} "
        f"({payload['dim']}-d, int8 catalog), one engine thread per worker, "
        f"{payload['machine']['cores']} cores ({payload['machine']['cpu']}); "
        f"`python benchmarks/scale_catalog.py {payload['command']}`."
        " Ray start-up not included in the build time. CPU-seconds are machine-wide "
        "(`/proc/stat`: everything that ran, Ray's daemons included), so they are the "
        "build's only when nothing else runs (load average "
        f"{payload['loadavg'][0]:.2f} at the start, {payload['loadavg_end'][0]:.2f} at the "
        "end); Ray's overhead per photo is its CPU-seconds minus the local build's.", "",
        "| config | wall s | photos/s | CPU-s / 1,000 photos | Ray CPU overhead ms/photo | "
        "Ray start s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    local = payload["runs"][0]
    for r in payload["runs"]:
        over = (r["cpu_s"] - local["cpu_s"]) / n * 1e3
        lines.append(f"| {r['config']} | {r['wall_s']:.1f} | {n / r['wall_s']:.1f} | "
                     f"{r['cpu_s'] / n * 1e3:.1f} | "
                     f"{'-' if r['config'] == 'local' else f'{over:.2f}'} | "
                     f"{_start(r)} |")
    lines += ["", f"Driver commit alone (one `Catalog.add`, one generation, random "
              f"{payload['dim']}-d vectors, 2 metadata keys per item):", "",
              "| items | commit s | segments | SQLite rows (items+attrs) | bytes |",
              "|---:|---:|---:|---:|---:|"]
    for c in payload["commit"]:
        lines.append(f"| {c['items']:,} | {c['commit_s']:.2f} | {c['segments']} | "
                     f"{c['sqlite_rows']:,} | {c['bytes']:,} |")
    e = payload["commit_10m"]
    lines += ["", f"Linear extrapolation to 10 M items: ~{e['commit_s']:.0f} s, 1 segment, "
              f"{e['sqlite_rows']:,} SQLite rows, ~{e['bytes'] / 1e9:.1f} GB "
              "(the driver also holds the 10 M float32 vectors in memory: "
              f"~{10e6 * payload['dim'] * 4 / 1e9:.0f} GB at {payload['dim']}-d).", ""]
    return "\n".join(lines)


def _start(run: dict) -> str:
    return f"{run['ray_start_s']:.1f}" if "ray_start_s" in run else "-"


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["runs"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([r["config"] for r in runs], [payload["items"] / r["wall_s"] for r in runs])
    ax.set_ylabel("photos / s")
    ax.set_title(f"catalog build, {payload['items']} photos, {payload['machine']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1000, help="photos to build (default 1000)")
    p.add_argument("--batch", type=int, default=64, help="Ray batch (block) size")
    p.add_argument("--commit-sizes", type=int, nargs="+", default=[10_000, 50_000])
    p.add_argument("--bundle", type=Path, default=None,
                   help="the encoder's bundle (default: the shipped MobileNetV1 teacher, "
                   "wrapped; examples/models/clothing-student is the shipped student)")
    args = p.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    items = make_photos(args.items)
    loadavg = os.getloadavg()
    b = bundle(args.bundle)
    runs = [run_local(b, items)]
    for workers in (1, 2):
        runs.append(run_ray(b, items, workers, args.batch))
    for r in runs:
        print(r, flush=True)
    commit = commit_cost(b, args.commit_sizes)
    last = commit[-1]
    k = 10_000_000 / last["items"]
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    payload = {"items": args.items, "machine": machine_info(), "loadavg": loadavg,
               "loadavg_end": os.getloadavg(), "command": command,
               "encoder": ("MobileNetV1 teacher" if args.bundle is None
                           else f"bundle `{args.bundle}` ({b.manifest.name})"),
               "dim": b.embedding_dim,
               "runs": runs, "commit": commit,
               "commit_10m": {"commit_s": last["commit_s"] * k, "segments": 1,
                              "sqlite_rows": int(last["sqlite_rows"] * k),
                              "bytes": int(last["bytes"] * k)}}
    md = markdown(payload)
    js, mdp = write("scale_catalog", payload, md)
    with contextlib.suppress(ImportError):  # matplotlib: the export extra
        plot(payload, mdp.with_suffix(".png"))
    print(md)
    print(js, mdp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
