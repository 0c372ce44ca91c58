"""The Pseudo-labels page's back end: what accepting a run's confident predictions would add per class, the
rounds a pseudo-labelling run stored, the candidates above a threshold, and "accept" (one bulk annotation).

Precision of the pseudo-labels: :func:`precision_context` reads the run's out-of-fold predictions
(``oof_proba.npy``, ``train_item_ids.npy``, ``train_labels.npy`` in its folder) and
:mod:`core.evaluation.precision` turns them into "accept N at >= t: estimated precision P% (from k out-of-fold
predictions)", a reliability table and :func:`threshold_by_target`. A run without out-of-fold predictions, or
whose calibration record says ``"unknown"``, has confidences of unknown meaning: the summary says so and gives
no precision.

A run that names no class (a label-free DEC run: :func:`core.views.common.suggests_classes` is False) has
clusters, not classes: :func:`accept_refusal` says why, and :func:`accept_pseudo_labels` refuses it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import check_choice, check_param
from core.evaluation import precision as prec
from core.store.project_store import Store, validate_annotator_name
from core.views.common import (_check_limit, _check_threshold, _confirmed_ids, _consensus, _predictions,
                               _require_run, _resolve_run, _run_classes, _voted_by, suggests_classes)

N_BINS = 20
#: bins of the reliability table computed from the OOF rows when the run records none
RELIABILITY_BINS = 10


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
        With a run, also: ``confidence_status`` ("known" / "unknown") and ``confidence_note``
        (:func:`precision_context`); ``reliability`` (bin rows lo, hi, count, confidence, accuracy);
        ``calibration`` (the run's record or None); ``precision`` (an estimate dict: threshold, n, correct,
        precision, lower, upper, status, reason; only when known) and ``precision_text``
        ("accept N at >= t: estimated precision P% (...)"); ``reference_precision`` (n, precision) of the
        accepted items that have a reference label, when the project has reference labels (evaluation only).
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
    ref = store.reference_labels()
    if ref:  # evaluation only (never shown to annotators as labels): the realised precision of what is accepted
        acc_ids, acc_lab = preds["item_id"].to_numpy()[above], labels[above]
        truth = pd.Series(acc_ids).map(ref).to_numpy(dtype=object)
        has = pd.notna(truth)
        out["reference_precision"] = {"n": int(has.sum()), "precision": float((acc_lab[has] == truth[has]).mean())
                                      if has.any() else None}
    ctx = precision_context(store, run)
    out.update(confidence_status=ctx["status"], confidence_note=ctx["note"], reliability=ctx["reliability"],
               calibration=ctx["calibration"])
    if ctx["status"] == "known":
        est = prec.estimate_precision(ctx["confidence"], ctx["correct"], threshold)
        out["precision"] = est.as_dict()
        out["precision_text"] = _precision_text(out["total_gain"], threshold, est)
    else:
        out["precision_text"] = (f"accept {out['total_gain']:,} at >= {threshold:.2f}: precision cannot be "
                                 f"estimated ({ctx['note']})")
    return out


def _precision_text(n_accept: int, threshold: float, est: prec.PrecisionEstimate) -> str:
    head = f"accept {n_accept:,} at >= {threshold:.2f}: "
    if est.status != "estimated":
        return head + f"estimated precision unknown ({est.reason})"
    return (head + f"estimated precision {100 * est.precision:.0f}% (95% interval {100 * est.lower:.0f}-"
            f"{100 * est.upper:.0f}%, from {est.n:,} out-of-fold predictions)")


def _oof_labels(store: Store, run_dir: Any, ids: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Training labels (m,) of the OOF rows, and a note when today's confirmed labels stand in for them."""
    path = run_dir / "train_labels.npy"
    if path.exists():
        lab = np.load(path, allow_pickle=False).astype(str).astype(object)
        if lab.shape == ids.shape:
            return lab, None
    cons = _consensus(store)
    now = cons[cons["confirmed"]].set_index("item_id")["label"]
    lab = pd.Series(ids).map(now).to_numpy(dtype=object)
    return lab, ("this run predates train_labels.npy: its out-of-fold rows are scored against today's confirmed "
                 "labels (items no longer confirmed are left out)")


def _calibrated_oof(run_dir: Any, oof: np.ndarray, cal: dict | None) -> np.ndarray:
    """The OOF probabilities on the scale of the run's published (calibrated) ones.

    ``oof_proba_published.npy`` (the OOF rows through the run's final calibration map, the very map its
    published probabilities went through) when the run stored it, so a threshold read off these rows selects
    the same confidence range among the unlabelled items; else (runs before it) the cross-fitted
    ``oof_proba_calibrated.npy`` (an isotonic map fitted on half the rows has other steps, so a threshold
    chosen on it could select fewer items than estimated); else the recorded temperature applied to the raw
    OOF rows; else the raw rows (an isotonic map cannot be re-applied from the record alone).
    """
    for name in ("oof_proba_published.npy", "oof_proba_calibrated.npy"):
        if (run_dir / name).exists():
            return np.load(run_dir / name)
    if cal and cal.get("status") == "calibrated" and cal.get("method") == "temperature" and cal.get("temperature"):
        from core.models.calibration import apply_temperature

        ok = np.isfinite(oof).all(axis=1)
        out = np.full(oof.shape, np.nan)
        if ok.any():
            out[ok] = apply_temperature(oof[ok], float(cal["temperature"]))
        return out
    return oof


