"""Benchmark: estimated vs realised precision of pseudo-labels at a threshold chosen for a target (issue 12).

Protocol (per seed): MNIST-5k (``core.io.demo.mnist_5k``), PCA features (64 components of the pixels, fitted on
all 5,000 images without labels, like the ``pixels_pca`` extractor); ``--labels`` items drawn at random
(stratified) are labelled with their true class, the other items are the unlabelled pool. The project classifier
(:class:`core.models.classifier.model.FeatureClassifier`, grid search + refit) is fitted on the labelled rows; its
out-of-fold probabilities give the estimate (:mod:`core.evaluation.precision`). The threshold is the smallest one
whose 95 % Wilson lower bound reaches ``--target`` (``criterion="lower"``, at least ``--min-count`` OOF rows), and
also the one whose point estimate reaches it (``criterion="estimate"``). Recorded: the threshold, the estimate,
its interval and count, how many pool items it accepts and their precision against the reference labels.

Confidences of the k-NN the grid search often picks are vote shares (few distinct values), so a high target may
be out of reach at few labels: the row then says so (``threshold`` null, with the best bound reached).

``calibrated`` rows repeat it after the train job's calibration step (``core.models.training.calibrate_output``:
the map fitted on the OOF rows, applied to the pool), twice: with the threshold read off the cross-fitted OOF rows
(each half through the map of the other half; what the Pseudo-labels page used first) and off the OOF rows
through the final map (the scale of the published probabilities; what the page uses now).

    .venv/bin/python bench/bench_pseudo_precision.py [--labels 500 1000] [--target 0.95 0.98] [--seeds 3] [--quick]
    .venv/bin/python bench/bench_pseudo_precision.py --table [--since '2026-12-02 05:00']

Rows: ``bench/results/pseudo_precision.jsonl`` (``--out DIR`` or ``$BENCH_OUT`` overrides).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import record  # noqa: E402


def _stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row indices (sorted) with about n / k of each class."""
    classes = np.unique(y)
    per = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    picks = [rng.choice(np.flatnonzero(y == c), size=m, replace=False) for c, m in zip(classes, per)]
    return np.sort(np.concatenate(picks))


def _one(X: np.ndarray, y: np.ndarray, labels: int, targets: list[float], min_count: int, seed: int) -> list[dict]:
    from core.evaluation.precision import threshold_for_precision
    from core.models.classifier.model import FeatureClassifier

    rng = np.random.default_rng(seed)
    lab = _stratified(y, labels, rng)
    pool = np.setdiff1d(np.arange(len(y)), lab)
    t0 = time.perf_counter()
    clf = FeatureClassifier().fit(X[lab], y[lab])
    fit_s = time.perf_counter() - t0
    classes = clf.classes_
    raw_pool = clf.predict_proba(X[pool])
    variants = {"raw": (np.asarray(clf.oof_proba_, float), raw_pool)}
    # the train job's calibration step itself (core.models.training.calibrate_output), on these arrays
    from core.models.context import TrainOutput
    from core.models.training import calibrate_output

    names = [str(c) for c in classes]
    pool_cal, rec, oof_cross, oof_final = calibrate_output(
        TrainOutput(proba=raw_pool, config={}, metrics={}, oof_proba=np.asarray(clf.oof_proba_, float)),
        y[lab], names)
    if rec["status"] == "calibrated":
        # what the Pseudo-labels page read before (cross-fitted rows) and what it reads now (the final map's)
        variants[f"calibrated ({rec['method']}), cross-fitted OOF"] = (np.asarray(oof_cross, float), pool_cal)
        variants[f"calibrated ({rec['method']}), final-map OOF"] = (np.asarray(oof_final, float), pool_cal)
    rows = []
    for name, (oof, pool_p) in variants.items():
        keep = np.isfinite(oof).all(1)
        conf = oof[keep].max(1)
        correct = classes[oof[keep].argmax(1)] == y[lab][keep]
        pool_conf, pool_pred = pool_p.max(1), classes[pool_p.argmax(1)]
        for target, criterion in ((t, c) for t in targets for c in ("lower", "estimate")):
            ch = threshold_for_precision(conf, correct, target, criterion=criterion, min_count=min_count)
            row = {"seed": seed, "labels": labels, "target": target, "probabilities": name, "criterion": criterion,
                   "min_count": min_count, "fit_seconds": round(fit_s, 2), "model": clf.best_.get("family"),
                   "threshold": ch.threshold, "reason": ch.reason}
            if ch.threshold is not None:
                acc = pool_conf >= ch.threshold
                e = ch.estimate
                row.update(estimated_precision=e.precision, lower=e.lower, upper=e.upper, oof_rows=e.n,
                           accepted=int(acc.sum()), pool=int(len(pool)),
                           realised_precision=float((pool_pred[acc] == y[pool][acc]).mean()) if acc.any() else None)
            rows.append(row)
    return rows


def table(path: Path, since: str | None = None, criterion: str = "lower") -> str:
    """A markdown table of the recorded rows (dated ``since`` or later) for one threshold ``criterion``."""
    import json

    out = ["| labels | seed | target | OOF scale | threshold | estimated (95% interval) | realised | accepted |",
           "|---|---|---|---|---|---|---|---|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("criterion") != criterion or (since and r["date"] < since):
            continue
        if r.get("threshold") is None:
            cells = ["none reached", "-", "-", "0"]
        else:
            real = "-" if r.get("realised_precision") is None else f"{r['realised_precision']:.3f}"
            cells = [f"{r['threshold']:.3f}", f"{r['estimated_precision']:.3f} ({r['lower']:.3f}-{r['upper']:.3f}, "
                     f"{r['oof_rows']} rows)", real, f"{r['accepted']:,}"]
        out.append(f"| {r['labels']} | {r['seed']} | {r['target']} | {r['probabilities']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", type=int, nargs="+", default=[500])
    ap.add_argument("--target", type=float, nargs="+", default=[0.98])
    ap.add_argument("--min-count", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one seed on 1,000 images (smoke run)")
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    ap.add_argument("--table", action="store_true", help="print the recorded rows as a markdown table and stop")
    ap.add_argument("--since", default=None, help="with --table: rows dated at or after this ('2026-12-02 05:00')")
    a = ap.parse_args(argv)
    if a.table:
        folder = Path(a.out or os.environ.get("BENCH_OUT") or Path(__file__).parent / "results")
        print(table(folder / "pseudo_precision.jsonl", a.since))
        return 0
    if a.out:
        os.environ["BENCH_OUT"] = a.out
    from sklearn.decomposition import PCA

    from core.io.demo import mnist_5k

    images, y = mnist_5k()
    if a.quick:
        sub = np.sort(np.random.default_rng(0).choice(len(y), 1000, replace=False))  # the file is sorted by class
        images, y, a.seeds, a.labels = images[sub], y[sub], 1, [min(a.labels[0], 200)]
    X = PCA(64, random_state=0).fit_transform(images.reshape(len(y), -1).astype(np.float32) / 255.0)
    y = y.astype(str)
    for labels in a.labels:
        for seed in range(a.seeds):
            for row in _one(X, y, labels, a.target, a.min_count, seed):
                record("pseudo_precision", {"dataset": "mnist_5k" if not a.quick else "mnist_1k",
                                            "features": "pca64", **row})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
