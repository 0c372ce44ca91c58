"""Consensus on identity pair decisions, and the must-link / cannot-link constraints they give re-identification.

Annotators mark two items "same" or "different" (:mod:`core.store.pair_votes`). Several annotators may
decide the same pair; the decisions go through the project's item consensus rule, in one place:

- each annotator counts once per pair: their latest active vote (as for item labels, :mod:`core.labels.votes`);
- the votes form an (n_pairs, n_annotators) label matrix over the classes ``("same", "different")`` with NaN
  for a missing vote, decided by :func:`core.labels.methods.majority_vote` (a tie gives no decision);
- a decision is *confirmed* as an item is under majority vote (:func:`core.labels.methods.majority`): its
  leading decision has at least the project's ``min_votes`` votes and no tie.

Pairs always use majority vote, whatever the project's item method: Dawid-Skene and model-aware consensus are
fitted on the item label matrix (their annotator confusions are over the item classes, and there is no model
probability for a pair), so they do not apply to pair decisions; their ``min_confidence`` is not used here.

Confirmed "same" pairs become must-links and confirmed "different" pairs cannot-links of the next
re-identification clustering (:func:`confirmed_links`). :func:`merge_identities` and :func:`split_identity`
write the votes of one merge or split as one batch, so that one undo (``Store.undo_last_pair_votes``)
retracts it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from core.errors import ValidationError, check_param, is_int
from core.labels import engine as consensus_engine
from core.labels import methods as cm
from core.store.schema import PAIR_DECISIONS
from core.store.settings import validate_annotator_name

if TYPE_CHECKING:
    from core.store.project_store import Store

#: class index of each decision in the pair label matrix
SAME, DIFFERENT = PAIR_DECISIONS.index("same"), PAIR_DECISIONS.index("different")


@dataclass(frozen=True)
class PairDecision:
    """Consensus of one pair of items.

    ``decision`` is "same", "different" or None (a tie); ``support`` the votes for the leading decision,
    ``agreement`` their share of the pair's ``n_votes``; ``confirmed`` as for an item under majority vote.
    """

    item_a: int
    item_b: int
    decision: str | None
    support: int
    n_votes: int
    agreement: float | None
    confirmed: bool


@dataclass(frozen=True, eq=False)
class PairVoteMatrix:
    """The counting pair votes as a label matrix.

    Attributes
    ----------
    pairs : ndarray (n, 2) int64      item ids ``(item_a, item_b)`` with ``item_a < item_b``, ascending
    annotators : list[str]            (m,) column names, ascending
    L : ndarray (n, m) float          index into :data:`PAIR_DECISIONS`, NaN where the annotator did not vote
    """

    pairs: np.ndarray
    annotators: list[str]
    L: np.ndarray


@dataclass(frozen=True, eq=False)
class PairTable:
    """Consensus of many pairs, as arrays.

    Attributes
    ----------
    pairs : ndarray (n, 2) int64      item ids, ``item_a < item_b``, ascending
    label : ndarray (n,) int64        index into :data:`PAIR_DECISIONS`, -1 on a tie
    support : ndarray (n,) int64      votes for the leading decision
    n_votes : ndarray (n,) int64
    agreement : ndarray (n,) float    ``support / n_votes``
    confirmed : ndarray (n,) bool
    """

    pairs: np.ndarray
    label: np.ndarray
    support: np.ndarray
    n_votes: np.ndarray
    agreement: np.ndarray
    confirmed: np.ndarray


def pair_vote_matrix(rows: Sequence[Any]) -> PairVoteMatrix:
    """Each annotator's latest vote per pair, as a label matrix.

    Parameters
    ----------
    rows : sequence of rows
        Active pair votes oldest first, with ``item_a``, ``item_b``, ``annotator``, ``decision`` (keys), as
        ``Store.active_pair_votes`` returns them; a later vote of an annotator on a pair replaces the earlier.

    Returns
    -------
    PairVoteMatrix
    """
    if not rows:
        return PairVoteMatrix(np.empty((0, 2), np.int64), [], np.empty((0, 0)))
    ab = np.array([(r["item_a"], r["item_b"]) for r in rows], dtype=np.int64)
    names = np.array([r["annotator"] for r in rows], dtype=object)
    codes = np.array([PAIR_DECISIONS.index(r["decision"]) for r in rows], dtype=np.float64)
    pairs, row = np.unique(ab, axis=0, return_inverse=True)
    annotators, col = np.unique(names.astype(str), return_inverse=True)
    row, col = row.ravel(), col.ravel()
    key = row * len(annotators) + col
    _, last = np.unique(key[::-1], return_index=True)
    last = len(key) - 1 - last  # each (pair, annotator)'s newest vote
    L = np.full((len(pairs), len(annotators)), np.nan)
    L[row[last], col[last]] = codes[last]
    return PairVoteMatrix(pairs, annotators.tolist(), L)


def consensus_of_matrix(votes: PairVoteMatrix, *, min_votes: int) -> PairTable:
    """Majority vote on a pair label matrix and its confirmation with ``min_votes``.

    Parameters
    ----------
    votes : PairVoteMatrix
        ``L`` (n, m).
    min_votes : int
        Votes for the leading decision that confirm it (the project's setting, >= 1).

    Returns
    -------
    PairTable
    """
    n = len(votes.pairs)
    if n == 0:
        empty = np.empty(0, np.int64)
        return PairTable(votes.pairs, empty, empty, empty, np.empty(0), np.empty(0, bool))
    table = cm.majority_vote(votes.L, n_classes=len(PAIR_DECISIONS))
    counts = np.sort(cm.vote_counts(votes.L, len(PAIR_DECISIONS)), axis=1).astype(np.int64)
    support = counts[:, -1]
    label = table.label.astype(np.int64)
    confirmed = cm.majority_confirmed(support, counts[:, -2], min_votes)
    return PairTable(votes.pairs, label, support, table.n_votes.astype(np.int64), table.agreement, confirmed)


def pair_table(store: Store, item_ids: Sequence[int] | None = None) -> PairTable:
    """The consensus of every voted pair (or of the pairs touching ``item_ids``) under the project's ``min_votes``.

    Parameters
    ----------
    store : Store
    item_ids : sequence of int, optional
        Only pairs with at least one of these items.

    Returns
    -------
    PairTable
    """
    min_votes = consensus_engine.settings(store)["min_votes"]
    return consensus_of_matrix(pair_vote_matrix(store.active_pair_votes(item_ids)), min_votes=min_votes)


def pair_consensus(store: Store, item_ids: Sequence[int] | None = None) -> list[PairDecision]:
    """The consensus of each voted pair, ordered by ``(item_a, item_b)``.

    Each annotator's latest active vote per pair counts; majority vote decides and the project's
    ``min_votes`` confirms (ties are never confirmed). See the module docstring for why pairs use majority
    vote under every item consensus method.

    Parameters
    ----------
    store : Store
    item_ids : sequence of int, optional
        Only pairs with at least one of these items.

    Returns
    -------
    list[PairDecision]
    """
    t = pair_table(store, item_ids)
    return [PairDecision(int(a), int(b), None if k < 0 else PAIR_DECISIONS[k], int(s), int(n), float(g), bool(c))
            for (a, b), k, s, n, g, c in zip(t.pairs.tolist(), t.label.tolist(), t.support.tolist(),
                                              t.n_votes.tolist(), t.agreement.tolist(), t.confirmed.tolist())]


def _as_pairs(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64) if len(value) else np.empty((0, 2), np.int64)
    check_param("PairLinks", name, f"an array of shape {arr.shape}", arr.ndim == 2 and arr.shape[1] == 2,
                "an (n, 2) array of item ids")
    return arr


@dataclass(frozen=True, eq=False)
class PairLinks:
    """Confirmed pair constraints of a re-identification clustering.

    Attributes
    ----------
    must : ndarray (p, 2) int64     pairs that are the same identity (item ids, or row indices after :meth:`rows`)
    cannot : ndarray (q, 2) int64   pairs that are different identities
    """

    must: np.ndarray
    cannot: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "must", _as_pairs("must", self.must))
        object.__setattr__(self, "cannot", _as_pairs("cannot", self.cannot))

    @property
    def n_must(self) -> int:
        return int(len(self.must))

    @property
    def n_cannot(self) -> int:
        return int(len(self.cannot))

    def rows(self, item_ids: np.ndarray) -> "PairLinks":
        """The links as row indices into ``item_ids``; a pair with an item not in it is dropped.

        Parameters
        ----------
        item_ids : ndarray (n,) int
            Distinct item ids (the rows of an embedding matrix, say).

        Returns
        -------
        PairLinks
            ``must`` (p', 2) and ``cannot`` (q', 2) int64 row indices, each row ascending.
        """
        ids = np.asarray(item_ids)
        check_param("PairLinks.rows", "item_ids", f"an array of shape {ids.shape} and dtype {ids.dtype}",
                    ids.ndim == 1 and (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)),
                    "a 1-D array of integer item ids")
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order].astype(np.int64)
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if len(dup):
            raise ValidationError(f"The 'item_ids' parameter of PairLinks.rows must hold distinct ids. Got "
                                  f"{int(dup[0])} more than once.")
        return PairLinks(_to_rows(self.must, sorted_ids, order), _to_rows(self.cannot, sorted_ids, order))


def _to_rows(pairs: np.ndarray, sorted_ids: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Map item-id pairs (p, 2) to row indices through ``sorted_ids`` (n,) and ``order`` (n,); (p', 2) int64."""
    if len(sorted_ids) == 0 or len(pairs) == 0:
        return np.empty((0, 2), np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, pairs), 0, len(sorted_ids) - 1)
    keep = (sorted_ids[pos] == pairs).all(1)
    return np.sort(order[pos[keep]], axis=1).astype(np.int64)


