"""The export report: training curves (PNG), a neighbour grid (PNG) and one HTML page.

Everything the page shows is also in the bundle's manifest ``metrics``; the page adds the
pictures: loss and the epoch-selection score (same-label mAP@10, teacher-neighbour
agreement@10) per epoch, and query photos with their nearest neighbours (a check mark and
solid frame: same label, a cross and dashed frame: another, when the photos have labels).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["artifact_rows", "plot_curves", "plot_neighbours", "standing", "summary_line",
           "write_html_report"]

PASS, FAIL = "\u2713", "\u2717"  # check and cross: the grid and tables never rely on colour


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict], out: Path) -> Path:
    """Loss terms, and each selection score in the history (``val_map@10``, ``agree@10``)
    against epoch, saved as PNG."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    epochs = [h["epoch"] + 1 for h in history]
    for key in ("loss", "relational", "cosine", "label"):
        values = [h.get(key, 0.0) for h in history]
        if any(values):
            a.plot(epochs, values, label=key)
    a.set_xlabel("epoch")
    a.set_title("training loss")
    a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=8,
             frameon=False)
    for key, name, colour in (("val_map@10", "same-label mAP@10", "#3a7"),
                              ("agree@10", "agreement@10 with the teacher", "#37a")):
        if history and all(key in h for h in history):
            b.plot(epochs, [h[key] for h in history], marker="o", color=colour, label=name)
    b.set_xlabel("epoch")
    b.set_title("epoch selection (held-out images)")
    b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8,
             frameon=False)
    for ax in (a, b):
        ax.set_xticks(epochs)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_neighbours(views: np.ndarray, vectors: np.ndarray, labels: Optional[Sequence],
                    out: Path, queries: int = 6, k: int = 5, seed: int = 0) -> Path:
    """Rows of query crop + its ``k`` nearest neighbours: same label marked by a check, a solid
    green frame and the word "same"; another label by a cross, a dashed red frame and that
    label (so it reads without colour); grey without labels."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels if labels is not None else [None] * len(vectors), dtype=object)
    picks = rng.choice(len(vectors), size=min(queries, len(vectors)), replace=False)
    fig, axes = plt.subplots(len(picks), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(picks)))
    axes = np.atleast_2d(axes)
    for row, q in enumerate(picks):
        sims = vectors @ vectors[q]
        sims[q] = -np.inf
        top = np.argsort(-sims)[:k]
        for col, i in enumerate([q, *top]):
            ax = axes[row, col]
            ax.imshow(views[i])
            ax.set_xticks([])
            ax.set_yticks([])
            judged = col > 0 and labels[i] is not None and labels[q] is not None
            same = judged and labels[i] == labels[q]
            colour = ("#2a2" if same else "#c33") if judged else "#333"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4 if judged else 2)
                spine.set_linestyle("-" if same or not judged else (0, (2, 2)))
            if col == 0:
                title = "query" + ("" if labels[i] is None else f": {labels[i]}")
            else:
                mark = (f"{PASS} same" if same else f"{FAIL} {labels[i]}") if judged else ""
                title = f"{mark} {sims[i]:.2f}".strip()
            ax.set_title(title, fontsize=8, fontweight="bold" if col == 0 else "normal")
    fig.suptitle("queries (left) and nearest neighbours"
                 + (f"; {PASS} solid frame = same label, {FAIL} dashed frame = other label"
                    if any(v is not None for v in labels) else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _banner(quick: bool, failures: dict[str, str]) -> list[str]:
    """The warning at the top: a ``--quick`` smoke run, and every gate that failed."""
    if not quick and not failures:
        return []
    text = []
    if quick:
        text.append("<p><b>--quick: a smoke configuration</b> (tiny images, 2 epochs, a "
                    "few images per label) that checks the toolchain works; not a model to "
                    "ship. Its numbers say nothing about a full export.</p>")
    if failures:
        items = "".join(f"<li>{FAIL} <b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                        for k, v in failures.items())
        text.append(f"<p>{len(failures)} gate(s) failed; these files are not in the "
                    f"bundle:</p><ul>{items}</ul>")
    else:
        text.append(f"<p>{PASS} every gate passed.</p>")
    return [f"<div class='banner' id='quick-banner'>{''.join(text)}</div>"]


def _by_power_rows(by_power: dict[str, dict[str, Any]], summary: list[dict[str, Any]],
                   whitening: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The validation-set whitening table: an unwhitened row first, the kept power marked."""
    kept = (whitening or {}).get("power")
    rows = []
    raw = next((r for r in summary if r.get("model") == "student_torch_fp32_unwhitened"), None)
    if raw is not None:
        rows.append({"power": "none (unwhitened)", **{k: raw.get(k) for k in
                                                      next(iter(by_power.values()))}})
    for power, values in by_power.items():
        chosen = kept is not None and float(power) == float(kept)
        rows.append({"power": f"{power} {PASS} kept" if chosen else power, **values})
    return rows


