"""Consensus methods on label matrices: majority vote, Dawid-Skene (against a plain-loop EM), model-aware."""
from __future__ import annotations

import numpy as np
import pytest

from core.labels.methods import dawid_skene, majority_vote, model_aware, vote_counts
from core.errors import ValidationError

nan = np.nan


def simulate(n=600, k=4, seed=0):
    """Truth plus a good, a careless, a swapping (0<->1) and a random annotator; 3 of 4 vote on each item."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    L = np.full((n, 4), nan)
    for i in range(n):
        for m in rng.choice(4, size=3, replace=False):
            t = truth[i]
            if m == 0:
                L[i, m] = t if rng.random() < 0.9 else rng.integers(0, k)
            elif m == 1:
                L[i, m] = t if rng.random() < 0.65 else rng.integers(0, k)
            elif m == 2:
                L[i, m] = {0: 1, 1: 0}.get(t, t) if rng.random() < 0.95 else rng.integers(0, k)
            else:
                L[i, m] = rng.integers(0, k)
    return truth, L


def test_majority_vote_hand_case():
    L = np.array([[0, 0, 1], [1, nan, 0], [2, 2, 2], [nan, nan, nan]])
    t = majority_vote(L, n_classes=3)
    assert t.label.tolist() == [0, -1, 2, -1]
    assert t.n_votes.tolist() == [3, 2, 3, 0]
    np.testing.assert_allclose(t.agreement[:3], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(t.confidence[[0, 2]], [2 / 3, 1.0])


def _dawid_skene_loops(L, K, strength, acc, iters):
    """Plain-loop EM from Dawid & Skene (1979) with the same Dirichlet priors, for checking."""
    N, M = L.shape
    off = (1 - acc) / (K - 1)
    T = [[0.0] * K for _ in range(N)]
    for i in range(N):
        votes = [int(v) for v in L[i] if not np.isnan(v)]
        for k in range(K):
            T[i][k] = votes.count(k) / len(votes)
    for _ in range(iters):
        prior = [(sum(T[i][k] for i in range(N)) + 1) / (N + K) for k in range(K)]
        conf = []
        for m in range(M):
            cm = [[strength * (acc if k == l else off) for l in range(K)] for k in range(K)]
            for i in range(N):
                if not np.isnan(L[i, m]):
                    for k in range(K):
                        cm[k][int(L[i, m])] += T[i][k]
            conf.append([[v / sum(row) for v in row] for row in cm])
        for i in range(N):
            w = []
            for k in range(K):
                p = prior[k]
                for m in range(M):
                    if not np.isnan(L[i, m]):
                        p *= conf[m][k][int(L[i, m])]
                w.append(p)
            T[i] = [x / sum(w) for x in w]
    return np.array(T), np.array(conf)


def test_dawid_skene_matches_plain_loop_em():
    _, L = simulate(n=40, k=3, seed=1)
    table, conf, _ = dawid_skene(L, n_classes=3, prior_strength=4.0, prior_accuracy=0.7, max_iter=5, tol=0)
    T_ref, conf_ref = _dawid_skene_loops(L, 3, 4.0, 0.7, iters=5)
    np.testing.assert_allclose(table.posterior, T_ref, atol=1e-9)
    np.testing.assert_allclose(conf, conf_ref, atol=1e-9)


def test_dawid_skene_beats_majority_and_finds_the_swapper():
    truth, L = simulate()
    maj = majority_vote(L, n_classes=4)
    ds, conf, prior = dawid_skene(L, n_classes=4)
    acc_maj = (maj.label == truth).mean()
    acc_ds = (ds.label == truth).mean()
    assert acc_ds > acc_maj + 0.05, (acc_ds, acc_maj)
    assert conf[2][0, 1] > 0.8 and conf[2][1, 0] > 0.8  # the swapper's confusion is learnt
    assert np.diag(conf[0]).mean() > np.diag(conf[3]).mean() + 0.4
    np.testing.assert_allclose(conf.sum(2), 1.0)
    assert abs(prior.sum() - 1) < 1e-9


def test_prior_keeps_sparse_annotators_moderate():
    L = np.array([[0, 0, nan], [1, 1, nan], [2, 2, nan], [0, 0, 0]], dtype=float)
    _, conf, _ = dawid_skene(L, n_classes=3)
    assert conf[2].max() < 0.9  # one vote is not enough for a 0/1 confusion row


def test_model_aware_weights_and_accuracy():
    truth, L = simulate()
    rng = np.random.default_rng(3)
    proba = np.full((len(truth), 4), 0.1)
    proba[np.arange(len(truth)), truth] = 0.7
    noisy = rng.random(len(truth)) < 0.2  # the model is wrong on a fifth of the items
    proba[noisy] = np.roll(proba[noisy], 1, axis=1)
    table, w = model_aware(L, proba)
    assert (table.label == truth).mean() > (majority_vote(L).label == truth).mean() + 0.05
    assert w["annotators"][0] > w["annotators"][3]  # good annotator outweighs the random one
    np.testing.assert_allclose(table.posterior.sum(1), 1.0)


def test_bad_label_matrix_names_the_value():
    with pytest.raises(ValidationError, match="5"):
        majority_vote(np.array([[0, 5]]), n_classes=3)
    with pytest.raises(ValidationError, match="L.ndim"):
        dawid_skene(np.array([0, 1]))
    with pytest.raises(ValidationError, match="proba"):
        model_aware(np.array([[0, 1]]), np.ones((2, 2)) / 2)


def test_vote_counts_shape():
    assert vote_counts(np.array([[0, 1, nan], [1, 1, 1]]), 2).tolist() == [[1, 1], [0, 3]]
