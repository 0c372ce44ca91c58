"""The Identities page's back end (re-identification): the newest "reid" run's pseudo-identities, the queue of
query items, a query's ranked matches, cluster members and summaries, and naming an identity.

A "reid" run publishes, in its artefact folder (:meth:`core.store.project_store.Store.run_dir`), one row per
item in the order of ``item_ids.npy`` (n,): ``clusters.npy`` (n,) int64, the pseudo-identity (-1: outlier),
``embeddings.npy`` (n, e) float32 unit rows and ``identity_confidence.npy`` (n,) float32 in [0, 1] (0 for
outliers). The camera of each row is its item's ``group`` (None: a project with one camera).

Clusters are shown after the merges made on the Clusters page (:func:`core.views.clusters.cluster_merges`), so
both pages show the same groups. The Identities page's own "merge" and "split" are pair decisions
(:mod:`core.labels.pairs`): must-links and cannot-links that the next re-identification clustering respects.

Every nearest-neighbour search goes through faiss (:class:`core.features.neighbours.NeighbourIndex`, cosine).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from core.errors import StoreError, ValidationError, check_param, is_int
from core.features.neighbours import NeighbourIndex
from core.store.project_store import Store, validate_annotator_name, validate_label_name
from core.views.clusters import cluster_merges

__all__ = ["REID_MODEL", "OUTLIER", "IdentityRun", "Match", "ClusterRow", "load_identity_run", "identity_queue",
           "ranked_matches", "cluster_members", "cluster_summary", "run_report", "retrain_params", "name_identity"]

REID_MODEL = "reid"
OUTLIER = -1
"""The cluster id of an item the re-identification clustering left alone."""
_FILES = ("item_ids.npy", "clusters.npy", "embeddings.npy", "identity_confidence.npy")
_QUEUE_CHUNK = 32  # queue candidates searched at once when checking which are fully decided


@dataclass(frozen=True, eq=False)
class IdentityRun:
    """A published "reid" run's arrays, rows in the order of its ``item_ids.npy``.

    Attributes
    ----------
    run : dict
        The run row (``store.run(...)``).
    item_ids : np.ndarray, shape (n,), int64
    clusters : np.ndarray, shape (n,), int64
        Pseudo-identity of each row after the Clusters page's merges; -1 (:data:`OUTLIER`) for outliers.
    embeddings : np.ndarray, shape (n, e), float32
        Unit rows.
    confidence : np.ndarray, shape (n,), float32
        Identity confidence in [0, 1] (0 for outliers).
    cameras : np.ndarray, shape (n,), object
        Each row's camera (its item's ``group``), None when the item has none.
    camera_codes : np.ndarray, shape (n,), int64
        A code per distinct camera (-1 for None): rows of one camera share a code.
    camera_names : np.ndarray, shape (c,), object
        The camera of each code.
    index : NeighbourIndex
        Cosine faiss index over ``embeddings``.
    """

    run: dict
    item_ids: np.ndarray
    clusters: np.ndarray
    embeddings: np.ndarray
    confidence: np.ndarray
    cameras: np.ndarray
    camera_codes: np.ndarray
    camera_names: np.ndarray
    index: NeighbourIndex
    _order: np.ndarray = field(repr=False)

    @property
    def id(self) -> int:
        return int(self.run["id"])

    @property
    def n(self) -> int:
        return int(len(self.item_ids))

    def rows_of(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row of each item id (m,) -> (m,) int64; -1 for an item the run did not embed."""
        ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        if self.n == 0:
            return np.full(len(ids), -1, np.int64)
        sorted_ids = self.item_ids[self._order]
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, self.n - 1)
        return np.where(sorted_ids[pos] == ids, self._order[pos], -1).astype(np.int64)

    def row_of(self, item_id: int, owner: str = "IdentityRun") -> int:
        """The row of one item id; a ValidationError when the run did not embed it."""
        ok = is_int(item_id)
        row = int(self.rows_of([int(item_id)])[0]) if ok else -1
        check_param(owner, "item_id", item_id, row >= 0, f"the id of an item embedded by reid run {self.id}")
        return row


class Match(NamedTuple):
    """One ranked match of a query: the item, its cosine similarity to the query, its camera, whether that is the
    query's camera, and its pseudo-identity."""

    item_id: int
    score: float
    camera: str | None
    same_camera: bool
    cluster: int


class ClusterRow(NamedTuple):
    """One pseudo-identity: its id (-1: the outliers), size, certainty (mean identity confidence of its members)
    and the distinct cameras of its members (sorted; items without a camera left out)."""

    cluster: int
    size: int
    certainty: float
    cameras: tuple[str, ...]


