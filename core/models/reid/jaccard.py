"""Sparse k-reciprocal encoding and Jaccard distance (Zhong et al. 2017) built from a faiss k-NN graph only.

The re-identification pseudo-labels of SpCL, CAP and cluster-contrast (the seed paper's pipeline) come from DBSCAN
on this distance. Their ``compute_jaccard_distance`` holds dense N x N matrices (about 40 GB at 100k items); this
module keeps every step sparse: memory is O(n * k1 * const) and nothing N x N is ever allocated.

Steps, with the paper's notation (``N(p, k)``: p and its k nearest rows, p first):

1. One faiss search of ``k1 + 1`` rows per item (:class:`core.features.neighbours.NeighbourIndex`).
2. ``R(p, k) = {q in N(p, k) : p in N(q, k)}``, the k-reciprocal neighbours, for ``k = k1`` and
   ``k = round(k1 / 2)`` (the first ``round(k1 / 2) + 1`` columns of the same graph).
3. Expansion ``R*(p) = R(p, k1) + R(q, k1/2)`` for every ``q in R(p, k1)`` with
   ``|R(q, k1/2) & R(p, k1)| > 2/3 |R(q, k1/2)|``.
4. Gaussian-kernel weights ``V[p, g] = exp(-d(p, g)) / sum_{g' in R*(p)} exp(-d(p, g'))`` for ``g in R*(p)``
   (0 elsewhere); ``d`` is the squared Euclidean distance, of the unit rows with ``metric="cosine"``
   (``2 - 2 cos``). Members of ``R*(p)`` outside ``N(p, k1)`` (from a neighbour's half list) get their distance
   from the two vectors, as in the published code.
5. Local query expansion: ``V[p] <- mean of V[q]`` over the first ``k2`` rows ``q`` of ``N(p, k1)`` (skipped
   when ``k2 == 1``, as published).
6. ``d_J(p, g) = 1 - sum_j min(V[p, j], V[g, j]) / sum_j max(V[p, j], V[g, j])``, computed through the
   inverted index of ``V`` (only pairs sharing a column), stored only where it is below ``max_distance``
   (default 1: every pair with an overlap). Absent pairs mean 1, "far"; the diagonal is stored as an explicit 0.

Differences with the published code, on purpose:

* SpCL / CAP / cluster-contrast search only ``k1`` rows (``index.search(features, k1)``), so their
  ``initial_rank[i, :k1 + 1]`` holds p and ``k1 - 1`` others: their ``R(p, k1)`` is ``R(p, k1 - 1)`` here (their
  half lists, ``round(k1 / 2) + 1`` rows, are the same). Here ``N(p, k1)`` has ``k1 + 1`` rows, as in Zhong et
  al.'s own ``re_ranking`` (which ranks the full distance matrix).
* p is put first in its own list. With exact duplicates faiss breaks the tie by the lower row, which can push p
  out of ``N(p, k)``; the published code would then give p an empty or foreign row of ``V``.
* Like SpCL / CAP (and unlike Zhong et al.'s ``re_ranking``), the distances are not divided by their column
  maximum before the kernel and the final distance is the Jaccard distance alone (``lambda = 0``).
* The denominator is ``sum V_p + sum V_g - sum min`` (= ``sum max``); the published ``2 - sum min`` assumes rows
  that sum to exactly 1, which they do up to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from core.errors import check_choice, check_param, is_int
from core.features.neighbours import NeighbourIndex, torch_knn, unit_rows

OWNER = "sparse_jaccard"
METRICS = ("cosine", "euclidean")
#: vector pairs per einsum block when computing the kernel distances (memory ~ PAIRS_PER_BLOCK * d * 8 bytes)
PAIRS_PER_BLOCK = 1 << 13
#: rows per block of the reciprocal / expansion / query-expansion steps
ROWS_PER_BLOCK = 8192
#: (row, column, other row) triples per block of the Jaccard step (memory ~ 40 bytes each)
TRIPLES_PER_BLOCK = 1 << 20


@dataclass(frozen=True)
class JaccardDistances:
    """The sparse k-reciprocal Jaccard distance of ``n`` items and the k-NN graph it was built from.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, shape (n, n), float32
        ``d_J`` where it is below the ``max_distance`` it was built with; absent entries are 1. Symmetric, sorted
        indices, the diagonal stored as explicit zeros (what DBSCAN's sparse precomputed input needs).
    neighbours : np.ndarray, shape (n, min(k1 + 1, n)), int64
        ``N(p, k1)``: each row's nearest rows, the row itself first.
    k1, k2 : int
    metric : str
    """

    matrix: sp.csr_matrix
    neighbours: np.ndarray
    k1: int
    k2: int
    metric: str

    @property
    def n(self) -> int:
        return int(self.matrix.shape[0])

    def toarray(self) -> np.ndarray:
        """The dense (n, n) float32 distances, absent pairs = 1 (for small ``n`` only)."""
        out = np.ones(self.matrix.shape, np.float32)
        coo = self.matrix.tocoo()
        out[coo.row, coo.col] = coo.data
        return out



def half_k(k1: int) -> int:
    """``round(k1 / 2)`` as the published code rounds it (``np.around``: halves to even; 5 -> 2, 3 -> 2)."""
    return int(np.around(k1 / 2))


def self_first(rows: np.ndarray) -> np.ndarray:
    """Neighbour lists (n, K) with each row ``i`` moved to the front of its own list (kept order otherwise).

    A row missing from its own list (more than K exact duplicates) is inserted first and the last column dropped.
    """
    n, K = rows.shape
    me = np.arange(n, dtype=np.int64)[:, None]
    is_self = rows == me
    moved = np.take_along_axis(rows, np.argsort(~is_self, axis=1, kind="stable"), axis=1)
    inserted = np.concatenate([me, rows[:, :K - 1]], axis=1)
    return np.where(is_self.any(axis=1)[:, None], moved, inserted).astype(np.int64)


def reciprocal_graph(rows: np.ndarray, length: int) -> sp.csr_matrix:
    """``R(p, length - 1)`` of every row as an (n, n) int32 indicator: ``q`` in the first ``length`` columns of
    ``rows[p]`` and ``p`` in the first ``length`` columns of ``rows[q]``.

    Parameters
    ----------
    rows : np.ndarray, shape (n, K), int64
        Neighbour lists, each row first in its own.
    length : int
        Columns of ``rows`` that make ``N(p, length - 1)`` (<= K).
    """
    n = rows.shape[0]
    q = rows[:, :length].ravel()
    p = np.repeat(np.arange(n, dtype=np.int64), length)
    keys = np.sort(p * n + q)
    back = q * n + p
    pos = np.minimum(np.searchsorted(keys, back), len(keys) - 1)
    hit = keys[pos] == back
    R = sp.csr_matrix((np.ones(int(hit.sum()), np.int32), (p[hit], q[hit])), shape=(n, n))
    R.sort_indices()
    return R


def _sq_distances(V: np.ndarray, sq_norms: np.ndarray | None, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (m,) float32 between rows ``a`` (m,) and ``b`` (m,) of ``V`` (n, d);
    ``sq_norms`` None means unit rows (``2 - 2 <v_a, v_b>``)."""
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), PAIRS_PER_BLOCK):
        ia, ib = a[s:s + PAIRS_PER_BLOCK], b[s:s + PAIRS_PER_BLOCK]
        dot = np.einsum("ij,ij->i", V[ia], V[ib])
        out[s:s + PAIRS_PER_BLOCK] = 2.0 - 2.0 * dot if sq_norms is None else sq_norms[ia] + sq_norms[ib] - 2.0 * dot
    return np.maximum(out, 0.0)