def confirmed_links(store: Store) -> PairLinks:
    """Must-links (confirmed "same") and cannot-links (confirmed "different") of the project, as item ids.

    Returns
    -------
    PairLinks
        ``must`` (p, 2) and ``cannot`` (q, 2) int64 item ids, ``item_a < item_b``, ascending.
    """
    t = pair_table(store)
    return PairLinks(t.pairs[t.confirmed & (t.label == SAME)], t.pairs[t.confirmed & (t.label == DIFFERENT)])


def _item_list(owner: str, name: str, value: Sequence[int]) -> np.ndarray:
    """Distinct item ids (k,) int64 of a non-empty list, in the order first given."""
    arr = np.asarray(value)
    check_param(owner, name, value, arr.ndim == 1 and arr.size > 0 and np.issubdtype(arr.dtype, np.integer),
                "a non-empty list of item ids")
    _, first = np.unique(arr, return_index=True)
    return arr[np.sort(first)].astype(np.int64)


def _star(anchor: int, members: np.ndarray) -> np.ndarray:
    """Pairs (k, 2) ``(anchor, member)`` for each of ``members`` (m,) other than ``anchor`` itself."""
    others = members[members != anchor]
    return np.column_stack([np.full(len(others), anchor, np.int64), others])


def _own_latest(store: Store, annotator: str, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The annotator's latest active decision on the pairs within ``items`` (k,): pairs (n, 2) and codes (n,)."""
    rows = [r for r in store.active_pair_votes(items.tolist()) if r["annotator"] == annotator]
    votes = pair_vote_matrix(rows)
    inside = np.isin(votes.pairs, items).all(1)
    codes = votes.L[:, 0] if votes.L.shape[1] else np.empty(0)
    return votes.pairs[inside], codes[inside]


def _cross(pairs: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(n,) bool: whether each pair (n, 2) has one item in ``left`` and the other in ``right``."""
    a, b = np.isin(pairs, left), np.isin(pairs, right)
    return (a[:, 0] & b[:, 1]) | (b[:, 0] & a[:, 1])


def _write_batch(store: Store, annotator: str, same: np.ndarray, different: np.ndarray) -> str:
    """Write "same" votes on ``same`` (s, 2) and "different" votes on ``different`` (d, 2) as one batch."""
    batch = uuid.uuid4().hex
    with store.transaction():
        store.vote_pairs(same, "same", annotator=annotator, batch=batch)
        store.vote_pairs(different, "different", annotator=annotator, batch=batch)
    return batch


def merge_identities(store: Store, items_a: Sequence[int], items_b: Sequence[int], *, annotator: str) -> str:
    """Mark two (pseudo-)identities as one: "same" votes from the anchor ``items_a[0]`` to every other item of
    ``items_a`` and ``items_b``, written as one batch (one undo retracts the merge).

    Where the annotator's own latest vote on a pair within the merged items says "different", a "same" vote
    on that pair joins the batch too, so that their decisions do not contradict the merge.

    Parameters
    ----------
    items_a, items_b : sequence of int
        The members of the two identities (non-empty; an item in both counts once).
    annotator : str

    Returns
    -------
    str
        The batch id of the votes written.
    """
    annotator = validate_annotator_name(annotator)
    a = _item_list("merge_identities", "items_a", items_a)
    b = _item_list("merge_identities", "items_b", items_b)
    union = np.concatenate([a, b[~np.isin(b, a)]])
    check_param("merge_identities", "items_b", list(items_b), len(union) > 1,
                "a list with an item other than the anchor items_a[0]")
    star = _star(int(a[0]), union)
    pairs, codes = _own_latest(store, annotator, union)
    return _write_batch(store, annotator, np.concatenate([star, pairs[codes == DIFFERENT]]), np.empty((0, 2)))


def split_identity(store: Store, keep: Sequence[int], split: Sequence[int], *, annotator: str) -> str:
    """Split an identity in two: "same" votes star-wise within ``keep`` (anchor ``keep[0]``) and within ``split``
    (anchor ``split[0]``), and one "different" vote between the two anchors, written as one batch.

    Where the annotator's own latest vote contradicts the split (a "same" across the parts, a "different"
    within one), the batch also holds the opposite vote on that pair, so their decisions stay consistent and
    one undo restores them.

    Parameters
    ----------
    keep, split : sequence of int
        The two parts (non-empty, no item in both).
    annotator : str

    Returns
    -------
    str
        The batch id of the votes written.

    Raises
    ------
    ValidationError
        An empty part, or parts that share an item.
    """
    annotator = validate_annotator_name(annotator)
    k = _item_list("split_identity", "keep", keep)
    s = _item_list("split_identity", "split", split)
    both = k[np.isin(k, s)]
    if len(both):
        raise ValidationError(f"The 'split' parameter of split_identity must not share items with 'keep'. Got "
                              f"item(s) {both[:5].tolist()} in both; put each item in one part.")
    pairs, codes = _own_latest(store, annotator, np.concatenate([k, s]))
    across = _cross(pairs, k, s)
    same = np.concatenate([_star(int(k[0]), k), _star(int(s[0]), s), pairs[~across & (codes == DIFFERENT)]])
    different = np.concatenate([[[k[0], s[0]]], pairs[across & (codes == SAME)]]).astype(np.int64)
    return _write_batch(store, annotator, same, different)


def decisions_for(store: Store, query: int, annotator: str | None = None) -> dict[int, str]:
    """The decided pairs involving ``query``: the other item -> "same" / "different".

    Parameters
    ----------
    query : int
        An item id.
    annotator : str, optional
        Given: that annotator's latest active vote on each pair. None: the consensus decision (pairs whose
        votes tie are left out; decided but unconfirmed pairs are in).

    Returns
    -------
    dict[int, str]
    """
    check_param("decisions_for", "query", query, is_int(query), "an item id (int)")
    if annotator is None:
        t = pair_table(store, [int(query)])
        pairs, codes = t.pairs[t.label >= 0], t.label[t.label >= 0]
    else:
        annotator = validate_annotator_name(annotator)
        rows = [r for r in store.active_pair_votes([int(query)]) if r["annotator"] == annotator]
        votes = pair_vote_matrix(rows)
        pairs, codes = votes.pairs, (votes.L[:, 0] if len(votes.pairs) else np.empty(0)).astype(np.int64)
    other = np.where(pairs[:, 0] == int(query), pairs[:, 1], pairs[:, 0])
    return {int(o): PAIR_DECISIONS[int(c)] for o, c in zip(other.tolist(), codes.tolist())}
