"""Pseudo-identities: DBSCAN on a sparse precomputed distance (the k-reciprocal Jaccard) with annotators' links.

scikit-learn's ``DBSCAN(metric="precomputed")`` on a sparse matrix takes only the stored entries as candidate
neighbours (``<= eps``); an absent entry is "not a neighbour", so a zero distance must be stored explicitly. Here
the graph handed to DBSCAN holds the entries ``<= eps`` of ``D`` (nothing farther can matter), the diagonal as
explicit zeros, every must-linked pair at an explicit 0 and no cannot-linked pair. "Within eps" allows
:data:`EPS_TOLERANCE` above ``eps``: the Jaccard distance has exact ties at round values such as 0.5, which
float32 rounding would otherwise put on either side of the radius (0.49999994 or 0.50000006) depending on the
order of a sum.

After DBSCAN (``-1`` = outlier):

* **must-links**: the clusters that a chain of must-links joins are merged into one, an outlier must-linked to a
  clustered item is pulled into its cluster, and must-linked items that are all outliers form a cluster of their
  own (items joined by a chain of must-links, "units", always end in one cluster);
* **cannot-links**: a cluster holding a cannot-linked pair (a, b) is split in two: every unit of the cluster goes
  to the side of the anchor it is nearer to, by shortest-path distance through the cluster's own graph (edges of
  ``D`` within ``eps``; DBSCAN clusters are connected through such edges), the units of a and b to their own sides,
  ties and units reachable from neither to a's side. This repeats until no cluster holds a cannot-linked pair;
  each split separates one more pair and nothing merges afterwards, so it ends within ``len(cannot_link)`` splits.

A cannot-link between two items that a chain of must-links joins is a contradiction: it raises
:class:`core.errors.ValidationError` naming the two items and the chain.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra, shortest_path

from core.errors import check_param
from core.models.reid.jaccard import JaccardDistances

OWNER = "dbscan_pseudo_labels"
#: added to every edge of a split's path search so that must-link (zero) edges count as edges in any scipy
PATH_EPS = 1e-9
#: distances up to ``eps + EPS_TOLERANCE`` are within ``eps``: the Jaccard distance has exact ties at round values
#: (0.5 between items with the same neighbourhood structure) that float32 rounding puts on either side of ``eps``
EPS_TOLERANCE = 1e-6

Pairs = Iterable[Sequence[int]]


@dataclass(frozen=True)
class PseudoLabels:
    """The result of :func:`constrained_dbscan`.

    Attributes
    ----------
    labels : np.ndarray, shape (n,), int64
        Cluster of each item, ``0 .. n_clusters - 1`` numbered by first item; ``-1`` = outlier.
    n_clusters, n_outliers : int
    n_dbscan_clusters : int
        Clusters DBSCAN found before the links were applied.
    n_merged : int
        DBSCAN clusters that must-links merged into another one.
    n_pulled : int
        Outliers that must-links put into a cluster (an existing one or one of their own).
    n_linked_new : int
        Clusters made only of must-linked outliers.
    n_splits : int
        Splits made for cannot-links.
    """

    labels: np.ndarray
    n_clusters: int
    n_outliers: int
    n_dbscan_clusters: int
    n_merged: int
    n_pulled: int
    n_linked_new: int
    n_splits: int

    def report(self) -> dict:
        """Every count (not the labels), for a run's metrics."""
        return {k: v for k, v in asdict(self).items() if k != "labels"}


def _pairs(name: str, pairs: Pairs, n: int) -> np.ndarray:
    """Validated (m, 2) int64 pairs of distinct items in [0, n)."""
    try:
        given = [tuple(p) for p in pairs]
    except TypeError:
        given = None
    check_param(OWNER, name, pairs, given is not None, "an iterable of (i, j) pairs of item indices")
    if not given:
        return np.zeros((0, 2), np.int64)
    ok = all(len(p) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in p)
             for p in given)
    check_param(OWNER, name, given, ok, "pairs (i, j) of int item indices")
    arr = np.asarray(given, dtype=np.int64)
    bad = ((arr < 0) | (arr >= n)).any(axis=1)
    check_param(OWNER, name, tuple(int(v) for v in arr[bad][0]) if bad.any() else None, not bad.any(),
                f"pairs of item indices in [0, {n - 1}]")
    same = arr[:, 0] == arr[:, 1]
    check_param(OWNER, name, tuple(int(v) for v in arr[same][0]) if same.any() else None, not same.any(),
                "pairs of two different items")
    return arr