def _row_ids(indptr: np.ndarray, offset: int = 0) -> np.ndarray:
    return np.repeat(np.arange(offset, offset + len(indptr) - 1, dtype=np.int64), np.diff(indptr))


def _stack_rows(data: list[np.ndarray], indices: list[np.ndarray], counts: list[np.ndarray], n: int) -> sp.csr_matrix:
    """One (n, n) CSR matrix from consecutive row blocks (values, column indices, entries per row), each block
    freed once copied: the peak is the result plus one block, not twice the result."""
    row_counts = np.concatenate(counts)
    total = int(row_counts.sum())
    index_dtype = np.int32 if max(total, n) < 2**31 else np.int64
    indptr = np.zeros(n + 1, index_dtype)
    np.cumsum(row_counts, out=indptr[1:])
    out_data = np.empty(total, np.float32)
    out_indices = np.empty(total, index_dtype)
    at = 0
    while data:
        d, i = data.pop(0), indices.pop(0)
        out_data[at:at + len(d)] = d
        out_indices[at:at + len(i)] = i
        at += len(d)
        del d, i
    return sp.csr_matrix((out_data, out_indices, indptr), shape=(n, n), copy=False)


def kernel_weights(vectors: np.ndarray, sq_norms: np.ndarray | None, rows: np.ndarray, k1: int) -> sp.csr_matrix:
    """Steps 2-4: the k-reciprocal expansion ``R*(p)`` and its Gaussian-kernel weights, (n, n) float32 CSR.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, d), float32
        The (unit, with ``sq_norms`` None) vectors.
    sq_norms : np.ndarray (n,) or None
    rows : np.ndarray, shape (n, K), int64
        ``N(p, k1)`` with each row first; K = min(k1 + 1, n).
    k1 : int

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n, n)
        Row p holds ``exp(-d(p, g))`` normalised over ``g in R*(p)`` (sums to 1), sorted indices.
    """
    n, K = rows.shape
    R = reciprocal_graph(rows, K)
    H = reciprocal_graph(rows, min(half_k(k1) + 1, K))
    h_size = np.diff(H.indptr)
    HT = H.T.tocsr()
    data, indices, counts = [], [], []
    for a in range(0, n, ROWS_PER_BLOCK):
        Rc = R[a:a + ROWS_PER_BLOCK]
        overlap = Rc.multiply(Rc @ HT).tocoo()  # |R(p, k1) & R(q, k1/2)| at each q in R(p, k1)
        keep = 3 * overlap.data > 2 * h_size[overlap.col]
        accepted = sp.csr_matrix((np.ones(int(keep.sum()), np.int32), (overlap.row[keep], overlap.col[keep])),
                                 shape=Rc.shape)
        expanded = (Rc + accepted @ H).tocsr()
        expanded.sum_duplicates()
        expanded.sort_indices()
        p = _row_ids(expanded.indptr, a)
        d = _sq_distances(vectors, sq_norms, p, expanded.indices.astype(np.int64))
        starts = expanded.indptr[:-1]  # every row holds p itself, so no row is empty
        w = np.exp(-(d - np.repeat(np.minimum.reduceat(d, starts), np.diff(expanded.indptr))))
        w /= np.repeat(np.add.reduceat(w, starts), np.diff(expanded.indptr))
        data.append(w.astype(np.float32))
        indices.append(expanded.indices)
        counts.append(np.diff(expanded.indptr))
    return _stack_rows(data, indices, counts, n)


