"""Cornac's VBPR (He & McAuley 2016; PyPI ``cornac``, torch on CPU) beside edgerec's numpy
visual BPR and the device's visual kNN, on the split ``benchmarks/feed_baselines.py`` uses:
MovieLens, leave-last-out, the teacher's 1024-d poster vectors, edgerec's metrics and paired
bootstrap. An optional comparison, in its own virtual environment (Cornac's VBPR needs torch;
neither belongs in edgerec's)::

    python3 -m venv build/cornac-venv
    build/cornac-venv/bin/pip install cornac==3.0.1 torch pillow tqdm
    build/cornac-venv/bin/pip install --no-deps -e .
    OPENBLAS_NUM_THREADS=1 build/cornac-venv/bin/python benchmarks/cornac_vbpr.py
    # writes results/cornac_vbpr.{json,md}

Cornac's VBPR is trained with the hyperparameters of Cornac's own VBPR example (k = 10 item
factors, k2 = 20 visual factors, 50 epochs, batches of 100, Adam at 0.005, lambda_w 1,
lambda_b 0.01), not tuned. It keeps per-item factors for the items it trained on; an item no
training user had (cold) is scored with VBPR's visual part only, ``theta_u . (E f) + beta' . f``,
as the paper intends.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import write

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"


class CornacVbpr:
    """A :class:`~edgerec.sdk.evaluation.ranker.ScoreRanker` over a fitted Cornac VBPR."""

    name = "cornac_vbpr"
    description = "Cornac's VBPR (torch, CPU), Cornac's example hyperparameters"

    def __init__(self, context: Any, seed: int) -> None:
        import cornac
        import torch
        from edgerec.sdk.evaluation.ranker import ScoreRanker

        torch.set_num_threads(1)
        self._ranker = ScoreRanker(context.tiebreak)
        users, items = context.interactions.pairs()
        train = cornac.data.Dataset.from_uir(
            [(str(u), str(i), 1.0) for u, i in zip(users.tolist(), items.tolist())], seed=seed)
        vectors = context.data.vectors
        image = cornac.data.ImageModality(features=vectors.copy(),
                                          ids=[str(i) for i in range(len(vectors))])
        image.build(id_map=train.iid_map)
        train.add_modalities(item_image=image)
        start = time.perf_counter()
        self.model = cornac.models.VBPR(k=10, k2=20, n_epochs=50, batch_size=100,
                                        learning_rate=0.005, lambda_w=1, lambda_b=0.01,
                                        lambda_e=0.0, use_gpu=False, verbose=False, seed=seed)
        self.model.fit(train)
        self.fit_seconds = time.perf_counter() - start
        self.extras = {"cornac": cornac.__version__, "torch": torch.__version__,
                       "fit_seconds": round(self.fit_seconds, 1)}
        known = np.array([int(raw) for raw in train.item_ids], np.int64)  # by Cornac index
        self._known, self._uid = known, train.uid_map
        self._users = context.users
        cold = np.setdiff1d(np.arange(len(vectors)), known)
        self._cold = cold
        f = vectors[cold].astype(np.float64)
        self._cold_theta = f @ self.model.emb_matrix
        self._cold_bias = (f @ self.model.beta_prime).ravel()
        self.tiebreak = context.tiebreak
        self._n = len(vectors)

    def scores(self, user: int) -> np.ndarray:
        u = self._uid[str(int(self._users[user]))]
        out = np.empty(self._n)
        out[self._known] = self.model.score(u)
        out[self._cold] = self._cold_theta @ self.model.theta_user[u] + self._cold_bias
        return out

    def ranks(self, user: int, exclude: np.ndarray, items: np.ndarray,
              scores: np.ndarray) -> np.ndarray:
        return self._ranker.ranks(user, exclude, items, scores)


def main() -> None:
    from edgerec.sdk import Catalog
    from edgerec.sdk.bundle.manifest import UserVectorRecipe
    from edgerec.sdk.evaluation import (
        BaselineContext,
        Bootstrap,
        CatalogData,
        Vbpr,
        VisualKnn,
        auc_by_slice,
        build_task,
        holdout_split,
        margins,
        parse_metric,
        read_events,
        slice_result,
    )

    start, seed = time.perf_counter(), 0
    load_before = os.getloadavg()[0]
    with Catalog.open(BUILD / "movielens-teacher-catalog", readonly=True) as cat:
        log = read_events(BUILD / "movielens" / "events.csv", known_items=set(cat))
        data = CatalogData.load(cat)
    split = holdout_split(log, protocol="leave-last-out")
    task = build_task(split, data, UserVectorRecipe())
    tiebreak = np.random.default_rng([seed, 1]).permutation(len(data.ids))
    context = BaselineContext(task, data, tiebreak, seed)
    models = [CornacVbpr(context, seed), Vbpr(context), VisualKnn(context)]
    metrics = [parse_metric(n) for n in ("NDCG@20", "Recall@20", "HR@10", "MRR")]
    bootstrap = Bootstrap(1000, 0.95, seed)
    rows, per_user = {}, {}
    for model in models:
        ranks, aucs = [], {}
        for p in range(len(task.users)):
            scores = model.scores(p)
            ranks.append(model.ranks(p, task.banned[p], task.test[p], scores))
            aucs[p] = auc_by_slice(scores, task.banned[p], {"all": task.test[p]})["all"]
        masks = [np.ones(len(t), bool) for t in task.test]
        result, values = slice_result(ranks, masks, metrics, aucs, bootstrap)
        rows[model.name], per_user[model.name] = result, values
    names = [m.name for m in metrics] + ["AUC"]
    margin = margins(per_user, "cornac_vbpr", names, bootstrap)
    payload = {
        "command": "OPENBLAS_NUM_THREADS=1 build/cornac-venv/bin/python benchmarks/cornac_vbpr.py",
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "seconds": round(time.perf_counter() - start, 1), "users": len(task.users),
        "models": {k: {"all": v.to_dict(), "extras": getattr(m, "extras", {})}
                   for (k, v), m in zip(rows.items(), models)},
        "margins_of_cornac_vbpr": {n: {k: v.to_dict() for k, v in per.items()}
                                   for n, per in margin.items()},
    }
    lines = ["# Cornac's VBPR beside edgerec's (`benchmarks/cornac_vbpr.py`)", "",
             f"`{payload['command']}`; MovieLens leave-last-out, {len(task.users)} users; load "
             f"average {load_before:.2f} before / {payload['load_after']:.2f} after; "
             f"{payload['seconds']:.0f} s; {models[0].extras}.", "",
             "| model | NDCG@20 [95% CI] | Recall@20 | HR@10 | MRR | AUC | cornac_vbpr's NDCG@20 "
             "margin [95% CI] |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ci, m = r["NDCG@20"], margin["NDCG@20"].get(name)
        lines.append(f"| {name} | {ci.mean:.4f} [{ci.low:.4f}, {ci.high:.4f}] | "
                     f"{r.mean('Recall@20'):.4f} | {r.mean('HR@10'):.4f} | {r.mean('MRR'):.4f} | "
                     f"{r.mean('AUC'):.3f} | "
                     + (f"{m.mean:+.4f} [{m.low:+.4f}, {m.high:+.4f}]" if m else "") + " |")
    text = "\n".join(lines) + "\n"
    write("cornac_vbpr", payload, text)
    print(text)


if __name__ == "__main__":
    main()
