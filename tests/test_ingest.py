"""Import: folders and manifests, per-row reports of bad input, idempotence."""
from __future__ import annotations

import json
import shutil

import pytest

from core.io.ingest import import_folder, import_manifest, import_source
from core.store.project_store import Store
from tests.helpers import digits_folder, tone_wav


@pytest.fixture
def image_project(tmp_path):
    return Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca")


def _problems(report):
    return {(p["path"], p["problem"]) for p in report.problems}


def test_folder_with_reference_labels_then_reimport_adds_nothing(tmp_path, image_project):
    src = digits_folder(tmp_path / "src", per_class=5)
    r = import_folder(image_project, src, labels_from_folders="reference")
    assert (r.added, r.skipped, r.annotations) == (15, 0, 0)
    assert image_project.labels() == ["0", "1", "2"]
    ref = image_project.reference_labels()
    assert len(ref) == 15 and set(ref.values()) == {"0", "1", "2"}
    assert image_project.overview()["labelled_items"] == 0  # reference labels are not votes
    r2 = import_folder(image_project, src, labels_from_folders="reference")
    assert (r2.added, r2.already_present, r2.skipped) == (0, 15, 0)
    assert image_project.item_count() == 15


def test_folder_with_initial_labels_records_votes(tmp_path, image_project):
    src = digits_folder(tmp_path / "src", per_class=4)
    r = import_folder(image_project, src, labels_from_folders="initial", annotator="alice")
    assert r.annotations == 12
    assert image_project.annotators() == ["alice"]
    r2 = import_folder(image_project, src, labels_from_folders="initial", annotator="alice")
    assert r2.annotations == 0 and image_project.annotation_count() == 12


def test_bad_files_are_reported_per_row_and_skipped(tmp_path, image_project):
    src = digits_folder(tmp_path / "src", per_class=3)
    good = next((src / "0").glob("*.png"))
    (src / "0" / "corrupt.png").write_bytes(b"this is not a png at all")
    data = good.read_bytes()
    (src / "1" / "truncated.png").write_bytes(data[: len(data) // 2])
    shutil.copy(good, src / "2" / "copy_of_zero.png")
    (src / "1" / "notes.csv").write_text("x,y\n")
    r = import_folder(image_project, src, labels_from_folders="reference")
    probs = _problems(r)
    assert ("0/corrupt.png", "corrupt_image") in probs
    assert any(p == "1/truncated.png" and kind in ("truncated_image", "corrupt_image") for p, kind in probs)
    assert ("2/copy_of_zero.png", "duplicate") in probs
    assert ("1/notes.csv", "wrong_modality") in probs
    assert r.added == 9 and image_project.item_count() == 9
    row = next(p for p in r.problems if p["path"] == "0/corrupt.png")
    assert row["row"] > 0 and "decode" in row["detail"] or "identify" in row["detail"]


def test_manifest_problems_and_multiple_annotators(tmp_path, image_project):
    src = digits_folder(tmp_path / "media", per_class=2)
    image_project.add_labels(["0", "1", "2"])
    outside = tmp_path / "outside.png"
    shutil.copy(next((src / "0").glob("*.png")), outside)
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    lines = ["path,label,annotator,colour,meta.source"]
    lines += [f"{files[0]},0,alice,red,a", f"{files[0]},0,bob,red,a", f"{files[1]},7,alice,,",
              "missing.png,1,alice,,", "../outside.png,0,alice,,", f"{files[2]},1,alice,,",
              f"{files[2]},2,alice,,"]
    man = src / "manifest.csv"
    man.write_text("\n".join(lines) + "\n")
    before = image_project.item_count()
    r = import_manifest(image_project, man)
    probs = _problems(r)
    assert (None, "unknown_column") in probs
    assert (files[1], "unknown_label") in probs
    assert ("missing.png", "missing_file") in probs
    assert ("../outside.png", "escapes_root") in probs
    assert (files[2], "duplicate") in probs  # a second label by the same annotator for the same item
    assert r.added == 2 and image_project.item_count() == before + 2
    votes = image_project.active_votes()
    assert sorted((v["annotator"], v["label"]) for v in votes) == [("alice", "0"), ("alice", "1"), ("bob", "0")]
    unknown = next(p for p in r.problems if p["problem"] == "unknown_label")
    assert "'7'" in unknown["detail"] and unknown["row"] == 3
    # importing the same manifest again adds nothing
    r2 = import_manifest(image_project, man)
    assert r2.added == 0 and r2.annotations == 0 and image_project.annotation_count() == 3


def test_jsonl_manifest_with_captions_for_image_text(tmp_path):
    store = Store.create(tmp_path / "p", modality="image+text", extractor="pixels_pca")
    src = digits_folder(tmp_path / "media", per_class=1)
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png"))
    rows = [{"path": files[0], "caption": "a round zero"}, {"path": files[0], "caption": "another caption"},
            {"path": files[1], "text": "a one", "group": "cam1", "identity": "p7"}, {"path": files[2]}]
    man = src / "m.jsonl"
    man.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    r = import_manifest(store, man)
    assert r.added == 3
    assert {p["problem"] for p in r.problems} == {"missing_text", "bad_json"}
    items = store.items()
    assert {it.text for it in items} == {"a round zero", "another caption", "a one"}
    assert all(it.path.is_file() for it in items)
    assert any(it.group == "cam1" and it.identity == "p7" for it in items)


def test_audio_folder_reports_empty_and_non_audio(tmp_path):
    store = Store.create(tmp_path / "p", modality="audio", extractor="logmel")
    src = tmp_path / "clips"
    (src / "yes").mkdir(parents=True)
    tone_wav(src / "yes" / "a.wav", freq=300)
    tone_wav(src / "yes" / "b.wav", freq=600)
    (src / "yes" / "empty.wav").write_bytes(b"")
    (src / "yes" / "fake.wav").write_text("RIFF? no, just text pretending to be audio")
    r = import_source(store, src, labels_from_folders="initial", annotator="ann")
    probs = _problems(r)
    assert ("yes/empty.wav", "empty_audio") in probs
    assert ("yes/fake.wav", "not_audio") in probs
    assert r.added == 2 and r.annotations == 2


def test_text_manifest_and_unknown_label_with_fixed_label_set(tmp_path):
    store = Store.create(tmp_path / "p", modality="text", labels=["pos", "neg"], extractor="tfidf_svd")
    man = tmp_path / "t.csv"
    man.write_text("text,label\ngreat film,pos\nawful film,neg\nso so,meh\ngreat film,pos\n,pos\n")
    r = import_manifest(store, man)
    assert r.added == 2
    kinds = [p["problem"] for p in r.problems]
    assert kinds.count("unknown_label") == 1 and kinds.count("missing_text") == 1
    assert store.labels() == ["pos", "neg"]
    r2 = import_manifest(store, man, add_labels=True)
    assert "meh" in store.labels() and r2.added == 1


def test_missing_source_is_a_clear_error(tmp_path, image_project):
    from core.errors import ValidationError

    with pytest.raises(ValidationError, match="nope"):
        import_source(image_project, tmp_path / "nope")
