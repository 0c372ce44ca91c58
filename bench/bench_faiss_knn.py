"""k-NN of the classifier: scikit-learn's KNeighborsClassifier against FaissKNNClassifier (same predictions).

For each training-set size, both fit on ``n`` unit-normalised vectors (``d`` dims, 10 classes) and predict
``n // 4`` queries with ``k`` neighbours and ``weights="distance"`` (what one cross-validation fold of the grid
search does); the best of ``--repeat`` wall-clock times is kept, and the predictions are checked to be equal.
One JSON line per size goes to ``bench/results/faiss_knn.jsonl``. ``FAISS_KNN_MIN_TRAIN`` in
:mod:`core.models.classifier.model` is read off these rows.

    .venv/bin/python -m bench.bench_faiss_knn --sizes 1000 5000 20000 --dim 256
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

from bench.common import record
from core.models.classifier.faiss_knn import FaissKNNClassifier


def _best(fn, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    for n in a.sizes:
        centres = rng.normal(size=(10, a.dim))
        y = rng.integers(0, 10, n)
        X = normalize(centres[y] + rng.normal(scale=3.0, size=(n, a.dim))).astype(np.float32)
        Q = normalize(centres[rng.integers(0, 10, n // 4)] + rng.normal(scale=3.0, size=(n // 4, a.dim))).astype(np.float32)
        t_sk, p_sk = _best(lambda: KNeighborsClassifier(n_neighbors=a.k, weights="distance").fit(X, y).predict(Q), a.repeat)
        t_fa, p_fa = _best(lambda: FaissKNNClassifier(n_neighbors=a.k, weights="distance").fit(X, y).predict(Q), a.repeat)
        record("faiss_knn", {"n_train": n, "n_query": n // 4, "dim": a.dim, "k": a.k, "sklearn_s": round(t_sk, 4),
                             "faiss_s": round(t_fa, 4), "speedup": round(t_sk / t_fa, 2),
                             "same_predictions": bool((p_sk == p_fa).all())})


if __name__ == "__main__":
    main()
