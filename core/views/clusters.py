"""The Clusters page's back end: cluster summaries, members, the cluster/label confusion, merges, and
labelling a whole cluster.

Cluster merges
--------------
Runs and predictions are immutable, so merging clusters does not rewrite predictions. The merges are rows
of the ``cluster_merges`` table (see :mod:`core.store.cluster_merges`), written in one store transaction; a
reset marks the run's rows as reset and keeps them. Every function that shows clusters
(:func:`cluster_summary`, :func:`core.views.map.map_frame`, :func:`cluster_members`, :func:`label_cluster`)
uses the merged ids; :func:`effective_clusters` returns them.

Levels
------
A clustering family may also save an overclustering: ``overclusters.npy`` in the run folder, one cluster per
item (n,) int, rows in the order of the folder's ``item_ids.npy`` (IIC's overclustering head). Then
:func:`cluster_levels` is ``["main", "over"]`` and :func:`cluster_summary`, :func:`cluster_label_confusion`,
:func:`cluster_members` and :func:`label_cluster` take ``level="over"`` to work on it. Merges apply to the
main level only.

The family's own report
-----------------------
A family's report is ``run["metrics"][run["model"]]`` (``"dec"``, ``"iic"``). Its ``collapse`` entry
(:func:`core.models.cluster_report.collapse_report`) carries ``advice``, a list of what to try, which the
page shows with the reasons.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.errors import StoreError, check_choice, check_param
from core.store import cluster_merges as merges_store
from core.store.project_store import Store, validate_annotator_name
from core.views.common import _check_limit, _consensus, _predictions, _require_run, _resolve_run, suggests_classes


LEVELS = ("main", "over")
OVER_FILE = "overclusters.npy"


# ---------------------------------------------------------------------------------------------- levels
def cluster_levels(store: Store, run_id: int | None = None) -> list[str]:
    """The levels a run can be shown at: ``["main", "over"]`` when its folder has ``overclusters.npy``,
    else ``["main"]`` (also ``["main"]`` when the project has no run)."""
    run = _resolve_run(store, run_id, "cluster_levels")
    if run is None:
        return ["main"]
    return list(LEVELS) if (store.run_dir(run) / OVER_FILE).is_file() else ["main"]


def _check_level(store: Store, run: dict | None, level: Any, owner: str) -> str:
    """``level`` when it is one of :data:`LEVELS` and the run has it, else a ValidationError naming it."""
    check_choice(owner, "level", level, LEVELS)
    if level == "over" and run is not None:
        check_param(owner, "level", level, (store.run_dir(run) / OVER_FILE).is_file(),
                    f"'main': run {run['id']} has no {OVER_FILE} (its family saved no overclustering)")
    return level


def _overclusters(store: Store, run: dict) -> pd.DataFrame:
    """item_id, cluster of the run's overclustering (rows of ``overclusters.npy`` follow ``item_ids.npy``)."""
    folder = store.run_dir(run)
    try:
        over = np.load(folder / OVER_FILE, allow_pickle=False)
        ids = np.load(folder / "item_ids.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"Run {run['id']}: cannot read {OVER_FILE} with item_ids.npy in {folder} "
                         f"({type(exc).__name__}: {exc}).") from exc
    if over.ndim != 1 or ids.shape != over.shape or not np.issubdtype(over.dtype, np.integer):
        raise StoreError(f"Run {run['id']}: {OVER_FILE} {over.shape} {over.dtype} must hold one int per row of "
                         f"item_ids.npy {ids.shape} in {folder}.")
    return pd.DataFrame({"item_id": ids.astype(np.int64), "cluster": over.astype(np.int64)})


def family_report(run: dict) -> dict:
    """The run's family report ``run["metrics"][run["model"]]`` ({} when absent)."""
    metrics = run.get("metrics") if isinstance(run.get("metrics"), dict) else {}
    own = metrics.get(run.get("model"))
    return own if isinstance(own, dict) else {}


# ---------------------------------------------------------------------------------------------- merges
def cluster_merges(store: Store, run_id: int) -> dict[int, int]:
    """The merges of a run: {original cluster: merged cluster}, chains resolved (empty when none)."""
    mapping: dict[int, int] = {}
    for cluster, into in merges_store.active_merges(store, int(run_id)):
        mapping[cluster] = into  # a later merge of the same cluster wins
    return {c: _follow(mapping, c) for c in mapping}


