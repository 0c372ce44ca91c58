"""Sparse k-reciprocal Jaccard distance against a plain dense implementation of the published steps."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from core.errors import ValidationError
from core.models.reid.jaccard import half_k, jaccard_from_weights, reciprocal_graph, self_first, sparse_jaccard

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ dense reference
def dense_jaccard_reference(X: np.ndarray, k1: int, k2: int, metric: str = "cosine") -> np.ndarray:
    """Zhong et al.'s k-reciprocal Jaccard distance on the full N x N distance matrix, step by step as the
    published ``compute_jaccard_distance`` (SpCL / CAP), in float64 with Python loops.

    The ranking is a full sort of each row with the row itself first (ties: lower row); ``N(p, k)`` holds its
    first ``k + 1`` rows. Returns the dense (N, N) distances, 1 for pairs whose encodings do not overlap.
    """
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    N = len(X)
    dist = np.zeros((N, N))
    for i in range(N):
        for j in range(N):
            dist[i, j] = float(((X[i] - X[j]) ** 2).sum())
    key = dist.copy()
    np.fill_diagonal(key, -1.0)
    initial_rank = np.argsort(key, axis=1, kind="stable")

    def k_reciprocal_neigh(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, :k + 1]
        backward = initial_rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    nn_k1 = [k_reciprocal_neigh(i, k1) for i in range(N)]
    nn_k1_half = [k_reciprocal_neigh(i, int(np.around(k1 / 2))) for i in range(N)]
    V = np.zeros((N, N))
    for i in range(N):
        expansion = nn_k1[i]
        for candidate in nn_k1[i]:
            cand = nn_k1_half[candidate]
            if len(np.intersect1d(cand, nn_k1[i])) > 2 / 3 * len(cand):
                expansion = np.append(expansion, cand)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(N)])
    out = np.ones((N, N))
    for i in range(N):
        for g in range(N):
            s_min = sum(min(V[i, j], V[g, j]) for j in range(N))
            s_max = sum(max(V[i, j], V[g, j]) for j in range(N))
            if s_min > 0:
                out[i, g] = 1.0 - s_min / s_max
    return out


def blobs(n: int = 60, d: int = 16, centres: int = 6, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centres, d))
    return C[rng.integers(0, centres, n)] + noise * rng.normal(size=(n, d))


# ------------------------------------------------------------------------------------ sparse == dense
@pytest.mark.parametrize("k1,k2", [(20, 6), (10, 3), (7, 1), (5, 5), (4, 2), (30, 6), (1, 1), (3, 4)])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_sparse_equals_dense_reference(k1, k2, metric):
    X = blobs(seed=k1 * 10 + k2)
    J = sparse_jaccard(X, k1, k2, metric=metric)
    ref = dense_jaccard_reference(X, k1, k2, metric)
    got = J.toarray()
    np.testing.assert_allclose(got, ref, atol=2e-6)
    stored = np.zeros(ref.shape, bool)
    coo = J.matrix.tocoo()
    stored[coo.row, coo.col] = True
    # stored exactly where the encodings overlap (absent means 1), but for overlaps so small that d_J rounds to
    # 1 in float32 (tiny kernel weights of far euclidean neighbours)
    clear = np.abs(ref - 1) > 1e-6
    assert (stored[clear] == (ref < 1)[clear]).all() and (ref[stored] < 1).all()


def test_sparse_equals_dense_on_spread_data_and_tiny_sets():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 8))  # no cluster structure: small reciprocal sets
    np.testing.assert_allclose(sparse_jaccard(X, 20, 6).toarray(), dense_jaccard_reference(X, 20, 6), atol=2e-6)
    Y = rng.normal(size=(7, 4))  # fewer items than k1 + 1: every list holds all items
    np.testing.assert_allclose(sparse_jaccard(Y, 20, 6).toarray(), dense_jaccard_reference(Y, 20, 6), atol=2e-6)


def test_matrix_is_symmetric_with_explicit_zero_diagonal():
    J = sparse_jaccard(blobs(seed=5), 20, 6)
    D = J.matrix
    assert D.dtype == np.float32 and D.shape == (60, 60) and D.has_sorted_indices
    np.testing.assert_allclose(D.toarray(), D.T.toarray(), atol=1e-7)
    coo = D.tocoo()
    diag = coo.row == coo.col
    assert diag.sum() == 60 and (coo.data[diag] == 0).all()  # stored, so DBSCAN sees each item as a neighbour
    assert ((coo.data[~diag] >= 0) & (coo.data[~diag] < 1)).all()  # 0 too: equal encodings after expansion
    assert J.neighbours.shape == (60, 21) and (J.neighbours[:, 0] == np.arange(60)).all()


def test_max_distance_keeps_only_nearer_pairs():
    X = blobs(seed=7)
    full = sparse_jaccard(X, 20, 6).toarray()
    pruned = sparse_jaccard(X, 20, 6, max_distance=0.6)
    assert pruned.matrix.data.max() < 0.6
    np.testing.assert_array_equal(pruned.toarray(), np.where(full < 0.6, full, 1.0))


def test_exact_duplicates_are_at_an_explicit_zero():
    X = blobs(seed=2)
    X[10] = X[3]
    X[11] = X[3]
    J = sparse_jaccard(X, 20, 6)
    assert (J.neighbours[:, 0] == np.arange(60)).all()  # each duplicate is first in its own list
    D = J.matrix.tocsr()
    for a, b in [(3, 10), (3, 11), (10, 11)]:
        row = D.indices[D.indptr[a]:D.indptr[a + 1]]
        assert b in row  # stored, not absent (= far)
        assert D[a, b] == pytest.approx(0.0, abs=1e-6)


def _peak_bytes(n: int) -> int:
    X = blobs(n=n, d=16, centres=n // 10, noise=0.2, seed=1).astype(np.float32)
    tracemalloc.start()
    try:
        sparse_jaccard(X, 20, 6)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_linearly_without_an_n_by_n_array(monkeypatch):
    import core.models.reid.jaccard as jaccard

    # small work blocks, so that the peak is the O(n * k1) state and not the constant-size blocks
    monkeypatch.setattr(jaccard, "TRIPLES_PER_BLOCK", 1 << 16)
    monkeypatch.setattr(jaccard, "ROWS_PER_BLOCK", 512)
    monkeypatch.setattr(jaccard, "PAIRS_PER_BLOCK", 4096)
    small, large = _peak_bytes(2000), _peak_bytes(4000)
    assert large < 4000 * 4000 * 4 / 4  # a quarter of one float32 N x N matrix
    assert large < 2.5 * small  # twice the items: about twice the memory (an N x N array would be 4x)


# ------------------------------------------------------------------------------------ steps
def test_reciprocal_graph_on_hand_made_lists():
    rows = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]])
    R = reciprocal_graph(rows, 3).toarray()
    expected = np.array([[1, 1, 1, 0],   # 0: 1 lists 0, 2 lists 0
                         [1, 1, 0, 1],   # 1: 0 lists 1, 3 lists 1
                         [1, 0, 1, 1],   # 2: 3 lists 2, 0 lists 2
                         [0, 1, 1, 1]])
    np.testing.assert_array_equal(R, expected)
    np.testing.assert_array_equal(reciprocal_graph(rows, 2).toarray(),
                                  [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])


def test_jaccard_step_on_weights_that_do_not_sum_to_one(monkeypatch):
    import core.models.reid.jaccard as jaccard

    monkeypatch.setattr(jaccard, "TRIPLES_PER_BLOCK", 50)  # many row blocks
    rng = np.random.default_rng(11)
    dense = rng.random((30, 30)) * (rng.random((30, 30)) < 0.15)
    dense[7] = 0.0  # an empty row: no pair at all
    D = jaccard_from_weights(sp.csr_matrix(dense))
    got, coo = D.toarray(), D.tocoo()
    stored = np.zeros((30, 30), bool)
    stored[coo.row, coo.col] = True
    for i in range(30):
        for g in range(30):
            s_min = sum(min(dense[i, j], dense[g, j]) for j in range(30))
            s_max = sum(max(dense[i, j], dense[g, j]) for j in range(30))
            if s_min == 0:
                assert not stored[i, g]  # no overlap: absent (= 1), the empty row's diagonal too
            else:
                assert stored[i, g] and got[i, g] == pytest.approx(1.0 - s_min / s_max, abs=1e-6)


def test_self_first_and_half_k():
    rows = np.array([[1, 0, 2], [0, 2, 3], [2, 1, 0]])
    np.testing.assert_array_equal(self_first(rows), [[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    assert [half_k(k) for k in (1, 3, 5, 20, 21)] == [0, 2, 2, 10, 10]  # np.around: halves to even


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs,name", [
    ({"k1": 0}, "k1"), ({"k1": True}, "k1"), ({"k1": 2.0}, "k1"), ({"k2": 0}, "k2"), ({"k1": 4, "k2": 6}, "k2"),
    ({"metric": "manhattan"}, "metric"), ({"max_distance": 0.0}, "max_distance"),
    ({"max_distance": 1.5}, "max_distance"),
])
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ValidationError, match=f"'{name}' parameter of sparse_jaccard"):
        sparse_jaccard(blobs(n=20), **kwargs)


def test_bad_inputs_are_named():
    with pytest.raises(ValidationError, match="'X' parameter"):
        sparse_jaccard(np.zeros(5))
    X = blobs(n=20)
    X[3, 2] = np.nan
    with pytest.raises(ValidationError, match="finite"):
        sparse_jaccard(X)
