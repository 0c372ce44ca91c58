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
from core.store.connection import StoreBase, chunks, now
from core.store.schema import ANNOTATION_KINDS
from core.store.settings import validate_annotator_name

HUMAN_KINDS = ("human", "bulk", "adjudication")


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
    ) -> int | None:
        """Record one vote (append-only) and update the item's consensus in the same transaction.

        With ``first_vote_only`` nothing is written (and None returned) when the annotator already has an
        active human or bulk vote on the item: checked inside the write transaction, so two requests racing
        (a key pressed twice before the page redrew) cannot both vote.
        """
        ids = self.annotate_many([(item_id, label)], annotator=annotator, kind=kind, seconds=seconds,
                                 first_vote_only=first_vote_only)
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
    ) -> list[int]:
        """Record votes ``(item_id, label)`` by one annotator in one transaction.

        Bulk actions (``kind="bulk"``) share a batch id so that one undo retracts them all. With
        ``skip_existing`` a vote identical to an active one by the same annotator is not written again
        (re-importing a manifest adds nothing). Returns the new annotation ids.
        """
        check_choice("annotate", "kind", kind, ANNOTATION_KINDS)
        annotator = validate_annotator_name(annotator)
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
            self._ensure_annotator(conn, annotator)
            item_ids = [int(i) for i, _ in pairs]
            known = set()
            for chunk in chunks(sorted(set(item_ids))):
                q = f"SELECT id FROM items WHERE id IN ({','.join('?' * len(chunk))})"
                known.update(r[0] for r in conn.execute(q, chunk))
            missing = [i for i in item_ids if i not in known]
            if missing:
                raise ValidationError(f"The 'item_id' parameter must name items of this project. Got {missing[:5]}.")
            existing: set[tuple[int, str]] = set()
            if skip_existing:
                q = (
                    "SELECT a.item_id, a.label FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
                    "WHERE r.annotation_id IS NULL AND a.annotator = ? AND a.kind = ?"
                )
                existing = {(r[0], r[1]) for r in conn.execute(q, (annotator, kind))}
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
        return ids

    def retract(self, annotation_ids: Sequence[int], *, by: str) -> int:
        """Retract annotations (undo). Nothing is deleted; returns how many were newly retracted."""
        n = 0
        with self.transaction() as conn:
            items = set()
            for aid in annotation_ids:
                row = conn.execute("SELECT item_id FROM annotations WHERE id = ?", (int(aid),)).fetchone()
                if row is None:
                    raise ValidationError(f"The 'annotation_id' parameter must name an annotation. Got {aid!r}.")
                cur = conn.execute(
                    "INSERT OR IGNORE INTO retractions (annotation_id, annotator, created_at) VALUES (?, ?, ?)",
                    (int(aid), by, now()),
                )
                n += cur.rowcount
                items.add(row[0])
            consensus_engine.recompute(self, conn, sorted(items))
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
            self.retract(ids, by=annotator)
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
