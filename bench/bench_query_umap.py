"""Benchmark: one active-learning query over 1M items, and UMAP fits at 10k and 100k points.

Usage::

    python bench/bench_query_umap.py                       # 1M-item queries + UMAP 10k (+100k if quick enough)
    python bench/bench_query_umap.py --umap-sizes 10000    # only the 10k fit
    python bench/bench_query_umap.py --force-large         # run 100k even when estimated slow

Prints one JSON line per measurement (date, machine, seconds, ...) and appends them to
``bench/results/query_umap.json`` (a JSON list; earlier runs and other machines are kept).

Queries: class probabilities drawn from a Dirichlet(0.5) over ``--n-classes`` classes for
``--n-items`` rows; embeddings (for ``cluster_diverse`` and the near-duplicate pass) standard
normal, 64-d float32; votes random. Each strategy is timed once cold and then ``--repeats`` times
(median reported).

UMAP: sklearn's bundled digits (1797 x 64) tiled to ``n`` rows with Gaussian noise (sd 1 on the
0..16 pixel scale), run through :func:`core.views.projection.project` (cosine, 15 neighbours,
random_state 0, ``init="auto"``: PCA init from 10k points). Small fits (500 and 5000 points)
first warm numba's JIT (UMAP and pynndescent kernels) so it is not counted; it is recorded apart. After each fit,
1% new items are added to time the incremental ``transform`` path. A size is skipped when the
fit time extrapolated from the previous size (``n log n``) exceeds ``--max-seconds``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.active.strategies import VoteStats, list_strategies, query  # noqa: E402
from core.views.projection import LARGE_N, LARGE_N_EPOCHS, PCA_INIT_N, project  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "query_umap.json"


def machine() -> dict[str, Any]:
    """Platform, CPU count and library versions of this machine."""
    import sklearn
    import umap

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "umap": umap.__version__,
    }


def record(records: list[dict[str, Any]], mach: dict[str, Any], **fields: Any) -> None:
    """Print one measurement as a JSON line and keep it for the results file."""
    rec = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": mach, **fields}
    print(json.dumps(rec), flush=True)
    records.append(rec)


def bench_queries(records: list[dict[str, Any]], mach: dict[str, Any], n: int, k: int, batch: int,
                  repeats: int) -> None:
    """Time each registered strategy once cold and ``repeats`` times warm over (n, k) probabilities."""
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.full(k, 0.5), size=n)
    emb = rng.standard_normal((n, 64), dtype=np.float32)
    n_votes = rng.integers(0, 4, n)
    top = np.minimum(n_votes, rng.integers(1, 4, n))
    second = np.minimum(top, n_votes - top)
    votes = VoteStats(n_votes=n_votes, top_support=top, second_support=second, min_votes=2,
                      confirmed=(top >= 2) & (top > second))
    candidates = rng.random(n) < 0.9
    for name in list_strategies():
        for variant, kwargs in (("plain", {}), ("dedup+candidates", {"embeddings": emb, "candidates": candidates})):
            if name == "cluster_diverse" and variant == "plain":
                kwargs = {"embeddings": emb}
                variant = "embeddings"
            times = []
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                out = query(name, proba, batch_size=batch, votes=votes, rng=i, **kwargs)
                times.append(time.perf_counter() - t0)
            record(records, mach, bench="query", strategy=name, variant=variant, n_items=n, n_classes=k,
                   batch_size=batch, seconds=statistics.median(times[1:]), cold_seconds=times[0],
                   repeats=repeats, returned=int(out.shape[0]), proba_dtype=str(proba.dtype))


def tiled_digits(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64) float32: sklearn digits repeated with Gaussian noise."""
    from sklearn.datasets import load_digits

    base = load_digits().data.astype(np.float32)
    rng = np.random.default_rng(seed)
    reps = base[np.arange(n) % base.shape[0]]
    return reps + rng.standard_normal(reps.shape, dtype=np.float32)


