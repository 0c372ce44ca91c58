"""Annotators' decisions as the must-links and cannot-links of the re-identification clustering.

Two sources, both already through consensus when they reach the trainer:

* **confirmed identities** (item labels): the items of one identity label are must-linked (a star from the
  label's first item, which makes them one unit of :func:`~core.models.reid.clustering.constrained_dbscan`)
  and the units of two different labels are cannot-linked once, anchor to anchor (a cannot-link between two
  units separates all their members, so ``L (L - 1) / 2`` pairs say what ``m^2`` pairs would);
* **confirmed pair decisions** ("same" / "different" on the Identities page, :mod:`core.labels.pairs`), as
  row-index pairs in ``TrainContext.pair_links``.

Annotators can contradict each other across pairs (A same B, B same C, A different C). The clustering refuses a
contradiction, and a retrain must not fail on it: :func:`resolve_links` drops every cannot-link whose two items a
chain of must-links joins and returns the dropped pairs, which the run reports (a must-link is the stronger
statement: it was made looking at the two items together, and merging is undone more easily than a split).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.models.reid.clustering import _units

__all__ = ["Links", "label_links", "resolve_links", "combine_links"]


@dataclass(frozen=True)
class Links:
    """Must-links and cannot-links as row-index pairs.

    Attributes
    ----------
    must : np.ndarray, shape (p, 2), int64
    cannot : np.ndarray, shape (q, 2), int64
    dropped : np.ndarray, shape (r, 2), int64
        Cannot-links left out because must-links join their items (:func:`resolve_links`).
    """

    must: np.ndarray
    cannot: np.ndarray
    dropped: np.ndarray

    def report(self, limit: int = 20) -> dict:
        """Counts and the first ``limit`` dropped pairs, for a run's metrics."""
        return {"n_must": int(len(self.must)), "n_cannot": int(len(self.cannot)),
                "n_dropped_cannot": int(len(self.dropped)),
                "dropped_cannot": [[int(a), int(b)] for a, b in self.dropped[:limit]]}


def _pairs(arr: np.ndarray | None) -> np.ndarray:
    """``arr`` as an (m, 2) int64 array of distinct, sorted (min, max) pairs (none when None or empty)."""
    if arr is None or len(arr) == 0:
        return np.zeros((0, 2), np.int64)
    arr = np.sort(np.asarray(arr, dtype=np.int64).reshape(-1, 2), axis=1)
    arr = arr[arr[:, 0] != arr[:, 1]]
    return np.unique(arr, axis=0) if len(arr) else np.zeros((0, 2), np.int64)


def label_links(labelled: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Links of confirmed identity labels.

    Parameters
    ----------
    labelled : np.ndarray, shape (m,), int
        Row indices of the confirmed items.
    y : np.ndarray, shape (m,)
        Their consensus labels (identity names).

    Returns
    -------
    (must (p, 2) int64, cannot (q, 2) int64)
        A must-link from each label's first item (in ``labelled`` order) to each of its other items, and one
        cannot-link between the first items of every two labels.
    """
    labelled = np.asarray(labelled, dtype=np.int64)
    y = np.asarray([str(v) for v in np.asarray(y, dtype=object).tolist()], dtype=object)
    if len(labelled) == 0:
        return np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64)
    names, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    anchor = labelled[first]  # (L,)
    must = np.stack([anchor[inverse], labelled], axis=1)
    a, b = np.triu_indices(len(names), k=1)
    cannot = np.stack([anchor[a], anchor[b]], axis=1)
    return _pairs(must), _pairs(cannot)


def resolve_links(must: np.ndarray, cannot: np.ndarray, n: int) -> Links:
    """Drop the cannot-links that chains of must-links contradict.

    Parameters
    ----------
    must, cannot : np.ndarray, shape (p, 2) / (q, 2), int
        Row-index pairs in ``[0, n)``.
    n : int
        Number of items.

    Returns
    -------
    Links
        The must-links, the cannot-links no chain of must-links joins, and the dropped ones.
    """
    must, cannot = _pairs(must), _pairs(cannot)
    if not len(cannot):
        return Links(must, cannot, np.zeros((0, 2), np.int64))
    unit, _ = _units(must, n)
    bad = unit[cannot[:, 0]] == unit[cannot[:, 1]]
    return Links(must, cannot[~bad], cannot[bad])


def combine_links(n: int, labelled: np.ndarray, y: np.ndarray,
                  pair_links: tuple[np.ndarray, np.ndarray] | None) -> Links:
    """The links of confirmed labels and of confirmed pair decisions together, contradictions resolved.

    Parameters
    ----------
    n : int
        Number of items (rows).
    labelled, y : np.ndarray, shape (m,)
        Confirmed rows and their labels (:func:`label_links`).
    pair_links : (must (p, 2), cannot (q, 2)) row-index arrays, or None
        The confirmed pair decisions.
    """
    must_l, cannot_l = label_links(labelled, y)
    must_p, cannot_p = (np.zeros((0, 2), np.int64),) * 2 if pair_links is None else pair_links
    return resolve_links(np.concatenate([must_l, _pairs(must_p)]), np.concatenate([cannot_l, _pairs(cannot_p)]), n)
