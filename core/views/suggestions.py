"""What the model suggests for one item, for the Label page: a class, or "cluster N" for a run that names
no class (a label-free DEC run, see :func:`core.views.common.suggests_classes`); and where the suggestions
come from (which run, how old, on how many labels) and whether a newer model is training."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from core.errors import check_param
from core.jobs import queue as jobs
from core.store.project_store import Store
from core.views.clusters import cluster_merges
from core.views.common import _resolve_run, suggests_classes

__all__ = ["item_suggestion", "suggestion_source", "suggests_classes"]


def item_suggestion(store: Store, item_id: int, run_id: int | None = None) -> dict[str, Any] | None:
    """The suggestion of run ``run_id`` (the newest when None) for one item.

    Returns
    -------
    dict or None
        ``title`` ("Model suggests" or "Model cluster"), ``text`` (the class, or "cluster N" with the
        cluster after merges), ``is_class`` (bool), ``label`` (the class or None), ``cluster`` (int or None),
        ``confidence`` (float or None), ``run_id``. None when there is no run or it did not predict the item
        (for a run that names no class: did not cluster it).
    """
    ok = isinstance(item_id, (int, np.integer)) and not isinstance(item_id, bool)
    check_param("item_suggestion", "item_id", item_id, ok, "an item id (an int)")
    run = _resolve_run(store, run_id, "item_suggestion")
    if run is None:
        return None
    row = store.conn.execute("SELECT label, confidence, cluster FROM predictions WHERE run_id = ? AND item_id = ?",
                             (run["id"], int(item_id))).fetchone()
    if row is None:
        return None
    confidence = None if row["confidence"] is None else float(row["confidence"])
    out = {"run_id": run["id"], "confidence": confidence, "label": None, "cluster": None}
    if suggests_classes(run):
        if row["label"] is None:
            return None
        return {**out, "title": "Model suggests", "text": str(row["label"]), "is_class": True,
                "label": str(row["label"])}
    if row["cluster"] is None:
        return None
    cluster = int(cluster_merges(store, run["id"]).get(int(row["cluster"]), int(row["cluster"])))
    return {**out, "title": "Model cluster", "text": f"cluster {cluster}", "is_class": False, "cluster": cluster}


def suggestion_source(store: Store, *, now: float | None = None) -> str | None:
    """One line for under the suggestion: the run the suggestions come from, and a train job in progress.

    "Suggestions from run R (model, trained H:MM ago on L labels)", then, while a train job is running or
    queued, "a newer model is training (job J, phase P)" (or "(job J, queued)"); None with neither.
    ``now`` (seconds since the epoch) is for tests.
    """
    parts = []
    run = store.run()
    if run is not None:
        minutes = max(0, int(((time.time() if now is None else now) - run["created_at"]) // 60))
        parts.append(f"Suggestions from run {run['id']} ({run['model']}, trained {minutes // 60}:{minutes % 60:02d} "
                     f"ago on {run['n_labelled']} labels)")
    job = jobs.active_job(store, "train")
    if job is not None:
        phase = job["progress"].get("phase") if job["status"] == "running" else None
        state = f"phase {phase}" if phase else job["status"]
        parts.append(f"a newer model is training (job {job['id']}, {state})" if run is not None
                     else f"a model is training (job {job['id']}, {state})")
    return "; ".join(parts) or None
