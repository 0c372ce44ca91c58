"""Annotations: append-only votes, retractions (undo), and the consensus rows derived from them.

Nothing is ever deleted: undo writes a row into ``retractions``; a bulk action shares a ``batch`` id and is
undone as one. The consensus of an item is recomputed (:mod:`core.labels.engine`) in the same transaction as
the vote that changes it.
"""
from __future__ import annotations

import sqlite3
import uuid
from typing import Sequence

import numpy as np

from core.errors import ValidationError, check_choice
from core.labels import engine as consensus_engine
from core.store.connection import StoreBase, chunks, now, placeholders
from core.store.schema import ANNOTATION_KINDS
from core.store.settings import validate_annotator_name

HUMAN_KINDS = ("human", "bulk", "adjudication")
#: audit action of a vote write, by its permission (others are named as their permission)
_ACTIONS = {"label": "vote", "import": "import_labels"}


def vote_permission(kind: str, for_someone_else: bool = False) -> str:
    """The permission a vote of ``kind`` needs (:data:`core.auth.roles.PERMISSIONS`); writing votes under
    another annotator's name is an import.

    >>> vote_permission("human"), vote_permission("adjudication"), vote_permission("human", True)
    ('label', 'adjudicate', 'import')
    """
    if for_someone_else:
        return "import"
    return {"human": "label", "bulk": "bulk_label", "adjudication": "adjudicate", "machine": "retrain"}[kind]


def _sample(pairs: Sequence[tuple[int, str]], k: int = 20) -> dict:
    """Audit details of a vote write: the item ids and labels of up to ``k`` pairs, and the label counts."""
    counts: dict[str, int] = {}
    for _, label in pairs:
        counts[label] = counts.get(label, 0) + 1
    return {"items": [int(i) for i, _ in pairs[:k]], "labels": counts}


