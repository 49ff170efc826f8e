"""Scorer recipe experiments: NDCG@10 of the device's two-stage ranking (top-500 by u.v,
re-ranked by the scorer) against visual kNN (u.v), over several holdout seeds.

Recipes are compared on split seeds other than the one the README's `edgerec evaluate` run
reports (seed 0), so choosing a recipe does not look at that run's held-out events. Each
recipe appends one JSON line to results/scorer_runs.jsonl.

    python benchmarks/scorer_recipe.py --catalog build/clothing-catalog \\
        --events ../shared/data/clothing-small/items.csv --user-column owner_id \\
        --seeds 1 2 3 --set epochs=40 user_balance=1 --tag balance
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(Path(__file__).parent))
from _report import parse_value  # noqa: E402


def main() -> None:
    from edgerec.export.options import NegativeSampling, ScorerConfig
    from edgerec.export.scorer.train import train_scorer
    from edgerec.sdk import Catalog, user_vector
    from edgerec.sdk.evaluation.events import holdout_split, read_events
    from edgerec.sdk.evaluation.ranking_metrics import ndcg_at_k, paired_bootstrap_ci

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", required=True, help="catalog directory")
    parser.add_argument("--events", required=True, help="events CSV")
    parser.add_argument("--user-column", default="user_id", help="user id column")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="split seeds")
    parser.add_argument("--candidates", type=int, default=500, help="two-stage C")
    parser.add_argument("--set", nargs="*", default=[],
                        help="ScorerConfig overrides key=value (negatives=U,P,H; hidden=a,b)")
    parser.add_argument("--tag", default="", help="label for the results line")
    args = parser.parse_args()

    config = ScorerConfig()
    names = {f.name for f in fields(ScorerConfig)}
    for item in args.set:
        key, _, text = item.partition("=")
        if key not in names:
            raise SystemExit(f"unknown ScorerConfig field {key!r}; fields: {sorted(names)}")
        value = parse_value(text)
        if key == "negatives":
            value = NegativeSampling(*value)
        config = replace(config, **{key: value})

    with Catalog.open(args.catalog) as catalog:
        ids = list(catalog)
        _, vectors = catalog.vectors(ids)
    vectors = np.asarray(vectors, np.float32)
    index = {item: i for i, item in enumerate(ids)}
    log = read_events(args.events, known_items=index, user_column=args.user_column)
    rows = []
    for seed in args.seeds:
        split = holdout_split(log, test_fraction=0.2, seed=seed)
        t = time.perf_counter()
        result = train_scorer(split.train, ids, vectors, replace(config, seed=seed),
                              log=lambda _msg: None)
        fold = result.weights.folded()
        knn, mlp = [], []
        for user, held in sorted(split.test.items()):
            history = [e.to_event() for e in split.train[user]]
            u = user_vector(history, {e.item_id: vectors[index[e.item_id]] for e in history})
            if u is None:
                continue
            sims = vectors @ u
            sims[[index[e.item_id] for e in history]] = -np.inf
            relevant = {e.item_id for e in held}
            order = np.argsort(-sims, kind="stable")
            knn.append(ndcg_at_k([ids[i] for i in order[:10]], relevant, 10))
            cand = order[: args.candidates]
            rerank = cand[np.argsort(-fold(u, vectors[cand]), kind="stable")]
            mlp.append(ndcg_at_k([ids[i] for i in rerank[:10]], relevant, 10))
        knn, mlp = np.array(knn), np.array(mlp)
        ci = paired_bootstrap_ci(mlp, knn, seed=seed)
        rows.append({"seed": seed, "users": len(knn), "scorer": mlp.mean(), "knn": knn.mean(),
                     "margin": ci.mean, "low": ci.low, "high": ci.high,
                     "best_epoch": result.best_epoch, "seconds": time.perf_counter() - t})
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in rows[-1].items()}), flush=True)
    line = {"tag": args.tag, "config": config.to_dict(), "runs": rows,
            "mean_margin": float(np.mean([r["margin"] for r in rows])),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "scorer_runs.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"{args.tag}: mean margin over seeds {line['mean_margin']:+.4f}")


if __name__ == "__main__":
    main()
