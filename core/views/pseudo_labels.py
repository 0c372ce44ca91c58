"""The Pseudo-labels page's back end: what accepting a run's confident predictions would add per class, the
rounds a pseudo-labelling run stored, the candidates above a threshold, and "accept" (one bulk annotation).

A run that names no class (a label-free DEC run: :func:`core.views.common.suggests_classes` is False) has
clusters, not classes: :func:`accept_refusal` says why, and :func:`accept_pseudo_labels` refuses it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import check_choice, check_param
from core.store.project_store import Store, validate_annotator_name
from core.views.common import (_check_limit, _check_threshold, _confirmed_ids, _consensus, _predictions,
                               _require_run, _resolve_run, _run_classes, _voted_by, suggests_classes)

N_BINS = 20


def accept_refusal(run: dict) -> str | None:
    """Why the pseudo-labels of ``run`` cannot be accepted, or None when they can."""
    if suggests_classes(run):
        return None
    return (f"run {run['id']} ({run['model']}) was trained without confirmed labels, so it has no mapping from its "
            "clusters to classes (its cluster j only borrows the name of class j); confirm some labels and retrain, "
            "or label whole clusters on the Clusters page")


def _unconfirmed_predictions(store: Store, run: dict) -> pd.DataFrame:
    """Predictions of a run (with a label and a confidence) on items whose consensus is not confirmed."""
    preds = _predictions(store, run["id"])
    preds = preds[preds["label"].notna() & preds["confidence"].notna()]
    return preds[~preds["item_id"].isin(_confirmed_ids(store))].reset_index(drop=True)


def pseudo_label_summary(store: Store, run_id: int | None = None, *, threshold: float) -> dict[str, Any]:
    """What accepting the run's confident predictions on unconfirmed items would add, per class.

    Returns
    -------
    dict
        ``run_id``; ``threshold``; ``n_unconfirmed`` (unconfirmed items with a prediction); ``total_gain``;
        ``bins``: the 21 bin edges of [0, 1]; ``gains``: one dict per class with label, gain (unconfirmed items
        predicted as the class with confidence >= threshold), predicted (all unconfirmed items predicted as it),
        confirmed (items confirmed as it now); ``histogram``: one dict per class and bin with label, bin (its
        centre), lo, hi, count, over unconfirmed items. Both lists are empty when there is no run.
    """
    threshold = _check_threshold("pseudo_label_summary", threshold)
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    run = _resolve_run(store, run_id, "pseudo_label_summary")
    out: dict[str, Any] = {"run_id": None if run is None else run["id"], "threshold": threshold,
                           "n_unconfirmed": 0, "total_gain": 0, "bins": edges.tolist(), "gains": [], "histogram": []}
    if run is None:
        return out
    preds = _unconfirmed_predictions(store, run)
    cons = _consensus(store)
    confirmed = cons.loc[cons["confirmed"], "label"]
    classes = _run_classes(run, preds["label"])
    labels, conf = preds["label"].to_numpy(dtype=object), preds["confidence"].to_numpy(dtype=float)
    above = conf >= threshold
    gain = pd.Series(labels[above]).value_counts()
    predicted = preds["label"].value_counts()
    now_confirmed = confirmed.value_counts()
    out["gains"] = [{"label": c, "gain": int(gain.get(c, 0)), "predicted": int(predicted.get(c, 0)),
                     "confirmed": int(now_confirmed.get(c, 0))} for c in classes]
    counts = _class_histogram(labels, conf, classes)
    centres = (edges[:-1] + edges[1:]) / 2
    out["histogram"] = [{"label": c, "bin": float(centres[b]), "lo": float(edges[b]), "hi": float(edges[b + 1]),
                         "count": int(counts[k, b])} for k, c in enumerate(classes) for b in range(N_BINS)]
    out["n_unconfirmed"] = int(len(preds))
    out["total_gain"] = int(above.sum())
    return out


def _class_histogram(labels: np.ndarray, conf: np.ndarray, classes: list[str]) -> np.ndarray:
    """Counts (k classes, N_BINS) of confidences (n,) in [0, 1] per predicted label (n,).

    Bin b holds [b/N, (b+1)/N); 1.0 goes to the last bin. ``floor(conf * N)`` keeps decimal edges exact
    (0.30 lands in [0.30, 0.35), where ``np.histogram`` with ``linspace`` edges puts it one bin lower).
    """
    code = pd.Series(labels, dtype=object).map({c: k for k, c in enumerate(classes)}).to_numpy(dtype=float)
    ok = ~np.isnan(code)
    b = np.clip(np.floor(np.clip(conf[ok], 0.0, 1.0) * N_BINS).astype(np.int64), 0, N_BINS - 1)
    flat = np.bincount(code[ok].astype(np.int64) * N_BINS + b, minlength=len(classes) * N_BINS)
    return flat.reshape(len(classes), N_BINS)


def pseudo_label_rounds(store: Store, run_id: int) -> dict[str, Any]:
    """The pseudo-labels a pseudo-labelling run stored, per round, and its per-round metrics.

    Returns
    -------
    dict
        counts: DataFrame (round x label) of stored pseudo-labels (empty when the run stored none);
        metrics: DataFrame of the run's ``metrics["rounds"]`` (validation macro-F1, pseudo-labels added, ...).
    """
    rows = store.pseudo_labels(run_id)
    df = pd.DataFrame([dict(r) for r in rows], columns=["item_id", "label", "confidence", "round"])
    counts = pd.crosstab(df["round"], df["label"]) if len(df) else pd.DataFrame()
    run = store.run(run_id)
    rounds = run["metrics"].get("rounds") or []
    flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rounds]
    return {"counts": counts, "metrics": pd.DataFrame(flat)}


def candidates(
    store: Store,
    run_id: int | None,
    threshold: float,
    *,
    label: str | None = None,
    limit: int | None = None,
    annotator: str | None = None,
) -> list[tuple[int, str, float]]:
    """Unconfirmed items the run predicts with confidence >= ``threshold``: (item_id, label, confidence).

    Sorted by confidence, highest first (then by item id). ``label`` keeps one predicted class; ``annotator``
    leaves out items that annotator already voted on; ``limit`` keeps the first ones.
    """
    owner = "candidates"
    threshold = _check_threshold(owner, threshold)
    limit = _check_limit(owner, limit, allow_none=True)
    run = _resolve_run(store, run_id, owner)
    if run is None:
        return []
    preds = _unconfirmed_predictions(store, run)
    if label is not None:
        check_choice(owner, "label", label, _run_classes(run, preds["label"], pd.Series(store.labels(), dtype=object)))
        preds = preds[preds["label"] == label]
    preds = preds[preds["confidence"].to_numpy() >= threshold]
    if annotator is not None:
        preds = preds[~preds["item_id"].isin(_voted_by(store, validate_annotator_name(annotator)))]
    order = np.lexsort((preds["item_id"].to_numpy(), -preds["confidence"].to_numpy()))
    if limit is not None:
        order = order[:limit]
    ids = preds["item_id"].to_numpy()[order].tolist()
    labs = preds["label"].to_numpy(dtype=object)[order].tolist()
    confs = preds["confidence"].to_numpy()[order].tolist()
    return list(zip(ids, labs, confs))


def accept_pseudo_labels(
    store: Store,
    run_id: int | None,
    threshold: float,
    *,
    annotator: str,
    labels: Sequence[str] | None = None,
) -> int:
    """Record the run's confident predictions on unconfirmed items as ONE bulk annotation by ``annotator``.

    Items the annotator already voted on are skipped; ``labels`` restricts the predicted classes accepted.
    A run that names no class is refused (:func:`accept_refusal`).
    The votes carry the run id and the confidences; :meth:`Store.undo_last` retracts the whole batch.
    Returns the number of votes written.
    """
    owner = "accept_pseudo_labels"
    annotator = validate_annotator_name(annotator)
    run = _require_run(store, run_id, owner)
    refusal = accept_refusal(run)
    check_param(owner, "run_id", run["id"], refusal is None, f"a run that maps its clusters to classes; {refusal}")
    picked = candidates(store, run["id"], threshold, annotator=annotator)
    if labels is not None:
        ok = isinstance(labels, (list, tuple, set)) and all(isinstance(x, str) for x in labels)
        check_param(owner, "labels", labels, ok, "a list of label names or None")
        known = set(_run_classes(run, pd.Series(store.labels(), dtype=object)))
        unknown = sorted(set(labels) - known)
        check_param(owner, "labels", unknown[0] if len(unknown) == 1 else unknown, not unknown,
                    f"labels of the run ({sorted(known)})")
        picked = [p for p in picked if p[1] in set(labels)]
    if not picked:
        return 0
    ids = store.annotate_many([(i, lab) for i, lab, _ in picked], annotator=annotator, kind="bulk",
                              run_id=run["id"], confidences=[c for _, _, c in picked])
    return len(ids)
