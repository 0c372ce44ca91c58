"""Consensus among annotators, first version: majority vote with a minimum number of agreeing votes.

Rules (the HAR study in the seeds kept only posts on which enough annotators agreed):

- each annotator counts once per item: their latest active human or bulk vote (:mod:`core.labels.votes`);
- an active adjudication overrides the votes (the newest adjudication wins) and confirms the item;
- machine annotations (pseudo-labels) never count;
- an item is *confirmed* when its leading label has at least ``min_votes`` votes and no other label ties it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from core.labels.votes import latest_by_annotator, ranked_counts


@dataclass(frozen=True)
class Vote:
    """One active annotation of an item, oldest first in the lists given to the methods."""

    annotator: str
    label: str
    kind: str  # human | bulk | adjudication


@dataclass(frozen=True)
class ConsensusResult:
    """Consensus of one item.

    ``support`` is the number of votes for ``label``, ``agreement`` the share of voting annotators who
    chose it, ``confidence`` the method's confidence in ``label`` (for majority vote, the agreement).
    """

    label: str | None
    support: int
    n_votes: int
    agreement: float | None
    confidence: float | None
    confirmed: bool
    method: str


def majority(votes: Sequence[Vote], *, min_votes: int = 2) -> ConsensusResult:
    """Majority vote of one item's votes.

    Examples
    --------
    >>> majority([Vote("a", "cat", "human"), Vote("b", "cat", "human"), Vote("c", "dog", "human")]).label
    'cat'
    """
    adjudication: str | None = None
    for v in votes:
        if v.kind == "adjudication":
            adjudication = v.label
    ranked = ranked_counts(latest_by_annotator(votes))
    counts = dict(ranked)
    n_votes = sum(counts.values())
    if adjudication is not None:
        support = counts.get(adjudication, 0)
        agreement = support / n_votes if n_votes else None
        return ConsensusResult(adjudication, support, n_votes, agreement, 1.0, True, "adjudication")
    if n_votes == 0:
        return ConsensusResult(None, 0, 0, None, None, False, "majority")
    label, support = ranked[0]
    tie = len(ranked) > 1 and ranked[1][1] == support
    agreement = support / n_votes
    return ConsensusResult(
        None if tie else label,
        support,
        n_votes,
        agreement,
        agreement,
        (not tie) and support >= min_votes,
        "majority",
    )


# ---------------------------------------------------------------------------------------------------------------
# Methods on the (N items x M annotators) label matrix (issue 4). ``L`` holds class indices 0..K-1 as floats and
# NaN for a missing vote, as in cleanlab's multi-annotator API. Each method returns a ConsensusTable.

import numpy as np  # noqa: E402

from core.labels.agreement import as_label_matrix, class_counts  # noqa: E402
from core.errors import check_param  # noqa: E402


@dataclass(frozen=True)
class ConsensusTable:
    """Per-item consensus of a label matrix.

    Attributes
    ----------
    label : ndarray (N,) int       consensus class index, -1 where there is none (no vote, or a tie)
    confidence : ndarray (N,)      the method's probability of ``label`` (NaN where there is none)
    n_votes : ndarray (N,) int
    agreement : ndarray (N,)       share of the item's votes that agree with ``label`` (NaN without votes)
    posterior : ndarray (N, K)     class probabilities per item (rows of zeros without information)
    method : str
    """

    label: np.ndarray
    confidence: np.ndarray
    n_votes: np.ndarray
    agreement: np.ndarray
    posterior: np.ndarray
    method: str


def _check_matrix(L: np.ndarray, n_classes: int | None) -> tuple[np.ndarray, int]:
    return as_label_matrix("consensus", L, n_classes)


def vote_counts(L: np.ndarray, n_classes: int) -> np.ndarray:
    """Votes per item and class, shape (N, K)."""
    return class_counts(np.asarray(L, dtype=float), n_classes).astype(float)


def _table(posterior: np.ndarray, counts: np.ndarray, method: str, *, ties_to_none: bool) -> ConsensusTable:
    n_votes = counts.sum(1).astype(int)
    label = posterior.argmax(1)
    top = np.take_along_axis(posterior, label[:, None], 1)[:, 0]
    if ties_to_none:
        tie = (posterior == top[:, None]).sum(1) > 1
        label = np.where(tie, -1, label)
    label = np.where(posterior.sum(1) > 0, label, -1)
    conf = np.where(label >= 0, top, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        agree = np.where(n_votes > 0, counts[np.arange(len(label)), np.maximum(label, 0)] / n_votes, np.nan)
    agree = np.where((label < 0) & (n_votes > 0), counts.max(1) / np.maximum(n_votes, 1), agree)
    return ConsensusTable(label, conf, n_votes, agree, posterior, method)


def majority_vote(L: np.ndarray, *, n_classes: int | None = None) -> ConsensusTable:
    """Plurality of the votes; ties give no label. ``confidence`` is the share of votes for the winner."""
    L, K = _check_matrix(L, n_classes)
    counts = vote_counts(L, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        post = np.where(counts.sum(1, keepdims=True) > 0, counts / counts.sum(1, keepdims=True), 0.0)
    return _table(post, counts, "majority", ties_to_none=True)


def confusion_prior(K: int, strength: float, diag: float) -> np.ndarray:
    """Dirichlet pseudo-counts (K, K) of a confusion matrix: rows sum to ``strength``, ``diag`` of it on the diagonal."""
    """Dirichlet pseudo-counts (K, K): ``strength`` votes per true class, ``diag`` of them on the diagonal."""
    off = (1.0 - diag) / max(K - 1, 1)
    return strength * np.where(np.eye(K, dtype=bool), diag, off)


def dawid_skene(
    L: np.ndarray,
    *,
    n_classes: int | None = None,
    prior_strength: float = 4.0,
    prior_accuracy: float = 0.7,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> tuple[ConsensusTable, np.ndarray, np.ndarray]:
    """Dawid and Skene's EM over one confusion matrix per annotator (MAP, with Dirichlet priors).

    Each annotator's confusion rows get ``prior_strength`` pseudo-votes, ``prior_accuracy`` of them on the
    diagonal, so that an annotator with a handful of votes keeps a moderate matrix instead of a 0/1 one; the
    class prior gets one pseudo-count per class. Initialised from the vote shares (majority vote).

    Returns
    -------
    table : ConsensusTable
    confusions : ndarray (M, K, K)   P(annotator m says l | true class k), rows sum to 1
    class_prior : ndarray (K,)
    """
    L, K = _check_matrix(L, n_classes)
    check_param("dawid_skene", "prior_accuracy", prior_accuracy, 0 < prior_accuracy < 1, "a float in (0, 1)")
    check_param("dawid_skene", "prior_strength", prior_strength, prior_strength >= 0, "a float >= 0")
    N, M = L.shape
    counts = vote_counts(L, K)
    voted = counts.sum(1) > 0
    T = np.where(voted[:, None], counts / np.maximum(counts.sum(1, keepdims=True), 1), 1.0 / K)
    alpha = confusion_prior(K, prior_strength, prior_accuracy)
    obs = [(np.flatnonzero(~np.isnan(L[:, m])), L[~np.isnan(L[:, m]), m].astype(int)) for m in range(M)]
    conf = np.zeros((M, K, K))
    for _ in range(max_iter):
        prior = (T[voted].sum(0) + 1.0) / (voted.sum() + K)
        for m, (idx, lab) in enumerate(obs):
            c = alpha.copy()
            np.add.at(c.T, lab, T[idx])  # c[k, l] += T[i, k] for each vote l of item i
            conf[m] = c / c.sum(1, keepdims=True)
        logT = np.tile(np.log(prior), (N, 1))
        for m, (idx, lab) in enumerate(obs):
            logT[idx] += np.log(conf[m][:, lab]).T
        logT -= logT.max(1, keepdims=True)
        T_new = np.exp(logT)
        T_new /= T_new.sum(1, keepdims=True)
        delta = np.abs(T_new - T).max()
        T = T_new
        if delta < tol:
            break
    post = np.where(voted[:, None], T, 0.0)
    return _table(post, counts, "dawid_skene", ties_to_none=False), conf, prior


def model_aware(
    L: np.ndarray,
    proba: np.ndarray,
    *,
    n_classes: int | None = None,
) -> tuple[ConsensusTable, dict]:
    """Votes combined with the model's class probabilities, each source weighted by its estimated quality.

    In the spirit of CROWDLAB (Goh, Tkachenko and Mueller 2022), written from its description:

    1. a first consensus by majority vote;
    2. every source's accuracy against it on items with two or more votes, leaving the annotator's own vote
       out of the consensus it is scored against (the model's probabilities count there as half a vote, which
       breaks the ties two remaining voters leave); the model is scored on the same items;
    3. weights ``w = 1 - (1 - accuracy) / (1 - baseline)``, where the baseline is the accuracy of always
       answering the most common consensus class (floored at a small positive value);
    4. per item, the weighted average of the model's probabilities and each vote's likelihood vector
       (``P`` on the voted class, ``(1 - P) / (K - 1)`` elsewhere, ``P`` the mean annotator accuracy).

    Parameters
    ----------
    L : ndarray (N, M)
    proba : ndarray (N, K)   the current model's class probabilities (rows of NaN for items it did not see)

    Returns
    -------
    table : ConsensusTable
    weights : dict  {"annotators": (M,) array, "model": float, "vote_likelihood": P, "baseline": float}
    """
    L, K = _check_matrix(L, n_classes if n_classes is not None else np.asarray(proba).shape[1])
    proba = np.asarray(proba, dtype=float)
    check_param("model_aware", "proba", f"an array of shape {proba.shape}", proba.shape == (L.shape[0], K),
                f"an array of shape ({L.shape[0]}, {K})")
    N, M = L.shape
    counts = vote_counts(L, K)
    first = majority_vote(L, n_classes=K)
    multi = (counts.sum(1) >= 2) & (first.label >= 0)
    eps = 1e-3
    if multi.any():
        cls, freq = np.unique(first.label[multi], return_counts=True)
        baseline = float(freq.max() / freq.sum())
    else:
        baseline = 1.0 / K
    acc = np.full(M, np.nan)
    have_model = np.isfinite(proba).all(1)
    # the model counts as half a vote in the leave-one-out consensus: it breaks the ties two voters leave
    model_vote = np.where(have_model[:, None], 0.5 * np.nan_to_num(proba), 0.0)
    for m in range(M):
        idx = np.flatnonzero(multi & ~np.isnan(L[:, m]))
        if idx.size == 0:
            continue
        own = L[idx, m].astype(int)
        others = counts[idx].copy()
        others[np.arange(idx.size), own] -= 1  # leave the annotator's own vote out
        others += model_vote[idx]
        has = others.sum(1) > 0
        if has.any():
            acc[m] = float((others[has].argmax(1) == own[has]).mean())
    mean_acc = float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.7
    P = float(np.clip(mean_acc, 1.0 / K + eps, 1 - eps))
    w_ann = np.where(np.isfinite(acc), np.maximum(1 - (1 - np.nan_to_num(acc, nan=P)) / max(1 - baseline, eps), eps),
                     max(1 - (1 - P) / max(1 - baseline, eps), eps))
    scored = multi & have_model
    if scored.any():
        acc_model = float((proba[scored].argmax(1) == first.label[scored]).mean())
        w_model = max(1 - (1 - acc_model) / max(1 - baseline, eps), eps)
    else:
        acc_model, w_model = float("nan"), eps
    like = np.full((K, K), (1 - P) / max(K - 1, 1))
    np.fill_diagonal(like, P)
    num = np.where(have_model[:, None], w_model * np.nan_to_num(proba), 0.0)
    den = np.where(have_model, w_model, 0.0)
    for m in range(M):
        idx = np.flatnonzero(~np.isnan(L[:, m]))
        num[idx] += w_ann[m] * like[L[idx, m].astype(int)]
        den[idx] += w_ann[m]
    post = np.where(den[:, None] > 0, num / np.maximum(den, 1e-12)[:, None], 0.0)
    table = _table(post, counts, "model_aware", ties_to_none=False)
    return table, {"annotators": w_ann, "annotator_accuracy": acc, "model": w_model, "model_accuracy": acc_model,
                   "vote_likelihood": P, "baseline": baseline}
