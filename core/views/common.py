"""Helpers shared by the page back ends in :mod:`core.views`: reading a table into a frame, resolving a run,
checking thresholds and limits, and whether a run names classes at all.

Every reader runs one SQL query and returns NumPy arrays or pandas frames (no per-item Python loop over the
whole data set); writes go through the store only.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import check_param
from core.store.project_store import Store

NO_LABEL = "(none)"

_PRED_COLS = ["item_id", "label", "confidence", "cluster", "x", "y"]
_CONS_COLS = ["item_id", "label", "confirmed", "n_votes", "agreement", "method"]


def _frame(store: Store, sql: str, params: Sequence[Any], columns: list[str]) -> pd.DataFrame:
    """Run one SELECT and return its rows as a frame (plain tuples: faster than ``sqlite3.Row``)."""
    cur = store.conn.cursor()
    cur.row_factory = None
    try:
        rows = cur.execute(sql, tuple(params)).fetchall()
    finally:
        cur.close()
    return pd.DataFrame.from_records(rows, columns=columns)


def _resolve_run(store: Store, run_id: int | None, owner: str, name: str = "run_id") -> dict | None:
    """The run ``run_id`` (or the newest one when None; None when the project has no run)."""
    if run_id is None:
        return store.run()
    ok = isinstance(run_id, (int, np.integer)) and not isinstance(run_id, bool)
    check_param(owner, name, run_id, ok, "the id (an int) of a run of this project")
    row = store.conn.execute("SELECT id FROM runs WHERE id = ?", (int(run_id),)).fetchone()
    check_param(owner, name, run_id, row is not None, "the id of a run of this project")
    return store.run(int(run_id))


def _require_run(store: Store, run_id: int | None, owner: str, name: str = "run_id") -> dict:
    """Like :func:`_resolve_run`, but a project without any run is refused."""
    run = _resolve_run(store, run_id, owner, name)
    check_param(owner, name, run_id, run is not None, "a run id; this project has no published run yet")
    return run  # type: ignore[return-value]


def _predictions(store: Store, run_id: int, *, with_coords: bool = False) -> pd.DataFrame:
    """Predictions of a run: item_id, label, confidence, cluster, x, y; one row per item, by item id."""
    sql = "SELECT item_id, label, confidence, cluster, x, y FROM predictions WHERE run_id = ?"
    if with_coords:
        sql += " AND x IS NOT NULL AND y IS NOT NULL"
    df = _frame(store, sql + " ORDER BY item_id", (int(run_id),), _PRED_COLS)
    df["item_id"] = df["item_id"].astype(np.int64)
    df["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").astype(float)
    df["cluster"] = pd.array(df["cluster"], dtype="Int64")
    return df


def _consensus(store: Store) -> pd.DataFrame:
    """The consensus table: item_id, label, confirmed (bool), n_votes, agreement, method."""
    df = _frame(store, "SELECT item_id, label, confirmed, n_votes, agreement, method FROM consensus", (), _CONS_COLS)
    df["item_id"] = df["item_id"].astype(np.int64)
    df["confirmed"] = df["confirmed"].astype(bool)
    df["agreement"] = pd.to_numeric(df["agreement"], errors="coerce").astype(float)
    return df


def _confirmed_ids(store: Store) -> np.ndarray:
    """Ids (m,) int64 of the items whose consensus is confirmed."""
    rows = store.conn.execute("SELECT item_id FROM consensus WHERE confirmed = 1").fetchall()
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def _voted_by(store: Store, annotator: str) -> np.ndarray:
    """Items with an active human, bulk or adjudication vote by ``annotator``; shape (m,)."""
    rows = store.conn.execute(
        "SELECT DISTINCT a.item_id FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
        "WHERE r.annotation_id IS NULL AND a.annotator = ? AND a.kind IN ('human', 'bulk', 'adjudication')",
        (annotator,),
    ).fetchall()
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


def _check_threshold(owner: str, threshold: Any) -> float:
    ok = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    ok = ok and math.isfinite(float(threshold)) and 0.0 <= float(threshold) <= 1.0
    check_param(owner, "threshold", threshold, ok, "a number in [0, 1]")
    return float(threshold)


def _check_limit(owner: str, limit: Any, *, allow_none: bool) -> int | None:
    if limit is None and allow_none:
        return None
    ok = isinstance(limit, (int, np.integer)) and not isinstance(limit, bool) and limit >= 1
    check_param(owner, "limit", limit, ok, "an int >= 1" + (" or None" if allow_none else ""))
    return int(limit)


def _run_classes(run: dict, *extra: pd.Series) -> list[str]:
    """The run's classes in order, then any other label seen in ``extra`` (sorted)."""
    classes = [str(c) for c in run.get("classes") or []]
    seen = set(classes)
    others = sorted({str(v) for s in extra for v in s.dropna().unique()} - seen)
    return classes + others


def suggests_classes(run: dict) -> bool:
    """Whether the run's predicted labels are classes (False for a run that had no label mapping).

    A label-free run (DEC trained with zero confirmed labels) names cluster ``j`` after class ``j`` only to
    fill its probability columns: its "labels" are clusters. Its trainer records ``suggests_classes: false``
    in the run's metrics; DEC runs published before that flag existed say so in
    ``metrics["dec"]["label_source"]`` ("none (...)").
    """
    metrics = run.get("metrics") if isinstance(run.get("metrics"), dict) else {}
    if "suggests_classes" in metrics:
        return bool(metrics["suggests_classes"])
    dec = metrics.get("dec") if isinstance(metrics.get("dec"), dict) else {}
    return not str(dec.get("label_source", "")).startswith("none")
