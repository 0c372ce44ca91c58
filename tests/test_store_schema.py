"""Schema v2 and the store's layout: DELETE refused on runs/predictions, migration from a v1 database,
the in-memory store for fast tests."""
import sqlite3

import numpy as np
import pytest

from core.store.project_store import Store
from core.store.schema import MIGRATIONS, SCHEMA_VERSION


def _publish(store: Store) -> int:
    ids = store.item_ids()
    d = store.dir / "runs" / "r1"
    d.mkdir(parents=True)
    return store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=d, classes=store.labels(),
                             item_ids=ids, labels=["a"] * len(ids), confidences=np.ones(len(ids)))


def _with_items(store: Store, n: int = 3) -> Store:
    src = store.add_source(store.dir, kind="folder", spec="test")
    with store.transaction() as conn:
        store.insert_items(conn, [{"source_id": src, "uri": f"{i}.png", "modality": "image",
                                   "content_hash": f"h{i}"} for i in range(n)])
    return store


def test_runs_and_predictions_refuse_delete(tmp_path):
    store = _with_items(Store.create(tmp_path / "p", modality="image", labels=["a", "b"]))
    run_id = _publish(store)
    for sql in ("DELETE FROM runs WHERE id = ?", "DELETE FROM predictions WHERE run_id = ?"):
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            with store.transaction() as conn:
                conn.execute(sql, (run_id,))
    assert len(store.predictions(run_id)) == 3


def test_a_v1_database_is_migrated_in_place(tmp_path):
    pdir = tmp_path / "old"
    pdir.mkdir()
    conn = sqlite3.connect(pdir / "project.db", isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    import sqlite_utils
    conn.execute("BEGIN")
    MIGRATIONS[0](sqlite_utils.Database(conn))
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('modality', '\"image\"'), ('min_votes', '1')")
    conn.execute("COMMIT")
    conn.close()
    store = Store(pdir)
    assert store._schema_version() == SCHEMA_VERSION >= 2
    assert "cluster_merges" in store.db.table_names()
    names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert {"runs_no_delete", "predictions_no_delete", "annotations_no_delete"} <= names


def test_in_memory_store_votes_undo_and_consensus():
    store = _with_items(Store.in_memory(labels=["a", "b"], min_votes=1))
    assert not (store.dir / "project.db").exists()
    store.annotate(1, "ann", "a")
    store.annotate_many([(2, "b"), (3, "b")], annotator="ann", kind="bulk")
    ids, labels = store.confirmed_labels()
    assert ids.tolist() == [1, 2, 3] and labels.tolist() == ["a", "b", "b"]
    assert sorted(store.undo_last("ann")) == [2, 3]  # the bulk batch is one action
    assert store.confirmed_labels()[0].tolist() == [1]
    assert store.annotation_count() == 3  # nothing deleted: undo is a retraction
    other = Store.in_memory(labels=["x"])
    assert other.labels() == ["x"] and other.item_count() == 0  # each in-memory store is its own database


def test_min_votes_zero_is_refused_and_nothing_changes():
    store = _with_items(Store.in_memory(labels=["a", "b"], min_votes=1))
    store.annotate(1, "ann", "a")
    with pytest.raises(Exception, match="min_votes"):
        store.set_setting("min_votes", 0)
    assert store.settings()["min_votes"] == 1
    assert store.confirmed_labels()[0].tolist() == [1]
