"""Sparse k-reciprocal Jaccard + DBSCAN at scale (issue 14): time and peak memory against the dense approach.

Synthetic re-identification embeddings: ``n`` unit-norm 256-d vectors in Gaussian "identities" of 4-16 items
(about ``n / 10`` identities): a random unit centre per identity plus isotropic noise of norm ``--noise`` (two
items of one identity have a cosine of about ``1 / (1 + noise^2)``, 0.41 at the default 1.2; items of different
identities about 0 +- 0.06). Each (method, size) runs in a subprocess of its own, so that its peak memory is its
own:

* ``sparse``: :func:`core.models.reid.jaccard.sparse_jaccard` (faiss k-NN graph, sparse rows; every pair with
  ``d_J < 1`` stored) then :func:`core.models.reid.clustering.dbscan_pseudo_labels`.
* ``sparse_pruned``: the same with ``max_distance = eps`` (only the pairs DBSCAN can use are stored: what a
  training loop that needs the pseudo-labels only would run).
* ``dense``: the published approach (SpCL / CAP ``compute_jaccard_distance``) in NumPy: the dense N x N distance
  matrix, dense N x N ``V``, query expansion and Jaccard matrices (:func:`dense_jaccard` here), then scikit-learn's
  DBSCAN on the dense N x N Jaccard matrix (same radius); run at the sizes up to ``--dense-max`` (about 4 GB at 15k).

Each row (``bench/results/reid_scale.jsonl``; ``--out`` or ``$BENCH_OUT`` sets the folder) holds ``method``,
``n``, ``n_ids``, ``d``, ``k1``, ``k2``, ``eps``, ``min_samples``, ``noise``, ``seed``, ``threads``,
``seconds`` (= ``seconds_jaccard`` + ``seconds_dbscan``, data generation excluded; measured without tracemalloc),
``peak_traced_mb`` (tracemalloc's peak over the measured part: Python and NumPy allocations, not faiss's own; from
a second subprocess, as tracemalloc slows the dense approach's Python loops about 5x: its time is
``seconds_traced``), ``peak_rss_mb`` (the
subprocess's own peak resident memory, ``VmHWM`` of /proc/self/status at its end: everything, imports and data
included), ``base_rss_mb`` (its RSS before the measured part), ``ru_maxrss_mb`` (``ru_maxrss`` of the subprocess
from ``os.wait4``; on Linux it also holds the parent's RSS at the fork, as exec carries the old memory map's
high-water mark over, so it is kept for reference only: ``peak_rss_mb`` is the figure), ``nnz_per_row`` (stored
pairs per item), ``n_clusters``, ``n_outliers``, ``ari_ids`` (adjusted Rand index against the synthetic
identities, each outlier its own group), ``ari_vs_sparse`` (other methods: against the sparse labels of the same
size), ``tracemalloc`` (whether the traced subprocess ran) and ``loadavg`` (``os.getloadavg()`` before and after
the timed subprocess: the machine may be shared; ``loadavg_traced`` for the other).

    python bench/bench_reid_scale.py [--sizes 2000,10000,15000,30000,100000] [--dense-max 15000] [--threads 1]
    python bench/bench_reid_scale.py --quick --out DIR          # smoke run, tiny sizes
    python bench/bench_reid_scale.py --table [--results FILE]  # markdown table of the rows
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, record  # noqa: E402

OUT_NAME = "reid_scale"
METHODS = ("sparse", "sparse_pruned", "dense")
QUICK_SIZES = (500, 1500)


# ------------------------------------------------------------------------------------------------ data
def synthetic(n: int, d: int = 256, noise: float = 1.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` embeddings (n, d) float32 in identities of 4-16 items (uniform sizes) and their identity (n,) int64."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, 17, size=n // 4 + 1)
    sizes = sizes[:int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    sizes[-1] -= int(sizes.sum()) - n
    y = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    C = rng.normal(size=(len(sizes), d)).astype(np.float32)
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    X = C[y] + np.float32(noise / np.sqrt(d)) * rng.normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


# ------------------------------------------------------------------------------------------------ dense approach
def dense_jaccard(X: np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """The published dense k-reciprocal Jaccard distance (SpCL / CAP ``compute_jaccard_distance``), float32.

    Same definitions as :mod:`core.models.reid.jaccard` (``N(p, k1)`` of ``k1 + 1`` rows, the row itself first),
    but every matrix N x N: the squared distances, the encodings ``V`` and their query expansion, the Jaccard
    distances (1 where the encodings do not overlap). The ranking takes the ``k1 + 1`` nearest of each row of the
    dense matrix, block by block.

    Parameters
    ----------
    X : np.ndarray, shape (N, d)
        Unit-norm rows.

    Returns
    -------
    np.ndarray, shape (N, N), float32
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    N = len(X)
    dist = X @ X.T
    dist *= -2.0
    dist += 2.0
    np.maximum(dist, 0.0, out=dist)
    K = min(k1 + 1, N)
    rank = np.empty((N, K), np.int64)
    for a in range(0, N, 1024):
        block = dist[a:a + 1024].copy()
        block[np.arange(len(block)), np.arange(a, a + len(block))] = -1.0  # the row itself first
        part = np.argpartition(block, K - 1, axis=1)[:, :K] if K < N else np.tile(np.arange(N), (len(block), 1))
        order = np.lexsort((part, np.take_along_axis(block, part, 1)), axis=1)
        rank[a:a + len(block)] = np.take_along_axis(part, order, 1)

    def k_reciprocal_neigh(i: int, k: int) -> np.ndarray:
        forward = rank[i, :k + 1]
        backward = rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    half = int(np.around(k1 / 2))
    nn_k1 = [k_reciprocal_neigh(i, k1) for i in range(N)]
    nn_k1_half = [k_reciprocal_neigh(i, half) for i in range(N)]
    V = np.zeros((N, N), np.float32)
    for i in range(N):
        expansion = nn_k1[i]
        for candidate in nn_k1[i]:
            cand = nn_k1_half[candidate]
            if len(np.intersect1d(cand, nn_k1[i])) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        w = np.exp(-(dist[i, expansion] - dist[i, expansion].min()))
        V[i, expansion] = w / w.sum()
    del dist, nn_k1, nn_k1_half
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(N):
            V_qe[i] = V[rank[i, :k2]].mean(axis=0)
        V = V_qe
        del V_qe
    rows, cols = np.nonzero(V)
    by_col = np.argsort(cols, kind="stable")
    inv_index = np.split(rows[by_col], np.cumsum(np.bincount(cols, minlength=N))[:-1])
    del rows, cols, by_col
    jaccard = np.zeros((N, N), np.float32)
    for i in range(N):
        temp_min = np.zeros(N, np.float32)
        nonzero = np.where(V[i] != 0)[0]
        for j in nonzero:
            images = inv_index[j]
            temp_min[images] += np.minimum(V[i, j], V[images, j])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    np.maximum(jaccard, 0.0, out=jaccard)
    return jaccard


