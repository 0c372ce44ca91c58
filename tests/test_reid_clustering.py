"""DBSCAN pseudo-identities on sparse precomputed distances, with must-links and cannot-links."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from core.errors import ValidationError
from core.models.reid.clustering import EPS_TOLERANCE, constrained_dbscan, dbscan_pseudo_labels
from core.models.reid.jaccard import sparse_jaccard

torch.set_num_threads(1)


def identity_blobs(n_ids: int = 6, per_id: int = 25, d: int = 32, noise: float = 0.08, seed: int = 0):
    """Unit-centred Gaussian identities: embeddings (n_ids * per_id, d) and their identity (n,)."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(n_ids, d))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_ids), per_id)
    return C[y] + noise * rng.normal(size=(len(y), d)), y


def chain_graph(n: int, step: float = 0.1, breaks: tuple[int, ...] = ()) -> sp.csr_matrix:
    """Sparse distances of items on a line: i - i+1 at ``step`` (absent after each item of ``breaks``), diagonal
    at an explicit 0."""
    r, c, v = list(range(n)), list(range(n)), [0.0] * n
    for i in range(n - 1):
        if i not in breaks:
            r += [i, i + 1]
            c += [i + 1, i]
            v += [step, step]
    return sp.csr_matrix((v, (r, c)), shape=(n, n))


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return adjusted_rand_score(a, b) == 1.0


# ------------------------------------------------------------------------------------ plain DBSCAN
def test_identities_are_recovered_from_the_jaccard_distance():
    X, y = identity_blobs()
    labels = dbscan_pseudo_labels(sparse_jaccard(X, 20, 6), eps=0.5, min_samples=4)
    assert labels.dtype == np.int64 and labels.shape == (150,)
    assert same_partition(labels, y)
    assert labels[0] == 0 and set(labels) == set(range(6))  # numbered by first item


def test_sparse_input_equals_dense_dbscan_with_absent_as_far():
    X, _ = identity_blobs(n_ids=8, per_id=12, noise=0.15, seed=4)
    J = sparse_jaccard(X, 20, 6)
    for eps, ms in [(0.3, 4), (0.5, 4), (0.6, 8)]:
        ours = dbscan_pseudo_labels(J.matrix, eps=eps, min_samples=ms)
        dense = DBSCAN(eps=eps + EPS_TOLERANCE, min_samples=ms, metric="precomputed").fit(J.toarray()).labels_
        assert same_partition(ours, dense) and ((ours < 0) == (dense < 0)).all()
        assert same_partition(dbscan_pseudo_labels(J.toarray(), eps=eps, min_samples=ms), ours)


def test_a_distance_rounded_just_above_eps_is_within_eps():
    # float32 puts an exact 0.5 at 0.50000006 or 0.49999994 depending on a sum's order: both are neighbours
    for d in (np.float32(0.5), np.nextafter(np.float32(0.5), np.float32(1)), np.nextafter(np.float32(0.5), 0)):
        D = sp.csr_matrix((np.full(6, d), ([0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1])), shape=(3, 3))
        np.testing.assert_array_equal(dbscan_pseudo_labels(D, eps=0.5, min_samples=3), [0, 0, 0])
    D = sp.csr_matrix((np.full(6, 0.5001), ([0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1])), shape=(3, 3))
    np.testing.assert_array_equal(dbscan_pseudo_labels(D, eps=0.5, min_samples=3), [-1, -1, -1])


def test_outliers_are_minus_one():
    D = chain_graph(9, breaks=(3, 4))  # 0-1-2-3 | 4 | 5-6-7-8
    res = constrained_dbscan(D, eps=0.15, min_samples=3)
    np.testing.assert_array_equal(res.labels, [0, 0, 0, 0, -1, 1, 1, 1, 1])
    assert (res.n_clusters, res.n_outliers, res.n_splits) == (2, 1, 0)


