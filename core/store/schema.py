"""Schema of the project database and its migrations.

Each migration is a function of a sqlite-utils Database (a SQL script, or sqlite-utils table creation) run in one transaction together with the update of the recorded version;
the index of the script plus one is the schema version it produces. ``meta.schema_version`` records what a database has.
Annotations, pair votes, their retractions, runs, predictions and the audit log are append-only: triggers refuse UPDATE and DELETE on them, so a bug
elsewhere cannot lose a vote or rewrite a published model version.
"""
from __future__ import annotations

import sqlite3
from typing import Callable

import sqlite_utils

MODALITIES = ("image", "audio", "text", "image+text")
ANNOTATION_KINDS = ("human", "bulk", "adjudication", "machine")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
PAIR_DECISIONS = ("same", "different")


_V1 = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE sources (
            id INTEGER PRIMARY KEY,
            root TEXT NOT NULL,            -- media root; relative to the project folder when inside it
            kind TEXT NOT NULL,            -- folder | manifest
            spec TEXT NOT NULL,            -- what was imported (folder or manifest path)
            created_at REAL NOT NULL,
            UNIQUE (root, kind, spec)
        );
        CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            source_id INTEGER NOT NULL REFERENCES sources(id),
            uri TEXT NOT NULL,             -- path relative to the source's media root, or text:<hash>
            modality TEXT NOT NULL CHECK (modality IN ('image', 'audio', 'text', 'image+text')),
            text TEXT,
            grp TEXT,                      -- speaker, camera, ...
            identity TEXT,                 -- person identity for re-identification
            meta TEXT NOT NULL DEFAULT '{}',
            reference_label TEXT,          -- ground truth for evaluation only; never shown to annotators
            content_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (source_id, uri)
        );
        CREATE INDEX items_hash ON items(content_hash);
        CREATE TABLE labels (name TEXT PRIMARY KEY, position INTEGER NOT NULL, created_at REAL NOT NULL);
        CREATE TABLE annotators (name TEXT PRIMARY KEY, created_at REAL NOT NULL);
        CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id),
            annotator TEXT NOT NULL REFERENCES annotators(name),
            label TEXT NOT NULL REFERENCES labels(name),
            kind TEXT NOT NULL CHECK (kind IN ('human', 'bulk', 'adjudication', 'machine')),
            run_id INTEGER,
            round INTEGER,
            confidence REAL,
            batch TEXT,                    -- groups the rows of one bulk action so it can be undone at once
            seconds REAL,                  -- time the annotator took, when known
            created_at REAL NOT NULL
        );
        CREATE INDEX annotations_item ON annotations(item_id);
        CREATE INDEX annotations_annotator ON annotations(annotator, id);
        CREATE TABLE retractions (
            annotation_id INTEGER PRIMARY KEY REFERENCES annotations(id),
            annotator TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE consensus (
            item_id INTEGER PRIMARY KEY REFERENCES items(id),
            label TEXT,
            method TEXT NOT NULL,
            support INTEGER NOT NULL,
            n_votes INTEGER NOT NULL,
            agreement REAL,
            confidence REAL,
            confirmed INTEGER NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX consensus_confirmed ON consensus(confirmed);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            config TEXT NOT NULL,
            metrics TEXT NOT NULL,
            parent_id INTEGER REFERENCES runs(id),
            job_id INTEGER,
            extractor TEXT,
            artefact_dir TEXT NOT NULL,
            device TEXT,
            n_items INTEGER NOT NULL,
            n_labelled INTEGER NOT NULL,
            classes TEXT NOT NULL,
            train_seconds REAL,
            created_at REAL NOT NULL
        );
        CREATE TABLE predictions (
            run_id INTEGER NOT NULL REFERENCES runs(id),
            item_id INTEGER NOT NULL REFERENCES items(id),
            label TEXT,
            confidence REAL,
            cluster INTEGER,
            x REAL,
            y REAL,
            PRIMARY KEY (run_id, item_id)
        ) WITHOUT ROWID;
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            progress TEXT NOT NULL DEFAULT '{}',
            message TEXT,
            requested_by TEXT,
            requests INTEGER NOT NULL DEFAULT 1,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            pid INTEGER,
            host TEXT,
            heartbeat_at REAL,
            run_id INTEGER,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        );
        CREATE INDEX jobs_status ON jobs(status, kind);
        CREATE TABLE imports (
            id INTEGER PRIMARY KEY,
            source_id INTEGER REFERENCES sources(id),
            spec TEXT NOT NULL,
            added INTEGER NOT NULL,
            already_present INTEGER NOT NULL,
            skipped INTEGER NOT NULL,
            annotations INTEGER NOT NULL,
            report TEXT NOT NULL,
            created_at REAL NOT NULL
        );

        CREATE TRIGGER annotations_no_update BEFORE UPDATE ON annotations
        BEGIN SELECT RAISE(ABORT, 'annotations are append-only: write a retraction instead'); END;
        CREATE TRIGGER annotations_no_delete BEFORE DELETE ON annotations
        BEGIN SELECT RAISE(ABORT, 'annotations are append-only: write a retraction instead'); END;
        CREATE TRIGGER retractions_no_delete BEFORE DELETE ON retractions
        BEGIN SELECT RAISE(ABORT, 'retractions are append-only'); END;
        CREATE TRIGGER runs_no_update BEFORE UPDATE ON runs
        BEGIN SELECT RAISE(ABORT, 'runs are immutable once published'); END;
        CREATE TRIGGER predictions_no_update BEFORE UPDATE ON predictions
        BEGIN SELECT RAISE(ABORT, 'predictions of a published run are immutable'); END;
