"""Import robustness: each bad row (odd file names, encodings, long fields, long names, ragged rows, huge
images) is one report entry while the rest imports; a failed import writes nothing; file names are never parsed
as URLs."""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from core.errors import ValidationError
from core.io import ingest, media
from core.io.ingest import import_folder, import_manifest
from core.store.items import uri_path
from core.store.project_store import Store
from tests.helpers import digits_folder


@pytest.fixture
def image_project(tmp_path):
    return Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca")


@pytest.fixture
def text_project(tmp_path):
    return Store.create(tmp_path / "proj", modality="text", labels=["pos", "neg"], extractor="tfidf_svd")


@pytest.fixture
def media_dir(tmp_path):
    """Six digit PNGs in class folders 0/, 1/, 2/."""
    return digits_folder(tmp_path / "media", per_class=2)


def _pngs(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def _by_problem(report) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in report.problems:
        out.setdefault(p["problem"], []).append(p)
    return out


def _count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` pixels, all black: a few KB on disk for any size."""
    row = b"\x00" * (1 + (width + 7) // 8)             # filter byte + packed bits
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# -- file names ------------------------------------------------------------------------------------------------

def test_non_utf8_file_name_is_one_bad_row(tmp_path, image_project, media_dir):
    good = media_dir / "0" / sorted(os.listdir(media_dir / "0"))[0]
    bad_name = os.path.join(os.fsencode(media_dir / "1"), b"caf\xe9.png")   # Latin-1 bytes, not UTF-8
    buf = io.BytesIO()
    Image.new("L", (16, 16), 77).save(buf, format="PNG")
    try:
        with open(bad_name, "wb") as f:
            f.write(buf.getvalue())
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 file names")
    r = import_folder(image_project, media_dir, labels_from_folders="reference")
    bad = _by_problem(r)["bad_encoding"]
    assert len(bad) == 1 and bad[0]["path"] == "1/caf\\xe9.png" and "rename" in bad[0]["detail"]
    json.dumps(r.as_dict(), ensure_ascii=False).encode("utf-8")     # the report itself is valid UTF-8
    assert r.added == 6 and image_project.item_count() == 6
    assert good.name in {it.path.name for it in image_project.items()}


def test_names_with_hash_query_and_percent_are_stored_and_resolved_by_their_real_name(tmp_path, image_project):
    src = digits_folder(tmp_path / "media", per_class=3, classes=(0,))
    names = ["photo#t=1.jpg", "a?b.png", "%20.png"]
    for name, p in zip(names, sorted((src / "0").glob("*.png"))):
        Image.open(p).convert("RGB").save(src / "0" / name, format="JPEG" if name.endswith(".jpg") else "PNG")
        p.unlink()
    r = import_folder(image_project, src)
    assert r.added == 3 and not r.problems
    items = image_project.items()
    assert sorted(it.path.name for it in items) == sorted(names)
    assert all(it.path.is_file() for it in items)
    found = image_project.find_items_by_path([str(src / "0" / n) for n in names])
    assert len(found) == 3


def test_caption_suffix_of_an_image_text_item_keeps_the_file_name(tmp_path):
    store = Store.create(tmp_path / "p", modality="image+text", extractor="pixels_pca")
    src = digits_folder(tmp_path / "media", per_class=1, classes=(0,))
    png = next((src / "0").glob("*.png"))
    png.rename(src / "0" / "photo#t=1.png")
    man = src / "m.jsonl"
    man.write_text(json.dumps({"path": "0/photo#t=1.png", "caption": "a zero"}) + "\n")
    assert import_manifest(store, man).added == 1
    item = store.items()[0]
    assert item.uri.startswith("0/photo#t=1.png#t=") and item.path == src / "0" / "photo#t=1.png"
    assert uri_path("x.png#t=0123456789ab") == "x.png" and uri_path("x#t=1.jpg") == "x#t=1.jpg"


# -- manifest encodings and CSV shape --------------------------------------------------------------------------

def test_nul_byte_in_a_manifest_path_is_one_bad_row(image_project, media_dir):
    files = _pngs(media_dir)
    man = media_dir / "m.csv"
    man.write_text("path\n" + files[0] + "\n" + "0/evil\x00.png\n" + files[1] + "\n")
    r = import_manifest(image_project, man)
    bad = _by_problem(r)["bad_path"]
    assert [p["row"] for p in bad] == [2] and "NUL" in bad[0]["detail"]
    assert r.added == 2


def test_latin1_csv_is_read_with_a_note(text_project, tmp_path):
    man = tmp_path / "t.csv"
    man.write_bytes("text,label\ncafé crème,pos\nnaïve film,neg\n".encode("latin-1"))
    r = import_manifest(text_project, man)
    assert r.added == 2
    note = _by_problem(r)["not_utf8"][0]
    assert note["row"] == 0 and "0xe9" in note["detail"] and "line 2" in note["detail"] and "cp1252" in note["detail"]
    assert r.skipped == 0
    assert {it.text for it in text_project.items()} == {"café crème", "naïve film"}


def test_csv_that_is_not_cp1252_either_is_read_as_latin1(text_project, tmp_path):
    man = tmp_path / "t.csv"
    man.write_bytes(b"text,label\nx\x81y,pos\n")               # 0x81: undefined in Windows-1252
    r = import_manifest(text_project, man)
    assert r.added == 1 and "latin-1" in _by_problem(r)["not_utf8"][0]["detail"]
    assert text_project.items()[0].text == "x\x81y"


def test_excel_csv_with_a_byte_order_mark_imports(image_project, media_dir):
    files = _pngs(media_dir)
    man = media_dir / "excel.csv"
    man.write_text("path,label\n" + "".join(f"{f},{f[0]}\n" for f in files), encoding="utf-8-sig")
    assert man.read_bytes().startswith(codecs.BOM_UTF8)
    r = import_manifest(image_project, man)
    assert r.added == 6 and r.annotations == 6 and not r.problems


def test_utf16_csv_with_its_mark_imports(text_project, tmp_path):
    man = tmp_path / "t.csv"
    man.write_text("text,label\nbon film,pos\n", encoding="utf-16")
    r = import_manifest(text_project, man)
    assert r.added == 1 and not r.problems


@pytest.fixture
def restore_csv_limit():
    old = csv.field_size_limit()
    yield
    csv.field_size_limit(old)


def test_csv_field_over_128_kb_imports_and_one_over_the_limit_is_one_bad_row(text_project, tmp_path, monkeypatch,
                                                                              restore_csv_limit):
    long_text = "word " * 40_000                                    # 200 KB
    man = tmp_path / "t.csv"
    man.write_text(f"text,label\nshort one,pos\n{long_text},neg\nanother,pos\n")
    r = import_manifest(text_project, man)
    assert r.added == 3 and not r.problems
    assert max(len(it.text) for it in text_project.items()) == len(long_text.strip())
    monkeypatch.setattr(ingest, "MAX_FIELD_CHARS", 1000)
    man2 = tmp_path / "t2.csv"
    man2.write_text("text,label\nthird,neg\n" + "x" * 5000 + ",pos\nfourth,neg\n")
    r2 = import_manifest(text_project, man2)
    bad = _by_problem(r2)["bad_csv_row"]
    assert [p["row"] for p in bad] == [2] and "field" in bad[0]["detail"] and "line 3" in bad[0]["detail"]
    assert r2.added == 2


def test_ragged_rows_are_reported_not_truncated_or_padded(image_project, media_dir):
    files = _pngs(media_dir)
    man = media_dir / "m.csv"
    man.write_text("path,label\n"
                   f"{files[0]},0\n"
                   f"{files[1]},0,extra\n"          # one field too many
                   f"{files[2]}\n"                 # one too few
                   "\n"                            # a blank line is no row
                   f"{files[3]},1\n")
    r = import_manifest(image_project, man)
    ragged = _by_problem(r)["ragged_row"]
    assert [p["row"] for p in ragged] == [2, 3]
    assert "3 fields" in ragged[0]["detail"] and "has 1 field," in ragged[1]["detail"]
    assert r.added == 2 and r.skipped == 2


def test_jsonl_bad_encoding_and_lone_surrogate_are_bad_rows(tmp_path):
    store = Store.create(tmp_path / "p", modality="text", labels=["pos"], extractor="tfidf_svd")
    man = tmp_path / "t.jsonl"
    lines = [codecs.BOM_UTF8 + b'{"text": "fine"}', b'{"text": "caf\xe9"}', b'{"text": "lone \\udce9"}',
             b'{"text": "also fine", "label": "pos"}', b"[" * 100_000]
    man.write_bytes(b"\n".join(lines) + b"\n")
    r = import_manifest(store, man)
    probs = _by_problem(r)
    assert [p["row"] for p in probs["bad_encoding"]] == [2, 3]
    assert [p["row"] for p in probs["bad_json"]] == [5]
    assert r.added == 2 and r.annotations == 1


# -- names the store refuses -----------------------------------------------------------------------------------

def test_long_annotator_and_long_label_are_bad_rows(image_project, media_dir):
    files = _pngs(media_dir)
    man = media_dir / "m.csv"
    long_who, long_label = "a" * 1000, "L" * 150
    man.write_text("path,label,annotator\n"
                   f"{files[0]},0,alice\n"
                   f"{files[1]},0,{long_who}\n"
                   f"{files[2]},{long_label},bob\n"
                   f"{files[3]},{long_label},{long_who}\n"
                   f"{files[4]},1,import\n"         # a reserved name is no person's
                   f"{files[5]},1,bob\n")
    r = import_manifest(image_project, man, add_labels=True)
    probs = _by_problem(r)
    assert [p["row"] for p in probs["bad_annotator"]] == [2, 4, 5]
    assert [p["row"] for p in probs["bad_label"]] == [3]
    assert all(len(p["detail"]) < 400 for p in r.problems)    # a 1,000-character name is not echoed whole
    assert r.added == 2 and image_project.labels() == ["0", "1"]
    assert sorted(v["annotator"] for v in image_project.active_votes()) == ["alice", "bob"]


def test_class_folder_with_a_long_name_is_a_bad_row(tmp_path, image_project):
    src = digits_folder(tmp_path / "media", per_class=2, classes=(0, 1))
    (src / "1").rename(src / ("x" * 150))
    r = import_folder(image_project, src, labels_from_folders="initial", annotator="ann")
    assert len(_by_problem(r)["bad_label"]) == 2 and r.added == 2 and image_project.labels() == ["0"]


def test_bad_default_annotator_is_refused_up_front(image_project, media_dir):
    with pytest.raises(ValidationError, match="annotator"):
        import_folder(image_project, media_dir, labels_from_folders="initial", annotator="x" * 101)
    assert _count(image_project, "sources") == 0


# -- nothing written for a failed import -----------------------------------------------------------------------

def test_import_with_nothing_importable_writes_nothing(image_project, media_dir):
    man = media_dir / "m.csv"
    man.write_text("path\nmissing.png\n0/evil\x00.png\n")
    r = import_manifest(image_project, man)
    assert r.added == 0 and r.skipped == 2
    assert _count(image_project, "sources") == 0 and _count(image_project, "imports") == 0


def test_import_that_fails_midway_leaves_no_sources_row(image_project, media_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(image_project, "annotate_many", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        import_folder(image_project, media_dir, labels_from_folders="initial", annotator="ann")
    for table in ("sources", "items", "imports", "labels"):
        assert _count(image_project, table) == 0, table


def test_reimport_of_a_known_source_records_the_import_on_its_row(image_project, media_dir):
    import_folder(image_project, media_dir)
    r = import_folder(image_project, media_dir)
    assert r.already_present == 6 and _count(image_project, "sources") == 1 and _count(image_project, "imports") == 2


def test_unreadable_file_is_one_bad_row(image_project, media_dir, monkeypatch):
    victim = _pngs(media_dir)[2]
    real = media.file_hash

    def flaky(path):
        if Path(path).as_posix().endswith(victim):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(media, "file_hash", flaky)
    r = import_folder(image_project, media_dir)
    bad = _by_problem(r)["unreadable"]
    assert [p["path"] for p in bad] == [victim] and "Permission denied" in bad[0]["detail"]
    assert r.added == 5


# -- the pixel cap ---------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns on opening the header
def test_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, image_project, media_dir):
    huge = _png_header_only(media_dir / "0" / "huge.png", 12_000, 12_000)    # 144 megapixels, ~20 KB on disk
    assert huge.stat().st_size < 100_000
    r = import_folder(image_project, media_dir)
    big = _by_problem(r)["too_large"]
    assert [p["path"] for p in big] == ["0/huge.png"]
    assert "12000x12000" in big[0]["detail"] and "LABELTOOL_MAX_PIXELS" in big[0]["detail"]
    assert r.added == 6


def test_pixel_cap_follows_the_environment(image_project, media_dir, monkeypatch):
    monkeypatch.setenv("LABELTOOL_MAX_PIXELS", "100")        # the 16x16 digits hold 256 pixels
    r = import_folder(image_project, media_dir)
    assert len(_by_problem(r)["too_large"]) == 6 and r.added == 0
    monkeypatch.setenv("LABELTOOL_MAX_PIXELS", "256")
    assert import_folder(image_project, media_dir).added == 6
    monkeypatch.setenv("LABELTOOL_MAX_PIXELS", "lots")
    with pytest.raises(ValidationError, match="LABELTOOL_MAX_PIXELS.*'lots'"):
        media.max_pixels()
    monkeypatch.delenv("LABELTOOL_MAX_PIXELS")
    assert media.max_pixels() == 50_000_000


def test_copied_image_of_a_refused_row_does_not_block_the_good_one(tmp_path, image_project, media_dir):
    """A bad row does not make the same file on a good row a duplicate (the hash is taken on good rows only)."""
    files = _pngs(media_dir)
    shutil.copy(media_dir / files[0], media_dir / "0" / "copy.png")
    man = media_dir / "m.csv"
    man.write_text(f"path,label\n0/copy.png,{'L' * 150}\n{files[0]},0\n")
    r = import_manifest(image_project, man, add_labels=True)
    assert r.added == 1 and [p["problem"] for p in r.problems] == ["bad_label"]