def _graph(D: JaccardDistances | sp.spmatrix | np.ndarray, eps: float) -> sp.csr_matrix:
    """The entries ``<= eps`` of ``D`` as a CSR float64 matrix, sorted indices, explicit zeros kept."""
    if isinstance(D, JaccardDistances):
        D = D.matrix
    if sp.issparse(D):
        G = sp.csr_matrix(D)  # no copy when D is already CSR
        if not G.has_canonical_format:
            G = G.copy()
            G.sum_duplicates()
        shape, values = G.shape, G.data
    else:
        G = np.asarray(D, dtype=np.float64)
        shape, values = G.shape, G.ravel()
    check_param(OWNER, "D", f"matrix of shape {shape}", len(shape) == 2 and shape[0] == shape[1] and shape[0] >= 1,
                "a square (n, n) distance matrix with n >= 1")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    check_param(OWNER, "D", "a matrix with negative, NaN or inf entries", lo >= 0 and np.isfinite(hi),
                "finite non-negative distances")  # min / max: no temporary array as large as D's entries
    if not sp.issparse(G):
        r, c = np.nonzero(G <= eps)
        return sp.csr_matrix((G[r, c], (r, c)), shape=shape)
    kept = np.flatnonzero(G.data <= eps)  # memory in the kept entries only (D may hold every pair below 1)
    rows = np.searchsorted(G.indptr, kept, side="right") - 1
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return sp.csr_matrix((G.data[kept].astype(np.float64), G.indices[kept], indptr), shape=shape)


