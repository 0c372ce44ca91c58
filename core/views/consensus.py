"""The Consensus page's back end: the adjudication queue, the confirmation rule in words, applying the
page's consensus settings, adjudicating an item, and the agreement report among annotators."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.labels import engine as consensus_engine
from core.labels.votes import VOTE_KINDS, latest_per_item
from core.store.project_store import Store
from core.views.common import _check_limit


def disagreements(store: Store, *, limit: int = 200, include_adjudicated: bool = False) -> list[dict[str, Any]]:
    """The adjudication queue: items with >= 2 active human/bulk votes whose consensus is unconfirmed or not
    unanimous, the ones that matter most first.

    ``priority = model_uncertainty + (1 - agreement) + 0.1 * ln(n_votes)``: an item the model cannot
    decide (normalised entropy of the newest run's probabilities; 1 without a run) on which annotators split
    goes first, and among equals the one on which more votes were spent. Ties keep item id order.
    Adjudicated items are left out unless ``include_adjudicated`` (a reviewer already settled them).

    Returns
    -------
    list of dict
        item_id, votes (list of (annotator, label): each annotator's latest vote), n_votes, agreement,
        label (the consensus label or None), confirmed (bool), method, confidence (the consensus method's,
        or None), model_uncertainty (0..1), priority.
    """
    from core.active.queue import aligned_proba

    limit = _check_limit("disagreements", limit, allow_none=False)
    sql = ("SELECT item_id, label, confirmed, n_votes, agreement, method, confidence FROM consensus "
           "WHERE n_votes >= 2 AND (confirmed = 0 OR agreement < 1)")
    if not include_adjudicated:
        sql += " AND method != 'adjudication'"
    rows = store.conn.execute(sql + " ORDER BY item_id").fetchall()
    if not rows:
        return []
    ids = np.array([r["item_id"] for r in rows], dtype=np.int64)
    try:
        proba = aligned_proba(store, ids)
    except OSError:  # a run without its probability file (published by hand): no model view
        proba = None
    if proba is None:
        uncertainty = np.ones(len(ids))
    else:
        p = np.clip(proba.astype(np.float64), 1e-12, 1.0)
        uncertainty = -(p * np.log(p)).sum(1) / max(np.log(p.shape[1]), 1e-12)
    agreement = np.array([r["agreement"] for r in rows], dtype=np.float64)
    n_votes = np.array([r["n_votes"] for r in rows], dtype=np.float64)
    priority = uncertainty + (1 - agreement) + 0.1 * np.log(n_votes)
    order = np.argsort(-priority, kind="stable")[:limit]
    picked = [rows[k] for k in order]
    votes = latest_per_item(store.active_votes([int(r["item_id"]) for r in picked], kinds=VOTE_KINDS))
    return [{"item_id": int(r["item_id"]), "votes": list(votes.get(int(r["item_id"]), {}).items()),
             "n_votes": int(r["n_votes"]), "agreement": float(r["agreement"]), "label": r["label"],
             "confirmed": bool(r["confirmed"]), "method": r["method"], "confidence": r["confidence"],
             "model_uncertainty": round(float(uncertainty[k]), 4), "priority": round(float(priority[k]), 4)}
            for k, r in zip(order, picked)]


def confirmed_rule(store: Store) -> str:
    """In words, what confirms an item under the project's consensus method."""
    cfg = consensus_engine.settings(store)
    if cfg["method"] == "majority":
        return f"majority vote: at least {cfg['min_votes']} agreeing votes and no tie, or an adjudication"
    name = {"dawid_skene": "Dawid-Skene", "model_aware": "model-aware"}[cfg["method"]]
    return f"{name} consensus with posterior at least {cfg['min_confidence']:.2f}, or an adjudication"


def consensus_apply(store: Store, *, method: str, min_votes: int, min_confidence: float,
                    weight_by_confidence: bool, by: str | None = None) -> dict[str, Any]:
    """Save the Consensus page's choices and refit the method on every vote (one call from the page);
    ``by`` (an admin) is who changes them."""
    store.set_setting("min_votes", int(min_votes), by=by)
    store.set_setting("min_confidence", float(min_confidence), by=by)
    store.set_setting("weight_by_confidence", bool(weight_by_confidence), by=by)
    return consensus_engine.refit(store, method, by=by)


def adjudicate(store: Store, item_id: int, label: str, *, reviewer: str) -> int:
    """Settle an item: an adjudication vote by ``reviewer`` (it overrides the votes); returns its annotation id."""
    return store.annotate(int(item_id), reviewer, label, kind="adjudication")


def agreement_report(store: Store) -> dict:
    """Agreement among the project's annotators, for the Consensus page.

    Returns
    -------
    dict with ``n_items`` (items with votes), ``fleiss_kappa``, ``krippendorff_alpha`` (nominal),
    ``cohen`` (DataFrame M x M of pairwise Cohen's kappa, annotator names as index and columns),
    ``annotators`` (DataFrame: annotator, votes, accuracy against the stored consensus, median seconds),
    ``class_confusion`` (DataFrame K x K: how often one annotator's label met another's on the same item).
    """
    from core.labels.agreement import annotator_stats, class_confusion, cohen_kappa_matrix, fleiss_kappa, krippendorff_alpha_nominal
    from core.labels.matrix import label_matrix

    lm = label_matrix(store)
    K = len(lm.classes)
    out: dict = {"n_items": int(len(lm.item_ids)), "annotator_names": lm.annotators}
    if len(lm.item_ids) == 0:
        return {**out, "fleiss_kappa": float("nan"), "krippendorff_alpha": float("nan"), "cohen": pd.DataFrame(),
                "annotators": pd.DataFrame(), "class_confusion": pd.DataFrame()}
    cons = {r["item_id"]: r["label"] for r in store.consensus_rows() if r["label"] is not None}
    cls = {c: k for k, c in enumerate(lm.classes)}
    consensus = np.array([cls.get(cons.get(int(i)), np.nan) for i in lm.item_ids], dtype=float)
    stats = annotator_stats(lm.L, consensus, seconds=lm.seconds).reset_index(drop=True)
    stats.insert(0, "annotator", lm.annotators)
    kappa = pd.DataFrame(cohen_kappa_matrix(lm.L, K), index=lm.annotators, columns=lm.annotators)
    conf = pd.DataFrame(class_confusion(lm.L, K), index=lm.classes, columns=lm.classes)
    return {**out, "fleiss_kappa": fleiss_kappa(lm.L, K), "krippendorff_alpha": krippendorff_alpha_nominal(lm.L, K),
            "cohen": kappa, "annotators": stats, "class_confusion": conf}
