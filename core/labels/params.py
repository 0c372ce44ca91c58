"""Fitted consensus parameters, and their application to one item's votes.

The probabilistic methods of :mod:`core.labels.methods` (Dawid-Skene, model-aware) are fitted on the whole label
matrix: annotator confusion matrices, a class prior and, for model-aware, the model's weight and class bias.
Fitting takes seconds on a large project, so the store fits them on demand (before training, from the
Consensus page, on a change of method) and keeps them in the project's settings. Every new vote then updates
its item's consensus at once by applying the kept parameters to that item's votes (and, for model-aware, to
the item's out-of-sample model probabilities): the same posterior the fit's last E-step gives.

An annotator the fit has not seen gets the prior's confusion matrix. A model-aware fit kept from before
out-of-sample EM (annotator weights, no confusion matrices) is applied as it was until the next refit.
Adjudications override every method; machine labels never count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from core.labels import methods as cm
from core.labels.votes import latest_by_annotator, ranked_counts
from core.errors import check_choice

METHODS = ("majority", "dawid_skene", "model_aware")


@dataclass(frozen=True)
class ConsensusParams:
    """What a fit of a consensus method learned.

    Attributes
    ----------
    method : str                       one of :data:`METHODS`
    classes : list[str]                (K,) the label set at fit time
    confusions : dict[str, list]       Dawid-Skene: annotator -> (K, K) P(says l | true k)
    default_confusion : list           (K, K) for annotators the fit did not see
    prior : list[float]                (K,) class prior (Dawid-Skene)
    model_weight : float               model-aware: beta, the weight of the model's log-probabilities
    model_bias : list[float]           model-aware: (K,) per-class offset of the model's prior
    weights : dict[str, float]         model-aware fits of schema 1 (before out-of-sample EM): annotator weights
    vote_likelihood : float            idem: P of a vote being right
    run_id : int | None                the run whose probabilities the model-aware fit used
    proba_source : str                 model-aware: "out_of_fold" (the run's out-of-fold probabilities for the
                                       items it trained on, its predictions elsewhere), "predictions" (a run
                                       without them) or "" (no run)
    fitted_at : float
    summary : dict                     JSON-able figures for the page (annotator accuracy, ...)
    """

    method: str
    classes: list[str]
    confusions: dict[str, list] = field(default_factory=dict)
    default_confusion: list = field(default_factory=list)
    prior: list[float] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    model_weight: float = 0.0
    vote_likelihood: float = 0.7
    model_bias: list[float] = field(default_factory=list)
    run_id: int | None = None
    proba_source: str = ""
    fitted_at: float = 0.0
    summary: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "ConsensusParams | None":
        return None if not d else cls(**d)


def fit_params(
    method: str,
    L: np.ndarray,
    annotators: Sequence[str],
    classes: Sequence[str],
    *,
    proba: np.ndarray | None = None,
    run_id: int | None = None,
    fitted_at: float = 0.0,
    proba_source: str = "",
) -> tuple[cm.ConsensusTable, ConsensusParams]:
    """Fit ``method`` on the label matrix ``L`` (N, M) of ``annotators`` (M,).

    ``proba`` (N, K) are the model's probabilities for the rows of ``L`` (NaN rows where the model did not
    see an item), out-of-sample for the items the model trained on (``proba_source`` says which they are);
    the model-aware method without them is Dawid-Skene.
    """
    check_choice("consensus", "method", method, METHODS)
    K = len(classes)
    if method == "majority":
        return cm.majority_vote(L, n_classes=K), ConsensusParams("majority", list(classes), fitted_at=fitted_at)
    default = cm.confusion_prior(K, 1.0, 0.7)
    if method == "dawid_skene":
        table, fit = cm.dawid_skene_fit(L, n_classes=K)
    else:
        if proba is None:
            proba = np.full((len(L), K), np.nan)
        _, K = cm._check_matrix(L, K)
        fit = cm.em_fit(np.asarray(L, dtype=float), K, proba=proba)
        table = cm._table(fit.posterior, cm.vote_counts(L, K), "model_aware", ties_to_none=False)
    summary = {"annotator_accuracy": {a: _num(fit.annotator_accuracy[m]) for m, a in enumerate(annotators)},
               "full_confusion": {a: bool(fit.full[m]) for m, a in enumerate(annotators)},
               "n_iter": int(fit.n_iter)}
    extra: dict = {}
    if method == "model_aware":
        summary.update({"model_accuracy": _num(fit.model_accuracy), "model_weight": _num(fit.model_weight),
                        "proba_source": proba_source})
        extra = {"model_weight": float(fit.model_weight), "model_bias": fit.model_bias.tolist(), "run_id": run_id,
                 "proba_source": proba_source}
    params = ConsensusParams(
        method, list(classes), confusions={a: fit.confusions[m].tolist() for m, a in enumerate(annotators)},
        default_confusion=default.tolist(), prior=fit.class_prior.tolist(), fitted_at=fitted_at, summary=summary,
        **extra)
    return table, params


def vote_accuracy(params: ConsensusParams) -> float:
    """The chance that a further vote is right under ``params``: the fitted annotators' mean expected accuracy
    (``diag(confusion) @ class prior``), or the vote likelihood of a schema-1 model-aware fit; 0.7 without."""
    if params.confusions and params.prior:
        prior = np.asarray(params.prior, dtype=float)
        return float(np.mean([np.diag(np.asarray(c)) @ prior for c in params.confusions.values()]))
    if params.method == "model_aware" and params.weights:
        return float(params.vote_likelihood)
    return 0.7


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def item_posterior(params: ConsensusParams, votes: dict[str, int], proba_row: np.ndarray | None = None) -> np.ndarray:
    """Class posterior (K,) of one item from its votes ``{annotator: class index}`` under ``params``.

    Zeros when there is no information (no vote and, for model-aware, no model probabilities).
    """
    K = len(params.classes)
    if params.method == "dawid_skene" or (params.method == "model_aware" and params.confusions):
        has_model = (params.method == "model_aware" and proba_row is not None
                     and np.isfinite(proba_row).all() and len(params.model_bias) == K)
        if not votes and not has_model:
            return np.zeros(K)
        if has_model:
            q = np.asarray(proba_row, dtype=float)
            q = q / max(q.sum(), 1e-12)
            z = params.model_weight * cm.model_log_proba(q[None, :])[0] + np.asarray(params.model_bias)
            log_post = z - z.max() - np.log(np.exp(z - z.max()).sum())
        else:
            log_post = np.log(np.asarray(params.prior, dtype=float))
        default = np.asarray(params.default_confusion, dtype=float)
        for annotator, k in votes.items():
            conf = np.asarray(params.confusions[annotator]) if annotator in params.confusions else default
            log_post = log_post + np.log(conf[:, k])
        log_post -= log_post.max()
        post = np.exp(log_post)
        return post / post.sum()
    if params.method == "model_aware":  # a fit of schema 1 (weighted average), kept until the next refit
        P = params.vote_likelihood
        like = np.full((K, K), (1 - P) / max(K - 1, 1))
        np.fill_diagonal(like, P)
        mean_w = float(np.mean(list(params.weights.values()))) if params.weights else 1.0
        num, den = np.zeros(K), 0.0
        if proba_row is not None and np.isfinite(proba_row).all():
            num += params.model_weight * proba_row
            den += params.model_weight
        for annotator, k in votes.items():
            w = params.weights.get(annotator, mean_w)
            num += w * like[k]
            den += w
        return num / den if den > 0 else np.zeros(K)
    counts = np.bincount(np.fromiter(votes.values(), dtype=int, count=len(votes)), minlength=K).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def item_consensus(
    params: ConsensusParams | None,
    votes: Sequence[cm.Vote],
    *,
    min_votes: int,
    min_confidence: float,
    proba_row: np.ndarray | None = None,
) -> cm.ConsensusResult:
    """The consensus of one item: majority (``params`` None or majority) or the fitted method's posterior.

    A probabilistic method confirms an item with at least one vote whose posterior for the leading label
    reaches ``min_confidence``; majority vote keeps its ``min_votes`` agreeing-votes rule.
    """
    if params is None or params.method == "majority":
        return cm.majority(votes, min_votes=min_votes)
    first = cm.majority(votes, min_votes=min_votes)
    if first.method == "adjudication" or first.n_votes == 0:
        return first
    latest = latest_by_annotator(votes)
    index = {c: k for k, c in enumerate(params.classes)}
    known = {a: index[lab] for a, lab in latest.items() if lab in index}
    post = item_posterior(params, known, proba_row)
    if post.sum() <= 0:
        return first
    k = int(post.argmax())
    label = params.classes[k]
    support = dict(ranked_counts(latest)).get(label, 0)
    conf = float(post[k])
    return cm.ConsensusResult(label, support, first.n_votes, support / first.n_votes, conf,
                              conf >= min_confidence, params.method)
