"""Retrain speed (issue 12): the classifier's adaptive grid against the full grid and scikit-learn's LogisticRegression.

In one run, on the same features and the same labelled items: ``ClassifierConfig()`` (grid="auto": 3 folds, the
3 smallest C values warm-started, one early-stopped MLP, a time budget), ``ClassifierConfig(grid="full")`` (every
value, 5 folds, cold starts) and ``StandardScaler + LogisticRegression()``. Each is timed from ``fit`` to a
prediction of every item and scored by macro-F1 on the unlabelled items (the labelled ones are excluded).

Data: CIFAR-10 half (5,000 images) on EfficientNet-Lite0 features (1,280-d) through the feature cache of
bench_pseudo_label.py (``.devdata/cache/cifar10_half``; computing it on a 2-core CPU takes minutes), or with
``--data mnist`` MNIST-5k pixels reduced by PCA to ``--pca`` dimensions. ``--fractions`` of each class are
labelled (0.1 = 500 labels, 0.2 = 1,000). Rows go to bench/results/classifier_speed.jsonl.

    python bench/bench_classifier_speed.py [--data cifar|mnist] [--fractions 0.1,0.2] [--skip-full]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import record  # noqa: E402


def cifar_features(device: str = "cpu") -> tuple[np.ndarray, np.ndarray, str]:
    """(X (5000, 1280), labels (5000,), description) of CIFAR-10 half on EfficientNet-Lite0, via the cache."""
    from bench.bench_pseudo_label import cached_features, cifar_files

    paths, y = cifar_files()
    return cached_features(paths, "efficientnet_lite0", "cifar10_half", device), y, "cifar10_half efficientnet_lite0"


def mnist_features(dim: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(X (5000, dim), labels (5000,), description): MNIST-5k pixels through a PCA."""
    from sklearn.decomposition import PCA

    from core.io.demo import mnist_5k

    images, labels = mnist_5k()
    X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    X = PCA(n_components=dim, random_state=0).fit_transform(X).astype(np.float32)
    return X, np.asarray(labels).astype(str), f"mnist-5k pixels PCA {dim}"


def stratified(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of each class (at least 2), sorted item indices."""
    rng = np.random.default_rng(seed)
    out = [rng.permutation(np.flatnonzero(y == c))[: max(2, int(round(fraction * (y == c).sum())))]
           for c in np.unique(y)]
    return np.sort(np.concatenate(out))


def run_method(name: str, X: np.ndarray, y: np.ndarray, lab: np.ndarray, device: str) -> dict:
    """Fit one method on the labelled rows, predict every item; seconds, macro-F1 on the unlabelled rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from core.models.classifier.model import ClassifierConfig, FeatureClassifier

    t0 = time.perf_counter()
    extra: dict = {}
    if name == "logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X[lab], y[lab])
        proba = model.predict_proba(X)
        classes = model.classes_
    else:
        clf = FeatureClassifier(ClassifierConfig(grid=name), device=device).fit(X[lab], y[lab])
        proba, classes = clf.predict_proba(X), clf.classes_
        s = clf.summary()
        extra = {"selected": s["model_selected"], "params": s["params_selected"], "cv_folds": s["cv_folds"],
                 "cv_macro_f1": round(s["cv_macro_f1"], 4), "cv_seconds": s["cv_seconds"],
                 "candidates": len(s["cv_results"]),
                 "skipped": sum(1 for r in s["cv_results"] if r.get("skipped"))}
    seconds = time.perf_counter() - t0
    rest = np.setdiff1d(np.arange(len(y)), lab)
    pred = classes[proba.argmax(1)]
    f1 = float(f1_score(y[rest], pred[rest], average="macro"))
    return {"method": name, "seconds": round(seconds, 2), "macro_f1_unlabelled": round(f1, 4),
            "max_confidence_min": round(float(proba.max(1).min()), 4),
            "share_confidence_1": round(float((proba.max(1) >= 1.0).mean()), 4), **extra}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=["cifar", "mnist"], default="cifar")
    ap.add_argument("--pca", type=int, default=256, help="--data mnist: PCA dimensions")
    ap.add_argument("--fractions", default="0.1,0.2", help="labelled share of each class, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-full", action="store_true", help="leave out grid='full' (the slow reference)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    X, y, data = cifar_features(a.device) if a.data == "cifar" else mnist_features(a.pca)
    methods = ["auto", *([] if a.skip_full else ["full"]), "logreg"]
    for fraction in map(float, a.fractions.split(",")):
        lab = stratified(y, fraction, a.seed)
        rows = {m: run_method(m, X, y, lab, a.device) for m in methods}
        for m, r in rows.items():
            gap = None if "full" not in rows else round(r["macro_f1_unlabelled"] - rows["full"]["macro_f1_unlabelled"], 4)
            record("classifier_speed", {"data": data, "n_items": len(y), "dim": int(X.shape[1]),
                                        "label_fraction": fraction, "n_labelled": int(len(lab)), "seed": a.seed,
                                        "device": a.device, **r, "macro_f1_minus_full": gap})
    return 0


if __name__ == "__main__":
    sys.exit(main())
