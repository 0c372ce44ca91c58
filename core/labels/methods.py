"""Consensus among annotators, first version: majority vote with a minimum number of agreeing votes.

Rules (the HAR study in the seeds kept only posts on which enough annotators agreed):

- each annotator counts once per item: their latest active human or bulk vote (:mod:`core.labels.votes`);
- an active adjudication overrides the votes (the newest adjudication wins) and confirms the item;
- machine annotations (pseudo-labels) never count;
- an item is *confirmed* when its leading label has at least ``min_votes`` votes and no other label ties it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from core.labels.votes import VOTE_KINDS, latest_by_annotator, ranked_counts


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


def majority_confirmed(top_support: Any, second_support: Any, min_votes: int) -> Any:
    """The majority rule's confirmation: the leading label has at least ``min_votes`` votes and no other label
    as many (no tie). Works on ints and on arrays (n,) of supports alike; the one place this rule is written
    (item consensus, the queue's vote statistics, pair decisions of :mod:`core.labels.pairs`)."""
    return (top_support >= min_votes) & (top_support > second_support)


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
    second = ranked[1][1] if len(ranked) > 1 else 0
    agreement = support / n_votes
    return ConsensusResult(
        None if second == support else label,
        support,
        n_votes,
        agreement,
        agreement,
        bool(majority_confirmed(support, second, min_votes)),
        "majority",
    )


def majority_many(item_ids: np.ndarray, annotators: np.ndarray, labels: np.ndarray, kinds: np.ndarray, *,
                  min_votes: int = 2) -> dict[str, np.ndarray]:
    """:func:`majority` of many items at once (bulk writes recompute 10^5-10^6 items inside the write lock).

    Parameters
    ----------
    item_ids, annotators, labels, kinds : ndarray (n,)
        Active votes, oldest first (the order decides which vote of an annotator is their latest).
    min_votes : int

    Returns
    -------
    dict of ndarray (m,), one entry per distinct item with a vote, ascending item id
        ``item_id`` int64, ``label`` object (None: a tie), ``support`` int64, ``n_votes`` int64,
        ``agreement`` float64 (NaN: no rater vote), ``confidence`` float64 (NaN likewise; 1 for an
        adjudication), ``confirmed`` bool, ``method`` object ("majority" or "adjudication"). Equal, item by item,
        to :func:`majority` (tests/test_consensus_store.py checks it against the loop).
    """
    import pandas as pd

    df = pd.DataFrame({"item": np.asarray(item_ids, dtype=np.int64), "annotator": np.asarray(annotators, dtype=object),
                       "label": np.asarray(labels, dtype=object), "kind": np.asarray(kinds, dtype=object)})
    items = np.unique(df["item"].to_numpy())
    rater = df[df["kind"].isin(VOTE_KINDS)].drop_duplicates(["item", "annotator"], keep="last")
    counts = rater.groupby(["item", "label"], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["item", "n"], ascending=[True, False], kind="stable")
    n_votes = counts.groupby("item")["n"].sum().reindex(items, fill_value=0).to_numpy()
    first = counts.drop_duplicates("item", keep="first").set_index("item")
    top = first["n"].reindex(items, fill_value=0).to_numpy()
    top_label = first["label"].reindex(items).to_numpy(dtype=object)
    second = (counts[counts.duplicated("item", keep="first")].drop_duplicates("item", keep="first")
              .set_index("item")["n"].reindex(items, fill_value=0).to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(n_votes > 0, top / np.maximum(n_votes, 1), np.nan)
    label = np.where(top == second, None, top_label).astype(object)
    confirmed = majority_confirmed(top, second, min_votes) & (n_votes > 0)
    method = np.full(len(items), "majority", dtype=object)
    support = top.astype(np.int64)
    confidence = agreement.copy()
    adj = df[df["kind"] == "adjudication"].drop_duplicates("item", keep="last").set_index("item")["label"]
    if len(adj):
        pos = np.searchsorted(items, adj.index.to_numpy())
        adj_support = (counts.set_index(["item", "label"])["n"]
                       .reindex(list(zip(adj.index, adj.to_numpy())), fill_value=0).to_numpy())
        label[pos] = adj.to_numpy(dtype=object)
        support[pos] = adj_support
        with np.errstate(invalid="ignore", divide="ignore"):
            agreement[pos] = np.where(n_votes[pos] > 0, adj_support / np.maximum(n_votes[pos], 1), np.nan)
        confidence[pos] = 1.0
        confirmed[pos] = True
        method[pos] = "adjudication"
    return {"item_id": items, "label": label, "support": support, "n_votes": n_votes.astype(np.int64),
            "agreement": agreement, "confidence": confidence, "confirmed": np.asarray(confirmed, dtype=bool),
            "method": method}


# ---------------------------------------------------------------------------------------------------------------
# Methods on the (N items x M annotators) label matrix (issue 4). ``L`` holds class indices 0..K-1 as floats and
# NaN for a missing vote, as in cleanlab's multi-annotator API. Each method returns a ConsensusTable.

import numpy as np  # noqa: E402

from core.labels.agreement import as_label_matrix, class_counts  # noqa: E402
from core.errors import check_choice, check_param  # noqa: E402


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
    """Dirichlet pseudo-counts (K, K): ``strength`` votes per true class, ``diag`` of them on the diagonal."""
    off = (1.0 - diag) / max(K - 1, 1)
    return strength * np.where(np.eye(K, dtype=bool), diag, off)


CONFUSIONS = ("auto", "full", "one_coin")
MAX_MODEL_WEIGHT = 20.0


@dataclass(frozen=True)
class EMFit:
    """What one EM fit (Dawid-Skene, with or without the model's probabilities in the item priors) learned.

    Attributes
    ----------
    posterior : ndarray (N, K)         P(true class | votes, model) per item (the last E-step)
    confusions : ndarray (M, K, K)     P(annotator m says l | true class k), rows sum to 1
    class_prior : ndarray (K,)
    full : ndarray (M,) bool           whether each annotator got a full confusion matrix (else one-coin)
    model_weight : float               model-aware: ``beta``, the weight of the model's log-probabilities in
                                       each item's prior ``softmax(beta * log proba + model_bias)`` (NaN without)
    model_bias : ndarray (K,)          model-aware: the per-class offset of that prior (zeros without)
    annotator_accuracy : ndarray (M,)  expected share of each annotator's votes that are right under the
                                       posterior (NaN for an annotator without votes)
    model_accuracy : float             expected share of the voted items the model's top class gets right (NaN without)
    n_iter : int                       EM iterations run
    """

    posterior: np.ndarray
    confusions: np.ndarray
    class_prior: np.ndarray
    full: np.ndarray
    model_weight: float
    model_bias: np.ndarray
    annotator_accuracy: np.ndarray
    model_accuracy: float
    n_iter: int


def _design(L: np.ndarray, K: int):
    """The votes of ``L`` (N, M) as a sparse one-hot design (N, M*K) and (rows, annotators, labels) of each vote."""
    from scipy import sparse

    N, M = L.shape
    rows, cols = np.nonzero(~np.isnan(L))
    labs = L[rows, cols].astype(np.int64)
    A = sparse.csr_matrix((np.ones(rows.size), (rows, cols * K + labs)), shape=(N, M * K))
    return A, rows, cols, labs


def _confusions(A, T: np.ndarray, alpha: np.ndarray, M: int, K: int,
                kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """M-step of the confusion matrices from the posteriors ``T`` (N, K).

    Every annotator gets the Dirichlet pseudo-counts ``alpha`` (K, K). ``kind`` "full": one free row per true
    class (Dawid-Skene); "one_coin": the annotator's overall accuracy on the diagonal and the rest spread
    evenly; "auto": per annotator, the full matrix when its gain in expected log-likelihood over the one-coin
    matrix exceeds the BIC penalty ``(K(K-1) - 1) / 2 * ln(n_votes)``, which keeps an annotator with a few
    hundred votes from fitting sixteen free numbers to noise, while a class-pair swapper keeps the matrix that
    shows it.

    Returns
    -------
    conf : ndarray (M, K, K)    P(m says l | true k)
    log_e : ndarray (M*K, K)    log conf arranged for the E-step (row m*K + l, column k)
    full : ndarray (M,) bool
    """
    C = np.asarray(A.T @ T).reshape(M, K, K).transpose(0, 2, 1)  # C[m, k, l] expected counts
    conf = (C + alpha) / (C + alpha).sum(2, keepdims=True)
    full = np.ones(M, dtype=bool)
    if kind != "full" and K > 2:
        n = C.sum((1, 2))
        acc = (np.trace(C, axis1=1, axis2=2) + np.trace(alpha)) / (n + alpha.sum())
        one = np.where(np.eye(K, dtype=bool), acc[:, None, None], ((1 - acc) / (K - 1))[:, None, None])
        if kind == "one_coin":
            full[:] = False
        else:
            gain = (C * (np.log(conf) - np.log(one))).sum((1, 2))
            full = gain > 0.5 * (K * (K - 1) - 1) * np.log(np.maximum(n, 2))
        conf = np.where(full[:, None, None], conf, one)
    return conf, np.log(conf).transpose(0, 2, 1).reshape(M * K, K), full


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _fit_model_prior(u: np.ndarray, T: np.ndarray, beta: float, bias: np.ndarray,
                     steps: int = 3) -> tuple[float, np.ndarray]:
    """M-step of the model's prior ``softmax(beta * u + bias)``: maximise sum_ik T_ik log softmax(...)_ik.

    ``u`` (n, K) are the model's log-probabilities, ``T`` (n, K) the posteriors of the same items. ``beta``:
    a few Newton steps (the objective is concave in it), clipped to [0, MAX_MODEL_WEIGHT]; 1 takes the
    model's probabilities as they are, > 1 sharpens an under-confident model (one trained on noisy labels is),
    < 1 tempers an over-confident one. ``bias`` (K,): one fixed-point step matching the prior's class totals
    to the posteriors' (a model trained on noisy labels over- or under-predicts some classes).
    """
    for _ in range(steps):
        p = np.exp(_log_softmax(beta * u + bias))
        mean_u = (p * u).sum(1)
        grad = float(((T * u).sum(1) - mean_u).sum())
        hess = float(((p * u * u).sum(1) - mean_u ** 2).sum())
        if hess <= 1e-12:
            break
        beta = float(np.clip(beta + grad / hess, 0.0, MAX_MODEL_WEIGHT))
    p = np.exp(_log_softmax(beta * u + bias))
    bias = bias + np.log(T.sum(0) + 1e-9) - np.log(p.sum(0) + 1e-9)
    return beta, bias - bias.max()


def model_log_proba(proba: np.ndarray) -> np.ndarray:
    """The model's log-probabilities as the model-aware prior uses them, (n, K): floored at 1e-3 (a 1-NN
    says 0 or 1) and shifted so that each row's maximum is 0."""
    u = np.log(np.clip(np.asarray(proba, dtype=float), 1e-3, None))
    return u - u.max(1, keepdims=True)


def em_fit(
    L: np.ndarray,
    K: int,
    *,
    proba: np.ndarray | None = None,
    prior_strength: float = 4.0,
    prior_accuracy: float = 0.7,
    confusion: str = "auto",
    max_iter: int = 100,
    tol: float = 1e-5,
) -> EMFit:
    """Dawid and Skene's EM (MAP, Dirichlet priors), optionally with the model's probabilities in the item priors.

    Without ``proba`` this is Dawid-Skene (1979): a confusion matrix per annotator (see :func:`_confusions`
    for ``confusion``) and a class prior. With ``proba`` (N, K), each item's prior is
    ``softmax(beta * log proba[i] + bias)`` with ``beta`` and ``bias`` (K,) learnt by the same EM: the model
    is a source whose weight and class bias are estimated with the annotators', on all the items, ties
    included (learning from crowds with a classifier, Raykar et al. 2010). The probabilities must be
    out-of-sample for the voted items. Rows of ``proba`` with a NaN use the class prior alone.

    Both steps are sparse products over the votes (no loop over annotators or items). EM starts from the vote
    shares (plus the model as one vote) and stops when the MAP objective per vote gains less than ``tol``
    (crowd-kit's rule) or after ``max_iter`` iterations; ``tol=0`` runs ``max_iter`` iterations.
    """
    check_choice("consensus", "confusion", confusion, CONFUSIONS)
    check_param("consensus", "max_iter", max_iter, isinstance(max_iter, int) and max_iter >= 1, "an int >= 1")
    N, M = L.shape
    A, rows, cols, labs = _design(L, K)
    counts = vote_counts(L, K)
    voted = counts.sum(1) > 0
    n_votes = max(rows.size, 1)
    alpha = confusion_prior(K, prior_strength, prior_accuracy)
    init = counts
    if proba is not None:
        proba = np.asarray(proba, dtype=float)
        have = np.isfinite(proba).all(1)
        q = np.where(have[:, None], np.nan_to_num(proba), 1.0)
        q = q / np.maximum(q.sum(1, keepdims=True), 1e-12)
        u = np.where(have[:, None], model_log_proba(q), 0.0)
        fit_m = voted & have
        init = counts + np.where(have[:, None], q, 0.0)
    T = np.where(init.sum(1, keepdims=True) > 0, init / np.maximum(init.sum(1, keepdims=True), 1e-12), 1.0 / K)
    beta, bias = 1.0, np.zeros(K)
    last = -np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        prior = (T[voted].sum(0) + 1.0) / (voted.sum() + K)
        conf, log_e, full = _confusions(A, T, alpha, M, K, confusion)
        log_like = np.asarray(A @ log_e)  # (N, K): sum over the item's votes of log P(vote | k)
        if proba is None:
            log_prior = np.broadcast_to(np.log(prior), (N, K))
        else:
            if fit_m.any():
                beta, bias = _fit_model_prior(u[fit_m], T[fit_m], beta, bias)
            log_prior = np.where(have[:, None], _log_softmax(beta * u + bias), np.log(prior))
        z = log_prior + log_like
        zmax = z.max(1, keepdims=True)
        ez = np.exp(z - zmax)
        s = ez.sum(1, keepdims=True)
        T = ez / s
        objective = (float((np.log(s[:, 0]) + zmax[:, 0])[voted].sum()) + float((alpha * np.log(conf)).sum())
                     + float(np.log(prior).sum())) / n_votes
        if tol > 0 and abs(objective - last) < tol:
            break
        last = objective
    nv = np.bincount(cols, minlength=M)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(nv > 0, np.bincount(cols, weights=T[rows, labs], minlength=M) / np.maximum(nv, 1), np.nan)
    post = np.where(voted[:, None], T, 0.0)
    model_acc = float("nan")
    if proba is not None:
        if fit_m.any():
            top = q[fit_m].argmax(1)
            model_acc = float(T[fit_m][np.arange(top.size), top].mean())
        post = np.where((~voted & have)[:, None], np.exp(log_prior), post)  # no vote: the model's prior alone
    return EMFit(post, conf, prior, full, float("nan") if proba is None else beta, bias, acc, model_acc, n_iter)


def dawid_skene(
    L: np.ndarray,
    *,
    n_classes: int | None = None,
    prior_strength: float = 4.0,
    prior_accuracy: float = 0.7,
    confusion: str = "auto",
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[ConsensusTable, np.ndarray, np.ndarray]:
    """Dawid and Skene's EM over one confusion matrix per annotator (MAP, with Dirichlet priors).

    Each annotator's confusion rows get ``prior_strength`` pseudo-votes, ``prior_accuracy`` of them on the
    diagonal, so that an annotator with a handful of votes keeps a moderate matrix instead of a 0/1 one; the
    class prior gets one pseudo-count per class. ``confusion="auto"`` keeps an annotator's full matrix only
    where their votes support it over a one-coin matrix (BIC, :func:`_confusions`); "full" is the 1979 model.
    Initialised from the vote shares (majority vote). See :func:`em_fit` for the steps and the stopping rule.

    Returns
    -------
    table : ConsensusTable
    confusions : ndarray (M, K, K)   P(annotator m says l | true class k), rows sum to 1
    class_prior : ndarray (K,)
    """
    L, K = _check_matrix(L, n_classes)
    check_param("dawid_skene", "prior_accuracy", prior_accuracy, 0 < prior_accuracy < 1, "a float in (0, 1)")
    check_param("dawid_skene", "prior_strength", prior_strength, prior_strength >= 0, "a float >= 0")
    fit = em_fit(L, K, prior_strength=prior_strength, prior_accuracy=prior_accuracy, confusion=confusion,
                 max_iter=max_iter, tol=tol)
    return _table(fit.posterior, vote_counts(L, K), "dawid_skene", ties_to_none=False), fit.confusions, fit.class_prior


def dawid_skene_fit(L: np.ndarray, *, n_classes: int | None = None, **kwargs) -> tuple[ConsensusTable, EMFit]:
    """:func:`dawid_skene` returning the whole :class:`EMFit` (annotator accuracies, iterations)."""
    L, K = _check_matrix(L, n_classes)
    fit = em_fit(L, K, **kwargs)
    return _table(fit.posterior, vote_counts(L, K), "dawid_skene", ties_to_none=False), fit


def model_aware(
    L: np.ndarray,
    proba: np.ndarray,
    *,
    n_classes: int | None = None,
    prior_strength: float = 4.0,
    prior_accuracy: float = 0.7,
    confusion: str = "auto",
    max_iter: int = 100,
    tol: float = 1e-5,
) -> tuple[ConsensusTable, dict]:
    """Votes combined with the model's out-of-sample class probabilities, every source weighted by what EM learns.

    Dawid-Skene with the model's probabilities in each item's prior (:func:`em_fit`): every annotator gets a
    confusion matrix (an adversary's votes, once learnt, point away from their label; a spammer's carry no
    weight), the model a weight ``beta`` on its log-probabilities and a per-class bias, all learnt together
    by EM on all the items, ties included (no source is scored by a leave-one-out majority, which two votes
    per item leave undecided).

    ``proba`` must be out-of-sample for the voted items (the classifier's out-of-fold probabilities for the
    items it trained on): a model graded on its own training labels looks right everywhere and its weight
    saturates.

    Parameters
    ----------
    L : ndarray (N, M)
    proba : ndarray (N, K)   the model's class probabilities (rows of NaN for items it did not see)

    Returns
    -------
    table : ConsensusTable
    fit : dict  {"confusions": (M, K, K), "class_prior": (K,), "model": beta, "model_bias": (K,),
                 "model_accuracy": float, "annotator_accuracy": (M,), "full": (M,) bool, "n_iter": int}
    """
    L, K = _check_matrix(L, n_classes if n_classes is not None else np.asarray(proba).shape[1])
    proba = np.asarray(proba, dtype=float)
    check_param("model_aware", "proba", f"an array of shape {proba.shape}", proba.shape == (L.shape[0], K),
                f"an array of shape ({L.shape[0]}, {K})")
    fit = em_fit(L, K, proba=proba, prior_strength=prior_strength, prior_accuracy=prior_accuracy,
                 confusion=confusion, max_iter=max_iter, tol=tol)
    table = _table(fit.posterior, vote_counts(L, K), "model_aware", ties_to_none=False)
    return table, {"confusions": fit.confusions, "class_prior": fit.class_prior, "model": fit.model_weight,
                   "model_bias": fit.model_bias, "model_accuracy": fit.model_accuracy,
                   "annotator_accuracy": fit.annotator_accuracy, "full": fit.full, "n_iter": fit.n_iter}
