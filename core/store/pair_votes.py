"""Identity pair decisions: append-only "same" / "different" votes on two items, and their retractions (undo).

An annotator comparing a query person crop with its ranked matches marks each pair "same" or "different"
(schema v4, tables ``pair_votes`` and ``pair_retractions``). A pair is stored normalised as
``(item_a, item_b)`` with ``item_a < item_b``. Nothing is ever deleted: undo writes a row into
``pair_retractions``; the votes of one multi-pair action (a merge or a split of identities) share a ``batch``
id and are undone as one. Consensus over the votes is :mod:`core.labels.pairs`.
"""
from __future__ import annotations

import sqlite3
from typing import Sequence

import numpy as np

from core.errors import ValidationError, check_choice, check_param
from core.store.connection import StoreBase, chunks, now, placeholders
from core.store.schema import PAIR_DECISIONS
from core.store.settings import validate_annotator_name

_ACTIVE = ("SELECT v.id, v.item_a, v.item_b, v.annotator, v.decision, v.batch, v.created_at FROM pair_votes v "
           "LEFT JOIN pair_retractions r ON r.vote_id = v.id WHERE r.vote_id IS NULL")


def normalise_pairs(pairs: Sequence[tuple[int, int]] | np.ndarray) -> np.ndarray:
    """Pairs of item ids as ``(min, max)`` rows, duplicates dropped, in the order first given.

    Parameters
    ----------
    pairs : sequence of (int, int), or ndarray (n, 2) of integers

    Returns
    -------
    ndarray (m, 2) int64
        ``m <= n`` distinct pairs with ``[:, 0] < [:, 1]``.

    Raises
    ------
    ValidationError
        When ``pairs`` is not (n, 2) integers, or holds a self-pair ``(i, i)``.
    """
    try:
        arr = np.asarray(pairs if len(pairs) else np.empty((0, 2), np.int64))
    except ValueError:  # ragged: pairs of different lengths
        arr = np.empty((0, 0))
    ok = arr.ndim == 2 and arr.shape[1] == 2 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer))
    shown = pairs if len(pairs) <= 5 else f"{len(pairs)} pairs starting {list(pairs[:3])!r}"
    check_param("vote_pairs", "pairs", shown, ok, "a sequence of (item id, item id) pairs of integers")
    arr = np.sort(arr.astype(np.int64), axis=1)
    self_pairs = arr[arr[:, 0] == arr[:, 1]]
    if len(self_pairs):
        raise ValidationError(f"The 'pairs' parameter of vote_pairs must pair two different items. Got the pair "
                              f"({int(self_pairs[0, 0])}, {int(self_pairs[0, 1])}); drop it.")
    _, first = np.unique(arr, axis=0, return_index=True)
    return arr[np.sort(first)]