def bench_umap(records: list[dict[str, Any]], mach: dict[str, Any], sizes: list[int], max_seconds: float,
               force: bool, init: str = "auto", random_state: int | None = 0) -> None:
    """Fit through core.views.projection.project at each size, then time adding 1% new items."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        # numba compiles UMAP's and pynndescent's kernels on first use (minutes on 2 cores): a worker
        # pays this once per process. Warm both the exact (< 4096 points) and the NN-descent paths.
        X = tiled_digits(5100)
        t0 = time.perf_counter()
        project(np.arange(500), X[:500], cache, key="warmup-small", n_epochs=20)
        project(np.arange(510), X[:510], cache, key="warmup-small", n_epochs=20)
        project(np.arange(5000), X[:5000], cache, key="warmup-nnd", n_epochs=20, init=init)
        project(np.arange(5100), X, cache, key="warmup-nnd", n_epochs=20, init=init)
        record(records, mach, bench="umap_jit_warmup", n_points=[500, 5000], seconds=time.perf_counter() - t0,
               note="numba JIT of UMAP + pynndescent, paid once per process")
        prev: tuple[int, float] | None = None
        for n in sorted(sizes):
            n_new = max(1, n // 100)
            if prev is not None and not force:
                pn, pt = prev
                estimate = pt * (n * math.log(n)) / (pn * math.log(pn))
                if n >= LARGE_N > pn:  # fewer epochs from LARGE_N on (UMAP's default is 200 above 10k)
                    estimate *= 0.5 + 0.5 * LARGE_N_EPOCHS / 200
                if estimate > max_seconds:
                    record(records, mach, bench="umap_fit", n_points=n, seconds=None, skipped=True,
                           estimated_seconds=round(estimate, 1),
                           reason=f"estimated over --max-seconds={max_seconds}")
                    continue
            X = tiled_digits(n + n_new, seed=n)
            ids = np.arange(n + n_new)
            t0 = time.perf_counter()
            coords = project(ids[:n], X[:n], cache, key=f"n{n}", init=init, random_state=random_state)
            fit_s = time.perf_counter() - t0
            resolved = init if init != "auto" else ("pca" if n >= PCA_INIT_N else "spectral")
            record(records, mach, bench="umap_fit", n_points=n, n_features=X.shape[1], seconds=fit_s,
                   init=resolved, random_state=random_state, metric="cosine", n_neighbors=15,
                   low_memory=n >= LARGE_N, n_epochs=LARGE_N_EPOCHS if n >= LARGE_N else "umap default")
            t0 = time.perf_counter()
            project(ids, X, cache, key=f"n{n}", init=init, random_state=random_state)
            record(records, mach, bench="umap_transform_new", n_points=n, n_new=n_new,
                   seconds=time.perf_counter() - t0)
            del coords
            prev = (n, fit_s)


def save(records: list[dict[str, Any]], path: Path) -> None:
    """Append ``records`` to the JSON list at ``path`` (written atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing: list[dict[str, Any]] = []
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            existing = loaded if isinstance(loaded, list) else []
        except json.JSONDecodeError:
            existing = []
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(existing + records, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-items", type=int, default=1_000_000)
    ap.add_argument("--n-classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--umap-sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--max-seconds", type=float, default=360.0, help="skip a UMAP size estimated slower than this")
    ap.add_argument("--force-large", action="store_true", help="run every UMAP size regardless of the estimate")
    ap.add_argument("--init", default="auto", choices=["auto", "spectral", "pca", "random"])
    ap.add_argument("--no-seed", action="store_true", help="random_state=None: lets UMAP use every core")
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    mach = machine()
    records: list[dict[str, Any]] = []
    try:
        if not args.skip_queries:
            bench_queries(records, mach, args.n_items, args.n_classes, args.batch_size, args.repeats)
        if args.umap_sizes:
            bench_umap(records, mach, args.umap_sizes, args.max_seconds, args.force_large, init=args.init,
                       random_state=None if args.no_seed else 0)
    finally:
        if records:
            save(records, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
