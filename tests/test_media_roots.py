"""Media roots: browser imports read only below them (the source up front, each file per row); the command
line is not confined."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.errors import ValidationError
from core.io.ingest import import_manifest, import_source, request_import
from core.io.media_roots import REPO, check_under_roots, default_media_roots, media_roots
from core.jobs import queue as jobs
from core.jobs.worker import run_job
from core.store.project_store import Store
from tests.helpers import digits_folder


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """``allowed/`` (the only media root) holding digit PNGs in ``allowed/media``, ``secret/`` beside it."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    digits_folder(allowed / "media", per_class=2)
    digits_folder(secret, per_class=1, classes=(5,))
    monkeypatch.setenv("LABELTOOL_MEDIA_ROOTS", str(allowed))
    return allowed, secret


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)


def _run(store: Store, job_id: int) -> dict:
    assert run_job(store, jobs.claim_next(store)) in ("done", "failed")
    return jobs.get_job(store, job_id)


def test_default_roots_are_projects_data_and_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("LABELTOOL_MEDIA_ROOTS", raising=False)
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    roots = media_roots()
    assert roots == default_media_roots()
    assert roots[:2] == [(tmp_path / "projects").resolve(), (REPO / "data").resolve()]
    shared = (REPO.parent / "shared" / "datasets")
    assert (shared.resolve() in roots) == shared.is_dir()
    assert all(r.is_absolute() for r in roots)


def test_env_names_the_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELTOOL_MEDIA_ROOTS", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b"),
                                                                  str(tmp_path / "a")]))
    assert media_roots() == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]
    monkeypatch.setenv("LABELTOOL_MEDIA_ROOTS", " ")
    assert media_roots() == default_media_roots()


def test_check_under_roots(layout, tmp_path):
    allowed, secret = layout
    roots = media_roots()
    assert check_under_roots(allowed / "media", roots) == (allowed / "media").resolve()
    for outside in (secret, allowed / ".." / "secret", Path("/etc")):
        with pytest.raises(ValidationError) as err:
            check_under_roots(outside, roots)
        msg = str(err.value)
        assert str(outside) in msg and str(allowed) in msg and "LABELTOOL_MEDIA_ROOTS" in msg
    (allowed / "link").symlink_to(secret, target_is_directory=True)  # inside by name, outside once resolved
    with pytest.raises(ValidationError, match="outside the media roots"):
        check_under_roots(allowed / "link", roots)
    with pytest.raises(ValidationError):
        check_under_roots("a\0b", roots)


def test_browser_import_outside_the_roots_is_refused_up_front(layout, store):
    allowed, secret = layout
    with pytest.raises(ValidationError, match="outside the media roots"):
        request_import(store, secret, confine_to=media_roots())
    with pytest.raises(ValidationError, match="outside the media roots"):
        request_import(store, "/etc", confine_to=media_roots())
    man = allowed / "m.csv"
    man.write_text("path\nmedia/0/x.png\n")
    with pytest.raises(ValidationError, match="outside the media roots"):
        request_import(store, man, media_root=secret, confine_to=media_roots())
    assert jobs.active_job(store, "import") is None
    assert store.conn.execute("SELECT COUNT(*) FROM sources").fetchone()[0] == 0


def test_symlink_leaving_the_roots_is_one_bad_row_in_the_job(layout, store):
    allowed, secret = layout
    src = allowed / "media"
    outside_png = next(secret.rglob("*.png"))
    (src / "0" / "leak.png").symlink_to(outside_png)
    jid, _ = request_import(store, src, labels_from_folders="reference", confine_to=media_roots())
    assert jobs.get_job(store, jid)["params"]["confine_to"] == [str(allowed.resolve())]
    job = _run(store, jid)
    assert job["status"] == "done", job["message"]
    report = job["progress"]["report"]
    assert [(p["path"], p["problem"]) for p in report["problems"]] == [("0/leak.png", "outside_roots")]
    assert "outside the media roots" in report["problems"][0]["detail"]
    assert str(outside_png) not in json.dumps(report)          # the report does not reveal where it points
    assert report["added"] == 6 and store.item_count() == 6


def test_manifest_rows_escaping_the_roots_are_bad_rows(layout, store):
    allowed, secret = layout
    outside_png = next(secret.rglob("*.png"))
    files = sorted(p.relative_to(allowed).as_posix() for p in (allowed / "media").rglob("*.png"))
    man = allowed / "m.csv"
    rel_out = os.path.relpath(outside_png, allowed)
    man.write_text("path\n" + "\n".join([files[0], str(outside_png), rel_out, files[1]]) + "\n")
    r = import_manifest(store, man, confine_to=media_roots())
    assert [(p["row"], p["problem"]) for p in r.problems] == [(2, "outside_roots"), (3, "outside_roots")]
    assert r.added == 2


def test_worker_checks_the_source_again(layout, store, tmp_path):
    allowed, secret = layout
    src = allowed / "later"
    src.mkdir()
    jid, _ = request_import(store, src, confine_to=media_roots())
    src.rmdir()
    src.symlink_to(secret, target_is_directory=True)            # swapped for a way out after the request
    job = _run(store, jid)
    assert job["status"] == "failed" and "outside the media roots" in job["message"]
    assert store.item_count() == 0


def test_command_line_import_is_not_confined(layout, store):
    allowed, secret = layout
    r = import_source(store, secret, labels_from_folders="reference")   # what `python -m core import` calls
    assert r.added == 1 and not r.problems
    jid, _ = request_import(store, secret)                               # confine_to=None: unrestricted
    assert jobs.get_job(store, jid)["params"]["confine_to"] is None


def test_bad_confine_to_in_job_params_is_refused(layout, store):
    allowed, _ = layout
    with pytest.raises(ValidationError, match="'confine_to'"):
        request_import(store, allowed, confine_to=[""])
