"""Benchmark of the "pseudo_label" model (issue 6): the seed paper's protocol on fsdd and CIFAR-10 half.

Parts (``--part``, default all):

fsdd    Free Spoken Digit Dataset (3,000 WAVs at 8 kHz, 6 speakers, DIGIT_SPEAKER_TAKE.wav), speaker
        independent: GroupKFold(5) over the speakers (no speaker both labelled and scored). Per fold, macro-F1
        on the test speakers of: full supervision (every training clip labelled, one round); ``--fractions``
        (20 % and 30 %) of each class of the training speakers labelled, 3 rounds at each of ``--thresholds``
        (0.99, 0.95, 0.9, 0.8): F1 after round 1 and round 3, pseudo-label precision per round (overall and
        on the test speakers' clips). ``--pool train``: only the training speakers' unlabelled clips may get
        pseudo-labels; ``--pool all``: the test speakers' clips too (unlabelled, as in a project, which holds
        every clip). The "classifier" family (:class:`core.models.classifier.model.FeatureClassifier`) on the
        same features and labels is the baseline. ``--only-folds`` splits the protocol into short commands.
cifar   CIFAR-10 half (5,000 32x32 JPEGs in class folders), 10 % of each class labelled, 3 rounds at 0.99;
        macro-F1 on the 4,500 unlabelled images after rounds 1 and 3, against
        :class:`core.models.classifier.model.FeatureClassifier` on EfficientNet-Lite0 features with the same labels.
speed   fine-tuning throughput (images/s, training steps only) at the configured image size(s).

``--variant finetune`` fine-tunes EfficientNet-Lite0 on the decoded media (the GPU protocol: images and
spectrogram blocks are decoded once per process into a uint8 tensor on the device). ``--variant head``
runs the light variant on cached features (fsdd: ``--features``, default ``mfcc_profile``; CIFAR:
``efficientnet_lite0``), cached in
``.devdata/cache`` (the CPU protocol). ``--quick`` shrinks everything to a smoke run.

Examples
--------
    python bench/bench_pseudo_label.py --device cpu --variant head                 # CPU head protocol
    python bench/bench_pseudo_label.py --device cpu --variant finetune --quick     # CPU fine-tune smoke
    python bench/bench_pseudo_label.py --device cuda --out DIR                     # GPU protocol (H100)

Results: one JSON line per measurement in ``bench/results/pseudo_label.jsonl`` (or ``DIR``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import record, shared_dir  # noqa: E402

CACHE = Path(os.environ.get("PSEUDO_BENCH_CACHE", ROOT / ".devdata" / "cache"))


# ---------------------------------------------------------------------------------------------- data
def fsdd_files(limit_speakers: int | None = None, per_speaker: int | None = None):
    """(paths, digit labels, speakers) of fsdd, sorted by file name."""
    root = shared_dir() / "fsdd" / "recordings"
    paths = sorted(root.glob("*.wav"))
    digits = np.array([p.stem.split("_")[0] for p in paths])
    speakers = np.array([p.stem.split("_")[1] for p in paths])
    if limit_speakers or per_speaker:
        keep = np.zeros(len(paths), bool)
        for s in sorted(set(speakers))[: limit_speakers or None]:
            idx = np.flatnonzero(speakers == s)
            keep[idx[:: max(1, len(idx) // per_speaker)][:per_speaker] if per_speaker else idx] = True
        paths = [p for p, k in zip(paths, keep) if k]
        digits, speakers = digits[keep], speakers[keep]
    return paths, digits, speakers


def cifar_files(per_class: int | None = None):
    """(paths, class labels) of CIFAR-10 half, sorted (the same order as bench_dec's cache)."""
    root = shared_dir() / "cifar10_half"
    paths = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    labels = np.array([p.parent.name for p in paths])
    if per_class:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
        keep.sort()
        paths, labels = [paths[i] for i in keep], labels[keep]
    return paths, labels


def cached_features(paths, extractor: str, name: str, device: str) -> np.ndarray:
    """Features of ``paths`` (item id = position) through the feature cache in ``.devdata/cache/<name>``."""
    from core.features import compute_features
    from core.features.base import ItemRef

    ids, X = compute_features([ItemRef(i, p) for i, p in enumerate(paths)], extractor, CACHE / name, device=device)
    if len(ids) != len(paths):
        raise SystemExit(f"{len(paths) - len(ids)} items of {name} failed feature extraction")
    return X.astype(np.float32)


def stratified_subset(items: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of each class among ``items`` (at least 2 per class), sorted."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y[items]):
        pool = items[y[items] == c]
        n = max(2, int(round(fraction * len(pool))))
        out.append(rng.permutation(pool)[:n])
    return np.sort(np.concatenate(out))


# ---------------------------------------------------------------------------------------------- one setting
def run_setting(data, y: np.ndarray, train_items: np.ndarray, eval_items: np.ndarray, *, fraction: float,
                threshold: float, rounds: int, config, device: str, seed: int,
                pool: np.ndarray | None = None) -> dict:
    """Label ``fraction`` of each class of ``train_items``, run the rounds, score ``eval_items``.

    ``pool`` (default ``train_items``): the items whose unlabelled rest may receive pseudo-labels.

    Returns per round: macro-F1 on ``eval_items``, validation macro-F1, pseudo-labels (count, precision
    against the reference labels overall and among ``eval_items``, per class), epochs and seconds.
    """
    from core.evaluation.metrics import macro_f1
    from core.models.pseudo_label.model import PseudoLabeler

    labelled = train_items if fraction >= 1 else stratified_subset(train_items, y, fraction, seed)
    candidates = np.setdiff1d(train_items if pool is None else pool, labelled)
    cfg = replace(config, rounds=rounds, threshold=threshold, seed=seed)
    t0 = time.perf_counter()
    est = PseudoLabeler(cfg, device=device).fit(data, labelled, y[labelled], candidates=candidates, record_proba=True)
    out = []
    for r in est.rounds_:
        pred = est.classes_[r["proba"][eval_items].argmax(1)]
        rows = r["pseudo_rows"]
        right = est.classes_[r["pseudo_labels"]] == y[rows]
        on_eval = np.isin(rows, eval_items)
        out.append({
            "round": r["round"], "test_macro_f1": round(macro_f1(y[eval_items], pred), 4),
            "val_macro_f1": None if not np.isfinite(r["val_macro_f1"]) else round(float(r["val_macro_f1"]), 4),
            "n_train_pseudo": r["n_train_pseudo"], "n_pseudo": int(len(rows)),
            "pseudo_precision": round(float(right.mean()), 4) if len(rows) else None,
            "pseudo_coverage": round(len(rows) / max(1, len(candidates)), 4),
            "n_pseudo_eval": int(on_eval.sum()),
            "pseudo_precision_eval": round(float(right[on_eval].mean()), 4) if on_eval.any() else None,
            "epochs": r["epochs"], "best_epoch": r["best_epoch"], "skipped": r["skipped"], "seconds": r["seconds"],
        })
    return {"n_labelled": int(len(labelled)), "n_unlabelled": int(len(candidates)), "n_eval": int(len(eval_items)),
            "labelled_items": labelled,
            "rounds": out, "seconds": round(time.perf_counter() - t0, 2)}


def _mean_or_none(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def _summary(rows: list[dict], key_round: int) -> dict:
    vals = [r["rounds"][min(key_round, len(r["rounds"])) - 1]["test_macro_f1"] for r in rows]
    return {"mean": round(float(np.mean(vals)), 4), "std": round(float(np.std(vals)), 4), "folds": vals}


# ---------------------------------------------------------------------------------------------- parts
def make_config(args):
    from core.models.pseudo_label.model import PseudoLabelConfig

    if args.variant == "head":
        return PseudoLabelConfig(variant="head", max_epochs=args.max_epochs, batch_size=args.batch_size,
                                 head_hidden=args.head_hidden, pseudo_growth=args.pseudo_growth)
    return PseudoLabelConfig(variant="finetune", backbone=args.backbone, image_size=args.image_size,
                             max_epochs=args.max_epochs, batch_size=args.batch_size, audio_kind=args.audio_kind)


def fsdd_settings(args, fold: int) -> list[tuple[str, float, float, int]]:
    """(name, labelled fraction, threshold, rounds) of one fold: full supervision, then each fraction at each
    threshold (thresholds after the first only on the first ``--threshold-folds`` folds, when given)."""
    out = [("full", 1.0, 1.0, 1)]
    for frac in args.fractions:
        for i, t in enumerate(args.thresholds):
            if i == 0 or args.threshold_folds is None or fold < args.threshold_folds:
                out.append((f"{round(frac * 100)}% t={t:g}", frac, t, args.rounds))
    return out


def feature_baseline(X: np.ndarray, y: np.ndarray, labelled: np.ndarray, eval_items: np.ndarray,
                     device: str) -> dict:
    """:class:`FeatureClassifier` (the "classifier" family's grid search) on the same features and labels."""
    from core.evaluation.metrics import macro_f1
    from core.models.classifier.model import ClassifierConfig, FeatureClassifier

    tb = time.perf_counter()
    clf = FeatureClassifier(ClassifierConfig(), device=device).fit(X[labelled], y[labelled])
    return {"macro_f1": round(macro_f1(y[eval_items], clf.predict(X[eval_items])), 4), "model": clf.best_["family"],
            "params": clf.best_["params"], "seconds": round(time.perf_counter() - tb, 2)}


def part_fsdd(args, config) -> None:
    """Speaker-independent folds of FSDD; see the module docstring. ``--pool train`` offers pseudo-labels only
    to the training speakers' unlabelled clips (the test speakers are never seen); ``--pool all`` also to the
    test speakers' clips, unlabelled, as a project holds every clip (never labelled, still scored)."""
    from sklearn.model_selection import GroupKFold

    from core.models.pseudo_label.finetune import feature_inputs
    from core.models.pseudo_label.model import decode_audio

    t0 = time.perf_counter()
    if args.quick:
        paths, y, spk = fsdd_files(limit_speakers=3, per_speaker=30)
    else:
        paths, y, spk = fsdd_files()
    X = None
    if args.variant == "head" or args.baseline:
        X = cached_features(paths, args.features, f"fsdd_q_{args.features}" if args.quick else f"fsdd_{args.features}",
                            "cpu")
    if args.variant == "head":
        data = feature_inputs(X, device=args.device)
        inputs = f"{args.features} features ({X.shape[1]}-d)"
    else:
        data = decode_audio(paths, config.audio_config(), config.audio_f_max, device=args.device,
                            num_workers=min(16, os.cpu_count() or 2))
        inputs = f"{config.audio_kind} spectrogram blocks {tuple(data.x.shape)} uint8 at f_max {config.audio_f_max}"
        if data.failures:
            print(f"fsdd: {len(data.failures)} clips unusable, e.g. {next(iter(data.failures.values()))}", flush=True)
    decode_s = time.perf_counter() - t0
    print(f"fsdd: {len(paths)} clips, {inputs}, prepared in {decode_s:.1f} s", flush=True)
    n_folds = 3 if args.quick else args.folds
    folds = list(enumerate(GroupKFold(n_splits=n_folds).split(np.zeros(len(y)), y, spk)))
    folds = folds[:1] if args.quick else [f for f in folds if args.only_folds is None or f[0] in args.only_folds]
    results: dict[str, list] = {}
    baselines: dict[str, list] = {}
    truncated = False
    everything = np.arange(len(y))
    for fold, (tr, te) in folds:
        if args.budget_s and time.perf_counter() - t0 > args.budget_s:
            truncated = True
            print(f"fsdd: time budget of {args.budget_s} s spent; stopping before fold {fold}", flush=True)
            break
        for name, frac, thr, rounds in fsdd_settings(args, fold):
            for pool_name in (["-"] if name == "full" else args.pool):
                pool = everything if pool_name == "all" else tr
                res = run_setting(data, y, tr, te, fraction=frac, threshold=thr, rounds=rounds, config=config,
                                  device=args.device, seed=fold, pool=pool)
                labelled = res.pop("labelled_items")
                res.update(setting=name, pool=pool_name, fold=fold, threshold=thr, fraction=frac,
                           test_speakers=sorted(set(spk[te])))
                key = name if name == "full" else f"{name} pool={pool_name}"
                bkey = f"{round(frac * 100)}%"
                if X is not None and args.baseline and bkey not in {b["setting"] for b in baselines.get(fold, [])}:
                    base = feature_baseline(X, y, labelled, te, args.device)
                    baselines.setdefault(fold, []).append({"setting": bkey, **base})
                    record("pseudo_label", {"part": "fsdd", "kind": "baseline", "variant": args.variant,
                                            "quick": args.quick, "features": args.features, "fold": fold,
                                            "fraction": frac, "n_labelled": int(len(labelled)), **base},
                           out=args.out_name)
                results.setdefault(key, []).append(res)
                last = res["rounds"][-1]
                print(f"fsdd fold {fold} {key:>20}: F1 r1 {res['rounds'][0]['test_macro_f1']:.3f} r{last['round']} "
                      f"{last['test_macro_f1']:.3f}  pseudo {[r['n_pseudo'] for r in res['rounds']]} precision "
                      f"{[r['pseudo_precision'] for r in res['rounds']]}  {res['seconds']:.1f} s", flush=True)
                record("pseudo_label", {"part": "fsdd", "kind": "fold", "variant": args.variant, "quick": args.quick,
                                        "features": args.features if args.variant == "head" else None,
                                        "device": args.device, **res}, out=args.out_name)
    summary = {name: {"n_folds": len(rows), "f1_round1": _summary(rows, 1), "f1_last": _summary(rows, args.rounds),
                      "pseudo_precision_by_round": [_mean_or_none(
                          [r["rounds"][i]["pseudo_precision"] for r in rows if i < len(r["rounds"])])
                          for i in range(max(len(r["rounds"]) for r in rows))],
                      "pseudo_precision_eval_by_round": [_mean_or_none(
                          [r["rounds"][i]["pseudo_precision_eval"] for r in rows if i < len(r["rounds"])])
                          for i in range(max(len(r["rounds"]) for r in rows))],
                      "n_pseudo_by_round": [round(float(np.mean([r["rounds"][i]["n_pseudo"] for r in rows
                                                                  if i < len(r["rounds"])])), 1)
                                            for i in range(max(len(r["rounds"]) for r in rows))],
                      "seconds_per_fold": round(float(np.mean([r["seconds"] for r in rows])), 2)}
               for name, rows in results.items()}
    by_frac: dict[str, list] = {}
    for rows in baselines.values():
        for b in rows:
            by_frac.setdefault(b["setting"], []).append(b["macro_f1"])
    classifier = {f: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4), "folds": v}
                  for f, v in by_frac.items()}
    record("pseudo_label", {"part": "fsdd", "kind": "summary", "variant": args.variant, "quick": args.quick,
                            "device": args.device, "inputs": inputs, "n_clips": len(paths), "folds": n_folds,
                            "only_folds": args.only_folds, "pools": args.pool,
                            "protocol": "GroupKFold by speaker; labels from the training speakers only; F1 on the "
                                        "test speakers", "config": asdict(config),
                            "prepare_seconds": round(decode_s, 2), "total_seconds": round(time.perf_counter() - t0, 2),
                            "truncated_by_budget": truncated, "feature_classifier": classifier,
                            "summary": summary}, out=args.out_name)


def part_cifar(args, config) -> None:
    from core.evaluation.metrics import macro_f1
    from core.models.classifier.model import ClassifierConfig, FeatureClassifier
    from core.models.pseudo_label.finetune import feature_inputs
    from core.models.pseudo_label.model import decode_images

    t0 = time.perf_counter()
    paths, y = cifar_files(per_class=20 if args.quick else None)
    X = None
    if args.variant == "head" or args.baseline:
        X = cached_features(paths, "efficientnet_lite0", "cifar10_half_q" if args.quick else "cifar10_half",
                            args.device if args.device.startswith("cuda") else "cpu")
    feat_s = time.perf_counter() - t0
    if args.variant == "head":
        data = feature_inputs(X, device=args.device)
        inputs = "efficientnet_lite0 features (1280-d)"
    else:
        data = decode_images(paths, config.image_size, device=args.device, threads=min(16, os.cpu_count() or 2))
        inputs = f"images {tuple(data.x.shape)} uint8"
    decode_s = time.perf_counter() - t0 - feat_s
    print(f"cifar: {len(paths)} images, {inputs}; features {feat_s:.1f} s, decode {decode_s:.1f} s", flush=True)
    everything = np.arange(len(y))
    for seed in range(args.seeds):
        labelled = stratified_subset(everything, y, 0.1, seed)
        unl = np.setdiff1d(everything, labelled)
        res = run_setting(data, y, everything, unl, fraction=0.1, threshold=0.99, rounds=args.rounds, config=config,
                          device=args.device, seed=seed)
        # same labels (run_setting draws them with the same seed)
        base = None
        if X is not None and args.baseline:
            tb = time.perf_counter()
            clf = FeatureClassifier(ClassifierConfig(), device=args.device).fit(X[labelled], y[labelled])
            base = {"macro_f1": round(macro_f1(y[unl], clf.predict(X[unl])), 4), "model": clf.best_["family"],
                    "params": clf.best_["params"], "seconds": round(time.perf_counter() - tb, 2)}
        print(f"cifar seed {seed}: F1 r1 {res['rounds'][0]['test_macro_f1']:.3f} r{res['rounds'][-1]['round']} "
              f"{res['rounds'][-1]['test_macro_f1']:.3f}  pseudo {[r['n_pseudo'] for r in res['rounds']]} precision "
              f"{[r['pseudo_precision'] for r in res['rounds']]}  round s {[r['seconds'] for r in res['rounds']]}"
              f"  classifier {base}", flush=True)
        record("pseudo_label", {"part": "cifar", "kind": "seed", "variant": args.variant, "quick": args.quick,
                                "device": args.device, "inputs": inputs, "seed": seed, "n_items": len(y),
                                "config": asdict(config), "feature_seconds": round(feat_s, 2),
                                "decode_seconds": round(decode_s, 2), **res, "feature_classifier": base},
               out=args.out_name)


def part_speed(args, config) -> None:
    import torch

    from core.models.pseudo_label import finetune as ft

    sizes = args.speed_sizes or [config.image_size]
    n = 4096 if args.device.startswith("cuda") and not args.quick else 128
    for size in sizes:
        torch.manual_seed(0)
        x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=args.device)
        data = ft.Inputs(x, torch.arange(n, device=args.device), n, "image")
        y = np.arange(n) % 10
        net = ft.build_network(config.backbone, 10).to(args.device)
        cuda = args.device.startswith("cuda")
        if cuda:
            net = net.to(memory_format=torch.channels_last)
        tf = ft.BatchTransform("image", augment=True, channels_last=cuda)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, foreach=True)
        rows = torch.arange(n, device=args.device)
        targets = torch.as_tensor(y, device=args.device)
        cw = torch.ones(10, device=args.device)
        kw = dict(class_weight=cw, batch_size=config.batch_size or 64, transform=tf, amp=config.amp,
                  generator=torch.Generator().manual_seed(0))
        ft.train_one_epoch(net, opt, data, rows[: 4 * (config.batch_size or 64)], targets[: 4 * (config.batch_size or 64)], **kw)
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        ft.train_one_epoch(net, opt, data, rows, targets, **kw)
        if cuda:
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        ft.predict_rows(net, data, rows, batch_size=4 * (config.batch_size or 64), transform=tf, amp=config.amp)
        if cuda:
            torch.cuda.synchronize()
        pred_s = time.perf_counter() - t
        row = {"part": "speed", "device": args.device, "backbone": config.backbone, "image_size": size,
               "batch_size": config.batch_size or 64, "amp": config.amp if cuda else "none", "n_images": n,
               "train_images_per_s": round(n / train_s, 1), "predict_images_per_s": round(n / pred_s, 1),
               "threads": torch.get_num_threads()}
        print(row, flush=True)
        record("pseudo_label", row, out=args.out_name)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="results folder (default bench/results)")
    ap.add_argument("--out-name", default="pseudo_label", help="results file stem")
    ap.add_argument("--part", nargs="+", default=["fsdd", "cifar"], choices=["fsdd", "cifar", "speed"])
    ap.add_argument("--speed", action="store_true", help="also run the throughput part")
    ap.add_argument("--variant", default="finetune", choices=["finetune", "head"])
    ap.add_argument("--quick", action="store_true", help="a smoke run on small subsets")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--head-hidden", type=int, default=256)
    ap.add_argument("--audio-kind", default="log", choices=["log", "mel"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threshold-folds", type=int, default=None,
                    help="fsdd: thresholds after the first run only on this many folds (default: every fold)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.99, 0.95, 0.9, 0.8],
                    help="fsdd: pseudo-label thresholds of every labelled fraction")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.3], help="fsdd: labelled share of each class")
    ap.add_argument("--pool", nargs="+", default=["train", "all"], choices=["train", "all"],
                    help="fsdd: who may get pseudo-labels: the training speakers' unlabelled clips, or every "
                         "unlabelled clip (the test speakers' too)")
    ap.add_argument("--only-folds", type=int, nargs="+", default=None, help="fsdd: run only these folds (0-based)")
    ap.add_argument("--features", default="mfcc_profile", help="fsdd: extractor of the head and the baseline")
    ap.add_argument("--pseudo-growth", type=float, default=0.0, help="head: class-balanced curriculum (0: off)")
    ap.add_argument("--seeds", type=int, default=1, help="CIFAR label draws")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the FeatureClassifier comparison")
    ap.add_argument("--speed-sizes", type=int, nargs="*", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="fsdd: start no new fold after this many seconds (the summary says when it cut)")
    args = ap.parse_args(argv)
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    import torch

    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    if args.quick:
        args.max_epochs = args.max_epochs or (1 if args.variant == "finetune" else 20)
        args.rounds = min(args.rounds, 2)
        args.threshold_folds = 0
        args.pool = args.pool[:1]
        args.image_size = min(args.image_size, 48)
    elif args.variant == "finetune":
        # the GPU protocol's budget (whole fsdd + CIFAR protocol in ~8 minutes on one H100)
        args.max_epochs = args.max_epochs or 20
        if args.device.startswith("cuda"):
            args.batch_size = args.batch_size or 128
    config = make_config(args)
    if args.quick and args.variant == "finetune":
        config = replace(config, audio_f_max=(8000.0,))
    parts = list(args.part) + (["speed"] if args.speed and "speed" not in args.part else [])
    t0 = time.perf_counter()
    for part in parts:
        tp = time.perf_counter()
        {"fsdd": part_fsdd, "cifar": part_cifar, "speed": part_speed}[part](args, config)
        print(f"== {part}: {time.perf_counter() - tp:.1f} s", flush=True)
    print(f"== total {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
