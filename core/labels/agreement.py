"""Inter-annotator agreement on a label matrix.

Input convention (cleanlab's multiannotator style): a label matrix ``L`` of shape ``(N, M)`` (N items,
M annotators), float, holding class indices ``0..K-1`` and ``NaN`` where an annotator did not vote on
an item. ``n_classes`` (K) is given or inferred as ``max(L) + 1``.

Functions
---------
:func:`fleiss_kappa`
    Fleiss' kappa, generalised to a varying number of raters per item.
:func:`krippendorff_alpha_nominal`
    Krippendorff's alpha for nominal data with missing values, from the coincidence matrix.
:func:`cohen_kappa_matrix`
    Pairwise Cohen's kappa between annotators over the items both labelled, shape ``(M, M)``.
:func:`annotator_stats`
    One row per annotator: number of votes, accuracy against a consensus, median seconds per label.
:func:`pairwise_confusion`, :func:`class_confusion`
    Confusion counts between two annotators, and summed over all annotator pairs.

Undefined statistics (no item with two votes, every vote in the same class, ...) are ``nan``, never
an error; malformed input raises :class:`~core.errors.ValidationError` naming the bad value.

Everything is computed from the per-item class counts ``C`` (shape ``(N, K)``, ``C[i, k]`` = number of
votes for class ``k`` on item ``i``) or the one-hot votes ``O`` (shape ``(N, M, K)``); there is no loop
over items.

Examples
--------
>>> import numpy as np
>>> L = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=float)
>>> round(fleiss_kappa(L), 4)
0.55
>>> round(krippendorff_alpha_nominal(L), 4)
0.6
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from core.errors import ValidationError, check_param

__all__ = [
    "fleiss_kappa",
    "krippendorff_alpha_nominal",
    "cohen_kappa_matrix",
    "annotator_stats",
    "pairwise_confusion",
    "class_confusion",
]


# --------------------------------------------------------------------------------------------------
# validation and the shared building blocks
# --------------------------------------------------------------------------------------------------
def _check_n_classes(owner: str, n_classes: object, *, optional: bool = True) -> None:
    ok = isinstance(n_classes, (int, np.integer)) and not isinstance(n_classes, bool) and n_classes >= 1
    check_param(owner, "n_classes", n_classes, ok, "an int >= 1" + (" (or None to infer it)" if optional else ""))


def _check_labels(owner: str, name: str, values: np.ndarray, n_classes: int | None) -> None:
    """Raise when a non-NaN entry of ``values`` is not an int in ``0..n_classes-1``; name the first one."""
    present = ~np.isnan(values)
    v = np.where(present, values, 0.0)
    bad = present & (~np.isfinite(v) | (v != np.round(v)) | (v < 0))
    if n_classes is not None:
        bad |= present & (v >= n_classes)
        allowed = f"NaN or a class index in 0..{n_classes - 1} (n_classes={n_classes})"
    else:
        allowed = "NaN or a non-negative integer class index"
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        at = f"item {where[0]}, annotator {where[1]}" if len(where) == 2 else f"index {where[0]}"
        raise ValidationError(
            f"The {name!r} parameter of {owner} must hold {allowed} in every entry. "
            f"Got {float(values[where])!r} at {at}."
        )


def as_label_matrix(owner: str, L: object, n_classes: int | None) -> tuple[np.ndarray, int]:
    """Validate ``L`` and return it as a float array of shape (N, M) with the number of classes K."""
    try:
        arr = np.asarray(L, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(
            f"The 'L' parameter of {owner} must be a numeric 2-D array (N items, M annotators) "
            f"with NaN for a missing vote. Got {type(L).__name__}."
        ) from None
    check_param(owner, "L.ndim", arr.ndim, arr.ndim == 2, "2 (a label matrix of shape (N items, M annotators))")
    if n_classes is not None:
        _check_n_classes(owner, n_classes)
    _check_labels(owner, "L", arr, None if n_classes is None else int(n_classes))
    if n_classes is None:
        n_classes = int(np.nanmax(arr)) + 1 if np.isfinite(arr).any() else 0
    return arr, int(n_classes)


def _one_hot(L: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot votes.

    Parameters
    ----------
    L : ndarray of shape (N, M)
        Validated label matrix, NaN for a missing vote.
    n_classes : int
        K.

    Returns
    -------
    ndarray of shape (N, M, K), int64
        ``O[i, j, k] = 1`` when annotator ``j`` gave class ``k`` to item ``i``; an all-zero row for a
        missing vote.
    """
    present = ~np.isnan(L)
    idx = np.where(present, L, -1).astype(np.int64)
    return (idx[..., None] == np.arange(n_classes)).astype(np.int64)