def test_explicit_zero_distances_are_neighbours():
    # items 0, 1, 2 are exact duplicates (distance stored as 0), item 3 is alone; without the stored zeros the
    # duplicates would have no neighbour but themselves
    D = sp.csr_matrix(([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], ([0, 1, 0, 2, 1, 2], [1, 0, 2, 0, 2, 1])), shape=(4, 4))
    np.testing.assert_array_equal(dbscan_pseudo_labels(D, eps=0.1, min_samples=3), [0, 0, 0, -1])


def test_deterministic():
    X, _ = identity_blobs(n_ids=5, per_id=20, noise=0.2, seed=9)
    J = sparse_jaccard(X, 20, 6)
    kw = dict(eps=0.5, min_samples=4, must_link=[(0, 30), (5, 99)], cannot_link=[(1, 2), (40, 41)])
    a, b = constrained_dbscan(J, **kw), constrained_dbscan(sparse_jaccard(X, 20, 6), **kw)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.report() == b.report()


# ------------------------------------------------------------------------------------ must-links
def test_must_link_merges_two_separate_identities():
    X, y = identity_blobs()
    J = sparse_jaccard(X, 20, 6)
    res = constrained_dbscan(J, must_link=[(3, 60)])  # identity 0 and identity 2
    assert res.labels[3] == res.labels[60]
    merged = np.where(np.isin(y, [0, 2]), 0, y)
    assert same_partition(res.labels, merged) and res.n_clusters == 5


def two_groups_with_tails() -> sp.csr_matrix:
    """Cliques {0, 1, 2, 3} and {5, 6, 7, 8} (pairs at 0.1), tails 4 - 3, 11 - 2 and 9 - 8, item 10 alone."""
    pairs = [(i, j) for g in ((0, 1, 2, 3), (5, 6, 7, 8)) for i in g for j in g if i < j] + [(3, 4), (2, 11), (8, 9)]
    r = [i for i, j in pairs] + [j for i, j in pairs] + list(range(12))
    c = [j for i, j in pairs] + [i for i, j in pairs] + list(range(12))
    return sp.csr_matrix(([0.1] * (2 * len(pairs)) + [0.0] * 12, (r, c)), shape=(12, 12))


def test_must_links_after_dbscan_merge_clusters_and_pull_outliers_in():
    D = two_groups_with_tails()
    alone = dbscan_pseudo_labels(D, eps=0.15, min_samples=4)
    np.testing.assert_array_equal(alone, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, -1, 0])  # tails are border items
    # a link between two border items (neither becomes a core) and one from the lone item to a border item: DBSCAN
    # cannot join them, the links do afterwards
    res = constrained_dbscan(D, eps=0.15, min_samples=4, must_link=[(4, 9), (10, 11)])
    assert (res.labels == 0).all()
    assert (res.n_dbscan_clusters, res.n_merged, res.n_pulled, res.n_linked_new) == (2, 1, 1, 0)
    res = constrained_dbscan(chain_graph(6, breaks=(0, 1, 2, 3, 4)), eps=0.15, min_samples=4,
                             must_link=[(1, 4), (4, 5)])
    np.testing.assert_array_equal(res.labels, [-1, 0, -1, -1, 0, 0])  # outliers linked together: own cluster
    assert (res.n_dbscan_clusters, res.n_linked_new, res.n_pulled) == (0, 1, 3)


def test_links_between_cores_act_inside_dbscan():
    D = chain_graph(12, breaks=(3, 7))  # 0-3 | 4-7 | 8-11
    res = constrained_dbscan(D, eps=0.15, min_samples=2, must_link=[(1, 5), (6, 10)])
    assert res.n_dbscan_clusters == 1  # the zero edges join the chains inside DBSCAN already
    assert res.n_clusters == 1 and res.n_merged == 0
    res = constrained_dbscan(D, eps=0.15, min_samples=5, must_link=[(0, 4), (6, 9)])
    lab = res.labels  # no core at all: each linked pair becomes a cluster of its own, the rest stays noise
    assert res.n_dbscan_clusters == 0 and res.n_linked_new == 2 and res.n_clusters == 2
    assert lab[0] == lab[4] >= 0 and lab[6] == lab[9] >= 0 and lab[0] != lab[6] and (lab < 0).sum() == 8


