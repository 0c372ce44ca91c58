"""Cluster merges of a run, kept in the ``cluster_merges`` table (schema v2).

Runs and predictions are immutable, so merging clusters does not rewrite predictions: each merge adds rows
``(run_id, cluster, into_cluster, merged_by, created_at)`` saying that ``cluster`` (as shown then) is shown as
part of ``into_cluster``. A reset sets ``reset_at`` on the run's active rows; no row is ever deleted, so the
history of what a user decided stays in the project database with everything else.

Projects made before v2 kept their merges in ``<project>/cluster_merges.json``
(``{"<run id>": {"<cluster>": <merged cluster>}}``). The first call to any function here imports that file
(one row per entry, ``merged_by = "cluster_merges.json"``) and renames it to ``cluster_merges.json.migrated``,
under the database write lock, so two processes never import it twice.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from core.errors import ValidationError
from core.store.project_store import Store, now

MERGES_FILE = "cluster_merges.json"
MIGRATED_SUFFIX = ".migrated"
FILE_ANNOTATOR = MERGES_FILE


def _legacy_rows(path: Path) -> list[tuple[int, int, int]]:
    """(run_id, cluster, into_cluster) of a pre-v2 merges file, in run then cluster order."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"The cluster merges file {str(path)!r} is not valid JSON ({exc}); fix or remove it.")
    rows: list[tuple[int, int, int]] = []
    if not isinstance(data, dict):
        return rows
    try:
        for run, mapping in sorted(data.items(), key=lambda kv: int(kv[0])):
            if isinstance(mapping, dict):
                rows.extend((int(run), int(c), int(t)) for c, t in sorted(mapping.items(), key=lambda kv: int(kv[0])))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"The cluster merges file {str(path)!r} holds a non-integer run or cluster id ({exc});"
                              " fix or remove it.")
    return rows


def migrate_merges_file(store: Store) -> int:
    """Import a pre-v2 ``cluster_merges.json`` into the table and rename the file; returns the rows imported.

    Entries of runs the project no longer has are skipped. Nothing happens (0) when there is no file.
    """
    path = store.dir / MERGES_FILE
    if not path.is_file():
        return 0
    done = path.with_name(path.name + MIGRATED_SUFFIX)
    renamed = False
    try:
        with store.transaction() as conn:
            if not path.is_file():  # another process imported it while we waited for the write lock
                return 0
            runs = {r[0] for r in conn.execute("SELECT id FROM runs").fetchall()}
            rows = [r for r in _legacy_rows(path) if r[0] in runs]
            t = now()
            conn.executemany(
                "INSERT INTO cluster_merges (run_id, cluster, into_cluster, merged_by, created_at, reset_at) "
                "VALUES (?, ?, ?, ?, ?, NULL)", [(r, c, i, FILE_ANNOTATOR, t) for r, c, i in rows])
            os.replace(path, done)
            renamed = True
    except BaseException:
        if renamed and done.is_file() and not path.exists():  # the commit failed: put the file back
            os.replace(done, path)
        raise
    (store.dir / (MERGES_FILE + ".lock")).unlink(missing_ok=True)  # the old flock file
    return len(rows)


def active_merges(store: Store, run_id: int) -> list[tuple[int, int]]:
    """The run's merges not reset: (cluster, into_cluster) pairs in the order they were made."""
    migrate_merges_file(store)
    rows = store.conn.execute(
        "SELECT cluster, into_cluster FROM cluster_merges WHERE run_id = ? AND reset_at IS NULL ORDER BY id",
        (int(run_id),)).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


def add_merges(store: Store, run_id: int, pairs: Iterable[tuple[int, int]], *, merged_by: str | None = None) -> None:
    """Record that each ``cluster`` of the run is now shown as part of ``into_cluster`` (one transaction)."""
    migrate_merges_file(store)
    t = now()
    pairs = [(int(c), int(i)) for c, i in pairs]
    by = store.actor(merged_by)
    with store.transaction() as conn:
        role = store.authorize(by, "merge_clusters", conn)
        conn.executemany(
            "INSERT INTO cluster_merges (run_id, cluster, into_cluster, merged_by, created_at, reset_at) "
            "VALUES (?, ?, ?, ?, ?, NULL)", [(int(run_id), c, i, merged_by, t) for c, i in pairs])
        store.audit(conn, by, "merge_clusters", role=role, n=len(pairs), run=int(run_id), merges=pairs[:20])


def reset_merges(store: Store, run_id: int, *, by: str | None = None) -> int:
    """Set ``reset_at`` on the run's active merges (the rows are kept); returns how many were reset.
    ``by`` needs the ``merge_clusters`` permission."""
    migrate_merges_file(store)
    by = store.actor(by)
    with store.transaction() as conn:
        role = store.authorize(by, "merge_clusters", conn)
        cur = conn.execute("UPDATE cluster_merges SET reset_at = ? WHERE run_id = ? AND reset_at IS NULL",
                           (now(), int(run_id)))
        if cur.rowcount:
            store.audit(conn, by, "reset_merges", role=role, n=int(cur.rowcount), run=int(run_id))
        return int(cur.rowcount)
