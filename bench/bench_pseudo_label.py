"""Benchmark of the "pseudo_label" model (issue 6): the seed paper's protocol on fsdd and CIFAR-10 half.

Parts (``--part``, default all):

fsdd    Free Spoken Digit Dataset (3,000 WAVs at 8 kHz, 6 speakers, DIGIT_SPEAKER_TAKE.wav), speaker
        independent: GroupKFold(5) over the speakers (no speaker in both train and test). Per fold, macro-F1
        on the test speakers of: full supervision (every training clip labelled, one round); 20 % and 30 % of
        each class of the training speakers labelled, the rest of the training clips unlabelled, 3 rounds
        at threshold 0.99 (F1 after round 1 and round 3, pseudo-label precision per round); thresholds 0.9
        and 0.8 at 20 % on the first ``--threshold-folds`` folds.
cifar   CIFAR-10 half (5,000 32x32 JPEGs in class folders), 10 % of each class labelled, 3 rounds at 0.99;
        macro-F1 on the 4,500 unlabelled images after rounds 1 and 3, against
        :class:`core.models.classifier.model.FeatureClassifier` on EfficientNet-Lite0 features with the same labels.
speed   fine-tuning throughput (images/s, training steps only) at the configured image size(s).

``--variant finetune`` fine-tunes EfficientNet-Lite0 on the decoded media (the GPU protocol: images and
spectrogram blocks are decoded once per process into a uint8 tensor on the device). ``--variant head``
runs the light variant on cached features (fsdd: ``logmel``; CIFAR: ``efficientnet_lite0``), cached in
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
                threshold: float, rounds: int, config, device: str, seed: int) -> dict:
    """Label ``fraction`` of each class of ``train_items``, run the rounds, score ``eval_items``.

    Returns per round: macro-F1 on ``eval_items``, validation macro-F1, pseudo-labels (count, precision
    against the reference labels, per class), epochs and seconds.
    """
    from core.evaluation.metrics import macro_f1
    from core.models.pseudo_label.model import PseudoLabeler

    labelled = train_items if fraction >= 1 else stratified_subset(train_items, y, fraction, seed)
    candidates = np.setdiff1d(train_items, labelled)
    cfg = replace(config, rounds=rounds, threshold=threshold, seed=seed)
    t0 = time.perf_counter()
    est = PseudoLabeler(cfg, device=device).fit(data, labelled, y[labelled], candidates=candidates, record_proba=True)
    out = []
    for r in est.rounds_:
        pred = est.classes_[r["proba"][eval_items].argmax(1)]
        rows = r["pseudo_rows"]
        right = est.classes_[r["pseudo_labels"]] == y[rows]
        out.append({
            "round": r["round"], "test_macro_f1": round(macro_f1(y[eval_items], pred), 4),
            "val_macro_f1": None if not np.isfinite(r["val_macro_f1"]) else round(float(r["val_macro_f1"]), 4),
            "n_train_pseudo": r["n_train_pseudo"], "n_pseudo": int(len(rows)),
            "pseudo_precision": round(float(right.mean()), 4) if len(rows) else None,
            "pseudo_coverage": round(len(rows) / max(1, len(candidates)), 4),
            "epochs": r["epochs"], "best_epoch": r["best_epoch"], "skipped": r["skipped"], "seconds": r["seconds"],
        })
    return {"n_labelled": int(len(labelled)), "n_unlabelled": int(len(candidates)), "n_eval": int(len(eval_items)),
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
                                 head_hidden=args.head_hidden)
    return PseudoLabelConfig(variant="finetune", backbone=args.backbone, image_size=args.image_size,
                             max_epochs=args.max_epochs, batch_size=args.batch_size, audio_kind=args.audio_kind)


def part_fsdd(args, config) -> None:
    from sklearn.model_selection import GroupKFold

    from core.models.pseudo_label.finetune import feature_inputs
    from core.models.pseudo_label.model import decode_audio

    t0 = time.perf_counter()
    if args.quick:
        paths, y, spk = fsdd_files(limit_speakers=3, per_speaker=30)
    else:
        paths, y, spk = fsdd_files()
    if args.variant == "head":
        data = feature_inputs(cached_features(paths, "logmel", "fsdd", "cpu"), device=args.device)
        inputs = "logmel features (192-d)"
    else:
        data = decode_audio(paths, config.audio_config(), config.audio_f_max, device=args.device,
                            num_workers=min(16, os.cpu_count() or 2))
        inputs = f"{config.audio_kind} spectrogram blocks {tuple(data.x.shape)} uint8 at f_max {config.audio_f_max}"
        if data.failures:
            print(f"fsdd: {len(data.failures)} clips unusable, e.g. {next(iter(data.failures.values()))}", flush=True)
    decode_s = time.perf_counter() - t0
    print(f"fsdd: {len(paths)} clips, {inputs}, prepared in {decode_s:.1f} s", flush=True)
    n_folds = 3 if args.quick else args.folds
    folds = list(GroupKFold(n_splits=n_folds).split(np.zeros(len(y)), y, spk))
    if args.quick:
        folds = folds[:1]
    settings = [("full", 1.0, 1.0, 1)] + [(f"{int(f * 100)}%", f, 0.99, args.rounds)
                                         for f in ((0.2,) if args.quick else (0.2, 0.3))]
    extra = [(f"20% t={t}", 0.2, t, args.rounds) for t in args.thresholds]
    results: dict[str, list] = {}
    truncated = False
    for k, (tr, te) in enumerate(folds):
        chosen = settings + (extra if k < args.threshold_folds else [])
        if args.budget_s and time.perf_counter() - t0 > args.budget_s:
            truncated = True
            print(f"fsdd: time budget of {args.budget_s} s spent; stopping before fold {k}", flush=True)
            break
        for name, frac, thr, rounds in chosen:
            res = run_setting(data, y, tr, te, fraction=frac, threshold=thr, rounds=rounds, config=config,
                              device=args.device, seed=k)
            res.update(setting=name, fold=k, test_speakers=sorted(set(spk[te])))
            results.setdefault(name, []).append(res)
            last = res["rounds"][-1]
            print(f"fsdd fold {k} {name:>10}: F1 r1 {res['rounds'][0]['test_macro_f1']:.3f} r{last['round']} "
                  f"{last['test_macro_f1']:.3f}  pseudo {[r['n_pseudo'] for r in res['rounds']]} precision "
                  f"{[r['pseudo_precision'] for r in res['rounds']]}  {res['seconds']:.1f} s", flush=True)
            record("pseudo_label", {"part": "fsdd", "kind": "fold", "variant": args.variant, "quick": args.quick,
                                    "device": args.device, **res}, out=args.out_name)
    summary = {name: {"n_folds": len(rows), "f1_round1": _summary(rows, 1), "f1_last": _summary(rows, args.rounds),
                      "pseudo_precision_by_round": [_mean_or_none(
                          [r["rounds"][i]["pseudo_precision"] for r in rows if i < len(r["rounds"])])
                          for i in range(max(len(r["rounds"]) for r in rows))],
                      "n_pseudo_by_round": [round(float(np.mean([r["rounds"][i]["n_pseudo"] for r in rows
                                                                  if i < len(r["rounds"])])), 1)
                                            for i in range(max(len(r["rounds"]) for r in rows))],
                      "seconds_per_fold": round(float(np.mean([r["seconds"] for r in rows])), 2)}
               for name, rows in results.items()}
    record("pseudo_label", {"part": "fsdd", "kind": "summary", "variant": args.variant, "quick": args.quick,
                            "device": args.device, "inputs": inputs, "n_clips": len(paths), "folds": n_folds,
                            "protocol": "GroupKFold by speaker; F1 on test speakers", "config": asdict(config),
                            "prepare_seconds": round(decode_s, 2), "total_seconds": round(time.perf_counter() - t0, 2),
                            "truncated_by_budget": truncated,
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
    ap.add_argument("--threshold-folds", type=int, default=2, help="folds that also run thresholds 0.9 and 0.8")
    ap.add_argument("--thresholds", type=float, nargs="*", default=[0.9, 0.8])
    ap.add_argument("--seeds", type=int, default=1, help="CIFAR label draws")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip the FeatureClassifier comparison on CIFAR")
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