# ---------------------------------------------------------------------------------------------- loading
def load_identity_run(store: Store, run_id: int | None = None) -> IdentityRun | None:
    """The arrays of a "reid" run (the newest one when ``run_id`` is None); None when the project has none.

    Raises
    ------
    ValidationError
        ``run_id`` names no run, or a run of another model.
    StoreError
        The run's folder lacks one of its arrays or they disagree in shape.
    """
    owner = "load_identity_run"
    if run_id is None:
        run = store.run(model=REID_MODEL)
        if run is None:
            return None
    else:
        check_param(owner, "run_id", run_id, is_int(run_id), "the id (an int) of a reid run")
        run = store.run(int(run_id))
        check_param(owner, "run_id", run_id, run["model"] == REID_MODEL,
                    f"the id of a {REID_MODEL!r} run (run {run_id} is a {run['model']!r} run)")
    ids, clusters, emb, conf = _read_arrays(store, run)
    clusters = _merged(clusters, cluster_merges(store, run["id"]))
    by_id = {it.id: it.group for it in store.items(ids.tolist())}
    cameras = np.array([by_id.get(int(i)) for i in ids], dtype=object)
    codes, names = pd.factorize(pd.Series(cameras, dtype=object), use_na_sentinel=True)
    return IdentityRun(run=run, item_ids=ids, clusters=clusters, embeddings=emb, confidence=conf, cameras=cameras,
                       camera_codes=codes.astype(np.int64), camera_names=np.asarray(names, dtype=object),
                       index=NeighbourIndex(emb, metric="cosine"), _order=np.argsort(ids, kind="stable"))