def query_expansion(V: sp.csr_matrix, rows: np.ndarray, k2: int) -> sp.csr_matrix:
    """Step 5: ``V[p] <- mean of V[q]`` over the first ``k2`` columns of ``rows[p]``; (n, n) float32 CSR."""
    if k2 == 1:
        return V
    n = V.shape[0]
    m = min(k2, rows.shape[1])
    Q = sp.csr_matrix((np.full(n * m, 1.0 / m, np.float32), rows[:, :m].ravel(), np.arange(0, n * m + 1, m)),
                      shape=(n, n))
    blocks = [(Q[a:a + ROWS_PER_BLOCK] @ V).tocsr() for a in range(0, n, ROWS_PER_BLOCK)]
    out = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    out.eliminate_zeros()
    out.sort_indices()
    return out.astype(np.float32)


def jaccard_from_weights(V: sp.csr_matrix, *, max_distance: float = 1.0) -> sp.csr_matrix:
    """Step 6: ``d_J(p, g) = 1 - sum min(V_p, V_g) / sum max(V_p, V_g)`` for every pair sharing a column of ``V``.

    Parameters
    ----------
    V : scipy.sparse.csr_matrix, shape (n, n)
        Non-negative weights (rows of the k-reciprocal encoding).
    max_distance : float
        Keep the pairs with ``d_J < max_distance`` (1: every pair with an overlap).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n, n), float32
        Sorted indices; the diagonal of every non-empty row stored as an explicit 0.
    """
    V = V.tocsr()
    V.eliminate_zeros()
    V.sort_indices()
    n = V.shape[0]
    Vc = V.tocsc()
    Vc.sort_indices()
    col_count = np.diff(Vc.indptr).astype(np.int64)
    row_sum = np.asarray(V.sum(axis=1), dtype=np.float64).ravel()
    per_entry = np.concatenate([[0], np.cumsum(col_count[V.indices])])
    cum = per_entry[V.indptr]  # (n + 1,) triples before each row
    data, indices, counts = [], [], []
    s = 0
    while s < n:
        e = int(np.searchsorted(cum, cum[s] + TRIPLES_PER_BLOCK, side="right")) - 1
        e = min(max(e, s + 1), n)
        lo, hi = V.indptr[s], V.indptr[e]
        i = _row_ids(V.indptr[s:e + 1] - lo)
        j = V.indices[lo:hi]
        cnt = col_count[j]
        first = np.cumsum(cnt) - cnt
        where = np.arange(int(cnt.sum()), dtype=np.int64) + np.repeat(Vc.indptr[j].astype(np.int64) - first, cnt)
        mins = np.minimum(np.repeat(V.data[lo:hi], cnt), Vc.data[where])
        S = sp.csr_matrix((mins.astype(np.float64), (np.repeat(i, cnt), Vc.indices[where])), shape=(e - s, n))
        S.sum_duplicates()
        S.sort_indices()
        p = _row_ids(S.indptr, s)
        g = S.indices
        overlap = S.data
        d = 1.0 - overlap / (row_sum[p] + row_sum[g] - overlap)
        d = np.clip(d, 0.0, 1.0)
        d[p == g] = 0.0
        d = d.astype(np.float32)  # compared in float32: a d_J just below 1 in float64 may round to 1
        keep = (overlap > 0) & (d < max_distance)
        data.append(d[keep])
        indices.append(g[keep].astype(np.int32))
        counts.append(np.bincount(p[keep] - s, minlength=e - s))
        s = e
    return _stack_rows(data, indices, counts, n)


