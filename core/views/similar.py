"""The Label page's "more like this" panel: an item's nearest neighbours on the project's cached features, and
labelling a chosen set of them in one bulk action (one batch id, so one undo retracts it).

The neighbours come from a faiss index (:class:`core.features.neighbours.NeighbourIndex`, cosine similarity)
over every item with cached features. Building it reads the whole cache, so the page keeps one per project in
``st.cache_resource`` keyed by :func:`core.features.project.features_signature`; :func:`item_index` builds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from core.errors import check_choice, check_param
from core.features.neighbours import NeighbourIndex
from core.features.project import project_features
from core.store.project_store import Store, validate_annotator_name

__all__ = ["ItemIndex", "item_index", "more_like_this", "label_similar"]

_OWNER = "more_like_this"


@dataclass(frozen=True, eq=False)
class ItemIndex:
    """A faiss index over the items with cached features.

    Attributes
    ----------
    ids : np.ndarray, shape (n,), int64
        Item id of each indexed row, ascending.
    index : NeighbourIndex
        Cosine index over the rows, in the order of ``ids``.
    problem : str or None
        Why the index is empty (no features cached yet, an unreadable cache).
    """

    ids: np.ndarray
    index: NeighbourIndex | None
    problem: str | None = None

    def neighbours(self, item_id: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to ``item_id`` (itself excluded): ids (<= k,) int64, cosine (<= k,).

        Empty when the item has no cached features.
        """
        pos = int(np.searchsorted(self.ids, item_id))
        if self.index is None or pos >= len(self.ids) or self.ids[pos] != item_id:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        sims, rows = self.index.search(self.index.vectors(np.array([pos])), k + 1)
        keep = rows[0] != pos
        return self.ids[rows[0][keep]][:k], sims[0][keep][:k]


def item_index(store: Store) -> ItemIndex:
    """Build the cosine faiss index over every item with cached features (reads the whole feature cache)."""
    feats = project_features(store)
    if feats.problem is not None:
        return ItemIndex(np.zeros(0, np.int64), None, feats.problem)
    order = np.argsort(feats.ids, kind="stable")
    return ItemIndex(feats.ids[order], NeighbourIndex(feats.X[order], metric="cosine"))


def more_like_this(store: Store, index: ItemIndex, item_id: int, *, k: int = 12,
                   annotator: str | None = None) -> pd.DataFrame:
    """The ``k`` nearest neighbours of an item, most similar first, with what is known about each.

    Parameters
    ----------
    index : ItemIndex
        From :func:`item_index` (the page caches it).
    item_id : int
        The item shown.
    k : int
        Neighbours (1 .. 100).
    annotator : str, optional
        Whose votes fill the ``mine`` column.

    Returns
    -------
    pandas.DataFrame
        Up to ``k`` rows: item_id, similarity (cosine), consensus (label or None), confirmed (bool), mine (this
        annotator's active label on it, or None). Empty when the item has no cached features.
    """
    ok = isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= 100
    check_param(_OWNER, "k", k, ok, "an int in [1, 100]")
    ids, sims = index.neighbours(int(item_id), int(k))
    out = pd.DataFrame({"item_id": ids.astype(np.int64), "similarity": sims.astype(float)})
    cons = {r["item_id"]: (r["label"], bool(r["confirmed"])) for r in store.conn.execute(
        f"SELECT item_id, label, confirmed FROM consensus WHERE item_id IN ({','.join('?' * len(ids))})",
        [int(i) for i in ids])} if len(ids) else {}
    out["consensus"] = [cons.get(int(i), (None, False))[0] for i in ids]
    out["confirmed"] = [cons.get(int(i), (None, False))[1] for i in ids]
    mine: dict[int, str] = {}
    if annotator and len(ids):
        for v in store.active_votes([int(i) for i in ids], kinds=("human", "bulk")):
            if v["annotator"] == annotator:
                mine[v["item_id"]] = v["label"]
    out["mine"] = [mine.get(int(i)) for i in ids]
    return out


def label_similar(store: Store, item_ids: Sequence[int], label: str, *, annotator: str) -> list[int]:
    """Label the chosen neighbours with ``label`` in ONE bulk action by ``annotator``.

    Items the annotator already voted on are left alone (one vote per annotator and item; undo to change it).
    Returns the ids of the items labelled; :meth:`core.store.project_store.Store.undo_last` retracts them all.
    """
    annotator = validate_annotator_name(annotator)
    check_choice("label_similar", "label", label, store.labels())
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        return []
    new = store.annotate_many([(i, label) for i in ids], annotator=annotator, kind="bulk", first_vote_only=True)
    if not new:
        return []
    rows = store.conn.execute(f"SELECT item_id FROM annotations WHERE id IN ({','.join('?' * len(new))})", new)
    return sorted(r[0] for r in rows)
