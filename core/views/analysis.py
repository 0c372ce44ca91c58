"""Analysis of a project for the analyst pages: the map, pseudo-labels, clusters, disagreements, run comparison.

Pure data functions over the store: each reads a table with one SQL query, works on NumPy arrays or pandas
frames (no per-item Python loops over the whole data set), and writes only through the store
(:meth:`core.store.project_store.Store.annotate_many`), so every action is an ordinary annotation that undo retracts.

Cluster merges
--------------
Runs and predictions are immutable, so merging clusters does not rewrite predictions. The merges are kept
as data in ``<project>/cluster_merges.json``::

    {"<run id>": {"<original cluster>": <merged cluster>, ...}, ...}

written atomically (a temporary file and ``os.replace``). Every function that shows clusters
(:func:`cluster_summary`, :func:`map_frame`, :func:`cluster_members`, :func:`label_cluster`) uses the merged
ids; :func:`effective_clusters` returns them.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from core.errors import ValidationError, check_choice, check_param
from core.labels.votes import VOTE_KINDS, latest_per_item
from core.store.project_store import Store, uri_path, validate_annotator_name

COLOR_BY = ("consensus", "prediction", "confidence", "cluster", "disagreement")
"""Valid ``color_by`` values of :func:`map_frame`; confidence and disagreement are continuous."""
N_BINS = 20
MERGES_FILE = "cluster_merges.json"
NO_LABEL = "(none)"
HOVER_CHARS = 80

_PRED_COLS = ["item_id", "label", "confidence", "cluster", "x", "y"]
_CONS_COLS = ["item_id", "label", "confirmed", "n_votes", "agreement", "method"]


# ---------------------------------------------------------------------------------------------- reading
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


# ---------------------------------------------------------------------------------------------- merges
def _merges_path(store: Store) -> Path:
    return store.dir / MERGES_FILE


def _read_all_merges(store: Store) -> dict[str, dict[str, int]]:
    path = _merges_path(store)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"The cluster merges file {str(path)!r} is not valid JSON ({exc}); fix or remove it.")
    return data if isinstance(data, dict) else {}


def _write_all_merges(store: Store, data: dict[str, dict[str, int]]) -> None:
    path = _merges_path(store)
    fd, tmp = tempfile.mkstemp(prefix=".cluster_merges.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _merges_lock(store: Store) -> Iterator[None]:
    """An advisory lock around read-modify-write of the merges file (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(store.dir / (MERGES_FILE + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cluster_merges(store: Store, run_id: int) -> dict[int, int]:
    """The merges of a run: {original cluster: merged cluster}, chains resolved (empty when none)."""
    raw = _read_all_merges(store).get(str(int(run_id)), {})
    mapping = {int(k): int(v) for k, v in raw.items()}
    return {c: _follow(mapping, c) for c in mapping}


def _follow(mapping: dict[int, int], c: int) -> int:
    seen = {c}
    while c in mapping and mapping[c] != c:
        c = mapping[c]
        if c in seen:  # a cycle in a hand-edited file: stop at the smallest id of it
            return min(seen)
        seen.add(c)
    return c


def _apply_merges(clusters: pd.Series, mapping: dict[int, int]) -> pd.Series:
    """Map original cluster ids (n,) (nullable Int64) to merged ids; ids without a merge are kept."""
    if not mapping:
        return clusters
    missing = clusters.isna().to_numpy()
    before = clusters.to_numpy(dtype=np.int64, na_value=0)
    after = before.copy()
    for orig, target in mapping.items():  # a handful of merges: one vectorised pass each
        after[before == orig] = target
    return pd.Series(pd.arrays.IntegerArray(after, missing), index=clusters.index, name=clusters.name)


def effective_clusters(store: Store, run_id: int | None = None) -> pd.Series:
    """Cluster of each item of a run after merges.

    Returns
    -------
    pandas.Series
        Int64 values indexed by item id (ascending), named ``cluster``; items without a cluster are left out.
        ``s[item_id]`` and ``s.to_dict()`` give the dict view.
    """
    run = _require_run(store, run_id, "effective_clusters")
    preds = _predictions(store, run["id"])
    preds = preds[preds["cluster"].notna()]
    out = _apply_merges(preds["cluster"], cluster_merges(store, run["id"]))
    return pd.Series(out.to_numpy(), index=preds["item_id"].to_numpy(), name="cluster", dtype="Int64")


def merge_clusters(store: Store, run_id: int, clusters: Sequence[int]) -> int:
    """Merge clusters of a run (ids as currently shown, i.e. after earlier merges) into the smallest id.

    Returns the target cluster id.
    """
    owner = "merge_clusters"
    run = _require_run(store, run_id, owner)
    ok = isinstance(clusters, (list, tuple, set, np.ndarray, pd.Series)) and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in clusters)
    check_param(owner, "clusters", clusters, ok, "a list of cluster ids (ints)")
    wanted = sorted({int(c) for c in clusters})
    check_param(owner, "clusters", clusters, len(wanted) >= 2, "a list of at least two different cluster ids")
    present = set(effective_clusters(store, run["id"]).unique().tolist())
    missing = [c for c in wanted if c not in present]
    check_param(owner, "clusters", missing if len(missing) > 1 else (missing[0] if missing else None),
                not missing, f"clusters of run {run['id']} ({sorted(present)})")
    target = wanted[0]
    with _merges_lock(store):
        data = _read_all_merges(store)
        key = str(run["id"])
        current = cluster_merges(store, run["id"])
        absorbed = set(wanted[1:])
        mapping = {c: (target if t in absorbed else t) for c, t in current.items()}
        for c in absorbed:
            mapping[c] = target
        data[key] = {str(c): int(t) for c, t in sorted(mapping.items())}
        _write_all_merges(store, data)
    return target


def reset_cluster_merges(store: Store, run_id: int) -> None:
    """Forget every merge of a run (its clusters are shown as the run published them again)."""
    run = _require_run(store, run_id, "reset_cluster_merges")
    with _merges_lock(store):
        data = _read_all_merges(store)
        if data.pop(str(run["id"]), None) is not None:
            _write_all_merges(store, data)


# ---------------------------------------------------------------------------------------------- 1. the map
def map_frame(store: Store, run_id: int | None = None, *, color_by: str = "consensus") -> pd.DataFrame:
    """One row per item of a run that has map coordinates, for the Embeddings page.

    Parameters
    ----------
    run_id : int or None
        The run; None takes the newest (an empty frame when the project has none).
    color_by : {"consensus", "prediction", "confidence", "cluster", "disagreement"}
        What the ``color`` column holds: a label (``"(none)"`` when missing), the confidence (float), the
        merged cluster id as a string (categorical), or the disagreement (float).

    Returns
    -------
    pandas.DataFrame
        n rows (items with x and y), by item id, columns: item_id, x, y, consensus (label or None),
        confirmed (bool), prediction (label or None), confidence, cluster (Int64, after merges), disagreement
        (1 - agreement for items with >= 2 votes, else 0), n_votes, hover (str), color.
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
    df["hover"] = _hover(store, df)
    df["color"] = _color(df, color_by)
    return df[columns].reset_index(drop=True)


def _hover(store: Store, df: pd.DataFrame) -> list[str]:
    """A short text per row: the uri or the first 80 characters of the text (caption), prediction, confidence."""
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
    return [f"{base.get(i, '')} — predicted {p if isinstance(p, str) else NO_LABEL}" + ("" if c != c else f" ({c:.2f})")
            for i, p, c in zip(df["item_id"].tolist(), df["prediction"].tolist(), df["confidence"].tolist())]


def _color(df: pd.DataFrame, color_by: str) -> pd.Series:
    if color_by == "consensus":
        return df["consensus"].fillna(NO_LABEL).astype(str)
    if color_by == "prediction":
        return df["prediction"].fillna(NO_LABEL).astype(str)
    if color_by == "cluster":
        return df["cluster"].astype(str).where(df["cluster"].notna(), NO_LABEL)
    return df[color_by].astype(float)


# ---------------------------------------------------------------------------------------------- 2. pseudo-labels
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
    The votes carry the run id and the confidences; :meth:`Store.undo_last` retracts the whole batch.
    Returns the number of votes written.
    """
    owner = "accept_pseudo_labels"
    annotator = validate_annotator_name(annotator)
    run = _require_run(store, run_id, owner)
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


# ---------------------------------------------------------------------------------------------- 3. clusters
def _cluster_frame(store: Store, run: dict) -> pd.DataFrame:
    """item_id, cluster (after merges), predicted label, confirmed label (or None) of the run's clustered items."""
    preds = _predictions(store, run["id"])
    preds = preds[preds["cluster"].notna()].copy()
    preds["cluster"] = _apply_merges(preds["cluster"], cluster_merges(store, run["id"])).astype(np.int64)
    cons = _consensus(store)
    cons = cons.loc[cons["confirmed"], ["item_id", "label"]].rename(columns={"label": "confirmed_label"})
    return preds[["item_id", "cluster", "label"]].merge(cons, on="item_id", how="left")


def _dominant(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per cluster: the most frequent non-null value of ``column`` (ties: the first by name) and its count."""
    sub = df[df[column].notna()]
    if sub.empty:
        return pd.DataFrame({"cluster": pd.Series(dtype=np.int64), column: pd.Series(dtype=object),
                             "n": pd.Series(dtype=np.int64)})
    counts = sub.groupby(["cluster", column]).size().reset_index(name="n")
    counts = counts.sort_values(["cluster", "n", column], ascending=[True, False, True])
    return counts.drop_duplicates("cluster")


def cluster_label_confusion(store: Store, run_id: int | None = None) -> dict[str, Any]:
    """The run's clusters against the confirmed labels, and the Hungarian cluster -> label mapping.

    Returns
    -------
    dict
        table: DataFrame (clusters x labels) of confirmed-item counts (index = cluster id, after merges);
        mapping: {cluster: label} (the model's own mapping when its run recorded one, as DEC's does,
        else the Hungarian matching of ``table``); source: "model" or "hungarian"; collapse: the model's
        degeneracy report or None; prior: the class prior of DEC's KL(h || w) term ({source, reason, w}) or
        None.
    """
    from core.evaluation.metrics import hungarian_mapping

    run = _resolve_run(store, run_id, "cluster_label_confusion")
    empty = {"table": pd.DataFrame(), "mapping": {}, "source": "hungarian", "collapse": None, "prior": None}
    if run is None:
        return empty
    df = _cluster_frame(store, run)
    conf = df[df["confirmed_label"].notna()]
    labels = store.labels()
    clusters = sorted(df["cluster"].unique().tolist())
    table = pd.crosstab(conf["cluster"], conf["confirmed_label"]).reindex(index=clusters, columns=labels,
                                                                          fill_value=0)
    table.index.name, table.columns.name = "cluster", "confirmed label"
    own = (run["metrics"].get("dec") or {}) if isinstance(run.get("metrics"), dict) else {}
    if own.get("mapping") and not cluster_merges(store, run["id"]):
        mapping = {int(k): v for k, v in own["mapping"].items()}
        source = "model"
    else:
        mapping = hungarian_mapping(conf["confirmed_label"].to_numpy(), conf["cluster"].to_numpy()) if len(conf) else {}
        source = "hungarian"
    return {"table": table, "mapping": mapping, "source": source, "collapse": own.get("collapse"),
            "prior": own.get("prior")}


def cluster_summary(store: Store, run_id: int | None = None) -> pd.DataFrame:
    """One row per cluster of a run (after merges), by cluster id.

    Returns
    -------
    pandas.DataFrame
        Columns: cluster, size, confirmed (number of confirmed items), confirmed_label (dominant confirmed
        label or None), purity (its share among the confirmed items; NaN when none), predicted_label
        (dominant predicted label), predicted_share (its share of the cluster), merged_from (the original
        clusters, e.g. "1, 4", or "" when not merged). Empty when the run has no clusters (or there is no run).
    """
    columns = ["cluster", "size", "confirmed", "confirmed_label", "purity", "predicted_label", "predicted_share",
               "merged_from"]
    run = _resolve_run(store, run_id, "cluster_summary")
    if run is None:
        return pd.DataFrame(columns=columns)
    df = _cluster_frame(store, run)
    if df.empty:
        return pd.DataFrame(columns=columns)
    out = df.groupby("cluster").agg(size=("item_id", "size"), confirmed=("confirmed_label", "count")).reset_index()
    conf = _dominant(df, "confirmed_label").rename(columns={"n": "n_conf"})
    pred = _dominant(df, "label").rename(columns={"label": "predicted_label", "n": "n_pred"})
    out = out.merge(conf, on="cluster", how="left").merge(pred, on="cluster", how="left")
    out["purity"] = np.where(out["confirmed"] > 0, out["n_conf"].fillna(0) / out["confirmed"].clip(lower=1), np.nan)
    out["predicted_share"] = out["n_pred"].fillna(0) / out["size"]
    for col in ("confirmed_label", "predicted_label"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    merged: dict[int, list[int]] = {}
    for orig, target in cluster_merges(store, run["id"]).items():
        merged.setdefault(target, [target]).append(orig)
    out["merged_from"] = out["cluster"].map(lambda c: ", ".join(map(str, sorted(set(merged[c])))) if c in merged else "")
    out["size"] = out["size"].astype(np.int64)
    out["confirmed"] = out["confirmed"].astype(np.int64)
    return out[columns].sort_values("cluster").reset_index(drop=True)


def _members(store: Store, run: dict, cluster: Any, owner: str) -> pd.DataFrame:
    ok = isinstance(cluster, (int, np.integer)) and not isinstance(cluster, bool)
    check_param(owner, "cluster", cluster, ok, "a cluster id (an int)")
    df = _cluster_frame(store, run)
    members = df[df["cluster"] == int(cluster)]
    check_param(owner, "cluster", cluster, not members.empty, f"a cluster of run {run['id']}")
    return members


def cluster_members(store: Store, run_id: int | None, cluster: int, *, limit: int = 12, seed: int = 0) -> list[int]:
    """A reproducible random sample of at most ``limit`` item ids of a (merged) cluster, ascending."""
    owner = "cluster_members"
    limit = _check_limit(owner, limit, allow_none=False)
    run = _require_run(store, run_id, owner)
    ids = _members(store, run, cluster, owner)["item_id"].to_numpy()
    if len(ids) > limit:
        ids = np.random.default_rng(seed).choice(ids, size=limit, replace=False)
    return sorted(int(i) for i in ids)


def label_cluster(
    store: Store,
    run_id: int | None,
    cluster: int,
    label: str,
    *,
    annotator: str,
    only_unconfirmed: bool = True,
) -> int:
    """Label every member of a (merged) cluster in ONE bulk annotation by ``annotator``; returns the count.

    With ``only_unconfirmed`` items whose consensus is confirmed are left alone. A vote identical to an
    active bulk vote of the annotator is not written again.
    """
    owner = "label_cluster"
    annotator = validate_annotator_name(annotator)
    check_choice(owner, "label", label, store.labels())
    run = _require_run(store, run_id, owner)
    members = _members(store, run, cluster, owner)
    if only_unconfirmed:
        members = members[members["confirmed_label"].isna()]
    pairs = [(int(i), label) for i in members["item_id"].to_numpy()]
    if not pairs:
        return 0
    return len(store.annotate_many(pairs, annotator=annotator, kind="bulk", skip_existing=True))


# ---------------------------------------------------------------------------------------------- 5. consensus
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
    cfg = store.consensus_settings()
    if cfg["method"] == "majority":
        return f"majority vote: at least {cfg['min_votes']} agreeing votes and no tie, or an adjudication"
    name = {"dawid_skene": "Dawid-Skene", "model_aware": "model-aware"}[cfg["method"]]
    return f"{name} consensus with posterior at least {cfg['min_confidence']:.2f}, or an adjudication"


def consensus_apply(store: Store, *, method: str, min_votes: int, min_confidence: float,
                    weight_by_confidence: bool) -> dict[str, Any]:
    """Save the Consensus page's choices and refit the method on every vote (one call from the page)."""
    store.set_setting("min_votes", int(min_votes))
    store.set_setting("min_confidence", float(min_confidence))
    store.set_setting("weight_by_confidence", bool(weight_by_confidence))
    return store.refit_consensus(method)


def adjudicate(store: Store, item_id: int, label: str, *, reviewer: str) -> int:
    """Settle an item: an adjudication vote by ``reviewer`` (it overrides the votes); returns its annotation id."""
    return store.annotate(int(item_id), reviewer, label, kind="adjudication")


# ---------------------------------------------------------------------------------------------- 6. runs
def compare_runs(store: Store, run_a: int, run_b: int) -> dict[str, Any]:
    """How predictions changed from run ``run_a`` to run ``run_b`` on the items both predicted.

    Returns
    -------
    dict
        run_a, run_b; n_common (items with a predicted label in both); changed (their number whose label
        differs) and changed_share (changed / n_common, 0 when none); only_a, only_b (items predicted by one
        run only); mean_confidence_a, mean_confidence_b (over the common items; NaN when none);
        per_class: DataFrame with class, count_a, count_b, changed_from (predicted as the class in a and
        another in b), changed_to (another in a, the class in b); transitions: DataFrame crosstab a -> b.
    """
    owner = "compare_runs"
    for name, value in (("run_a", run_a), ("run_b", run_b)):
        check_param(owner, name, value, value is not None, "the id of a run of this project")
    ra = _require_run(store, run_a, owner, "run_a")
    rb = _require_run(store, run_b, owner, "run_b")
    a = _predictions(store, ra["id"])
    b = _predictions(store, rb["id"])
    a, b = a[a["label"].notna()], b[b["label"].notna()]
    both = a[["item_id", "label", "confidence"]].merge(b[["item_id", "label", "confidence"]], on="item_id",
                                                          suffixes=("_a", "_b"))
    changed = both["label_a"].to_numpy(dtype=object) != both["label_b"].to_numpy(dtype=object)
    classes = _run_classes(ra, both["label_a"], both["label_b"])
    for c in rb.get("classes") or []:
        if c not in classes:
            classes.append(c)
    per_class = pd.DataFrame({
        "class": classes,
        "count_a": both["label_a"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
        "count_b": both["label_b"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
        "changed_from": both.loc[changed, "label_a"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
        "changed_to": both.loc[changed, "label_b"].value_counts().reindex(classes, fill_value=0).to_numpy(np.int64),
    })
    n = int(len(both))
    mean = lambda s: float(s.mean()) if n and s.notna().any() else float("nan")  # noqa: E731
    return {
        "run_a": ra["id"], "run_b": rb["id"], "n_common": n, "changed": int(changed.sum()),
        "changed_share": float(changed.sum() / n) if n else 0.0,
        "only_a": int((~a["item_id"].isin(both["item_id"])).sum()),
        "only_b": int((~b["item_id"].isin(both["item_id"])).sum()),
        "mean_confidence_a": mean(both["confidence_a"]), "mean_confidence_b": mean(both["confidence_b"]),
        "per_class": per_class,
        "transitions": pd.crosstab(both["label_a"], both["label_b"]).reindex(index=classes, columns=classes,
                                                                           fill_value=0),
    }


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