# ------------------------------------------------------------------------------------ cannot-links
def test_cannot_link_splits_one_identity_in_two():
    X, y = identity_blobs()
    J = sparse_jaccard(X, 20, 6)
    res = constrained_dbscan(J, cannot_link=[(0, 1)])
    lab = res.labels
    assert lab[0] != lab[1] and lab[0] >= 0 and lab[1] >= 0
    assert res.n_splits == 1 and res.n_clusters == 7
    assert set(lab[y == 0]) == {lab[0], lab[1]}  # identity 0 split into two sides, the others untouched
    assert same_partition(lab[y != 0], y[y != 0])


def test_split_follows_the_path_distance_and_keeps_must_linked_items_together():
    D = chain_graph(10)  # one chain 0 - 1 - ... - 9
    res = constrained_dbscan(D, eps=0.15, min_samples=2, cannot_link=[(1, 8)])
    lab = res.labels
    np.testing.assert_array_equal(lab, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])  # each item to its nearer anchor
    res = constrained_dbscan(D, eps=0.15, min_samples=2, cannot_link=[(1, 8)], must_link=[(7, 2)])
    lab = res.labels
    assert lab[7] == lab[2] and lab[1] != lab[8]


def test_repeated_splits_until_no_cannot_link_is_violated():
    X, y = identity_blobs()
    J = sparse_jaccard(X, 20, 6)
    cl = [(0, 1), (0, 2), (1, 2), (30, 31)]
    res = constrained_dbscan(J, cannot_link=cl, must_link=[(0, 10)])
    lab = res.labels
    assert all(lab[a] != lab[b] for a, b in cl) and lab[0] == lab[10]
    assert res.n_splits == 3 and res.n_clusters == 9  # 0, 1, 2 need two splits of identity 0


def test_cannot_link_with_an_outlier_changes_nothing():
    D = chain_graph(9, breaks=(3, 4))
    np.testing.assert_array_equal(dbscan_pseudo_labels(D, eps=0.15, min_samples=3, cannot_link=[(4, 5)]),
                                  dbscan_pseudo_labels(D, eps=0.15, min_samples=3))


def test_transitive_contradiction_raises_naming_the_items():
    D = chain_graph(8)
    with pytest.raises(ValidationError, match=r"must-links join 6 and 1: 6 - 3 - 1"):
        dbscan_pseudo_labels(D, eps=0.15, must_link=[(1, 3), (3, 6)], cannot_link=[(0, 7), (6, 1)])


# ------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs,match", [
    ({"eps": 0.0}, "'eps' parameter"), ({"eps": float("nan")}, "'eps' parameter"),
    ({"min_samples": 0}, "'min_samples'"),
    ({"min_samples": 2.5}, "'min_samples'"), ({"must_link": [(0, 10)]}, r"'must_link'.*\[0, 7\]"),
    ({"must_link": [(2, 2)]}, "two different items"), ({"cannot_link": [(0, 1, 2)]}, "'cannot_link'"),
    ({"cannot_link": [(0, 1.5)]}, "'cannot_link'"), ({"must_link": 5}, "'must_link'"),
])
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        constrained_dbscan(chain_graph(8), **kwargs)


def test_bad_matrices_are_named():
    with pytest.raises(ValidationError, match="square"):
        dbscan_pseudo_labels(sp.csr_matrix((3, 4)))
    with pytest.raises(ValidationError, match="non-negative"):
        dbscan_pseudo_labels(sp.csr_matrix(([-0.1], ([0], [1])), shape=(3, 3)))
    with pytest.raises(ValidationError, match="non-negative"):
        dbscan_pseudo_labels(np.full((3, 3), np.nan))
