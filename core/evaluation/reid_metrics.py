"""Re-identification scores: mAP and CMC rank-k under the standard (Market-1501) protocol.

The protocol is torchreid's ``eval_market1501`` (and Market-1501's original evaluation code):

* the query set and the gallery set are **separate** sets of items (a query is never looked up in the
  gallery by its own row; pass a query set that is disjoint from the gallery);
* for each query the gallery is ranked by ascending distance (ties broken by the lower gallery index, a stable
  sort), and the gallery items with the query's identity **and** the query's camera are removed from the ranking
  (finding the same person in the same camera is too easy to count);
* a query with no gallery item of its identity left after the removal is skipped (it has no correct answer),
  and counted in ``n_skipped``;
* ``AP`` of a query is the mean, over its correct matches, of the precision at the rank of each match;
  ``mAP`` is the mean ``AP`` over the valid queries;
* ``CMC rank-k`` is the fraction of valid queries with at least one correct match in their first ``k``
  (kept) gallery items.

Examples
--------
>>> import numpy as np
>>> dist = np.array([[0.1, 0.2, 0.3]])
>>> s = reid_scores(dist, [7], [7, 5, 7], [0], [1, 1, 1], ranks=(1,))
>>> s["rank1"], round(s["mAP"], 4)  # correct matches at ranks 1 and 3: AP = (1/1 + 2/3) / 2
(1.0, 0.8333)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.errors import check_param, is_int

__all__ = ["average_precisions", "reid_scores"]

_OWNER = "reid_scores"
#: queries scored at once (bounds the (rows, g) temporary arrays)
_QUERY_CHUNK = 256

ArrayLike = Sequence[Any] | np.ndarray


def _vector(name: str, value: ArrayLike, n: int, of: str) -> np.ndarray:
    arr = np.asarray(value)
    check_param(_OWNER, name, f"array of shape {arr.shape}", arr.ndim == 1 and arr.shape[0] == n,
                f"a 1-D sequence of length {n} (one per {of})")
    return arr


def average_precisions(dist: np.ndarray, q_ids: ArrayLike, g_ids: ArrayLike, q_cams: ArrayLike,
                       g_cams: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-query average precision and rank of the first correct match, same-identity-same-camera removed.

    Parameters
    ----------
    dist : np.ndarray, shape (q, g)
        Query-to-gallery distances (lower = nearer; pass ``1 - cosine`` or ``-cosine`` for similarities).
    q_ids, q_cams : sequences of length q
        Identity and camera of each query (any comparable scalars: ints or strings).
    g_ids, g_cams : sequences of length g
        Identity and camera of each gallery item.

    Returns
    -------
    ap : np.ndarray, shape (q,), float64
        Average precision of each query; ``nan`` for a query without a valid match.
    first_rank : np.ndarray, shape (q,), int64
        1-based rank of the first correct match among the kept gallery items; 0 for a query without one.
    """
    dist = np.asarray(dist)
    check_param(_OWNER, "dist", f"array of shape {dist.shape}", dist.ndim == 2, "a 2-D (q, g) array of distances")
    q, g = dist.shape
    check_param(_OWNER, "dist", f"array of dtype {dist.dtype}", np.issubdtype(dist.dtype, np.number),
                "a numeric array")
    check_param(_OWNER, "dist", "an array with nan or inf", bool(np.isfinite(dist).all()), "finite everywhere")
    q_ids = _vector("q_ids", q_ids, q, "query row of dist")
    q_cams = _vector("q_cams", q_cams, q, "query row of dist")
    g_ids = _vector("g_ids", g_ids, g, "gallery column of dist")
    g_cams = _vector("g_cams", g_cams, g, "gallery column of dist")

    ap = np.full(q, np.nan, dtype=np.float64)
    first_rank = np.zeros(q, dtype=np.int64)
    for start in range(0, q, _QUERY_CHUNK):
        rows = slice(start, min(start + _QUERY_CHUNK, q))
        order = np.argsort(dist[rows], axis=1, kind="stable")                    # (r, g) gallery columns
        same_id = g_ids[order] == q_ids[rows, None]                               # (r, g)
        keep = ~(same_id & (g_cams[order] == q_cams[rows, None]))                 # drop same id AND same camera
        match = same_id & keep                                                    # correct, kept answers
        kept_rank = np.cumsum(keep, axis=1)                                       # 1-based rank among kept items
        hits = np.cumsum(match, axis=1)                                           # correct matches so far
        n_rel = hits[:, -1] if g else np.zeros(order.shape[0], np.int64)
        precision = np.where(match, hits / np.maximum(kept_rank, 1), 0.0)         # precision at each match
        valid = n_rel > 0
        ap[rows] = np.where(valid, precision.sum(axis=1) / np.maximum(n_rel, 1), np.nan)
        if g:
            first = np.argmax(match, axis=1)                                      # first correct column
            first_rank[rows] = np.where(valid, kept_rank[np.arange(order.shape[0]), first], 0)
    return ap, first_rank


def reid_scores(dist: np.ndarray, q_ids: ArrayLike, g_ids: ArrayLike, q_cams: ArrayLike, g_cams: ArrayLike,
                ranks: Sequence[int] = (1, 5, 10)) -> dict[str, float | int]:
    """mAP and CMC rank-k of a query set against a separate gallery (standard Market-1501 protocol).

    Parameters
    ----------
    dist : np.ndarray, shape (q, g)
        Query-to-gallery distances (lower = nearer). Queries and gallery are separate sets.
    q_ids : sequence of length q
        Identity of each query.
    g_ids : sequence of length g
        Identity of each gallery item.
    q_cams : sequence of length q
        Camera of each query.
    g_cams : sequence of length g
        Camera of each gallery item.
    ranks : sequence of int
        The CMC ranks to report (each >= 1).

    Returns
    -------
    dict
        ``mAP`` (float), ``rank{k}`` (float) for each ``k`` in ``ranks``, ``n_queries`` (int, valid queries
        scored) and ``n_skipped`` (int, queries without any correct match once their own camera's items of their
        identity are removed). The scores are ``nan`` when no query is valid.
    """
    ranks = tuple(ranks)
    ok = len(ranks) > 0 and all(is_int(k) and k >= 1 for k in ranks)
    check_param(_OWNER, "ranks", ranks, ok, "a non-empty sequence of ints >= 1")
    ap, first_rank = average_precisions(dist, q_ids, g_ids, q_cams, g_cams)
    valid = ~np.isnan(ap)
    n_valid = int(valid.sum())
    out: dict[str, float | int] = {"mAP": float(ap[valid].mean()) if n_valid else float("nan")}
    for k in ranks:
        out[f"rank{int(k)}"] = float((first_rank[valid] <= k).mean()) if n_valid else float("nan")
    out["n_queries"] = n_valid
    out["n_skipped"] = int(ap.shape[0] - n_valid)
    return out
