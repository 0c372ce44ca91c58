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
    table, conf, _ = dawid_skene(L, n_classes=3, prior_strength=4.0, prior_accuracy=0.7, confusion="full",
                                 max_iter=5, tol=0)
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
    assert w["annotator_accuracy"][0] > w["annotator_accuracy"][3] + 0.4  # the good one is known from the random one
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


# ---------------------------------------------------------------------------------------------------------------
# issue 11, defect 2: the hard crowd (2 votes per item, adversaries, spammers), the stopping rule, the BIC choice


def _hard_crowd(seed=0, n_items=2000):
    from bench.crowd_sim import CrowdSpec, majority_labels, out_of_fold_proba, simulate_crowd

    spec = CrowdSpec(n_items=n_items, n_classes=4, n_good=15, n_adversaries=2, n_spammers=3, votes_per_item=2,
                     major_class_share=0.4)
    crowd = simulate_crowd(spec, seed)
    proba = out_of_fold_proba(crowd.X, majority_labels(crowd.L, 4, seed), 4, seed)
    return crowd, proba


def test_model_aware_knows_adversaries_and_spammers_with_two_votes_per_item():
    """A leave-one-out majority of one remaining vote is a coin flip or a tie; EM over all items is not fooled."""
    from scipy.stats import spearmanr

    crowd, proba = _hard_crowd()
    table, w = model_aware(crowd.L, proba, n_classes=4)
    acc = w["annotator_accuracy"]
    kinds = np.array(crowd.kind)
    assert acc[kinds == "adversary"].max() < 0.25 and acc[kinds == "spammer"].max() < 0.4
    assert acc[kinds == "good"].min() > 0.45
    assert np.abs(acc - crowd.accuracy).mean() < 0.06
    assert spearmanr(acc, crowd.accuracy).statistic > 0.9
    # better than the model alone and than the votes alone (Dawid-Skene)
    ds, _, _ = dawid_skene(crowd.L, n_classes=4)
    acc_ma = (table.label == crowd.truth).mean()
    assert acc_ma > (proba.argmax(1) == crowd.truth).mean() + 0.05
    assert acc_ma > (ds.label == crowd.truth).mean() + 0.08
    assert 0 < w["model"] < 20 and 0.5 < w["model_accuracy"] < 0.95  # learnt, not saturated


def test_model_aware_item_posterior_matches_the_fit():
    """The store's per-vote update (fitted parameters applied to one item) equals the fit's last E-step."""
    from core.labels.params import fit_params, item_posterior

    crowd, proba = _hard_crowd(seed=1, n_items=400)
    names = [f"a{m}" for m in range(crowd.L.shape[1])]
    table, params = fit_params("model_aware", crowd.L, names, ["w", "x", "y", "z"], proba=proba)
    for r in range(0, 400, 7):
        votes = {names[m]: int(crowd.L[r, m]) for m in range(len(names)) if not np.isnan(crowd.L[r, m])}
        np.testing.assert_allclose(item_posterior(params, votes, proba[r]), table.posterior[r], atol=1e-6)


def test_dawid_skene_stops_early_with_the_same_answer():
    from core.labels.methods import dawid_skene_fit

    rng = np.random.default_rng(0)
    n, m, k = 20_000, 10, 10
    truth = rng.integers(0, k, n)
    L = np.full((n, m), nan)
    who = np.argsort(rng.random((n, m)), axis=1)[:, :3]
    rows = np.repeat(np.arange(n), 3)
    right = rng.random(rows.size) < 0.75
    L[rows, who.ravel()] = np.where(right, truth[rows], rng.integers(0, k, rows.size))
    early, fit = dawid_skene_fit(L, n_classes=k)
    late, _ = dawid_skene_fit(L, n_classes=k, tol=0, max_iter=100)
    assert fit.n_iter < 20
    assert abs((early.label == truth).mean() - (late.label == truth).mean()) < 0.002


def test_auto_confusion_keeps_a_full_matrix_only_where_the_votes_show_one():
    truth, L = simulate(n=1200, k=4, seed=2)  # annotator 2 swaps 0<->1; the others err uniformly
    _, fit = __import__("core.labels.methods", fromlist=["x"]).dawid_skene_fit(L, n_classes=4)
    assert fit.full[2] and not fit.full[3]  # the swapper keeps its matrix, the random one is one-coin
    assert fit.confusions[2][0, 1] > 0.8