class PairVotesMixin(StoreBase):
    def vote_pairs(
        self,
        pairs: Sequence[tuple[int, int]] | np.ndarray,
        decision: str,
        *,
        annotator: str,
        batch: str | None = None,
        seconds: float | None = None,
    ) -> list[int]:
        """Record one annotator's ``decision`` on item pairs (append-only), in one transaction.

        Parameters
        ----------
        pairs : sequence of (int, int), or ndarray (n, 2)
            Item ids; each pair is stored as ``(min, max)``, a pair given twice once.
        decision : {"same", "different"}
        annotator : str
            Registered as an annotator when new (as :meth:`annotate` does).
        batch : str, optional
            Groups the votes of one multi-pair action (a merge or split) so that
            :meth:`undo_last_pair_votes` retracts them together; without it each vote is undone alone.
        seconds : float, optional
            Time the annotator took, when known (>= 0).

        Returns
        -------
        list[int]
            The new vote ids, one per distinct pair, in the order the pairs were first given.

        Raises
        ------
        ValidationError
            An unknown decision, a self-pair, an item id the project lacks, a bad annotator name or seconds.
        """
        check_choice("vote_pairs", "decision", decision, PAIR_DECISIONS)
        annotator = validate_annotator_name(annotator)
        check_param("vote_pairs", "seconds", seconds, seconds is None or (
            isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0),
            "a number >= 0 or None")
        check_param("vote_pairs", "batch", batch, batch is None or (isinstance(batch, str) and batch != ""),
                    "a non-empty string or None")
        arr = normalise_pairs(pairs)
        if len(arr) == 0:
            return []
        t = now()
        # one pair at a time is an annotator's decision; a batch (a merge or split) is a reviewer's
        permission = "vote_pairs" if batch is None else "merge_identities"
        with self.transaction() as conn:
            role = self.authorize(annotator, permission, conn)
            self._check_items(conn, np.unique(arr))
            self._ensure_annotator(conn, annotator)
            last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM pair_votes").fetchone()[0]
            conn.executemany(
                "INSERT INTO pair_votes (item_a, item_b, annotator, decision, batch, seconds, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(a, b, annotator, decision, batch, seconds, t) for a, b in arr.tolist()])
            self.audit(conn, annotator, "pair_vote" if batch is None else "pair_batch", role=role, n=len(arr),
                       decision=decision, pairs=arr[:20].tolist(), batch=batch)
            # the write lock is held: the rows above the previous maximum are this call's, in insertion order
            return [r[0] for r in conn.execute("SELECT id FROM pair_votes WHERE id > ? ORDER BY id", (last,))]

    @staticmethod
    def _check_items(conn: sqlite3.Connection, item_ids: np.ndarray) -> None:
        """Raise a ValidationError naming the ids of ``item_ids`` (m,) that are not items of the project."""
        known: set[int] = set()
        for chunk in chunks(item_ids.tolist()):
            known.update(r[0] for r in conn.execute(
                f"SELECT id FROM items WHERE id IN ({placeholders(len(chunk))})", chunk))
        missing = sorted(set(item_ids.tolist()) - known)
        if missing:
            raise ValidationError(f"The 'pairs' parameter of vote_pairs must name items of this project. Got the "
                                  f"unknown item id(s) {missing[:5]}.")

    def retract_pair_votes(self, vote_ids: Sequence[int], *, by: str, _action: str = "retract_pairs") -> int:
        """Retract pair votes (undo); nothing is deleted. Returns how many were newly retracted.

        Parameters
        ----------
        vote_ids : sequence of int
            Ids of ``pair_votes`` rows; one already retracted is left as it is.
        by : str
            Who retracts (recorded with the retraction).

        Raises
        ------
        ValidationError
            An id that names no pair vote (nothing is retracted then).
        """
        by = validate_annotator_name(by)
        ids = sorted({int(v) for v in vote_ids})
        if not ids:
            return 0
        with self.transaction() as conn:
            known: set[int] = set()
            for chunk in chunks(ids):
                known.update(r[0] for r in conn.execute(
                    f"SELECT id FROM pair_votes WHERE id IN ({placeholders(len(chunk))})", chunk))
            missing = [i for i in ids if i not in known]
            if missing:
                raise ValidationError(f"The 'vote_ids' parameter of retract_pair_votes must name pair votes. "
                                      f"Got the unknown id(s) {missing[:5]}.")
            owners: set[str] = set()
            for chunk in chunks(ids):
                owners.update(r[0] for r in conn.execute(
                    f"SELECT DISTINCT annotator FROM pair_votes WHERE id IN ({placeholders(len(chunk))})", chunk))
            role = self.authorize(by, "undo_own" if owners <= {by} else "retract_others", conn)
            cur = conn.executemany(
                "INSERT OR IGNORE INTO pair_retractions (vote_id, annotator, created_at) VALUES (?, ?, ?)",
                [(i, by, now()) for i in ids])
            if cur.rowcount:
                self.audit(conn, by, _action, role=role, n=int(cur.rowcount), votes=ids[:20])
            return int(cur.rowcount)

    def undo_last_pair_votes(self, annotator: str) -> list[int]:
        """Retract the annotator's newest active pair vote, or its whole batch when it has one.

        Returns
        -------
        list[int]
            The ids of the votes retracted, ascending (empty when there was nothing to undo).
        """
        annotator = validate_annotator_name(annotator)
        with self.transaction() as conn:
            row = conn.execute(_ACTIVE + " AND v.annotator = ? ORDER BY v.id DESC LIMIT 1", (annotator,)).fetchone()
            if row is None:
                return []
            if row["batch"] is None:
                ids = [int(row["id"])]
            else:
                ids = [int(r[0]) for r in conn.execute(
                    _ACTIVE + " AND v.annotator = ? AND v.batch = ? ORDER BY v.id", (annotator, row["batch"]))]
            self.retract_pair_votes(ids, by=annotator, _action="undo_pairs")
        return ids

    def active_pair_votes(self, item_ids: Sequence[int] | None = None) -> list[sqlite3.Row]:
        """Active (not retracted) pair votes, oldest first.

        Parameters
        ----------
        item_ids : sequence of int, optional
            Only the votes on a pair with at least one of these items.

        Returns
        -------
        list[sqlite3.Row]
            Rows with ``id, item_a, item_b, annotator, decision, batch, created_at``.
        """
        if item_ids is None:
            return self.conn.execute(_ACTIVE + " ORDER BY v.id").fetchall()
        by_id: dict[int, sqlite3.Row] = {}
        for chunk in chunks(sorted({int(i) for i in item_ids}), 450):  # two IN lists per query
            marks = placeholders(len(chunk))
            q = _ACTIVE + f" AND (v.item_a IN ({marks}) OR v.item_b IN ({marks}))"
            by_id.update((r["id"], r) for r in self.conn.execute(q, chunk + chunk))
        return [by_id[i] for i in sorted(by_id)]
