"""Benchmark: one active-learning query over 1M items, and UMAP fits at 10k and 100k points.

Usage::

    python bench/bench_query_umap.py                       # 1M-item queries + UMAP 10k (+100k if quick enough)
    python bench/bench_query_umap.py --umap-sizes 10000    # only the 10k fit
    python bench/bench_query_umap.py --force-large         # run 100k even when estimated slow
    python bench/bench_query_umap.py --skip-queries --umap-sizes --wide   # only the wide-feature UMAP timing

Prints one JSON line per measurement (date, machine, seconds, ...) and appends them to
``bench/results/query_umap.json`` (a JSON list; earlier runs and other machines are kept).

Queries: class probabilities drawn from a Dirichlet(0.5) over ``--n-classes`` classes for
``--n-items`` rows; embeddings (for ``cluster_diverse`` and the near-duplicate pass) standard
normal, 64-d float32; votes random. Each strategy is timed once cold and then ``--repeats`` times
(median reported). The baseline in the same run is a full ``np.argsort`` of one uncertainty score over
the ``n`` rows (what a query without ``argpartition`` would do); each row carries ``over_full_sort``,
the query's time as a multiple of it (speed is read as this ratio, not as seconds on one machine).

UMAP: sklearn's bundled digits (1797 x 64) tiled to ``n`` rows with Gaussian noise (sd 1 on the
0..16 pixel scale), run through :func:`core.views.projection.project` (cosine, 15 neighbours,
random_state 0, ``init="auto"``: PCA init from 10k points). Small fits (500 and 5000 points)
first warm numba's JIT (UMAP and pynndescent kernels) so it is not counted; it is recorded apart. After each fit,
1% new items are added to time the incremental ``transform`` path. A size is skipped when the
fit time extrapolated from the previous size (``n log n``) exceeds ``--max-seconds``.
``--quick-warmup`` warms only the exact-neighbour path (< 4,096 points), for smoke runs at small sizes.

Wide features (``--wide``): ``--wide-n`` (5,000) rows of ``--wide-dim`` (1,280) columns, the tiled digits
lifted by a fixed random linear map plus noise (a stand-in for CNN features of that shape; no CNN runs), fitted
once directly and once after :func:`core.views.projection.reduce_for_map` (the random projection to 128-d the
app applies before its map), in the same process after the JIT warm-up; ``wide_over_reduced`` is the ratio.
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
from core.views.projection import LARGE_N, LARGE_N_EPOCHS, PCA_INIT_N, project, reduce_for_map  # noqa: E402

RESULTS = Path(os.environ.get("BENCH_OUT", ROOT / "bench" / "results")) / "query_umap.json"


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
    s = np.sort(proba, axis=1)
    score = s[:, -1] - s[:, -2]  # the margin, computed once: the baseline times the sort alone
    sort_times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        np.argsort(score, kind="stable")[:batch]
        sort_times.append(time.perf_counter() - t0)
    baseline = statistics.median(sort_times)
    record(records, mach, bench="query_baseline", what="np.argsort of one score over all rows", n_items=n,
           seconds=baseline, repeats=max(1, repeats))
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
            warm = statistics.median(times[1:]) if repeats else times[0]
            record(records, mach, bench="query", strategy=name, variant=variant, n_items=n, n_classes=k,
                   batch_size=batch, seconds=warm, cold_seconds=times[0],
                   repeats=repeats, returned=int(out.shape[0]), proba_dtype=str(proba.dtype),
                   baseline_full_sort_s=baseline, over_full_sort=round(warm / baseline, 3))


def tiled_digits(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64) float32: sklearn digits repeated with Gaussian noise."""
    from sklearn.datasets import load_digits

    base = load_digits().data.astype(np.float32)
    rng = np.random.default_rng(seed)
    reps = base[np.arange(n) % base.shape[0]]
    return reps + rng.standard_normal(reps.shape, dtype=np.float32)