def _follow(mapping: dict[int, int], c: int) -> int:
    seen = {c}
    while c in mapping and mapping[c] != c:
        c = mapping[c]
        if c in seen:  # a cycle (imported from a hand-edited file): stop at the smallest id of it
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


def merge_clusters(store: Store, run_id: int, clusters: Sequence[int], *, merged_by: str | None = None,
                   level: str = "main") -> int:
    """Merge clusters of a run (ids as currently shown, i.e. after earlier merges) into the smallest id.

    ``merged_by`` (an annotator name, optional) is recorded with the merge. Returns the target cluster id.
    Only the main level can be merged: ``level="over"`` is refused.
    """
    owner = "merge_clusters"
    check_choice(owner, "level", level, LEVELS)
    check_param(owner, "level", level, level == "main",
                "'main': merges apply to the main clusters only, the overclustering cannot be merged")
    run = _require_run(store, run_id, owner)
    ok = isinstance(clusters, (list, tuple, set, np.ndarray, pd.Series)) and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in clusters)
    check_param(owner, "clusters", clusters, ok, "a list of cluster ids (ints)")
    wanted = sorted({int(c) for c in clusters})
    check_param(owner, "clusters", clusters, len(wanted) >= 2, "a list of at least two different cluster ids")
    if merged_by is not None:
        ok = isinstance(merged_by, str) and 0 < len(merged_by.strip()) <= 100
        check_param(owner, "merged_by", merged_by, ok, "an annotator name (1 to 100 characters) or None")
        merged_by = merged_by.strip()
    present = set(effective_clusters(store, run["id"]).unique().tolist())
    missing = [c for c in wanted if c not in present]
    check_param(owner, "clusters", missing if len(missing) > 1 else (missing[0] if missing else None),
                not missing, f"clusters of run {run['id']} ({sorted(present)})")
    target = wanted[0]
    merges_store.add_merges(store, run["id"], [(c, target) for c in wanted[1:]], merged_by=merged_by)
    return target


def reset_cluster_merges(store: Store, run_id: int, *, by: str | None = None) -> None:
    """Forget every merge of a run (its clusters are shown as the run published them again); ``by`` is who."""
    run = _require_run(store, run_id, "reset_cluster_merges")
    merges_store.reset_merges(store, run["id"], by=by)


# ---------------------------------------------------------------------------------------------- clusters
def _cluster_frame(store: Store, run: dict, level: str = "main") -> pd.DataFrame:
    """item_id, cluster (main: after merges; over: from ``overclusters.npy``), predicted label, confirmed
    label (or None) of the run's clustered items."""
    preds = _predictions(store, run["id"])
    if level == "over":
        preds = _overclusters(store, run).merge(preds[["item_id", "label"]], on="item_id", how="left")
    else:
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


def cluster_label_confusion(store: Store, run_id: int | None = None, *, level: str = "main") -> dict[str, Any]:
    """The run's clusters against the confirmed labels, and the Hungarian cluster -> label mapping.

    Returns
    -------
    dict
        table: DataFrame (clusters x labels) of confirmed-item counts (index = cluster id, after merges at
        the main level; k_over rows at the over level); mapping: {cluster: label} (the model's own mapping
        when its run recorded one, as DEC's does, the run had confirmed labels to map with and ``level`` is
        main, else the Hungarian matching of ``table``: at the over level it maps at most one overcluster
        per class, the summary's dominant label names the others); source: "model" or "hungarian";
        collapse: the family report's degeneracy report (with its ``advice`` list) or None; prior: the class
        prior of DEC's KL(h || w) term ({source, reason, w}) or None.
    """
    from core.evaluation.metrics import hungarian_mapping

    owner = "cluster_label_confusion"
    run = _resolve_run(store, run_id, owner)
    level = _check_level(store, run, level, owner)
    empty = {"table": pd.DataFrame(), "mapping": {}, "source": "hungarian", "collapse": None, "prior": None}
    if run is None:
        return empty
    df = _cluster_frame(store, run, level)
    conf = df[df["confirmed_label"].notna()]
    labels = store.labels()
    clusters = sorted(df["cluster"].unique().tolist())
    table = pd.crosstab(conf["cluster"], conf["confirmed_label"]).reindex(index=clusters, columns=labels,
                                                                          fill_value=0)
    table.index.name, table.columns.name = "cluster", "confirmed label"
    own = family_report(run)
    if level == "main" and own.get("mapping") and suggests_classes(run) and not cluster_merges(store, run["id"]):
        mapping = {int(k): v for k, v in own["mapping"].items()}
        source = "model"
    else:
        mapping = hungarian_mapping(conf["confirmed_label"].to_numpy(), conf["cluster"].to_numpy()) if len(conf) else {}
        source = "hungarian"
    return {"table": table, "mapping": mapping, "source": source, "collapse": own.get("collapse"),
            "prior": own.get("prior")}


