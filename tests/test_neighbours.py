"""faiss nearest-neighbour searches (core.features.neighbours) against brute-force NumPy references."""
from __future__ import annotations

import numpy as np
import pytest

from core.active.strategies import _dedup
from core.errors import ValidationError
from core.features.neighbours import NeighbourIndex


def _clustered(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    """Vectors in tight groups (near-duplicates within a group) plus a few exact copies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 8, d))
    X = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.05, size=(n, d))
    X[::37] = X[1::37][: len(X[::37])]  # exact duplicates
    return X.astype(np.float32)


def _unit64(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_search_matches_brute_force(metric):
    X = np.random.default_rng(1).normal(size=(300, 12)).astype(np.float32)
    Q = np.random.default_rng(2).normal(size=(20, 12)).astype(np.float32)
    scores, rows = NeighbourIndex(X, metric=metric).search(Q, 7)
    assert scores.shape == rows.shape == (20, 7) and rows.dtype == np.int64
    if metric == "cosine":
        ref = _unit64(Q) @ _unit64(X).T
        order = np.argsort(-ref, axis=1, kind="stable")[:, :7]
    else:
        ref = np.linalg.norm(Q[:, None, :].astype(np.float64) - X[None, :, :], axis=2)
        order = np.argsort(ref, axis=1, kind="stable")[:, :7]
    assert rows.tolist() == order.tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-4)


def test_range_and_max_similarity_match_brute_force():
    X = _clustered()
    idx = NeighbourIndex(X)
    sims = _unit64(X) @ _unit64(X).T
    for i, got in enumerate(idx.range(X, 0.95)):
        assert sorted(got.tolist()) == np.flatnonzero(sims[i] >= 0.95).tolist()
    np.testing.assert_allclose(idx.max_similarity(X[:5] + 0.01), (_unit64(X[:5] + 0.01) @ _unit64(X).T).max(1), atol=1e-5)
    assert np.isneginf(NeighbourIndex(np.zeros((0, 16))).max_similarity(X[:2])).all()


def test_k_larger_than_n_and_bad_input():
    idx = NeighbourIndex(np.eye(3))
    assert idx.search(np.eye(3), 10)[1].shape == (3, 3)
    with pytest.raises(ValidationError, match="'metric'"):
        NeighbourIndex(np.eye(3), metric="manhattan")
    with pytest.raises(ValidationError, match="'k'"):
        idx.search(np.eye(3), 0)
    with pytest.raises(ValidationError, match="'queries'"):
        idx.search(np.ones((2, 4)), 1)


def test_fp16_index_finds_the_same_neighbours():
    X = np.random.default_rng(3).normal(size=(500, 32))
    exact = NeighbourIndex(X, fp16=False).search(X[:50], 5)[1]
    half = NeighbourIndex(X, fp16=True)
    assert half.fp16 and (half.search(X[:50], 5)[1][:, 0] == exact[:, 0]).all()


def _dedup_reference(order, X, batch, threshold):
    """The greedy pass written as a plain loop over all pairs (float64)."""
    U = _unit64(X)
    kept = []
    for r in order:
        if all(U[r] @ U[k] < threshold for k in kept):
            kept.append(int(r))
        if len(kept) == batch:
            break
    return kept


@pytest.mark.parametrize("threshold", [0.9, 0.98, 0.999])
@pytest.mark.parametrize("chunk", [7, 1024])
def test_faiss_dedup_equals_the_plain_loop(threshold, chunk, monkeypatch):
    import core.active.strategies as strategies

    monkeypatch.setattr(strategies, "_DEDUP_CHUNK", chunk)  # several chunks exercise the kept-index lookup
    X = _clustered(seed=4)
    order = np.random.default_rng(5).permutation(len(X)).astype(np.int64)
    for batch in (5, 40, 400):
        assert _dedup(order, X, batch, threshold).tolist() == _dedup_reference(order, X, batch, threshold)


def test_torch_knn_matches_faiss_for_both_metrics():
    from core.features.neighbours import NeighbourIndex, torch_knn

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        s_f, r_f = NeighbourIndex(X, metric=metric).search(X, 7)
        s_t, r_t = torch_knn(X, 7, metric=metric, device="cpu", batch=64)
        np.testing.assert_array_equal(r_t, r_f)
        # the expanded |q|^2 - 2 q.x + |x|^2 loses ~1e-6 near zero, which the square root makes ~1e-3
        np.testing.assert_allclose(s_t, s_f, rtol=1e-4, atol=1e-4 if metric == "cosine" else 5e-3)
    assert torch_knn(X[:3], 10, device="cpu")[1].shape == (3, 3)


def test_sparse_jaccard_on_a_torch_knn_graph_equals_the_faiss_one():
    from core.models.reid import jaccard

    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    a = jaccard.sparse_jaccard(X, 10, 4)
    orig = jaccard.NeighbourIndex

    class NoFaiss:  # the "cuda" path must not touch faiss; run it on the CPU through torch
        def __init__(self, *a, **k):
            raise AssertionError("faiss used on the GPU path")

    jaccard.NeighbourIndex = NoFaiss
    real = jaccard.torch_knn
    jaccard.torch_knn = lambda X, k, metric, device: real(X, k, metric=metric, device="cpu")
    try:
        b = jaccard.sparse_jaccard(X, 10, 4, device="cuda")
    finally:
        jaccard.NeighbourIndex, jaccard.torch_knn = orig, real
    np.testing.assert_allclose(a.matrix.toarray(), b.matrix.toarray(), atol=1e-6)
