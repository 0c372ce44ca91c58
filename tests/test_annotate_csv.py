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
