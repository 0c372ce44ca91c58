"""The project store: schema, append-only annotations, undo, consensus, immutability, concurrency."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from core.labels import engine as consensus_engine
from core.errors import ProjectNotFound, StoreError, ValidationError
from core.store.schema import SCHEMA_VERSION
from core.store.project_store import Store


def _text_store(tmp_path, n=6, min_votes=2):
    from core.io.ingest import import_manifest

    store = Store.create(tmp_path / "p", modality="text", labels=["pos", "neg"], min_votes=min_votes,
                         extractor="tfidf_svd")
    man = tmp_path / "m.csv"
    man.write_text("text\n" + "\n".join(f"sentence number {i}" for i in range(n)) + "\n")
    import_manifest(store, man)
    return store


def test_create_open_and_schema_version(tmp_path):
    store = Store.create(tmp_path / "p", modality="image", labels=["a", "b"])
    assert store.settings()["modality"] == "image"
    again = Store(tmp_path / "p")
    assert again.labels() == ["a", "b"]
    assert again.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(StoreError, match="already exists"):
        Store.create(tmp_path / "p", modality="image")


def test_missing_project_and_newer_schema(tmp_path):
    with pytest.raises(ProjectNotFound, match="init"):
        Store(tmp_path / "nothing")
    store = Store.create(tmp_path / "p", modality="image")
    store.conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    store.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "p")


def test_bad_modality_and_min_votes(tmp_path):
    with pytest.raises(ValidationError, match="'modality'.*Got 'video'"):
        Store.create(tmp_path / "p", modality="video")
    with pytest.raises(ValidationError, match="min_votes"):
        Store.create(tmp_path / "q", modality="image", min_votes=0)


def test_annotations_are_append_only(tmp_path):
    store = _text_store(tmp_path)
    aid = store.annotate(1, "ann", "pos")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("UPDATE annotations SET label = 'neg' WHERE id = ?", (aid,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM annotations WHERE id = ?", (aid,))


def test_unknown_label_names_value_and_stores_nothing(tmp_path):
    store = _text_store(tmp_path)
    before = store.annotation_count()
    with pytest.raises(ValidationError, match="'maybe'"):
        store.annotate_many([(1, "pos"), (2, "maybe")], annotator="ann")
    assert store.annotation_count() == before


def test_consensus_min_votes_and_ties(tmp_path):
    store = _text_store(tmp_path, min_votes=2)
    store.annotate(1, "a", "pos")
    c = {r["item_id"]: r for r in store.consensus_rows()}
    assert c[1]["confirmed"] == 0 and c[1]["label"] == "pos"
    store.annotate(1, "b", "pos")
    store.annotate(2, "a", "pos")
    store.annotate(2, "b", "neg")
    c = {r["item_id"]: r for r in store.consensus_rows()}
    assert c[1]["confirmed"] == 1 and c[1]["agreement"] == 1.0
    assert c[2]["confirmed"] == 0 and c[2]["label"] is None and c[2]["agreement"] == 0.5
    ids, labels = store.confirmed_labels()
    assert ids.tolist() == [1] and labels.tolist() == ["pos"]
    # an annotator changing their mind counts once (their latest vote)
    store.annotate(2, "b", "pos")
    c = {r["item_id"]: r for r in store.consensus_rows()}
    assert c[2]["confirmed"] == 1 and c[2]["n_votes"] == 2
    # adjudication overrides the votes
    store.annotate(1, "rev", "neg", kind="adjudication")
    c = {r["item_id"]: r for r in store.consensus_rows()}
    assert c[1]["label"] == "neg" and c[1]["method"] == "adjudication"
    # lowering min_votes recomputes every item
    store.annotate(3, "a", "neg")
    store.set_setting("min_votes", 1)
    assert 3 in store.confirmed_labels()[0].tolist()


def test_undo_is_a_retraction_and_bulk_undo_takes_the_batch(tmp_path):
    store = _text_store(tmp_path, min_votes=1)
    store.annotate(1, "a", "pos")
    store.annotate_many([(2, "neg"), (3, "neg"), (4, "neg")], annotator="a", kind="bulk")
    assert store.undo_last("a") == [2, 3, 4]
    assert store.confirmed_labels()[0].tolist() == [1]
    assert store.undo_last("a") == [1]
    assert store.undo_last("a") == []
    assert store.annotation_count() == 4  # nothing deleted
    assert store.annotation_count(include_retracted=False) == 0


def test_runs_and_predictions_are_immutable(tmp_path):
    store = _text_store(tmp_path)
    rid = store.publish_run(model="m", config={}, metrics={}, artefact_dir=tmp_path, classes=["pos", "neg"],
                            item_ids=np.array([1, 2]), labels=["pos", "neg"], confidences=np.array([0.9, 0.8]))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        store.conn.execute("UPDATE runs SET model = 'x' WHERE id = ?", (rid,))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        store.conn.execute("UPDATE predictions SET label = 'pos' WHERE run_id = ?", (rid,))
    assert store.run()["id"] == rid
    assert [r["label"] for r in store.predictions(rid)] == ["pos", "neg"]


def test_failed_transaction_leaves_nothing(tmp_path):
    store = _text_store(tmp_path)
    n = store.item_count()
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.insert_items(conn, [{"source_id": 1, "uri": "x", "modality": "text", "content_hash": "h"}])
            raise RuntimeError("boom")
    assert store.item_count() == n


# --------------------------------------------------------------------------- concurrency
N_WRITERS, VOTES_EACH = 8, 60


def _writer(project, k, n_items, barrier):
    store = Store(project)
    barrier.wait()
    ids = []
    for j in range(VOTES_EACH):
        ids.append(store.annotate(1 + (j * 7 + k) % n_items, f"annotator{k}", "pos" if j % 2 else "neg"))
    return len(ids)


def _predictor(project, n_items, barrier):
    store = Store(project)
    barrier.wait()
    for r in range(3):
        store.publish_run(model="m", config={"r": r}, metrics={}, artefact_dir=project, classes=["pos", "neg"],
                          item_ids=np.arange(1, n_items + 1), labels=["pos"] * n_items,
                          confidences=np.full(n_items, 0.5))
    return 3


def test_eight_writers_and_a_prediction_job_lose_nothing(tmp_path):
    n_items = 400
    store = _text_store(tmp_path, n=n_items)
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(N_WRITERS + 1)
    with ctx.Pool(N_WRITERS + 1) as pool:
        writers = [pool.apply_async(_writer, (str(store.dir), k, n_items, barrier)) for k in range(N_WRITERS)]
        pred = pool.apply_async(_predictor, (str(store.dir), n_items, barrier))
        results = [w.get(timeout=300) for w in writers]  # re-raises "database is locked" if it happened
        assert pred.get(timeout=300) == 3
    assert sum(results) == N_WRITERS * VOTES_EACH
    assert store.annotation_count() == N_WRITERS * VOTES_EACH
    assert len(store.runs()) == 3
    assert store.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 3 * n_items
    # the consensus matches a recomputation from scratch
    before = [tuple(r)[:7] for r in store.consensus_rows()]
    consensus_engine.recompute_all(store)
    assert [tuple(r)[:7] for r in store.consensus_rows()] == before


def test_pseudo_labels_are_machine_annotations_of_the_run_and_never_confirm(tmp_path):
    store = _text_store(tmp_path, min_votes=1)
    rid = store.publish_run(model="pseudo_label", config={}, metrics={}, artefact_dir=tmp_path, classes=["pos", "neg"],
                            item_ids=np.array([1, 2, 3]), labels=["pos", "neg", "pos"],
                            confidences=np.array([0.995, 0.999, 0.6]),
                            pseudo_labels=[(1, "pos", 0.995, 1), (2, "neg", 0.999, 1), (1, "pos", 0.997, 3)])
    rows = store.pseudo_labels(rid)
    assert [(r["item_id"], r["label"], r["round"]) for r in rows] == [(1, "pos", 1), (2, "neg", 1), (1, "pos", 3)]
    assert store.confirmed_labels()[0].tolist() == []  # machine labels never count towards the consensus
    store.annotate(2, "alice", "neg")  # a person accepting one confirms it
    assert store.confirmed_labels()[0].tolist() == [2]


def test_first_vote_only_is_decided_inside_the_transaction(tmp_path):
    import threading

    store = _text_store(tmp_path)
    results: list = []
    barrier = threading.Barrier(6)

    def press(label: str) -> None:
        barrier.wait()
        results.append(Store(store.dir).annotate(1, "typist", label, first_vote_only=True))

    threads = [threading.Thread(target=press, args=("pos" if k % 2 else "neg",)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1  # six racing presses, one vote
    assert len([v for v in store.active_votes() if v["annotator"] == "typist"]) == 1
    store.undo_last("typist")
    assert store.annotate(1, "typist", "pos", first_vote_only=True) is not None  # after undo one may vote again
