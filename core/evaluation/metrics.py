"""Evaluation metrics for classifiers and clusterings.

Classification: :func:`accuracy`, :func:`macro_f1`, :func:`classification_report_dict`,
:func:`prediction_scores`. Clustering against reference labels: :func:`cluster_acc` (accuracy
after the best one-to-one cluster -> class matching, found by the Hungarian algorithm on the
contingency matrix), :func:`hungarian_mapping`, :func:`nmi`, :func:`ari`, :func:`clustering_scores`, and
:func:`hungarian_scores` (a label-free run's clusters scored as predictions after that matching).

Labels may be ints or strings (or a mix, compared by their ``str``); cluster ids are any hashable
scalars. Re-identification: :func:`reid_scores` (mAP and CMC rank-k, Market-1501 protocol) and
:func:`average_precisions`, from :mod:`core.evaluation.reid_metrics`. Every other function takes 1-D sequences
of the same length. On empty input the scores are
``nan`` (an evaluation set without reference labels is not an error).

Examples
--------
>>> cluster_acc(["a", "a", "b", "b"], [1, 1, 0, 0])
1.0
>>> hungarian_mapping(["a", "a", "b", "b"], [1, 1, 0, 0])
{0: 'b', 1: 'a'}
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from core.errors import check_param
from core.evaluation.reid_metrics import average_precisions, reid_scores

__all__ = [
    "accuracy",
    "macro_f1",
    "classification_report_dict",
    "prediction_scores",
    "contingency",
    "cluster_acc",
    "hungarian_mapping",
    "nmi",
    "ari",
    "clustering_scores",
    "hungarian_scores",
    "reid_scores",
    "average_precisions",
]

ArrayLike = Sequence[Any] | np.ndarray


def _pair(owner: str, a: ArrayLike, b: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate two label vectors: 1-D and of the same length."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    check_param(owner, names[0], f"array of shape {a_arr.shape}", a_arr.ndim == 1, "a 1-D sequence of labels")
    check_param(owner, names[1], f"array of shape {b_arr.shape}", b_arr.ndim == 1, "a 1-D sequence of labels")
    check_param(owner, names[1], f"{b_arr.shape[0]} labels", b_arr.shape[0] == a_arr.shape[0],
                f"of the same length as {names[0]!r} ({a_arr.shape[0]})")
    return a_arr, b_arr


def _encode(*arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Encode label arrays against one shared vocabulary.

    Returns
    -------
    classes : np.ndarray, shape (c,)
        Sorted distinct labels (as ``str`` when the inputs mix strings and numbers).
    codes : list of np.ndarray, each shape (n_i,), int64
        Position of each label in ``classes``.
    """
    try:
        joined = np.concatenate(arrays)
        classes, inverse = np.unique(joined, return_inverse=True)
    except TypeError:  # e.g. strings mixed with numbers: no common dtype or no ordering
        joined = np.concatenate([a.astype(str) for a in arrays])
        classes, inverse = np.unique(joined, return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    codes, start = [], 0
    for a in arrays:
        codes.append(inverse[start:start + a.shape[0]])
        start += a.shape[0]
    return classes, codes


def _own_codes(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode one array against its own vocabulary: (classes (c,), codes (n,) int64)."""
    classes, codes = _encode(a)
    return classes, codes[0]


def _scalar(x: Any) -> Any:
    """NumPy scalar -> Python scalar (so dicts serialise to JSON)."""
    return x.item() if isinstance(x, np.generic) else x


# ---------------------------------------------------------------------------------- classification
def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of items whose prediction equals the reference label.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)

    Returns
    -------
    float
        In [0, 1]; ``nan`` when ``n == 0``.
    """
    t, p = _pair("accuracy", y_true, y_pred, ("y_true", "y_pred"))
    if t.shape[0] == 0:
        return float("nan")
    _, (ct, cp) = _encode(t, p)
    return float(np.mean(ct == cp))


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Unweighted mean of the per-class F1 over every label seen in ``y_true`` or ``y_pred``.

    A class with no true and no predicted items cannot occur; a class with a zero denominator
    scores 0 (scikit-learn's ``zero_division=0``).

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)

    Returns
    -------
    float
        In [0, 1]; ``nan`` when ``n == 0``.
    """
    from sklearn.metrics import f1_score

    t, p = _pair("macro_f1", y_true, y_pred, ("y_true", "y_pred"))
    if t.shape[0] == 0:
        return float("nan")
    _, (ct, cp) = _encode(t, p)
    return float(f1_score(ct, cp, average="macro", zero_division=0))


def classification_report_dict(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, Any]:
    """scikit-learn's ``classification_report(output_dict=True)`` keyed by the original label names.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)

    Returns
    -------
    dict
        ``{label: {"precision", "recall", "f1-score", "support"}, "accuracy": float,
        "macro avg": {...}, "weighted avg": {...}}`` with labels as ``str``; ``{}`` when ``n == 0``.
    """
    from sklearn.metrics import classification_report

    t, p = _pair("classification_report_dict", y_true, y_pred, ("y_true", "y_pred"))
    if t.shape[0] == 0:
        return {}
    classes, (ct, cp) = _encode(t, p)
    report = classification_report(ct, cp, labels=np.arange(classes.shape[0]),
                                   target_names=[str(c) for c in classes], output_dict=True, zero_division=0)
    if "accuracy" not in report:  # sklearn reports micro avg instead when some labels are absent
        report["accuracy"] = float(np.mean(ct == cp))
    return report


def prediction_scores(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float | int]:
    """Headline classification scores: ``{"accuracy", "macro_f1", "n"}``.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)

    Returns
    -------
    dict
        ``accuracy`` and ``macro_f1`` floats (``nan`` when ``n == 0``), ``n`` the number of items.
    """
    t, p = _pair("prediction_scores", y_true, y_pred, ("y_true", "y_pred"))
    return {"accuracy": accuracy(t, p), "macro_f1": macro_f1(t, p), "n": int(t.shape[0])}


# -------------------------------------------------------------------------------------- clustering
def contingency(y_true: ArrayLike, clusters: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency matrix of clusters against reference labels.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Reference labels.
    clusters : array-like, shape (n,)
        Cluster ids.

    Returns
    -------
    table : np.ndarray, shape (n_clusters, n_classes), int64
        ``table[i, j]`` = number of items of cluster ``cluster_ids[i]`` with label ``classes[j]``.
    cluster_ids : np.ndarray, shape (n_clusters,)
    classes : np.ndarray, shape (n_classes,)
    """
    t, c = _pair("contingency", y_true, clusters, ("y_true", "clusters"))
    classes, ct = _own_codes(t)
    cluster_ids, cc = _own_codes(c)
    table = np.zeros((cluster_ids.shape[0], classes.shape[0]), np.int64)
    np.add.at(table, (cc, ct), 1)
    return table, cluster_ids, classes


def _match(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching maximising matched items: (cluster rows (r,), class columns (r,))."""
    rows, cols = linear_sum_assignment(table, maximize=True)
    return rows, cols


def cluster_acc(y_true: ArrayLike, clusters: ArrayLike) -> float:
    """Clustering accuracy: the best one-to-one mapping of clusters to classes, then accuracy.

    The mapping maximises the number of correctly assigned items (Hungarian algorithm on the
    contingency matrix). With more clusters than classes the unmatched clusters count as wrong; with
    fewer, the unmatched classes do.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Reference labels (ints or strings).
    clusters : array-like, shape (n,)
        Cluster ids.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when ``n == 0``.
    """
    table, _, _ = contingency(y_true, clusters)
    n = int(table.sum())
    if n == 0:
        return float("nan")
    rows, cols = _match(table)
    return float(table[rows, cols].sum() / n)


def hungarian_mapping(y_true: ArrayLike, clusters: ArrayLike, *, fill_unmatched: bool = False) -> dict[Any, Any]:
    """The cluster -> label mapping that :func:`cluster_acc` scores.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Reference labels.
    clusters : array-like, shape (n,)
        Cluster ids.
    fill_unmatched : bool
        When there are more clusters than classes, the Hungarian matching leaves some clusters
        without a label and they are absent from the result. ``True`` maps each of them to its
        majority label instead (no longer one-to-one; useful to pseudo-label every cluster).

    Returns
    -------
    dict
        ``{cluster_id: label}`` with Python scalars (ints stay ints, strings stay strings).
    """
    table, cluster_ids, classes = contingency(y_true, clusters)
    if table.size == 0:
        return {}
    rows, cols = _match(table)
    mapping = {_scalar(cluster_ids[r]): _scalar(classes[c]) for r, c in zip(rows, cols)}
    if fill_unmatched:
        for r in np.setdiff1d(np.arange(cluster_ids.shape[0]), rows):
            mapping[_scalar(cluster_ids[r])] = _scalar(classes[int(np.argmax(table[r]))])
    return mapping


def nmi(y_true: ArrayLike, clusters: ArrayLike) -> float:
    """Normalised mutual information (arithmetic mean normalisation, as scikit-learn).

    Parameters
    ----------
    y_true, clusters : array-like, shape (n,)

    Returns
    -------
    float
        In [0, 1]; ``nan`` when ``n == 0``.
    """
    from sklearn.metrics import normalized_mutual_info_score

    t, c = _pair("nmi", y_true, clusters, ("y_true", "clusters"))
    if t.shape[0] == 0:
        return float("nan")
    return float(normalized_mutual_info_score(_own_codes(t)[1], _own_codes(c)[1]))


def ari(y_true: ArrayLike, clusters: ArrayLike) -> float:
    """Adjusted Rand index (scikit-learn).

    Parameters
    ----------
    y_true, clusters : array-like, shape (n,)

    Returns
    -------
    float
        1 for identical partitions, about 0 for random ones (can be negative); ``nan`` when ``n == 0``.
    """
    from sklearn.metrics import adjusted_rand_score

    t, c = _pair("ari", y_true, clusters, ("y_true", "clusters"))
    if t.shape[0] == 0:
        return float("nan")
    return float(adjusted_rand_score(_own_codes(t)[1], _own_codes(c)[1]))


def clustering_scores(y_true: ArrayLike, clusters: ArrayLike) -> dict[str, float]:
    """Headline clustering scores: ``{"acc", "nmi", "ari"}``.

    Parameters
    ----------
    y_true, clusters : array-like, shape (n,)

    Returns
    -------
    dict
        ``acc`` (:func:`cluster_acc`), ``nmi``, ``ari``; each ``nan`` when ``n == 0``.
    """
    return {"acc": cluster_acc(y_true, clusters), "nmi": nmi(y_true, clusters), "ari": ari(y_true, clusters)}


def hungarian_scores(y_true: ArrayLike, clusters: ArrayLike) -> dict[str, Any]:
    """Clusters scored as class predictions after the best one-to-one cluster -> class matching.

    For a label-free run, whose cluster ``j`` is "named" after class ``j`` arbitrarily: each cluster is
    given the class :func:`hungarian_mapping` matches it with, then accuracy and macro-F1 are computed. Items
    of a cluster left unmatched (more clusters than classes) count as wrong. Macro-F1 is the mean per-class
    F1 over the classes of ``y_true`` (a class never predicted scores 0).

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Reference labels.
    clusters : array-like, shape (n,)
        Cluster ids.

    Returns
    -------
    dict
        ``hungarian_accuracy`` (equal to :func:`cluster_acc`) and ``hungarian_macro_f1`` floats (``nan`` when
        ``n == 0``), ``mapping`` ``{cluster_id: label}`` (Python scalars; unmatched clusters absent).
    """
    from sklearn.metrics import f1_score

    t, c = _pair("hungarian_scores", y_true, clusters, ("y_true", "clusters"))
    if t.shape[0] == 0:
        return {"hungarian_accuracy": float("nan"), "hungarian_macro_f1": float("nan"), "mapping": {}}
    table, cluster_ids, classes = contingency(t, c)
    rows, cols = _match(table)
    lookup = np.full(cluster_ids.shape[0], -1, np.int64)  # cluster code -> matched class code (-1: none)
    lookup[rows] = cols
    ct, cp = _own_codes(t)[1], lookup[_own_codes(c)[1]]
    mapping = {_scalar(cluster_ids[r]): _scalar(classes[k]) for r, k in zip(rows, cols)}
    f1 = f1_score(ct, cp, labels=np.arange(classes.shape[0]), average="macro", zero_division=0)
    return {"hungarian_accuracy": float(np.mean(ct == cp)), "hungarian_macro_f1": float(f1), "mapping": mapping}
