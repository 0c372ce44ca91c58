"""The Embeddings page's back end: one row per item of a run on the map, its colour and its hover text."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import check_choice
from core.store.project_store import Store, uri_path
from core.views.clusters import _apply_merges, cluster_merges
from core.views.common import NO_LABEL, _consensus, _predictions, _resolve_run, suggests_classes

__all__ = ["COLOR_BY", "HOVER_CHARS", "NO_LABEL", "OUTLIER", "OUTLIERS", "map_frame", "map_version"]

COLOR_BY = ("consensus", "prediction", "confidence", "cluster", "disagreement")
"""Valid ``color_by`` values of :func:`map_frame`; confidence and disagreement are continuous."""
HOVER_CHARS = 80
OUTLIER = -1
"""The cluster id of an item a clustering left alone (the reid run's DBSCAN outliers)."""
OUTLIERS = "outliers"
"""The ``color`` of the outliers with ``color_by="cluster"``."""


def map_frame(store: Store, run_id: int | None = None, *, color_by: str = "consensus") -> pd.DataFrame:
    """One row per item of a run that has map coordinates, for the Embeddings page.

    Parameters
    ----------
    run_id : int or None
        The run; None takes the newest (an empty frame when the project has none).
    color_by : {"consensus", "prediction", "confidence", "cluster", "disagreement"}
        What the ``color`` column holds: a label (``"(none)"`` when missing), the confidence (float), the
        merged cluster id as a string (categorical; ``"outliers"`` for cluster -1), or the disagreement (float).

    Returns
    -------
    pandas.DataFrame
        n rows (items with x and y), by item id, columns: item_id, x, y, consensus (label or None),
        confirmed (bool), prediction (label or None), confidence, cluster (Int64, after merges), disagreement
        (1 - agreement for items with >= 2 votes, else 0), n_votes, hover (str), color. The hover of a run
        that names no class (:func:`core.views.common.suggests_classes`) gives the cluster, not a label.
    """
    check_choice("map_frame", "color_by", color_by, COLOR_BY)
    columns = ["item_id", "x", "y", "consensus", "confirmed", "prediction", "confidence", "cluster",
               "disagreement", "n_votes", "hover", "color"]
    run = _resolve_run(store, run_id, "map_frame")
    if run is None:
        return pd.DataFrame(columns=columns)
    preds = _predictions(store, run["id"], with_coords=True)
    preds["cluster"] = _apply_merges(preds["cluster"], cluster_merges(store, run["id"]))
    df = preds.rename(columns={"label": "prediction"})
    cons = _consensus(store).rename(columns={"label": "consensus"})
    df = df.merge(cons[["item_id", "consensus", "confirmed", "n_votes", "agreement"]], on="item_id", how="left")
    df["confirmed"] = df["confirmed"].fillna(False).astype(bool)
    df["n_votes"] = df["n_votes"].fillna(0).astype(np.int64)
    df["disagreement"] = np.where(df["n_votes"].to_numpy() >= 2, 1.0 - df["agreement"].fillna(1.0), 0.0)
    for col in ("consensus", "prediction"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    df["hover"] = _hover(store, df, clusters_only=not suggests_classes(run))
    df["color"] = _color(df, color_by)
    return df[columns].reset_index(drop=True)


def map_version(store: Store, run_id: int) -> tuple:
    """A cache key for :func:`map_frame` of a run that changes whenever its colours may change.

    Counts every annotation and every retraction (an undo adds a retraction, not an annotation), the consensus
    rows and their newest ``updated_at`` (a consensus rewrite by a new method or thresholds touches every row),
    and the run's cluster merges. Predictions of a published run are immutable, so they need no key.
    """
    counts = store.conn.execute(
        "SELECT (SELECT COUNT(*) FROM annotations), (SELECT COUNT(*) FROM retractions), "
        "(SELECT COUNT(*) FROM consensus), (SELECT MAX(updated_at) FROM consensus)").fetchone()
    return (*tuple(counts), tuple(sorted(cluster_merges(store, int(run_id)).items())))


def _hover(store: Store, df: pd.DataFrame, *, clusters_only: bool = False) -> list[str]:
    """A short text per row: the uri or the first 80 characters of the text (caption), prediction, confidence.

    With ``clusters_only`` the prediction is given as "cluster N" (a run that names no class).
    """
    sql = ("SELECT id, uri, replace(replace(replace(substr(text, 1, ?), char(10), ' '), char(13), ' '), char(9), ' ')"
           " FROM items")
    image_text = store.modality == "image+text"
    base: dict[int, str] = {}
    cur = store.conn.cursor()
    cur.row_factory = None
    rows = cur.execute(sql, (HOVER_CHARS + 1,)).fetchall()
    cur.close()
    for item_id, uri, text in rows:  # one pass over the items
        if text and len(text) > HOVER_CHARS:
            text = text[: HOVER_CHARS - 1] + "…"
        name = uri_path(uri)
        base[item_id] = (f"{name} · {text}" if image_text else text) if text else name
    if clusters_only:
        what = [("cluster " + NO_LABEL) if k is pd.NA else ("outlier" if k == OUTLIER else f"cluster {int(k)}")
                for k in df["cluster"].tolist()]
    else:
        what = ["predicted " + (p if isinstance(p, str) else NO_LABEL) for p in df["prediction"].tolist()]
    return [f"{base.get(i, '')} — {w}" + ("" if c != c else f" ({c:.2f})")
            for i, w, c in zip(df["item_id"].tolist(), what, df["confidence"].tolist())]


def _color(df: pd.DataFrame, color_by: str) -> pd.Series:
    if color_by == "consensus":
        return df["consensus"].fillna(NO_LABEL).astype(str)
    if color_by == "prediction":
        return df["prediction"].fillna(NO_LABEL).astype(str)
    if color_by == "cluster":  # -1 is a clustering's outliers (DBSCAN's noise: the reid run's): a group of its own
        names = df["cluster"].astype(str).where(df["cluster"].notna(), NO_LABEL)
        return names.where(names != str(OUTLIER), OUTLIERS)
    return df[color_by].astype(float)