def _count_rows(counts: Any) -> list[dict[str, Any]]:
    """The scan's counts as table rows: nested ``{group: {name: n}}`` flattened."""
    if not isinstance(counts, dict):
        return [{"count": counts}]
    rows = []
    for key, value in counts.items():
        if isinstance(value, dict):
            rows += [{"what": f"{key}: {k}", "count": v} for k, v in value.items()]
        else:
            rows.append({"what": key, "count": value})
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def _rung_tried(attempt: dict[str, Any]) -> str:
    """``"minmax (cosine_mean 0.8980 < 0.98)"``: a failed rung and the gate checks it fell
    short of, or the error that stopped it (a record without shortfalls: the name alone)."""
    name = str(attempt.get("remedy"))
    if attempt.get("error"):
        error = str(attempt["error"])
        return f"{name} (failed: {error[:120]}{'...' if len(error) > 120 else ''})"
    short = attempt.get("shortfalls") or {}
    checks = "; ".join(f"{m} {_fmt(s.get('value'))} < {s.get('required')}"
                       for m, s in short.items() if isinstance(s, dict))
    return f"{name} ({checks})" if checks else name


def artifact_rows(metrics: dict[str, Any], sizes: dict[str, int]) -> list[dict[str, Any]]:
    """One row per encoder file the export tried, shipped or not, from the manifest
    ``metrics`` (``parity``, ``quantization`` ladder records, ``gate_failures``, ``macs``,
    ``latency``) and ``sizes`` (key -> bytes of the shipped files).

    Each row: ``artifact``, ``gate`` (``"✓ passed"``, ``"✗ failed: left out"`` or
    ``"no gate (fp32 parity)"``), ``rung`` (the int8 ladder rung that passed, or every rung
    tried with the gate checks it fell short of), parity (cosine mean/min, top-10 overlap; a
    failed file's best attempt), ``MMACs``, ``size_kb``, latency p50/p90.
    """
    ladders = metrics.get("quantization", {}) or {}
    failures = metrics.get("gate_failures", {}) or {}
    latency = metrics.get("latency", {}) or {}
    macs = (metrics.get("macs") or {}).get("student")
    keys = [k for k in metrics.get("parity", {}) if k.startswith("encoder/")]
    keys += [k for k in failures if k not in keys]
    keys += [k for k, v in ladders.items() if k.startswith("encoder/") and k not in keys
             and isinstance(v, dict) and v.get("passed") is False]
    rows = []
    for key in keys:
        parity = metrics.get("parity", {}).get(key) or {}
        ladder = ladders.get(key) or {}
        attempts = ladder.get("attempts", [])
        if key in failures or ladder.get("passed") is False:
            why = failures.get(key, "")
            tried = ", ".join(_rung_tried(a) for a in attempts)
            if not tried:  # no ladder record kept: the failure message names the rungs
                found = re.search(r"remedies \(([^)]*)\)", why)
                tried = found.group(1) if found else ""
            reached = re.search(r"reached (.*?)\.(?:\s|$)", why)
            gate = (f"{FAIL} failed: {ladder.get('outcome', 'left out')}"
                    + (f" (best: {reached.group(1)})" if reached else ""))
            rung = f"none passed; tried {tried}" if tried else ""
            measured = [a for a in attempts if a.get("report")]
            best = next((a for a in measured if a.get("remedy") == ladder.get("best")),
                        None) or max(measured, default=None,  # the ladder's own pick first
                                     key=lambda a: a["report"].get("cosine_mean") or 0.0)
            parity = (best or {}).get("report") or {}
        elif key.endswith("int8"):
            gate = f"{PASS} passed" if ladder else f"{PASS} passed (no ladder record)"
            rung = f"{ladder.get('remedy')} (rung {len(attempts)} of ladder)" if ladder else "n/a"
        else:
            gate, rung = f"{PASS} fp32 parity", "n/a"
        lat = latency.get(key) or {}
        rows.append({
            "artifact": key, "gate": gate, "rung": rung or "n/a",
            "cosine_mean": parity.get("cosine_mean"), "cosine_min": parity.get("cosine_min"),
            "top10_overlap": parity.get("neighbour_overlap"),
            "MMACs": round(macs / 1e6, 1) if macs else None,
            "size_kb": round(sizes[key] / 1024) if key in sizes else None,
            "latency_p50_ms": lat.get("p50_ms"), "latency_p90_ms": lat.get("p90_ms"),
        })
    return rows


