"""The export report: training curves (PNG), a neighbour grid (PNG) and one HTML page.

Everything the page shows is also in the bundle's manifest ``metrics``; the page adds the
pictures: loss and the epoch-selection score (same-label mAP@10, teacher-neighbour
agreement@10) per epoch, and query photos with their nearest neighbours (green frame: same
label, when the photos have labels).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["plot_curves", "plot_neighbours", "standing", "write_html_report"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict], out: Path) -> Path:
    """Loss terms, and each selection score in the history (``val_map@10``, ``agree@10``)
    against epoch, saved as PNG."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [h["epoch"] + 1 for h in history]
    for key in ("loss", "relational", "cosine", "label"):
        values = [h.get(key, 0.0) for h in history]
        if any(values):
            a.plot(epochs, values, label=key)
    a.set_xlabel("epoch")
    a.set_title("training loss")
    a.legend()
    for key, name, colour in (("val_map@10", "same-label mAP@10", "#3a7"),
                              ("agree@10", "agreement@10 with the teacher", "#37a")):
        if history and all(key in h for h in history):
            b.plot(epochs, [h[key] for h in history], marker="o", color=colour, label=name)
    b.set_xlabel("epoch")
    b.set_title("epoch selection (held-out images)")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_neighbours(views: np.ndarray, vectors: np.ndarray, labels: Optional[Sequence],
                    out: Path, queries: int = 6, k: int = 5, seed: int = 0) -> Path:
    """Rows of query crop + its ``k`` nearest neighbours (green frame = same label, red = not;
    grey without labels)."""
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
            colour = ("#2a2" if labels[i] == labels[q] else "#c33") if judged else "#333"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            title = ("" if labels[i] is None else f"{labels[i]}") if col == 0 else f"{sims[i]:.2f}"
            ax.set_title(title, fontsize=8)
    fig.suptitle("queries (left) and nearest neighbours"
                 + ("; green = same label" if any(v is not None for v in labels) else ""),
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


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4f}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


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
                      sets: Optional[dict[str, Any]] = None) -> Path:
    """One self-contained HTML page (images inlined).

    ``summary``: one row per model (the teacher, the torch student, every file) with its
    numbers (``seen_map@10``, ``seen_agree@10``, ... ; None where not measurable), shown side
    by side with each model's difference to the teacher; ``sets``: what each measured set
    holds (``images``, ``labelled``, the chance level of agree@10); ``whitening`` is
    :meth:`~edgerec.export.distill.whiten.WhiteningChoice.to_dict` when the export whitened;
    the recipe's ``seed`` and ``distill_seed`` head the page.
    """
    sets = sets or {}
    described = [{"set": k, **v} for k, v in sets.items() if isinstance(v, dict)
                 and "images" in v]
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font:14px sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#eee}</style>",
        f"<h1>{html.escape(title)}</h1>",
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
        "<h2>Artifacts and parity with the torch fp32 student</h2>", _table(artifacts),
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
        parts += ["<p>What each power would give on the measured sets (never used to "
                  "choose):</p>", _table([{"power": p, **v} for p, v in by_power.items()])]
    if curves:
        parts += ["<h2>Training</h2>", _img(curves)]
    if neighbours:
        parts += ["<h2>Nearest neighbours (validation)</h2>", _img(neighbours)]
    issues = data.get("issues", [])
    parts += [
        "<h2>Data</h2>", f"<pre>{html.escape(json.dumps(data.get('counts', {}), indent=1))}</pre>",
        f"<p>{len(issues)} issue(s) found while scanning (excluded from training):</p>",
        _table([{k: i.get(k) for k in ("kind", "path", "detail")} for i in issues[:200]]),
        "<h2>Recipe</h2>", f"<pre>{html.escape(json.dumps(recipe, indent=1))}</pre>",
    ]
    out.write_text("\n".join(parts), encoding="utf-8")
    return out