# ------------------------------------------------------------------------------------------------ one measurement
def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> dict:
    """Run one (method, size) in this process and return its figures (labels saved to ``--labels-out``)."""
    import tracemalloc

    import faiss
    from sklearn.cluster import DBSCAN

    from core.models.reid.clustering import EPS_TOLERANCE, constrained_dbscan
    from core.models.reid.jaccard import sparse_jaccard

    faiss.omp_set_num_threads(args.threads)
    method, n = args.worker, args.n
    X, y = synthetic(n, args.dim, args.noise, args.seed)
    base = _status_mb("VmRSS")
    if args.tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    if method == "dense":
        J = dense_jaccard(X, args.k1, args.k2)
        nnz = int((J < 1).sum())
        t1 = time.perf_counter()
        # the same radius as constrained_dbscan's (eps plus its float32 tie tolerance)
        labels = DBSCAN(eps=args.eps + EPS_TOLERANCE, min_samples=args.min_samples, metric="precomputed").fit(J).labels_
        del J
    else:
        # pruned: every pair DBSCAN's radius (eps plus its tolerance) takes, stored as "d_J < max_distance"
        max_distance = min(1.0, args.eps + 2 * EPS_TOLERANCE) if method == "sparse_pruned" else 1.0
        J = sparse_jaccard(X, args.k1, args.k2, max_distance=max_distance)
        nnz = int(J.matrix.nnz)
        t1 = time.perf_counter()
        labels = constrained_dbscan(J, args.eps, args.min_samples).labels
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
    if args.tracemalloc:
        tracemalloc.stop()
    labels = np.asarray(labels, np.int64)
    np.save(args.labels_out, labels)
    return {"seconds": round(t2 - t0, 3), "seconds_jaccard": round(t1 - t0, 3), "seconds_dbscan": round(t2 - t1, 3),
            "peak_traced_mb": None if peak is None else round(peak, 1), "base_rss_mb": round(base, 1),
            "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "nnz_per_row": round(nnz / n, 1), "n_clusters": int(labels.max()) + 1 if len(labels) else 0,
            "n_outliers": int((labels < 0).sum()), "ari_ids": round(ari_outliers_apart(y, labels), 4),
            "n_ids": int(len(np.unique(y)))}


def ari_outliers_apart(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (n,), each -1 (outlier) a group of its own."""
    from sklearn.metrics import adjusted_rand_score

    def apart(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.int64).copy()
        out = x < 0
        x[out] = x.max(initial=0) + 1 + np.arange(int(out.sum()))
        return x

    return float(adjusted_rand_score(apart(a), apart(b)))


def _subprocess(method: str, n: int, args: argparse.Namespace, labels_path: Path, traced: bool) -> dict:
    """One worker subprocess: its figures, its ``ru_maxrss`` (os.wait4; see the module docstring) and the load
    average before and after it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--n", str(n),
           "--labels-out", str(labels_path), "--k1", str(args.k1), "--k2", str(args.k2), "--eps", str(args.eps),
           "--min-samples", str(args.min_samples), "--dim", str(args.dim), "--noise", str(args.noise),
           "--seed", str(args.seed), "--threads", str(args.threads)]
    cmd += [] if traced else ["--no-tracemalloc"]
    load_before = [round(x, 2) for x in os.getloadavg()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    load_after = [round(x, 2) for x in os.getloadavg()]
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode}", "loadavg": [load_before, load_after]}
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1), "loadavg": [load_before, load_after]}