def summary_line(bundle: Path, report: Path, metrics: dict[str, Any], quick: bool) -> str:
    """The export's last words on stdout: where the bundle and report are, that ``--quick``
    is a smoke configuration, and every gate that failed (the files left out)."""
    lines = [f"wrote {bundle}; report {report}"]
    if quick:
        lines.append("--quick: a smoke configuration (checks the toolchain), not a model to "
                     "ship")
    failures = metrics.get("gate_failures") or {}
    if failures:
        lines.append(f"{len(failures)} gate(s) failed, left out: " + ", ".join(failures))
    elif any(k.endswith("int8") for k in metrics.get("parity", {})):
        lines.append("every int8 gate passed")
    return "\n".join(lines)


def standing(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where each model stands against the teacher: one row per model other than the teacher,
    its difference to the teacher on every measured number (``None`` where either is missing).

    ``summary`` rows are ``{"model": name, metric: value, ...}`` with a ``"teacher"`` row.
    """
    teacher = next((r for r in summary if r.get("model") == "teacher"), None)
    if teacher is None:
        return []
    out = []
    for row in summary:
        if row is teacher:
            continue
        diff: dict[str, Any] = {"model": row["model"]}
        for key, value in row.items():
            if key != "model" and key in teacher:
                t = teacher[key]
                diff[f"{key} vs teacher"] = (None if value is None or t is None
                                             else value - t)
        out.append(diff)
    return out


def write_html_report(out: Path, *, title: str, summary: list[dict[str, Any]],
                      artifacts: list[dict[str, Any]], data: dict[str, Any],
                      curves: Optional[Path], neighbours: Optional[Path],
                      recipe: dict[str, Any], whitening: Optional[dict[str, Any]] = None,
                      sets: Optional[dict[str, Any]] = None, quick: bool = False,
                      gate_failures: Optional[dict[str, str]] = None,
                      gate_checks: Sequence[str] = ()) -> Path:
    """One self-contained HTML page (images inlined).

    ``summary``: one row per model (the teacher, the torch student, every file) with its
    numbers (``seen_map@10``, ``seen_agree@10``, ... ; None where not measurable), shown side
    by side with each model's difference to the teacher; ``sets``: what each measured set
    holds (``images``, ``labelled``, the chance level of agree@10); ``whitening`` is
    :meth:`~edgerec.export.distill.whiten.WhiteningChoice.to_dict` when the export whitened;
    the recipe's ``seed`` and ``distill_seed`` head the page. ``artifacts``: rows of
    :func:`artifact_rows`. ``quick``: a banner says the bundle is a smoke configuration;
    ``gate_failures`` (key -> why) are listed at the top, quick or not; ``gate_checks``
    names what the int8 gate measures.
    """
    sets = sets or {}
    described = [{"set": k, **v} for k, v in sets.items() if isinstance(v, dict)
                 and "images" in v]
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font:14px sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child{text-align:left}th{background:#eee}"
        ".banner{border:3px dashed #a60;background:#fff4e0;padding:.6em 1em;margin:1em 0}"
        "</style>",
        f"<h1>{html.escape(title)}</h1>",
        *_banner(quick, gate_failures or {}),
        f"<p>seed {html.escape(str(recipe.get('seed')))}, training seed "
        f"{html.escape(str(recipe.get('distill_seed')))}; trained "
        f"{'with' if recipe.get('trained_with_labels', True) else 'without'} labels "
        "(the full recipe is at the end).</p>",
        "<h2>Where the student stands</h2>",
        "<p>seen = the validation images, unseen = the unseen folder. mAP@10: same-label "
        "retrieval (only where the images have labels; with --ignore-labels they measure but "
        "never train). agree@10: the share of each image's 10 nearest neighbours (among the "
        "same held-out images) that the teacher also ranks in its 10 nearest; the teacher's "
        "own is 1 by definition.</p>",
        _table(summary), "<h3>Difference to the teacher</h3>", _table(standing(summary)),
        "<h3>The measured sets</h3>", _table(described),
        "<h2>Artifacts: gates, parity with the torch fp32 student, cost</h2>",
        "<p>Every encoder file the export tried, including int8 ones left out. gate: the "
        "int8 gate (checks: " + html.escape(", ".join(gate_checks) or "n/a") + ") or fp32 "
        "parity; rung: the int8 quantization remedy that passed (or every rung tried, each "
        "with the gate checks it fell short of); parity columns for a failed file are its "
        "best attempt's. MMACs per image; latency: "
        "one image, 1 thread, on the file's own engine, measured during the export.</p>",
        _table(artifacts),
    ]
    if whitening:
        measure = whitening.get("measure", "map@10")
        tried = whitening.get(f"selection_{measure}", {})
        parts += [
            "<h2>Encoder whitening</h2>",
            f"<p>{html.escape(str(whitening.get('covariance')))} covariance, fitted on "
            f"{whitening.get('fitted_on')} training images; kept power: "
            f"{html.escape(str(whitening.get('power')))} (epoch-selection {measure} "
            f"unwhitened {_fmt(whitening.get(f'baseline_selection_{measure}'))})</p>",
            _table([{"power": p, f"selection {measure}": m} for p, m in tried.items()]),
        ]
    by_power = sets.get("whitening_by_power")
    if by_power:
        parts += ["<h3>Whitening on the validation set</h3>",
                  "<p>What each power gives on the validation images (seen) and the unseen "
                  "ones, next to the student without whitening: measured after the choice, "
                  "never used to make it (the power is picked on the selection images).</p>",
                  _table(_by_power_rows(by_power, summary, whitening))]
    if curves:
        parts += ["<h2>Training</h2>", _img(curves)]
    if neighbours:
        parts += ["<h2>Nearest neighbours (validation)</h2>", _img(neighbours)]
    issues = data.get("issues", [])
    parts += [
        "<h2>Data</h2>", _table(_count_rows(data.get("counts", {}))),
        f"<p>{len(issues)} issue(s) found while scanning (excluded from training):</p>",
        _table([{k: i.get(k) for k in ("kind", "path", "detail")} for i in issues[:200]]),
        "<h2>Recipe</h2>", f"<pre>{html.escape(json.dumps(recipe, indent=1))}</pre>",
    ]
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
