"""The audit log: one row per write, in the write's transaction, filterable; it and the other history tables
refuse UPDATE and DELETE (also through INSERT OR REPLACE)."""
from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from core.io.ingest import import_folder
from core.labels import engine as consensus_engine
from core.store.project_store import Store
from core.views.audit import audit_csv, audit_frame
from core.views.clusters import merge_clusters
from core.views.pseudo_labels import accept_pseudo_labels
from tests.helpers import digits_folder


@pytest.fixture
def store(tmp_path):
    s = Store.create(tmp_path / "p", modality="image", labels=["0", "1", "2"], min_votes=1, by="founder")
    import_folder(s, digits_folder(tmp_path / "src", per_class=3), by="founder")
    s.add_user("boss", "boss password", "admin", by="boss")
    s.add_user("ann", "ann password", "annotator", by="boss")
    return s


def _publish(store: Store) -> int:
    ids = store.item_ids()
    run_dir = store.dir / "runs" / "r"
    run_dir.mkdir(parents=True, exist_ok=True)
    return store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=store.labels(),
                             item_ids=ids, labels=["1"] * len(ids), confidences=np.full(len(ids), 0.99),
                             clusters=np.arange(len(ids)) % 3, by="boss")


def test_every_write_of_a_session_has_its_audit_row(store):
    ids = [int(i) for i in store.item_ids()]
    store.annotate(ids[0], "ann", "1")
    store.undo_last("ann")
    store.annotate(ids[1], "boss", "2", kind="adjudication")
    store.annotate_many([(i, "0") for i in ids[2:5]], annotator="boss", kind="bulk")
    store.set_setting("min_votes", 2, by="boss")
    store.add_labels(["3"], by="boss")
    consensus_engine.refit(store, "dawid_skene", by="boss")
    run = _publish(store)
    merge_clusters(store, run, [0, 1], merged_by="boss")
    store.vote_pairs([(ids[0], ids[1])], "same", annotator="ann")
    store.undo_last_pair_votes("ann")
    accept_pseudo_labels(store, run, 0.5, annotator="boss")
    got = [(r["user"], r["action"]) for r in reversed(store.audit_log())]
    assert got[:2] == [("founder", "create_project"), ("founder", "add_labels")]
    assert got[2:-1] == [
        ("founder", "import"),
        ("boss", "add_user"), ("boss", "add_user"), ("ann", "vote"), ("ann", "undo"), ("boss", "adjudicate"),
        ("boss", "bulk_label"), ("boss", "settings"), ("boss", "add_labels"), ("boss", "consensus_method"),
        ("boss", "publish_run"), ("boss", "merge_clusters"), ("ann", "pair_vote"), ("ann", "undo_pairs")]
    last = store.audit_log(limit=1)[0]
    assert (last["user"], last["role"], last["action"], last["origin"]) == ("boss", "admin", "accept_pseudo_labels",
                                                                            "library")
    assert last["n"] == len(ids) - 4  # every item but the adjudicated and bulk-labelled 1 to 4 (0's vote undone)


def test_filters_by_user_action_and_time(store):
    ids = [int(i) for i in store.item_ids()]
    t0 = time.time()
    store.annotate(ids[0], "ann", "1")
    store.annotate(ids[1], "ann", "2")
    assert [r["action"] for r in store.audit_log(user="ann")] == ["vote", "vote"]
    assert len(store.audit_log(action="add_user")) == 2
    assert len(store.audit_log(since=t0)) == 2 and store.audit_log(until=t0 - 3600) == []
    df = audit_frame(store, user="ann")
    assert list(df["action"]) == ["vote", "vote"] and '"items": [' in df["details"].iloc[0]


def test_a_refused_write_leaves_no_audit_row(store):
    n = len(store.audit_log())
    with pytest.raises(Exception):
        store.set_setting("min_votes", 5, by="ann")
    assert len(store.audit_log()) == n


@pytest.mark.parametrize("sql", [
    "UPDATE audit_log SET user = 'x'", "DELETE FROM audit_log", "UPDATE retractions SET annotator = 'x'",
    "DELETE FROM retractions", "DELETE FROM runs", "DELETE FROM predictions", "UPDATE predictions SET label = '0'",
    "UPDATE annotations SET label = '0'", "DELETE FROM annotations",
    "INSERT OR REPLACE INTO predictions (run_id, item_id, label, confidence) SELECT run_id, item_id, '0', 0 "
    "FROM predictions LIMIT 1",
])
def test_history_tables_refuse_rewrites(store, sql):
    ids = [int(i) for i in store.item_ids()]
    store.annotate(ids[0], "ann", "1")
    store.undo_last("ann")
    _publish(store)
    with pytest.raises(sqlite3.IntegrityError, match="append-only|immutable"):
        store.conn.execute(sql)


def test_the_downloaded_audit_csv_runs_no_formula(tmp_path):
    store = Store.create(tmp_path / "q", modality="image", labels=["a"], by="=HYPERLINK(\"http://x\")")
    text = audit_csv(audit_frame(store))
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text