def _read_arrays(store: Store, run: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """item_ids (n,) int64, clusters (n,) int64, embeddings (n, e) float32, confidence (n,) float32."""
    folder = store.run_dir(run)
    try:
        ids, clusters, emb, conf = (np.load(folder / name, allow_pickle=False) for name in _FILES)
    except (OSError, ValueError) as exc:
        raise StoreError(f"Reid run {run['id']}: cannot read {', '.join(_FILES)} in {folder} "
                         f"({type(exc).__name__}: {exc}); retrain to publish a complete run.") from exc
    n = len(ids)
    ok = (ids.ndim == 1 and clusters.shape == (n,) and conf.shape == (n,) and emb.ndim == 2 and emb.shape[0] == n
          and np.issubdtype(clusters.dtype, np.integer) and emb.shape[1] >= 1)
    if not ok:
        raise StoreError(f"Reid run {run['id']}: the arrays in {folder} disagree: item_ids {ids.shape}, clusters "
                         f"{clusters.shape} {clusters.dtype}, embeddings {emb.shape}, identity_confidence "
                         f"{conf.shape}; each must have one row per item.")
    return (ids.astype(np.int64), clusters.astype(np.int64), np.ascontiguousarray(emb, dtype=np.float32),
            np.clip(conf.astype(np.float32), 0.0, 1.0))


def _merged(clusters: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Cluster ids (n,) after the merges ``{original: merged}`` (one vectorised pass per merge)."""
    out = clusters.copy()
    for orig, target in mapping.items():
        out[clusters == orig] = target
    return out


# ---------------------------------------------------------------------------------------------- matches
def _neighbour_rows(run: IdentityRun, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of each of ``rows`` (q,), the row itself left out.

    Returns
    -------
    scores : np.ndarray, shape (q, min(k, n - 1)), float32
    neighbours : np.ndarray, shape (q, min(k, n - 1)), int64
    """
    k = min(int(k), run.n - 1)
    if k <= 0 or len(rows) == 0:
        return np.zeros((len(rows), max(k, 0)), np.float32), np.zeros((len(rows), max(k, 0)), np.int64)
    scores, nbrs = run.index.search(run.index.vectors(rows), k + 1)
    not_self = nbrs != rows[:, None]
    # keep the first k non-self entries of each row (a duplicate vector may rank above the row itself)
    keep = not_self & (np.cumsum(not_self, axis=1) <= k)
    return scores[keep].reshape(len(rows), k), nbrs[keep].reshape(len(rows), k)


def ranked_matches(run: IdentityRun, query_item: int, k: int = 10) -> list[Match]:
    """The ``k`` items most similar to the query (cosine on the run's embeddings), the other cameras' first.

    Parameters
    ----------
    run : IdentityRun
    query_item : int
        An item id embedded by the run; it is never among its matches.
    k : int
        Matches (1 .. 100): the ``k`` nearest items, then reordered in two blocks, the items of other cameras
        and then those of the query's camera, each block by descending score.

    Returns
    -------
    list of Match
        At most ``k`` (fewer when the run has fewer other items).
    """
    owner = "ranked_matches"
    check_param(owner, "k", k, is_int(k) and 1 <= k <= 100, "an int in [1, 100]")
    row = run.row_of(query_item, owner)
    scores, nbrs = _neighbour_rows(run, np.array([row], dtype=np.int64), int(k))
    scores, nbrs = scores[0], nbrs[0]
    same = run.camera_codes[nbrs] == run.camera_codes[row]
    order = np.lexsort((-scores, same))  # other cameras first; faiss already ranks each block by score
    return [Match(int(run.item_ids[nbrs[j]]), float(scores[j]), run.cameras[nbrs[j]], bool(same[j]),
                  int(run.clusters[nbrs[j]])) for j in order]


# ---------------------------------------------------------------------------------------------- the queue
def _queue_order(run: IdentityRun) -> np.ndarray:
    """Rows (n,) in queue order: clusters by ascending certainty (mean confidence of their members), members of
    one cluster by ascending confidence; then the outliers by ascending confidence; ties by item id."""
    outlier = run.clusters == OUTLIER
    uniq, inv = np.unique(run.clusters, return_inverse=True)
    certainty = (np.bincount(inv, weights=run.confidence, minlength=len(uniq))
                 / np.maximum(np.bincount(inv, minlength=len(uniq)), 1))[inv]
    group_key = np.where(outlier, run.confidence, certainty)
    cluster_key = np.where(outlier, 0, run.clusters)
    return np.lexsort((run.item_ids, run.confidence, cluster_key, group_key, outlier))


def _decided_pairs(store: Store, annotator: str, item_ids: np.ndarray) -> np.ndarray:
    """Pairs (m, 2) int64 (smaller id first) the annotator has an active decision on, touching ``item_ids``."""
    rows = [(r["item_a"], r["item_b"]) for r in store.active_pair_votes([int(i) for i in item_ids])
            if r["annotator"] == annotator]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def _fully_decided(store: Store, run: IdentityRun, annotator: str, rows: np.ndarray, k: int) -> np.ndarray:
    """Whether the annotator decided every one of the ``k`` nearest matches of each of ``rows`` (q,) -> (q,)."""
    _, nbrs = _neighbour_rows(run, rows, k)
    if nbrs.shape[1] == 0:
        return np.ones(len(rows), bool)
    q_ids = np.repeat(run.item_ids[rows], nbrs.shape[1])
    m_ids = run.item_ids[nbrs].reshape(-1)
    decided = _decided_pairs(store, annotator, run.item_ids[rows])
    if len(decided) == 0:
        return np.zeros(len(rows), bool)
    width = int(max(run.item_ids.max(initial=0), decided.max(initial=0))) + 1
    want = np.minimum(q_ids, m_ids) * width + np.maximum(q_ids, m_ids)
    have = decided[:, 0] * width + decided[:, 1]
    return np.isin(want, have).reshape(len(rows), -1).all(axis=1)


def identity_queue(store: Store, run: IdentityRun, annotator: str, *, k: int = 10, limit: int = 50,
                   exclude: Sequence[int] = ()) -> list[int]:
    """Query item ids for ``annotator``, the least certain identities first.

    Order: clusters by ascending certainty (the mean identity confidence of their members), within a cluster its
    least confident member first; the outliers after every cluster, by ascending confidence. Left out: the items
    in ``exclude`` (the queries the page already showed: used as a query) and the items whose ``k`` ranked
    matches the annotator has all decided (fully decided; read from the store, so this holds across sessions).

    Parameters
    ----------
    k : int
        Matches per query, as the page shows them (1 .. 100).
    limit : int
        At most this many ids (>= 1); candidates are checked in chunks, so a long queue stays cheap.
    exclude : sequence of int

    Returns
    -------
    list of int
        Up to ``limit`` item ids.
    """
    owner = "identity_queue"
    annotator = validate_annotator_name(annotator)
    check_param(owner, "k", k, is_int(k) and 1 <= k <= 100, "an int in [1, 100]")
    check_param(owner, "limit", limit, is_int(limit) and limit >= 1, "an int >= 1")
    order = _queue_order(run)
    if len(exclude):
        order = order[~np.isin(run.item_ids[order], np.asarray(list(exclude), dtype=np.int64))]
    out: list[int] = []
    for start in range(0, len(order), _QUEUE_CHUNK):
        chunk = order[start:start + _QUEUE_CHUNK]
        keep = chunk[~_fully_decided(store, run, annotator, chunk, int(k))]
        out.extend(int(i) for i in run.item_ids[keep])
        if len(out) >= limit:
            break
    return out[:limit]


# ---------------------------------------------------------------------------------------------- clusters
def cluster_members(run: IdentityRun, cluster: int, *, limit: int | None = None) -> list[int]:
    """Item ids of a pseudo-identity (``-1``: the outliers), most confident first (ties by item id).

    ``limit`` (an int >= 1, or None for all) keeps the first ``limit`` of them.
    """
    owner = "cluster_members"
    check_param(owner, "cluster", cluster, is_int(cluster), "a cluster id (an int)")
    check_param(owner, "limit", limit, limit is None or (is_int(limit) and limit >= 1), "an int >= 1 or None")
    rows = np.flatnonzero(run.clusters == int(cluster))
    check_param(owner, "cluster", cluster, len(rows) > 0, f"a cluster of reid run {run.id}")
    rows = rows[np.lexsort((run.item_ids[rows], -run.confidence[rows]))]
    return [int(i) for i in run.item_ids[rows[:limit]]]


def cluster_summary(run: IdentityRun) -> list[ClusterRow]:
    """One row per pseudo-identity, by cluster id, the outliers (``-1``) last."""
    uniq, inv, size = np.unique(run.clusters, return_inverse=True, return_counts=True)
    certainty = np.bincount(inv, weights=run.confidence, minlength=len(uniq)) / np.maximum(size, 1)
    known = run.camera_codes >= 0
    seen = np.unique(np.stack([inv[known], run.camera_codes[known]], axis=1), axis=0)  # (cluster row, camera)
    cams: dict[int, list[str]] = {}
    for j, code in seen.tolist():  # one entry per (cluster, camera), not per item
        cams.setdefault(j, []).append(str(run.camera_names[code]))
    rows = [ClusterRow(int(u), int(s), float(m), tuple(sorted(cams.get(j, ())))) for j, (u, s, m) in
            enumerate(zip(uniq, size, certainty))]
    return sorted(rows, key=lambda r: (r.cluster == OUTLIER, r.cluster))


# ---------------------------------------------------------------------------------------------- report
def run_report(run: IdentityRun) -> dict[str, Any]:
    """What the page shows of the run: clusters, outliers (from the run's report ``metrics["reid"]["pseudo"]``,
    else counted from its arrays), must_links and cannot_links (``metrics["reid"]["links"]``; None when absent)."""
    metrics = run.run.get("metrics") if isinstance(run.run.get("metrics"), dict) else {}
    report = metrics.get(REID_MODEL) if isinstance(metrics.get(REID_MODEL), dict) else {}
    pseudo = report.get("pseudo") if isinstance(report.get("pseudo"), dict) else {}
    links = report.get("links") if isinstance(report.get("links"), dict) else {}
    counted_clusters = int(len(np.unique(run.clusters[run.clusters != OUTLIER])))
    counted_outliers = int((run.clusters == OUTLIER).sum())
    number = lambda v, default: int(v) if is_int(v) else default  # noqa: E731
    return {"clusters": number(pseudo.get("n_clusters"), counted_clusters),
            "outliers": number(pseudo.get("n_outliers"), counted_outliers),
            "must_links": number(links.get("n_must"), None), "cannot_links": number(links.get("n_cannot"), None)}


def retrain_params(store: Store, run: IdentityRun | None) -> dict:
    """The model parameters to retrain "reid" with: those of the job that trained ``run`` (so a retrain keeps its
    variant and epochs), else ``{}`` (the family's defaults)."""
    from core.jobs import queue as jobs

    job_id = None if run is None else run.run.get("job_id")
    if job_id is None:
        return {}
    try:
        params = jobs.get_job(store, int(job_id))["params"]
    except ValidationError:  # the job row is gone (a project copied without its jobs)
        return {}
    inner = params.get("params") if isinstance(params, dict) else None
    return dict(inner) if isinstance(inner, dict) else {}


def name_identity(store: Store, item_ids: Sequence[int], name: str, *, annotator: str) -> int:
    """Label ``item_ids`` with the identity ``name`` in ONE bulk annotation by ``annotator``; returns the count.

    A new name is added to the project's label set first; the votes go through the consensus like any label
    (one undo, :meth:`core.store.project_store.Store.undo_last`, retracts them). A vote identical to an active
    bulk vote of the annotator is not written again.
    """
    annotator = validate_annotator_name(annotator)
    name = validate_label_name(name)
    ids = sorted({int(i) for i in item_ids})
    check_param("name_identity", "item_ids", list(item_ids), len(ids) > 0, "a non-empty list of item ids")
    store.add_labels([name], by=annotator, permission="merge_identities")
    return len(store.annotate_many([(i, name) for i in ids], annotator=annotator, kind="bulk", skip_existing=True,
                                   permission="merge_identities"))

