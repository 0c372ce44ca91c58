"""The project store: one SQLite database (through sqlite-utils) in a project folder a user can copy.

A project folder holds::

    project.db          items, annotations, consensus, runs, predictions, jobs (WAL mode)
    features/           feature caches, per extractor and version
    runs/<id>/          artefacts of each published model version (weights, probabilities)
    projections/        UMAP models and coordinates
    media/              media copied into the project (the demo's images, ``import --copy``)

This is the only module that writes SQL. Every write runs inside :meth:`Store.transaction`, which takes
SQLite's write lock up front (``BEGIN IMMEDIATE``) so that concurrent writers wait on the busy timeout
instead of failing with "database is locked". Each thread gets its own connection.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import sqlite_utils

from core.labels import methods as consensus_mod
from core.labels import params as cparams
from core.labels import matrix as votes_mod
from core.errors import ProjectNotFound, StoreError, ValidationError, check_choice, check_param
from core.store.schema import ANNOTATION_KINDS, MIGRATIONS, MODALITIES, SCHEMA_VERSION

DB_NAME = "project.db"
BUSY_TIMEOUT_S = 60.0
HUMAN_KINDS = ("human", "bulk", "adjudication")


def now() -> float:
    """Seconds since the epoch; the store keeps every timestamp in this form."""
    return time.time()


@dataclass(frozen=True)
class ItemRow:
    """One item as the engine sees it (``path`` resolved against its media root)."""

    id: int
    uri: str
    modality: str
    path: Path | None
    text: str | None
    group: str | None
    identity: str | None


class Store:
    """The project store of one project folder.

    Parameters
    ----------
    project_dir : path
        The project folder; it must hold ``project.db`` (use :meth:`create` for a new project).
    """

    def __init__(self, project_dir: str | os.PathLike):
        self.dir = Path(project_dir).resolve()
        self.path = self.dir / DB_NAME
        if not self.path.is_file():
            raise ProjectNotFound(
                f"No project at {self.dir}: {DB_NAME} is missing. Create one with "
                f"'python -m core init {project_dir} --modality image'."
            )
        self._local = threading.local()
        self._run_arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # one run's ids and memory-mapped proba
        self._migrate()

    # ------------------------------------------------------------------ connection and transactions
    @classmethod
    def create(
        cls,
        project_dir: str | os.PathLike,
        *,
        modality: str,
        name: str | None = None,
        labels: Sequence[str] = (),
        min_votes: int = 2,
        extractor: str | None = None,
    ) -> "Store":
        """Create a new project folder (or refuse when one exists there) and return its store."""
        check_choice("init", "modality", modality, MODALITIES)
        check_param("init", "min_votes", min_votes, isinstance(min_votes, int) and min_votes >= 1, "an int >= 1")
        pdir = Path(project_dir)
        if (pdir / DB_NAME).exists():
            raise StoreError(f"A project already exists at {pdir.resolve()}; open it instead of creating it.")
        pdir.mkdir(parents=True, exist_ok=True)
        for sub in ("features", "runs", "projections", "media"):
            (pdir / sub).mkdir(exist_ok=True)
        conn = sqlite3.connect(pdir / DB_NAME)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.commit()
        conn.close()
        store = cls(pdir)
        from core.features import default_extractor

        with store.transaction() as conn:
            settings = {
                "name": name or pdir.resolve().name,
                "modality": modality,
                "min_votes": min_votes,
                "extractor": extractor or default_extractor(modality),
                "created_at": now(),
            }
            for key, value in settings.items():
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))
        if labels:
            store.add_labels(labels)
        return store

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._local.db = sqlite_utils.Database(conn)
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's sqlite-utils view of the database, for reads."""
        self.conn  # noqa: B018 - opens the connection when needed
        return self._local.db

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one write transaction (``BEGIN IMMEDIATE``); roll back on any exception.

        Nested use joins the outer transaction.
        """
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The project at {self.dir} has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}; update the program before opening it."
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            script = MIGRATIONS[target - 1]
            try:
                conn.executescript(
                    "BEGIN IMMEDIATE;\n" + script
                    + f"\nINSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', '{target}');\nCOMMIT;"
                )
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # another process may have migrated in the meantime: accept that, re-raise otherwise
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if not row or int(row[0]) < target:
                    raise

    # ------------------------------------------------------------------ settings
    def settings(self) -> dict[str, Any]:
        """Project settings (name, modality, min_votes, extractor, ...)."""
        rows = self.conn.execute("SELECT key, value FROM meta WHERE key != 'schema_version'").fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def set_setting(self, key: str, value: Any) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))
            if key == "consensus_method":
                check_choice("settings", "consensus_method", value, cparams.METHODS)
            if key == "min_confidence":
                check_param("settings", "min_confidence", value,
                            isinstance(value, (int, float)) and 0 <= value <= 1, "a number in [0, 1]")
            if key in ("min_votes", "min_confidence"):
                self._recompute_consensus(conn, None)
        if key == "consensus_method":
            self.refit_consensus()

    @property
    def modality(self) -> str:
        return self.settings()["modality"]

    # ------------------------------------------------------------------ labels and annotators
    def labels(self) -> list[str]:
        """The label set, in display order."""
        return [r[0] for r in self.conn.execute("SELECT name FROM labels ORDER BY position, name")]

    def add_labels(self, names: Iterable[str]) -> list[str]:
        """Add labels (existing ones are kept); returns the labels that were new."""
        added = []
        with self.transaction() as conn:
            existing = {r[0] for r in conn.execute("SELECT name FROM labels")}
            pos = conn.execute("SELECT COALESCE(MAX(position), -1) FROM labels").fetchone()[0]
            for name in names:
                name = validate_label_name(name)
                if name in existing:
                    continue
                pos += 1
                conn.execute("INSERT INTO labels (name, position, created_at) VALUES (?, ?, ?)", (name, pos, now()))
                existing.add(name)
                added.append(name)
        return added

    def annotators(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM annotators ORDER BY name")]

    @staticmethod
    def _ensure_annotator(conn: sqlite3.Connection, name: str) -> None:
        conn.execute("INSERT OR IGNORE INTO annotators (name, created_at) VALUES (?, ?)", (name, now()))

    # ------------------------------------------------------------------ sources and items
    def add_source(self, root: Path, *, kind: str, spec: str) -> int:
        """Register a media root (idempotent) and return its id."""
        root = Path(root).resolve()
        try:
            stored = str(root.relative_to(self.dir))
        except ValueError:
            stored = str(root)
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO sources (root, kind, spec, created_at) VALUES (?, ?, ?, ?)",
                (stored, kind, spec, now()),
            )
            return conn.execute(
                "SELECT id FROM sources WHERE root = ? AND kind = ? AND spec = ?", (stored, kind, spec)
            ).fetchone()[0]

    def source_roots(self) -> dict[int, Path]:
        roots = {}
        for r in self.conn.execute("SELECT id, root FROM sources"):
            p = Path(r["root"])
            roots[r["id"]] = p if p.is_absolute() else self.dir / p
        return roots

    def item_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def item_ids(self) -> np.ndarray:
        """Every item id, ascending; shape (n,)."""
        return np.array([r[0] for r in self.conn.execute("SELECT id FROM items ORDER BY id")], dtype=np.int64)

    def items(self, ids: Sequence[int] | None = None) -> list[ItemRow]:
        """Items with their media paths resolved, in id order (or in the order of ``ids``)."""
        roots = self.source_roots()
        cols = "id, source_id, uri, modality, text, grp, identity"
        if ids is None:
            rows = self.conn.execute(f"SELECT {cols} FROM items ORDER BY id").fetchall()
        else:
            rows = []
            ids = [int(i) for i in ids]
            for chunk in _chunks(ids, 900):
                q = f"SELECT {cols} FROM items WHERE id IN ({','.join('?' * len(chunk))})"
                rows.extend(self.conn.execute(q, chunk).fetchall())
            order = {i: k for k, i in enumerate(ids)}
            rows.sort(key=lambda r: order[r["id"]])
        out = []
        for r in rows:
            path = None if r["uri"].startswith("text:") else roots[r["source_id"]] / uri_path(r["uri"])
            out.append(ItemRow(r["id"], r["uri"], r["modality"], path, r["text"], r["grp"], r["identity"]))
        return out

    def item(self, item_id: int) -> ItemRow:
        rows = self.items([item_id])
        if not rows:
            raise ValidationError(f"The 'item_id' parameter must name an item of this project. Got {item_id!r}.")
        return rows[0]

    def reference_labels(self) -> dict[int, str]:
        """Ground truth kept for evaluation: {item id: label}. Never show these to annotators."""
        q = "SELECT id, reference_label FROM items WHERE reference_label IS NOT NULL"
        return {r[0]: r[1] for r in self.conn.execute(q)}

    def existing_uris(self, source_id: int) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT uri FROM items WHERE source_id = ?", (source_id,))}

    def item_ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        hashes = list(set(hashes))
        found: dict[str, int] = {}
        for chunk in _chunks(hashes, 900):
            q = f"SELECT content_hash, MIN(id) FROM items WHERE content_hash IN ({','.join('?' * len(chunk))}) GROUP BY content_hash"
            found.update({r[0]: r[1] for r in self.conn.execute(q, chunk)})
        return found

    def item_id_for_uri(self, source_id: int, uri: str) -> int | None:
        row = self.conn.execute("SELECT id FROM items WHERE source_id = ? AND uri = ?", (source_id, uri)).fetchone()
        return row[0] if row else None

    def find_items_by_path(self, paths: Sequence[str]) -> dict[str, int]:
        """Map item paths (as ``uri``, absolute or relative to any media root) to item ids."""
        roots = self.source_roots()
        by_abs: dict[str, int] = {}
        by_uri: dict[str, list[int]] = {}
        for r in self.conn.execute("SELECT id, source_id, uri FROM items"):
            by_abs[str((roots[r["source_id"]] / uri_path(r["uri"])).resolve())] = r["id"]
            by_uri.setdefault(r["uri"], []).append(r["id"])
        out = {}
        for p in paths:
            if p in by_uri and len(by_uri[p]) == 1:
                out[p] = by_uri[p][0]
            elif str(Path(p).resolve()) in by_abs:
                out[p] = by_abs[str(Path(p).resolve())]
        return out

    # ------------------------------------------------------------------ annotations
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
            for chunk in _chunks(sorted(set(item_ids)), 900):
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
                for chunk in _chunks(sorted(set(item_ids)), 900):
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
                self._recompute_consensus(conn, sorted(set(item_ids)))
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
            self._recompute_consensus(conn, sorted(items))
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
        for chunk in _chunks([int(i) for i in item_ids], 900):
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

    # ------------------------------------------------------------------ consensus
    def consensus_settings(self) -> dict[str, Any]:
        """The consensus method, its thresholds and the fitted parameters in force."""
        s = self.settings()
        return {"method": s.get("consensus_method", "majority"), "min_votes": int(s.get("min_votes", 2)),
                "min_confidence": float(s.get("min_confidence", 0.9)),
                "params": cparams.ConsensusParams.from_json(s.get("consensus_params"))}

    def _recompute_consensus(self, conn: sqlite3.Connection, item_ids: Sequence[int] | None) -> None:
        """Recompute the consensus rows of ``item_ids`` (every item when None) inside ``conn``'s transaction.

        Majority vote needs no fit; Dawid-Skene and model-aware apply the parameters of their last fit
        (:meth:`refit_consensus`) to each item's votes, so a new vote counts at once.
        """
        cfg = self.consensus_settings()
        params = cfg["params"] if cfg["method"] != "majority" else None
        if params is not None and params.method != cfg["method"]:
            params = None  # not fitted yet for this method: majority until the fit lands
        votes = self.active_votes(item_ids)
        by_item: dict[int, list[consensus_mod.Vote]] = {}
        for v in votes:
            by_item.setdefault(v["item_id"], []).append(consensus_mod.Vote(v["annotator"], v["label"], v["kind"]))
        targets = list(by_item.keys() if item_ids is None else item_ids)
        proba = None
        if params is not None and params.method == "model_aware":
            proba = self.run_proba(params.run_id, targets, len(params.classes))
        if item_ids is None:
            conn.execute("DELETE FROM consensus")
        t = now()
        rows = []
        for k, item_id in enumerate(targets):
            res = cparams.item_consensus(params, by_item.get(item_id, []), min_votes=cfg["min_votes"],
                                         min_confidence=cfg["min_confidence"],
                                         proba_row=None if proba is None else proba[k])
            if res.n_votes == 0 and res.method != "adjudication":
                conn.execute("DELETE FROM consensus WHERE item_id = ?", (item_id,))
                continue
            rows.append((item_id, res.label, res.method, res.support, res.n_votes, res.agreement, res.confidence,
                         int(res.confirmed), t))
        conn.executemany(
            "INSERT OR REPLACE INTO consensus (item_id, label, method, support, n_votes, agreement, confidence,"
            " confirmed, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
        )

    def run_proba(self, run_id: int | None, item_ids: Sequence[int] | np.ndarray,
                  n_classes: int | None = None) -> np.ndarray | None:
        """The run's class probabilities (n, K) for ``item_ids`` (n,), NaN rows for items it did not predict.

        None without a run, when its files are gone, or when it has not ``n_classes`` columns (the label set
        grew since). The run's arrays are memory-mapped and kept for the last run asked.
        """
        if run_id is None:
            return None
        if run_id not in self._run_arrays:
            try:
                d = self.run_dir(self.run(run_id))
                arrays = (np.load(d / "item_ids.npy"), np.load(d / "proba.npy", mmap_mode="r"))
            except (OSError, ValidationError):
                return None
            self._run_arrays = {run_id: arrays}
        ids, proba = self._run_arrays[run_id]
        if len(ids) == 0 or (n_classes is not None and proba.shape[1] != n_classes):
            return None
        item_ids = np.asarray(item_ids, dtype=np.int64)
        out = np.full((len(item_ids), proba.shape[1]), np.nan)
        pos = np.clip(np.searchsorted(ids, item_ids), 0, len(ids) - 1)
        hit = ids[pos] == item_ids
        out[hit] = proba[pos[hit]]
        return out

    def recompute_consensus(self) -> None:
        """Recompute the consensus of every item (after a change of min_votes, say)."""
        with self.transaction() as conn:
            self._recompute_consensus(conn, None)

    def refit_consensus(self, method: str | None = None) -> dict[str, Any]:
        """Fit the project's consensus method (or ``method``, which becomes the project's method) on all votes
        and rewrite every consensus row.

        The fit reads the votes outside the write lock; the rows are then recomputed from the votes as they
        are at commit time, so a vote that arrived meanwhile is not lost. Model-aware uses the newest run's
        probabilities. Returns ``{"method", "seconds", "n_items", "n_confirmed", "summary"}``.
        """
        method = method or self.consensus_settings()["method"]
        check_choice("consensus", "method", method, cparams.METHODS)
        t0 = time.perf_counter()
        lm = votes_mod.label_matrix_from_votes(self.active_votes(kinds=("human", "bulk")), self.labels())
        run = self.run()
        proba = None
        if method == "model_aware" and run is not None:
            proba = self.run_proba(run["id"], lm.item_ids, len(lm.classes))
        if len(lm.item_ids) == 0 or not lm.classes:
            params = cparams.ConsensusParams(method, list(lm.classes), fitted_at=now())
        else:
            _, params = cparams.fit_params(method, lm.L, lm.annotators, lm.classes, proba=proba,
                                           run_id=None if run is None else run["id"], fitted_at=now())
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         ("consensus_method", json.dumps(method)))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         ("consensus_params", json.dumps(params.to_json())))
            self._recompute_consensus(conn, None)
        n_conf = self.conn.execute("SELECT COUNT(*) FROM consensus WHERE confirmed = 1").fetchone()[0]
        return {"method": method, "seconds": round(time.perf_counter() - t0, 3), "n_items": int(len(lm.item_ids)),
                "n_confirmed": int(n_conf), "summary": params.summary}

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

    # ------------------------------------------------------------------ runs and predictions
    def publish_run(
        self,
        *,
        model: str,
        config: dict,
        metrics: dict,
        artefact_dir: Path,
        classes: Sequence[str],
        item_ids: np.ndarray,
        labels: Sequence[str | None],
        confidences: np.ndarray,
        clusters: np.ndarray | None = None,
        coords: np.ndarray | None = None,
        n_labelled: int = 0,
        parent_id: int | None = None,
        job_id: int | None = None,
        extractor: str | None = None,
        device: str | None = None,
        train_seconds: float | None = None,
        pseudo_labels: Sequence[tuple[int, str, float, int]] = (),
    ) -> int:
        """Publish a finished model version and its predictions atomically; returns the run id.

        Arrays: ``item_ids`` (n,), ``confidences`` (n,), ``clusters`` (n,) or None, ``coords`` (n, 2) or None.
        ``pseudo_labels`` ``(item_id, label, confidence, round)`` are stored in the same transaction as machine
        annotations of the run (annotator ``model:<model>``); they never count towards the consensus.
        """
        n = len(item_ids)
        try:
            rel = str(Path(artefact_dir).resolve().relative_to(self.dir))
        except ValueError:
            rel = str(Path(artefact_dir).resolve())
        rows = (
            (
                int(item_ids[i]),
                labels[i],
                float(confidences[i]),
                None if clusters is None else int(clusters[i]),
                None if coords is None else float(coords[i, 0]),
                None if coords is None else float(coords[i, 1]),
            )
            for i in range(n)
        )
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO runs (model, config, metrics, parent_id, job_id, extractor, artefact_dir, device, n_items,"
                " n_labelled, classes, train_seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, json.dumps(config), json.dumps(metrics), parent_id, job_id, extractor, rel, device, n,
                 n_labelled, json.dumps(list(classes)), train_seconds, now()),
            )
            run_id = cur.lastrowid
            conn.executemany(
                "INSERT INTO predictions (run_id, item_id, label, confidence, cluster, x, y) VALUES "
                f"({run_id}, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if pseudo_labels:
                t = now()
                conn.execute("INSERT OR IGNORE INTO annotators (name, created_at) VALUES (?, ?)", (f"model:{model}", t))
                conn.executemany(
                    "INSERT INTO annotations (item_id, annotator, label, kind, run_id, round, confidence, batch, "
                    "seconds, created_at) VALUES (?, ?, ?, 'machine', ?, ?, ?, NULL, NULL, ?)",
                    [(int(i), f"model:{model}", lab, run_id, int(r), float(c), t) for i, lab, c, r in pseudo_labels],
                )
            if job_id is not None:
                conn.execute("UPDATE jobs SET run_id = ? WHERE id = ?", (run_id, job_id))
        return run_id

    def runs(self, model: str | None = None) -> list[dict]:
        q = "SELECT * FROM runs" + (" WHERE model = ?" if model else "") + " ORDER BY id DESC"
        return [_run_dict(r) for r in self.conn.execute(q, (model,) if model else ())]

    def run(self, run_id: int | None = None, *, model: str | None = None) -> dict | None:
        """The given run, or the newest published one (of ``model`` when given); None when there is none."""
        if run_id is not None:
            row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
            if row is None:
                raise ValidationError(f"The 'run' parameter must name a run of this project. Got {run_id!r}.")
            return _run_dict(row)
        runs = self.runs(model)
        return runs[0] if runs else None

    def run_dir(self, run: dict) -> Path:
        p = Path(run["artefact_dir"])
        return p if p.is_absolute() else self.dir / p

    def predictions(self, run_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT item_id, label, confidence, cluster, x, y FROM predictions WHERE run_id = ? ORDER BY item_id",
            (int(run_id),),
        ).fetchall()

    # ------------------------------------------------------------------ imports
    def record_import(self, *, source_id: int | None, spec: str, added: int, already_present: int, skipped: int,
                      annotations: int, report: list[dict]) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO imports (source_id, spec, added, already_present, skipped, annotations, report, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (source_id, spec, added, already_present, skipped, annotations, json.dumps(report), now()),
            )
            return cur.lastrowid

    def insert_items(self, conn: sqlite3.Connection, rows: Sequence[dict]) -> list[int]:
        """Insert item rows inside the caller's transaction; returns their ids."""
        ids = []
        t = now()
        for r in rows:
            cur = conn.execute(
                "INSERT INTO items (source_id, uri, modality, text, grp, identity, meta, reference_label, content_hash,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r["source_id"], r["uri"], r["modality"], r.get("text"), r.get("group"), r.get("identity"),
                 json.dumps(r.get("meta") or {}), r.get("reference_label"), r["content_hash"], t),
            )
            ids.append(cur.lastrowid)
        return ids

    # ------------------------------------------------------------------ overview
    def overview(self) -> dict[str, Any]:
        """Counts for the home page and ``status``."""
        c = self.conn
        one = lambda q: c.execute(q).fetchone()[0]  # noqa: E731
        latest = self.run()
        return {
            "project": self.settings().get("name"),
            "modality": self.modality,
            "items": one("SELECT COUNT(*) FROM items"),
            "labels": self.labels(),
            "annotators": one("SELECT COUNT(*) FROM annotators"),
            "labelled_items": one("SELECT COUNT(*) FROM consensus"),
            "confirmed_items": one("SELECT COUNT(*) FROM consensus WHERE confirmed = 1"),
            "mean_agreement": one("SELECT AVG(agreement) FROM consensus WHERE n_votes >= 2"),
            "annotations": one("SELECT COUNT(*) FROM annotations a LEFT JOIN retractions r ON r.annotation_id = a.id "
                               "WHERE r.annotation_id IS NULL AND a.kind != 'machine'"),
            "reference_labels": one("SELECT COUNT(*) FROM items WHERE reference_label IS NOT NULL"),
            "latest_run": None if latest is None else {k: latest[k] for k in ("id", "model", "metrics", "created_at")},
            "min_votes": self.settings().get("min_votes"),
        }


def _run_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in ("config", "metrics", "classes"):
        d[key] = json.loads(d[key])
    return d


def _chunks(seq: Sequence, size: int) -> Iterator[list]:
    seq = list(seq)
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def uri_path(uri: str) -> str:
    """The media path part of an item uri (image+caption items append ``#t=<caption hash>``)."""
    return uri.split("#t=", 1)[0]


def validate_label_name(name: Any) -> str:
    """Labels are non-empty strings of at most 100 characters, without leading/trailing spaces."""
    if isinstance(name, (int, np.integer)):
        name = str(name)
    ok = isinstance(name, str) and 0 < len(name.strip()) <= 100
    check_param("the label set", "label", name, ok, "a non-empty string of at most 100 characters")
    return name.strip()


def validate_annotator_name(name: Any) -> str:
    ok = isinstance(name, str) and 0 < len(name.strip()) <= 100
    check_param("annotate", "annotator", name, ok, "a non-empty name of at most 100 characters")
    return name.strip()