def _with_links(G: sp.csr_matrix, must: np.ndarray, cannot: np.ndarray) -> sp.csr_matrix:
    """``G`` with the diagonal and every must-linked pair at an explicit 0 and no cannot-linked pair (symmetric)."""
    n = G.shape[0]
    coo = G.tocoo()
    r, c, v = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    ml = np.concatenate([must, must[:, ::-1]]) if len(must) else np.zeros((0, 2), np.int64)
    cl = np.concatenate([cannot, cannot[:, ::-1]]) if len(cannot) else np.zeros((0, 2), np.int64)
    ml_keys = np.unique(ml[:, 0] * n + ml[:, 1])
    drop = np.isin(r * n + c, np.concatenate([ml_keys, cl[:, 0] * n + cl[:, 1]])) | (r == c)
    r, c, v = r[~drop], c[~drop], v[~drop]
    diag = np.arange(n, dtype=np.int64)
    r = np.concatenate([r, diag, ml_keys // n])
    c = np.concatenate([c, diag, ml_keys % n])
    v = np.concatenate([v, np.zeros(n + len(ml_keys))])
    out = sp.csr_matrix((v, (r, c)), shape=(n, n))
    out.sort_indices()
    return out


def _units(must: np.ndarray, n: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """Connected components (n,) of the must-link graph and the graph itself (n, n)."""
    M = sp.csr_matrix((np.ones(len(must)), (must[:, 0], must[:, 1])), shape=(n, n)) if len(must) else \
        sp.csr_matrix((n, n))
    _, comp = connected_components(M, directed=False)
    return comp.astype(np.int64), M


def _check_contradictions(cannot: np.ndarray, unit: np.ndarray, M: sp.csr_matrix) -> None:
    """Raise when a cannot-linked pair is joined by a chain of must-links, naming the items and the chain."""
    bad = np.flatnonzero(unit[cannot[:, 0]] == unit[cannot[:, 1]]) if len(cannot) else []
    if len(bad) == 0:
        return
    a, b = (int(x) for x in cannot[bad[0]])
    _, pred = shortest_path(M, directed=False, unweighted=True, indices=a, return_predecessors=True)
    chain = [b]
    while chain[-1] != a:
        chain.append(int(pred[chain[-1]]))
    path = " - ".join(str(x) for x in reversed(chain))
    check_param(OWNER, "cannot_link", (a, b), False,
                f"pairs of items that no chain of must-links joins (must-links join {a} and {b}: {path})")


def _apply_must_links(labels: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Merge clusters joined by must-links and pull linked outliers in: (labels, merged, pulled, new clusters)."""
    n = len(labels)
    unit_size = np.bincount(unit, minlength=n)
    linked = unit_size[unit] >= 2
    clustered = labels >= 0
    if not linked.any():
        return labels, 0, 0, 0
    # items are joined when they share a unit or a DBSCAN cluster: components of that graph are the new clusters
    rep = np.full(labels.max() + 1 if clustered.any() else 0, -1, np.int64)
    items = np.flatnonzero(clustered)
    rep[labels[items][::-1]] = items[::-1]  # first item of each cluster
    unit_rep = np.full(n, -1, np.int64)
    lk = np.flatnonzero(linked)
    unit_rep[unit[lk][::-1]] = lk[::-1]
    src = np.concatenate([items, lk])
    dst = np.concatenate([rep[labels[items]], unit_rep[unit[lk]]])
    _, comp = connected_components(sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)), directed=False)
    member = clustered | linked
    out = np.full(n, -1, np.int64)
    out[member] = comp[member]
    n_before = int(len(np.unique(labels[clustered])))
    comps_with_cluster = np.unique(comp[clustered])
    n_new = int(len(np.setdiff1d(np.unique(comp[member]), comps_with_cluster)))
    return out, n_before - len(comps_with_cluster), int((linked & ~clustered).sum()), n_new


def _split(labels: np.ndarray, a: int, b: int, unit: np.ndarray, G: sp.csr_matrix, new_label: int) -> None:
    """Split the cluster of a and b in place: units nearer to b (path distance in the cluster's graph) get
    ``new_label``."""
    members = np.flatnonzero(labels == labels[a])
    sub = G[members][:, members].tocsr()
    sub.data = sub.data + PATH_EPS
    ia, ib = int(np.searchsorted(members, a)), int(np.searchsorted(members, b))
    dist = dijkstra(sub, directed=False, indices=[ia, ib])
    units, inv = np.unique(unit[members], return_inverse=True)
    da = np.full(len(units), np.inf)
    db = np.full(len(units), np.inf)
    np.minimum.at(da, inv, dist[0])
    np.minimum.at(db, inv, dist[1])
    to_b = db < da
    to_b[inv[ia]], to_b[inv[ib]] = False, True
    labels[members[to_b[inv]]] = new_label


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Clusters numbered 0.. by their first item; -1 kept."""
    out = np.full(len(labels), -1, np.int64)
    inside = labels >= 0
    if inside.any():
        uniq, first, inv = np.unique(labels[inside], return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        out[inside] = rank[inv]
    return out


def constrained_dbscan(D: JaccardDistances | sp.spmatrix | np.ndarray, eps: float = 0.5, min_samples: int = 4, *,
                       must_link: Pairs = (), cannot_link: Pairs = ()) -> PseudoLabels:
    """DBSCAN pseudo-identities on a precomputed distance, with must-links and cannot-links respected.

    Parameters
    ----------
    D : JaccardDistances, scipy sparse matrix (n, n) or np.ndarray (n, n)
        Distances. Sparse: only stored entries are candidate neighbours (absent = far; store a zero distance
        explicitly), e.g. :func:`core.models.reid.jaccard.sparse_jaccard`. Dense: every entry is a distance.
    eps : float
        DBSCAN's neighbourhood radius (> 0; 0.5 in the seed paper, on the Jaccard distance); distances up to
        ``eps + EPS_TOLERANCE`` count as within it.
    min_samples : int
        Neighbours (the item itself included) that make a core item (>= 1; 4 in SpCL / CAP).
    must_link, cannot_link : iterable of (i, j) pairs of item indices
        Items that must end in one cluster / never in one cluster.

    Returns
    -------
    PseudoLabels
        ``labels`` (n,) int64 (-1 = outlier) and the counts of clusters, outliers, merges, pulls and splits.

    Raises
    ------
    core.errors.ValidationError
        On a bad parameter, or a cannot-link between two items that a chain of must-links joins.
    """
    from sklearn.cluster import DBSCAN

    ok_eps = isinstance(eps, (int, float, np.integer, np.floating)) and not isinstance(eps, bool)
    check_param(OWNER, "eps", eps, ok_eps and np.isfinite(eps) and float(eps) > 0, "a float > 0")
    ok_ms = isinstance(min_samples, (int, np.integer)) and not isinstance(min_samples, bool)
    check_param(OWNER, "min_samples", min_samples, ok_ms and min_samples >= 1, "an int >= 1")
    radius = float(eps) + EPS_TOLERANCE
    G = _graph(D, radius)
    n = G.shape[0]
    must = _pairs("must_link", must_link, n)
    cannot = _pairs("cannot_link", cannot_link, n)
    unit, M = _units(must, n)
    _check_contradictions(cannot, unit, M)
    G = _with_links(G, must, cannot)
    labels = DBSCAN(eps=radius, min_samples=int(min_samples), metric="precomputed").fit(G).labels_.astype(np.int64)
    n_dbscan = int(len(np.unique(labels[labels >= 0])))
    labels, n_merged, n_pulled, n_new = _apply_must_links(labels, unit)
    n_splits = 0
    while len(cannot):
        la, lb = labels[cannot[:, 0]], labels[cannot[:, 1]]
        viol = np.flatnonzero((la == lb) & (la >= 0))
        if len(viol) == 0:
            break
        a, b = (int(x) for x in cannot[viol[0]])
        _split(labels, a, b, unit, G, int(labels.max()) + 1)
        n_splits += 1
    labels = _renumber(labels)
    n_clusters = int(labels.max()) + 1 if n else 0
    return PseudoLabels(labels=labels, n_clusters=n_clusters, n_outliers=int((labels < 0).sum()),
                        n_dbscan_clusters=n_dbscan, n_merged=n_merged, n_pulled=n_pulled, n_linked_new=n_new,
                        n_splits=n_splits)


def dbscan_pseudo_labels(D: JaccardDistances | sp.spmatrix | np.ndarray, eps: float = 0.5, min_samples: int = 4, *,
                         must_link: Pairs = (), cannot_link: Pairs = ()) -> np.ndarray:
    """The labels (n,) int64 of :func:`constrained_dbscan` (-1 = outlier); same parameters."""
    return constrained_dbscan(D, eps, min_samples, must_link=must_link, cannot_link=cannot_link).labels
