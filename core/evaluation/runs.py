"""Evaluation of a run against the project's reference labels (ground truth kept for evaluation).

Scores are given on two subsets: ``unlabelled`` (items no annotator labelled: what the model had to
infer) and ``all`` items. Predictions are scored with accuracy and macro-F1; the run's clusters with
ACC (Hungarian matching), NMI and ARI.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from core.evaluation import metrics
from core.errors import ValidationError
from core.store.project_store import Store


def evaluate_arrays(
    item_ids: np.ndarray,
    predicted: Sequence[str | None],
    clusters: np.ndarray | None,
    reference: dict[int, str],
    annotated: set[int],
) -> dict:
    """Scores of predictions (n,) and clusters (n,) for items ``item_ids`` (n,) against ``reference``."""
    item_ids = np.asarray(item_ids)
    has_ref = np.array([int(i) in reference for i in item_ids], dtype=bool)
    out: dict = {"n_reference": int(has_ref.sum())}
    if not has_ref.any():
        return out
    unl = np.array([int(i) not in annotated for i in item_ids], dtype=bool)
    for name, mask in (("unlabelled", has_ref & unl), ("all", has_ref)):
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            out[name] = {"n": 0}
            continue
        truth = np.array([reference[int(item_ids[i])] for i in idx], dtype=object)
        pred = np.array([predicted[i] if predicted[i] is not None else "" for i in idx], dtype=object)
        scores = {"n": int(len(idx)), **metrics.prediction_scores(truth, pred)}
        if clusters is not None:
            cl = np.asarray(clusters)[idx]
            scores["clusters"] = metrics.clustering_scores(truth, cl)
        out[name] = scores
    return out


def evaluate_run(store: Store, run_id: int | None = None) -> dict:
    """Evaluate the given (default: newest) run of the project against its reference labels."""
    run = store.run(run_id)
    if run is None:
        raise ValidationError("The project has no published run yet: train a model first ('python -m core train').")
    reference = store.reference_labels()
    if not reference:
        raise ValidationError(
            "The project has no reference labels to evaluate against: import with --reference-from-folders "
            "or a manifest with a 'reference_label' column."
        )
    rows = store.predictions(run["id"])
    ids = np.array([r["item_id"] for r in rows], dtype=np.int64)
    pred = [r["label"] for r in rows]
    clusters = None if any(r["cluster"] is None for r in rows) else np.array([r["cluster"] for r in rows])
    scores = evaluate_arrays(ids, pred, clusters, reference, store.annotated_item_ids())
    return {"run": run["id"], "model": run["model"], "n_labelled": run["n_labelled"], **scores}