def cluster_summary(store: Store, run_id: int | None = None, *, level: str = "main") -> pd.DataFrame:
    """One row per cluster of a run (after merges; per overcluster with ``level="over"``), by cluster id.

    Returns
    -------
    pandas.DataFrame
        Columns: cluster, size, confirmed (number of confirmed items), confirmed_label (dominant confirmed
        label or None), purity (its share among the confirmed items; NaN when none), predicted_label
        (dominant predicted label), predicted_share (its share of the cluster), merged_from (the original
        clusters, e.g. "1, 4", or "" when not merged; always "" at the over level). Empty when the run has
        no clusters (or there is no run).
    """
    columns = ["cluster", "size", "confirmed", "confirmed_label", "purity", "predicted_label", "predicted_share",
               "merged_from"]
    owner = "cluster_summary"
    run = _resolve_run(store, run_id, owner)
    level = _check_level(store, run, level, owner)
    if run is None:
        return pd.DataFrame(columns=columns)
    df = _cluster_frame(store, run, level)
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
    for orig, target in (cluster_merges(store, run["id"]).items() if level == "main" else ()):
        merged.setdefault(target, [target]).append(orig)
    out["merged_from"] = out["cluster"].map(lambda c: ", ".join(map(str, sorted(set(merged[c])))) if c in merged else "")
    out["size"] = out["size"].astype(np.int64)
    out["confirmed"] = out["confirmed"].astype(np.int64)
    return out[columns].sort_values("cluster").reset_index(drop=True)


def _members(store: Store, run: dict, cluster: Any, owner: str, level: str) -> pd.DataFrame:
    ok = isinstance(cluster, (int, np.integer)) and not isinstance(cluster, bool)
    check_param(owner, "cluster", cluster, ok, "a cluster id (an int)")
    df = _cluster_frame(store, run, level)
    members = df[df["cluster"] == int(cluster)]
    where = "an overcluster" if level == "over" else "a cluster"
    check_param(owner, "cluster", cluster, not members.empty, f"{where} of run {run['id']}")
    return members


def cluster_members(store: Store, run_id: int | None, cluster: int, *, limit: int = 12, seed: int = 0,
                    level: str = "main") -> list[int]:
    """A reproducible random sample of at most ``limit`` item ids of a (merged) cluster, ascending
    (of an overcluster with ``level="over"``)."""
    owner = "cluster_members"
    limit = _check_limit(owner, limit, allow_none=False)
    run = _require_run(store, run_id, owner)
    level = _check_level(store, run, level, owner)
    ids = _members(store, run, cluster, owner, level)["item_id"].to_numpy()
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
    level: str = "main",
) -> int:
    """Label every member of a (merged) cluster in ONE bulk annotation by ``annotator``; returns the count.

    With ``only_unconfirmed`` items whose consensus is confirmed are left alone. A vote identical to an
    active bulk vote of the annotator is not written again. ``level="over"`` labels an overcluster.
    """
    owner = "label_cluster"
    annotator = validate_annotator_name(annotator)
    check_choice(owner, "label", label, store.labels())
    run = _require_run(store, run_id, owner)
    level = _check_level(store, run, level, owner)
    members = _members(store, run, cluster, owner, level)
    if only_unconfirmed:
        members = members[members["confirmed_label"].isna()]
    pairs = [(int(i), label) for i in members["item_id"].to_numpy()]
    if not pairs:
        return 0
    return len(store.annotate_many(pairs, annotator=annotator, kind="bulk", skip_existing=True))
