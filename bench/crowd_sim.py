"""Simulated crowds with known truth and known annotator accuracies, for the consensus benchmark and tests.

A crowd is a set of annotators of four kinds: *good* ones (right with their own accuracy, otherwise a uniform
wrong label), *adversaries* (wrong on purpose: a uniform wrong label with probability ``adversary_error``),
*spammers* (a uniform random label, whatever the item) and *confusers* (right, except that they give the
paired class, 0<->1, 2<->3, ..., ``confuser_swap`` of the time: a class-dependent confusion). Each item gets
``votes_per_item`` distinct annotators drawn uniformly. Item features are Gaussian blobs around one mean per class, so that a
classifier trained on the crowd's labels predicts the truth only in part (how well depends on ``separation``).

The model that the model-aware methods use is what the product uses: a classifier trained on the consensus
labels, its probabilities out of fold (5-fold cross-validation of a logistic regression on the majority-vote
labels, ties broken at random), never the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CrowdSpec:
    """How to simulate one crowd (see the module docstring)."""

    n_items: int = 2000
    n_classes: int = 4
    n_good: int = 15
    n_adversaries: int = 2
    n_spammers: int = 3
    n_confusers: int = 0             # annotators who swap class pairs (0<->1, 2<->3, ...) ``confuser_swap`` of the time
    confuser_swap: float = 0.35
    votes_per_item: int = 2
    major_class_share: float = 0.4   # class 0's share of the items; the others share the rest equally
    good_accuracy: tuple[float, float] = (0.55, 0.95)  # uniform range of the good annotators' accuracies
    adversary_error: float = 0.9
    separation: float = 0.5          # distance scale of the class means (larger: an easier model)
    n_features: int = 16


@dataclass(frozen=True)
class Crowd:
    """A simulated crowd.

    Attributes
    ----------
    truth : ndarray (N,) int
    L : ndarray (N, M) float        class index, NaN where the annotator did not vote
    accuracy : ndarray (M,)         each annotator's true probability of a right vote
    kind : list[str]                (M,) good | adversary | spammer
    X : ndarray (N, d) float32      item features
    """

    truth: np.ndarray
    L: np.ndarray
    accuracy: np.ndarray
    kind: list[str]
    X: np.ndarray


def simulate_crowd(spec: CrowdSpec, seed: int) -> Crowd:
    """Draw one crowd of ``spec`` with random generator seed ``seed``."""
    rng = np.random.default_rng(seed)
    N, K = spec.n_items, spec.n_classes
    share = np.r_[spec.major_class_share, np.full(K - 1, (1 - spec.major_class_share) / (K - 1))]
    truth = rng.choice(K, size=N, p=share)
    kinds = (["good"] * spec.n_good + ["adversary"] * spec.n_adversaries + ["spammer"] * spec.n_spammers
             + ["confuser"] * spec.n_confusers)
    M = len(kinds)
    kind = np.array(kinds)
    acc = np.empty(M)
    acc[kind == "good"] = rng.uniform(*spec.good_accuracy, size=spec.n_good)
    acc[kind == "adversary"] = 1 - spec.adversary_error
    acc[kind == "spammer"] = 1.0 / K
    swap = np.arange(K) ^ 1  # the class paired with each class (0<->1, 2<->3, ...)
    swap[swap >= K] = K - 1
    acc[kind == "confuser"] = 1 - spec.confuser_swap * float(share @ (swap != np.arange(K)))
    # each item: votes_per_item distinct annotators (argsort of random keys = a random subset per row)
    who = np.argsort(rng.random((N, M)), axis=1)[:, : spec.votes_per_item]
    rows = np.repeat(np.arange(N), spec.votes_per_item)
    cols = who.ravel()
    t = truth[rows]
    wrong = (t + rng.integers(1, K, size=t.size)) % K  # a uniform wrong label
    is_spammer = np.array([k == "spammer" for k in kinds])[cols]
    right = rng.random(t.size) < acc[cols]
    vote = np.where(right, t, wrong)
    vote = np.where(is_spammer, rng.integers(0, K, size=t.size), vote)
    is_confuser = (kind == "confuser")[cols]
    vote = np.where(is_confuser, np.where(rng.random(t.size) < spec.confuser_swap, swap[t], t), vote)
    L = np.full((N, M), np.nan)
    L[rows, cols] = vote
    means = rng.normal(0, spec.separation, size=(K, spec.n_features))
    X = (means[truth] + rng.normal(0, 1, size=(N, spec.n_features))).astype(np.float32)
    return Crowd(truth, L, acc, kinds, X)


def majority_labels(L: np.ndarray, K: int, seed: int = 0) -> np.ndarray:
    """Majority-vote label per row of ``L`` (N, M), ties broken at random; -1 for rows without a vote."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(L), K))
    for k in range(K):
        counts[:, k] = (L == k).sum(1)
    noisy = counts + rng.random(counts.shape) * 0.5  # < 1: only breaks ties
    out = noisy.argmax(1)
    return np.where(counts.sum(1) > 0, out, -1)


def out_of_fold_proba(X: np.ndarray, labels: np.ndarray, K: int, seed: int = 0) -> np.ndarray:
    """Out-of-fold class probabilities (N, K) of a logistic regression trained on ``labels`` (N,).

    Rows with ``labels == -1`` get the probabilities of the model trained on all labelled rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    ok = labels >= 0
    proba = np.zeros((len(X), K))
    idx = np.flatnonzero(ok)
    skf = StratifiedKFold(5, shuffle=True, random_state=seed)
    for train, test in skf.split(X[idx], labels[idx]):
        m = LogisticRegression(max_iter=1000).fit(X[idx[train]], labels[idx[train]])
        proba[np.ix_(idx[test], m.classes_)] = m.predict_proba(X[idx[test]])
    if (~ok).any():
        m = LogisticRegression(max_iter=1000).fit(X[idx], labels[idx])
        proba[np.ix_(np.flatnonzero(~ok), m.classes_)] = m.predict_proba(X[~ok])
    return proba
