"""Retrain speed (issue 12): the classifier's adaptive grid against the full grid and scikit-learn's LogisticRegression.

In one run, on the same features and the same labelled items: ``ClassifierConfig()`` (grid="auto": 3 folds, the
3 smallest C values warm-started, one early-stopped MLP, a time budget), ``ClassifierConfig(grid="full")`` (every
value, 5 folds, cold starts) and ``StandardScaler + LogisticRegression()``. Each is timed from ``fit`` to a
prediction of every item and scored by macro-F1 on the unlabelled items (the labelled ones are excluded).

Data: CIFAR-10 half (5,000 images) on EfficientNet-Lite0 features (1,280-d) through the feature cache of
bench_pseudo_label.py (``.devdata/cache/cifar10_half``; computing it on a 2-core CPU takes minutes);
``--data mnist``: MNIST-5k pixels reduced by PCA to ``--pca`` dimensions; ``--data fsdd``: the Free Spoken Digit
Dataset (3,000 recordings, 10 digits) on logmel features (192-d, ``.devdata/cache/fsdd``). ``--fractions`` of
each class are labelled (0.1 = 500 CIFAR labels, 0.2 = 1,000), or ``--counts``: labelled totals stratified over
the classes (161 = 16 or 17 per class). ``--load N`` keeps N CPU-burning processes (pure-Python loops) running
through the measurements, to time a retrain on a busy machine; each row records ``load_processes``, the
1/5/15-minute load average at the start and end of its method and the CPU seconds the burners and the
benchmark itself got meanwhile. Rows go to bench/results/classifier_speed.jsonl.

    python bench/bench_classifier_speed.py [--data cifar|mnist|fsdd] [--fractions 0.1,0.2 | --counts 161,500]
                                           [--load 2] [--skip-full]
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Iterator
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


def fsdd_features(device: str = "cpu") -> tuple[np.ndarray, np.ndarray, str]:
    """(X (3000, 192), digits (3000,), description) of the Free Spoken Digit Dataset on logmel, via the cache."""
    from bench.bench_pseudo_label import cached_features, fsdd_files

    paths, digits, _speakers = fsdd_files()
    return cached_features(paths, "logmel", "fsdd", device), digits, "fsdd logmel"


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


def stratified_count(y: np.ndarray, total: int, seed: int) -> np.ndarray:
    """``total`` item indices (sorted) spread over the classes of ``y`` (n,): 2 per class, the rest in proportion.

    Every class first gets 2 (or all it has); the remaining ``total - 2 * n_classes`` are shared in proportion to
    the class sizes, rounded by largest remainders so the total is exact (unless ``total`` < 2 per class or a
    class runs out of items).
    """
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(y, return_counts=True)
    n = np.minimum(2, sizes)
    rest = max(0, total - int(n.sum()))
    share = rest * sizes / sizes.sum()
    extra = np.floor(share).astype(int)
    extra[np.argsort(-(share - extra), kind="stable")[: rest - extra.sum()]] += 1
    n = np.minimum(n + extra, sizes)
    out = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, n)]
    return np.sort(np.concatenate(out))


# ------------------------------------------------------------------------------------------- a busy machine
def _burn(parent: int) -> None:
    """A burner's body: a pure-Python loop (one core, no BLAS threads) until its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    x = 0
    while os.getppid() == parent:
        for i in range(1_000_000):
            x += i


@contextlib.contextmanager
def burners(n: int) -> Iterator[list]:
    """``n`` CPU-burning processes for the duration of the block; terminated (then killed) on leaving it."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_burn, args=(os.getpid(),), daemon=True, name=f"burner-{i}") for i in range(n)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds the processes ``pids`` have used so far (Linux /proc; None elsewhere)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ one method
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
        extra = {"selected": "logreg", "params": {"C": 1.0}}
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


def measure(name: str, X: np.ndarray, y: np.ndarray, lab: np.ndarray, device: str, burner_pids: list[int]) -> dict:
    """:func:`run_method` with the load around it: load averages, the burners' and our own CPU seconds."""
    load0, own0 = loadavg(), time.process_time()
    burn0 = cpu_seconds(burner_pids) if burner_pids else None
    row = run_method(name, X, y, lab, device)
    burn1, own1 = (cpu_seconds(burner_pids) if burner_pids else None), time.process_time()
    row.update({"loadavg_start": load0, "loadavg_end": loadavg(), "own_cpu_seconds": round(own1 - own0, 2),
                "burner_cpu_seconds": None if burn0 is None or burn1 is None else round(burn1 - burn0, 2)})
    return row


def _sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise SystemExit(128 + signum)  # so the burners' ``finally`` runs on a kill too


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=["cifar", "mnist", "fsdd"], default="cifar")
    ap.add_argument("--pca", type=int, default=256, help="--data mnist: PCA dimensions")
    sizes = ap.add_mutually_exclusive_group()
    sizes.add_argument("--fractions", default=None, help="labelled share of each class, comma-separated "
                                                         "(default 0.1,0.2)")
    sizes.add_argument("--counts", default=None, help="labelled totals stratified over the classes, comma-separated")
    ap.add_argument("--load", type=int, default=0, help="CPU-burning background processes during the measurements")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-full", action="store_true", help="leave out grid='full' (the slow reference)")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.load < 0:
        ap.error(f"--load must be >= 0, got {a.load}")
    signal.signal(signal.SIGTERM, _sigterm)
    X, y, data = {"cifar": lambda: cifar_features(a.device), "fsdd": lambda: fsdd_features(a.device),
                  "mnist": lambda: mnist_features(a.pca)}[a.data]()
    if a.counts:
        settings = [(None, int(c), stratified_count(y, int(c), a.seed)) for c in a.counts.split(",")]
    else:
        settings = [(f, None, stratified(y, f, a.seed)) for f in map(float, (a.fractions or "0.1,0.2").split(","))]
    methods = ["auto", *([] if a.skip_full else ["full"]), "logreg"]
    with burners(a.load) as procs:
        if procs:
            time.sleep(2.0)  # the spawned burners are up and in their loops before the first timing
        pids = [p.pid for p in procs]
        for fraction, count, lab in settings:
            rows = {m: measure(m, X, y, lab, a.device, pids) for m in methods}
            for m, r in rows.items():
                gap = (None if "full" not in rows
                       else round(r["macro_f1_unlabelled"] - rows["full"]["macro_f1_unlabelled"], 4))
                record("classifier_speed", {"data": data, "n_items": len(y), "dim": int(X.shape[1]),
                                            "label_fraction": fraction, "label_count": count,
                                            "n_labelled": int(len(lab)), "seed": a.seed, "device": a.device,
                                            "load_processes": a.load, **r, "macro_f1_minus_full": gap})
    return 0


if __name__ == "__main__":
    sys.exit(main())