def run_one(method: str, n: int, args: argparse.Namespace, labels_path: Path) -> dict:
    """The timed subprocess (no tracemalloc: it slows the dense approach's Python loops about 5x) and, unless
    ``--no-tracemalloc``, a second one for the tracemalloc peak only (its time kept as ``seconds_traced``)."""
    res = _subprocess(method, n, args, labels_path, traced=False)
    if args.tracemalloc and "error" not in res:
        traced = _subprocess(method, n, args, labels_path.with_suffix(".traced.npy"), traced=True)
        res["peak_traced_mb"] = traced.get("peak_traced_mb")
        res["seconds_traced"] = traced.get("seconds")
        res["loadavg_traced"] = traced.get("loadavg")
    return res


def run(args: argparse.Namespace) -> list[dict]:
    sizes = list(QUICK_SIZES) if args.quick else args.sizes
    dense_max = max(QUICK_SIZES) if args.quick else args.dense_max
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            sparse_labels = None
            for method in args.methods:
                if method == "dense" and n > dense_max:
                    continue
                path = Path(tmp) / f"{method}_{n}.npy"
                print(f"[reid_scale] {method} n={n} ...", flush=True)
                res = run_one(method, n, args, path)
                if method == "sparse" and path.exists():
                    sparse_labels = np.load(path)
                if method != "sparse" and sparse_labels is not None and path.exists():
                    res["ari_vs_sparse"] = round(ari_outliers_apart(sparse_labels, np.load(path)), 4)
                rows.append(record(OUT_NAME, {
                    "method": method, "n": n, "d": args.dim, "k1": args.k1, "k2": args.k2, "eps": args.eps,
                    "min_samples": args.min_samples, "noise": args.noise, "seed": args.seed, "threads": args.threads,
                    "tracemalloc": args.tracemalloc, "quick": bool(args.quick), **res}, out=OUT_NAME))
    return rows


# ------------------------------------------------------------------------------------------------ table
def table(rows: list[dict]) -> str:
    """Markdown table, one line per row (method, size)."""
    head = ("| method | n | identities | seconds (Jaccard + DBSCAN) | peak traced MB | peak RSS MB (base) | "
            "pairs / item | clusters | outliers | ARI ids | ARI vs sparse | load avg (1 min, before/after) | date |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['n']:,} | | {r['error']} | | | | | | | | | {r['date']} |")
            continue
        load = r.get("loadavg") or [[None], [None]]
        peak = "-" if r.get("peak_traced_mb") is None else f"{r['peak_traced_mb']:,.0f}"
        lines.append(
            f"| {r['method']} | {r['n']:,} | {r.get('n_ids', '')} | {r['seconds']:.2f} ({r['seconds_jaccard']:.2f} + "
            f"{r['seconds_dbscan']:.2f}) | {peak} | {r['peak_rss_mb']:,.0f} ({r['base_rss_mb']:,.0f}) | "
            f"{r['nnz_per_row']:,.0f} | {r['n_clusters']:,} | {r['n_outliers']:,} | {r['ari_ids']:.3f} | "
            f"{r.get('ari_vs_sparse', '')} | {load[0][0]} / {load[1][0]} | {r['date']} |")
    return "\n".join(lines)


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ------------------------------------------------------------------------------------------------ command line
def int_list(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of ints, got {value!r}") from None
    if not out or min(out) < 2:
        raise argparse.ArgumentTypeError(f"sizes must be ints >= 2, got {value!r}")
    return out


def method_list(value: str) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in METHODS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"methods must be among {', '.join(METHODS)}; got {value!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int_list, default=[2000, 10000, 15000, 30000, 100000],
                    help="numbers of items (comma-separated)")
    ap.add_argument("--dense-max", type=int, default=15000, help="largest size the dense approach runs at")
    ap.add_argument("--methods", type=method_list, default=list(METHODS), help=f"among {', '.join(METHODS)}")
    ap.add_argument("--k1", type=int, default=20)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--eps", type=float, default=0.5)
    ap.add_argument("--min-samples", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--noise", type=float, default=1.2, help="norm of each item's noise around its identity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="faiss / BLAS threads of each measurement")
    ap.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false",
                    help="skip the second subprocess per (method, size) that measures the tracemalloc peak")
    ap.add_argument("--quick", action="store_true", help=f"tiny sizes {QUICK_SIZES} (smoke run)")
    ap.add_argument("--out", help="write the rows into this folder instead of bench/results")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the recorded rows")
    ap.add_argument("--results", type=Path, default=None, help="rows for --table (default: <out>/reid_scale.jsonl)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--labels-out", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0
    if args.out:
        os.environ["BENCH_OUT"] = args.out
    if args.table:
        path = args.results or Path(os.environ.get("BENCH_OUT", RESULTS)) / f"{OUT_NAME}.jsonl"
        print(table(load_rows(path)))
        return 0
    rows = run(args)
    print(table(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
