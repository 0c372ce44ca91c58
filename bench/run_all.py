"""Run every CPU benchmark in bench/: ``make bench`` calls this.

Each benchmark is a ``bench/bench_*.py`` script registered in :data:`BENCHES` with two argument lists:

- **full** (default): the sizes the recorded figures of bench/README.md and the docs come from, scaled to this
  project's 2-core CPU machine; rows are appended to ``bench/results/`` (``--out`` or ``$BENCH_OUT`` overrides).
  It is long on 2 cores (not timed as a whole; the DEC and pseudo-labelling protocols are the longest).
- **quick** (``--quick``): a smoke run of every benchmark on tiny sizes, a few minutes in all; its rows go to
  ``bench/out/quick/`` (ignored by git), never to ``bench/results/``: the figures of a smoke run are not
  published.

A benchmark marked ``browser`` needs Chromium and Playwright (it is skipped, and said so, where
``tests.browser_helpers.chromium_problem()`` finds none). GPU-only figures come from ``bench/gpu_session.sh`` on the
device machine, not from here. ``tests/test_bench_run_all.py`` fails when a ``bench_*.py`` is not registered.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME,NAME] [--skip NAME,NAME] [--out DIR] [--list]

Exit status 0 when every selected benchmark ran (or was skipped for a stated reason), 1 otherwise; a summary
line per benchmark (seconds, exit status) is printed at the end.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
QUICK_OUT = BENCH / "out" / "quick"
OUT = "{out}"  # placeholder replaced by the results folder in the argument lists


@dataclass(frozen=True)
class Bench:
    """One benchmark script and how to run it.

    Parameters
    ----------
    script : str
        File name in bench/ (``bench_*.py``).
    full, quick : tuple of str
        Command-line arguments of the full and the quick run; ``"{out}"`` inside one is the results folder.
    needs : str or None
        ``"browser"``: needs Chromium + Playwright; ``"bench-deps"``: needs bench/requirements-bench.txt
        (skipped where absent).
    note : str
        What the run measures, printed with ``--list``.
    """

    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    needs: str | None = None
    note: str = ""
    env: dict[str, str] = field(default_factory=dict)


BENCHES: dict[str, Bench] = {b.script[len("bench_"):-len(".py")]: b for b in (
    Bench("bench_features.py", ("--n", "500", "--devices", "cpu"),
          ("--n", "64", "--devices", "cpu", "--extractors", "pixels_pca,efficientnet_lite0"),
          note="feature extraction images/s through the cache path (CPU)"),
    Bench("bench_bulk_annotate.py", ("--items", "500000", "--annotators", "2"), ("--items", "2000"),
          note="python -m core annotate: 10^6 labels in one transaction vs one per annotator; another process's "
               "single vote's longest wait for the write lock meanwhile"),
    Bench("bench_retrain.py", ("--sizes", "10000"), ("--sizes", "2000"),
          note="classifier retrain: grid search + refit + predict all"),
    Bench("bench_query_umap.py", ("--umap-sizes", "10000", "100000", "--wide", "--out", "{out}/query_umap.json"),
          ("--n-items", "100000", "--repeats", "1", "--umap-sizes", "2000", "--quick-warmup",
           "--out", "{out}/query_umap.json"),
          note="one query of every strategy over 1M items against a full sort; UMAP fits and transform; "
               "--wide: UMAP on 5,000 x 1,280 with and without the random projection to 128-d"),
    Bench("bench_dec.py",
          ("--only", "mnist", "--pretrain-epochs", "100", "--pretrain-batch", "64", "--max-iter", "3000",
           "--compare-init", "--seeds", "1,2,3", "--prior-demo", "--out", "{out}"),
          ("--only", "digits", "--pretrain-epochs", "2", "--max-iter", "140", "--init-method", "kmeans",
           "--label-fractions", "0.1", "--prior-demo", "--prior-demo-epochs", "2", "--out", "{out}"),
          note="DEC vs k-means and vs the classifier; the prior-source check on the demo's skewed labels"),
    Bench("bench_iic.py", ("--part", "cifar", "purity", "mnist", "failure", "flickr", "--seeds", "3", "--out", "{out}"),
          ("--quick", "--out", "{out}"),
          note="IIC vs k-means and DEC (MNIST-5k small CNN, CIFAR features + neighbour pairs), semi-supervised "
               "IIC vs the classifier, flickr8k views, the seed study's ResNet-18 failure flagged"),
    Bench("bench_reid_scale.py", ("--out", "{out}"), ("--quick", "--out", "{out}"),
          note="re-id pseudo-identities: sparse k-reciprocal Jaccard + DBSCAN against the dense approach, time and "
               "peak memory on 2k-100k synthetic 256-d embeddings"),
    Bench("bench_reid.py", ("--sampler-seeds", "0,1,2", "--out", "{out}"), ("--quick", "--out", "{out}"),
          note="re-id on reid_col780, 21 of 62 identities held out: mAP / rank-k of the pretrained features, the "
               "unsupervised head, 20% of the training ids confirmed, the four samplers x K, the fine-tuned backbone"),
    Bench("bench_reid_speed.py", ("--variant", "finetune", "--batch", "32", "--out", "{out}"),
          ("--quick", "--out", "{out}"),
          note="re-id training steps/s (EfficientNet-Lite0 on 128x64 crops, proxy loss, memory update); the GPU "
               "figure at batch 256 comes from gpu_session.sh reid_speed"),
    Bench("bench_pseudo_precision.py", ("--labels", "500", "1000", "--target", "0.95", "0.98", "--seeds", "3",
                                        "--out", "{out}"),
          ("--quick", "--out", "{out}"),
          note="pseudo-label precision estimated from out-of-fold predictions vs realised, at a threshold chosen "
               "for a 95% / 98% target (MNIST-5k, 500 and 1,000 labels)"),
    Bench("bench_pseudo_label.py", ("--device", "cpu", "--variant", "head", "--part", "fsdd", "cifar",
                                    "--seeds", "2", "--out", "{out}"),
          ("--device", "cpu", "--variant", "head", "--quick", "--part", "fsdd", "--out", "{out}"),
          note="pseudo-labelling head variant: FSDD speaker-independent folds, CIFAR 10% labels"),
    Bench("bench_spectrogram.py", ("--device", "cpu", "--out", "{out}"),
          ("--device", "cpu", "--n", "60", "--librosa-n", "30", "--repeats", "1", "--out", "{out}"),
          note="spectrogram blocks/s: torchaudio on the CPU vs librosa"),
    Bench("bench_calibration.py", ("--seeds", "2", "--models", "classifier,pseudo_label_head,dec", "--out", "{out}"),
          ("--parts", "mnist", "--sizes", "30", "--seeds", "1", "--families", "knn", "--models",
           "classifier,pseudo_label_head,dec", "--dec-params", '{"pretrain_epochs": 2, "max_iter": 50, "dims": [32, 32, 4]}',
           "--out", "{out}"),
          note="ECE / Brier before and after calibration: classifier, pseudo_label_head and DEC on MNIST-5k (30, "
               "500 labels) and CIFAR-10 half (10%)"),
    Bench("bench_consensus.py", (), ("--seeds", "1"),
          note="consensus methods against simulated annotators; speed at 100k items"),
    Bench("bench_crowd.py", (), ("--seeds", "1", "--items", "300", "--crowds", "hard", "--speed-items", "5000",
                                 "--methods", "majority,ours_dawid_skene,ours_model_aware,cleanlab_crowdlab,"
                                 "crowdkit_dawid_skene"), needs="bench-deps",
          note="our consensus vs cleanlab's CROWDLAB and crowd-kit's DawidSkene/GLAD/MACE on simulated crowds"),
    Bench("bench_classifier_speed.py", ("--data", "cifar", "--fractions", "0.1,0.2"),
          ("--data", "mnist", "--pca", "64", "--fractions", "0.02", "--skip-full"),
          note="retrain speed: adaptive grid vs full grid vs LogisticRegression, CIFAR-10 half 1,280-d"),
    Bench("bench_faiss_knn.py", (), ("--sizes", "1000", "--dim", "64", "--repeat", "1"),
          note="k-NN: scikit-learn against FaissKNNClassifier, same predictions"),
    Bench("bench_browser.py", (), ("--items", "2000", "--presses", "3"), needs="browser",
          note="first page load, label key -> next item on a generated 100k-item project"),
    Bench("bench_map.py", (), ("--items", "2000",), needs="browser",
          note="Embeddings page: first WebGL draw and a change of colouring, 100k points"),
)}


def scripts_on_disk() -> list[str]:
    """The ``bench_*.py`` file names in bench/ (sorted)."""
    return sorted(p.name for p in BENCH.glob("bench_*.py"))


def unregistered() -> list[str]:
    """Benchmark scripts in bench/ that :data:`BENCHES` does not list (must be empty)."""
    known = {b.script for b in BENCHES.values()}
    return [s for s in scripts_on_disk() if s not in known]


def command(name: str, quick: bool, out: Path) -> list[str]:
    """The command line of one benchmark: the interpreter, the script and its arguments with ``{out}`` filled."""
    b = BENCHES[name]
    args = b.quick if quick else b.full
    return [sys.executable, str(BENCH / b.script), *(a.replace(OUT, str(out)) for a in args)]


def skip_reason(name: str) -> str | None:
    """Why a benchmark cannot run on this machine, or None."""
    if BENCHES[name].needs == "bench-deps":  # bench/requirements-bench.txt (reference implementations)
        import importlib.util

        missing = [m for m in ("cleanlab", "crowdkit") if importlib.util.find_spec(m) is None]
        return f"needs {', '.join(missing)}: pip install -r bench/requirements-bench.txt" if missing else None
    if BENCHES[name].needs == "browser":
        sys.path.insert(0, str(ROOT))
        from tests.browser_helpers import chromium_problem

        return chromium_problem()
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run of every benchmark on tiny sizes")
    ap.add_argument("--only", default="", help="comma-separated names (see --list)")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default: $BENCH_OUT, else bench/results; bench/out/quick with --quick)")
    ap.add_argument("--list", action="store_true", help="print the registered benchmarks and their commands")
    args = ap.parse_args(argv)
    missing = unregistered()
    if missing:
        print(f"not registered in bench/run_all.py: {', '.join(missing)}", file=sys.stderr)
        return 1
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    bad = [n for n in names + [n for n in args.skip.split(",") if n] if n not in BENCHES]
    if bad:
        print(f"unknown benchmark(s) {bad}; registered: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    names = [n for n in names if n not in set(args.skip.split(","))]
    out = args.out or (QUICK_OUT if args.quick else Path(os.environ.get("BENCH_OUT", BENCH / "results")))
    if args.list:
        for n in names:
            print(f"{n}: {BENCHES[n].note}\n    {' '.join(command(n, args.quick, out))}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "BENCH_OUT": str(out), "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
    summary: list[tuple[str, str, float]] = []
    for n in names:
        reason = skip_reason(n)
        if reason:
            print(f"== {n}: skipped ({reason})", flush=True)
            summary.append((n, f"skipped: {reason}", 0.0))
            continue
        cmd = command(n, args.quick, out)
        print(f"== {n}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT, env={**env, **BENCHES[n].env})
        summary.append((n, f"exit {rc}", time.perf_counter() - t0))
    print(f"\nresults in {out}")
    for n, status, seconds in summary:
        print(f"{n:16s} {status:40s} {seconds:8.1f} s")
    return 0 if all(s.startswith(("exit 0", "skipped")) for _, s, _ in summary) else 1


if __name__ == "__main__":
    raise SystemExit(main())
