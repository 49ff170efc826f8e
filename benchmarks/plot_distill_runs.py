"""Plot the per-epoch seen/unseen mAP@10 of the recipe runs that logged them (--probe-unseen).

    python benchmarks/plot_distill_runs.py [--tags r4-trajectory r5-label-decay ...]

Reads results/distill_runs.jsonl, writes results/distill_trajectories.png. The probes are
diagnostics measured before the final BatchNorm re-estimation, so they sit a little below the
runs' final figures; they never choose the kept epoch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tags", nargs="*", help="runs to plot (default: all with probes)")
    parser.add_argument("--out", default=str(RESULTS / "distill_trajectories.png"),
                        help="PNG to write")
    args = parser.parse_args()
    lines = (RESULTS / "distill_runs.jsonl").read_text().splitlines()
    runs = [json.loads(line) for line in lines if line.strip()]
    runs = [r for r in runs if r.get("history") and "probe_unseen" in r["history"][0]
            and (not args.tags or r["tag"] in args.tags)]
    if not runs:
        raise SystemExit("no run in distill_runs.jsonl logged probes (--probe-unseen)")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for run in runs:
        epochs = [row["epoch"] + 1 for row in run["history"]]
        for ax, key in zip(axes, ("probe_seen", "probe_unseen")):
            line, = ax.plot(epochs, [row[key] for row in run["history"]], label=run["tag"])
            best = run["best_epoch"]
            ax.plot([best + 1], [run["history"][best][key]], "o", color=line.get_color())
    for ax, title, target, teacher in zip(
            axes, ("seen labels (clothing-small/validation)", "unseen labels (clothing-extra)"),
            (0.60, 0.40), (runs[0]["teacher_seen_map10"], runs[0]["teacher_unseen_map10"])):
        ax.axhline(target, ls="--", color="grey", lw=1, label=f"target {target:.2f}")
        ax.axhline(teacher, ls=":", color="black", lw=1, label=f"teacher {teacher:.3f}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mAP@10 (student, per-epoch probe)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle("Distillation runs: dots mark the epoch kept (picked on held-out train images)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
