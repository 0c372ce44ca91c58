"""``python -m core annotate``: bad rows are report entries, the rest is ONE transaction (all or nothing)."""
from __future__ import annotations

import pytest

from core.io.annotations_csv import import_annotations
from core.io.ingest import import_folder
from core.labels import engine as consensus_engine
from core.store.project_store import Store
from tests.helpers import digits_folder


@pytest.fixture
def store(tmp_path):
    s = Store.create(tmp_path / "p", modality="image", labels=["0", "1", "2"], min_votes=1)
    import_folder(s, digits_folder(tmp_path / "src", per_class=2))
    return s


def _csv(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_bad_rows_are_reported_and_the_rest_lands_in_one_write(store, tmp_path):
    rels = [it.uri for it in store.items()]
    long_name = "x" * 1000
    text = ("path,annotator,label,extra\n"
            f"{rels[0]},alice,0,\n"
            f"{rels[1]},bob,1,\n"
            f"{rels[2]},{long_name},1,\n"            # a 1,000-character annotator
            f"{rels[3]},import,2,\n"                 # a name the engine reserves
            f"{rels[4]},carol,{'z' * 150},\n"       # a 150-character label
            f"{rels[5]},carol,1,too,many\n"          # ragged: one field too many (TypeError before)
            "nowhere.png,carol,1,\n"
            f"{rels[1]},alice,1,\n")
    out = import_annotations(store, _csv(tmp_path / "a.csv", text))
    problems = {(p["row"], p["problem"]) for p in out["problems"]}
    assert problems == {(0, "unknown_column"), (3, "bad_annotator"), (4, "bad_annotator"), (5, "unknown_label"),
                        (6, "ragged_row"), (7, "unknown_item")}
    assert out["annotations"] == 3 and out["skipped"] == 5
    assert sorted((v["annotator"], v["label"]) for v in store.active_votes()) == [("alice", "0"), ("alice", "1"),
                                                                                  ("bob", "1")]
    writes = store.audit_log(action="import_labels")
    assert len(writes) == 1 and writes[0]["n"] == 3  # one transaction for every annotator
    again = import_annotations(store, _csv(tmp_path / "a.csv", text))
    assert again["annotations"] == 0  # nothing written twice


def test_a_failure_inside_the_write_leaves_nothing(store, tmp_path, monkeypatch):
    rels = [it.uri for it in store.items()]
    text = "path,annotator,label\n" + "".join(f"{r},{who},0\n" for r in rels[:3] for who in ("alice", "bob"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(consensus_engine, "recompute", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        import_annotations(store, _csv(tmp_path / "a.csv", text))
    assert store.annotation_count() == 0 and store.audit_log(action="import_labels") == []


@pytest.mark.parametrize("encoding,prefix", [("utf-8", "\ufeff"), ("latin-1", "")])
def test_excel_and_latin1_files_import(store, tmp_path, encoding, prefix):
    rel = store.items()[0].uri
    out = import_annotations(store, _csv(tmp_path / "a.csv", f"{prefix}path,annotator,label\n{rel},José,2\n", encoding))
    assert out["annotations"] == 1 and store.active_votes()[0]["annotator"] == "José"
    notes = [p["problem"] for p in out["problems"]]
    assert notes == ([] if encoding == "utf-8" else ["not_utf8"])


def test_a_vote_written_while_the_bulk_write_waits_for_the_lock_counts(store, monkeypatch):
    """annotate_rows reads the touched items' votes before taking the lock; a vote or undo committed in between
    must still be in the consensus (the write reads again when the marker moved)."""
    from core.store.project_store import Store as _Store

    item = int(store.item_ids()[0])
    other = _Store(store.dir)
    real = consensus_engine.active_votes_of
    calls = []

    def read_then_interleave(s, ids):
        if s is other:  # the other writer's own consensus
            return real(s, ids)
        out = real(s, ids)
        calls.append(len(out))
        if len(calls) == 1:  # the read before the lock: another process votes right after it
            other.annotate(item, "dave", "2")
            other.annotate(item, "erin", "2")
        return out

    monkeypatch.setattr(consensus_engine, "active_votes_of", read_then_interleave)
    store.annotate_rows([(item, "alice", "1")])
    row = next(r for r in store.consensus_rows() if r["item_id"] == item)
    assert calls == [0, 2]  # the changed item read again inside the lock
    assert (row["label"], row["n_votes"], row["support"]) == ("2", 3, 2)


def test_an_undo_while_the_bulk_write_waits_counts(store, monkeypatch):
    from core.store.project_store import Store as _Store

    item = int(store.item_ids()[1])
    other = _Store(store.dir)
    other.annotate(item, "dave", "2")
    other.annotate(item, "erin", "2")
    real = consensus_engine.active_votes_of
    calls = []

    def read_then_undo(s, ids):
        if s is other:
            return real(s, ids)
        out = real(s, ids)
        calls.append(len(out))
        if len(calls) == 1:
            other.undo_last("erin")
        return out

    monkeypatch.setattr(consensus_engine, "active_votes_of", read_then_undo)
    store.annotate_rows([(item, "alice", "1")])
    row = next(r for r in store.consensus_rows() if r["item_id"] == item)
    assert calls == [2, 1]  # the undone item read again inside the lock
    assert (row["label"], row["n_votes"]) == (None, 2)  # dave 2 vs alice 1: a tie, erin's vote undone
