"""Evaluation of a run against the project's reference labels (ground truth kept for evaluation).

Scores are given on two subsets: ``unlabelled`` (items no annotator had labelled when the run read its
labels: what the model had to infer) and ``all`` items. Predictions are scored with accuracy and
macro-F1; the run's clusters with ACC (Hungarian matching), NMI and ARI.

A label-free run (its predictions name no class: :func:`core.views.common.suggests_classes` is False, e.g.
DEC or IIC trained without confirmed labels, whose cluster ``j`` is "named" after class ``j`` arbitrarily)
gets no raw accuracy or macro-F1: its clusters are scored with ACC/NMI/ARI and, as predictions, after the
best one-to-one cluster -> class matching on the reference labels (``hungarian_accuracy``,
``hungarian_macro_f1`` and the ``mapping`` found); the result says ``label_free`` (true or false).

A run is scored against the labels it was trained with, not today's: ``core.models.training`` writes the
items annotated at training time to ``annotated_item_ids.npy`` in the run's artefact folder (and the
confirmed items it trained on to ``train_item_ids.npy``), so labels added or retracted later do not move
items in or out of a finished run's held-out set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from core.evaluation import metrics
from core.errors import ValidationError
from core.store.project_store import Store
from core.views.common import suggests_classes

LABEL_FREE_NOTE = ("This run is label-free: its clusters carry no class names, so it has no raw accuracy or "
                   "macro-F1. The hungarian_* scores map each cluster to a class by the best one-to-one "
                   "matching on the reference labels ('mapping', per subset).")


def evaluate_arrays(
    item_ids: np.ndarray,
    predicted: Sequence[str | None],
    clusters: np.ndarray | None,
    reference: dict[int, str],
    annotated: set[int],
    *,
    label_free: bool = False,
) -> dict:
    """Scores of predictions (n,) and clusters (n,) for items ``item_ids`` (n,) against ``reference``.

    With ``label_free`` the predicted labels are cluster names, not classes: each subset gets no
    ``accuracy``/``macro_f1`` but :func:`core.evaluation.metrics.hungarian_scores` of the clusters (the
    predicted labels stand for them when ``clusters`` is None) next to ``clusters`` (ACC, NMI, ARI).
    """
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
        if label_free:
            cl = pred if clusters is None else np.asarray(clusters)[idx]
            scores = {"n": int(len(idx)), "clusters": metrics.clustering_scores(truth, cl),
                      **metrics.hungarian_scores(truth, cl)}
        else:
            scores = {"n": int(len(idx)), **metrics.prediction_scores(truth, pred)}
            if clusters is not None:
                scores["clusters"] = metrics.clustering_scores(truth, np.asarray(clusters)[idx])
        out[name] = scores
    return out


def annotated_at_training(store: Store, run: dict) -> tuple[set[int], str]:
    """The items that had a human vote when ``run`` read its labels, and where that set comes from.

    Returns
    -------
    (ids, source): ``source`` is "training" (the run's ``annotated_item_ids.npy``), or "current" for a run
    written before that record existed (then today's annotations, the only set there is).
    """
    path = store.run_dir(run) / "annotated_item_ids.npy"
    if path.is_file():
        return {int(i) for i in np.load(path)}, "training"
    return store.annotated_item_ids(), "current"


def evaluate_run(store: Store, run_id: int | None = None) -> dict:
    """Evaluate the given (default: newest) run of the project against its reference labels.

    The ``unlabelled`` subset is the run's held-out set as it was at training time
    (:func:`annotated_at_training`); ``annotated_source`` says which record was used. A run whose predictions
    name no class (:func:`core.views.common.suggests_classes`) is scored as label-free (module docstring).
    """
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
    annotated, source = annotated_at_training(store, run)
    label_free = not suggests_classes(run)
    scores = evaluate_arrays(ids, pred, clusters, reference, annotated, label_free=label_free)
    return {"run": run["id"], "model": run["model"], "n_labelled": run["n_labelled"], "annotated_source": source,
            "label_free": label_free, **scores}
