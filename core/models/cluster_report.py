"""Cluster <-> class matching and the collapse report of a clustering (NumPy only), shared by DEC and IIC.

The Hungarian matching is the one of :func:`core.evaluation.metrics.cluster_acc` (``scipy.optimize.linear_sum_assignment``
maximising matched items) on a full (k clusters x C classes) table, so clusters and classes without items keep
their place.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(clusters: np.ndarray, y_cls: np.ndarray, k: int, C: int,
                     weight: np.ndarray | None = None) -> np.ndarray:
    """Cluster x class table (k, C) of items with cluster ``clusters`` (m,) and class index ``y_cls`` (m,).

    Counts (int64), or with ``weight`` (m,) the sum of the items' weights (float64).
    """
    if weight is None:
        table = np.zeros((k, C), np.int64)
        np.add.at(table, (np.asarray(clusters, np.int64), np.asarray(y_cls, np.int64)), 1)
        return table
    table = np.zeros((k, C), np.float64)
    np.add.at(table, (np.asarray(clusters, np.int64), np.asarray(y_cls, np.int64)), np.asarray(weight, np.float64))
    return table


def match_clusters(table: np.ndarray) -> np.ndarray:
    """Hungarian one-to-one matching maximising matched items on a (k, C) cluster x class table.

    Returns
    -------
    ndarray (k,) int64
        Class index of each cluster; -1 for clusters left unmatched (when k > C).
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(table, dtype=np.float64), maximize=True)
    out = np.full(table.shape[0], -1, np.int64)
    out[rows] = cols
    return out


def cluster_class_matrix(mapping: np.ndarray, table: np.ndarray, C: int) -> np.ndarray:
    """How each cluster's probability goes to classes, (k, C), rows summing to 1.

    A matched cluster gives all of it to its class. An unmatched cluster gives it to the majority label of its
    labelled items when it has some, and spreads it evenly over the classes otherwise.
    """
    k = len(mapping)
    M = np.zeros((k, max(C, 1)), np.float64)
    for j, c in enumerate(np.asarray(mapping).tolist()):
        if c >= 0:
            M[j, c] = 1.0
        elif C and table[j].sum() > 0:
            M[j, int(np.argmax(table[j]))] = 1.0
        else:
            M[j] = 1.0 / max(C, 1)
    return M[:, :C]


def collapse_report(clusters: np.ndarray, k: int, max_fraction: float = 0.5, min_effective_fraction: float = 0.5) -> dict:
    """Flags a collapsed or degenerate clustering.

    Parameters
    ----------
    clusters : ndarray (n,) int
    k : int
        Number of clusters.
    max_fraction : float
        Collapse when the largest cluster holds more than this fraction of the items.
    min_effective_fraction : float
        Degenerate when the effective number of clusters, ``exp(entropy of the cluster sizes)``, is below
        ``min_effective_fraction * k``.

    Returns
    -------
    dict
        ``collapsed`` (bool), ``reasons`` (list of str), ``largest_fraction``, ``n_empty``,
        ``effective_clusters``, ``sizes``.
    """
    sizes = np.bincount(np.asarray(clusters, np.int64), minlength=k)
    n = max(int(sizes.sum()), 1)
    frac = sizes / n
    nz = frac[frac > 0]
    effective = float(np.exp(-(nz * np.log(nz)).sum()))
    reasons = []
    if frac.max() > max_fraction:
        reasons.append(f"cluster {int(frac.argmax())} holds {frac.max():.0%} of the items (> {max_fraction:.0%})")
    if (sizes == 0).any():
        reasons.append(f"{int((sizes == 0).sum())} of {k} clusters are empty")
    if effective < min_effective_fraction * k:
        reasons.append(f"only {effective:.1f} effective clusters of {k} (< {min_effective_fraction:.0%})")
    return {"collapsed": bool(reasons), "reasons": reasons, "largest_fraction": round(float(frac.max()), 4),
            "n_empty": int((sizes == 0).sum()), "effective_clusters": round(effective, 3), "sizes": sizes.tolist()}
