"""The export report: training curves (PNG), a neighbour grid (PNG) and one HTML page.

Everything the page shows is also in the bundle's manifest ``metrics``; the page adds the
pictures: loss and validation mAP@10 per epoch, and query photos with their nearest
neighbours (green frame: same label).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["plot_curves", "plot_neighbours", "write_html_report"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict], out: Path) -> Path:
    """Loss terms and validation mAP@10 against epoch, saved as PNG."""
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
    b.plot(epochs, [h["val_map@10"] for h in history], marker="o", color="#3a7")
    b.set_xlabel("epoch")
    b.set_title("validation mAP@10 (seen labels)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_neighbours(views: np.ndarray, vectors: np.ndarray, labels: Sequence, out: Path,
                    queries: int = 6, k: int = 5, seed: int = 0) -> Path:
    """Rows of query crop + its ``k`` nearest neighbours (green frame = same label)."""
    plt = _plt()
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
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
            colour = "#333" if col == 0 else ("#2a2" if labels[i] == labels[q] else "#c33")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
            ax.set_title(f"{labels[i]}" if col == 0 else f"{sims[i]:.2f}", fontsize=8)
    fig.suptitle("queries (left) and nearest neighbours; green = same label", fontsize=9)
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
    if isinstance(v, float):
        return f"{v:.4f}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def write_html_report(out: Path, *, title: str, summary: list[dict[str, Any]],
                      artifacts: list[dict[str, Any]], data: dict[str, Any],
                      curves: Optional[Path], neighbours: Optional[Path],
                      recipe: dict[str, Any], whitening: Optional[dict[str, Any]] = None,
                      ) -> Path:
    """One self-contained HTML page (images inlined); ``whitening`` is
    :meth:`~edgerec.export.distill.whiten.WhiteningChoice.to_dict` when the export whitened."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font:14px sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#eee}</style>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Retrieval quality (same-label mAP@10)</h2>", _table(summary),
        "<h2>Artifacts and parity with the torch fp32 student</h2>", _table(artifacts),
    ]
    if whitening:
        tried = whitening.get("selection_map@10", {})
        parts += [
            "<h2>Encoder whitening</h2>",
            f"<p>{html.escape(str(whitening.get('covariance')))} covariance, fitted on "
            f"{whitening.get('fitted_on')} training images; kept power: "
            f"{html.escape(str(whitening.get('power')))} (epoch-selection mAP@10 unwhitened "
            f"{_fmt(whitening.get('baseline_selection_map@10'))})</p>",
            _table([{"power": p, "selection mAP@10": m} for p, m in tried.items()]),
        ]
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
