"""Fitted consensus parameters, and their application to one item's votes.

The probabilistic methods of :mod:`core.labels.methods` (Dawid-Skene, model-aware) are fitted on the whole label
matrix: annotator confusion matrices or weights, a class prior, the model's weight. Fitting takes seconds on
a large project, so the store fits them on demand (before training, from the Consensus page, on a change of
method) and keeps them in the project's settings. Every new vote then updates its item's consensus at once
by applying the kept parameters to that item's votes: the same posterior the fit's last E-step gives.

An annotator the fit has not seen gets the prior's confusion matrix (Dawid-Skene) or the mean weight
(model-aware). Adjudications override every method; machine labels never count.
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
    weights : dict[str, float]         model-aware: annotator -> weight
    model_weight : float               model-aware: the model's weight
    vote_likelihood : float            model-aware: P of a vote being right
    run_id : int | None                the run whose probabilities the model-aware fit used
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
    run_id: int | None = None
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
) -> tuple[cm.ConsensusTable, ConsensusParams]:
    """Fit ``method`` on the label matrix ``L`` (N, M) of ``annotators`` (M,).

    ``proba`` (N, K) are the current model's probabilities for the rows of ``L`` (NaN rows where the model
    did not see an item); the model-aware method without them weighs the votes alone.
    """
    check_choice("consensus", "method", method, METHODS)
    K = len(classes)
    if method == "majority":
        return cm.majority_vote(L, n_classes=K), ConsensusParams("majority", list(classes), fitted_at=fitted_at)
    if method == "dawid_skene":
        table, conf, prior = cm.dawid_skene(L, n_classes=K)
        default = cm.confusion_prior(K, 1.0, 0.7)
        params = ConsensusParams(
            "dawid_skene", list(classes), confusions={a: conf[m].tolist() for m, a in enumerate(annotators)},
            default_confusion=default.tolist(), prior=prior.tolist(), fitted_at=fitted_at,
            summary={"annotator_accuracy": {a: float(np.diag(conf[m]) @ prior) for m, a in enumerate(annotators)}},
        )
        return table, params
    if proba is None:
        proba = np.full((len(L), K), np.nan)
    table, w = cm.model_aware(L, proba, n_classes=K)
    params = ConsensusParams(
        "model_aware", list(classes), weights={a: float(w["annotators"][m]) for m, a in enumerate(annotators)},
        model_weight=float(w["model"]), vote_likelihood=float(w["vote_likelihood"]), run_id=run_id,
        fitted_at=fitted_at,
        summary={"annotator_accuracy": {a: _num(w["annotator_accuracy"][m]) for m, a in enumerate(annotators)},
                 "model_accuracy": _num(w["model_accuracy"]), "baseline": _num(w["baseline"])},
    )
    return table, params


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def item_posterior(params: ConsensusParams, votes: dict[str, int], proba_row: np.ndarray | None = None) -> np.ndarray:
    """Class posterior (K,) of one item from its votes ``{annotator: class index}`` under ``params``.

    Zeros when there is no information (no vote and, for model-aware, no model probabilities).
    """
    K = len(params.classes)
    if params.method == "dawid_skene":
        if not votes:
            return np.zeros(K)
        log_post = np.log(np.asarray(params.prior, dtype=float))
        default = np.asarray(params.default_confusion, dtype=float)
        for annotator, k in votes.items():
            conf = np.asarray(params.confusions[annotator]) if annotator in params.confusions else default
            log_post += np.log(conf[:, k])
        log_post -= log_post.max()
        post = np.exp(log_post)
        return post / post.sum()
    if params.method == "model_aware":
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