def class_counts(L: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-item vote counts, shape (N, K): ``C[i, k]`` = number of annotators who gave class k to item i."""
    n_items = L.shape[0]
    present = ~np.isnan(L)
    rows = np.broadcast_to(np.arange(n_items)[:, None], L.shape)[present]
    cols = L[present].astype(np.int64)
    counts = np.zeros((n_items, n_classes), dtype=np.int64)
    np.add.at(counts, (rows, cols), 1)
    return counts


# --------------------------------------------------------------------------------------------------
# whole-matrix coefficients
# --------------------------------------------------------------------------------------------------
def fleiss_kappa(L: np.ndarray, n_classes: int | None = None) -> float:
    r"""Fleiss' kappa, generalised to items rated by a varying number of annotators.

    With :math:`n_{ik}` the number of votes for class :math:`k` on item :math:`i` and
    :math:`n_i = \sum_k n_{ik}`, only the items with :math:`n_i \ge 2` (set :math:`I`) take part:

    .. math::

        P_i = \frac{\sum_k n_{ik}(n_{ik} - 1)}{n_i (n_i - 1)}, \qquad
        \bar P = \frac{1}{|I|} \sum_{i \in I} P_i, \qquad
        p_k = \frac{\sum_{i \in I} n_{ik}}{\sum_{i \in I} n_i}, \qquad
        \bar P_e = \sum_k p_k^2,

    .. math::

        \kappa = \frac{\bar P - \bar P_e}{1 - \bar P_e}.

    :math:`P_i` is the share of agreeing ordered rater pairs on item :math:`i`, averaged with equal
    weight per item; :math:`p_k` is the pooled share of votes in class :math:`k`. When every item has
    the same number of raters :math:`n` this is exactly the classic Fleiss (1971) kappa.

    Parameters
    ----------
    L : array-like of shape (N, M)
        Label matrix, class indices ``0..K-1`` and NaN for a missing vote.
    n_classes : int, optional
        K; inferred as ``max(L) + 1`` when omitted. Classes nobody used do not change the value.

    Returns
    -------
    float
        Kappa in ``[-1, 1]``; ``nan`` when no item has two votes or when every vote (on the items that
        count) is in one class (:math:`\bar P_e = 1`).

    Raises
    ------
    ValidationError
        ``L`` is not 2-D, or holds a value that is not NaN or an int in ``0..K-1``.
    """
    L, K = as_label_matrix("fleiss_kappa", L, n_classes)
    C = class_counts(L, K).astype(float)  # (N, K)
    n_i = C.sum(axis=1)  # (N,)
    keep = n_i >= 2
    if not keep.any():
        return float("nan")
    C, n_i = C[keep], n_i[keep]
    P_i = (C * (C - 1)).sum(axis=1) / (n_i * (n_i - 1))  # (|I|,)
    P_bar = P_i.mean()
    p_k = C.sum(axis=0) / n_i.sum()  # (K,)
    P_e = float((p_k**2).sum())
    if np.isclose(P_e, 1.0):
        return float("nan")
    return float((P_bar - P_e) / (1.0 - P_e))


def _coincidences(C: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum over items of the ordered pairs of votes by different annotators.

    Parameters
    ----------
    C : ndarray of shape (N, K)
        Per-item vote counts.
    weights : ndarray of shape (N,)
        Weight of each item's pairs.

    Returns
    -------
    ndarray of shape (K, K)
        ``sum_i w_i (C_i C_i^T - diag(C_i))``: entry (k, l) counts the ordered pairs (a, b), a != b, of
        annotators on the same item where a said k and b said l. Symmetric.
    """
    return np.einsum("i,ik,il->kl", weights, C, C) - np.diag(weights @ C)


def krippendorff_alpha_nominal(L: np.ndarray, n_classes: int | None = None) -> float:
    r"""Krippendorff's alpha for nominal data, with missing values, via the coincidence matrix.

    Units (items) with fewer than two values are not pairable and are dropped. For a unit :math:`u`
    with :math:`m_u \ge 2` values and :math:`n_{uk}` votes for class :math:`k` the coincidence matrix is

    .. math::

        o_{ck} = \sum_u \frac{n_{uc} n_{uk} - [c = k]\, n_{uc}}{m_u - 1},

    with marginals :math:`n_c = \sum_k o_{ck}` and :math:`n = \sum_c n_c` (the number of pairable
    values). For nominal data

    .. math::

        \alpha = 1 - \frac{D_o}{D_e}
               = \frac{(n - 1) \sum_c o_{cc} - \sum_c n_c (n_c - 1)}{n (n - 1) - \sum_c n_c (n_c - 1)}.

    Parameters
    ----------
    L : array-like of shape (N, M)
        Label matrix (units x observers), class indices ``0..K-1`` and NaN for a missing value.
    n_classes : int, optional
        K; inferred as ``max(L) + 1`` when omitted. Unused classes do not change the value.

    Returns
    -------
    float
        Alpha (1 is perfect agreement, 0 chance level); ``nan`` when there are no pairable values or all
        pairable values are in one class (expected disagreement 0).

    Raises
    ------
    ValidationError
        ``L`` is not 2-D, or holds a value that is not NaN or an int in ``0..K-1``.

    References
    ----------
    K. Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011.
    """
    L, K = as_label_matrix("krippendorff_alpha_nominal", L, n_classes)
    C = class_counts(L, K).astype(float)  # (N, K)
    m_u = C.sum(axis=1)  # (N,)
    keep = m_u >= 2
    if not keep.any():
        return float("nan")
    o = _coincidences(C[keep], 1.0 / (m_u[keep] - 1.0))  # (K, K)
    n_c = o.sum(axis=1)  # (K,)
    n = n_c.sum()
    same_expected = float((n_c * (n_c - 1.0)).sum())
    denom = n * (n - 1.0) - same_expected
    if np.isclose(denom, 0.0):
        return float("nan")
    return float(((n - 1.0) * np.trace(o) - same_expected) / denom)


# --------------------------------------------------------------------------------------------------
# pairwise
# --------------------------------------------------------------------------------------------------
def cohen_kappa_matrix(L: np.ndarray, n_classes: int | None = None, min_overlap: int = 1) -> np.ndarray:
    r"""Pairwise Cohen's kappa between annotators over the items both of them labelled.

    For annotators :math:`a, b` with confusion counts :math:`C^{ab}` (shape (K, K)) over their
    :math:`n` shared items, :math:`p_o = \operatorname{tr} C^{ab} / n`,
    :math:`p_e = \sum_k C^{ab}_{k\cdot} C^{ab}_{\cdot k} / n^2` and
    :math:`\kappa = (p_o - p_e) / (1 - p_e)`, as :func:`sklearn.metrics.cohen_kappa_score`.

    Parameters
    ----------
    L : array-like of shape (N, M)
        Label matrix, class indices ``0..K-1`` and NaN for a missing vote.
    n_classes : int, optional
        K; inferred as ``max(L) + 1`` when omitted.
    min_overlap : int, default 1
        Fewest shared items for a kappa to be reported.

    Returns
    -------
    ndarray of shape (M, M), float
        Symmetric; entry (a, b) is the kappa of annotators a and b, ``nan`` when they share fewer than
        ``min_overlap`` items or the kappa is undefined (both gave one and the same class to every
        shared item, :math:`p_e = 1`). The diagonal is 1 by definition.

    Raises
    ------
    ValidationError
        Bad ``L`` (see :func:`fleiss_kappa`) or ``min_overlap`` not an int >= 1.
    """
    owner = "cohen_kappa_matrix"
    ok = isinstance(min_overlap, (int, np.integer)) and not isinstance(min_overlap, bool) and min_overlap >= 1
    check_param(owner, "min_overlap", min_overlap, ok, "an int >= 1")
    L, K = as_label_matrix(owner, L, n_classes)
    O = _one_hot(L, K).astype(float)  # (N, M, K)
    V = O.sum(axis=2)  # (N, M): 1 where the annotator voted
    # For the pair (a, b) over their shared items: n = shared items, agree = trace of the confusion,
    # rows[a, b] = a's class counts on the items b also labelled; b's counts there are rows[b, a].
    # Memory is O(M^2 K), not the O(M^2 K^2) of all pairwise confusion matrices.
    n = V.T @ V  # (M, M)
    agree = np.einsum("iak,ibk->ab", O, O)  # (M, M)
    rows = np.einsum("iak,ib->abk", O, V)  # (M, M, K)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_o = agree / n
        p_e = np.einsum("abk,bak->ab", rows, rows) / n**2
        kappa = (p_o - p_e) / (1.0 - p_e)
    undefined = (n < min_overlap) | (n == 0) | np.isclose(p_e, 1.0)
    kappa = np.where(undefined, np.nan, kappa)
    np.fill_diagonal(kappa, 1.0)
    return kappa


def _check_annotator(owner: str, name: str, value: object, n_annotators: int) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < n_annotators
    check_param(owner, name, value, ok, f"an annotator column index in 0..{n_annotators - 1}")
    return int(value)  # type: ignore[arg-type]


def pairwise_confusion(L: np.ndarray, a: int, b: int, n_classes: int) -> np.ndarray:
    """Confusion counts between annotators ``a`` and ``b`` over the items both labelled.

    Parameters
    ----------
    L : array-like of shape (N, M)
        Label matrix, class indices ``0..K-1`` and NaN for a missing vote.
    a, b : int
        Annotator column indices in ``0..M-1``.
    n_classes : int
        K.

    Returns
    -------
    ndarray of shape (K, K), int64
        Entry (k, l) is the number of items ``a`` labelled k and ``b`` labelled l.

    Raises
    ------
    ValidationError
        Bad ``L`` or ``n_classes``, or ``a``/``b`` not a column index of ``L``.
    """
    owner = "pairwise_confusion"
    _check_n_classes(owner, n_classes, optional=False)
    L, K = as_label_matrix(owner, L, n_classes)
    a = _check_annotator(owner, "a", a, L.shape[1])
    b = _check_annotator(owner, "b", b, L.shape[1])
    O = _one_hot(L[:, [a, b]], K)  # (N, 2, K)
    return O[:, 0, :].T @ O[:, 1, :]


def class_confusion(L: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class confusion between annotators, summed over all annotator pairs.

    Parameters
    ----------
    L : array-like of shape (N, M)
        Label matrix, class indices ``0..K-1`` and NaN for a missing vote.
    n_classes : int
        K.

    Returns
    -------
    ndarray of shape (K, K), int64
        Symmetric. Entry (k, l) counts the ordered pairs (a, b), ``a != b``, of annotators who both
        labelled the same item, ``a`` with k and ``b`` with l; i.e. the sum of
        :func:`pairwise_confusion` over all ordered pairs ``a != b``, computed per item as
        ``C_i C_i^T - diag(C_i)`` from the item's class counts ``C_i``. Each unordered pair of votes
        therefore appears twice (once in (k, l), once in (l, k); twice on the diagonal when they agree),
        and the total is ``sum_i m_i (m_i - 1)``. Krippendorff's coincidence matrix is the same sum with
        each item weighted by ``1 / (m_i - 1)``.

    Raises
    ------
    ValidationError
        Bad ``L`` or ``n_classes``.
    """
    owner = "class_confusion"
    _check_n_classes(owner, n_classes, optional=False)
    L, K = as_label_matrix(owner, L, n_classes)
    C = class_counts(L, K)  # (N, K)
    return C.T @ C - np.diag(C.sum(axis=0))


# --------------------------------------------------------------------------------------------------
# per annotator
# --------------------------------------------------------------------------------------------------
def annotator_stats(
    L: np.ndarray,
    consensus: np.ndarray,
    *,
    seconds: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row of statistics per annotator.

    Parameters
    ----------
    L : array-like of shape (N, M)
        Label matrix, non-negative class indices and NaN for a missing vote.
    consensus : array-like of shape (N,)
        Consensus class per item, NaN where the item has none.
    seconds : array-like of shape (N, M), optional
        Seconds annotator j spent on item i, NaN where unknown. Only entries with a vote in ``L`` count.

    Returns
    -------
    pandas.DataFrame
        Indexed by annotator column ``0..M-1`` (index name ``annotator``), with columns

        - ``n_votes`` (int): number of items the annotator labelled;
        - ``n_scored`` (int): of those, items with a consensus label;
        - ``accuracy`` (float): share of the scored votes equal to the consensus, ``nan`` when
          ``n_scored`` is 0;
        - ``median_seconds`` (float, only when ``seconds`` is given): median time per label over the
          annotator's votes with a known time, ``nan`` when there is none.

    Raises
    ------
    ValidationError
        Bad ``L`` or ``consensus`` values, or shapes that do not match.
    """
    owner = "annotator_stats"
    L, _ = as_label_matrix(owner, L, None)
    N, M = L.shape
    try:
        cons = np.asarray(consensus, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(
            f"The 'consensus' parameter of {owner} must be a numeric array of shape ({N},). "
            f"Got {type(consensus).__name__}."
        ) from None
    check_param(owner, "consensus.shape", cons.shape, cons.shape == (N,), f"({N},), one entry per row of L")
    _check_labels(owner, "consensus", cons, None)

    voted = ~np.isnan(L)  # (N, M)
    scored = voted & ~np.isnan(cons)[:, None]  # (N, M)
    correct = scored & (L == cons[:, None])  # NaN compares unequal
    n_votes = voted.sum(axis=0)
    n_scored = scored.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.where(n_scored > 0, correct.sum(axis=0) / n_scored, np.nan)
    frame = pd.DataFrame(
        {"n_votes": n_votes.astype(np.int64), "n_scored": n_scored.astype(np.int64), "accuracy": accuracy},
        index=pd.RangeIndex(M, name="annotator"),
    )
    if seconds is not None:
        try:
            secs = np.asarray(seconds, dtype=float)
        except (TypeError, ValueError):
            raise ValidationError(
                f"The 'seconds' parameter of {owner} must be a numeric array of shape {L.shape}. "
                f"Got {type(seconds).__name__}."
            ) from None
        check_param(owner, "seconds.shape", secs.shape, secs.shape == L.shape, f"{L.shape}, the shape of L")
        known = ~np.isnan(secs)
        filled = np.where(known, secs, 0.0)
        bad = known & ~(np.isfinite(filled) & (filled >= 0))
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise ValidationError(
                f"The 'seconds' parameter of {owner} must hold NaN or a finite number >= 0 in every entry. "
                f"Got {float(secs[i, j])!r} at item {i}, annotator {j}."
            )
        timed = np.where(voted & known, secs, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN column -> nan, on purpose
            frame["median_seconds"] = np.nanmedian(timed, axis=0) if N else np.full(M, np.nan)
    return frame