def _reliability_rows(table: Any) -> list[dict[str, Any]] | None:
    """The calibration record's reliability table (edges, count, confidence, accuracy lists) as bin rows."""
    if not isinstance(table, dict) or not {"edges", "count", "confidence", "accuracy"} <= set(table):
        return None
    e = table["edges"]
    return [{"lo": float(e[b]), "hi": float(e[b + 1]), "count": int(table["count"][b]),
             "confidence": table["confidence"][b], "accuracy": table["accuracy"][b]}
            for b in range(len(table["count"]))]


def precision_context(store: Store, run: dict) -> dict[str, Any]:
    """What the run's out-of-fold predictions say about its confidences.

    Returns
    -------
    dict
        ``status``: "known" or "unknown"; ``note``: why unknown, or how the estimate was made; ``confidence``
        (m,) and ``correct`` (m,) bool of the usable OOF rows (empty when unknown); ``reliability``: bin rows
        (lo, hi, count, confidence, accuracy) from ``metrics["calibration"]["reliability"]`` when recorded,
        else from the OOF rows (empty list when unknown); ``calibration``: the run's record or None.
    """
    cal = (run.get("metrics") or {}).get("calibration")
    cal = cal if isinstance(cal, dict) else None
    out: dict[str, Any] = {"status": "unknown", "note": "", "confidence": np.zeros(0), "correct": np.zeros(0, bool),
                           "reliability": [], "calibration": cal}
    if not suggests_classes(run):
        out["note"] = "the run predicts clusters, not classes, so its confidence is unknown"
        return out
    if cal is not None and cal.get("status") == "unknown":
        out["note"] = f"the run's confidence is unknown (calibration: {cal.get('reason') or 'unknown'})"
        return out
    d = store.run_dir(run)
    if not ((d / "oof_proba.npy").exists() and (d / "train_item_ids.npy").exists()):
        out["note"] = ("the run's confidence is unknown: it has no out-of-fold predictions (this model family does "
                       "not produce them, or the run predates them)")
        return out
    ids = np.load(d / "train_item_ids.npy").astype(np.int64)
    oof = np.asarray(np.load(d / "oof_proba.npy"), dtype=float)
    classes = [str(c) for c in run.get("classes") or []]
    if oof.ndim != 2 or oof.shape[0] != ids.shape[0] or oof.shape[1] != len(classes):
        out["note"] = "the run's confidence is unknown: its out-of-fold arrays do not match its classes"
        return out
    labels, note = _oof_labels(store, d, ids)
    known = pd.notna(labels)
    p = _calibrated_oof(d, oof, cal)[known]
    conf, correct = prec.oof_confidence(p, classes, labels[known])
    if conf.size == 0:
        out["note"] = "the run's confidence is unknown: none of its out-of-fold rows has a prediction and a label"
        return out
    recorded = _reliability_rows(cal.get("reliability")) if cal else None
    out.update(status="known", note=note or f"from {conf.size:,} out-of-fold predictions", confidence=conf,
               correct=correct, reliability=recorded or prec.reliability_table(conf, correct, RELIABILITY_BINS))
    return out


def threshold_by_target(store: Store, run_id: int | None, target: float, *, criterion: str = "lower",
                        min_count: int = 20) -> dict[str, Any]:
    """The smallest threshold whose estimated precision reaches ``target`` (see
    :func:`core.evaluation.precision.threshold_for_precision`; default: its Wilson lower bound, on at least
    ``min_count`` out-of-fold rows).

    Returns
    -------
    dict
        target, criterion, threshold (None when none reaches it or the precision is unknown), estimate (dict or
        None), reason (None when a threshold was found).
    """
    owner = "threshold_by_target"
    check_choice(owner, "criterion", criterion, ("lower", "estimate"))
    run = _require_run(store, run_id, owner)
    ctx = precision_context(store, run)
    if ctx["status"] != "known":
        ok = isinstance(target, (int, float)) and not isinstance(target, bool) and 0 < float(target) <= 1
        check_param(owner, "target", target, ok, "a number in (0, 1]")
        return {"target": float(target), "criterion": criterion, "threshold": None, "estimate": None,
                "reason": f"precision cannot be estimated: {ctx['note']}"}
    return prec.threshold_for_precision(ctx["confidence"], ctx["correct"], target, criterion=criterion,
                                        min_count=min_count).as_dict()


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
                              run_id=run["id"], confidences=[c for _, _, c in picked],
                              permission="accept_pseudo_labels")
    return len(ids)