"""

# v2: runs and predictions refuse DELETE too (v1 only refused UPDATE); cluster merges move from a JSON file in
# the project folder into the database, so that everything a user decided lives in one place and one transaction.
_V2_TRIGGERS = """
        CREATE TRIGGER runs_no_delete BEFORE DELETE ON runs
        BEGIN SELECT RAISE(ABORT, 'runs are immutable once published'); END;
        CREATE TRIGGER predictions_no_delete BEFORE DELETE ON predictions
        BEGIN SELECT RAISE(ABORT, 'predictions of a published run are immutable'); END;
"""


def _statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (trigger bodies included). ``executescript`` cannot be
    used: it commits the caller's transaction first."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {buf.strip()[:80]!r}")
    return out


def _sql(script: str) -> Callable[[sqlite_utils.Database], None]:
    def migrate(db: sqlite_utils.Database) -> None:
        for statement in _statements(script):
            db.execute(statement)
    return migrate


def _v2(db: sqlite_utils.Database) -> None:
    _sql(_V2_TRIGGERS)(db)
    merges = db.table("cluster_merges")
    merges.create(
        {"id": int, "run_id": int, "cluster": int, "into_cluster": int, "merged_by": str, "created_at": float,
         "reset_at": float},  # reset_at: set when the user resets the run's merges (the row is kept)
        pk="id", not_null={"run_id", "cluster", "into_cluster", "created_at"},
        foreign_keys=[("run_id", "runs", "id")],
    )
    merges.create_index(["run_id", "reset_at"], index_name="cluster_merges_run")


# v3: a claimed job carries a random claim token; heartbeat, progress, publish and finish only write while the
# job is still running under the worker's token (core.jobs.queue), so a worker declared dead cannot overwrite
# the job row or publish a run after another worker took over.
_V3 = """
        ALTER TABLE jobs ADD COLUMN claim TEXT;
"""


# v4: identity pair decisions for re-identification (core.store.pair_votes, core.labels.pairs). An annotator
# marks two items "same" or "different"; like annotations, votes are append-only and undo is a retraction.
# A pair is stored normalised (item_a < item_b); ``batch`` groups the votes of one merge or split.
_V4 = """
        CREATE TABLE pair_votes (
            id INTEGER PRIMARY KEY,
            item_a INTEGER NOT NULL REFERENCES items(id),
            item_b INTEGER NOT NULL REFERENCES items(id),
            annotator TEXT NOT NULL REFERENCES annotators(name),
            decision TEXT NOT NULL CHECK (decision IN ('same', 'different')),
            batch TEXT,                    -- groups the votes of one merge or split so it can be undone at once
            seconds REAL,                  -- time the annotator took, when known
            created_at REAL NOT NULL,
            CHECK (item_a < item_b)
        );
        CREATE INDEX pair_votes_pair ON pair_votes(item_a, item_b);
        CREATE INDEX pair_votes_annotator ON pair_votes(annotator, id);
        CREATE TABLE pair_retractions (
            vote_id INTEGER PRIMARY KEY REFERENCES pair_votes(id),
            annotator TEXT NOT NULL,
            created_at REAL NOT NULL
        );

        CREATE TRIGGER pair_votes_no_update BEFORE UPDATE ON pair_votes
        BEGIN SELECT RAISE(ABORT, 'pair votes are append-only: write a retraction instead'); END;
        CREATE TRIGGER pair_votes_no_delete BEFORE DELETE ON pair_votes
        BEGIN SELECT RAISE(ABORT, 'pair votes are append-only: write a retraction instead'); END;
        CREATE TRIGGER pair_retractions_no_update BEFORE UPDATE ON pair_retractions
        BEGIN SELECT RAISE(ABORT, 'pair retractions are append-only'); END;
        CREATE TRIGGER pair_retractions_no_delete BEFORE DELETE ON pair_retractions
        BEGIN SELECT RAISE(ABORT, 'pair retractions are append-only'); END;
"""


# v5: accounts and the audit log (issue 15). ``users`` holds one row per account of the project with its role and
# the argon2id hash of its password (never the password; NULL when the account signs in through the
# organisation's OpenID Connect provider only). ``audit_log`` is append-only: who (the signed-in user, the CLI's
# named or OS user, or the worker acting for whoever requested a job) did what, when, from where. Retractions
# become immutable too (v1 only refused DELETE on them).
_V5 = """
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            password_hash TEXT,            -- argon2id encoded hash; NULL: OpenID Connect sign-in only
            role TEXT NOT NULL CHECK (role IN ('annotator', 'reviewer', 'admin')),
            disabled INTEGER NOT NULL DEFAULT 0,
            created_by TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            created_at REAL NOT NULL,
            user TEXT NOT NULL,            -- who acted
            role TEXT,                     -- their role then (NULL: the CLI or a project without accounts)
            origin TEXT NOT NULL,          -- app | cli | worker | library
            action TEXT NOT NULL,          -- vote, adjudicate, bulk_label, undo, import, settings, retrain, ...
            n INTEGER,                     -- rows the action wrote, when it wrote many
            details TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX audit_log_user ON audit_log(user, id);
        CREATE INDEX audit_log_action ON audit_log(action, id);

        CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        CREATE TRIGGER retractions_no_update BEFORE UPDATE ON retractions
        BEGIN SELECT RAISE(ABORT, 'retractions are append-only'); END;
"""


#: migration i + 1 produces schema version i + 1; each runs inside the store's write transaction
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_sql(_V1), _v2, _sql(_V3), _sql(_V4), _sql(_V5)]
SCHEMA_VERSION = len(MIGRATIONS)