def wide_features(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32: the tiled digits through a fixed random (64, dim) map, plus noise (sd 0.1 of the spread)."""
    base = tiled_digits(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    W = rng.standard_normal((base.shape[1], dim), dtype=np.float32) / np.sqrt(base.shape[1])
    X = base @ W
    return X + 0.1 * X.std() * rng.standard_normal(X.shape, dtype=np.float32)


def warm_up(records: list[dict[str, Any]], mach: dict[str, Any], cache: Path, init: str, quick: bool) -> None:
    """numba compiles UMAP's and pynndescent's kernels on first use (minutes on 2 cores): a worker pays this
    once per process. Warm the exact (< 4096 points) and, unless ``quick``, the NN-descent path."""
    X = tiled_digits(5100)
    t0 = time.perf_counter()
    project(np.arange(500), X[:500], cache, key="warmup-small", n_epochs=20)
    project(np.arange(510), X[:510], cache, key="warmup-small", n_epochs=20)
    if not quick:
        project(np.arange(5000), X[:5000], cache, key="warmup-nnd", n_epochs=20, init=init)
        project(np.arange(5100), X, cache, key="warmup-nnd", n_epochs=20, init=init)
    record(records, mach, bench="umap_jit_warmup", n_points=[500] if quick else [500, 5000],
           seconds=time.perf_counter() - t0, note="numba JIT of UMAP + pynndescent, paid once per process")


def bench_wide(records: list[dict[str, Any]], mach: dict[str, Any], cache: Path, n: int, dim: int,
               random_state: int | None = 0, repeats: int = 1) -> None:
    """UMAP on (n, dim) features fitted directly and after reduce_for_map, same process, same data; with
    ``repeats`` > 1 the two alternate (direct, reduced, direct, ...) and the best of each is kept."""
    X = wide_features(n, dim)
    ids = np.arange(n)
    direct, reduced = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        project(ids, X, cache, key=f"wide{dim}-{r}", random_state=random_state)
        direct.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        R = reduce_for_map(X)
        project(ids, R, cache, key=f"wide{dim}-reduced-{r}", random_state=random_state)
        reduced.append(time.perf_counter() - t0)
    record(records, mach, bench="umap_wide", n_points=n, n_features=dim, reduced_to=int(R.shape[1]),
           data="tiled sklearn digits through a fixed random linear map + noise", seconds_direct=min(direct),
           seconds_reduced=min(reduced), all_direct=direct, all_reduced=reduced, repeats=repeats,
           wide_over_reduced=round(min(direct) / min(reduced), 2), random_state=random_state,
           note="best of the repeats; reduced includes the projection itself; all after the JIT warm-up")


def bench_umap(records: list[dict[str, Any]], mach: dict[str, Any], sizes: list[int], max_seconds: float,
               force: bool, init: str = "auto", random_state: int | None = 0, quick_warmup: bool = False,
               wide: tuple[int, int, int] | None = None) -> None:
    """Fit through core.views.projection.project at each size, then time adding 1% new items."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        warm_up(records, mach, cache, init, quick_warmup and not wide)
        if wide:
            bench_wide(records, mach, cache, *wide[:2], random_state=random_state, repeats=wide[2])
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
    ap.add_argument("--quick-warmup", action="store_true", help="warm only the exact-neighbour UMAP path")
    ap.add_argument("--wide", action="store_true", help="also time UMAP on wide features, direct vs reduced")
    ap.add_argument("--wide-n", type=int, default=5000)
    ap.add_argument("--wide-dim", type=int, default=1280)
    ap.add_argument("--wide-repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    mach = machine()
    records: list[dict[str, Any]] = []
    try:
        if not args.skip_queries:
            bench_queries(records, mach, args.n_items, args.n_classes, args.batch_size, args.repeats)
        if args.umap_sizes or args.wide:
            bench_umap(records, mach, args.umap_sizes, args.max_seconds, args.force_large, init=args.init,
                       random_state=None if args.no_seed else 0, quick_warmup=args.quick_warmup,
                       wide=(args.wide_n, args.wide_dim, args.wide_repeats) if args.wide else None)
    finally:
        if records:
            save(records, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
