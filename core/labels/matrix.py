"""The project's votes as a label matrix (N items x M annotators), the input of the consensus methods.

Each annotator counts once per item with their latest active human or bulk vote; machine labels and
adjudications are left out (adjudications override consensus, they are not a rater's vote).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.labels.votes import VOTE_KINDS, latest_per_item

if TYPE_CHECKING:
    from core.store.project_store import Store


@dataclass(frozen=True)
class LabelMatrix:
    """Votes of the annotated items.

    Attributes
    ----------
    item_ids : ndarray (N,) int64     items with at least one vote, ascending
    annotators : list[str]            (M,) column names
    classes : list[str]               (K,) the label set; L holds indices into it
    L : ndarray (N, M) float          class index, NaN where the annotator did not vote
    seconds : ndarray (N, M) float    time the annotator took, NaN where unknown
    """

    item_ids: np.ndarray
    annotators: list[str]
    classes: list[str]
    L: np.ndarray
    seconds: np.ndarray


def label_matrix(store: Store) -> LabelMatrix:
    """Build the label matrix from the store's active votes."""
    return label_matrix_from_votes(store.active_votes(kinds=VOTE_KINDS), store.labels())


def label_matrix_from_votes(votes: list, classes: list[str]) -> LabelMatrix:
    """The label matrix of vote rows (oldest first; ``item_id``, ``annotator``, ``label``, ``kind``, ``seconds``).

    Only human and bulk votes count; an annotator's later vote on an item replaces the earlier one.
    """
    cls = {c: k for k, c in enumerate(classes)}
    seconds = {(int(v["item_id"]), v["annotator"]): v["seconds"] for v in votes if v["kind"] in VOTE_KINDS}
    latest: dict[tuple[int, str], tuple[int, float | None]] = {
        (i, a): (cls[lab], seconds[(i, a)])
        for i, by_annotator in latest_per_item(votes).items() for a, lab in by_annotator.items() if lab in cls}
    item_ids = np.array(sorted({i for i, _ in latest}), dtype=np.int64)
    annotators = sorted({a for _, a in latest})
    row = {int(i): r for r, i in enumerate(item_ids)}
    col = {a: c for c, a in enumerate(annotators)}
    L = np.full((len(item_ids), len(annotators)), np.nan)
    S = np.full_like(L, np.nan)
    for (i, a), (k, s) in latest.items():
        L[row[i], col[a]] = k
        if s is not None:
            S[row[i], col[a]] = s
    return LabelMatrix(item_ids, annotators, classes, L, S)
