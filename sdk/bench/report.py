"""``edgerec bench``'s files: ``bench.json`` (everything), ``bench.md`` (tables) and
``bench.png`` (when matplotlib is installed; the device does not need it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from edgerec.sdk.files import atomic_write_text

__all__ = ["markdown", "write_report"]

_IN_CACHE_BYTES = 64 << 20  # a scan smaller than this may be served from the CPU caches


def _ms(stats: Optional[dict[str, Any]], key: str = "p50") -> str:
    if not stats or stats.get("n", 0) == 0:
        return "–"
    value = stats[key]
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _trio(stats: Optional[dict[str, Any]]) -> str:
    if not stats or stats.get("n", 0) == 0:
        return "–"
    return f"{_ms(stats)} / {_ms(stats, 'p90')} / {_ms(stats, 'p99')} ({stats['n']})"


def _name(cfg: dict[str, Any]) -> str:
    return f"{cfg['bundle']} {cfg['engine']} {cfg['precision']} {cfg['threads']}t"


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a :func:`~.runner.run_bench` result."""
    m, o = result["machine"], result["options"]
    lines = [
        "# edgerec bench", "",
        f"Machine: {m['cpu']} ({m['arch']}), {m['cores']} cores, flags "
        f"{', '.join(m['cpu_flags']) or 'none found'}; Python {m['python']}, numpy "
        f"{m['numpy']}, engines {json.dumps(m['engines'])}, faiss {m.get('faiss') or 'absent'}; "
        f"commit {m.get('commit') or 'unknown'}; {m['date']}.", "",
        f"Each configuration ran in its own process, {o['rounds']} interleaved round(s); per "
        f"stage up to {o['runs']} timed runs after {o['warmup']} warm-up runs (a stage stops "
        f"after {o['max_seconds']} s of runs: the count is in brackets). p50 is the median of "
        f"the rounds' medians; p90/p99 pool the rounds. Ratios are to `{result['baseline']}`, "
        f"taken within each round. {len(o['photos_used'])} real photos; the catalog behind "
        f"search and end to end holds {o['catalog_size']:,} items (jittered copies of the "
        "photos' embeddings, int8).", "",
        "## Pipeline, batch 1 (ms: p50 / p90 / p99 (n))", "",
        "| configuration | decode | preprocess | encode | search | re-rank | end to end | "
        "e2e ratio | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    errors = []
    for cfg in result["configs"]:
        if "error" in cfg:
            errors.append(f"- {_name(cfg)}: {cfg['error']}")
            continue
        s = cfg["stages"]
        ratio = cfg.get("ratio_end_to_end")
        lines.append(
            f"| {_name(cfg)} | {_trio(s.get('decode'))} | {_trio(s.get('preprocess'))} | "
            f"{_trio(s.get('encode_b1'))} | {_trio(s.get('search'))} | {_trio(s.get('rerank'))} "
            f"| {_trio(s.get('end_to_end'))} | {'–' if ratio is None else f'{ratio:.2f}'} | "
            f"{cfg['peak_rss_mb']:.0f} |")
    lines += ["", "decode: JPEG bytes -> RGB at the input size (reduced-scale decode, resize, "
              "crop); preprocess: -> normalised float32 batch; encode: the engine, L2 norm and "
              "whitening; search: `Catalog.search` top-10; re-rank: the bundle's scorer on C "
              "candidates (– without a scorer); end to end: `Recommender.similar(photo file)`.",
              "", "## Encode by batch size (ms per image, p50; ratio of batch 1 to the "
              "baseline)", ""]
    batches = o["batches"]
    lines += ["| configuration | size MB | load ms | "
              + " | ".join(f"batch {b}" for b in batches) + " | b1 ratio |",
              "|---|---|---|" + "---|" * len(batches) + "---|"]
    for cfg in result["configs"]:
        if "error" in cfg:
            continue
        per = []
        for b in batches:
            stats = cfg["stages"].get(f"encode_b{b}")
            per.append("–" if not stats else f"{stats['p50'] / b:.2f} (n={stats['n']})")
        ratio = cfg.get("ratio_encode_b1")
        lines.append(f"| {_name(cfg)} | {cfg['size_bytes'] / 1e6:.2f} | {cfg['load_ms']:.0f} | "
                     + " | ".join(per) + f" | {'–' if ratio is None else f'{ratio:.2f}'} |")
    search = result.get("search") or {}
    if search.get("rows"):
        lines += [
            "", f"## Catalog search scaling (top-{search['k']}, one query, 1 thread)", "",
            f"Memory read bandwidth measured here: {search['memory_bandwidth_gbs']:.1f} GB/s "
            "(one thread, float32 sum). kernel: rows and scores only (what faiss's `search()` "
            "returns); `Catalog.search`: ids and metadata from SQLite too. Fraction: bytes "
            "of stored vectors read per query / kernel p50 / bandwidth (\"cache\": the "
            "catalog fits in the CPU caches, so the fraction means nothing). In brackets: the "
            "layout of the onnxruntime kernel's copy that this CPU chose.", "",
            "| items | dim | method | kernel ms p50 / p90 / p99 (n) | Catalog.search ms p50 | "
            "GB/s | fraction | setup ms | peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|"]
        for row in search["rows"]:
            layout = f" ({row['layout']})" if "layout" in row else ""
            head = f"| {row['items']:,} | {row['dim']} | {row['method']}{layout} |"
            if "kernel" not in row:
                lines.append(f"{head} {row.get('absent') or row.get('error')} | | | | | |")
                continue
            frac = ("cache" if row["bytes_scanned"] < _IN_CACHE_BYTES
                    else f"{row['bandwidth_fraction']:.2f}")
            lines.append(f"{head} {_trio(row['kernel'])} | {_ms(row.get('search'))} | "
                         f"{row['effective_gbs']:.1f} | {frac} | {row['setup_ms']:.0f} | "
                         f"{row['peak_rss_mb']:.0f} |")
    lines += ["", "## Sizes", "", "| bundle | artifact | bytes |", "|---|---|---|"]
    for b in result["bundles"]:
        for key, size in b["artifacts"].items():
            lines.append(f"| {b['label']} | {key} | {size:,} |")
    if errors:
        lines += ["", "## Configurations that did not run", "", *errors]
    notes = sorted({n for cfg in result["configs"] for n in cfg.get("notes", [])})
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    lines += ["", f"Command: `{result.get('command', 'edgerec bench')}`; "
              f"{result['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    configs = [c for c in result["configs"] if "stages" in c]
    rows = [r for r in (result.get("search") or {}).get("rows", []) if "kernel" in r]
    fig, axes = plt.subplots(1, 2 if rows else 1, figsize=(12 if rows else 7, 4.2),
                             squeeze=False)
    ax = axes[0][0]
    stages = ["decode", "preprocess", "encode_b1", "search", "rerank"]
    colours = ["#999", "#bbb", "#37c", "#3a7", "#c73"]
    names = [_name(c) for c in configs]
    left = [0.0] * len(configs)
    for stage, colour in zip(stages, colours):
        widths = [(c["stages"].get(stage) or {}).get("p50", 0.0) for c in configs]
        ax.barh(names, widths, left=left, color=colour, label=stage.replace("_b1", ""))
        left = [a + b for a, b in zip(left, widths)]
    e2e = [(c["stages"].get("end_to_end") or {}).get("p50") for c in configs]
    ax.scatter([v for v in e2e if v], [n for n, v in zip(names, e2e) if v], marker="|",
               s=300, color="k", label="end to end p50", zorder=3)
    ax.invert_yaxis()
    ax.set_xlabel("ms, batch 1 (p50 per stage, stacked)")
    ax.set_title("Photo -> top-10, per stage")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8,
              frameon=False)
    if rows:
        ax = axes[0][1]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = [(r["items"], r["kernel"]["p50"]) for r in rows if r["method"] == method]
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalog items")
        ax.set_ylabel("ms per query (kernel p50)")
        ax.set_title("Catalog search scaling, 1 thread")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8,
                  frameon=False)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(result: dict[str, Any], out: Union[str, os.PathLike],
                 name: str = "bench") -> dict[str, str]:
    """Write ``<out>/<name>.json``, ``.md`` and (with matplotlib) ``.png`` atomically;
    returns ``{"json": path, "markdown": path, "png": path or absent}``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / f"{name}.json", "markdown": folder / f"{name}.md"}
    atomic_write_text(paths["json"], json.dumps(result, indent=2) + "\n")
    atomic_write_text(paths["markdown"], markdown(result))
    png = _plot(result, folder / f"{name}.png")
    if png is not None:
        paths["png"] = png
    return {k: str(v) for k, v in paths.items()}