class AnnotationsMixin(StoreBase):
    def annotate(
        self,
        item_id: int,
        annotator: str,
        label: str,
        *,
        kind: str = "human",
        seconds: float | None = None,
        first_vote_only: bool = False,
        by: str | None = None,
    ) -> int | None:
        """Record one vote (append-only) and update the item's consensus in the same transaction.

        With ``first_vote_only`` nothing is written (and None returned) when the annotator already has an
        active human or bulk vote on the item: checked inside the write transaction, so two requests racing
        (a key pressed twice before the page redrew) cannot both vote.
        """
        ids = self.annotate_many([(item_id, label)], annotator=annotator, kind=kind, seconds=seconds,
                                 first_vote_only=first_vote_only, by=by)
        return ids[0] if ids else None

    def annotate_many(
        self,
        pairs: Sequence[tuple[int, str]],
        *,
        annotator: str,
        kind: str = "human",
        run_id: int | None = None,
        round: int | None = None,
        confidences: Sequence[float] | None = None,
        seconds: float | None = None,
        skip_existing: bool = False,
        first_vote_only: bool = False,
        by: str | None = None,
        permission: str | None = None,
    ) -> list[int]:
        """Record votes ``(item_id, label)`` by one annotator in one transaction.

        Bulk actions (``kind="bulk"``) share a batch id so that one undo retracts them all. With
        ``skip_existing`` a vote identical to an active one by the same annotator is not written again
        (re-importing a manifest adds nothing). Returns the new annotation ids.

        ``by`` is who writes (default: ``annotator``); writing someone else's votes is an import. The write
        needs the permission of its kind (:func:`vote_permission`, or ``permission`` when given, e.g.
        ``accept_pseudo_labels``) and is audited in the same transaction.
        """
        check_choice("annotate", "kind", kind, ANNOTATION_KINDS)
        annotator = validate_annotator_name(annotator)
        actor = annotator if by is None else by
        permission = permission or vote_permission(kind, annotator != actor)
        labels = set(self.labels())
        for item_id, label in pairs:
            if label not in labels:
                raise ValidationError(
                    f"The 'label' parameter must be one of the project's labels {sorted(labels)}. Got {label!r}; "
                    "add it to the label set first."
                )
        batch = uuid.uuid4().hex if kind in ("bulk", "machine") and len(pairs) > 1 else None
        ids: list[int] = []
        t = now()
        with self.transaction() as conn:
            role = self.authorize(actor, permission, conn)
            self._ensure_annotator(conn, annotator)
            item_ids = [int(i) for i, _ in pairs]
            known = sorted(set(item_ids))
            self._check_item_ids(conn, known)
            existing: set[tuple[int, str]] = set()
            if skip_existing:
                existing = {(i, lab) for i, _, lab in self._active_of(conn, known, kind, [annotator])}
            voted: set[int] = set()
            if first_vote_only:
                for chunk in chunks(sorted(set(item_ids))):
                    q = ("SELECT a.item_id FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
                         "WHERE r.annotation_id IS NULL AND a.annotator = ? AND a.kind IN ('human', 'bulk') "
                         f"AND a.item_id IN ({','.join('?' * len(chunk))})")
                    voted.update(r[0] for r in conn.execute(q, [annotator, *chunk]))
            for k, (item_id, label) in enumerate(pairs):
                if (int(item_id), label) in existing or int(item_id) in voted:
                    continue
                if first_vote_only:
                    voted.add(int(item_id))
                conf = None if confidences is None else float(confidences[k])
                cur = conn.execute(
                    "INSERT INTO annotations (item_id, annotator, label, kind, run_id, round, confidence, batch, seconds,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (int(item_id), annotator, label, kind, run_id, round, conf, batch, seconds, t),
                )
                ids.append(cur.lastrowid)
                existing.add((int(item_id), label))
            if kind != "machine":
                consensus_engine.recompute(self, conn, sorted(set(item_ids)))
            if ids:
                self.audit(conn, actor, _ACTIONS.get(permission, permission), role=role, n=len(ids), annotator=annotator,
                           kind=kind, **_sample(pairs))
        return ids

    def annotate_rows(
        self,
        rows: Sequence[tuple[int, str, str]],
        *,
        kind: str = "human",
        by: str | None = None,
        skip_existing: bool = True,
    ) -> list[int]:
        """Record votes ``(item_id, annotator, label)`` of many annotators in ONE transaction (a bulk import of
        labels, ``python -m core annotate``): all are written or, on any error, none.

        Consensus is recomputed once for the touched items only. A vote identical to an active one of the same
        annotator and kind is not written again (``skip_existing``). ``by`` (default: the store's actor) needs
        the ``import`` permission when the rows name anyone else. Returns the new annotation ids.
        """
        check_choice("annotate_rows", "kind", kind, ("human", "bulk", "adjudication"))
        actor = self.actor(by)
        valid = {a: validate_annotator_name(a) for a in {a for _, a, _ in rows}}  # each name once
        clean = [(int(i), valid[a], lab) for i, a, lab in rows]
        labels = set(self.labels())
        bad = sorted({lab for _, _, lab in clean if lab not in labels})
        if bad:
            raise ValidationError(f"The 'label' parameter must be one of the project's labels {sorted(labels)}. "
                                  f"Got {bad[:5]}; add them to the label set first.")
        names = sorted({a for _, a, _ in clean})
        permission = vote_permission(kind, names != [actor])
        item_ids = sorted({i for i, _, _ in clean})
        self._check_item_ids(self.conn, item_ids)  # items are never deleted: checked before taking the lock
        # read the touched items' votes before taking the write lock (the slow part at 10^6 rows); inside it,
        # only the items that got a vote or a retraction meanwhile are read again
        marker = self._vote_marker(self.conn)
        before = consensus_engine.active_votes_of(self, item_ids)
        ids: list[int] = []
        with self.transaction() as conn:
            role = self.authorize(actor, permission, conn)
            changed = sorted(self._changed_since(conn, marker) & set(item_ids))
            if changed:
                gone = set(changed)
                before = [v for v in before if v[0] not in gone] + consensus_engine.active_votes_of(self, changed)
            who = set(names)
            existing = {(i, a, lab) for i, a, lab, k in before if k == kind and a in who} if skip_existing else set()
            conn.executemany("INSERT OR IGNORE INTO annotators (name, created_at) VALUES (?, ?)",
                             [(a, now()) for a in names])
            new = []
            for row in clean:
                if row not in existing:
                    existing.add(row)
                    new.append(row)
            last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM annotations").fetchone()[0]
            t = now()
            conn.executemany("INSERT INTO annotations (item_id, annotator, label, kind, created_at) VALUES (?, ?, ?, ?, ?)",
                             [(i, a, lab, kind, t) for i, a, lab in new])
            # the write lock is held: the rows above the previous maximum are this call's, in insertion order
            ids = [r[0] for r in conn.execute("SELECT id FROM annotations WHERE id > ? ORDER BY id", (last,))]
            consensus_engine.recompute(self, conn, sorted({i for i, _, _ in new}),
                                       votes=[*before, *((i, a, lab, kind) for i, a, lab in new)])
            if ids:
                self.audit(conn, actor, _ACTIONS.get(permission, permission), role=role, n=len(ids), kind=kind,
                           annotators=names[:20], **_sample([(i, lab) for i, _, lab in new]))
        return ids

    @staticmethod
    def _vote_marker(conn: sqlite3.Connection) -> tuple[int, float]:
        """(newest annotation id, time): what :meth:`_changed_since` compares with."""
        return conn.execute("SELECT COALESCE(MAX(id), 0) FROM annotations").fetchone()[0], now()

    @staticmethod
    def _changed_since(conn: sqlite3.Connection, marker: tuple[int, float]) -> set[int]:
        """Items that got an annotation or a retraction after ``marker`` (both tables are append-only; a
        retraction is dated, and the second of margin only re-reads a few items needlessly)."""
        last, t = marker
        items = {r[0] for r in conn.execute("SELECT item_id FROM annotations WHERE id > ?", (last,))}
        items.update(r[0] for r in conn.execute(
            "SELECT a.item_id FROM retractions r JOIN annotations a ON a.id = r.annotation_id WHERE r.created_at >= ?",
            (t - 1.0,)))
        return items

    @staticmethod
    def _check_item_ids(conn: sqlite3.Connection, item_ids: Sequence[int]) -> None:
        """Raise a ValidationError naming the ids of ``item_ids`` that are no items of the project."""
        known: set[int] = set()
        for chunk in chunks(list(item_ids)):
            known.update(r[0] for r in conn.execute(f"SELECT id FROM items WHERE id IN ({placeholders(len(chunk))})",
                                                    chunk))
        missing = [i for i in item_ids if i not in known]
        if missing:
            raise ValidationError(f"The 'item_id' parameter must name items of this project. Got {missing[:5]}.")

    @staticmethod
    def _active_of(conn: sqlite3.Connection, item_ids: Sequence[int], kind: str,
                   annotators: Sequence[str]) -> list[tuple[int, str, str]]:
        """Active votes ``(item_id, annotator, label)`` of ``kind`` by ``annotators`` on ``item_ids`` (the
        touched items only: the cost does not grow with the project's other votes)."""
        out: list[tuple[int, str, str]] = []
        who = set(annotators)
        for chunk in chunks(list(item_ids)):
            q = ("SELECT a.item_id, a.annotator, a.label FROM annotations a LEFT JOIN retractions r "
                 "ON r.annotation_id = a.id WHERE r.annotation_id IS NULL AND a.kind = ? "
                 f"AND a.item_id IN ({placeholders(len(chunk))})")
            out.extend((r[0], r[1], r[2]) for r in conn.execute(q, [kind, *chunk]) if r[1] in who)
        return out

    def retract(self, annotation_ids: Sequence[int], *, by: str, _action: str = "retract") -> int:
        """Retract annotations (undo). Nothing is deleted; returns how many were newly retracted.

        Retracting one's own votes needs ``undo_own``; anyone else's ``retract_others`` (a reviewer).
        """
        n = 0
        with self.transaction() as conn:
            items, owners = set(), set()
            for aid in annotation_ids:
                row = conn.execute("SELECT item_id, annotator FROM annotations WHERE id = ?", (int(aid),)).fetchone()
                if row is None:
                    raise ValidationError(f"The 'annotation_id' parameter must name an annotation. Got {aid!r}.")
                items.add(row[0])
                owners.add(row[1])
            role = self.authorize(by, "undo_own" if owners <= {by} else "retract_others", conn)
            for aid in annotation_ids:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO retractions (annotation_id, annotator, created_at) VALUES (?, ?, ?)",
                    (int(aid), by, now()),
                )
                n += cur.rowcount
            consensus_engine.recompute(self, conn, sorted(items))
            if n:
                self.audit(conn, by, _action, role=role, n=n, annotations=sorted(int(a) for a in annotation_ids)[:20],
                           items=sorted(items)[:20])
        return n

    def undo_last(self, annotator: str) -> list[int]:
        """Retract the annotator's most recent active action (one vote, or a whole bulk batch).

        Returns the ids of the item(s) whose vote was undone (empty when there was nothing to undo).
        """
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT a.id, a.batch FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
                "WHERE r.annotation_id IS NULL AND a.annotator = ? AND a.kind != 'machine' ORDER BY a.id DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return []
            if row["batch"]:
                ids = [r[0] for r in conn.execute("SELECT id FROM annotations WHERE batch = ?", (row["batch"],))]
            else:
                ids = [row["id"]]
            items = [r[0] for r in conn.execute(
                f"SELECT DISTINCT item_id FROM annotations WHERE id IN ({','.join('?' * len(ids))})", ids)]
            self.retract(ids, by=annotator, _action="undo")
        return items

    def active_votes(self, item_ids: Sequence[int] | None = None, *, kinds: Sequence[str] = HUMAN_KINDS) -> list[sqlite3.Row]:
        """Active (not retracted) annotations of the given kinds, oldest first."""
        kind_sql = ",".join("?" * len(kinds))
        base = (
            "SELECT a.id, a.item_id, a.annotator, a.label, a.kind, a.confidence, a.run_id, a.seconds, a.created_at "
            "FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
            f"WHERE r.annotation_id IS NULL AND a.kind IN ({kind_sql})"
        )
        if item_ids is None:
            return self.conn.execute(base + " ORDER BY a.id", list(kinds)).fetchall()
        rows: list[sqlite3.Row] = []
        for chunk in chunks([int(i) for i in item_ids]):
            q = base + f" AND a.item_id IN ({','.join('?' * len(chunk))}) ORDER BY a.id"
            rows.extend(self.conn.execute(q, list(kinds) + chunk).fetchall())
        return rows

    def annotation_count(self, *, include_retracted: bool = True) -> int:
        if include_retracted:
            return self.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
        return self.conn.execute(
            "SELECT COUNT(*) FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
            "WHERE r.annotation_id IS NULL"
        ).fetchone()[0]

    def confirmed_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Items whose consensus is confirmed: (item ids (m,) int64, labels (m,) object)."""
        ids, labels, _ = self.confirmed_with_confidence()
        return ids, labels

    def confirmed_with_confidence(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Confirmed items: ids (m,) int64, labels (m,) object and the consensus confidence (m,) float32."""
        rows = self.conn.execute(
            "SELECT item_id, label, confidence FROM consensus WHERE confirmed = 1 ORDER BY item_id").fetchall()
        conf = np.array([1.0 if r[2] is None else r[2] for r in rows], dtype=np.float32)
        return (np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=object), conf)

    def consensus_rows(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM consensus ORDER BY item_id").fetchall()

    def pseudo_labels(self, run_id: int) -> list[sqlite3.Row]:
        """The machine annotations (pseudo-labels) a run stored: item_id, label, confidence, round."""
        return self.conn.execute(
            "SELECT item_id, label, confidence, round FROM annotations WHERE kind = 'machine' AND run_id = ? "
            "ORDER BY round, item_id", (int(run_id),)).fetchall()

    def annotated_item_ids(self) -> set[int]:
        """Items with at least one active human, bulk or adjudication vote."""
        return {v["item_id"] for v in self.active_votes()}