def sparse_jaccard(X: np.ndarray, k1: int = 20, k2: int = 6, *, metric: Literal["cosine", "euclidean"] = "cosine",
                   max_distance: float = 1.0, device: str = "cpu") -> JaccardDistances:
    """The k-reciprocal Jaccard distance of the rows of ``X`` from a faiss k-NN graph of ``k1 + 1`` rows.

    Parameters
    ----------
    X : np.ndarray, shape (n, d)
        Embeddings (finite). With ``metric="cosine"`` they are L2-normalised first.
    k1 : int
        Size of the k-reciprocal neighbourhood (20 in SpCL / CAP / the seed paper's pipeline); >= 1.
    k2 : int
        Rows averaged by the local query expansion (6 in SpCL / CAP); 1 <= k2 <= k1 + 1; 1 skips it.
    metric : {"cosine", "euclidean"}
        The k-NN search and the kernel distance: squared Euclidean of the unit rows, or of the raw rows.
    max_distance : float
        Store the pairs with ``d_J < max_distance``; 1 (default) keeps every pair whose encodings overlap. A
        smaller value (DBSCAN's ``eps``) only saves memory for a caller that needs no farther pair.
    device : str
        Where the k-NN graph is searched: "cpu" = faiss (:class:`NeighbourIndex`); a CUDA device = a batched torch
        top-k on the GPU (:func:`core.features.neighbours.torch_knn`). The sparse rows are built on the CPU.

    Returns
    -------
    JaccardDistances
        ``matrix`` (n, n) CSR float32, absent = 1, and the k-NN lists ``neighbours`` (n, min(k1 + 1, n)).
    """
    X = np.asarray(X)
    check_param(OWNER, "X", f"array of shape {X.shape}", X.ndim == 2 and X.shape[0] >= 1 and X.shape[1] >= 1,
                "a 2-D (n, d) array with n >= 1 and d >= 1")
    check_param(OWNER, "X", "an array with NaN or inf", bool(np.isfinite(X).all()), "finite")
    check_param(OWNER, "k1", k1, is_int(k1) and k1 >= 1, "an int >= 1")
    check_param(OWNER, "k2", k2, is_int(k2) and 1 <= k2 <= k1 + 1, f"an int in [1, k1 + 1 = {k1 + 1}]")
    check_choice(OWNER, "metric", metric, METRICS)
    ok = isinstance(max_distance, (int, float, np.floating)) and not isinstance(max_distance, bool)
    check_param(OWNER, "max_distance", max_distance, ok and 0.0 < float(max_distance) <= 1.0, "a float in (0, 1]")
    k1, k2 = int(k1), int(k2)
    n = X.shape[0]
    if str(device).startswith("cuda"):
        _, rows = torch_knn(X, min(k1 + 1, n), metric=metric, device=device)
    else:
        _, rows = NeighbourIndex(X, metric=metric).search(X, min(k1 + 1, n))
    rows = self_first(rows)
    if metric == "cosine":
        vectors, sq_norms = unit_rows(X), None
    else:
        vectors = np.ascontiguousarray(X, dtype=np.float32)
        sq_norms = np.einsum("ij,ij->i", vectors, vectors)
    V = kernel_weights(vectors, sq_norms, rows, k1)
    V = query_expansion(V, rows, k2)
    D = jaccard_from_weights(V, max_distance=float(max_distance))
    return JaccardDistances(matrix=D, neighbours=rows, k1=k1, k2=k2, metric=metric)
