"""One corrupt or newer-schema project in the projects folder: the worker skips it, says why, and serves the rest;
:func:`scan_projects` lists it with its reason for the app."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from core.io.ingest import import_folder
from core.jobs import queue as jobs
from core.jobs.worker import _Served, discover_projects, project_problem, scan_projects, serve
from core.store.project_store import DB_NAME, Store
from core.store.schema import SCHEMA_VERSION
from tests.helpers import digits_folder


def _project(path: Path, src: Path | None = None) -> Store:
    store = Store.create(path, modality="image", extractor="pixels_pca", min_votes=1)
    if src is not None:
        import_folder(store, src, labels_from_folders="initial", annotator="ann")
    return store


@pytest.fixture
def folder(tmp_path) -> Path:
    """projects/ with ``good`` (a queued features job), ``garbage`` (project.db is random bytes), ``newer``
    (schema version 999), and ``.hidden`` (a backup being written, say)."""
    root = tmp_path / "projects"
    good = _project(root / "good", digits_folder(tmp_path / "src", per_class=4))
    jobs.request_job(good, "features", {})
    (root / "garbage").mkdir(parents=True)
    (root / "garbage" / DB_NAME).write_bytes(bytes(range(256)) * 64)
    newer = _project(root / "newer")
    newer.close()
    conn = sqlite3.connect(root / "newer" / DB_NAME)
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    _project(root / ".hidden").close()
    return root


def test_scan_projects_splits_healthy_and_broken_with_reasons(folder):
    healthy, broken = scan_projects(folder)
    assert healthy == [folder / "good"]
    reasons = dict(broken)
    assert sorted(reasons) == [folder / "garbage", folder / "newer"]
    assert "not a readable project database" in reasons[folder / "garbage"]
    assert "file is not a database" in reasons[folder / "garbage"]
    assert f"schema version 999 is newer than this program's {SCHEMA_VERSION}" in reasons[folder / "newer"]
    assert folder / ".hidden" not in discover_projects(folder)


def test_scan_reads_only(folder):
    before = {p: p.read_bytes() for p in (folder / "garbage" / DB_NAME, folder / "newer" / DB_NAME)}
    scan_projects(folder)
    assert {p: p.read_bytes() for p in before} == before
    assert not (folder / "garbage" / f"{DB_NAME}-wal").exists()


def test_project_problem_of_a_database_without_meta(tmp_path):
    (tmp_path / "p").mkdir()
    sqlite3.connect(tmp_path / "p" / DB_NAME).execute("CREATE TABLE other (x)").connection.commit()
    assert "no such table: meta" in project_problem(tmp_path / "p")


def test_worker_serves_the_good_project_and_logs_the_broken_ones(folder, caplog):
    with caplog.at_level(logging.INFO, logger="core.jobs.worker"):
        assert serve(folder, once=True) == 1
    good = Store(folder / "good")
    job = jobs.list_jobs(good)[0]
    assert job["kind"] == "features" and job["status"] == "done", job["message"]
    skipped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(skipped) == 2  # one line per broken project, not one per pass
    garbage = next(m for m in skipped if str(folder / "garbage") in m)
    assert "file is not a database" in garbage and "other projects are still served" in garbage
    assert any(str(folder / "newer") in m and "schema version 999" in m for m in skipped)


def test_a_repaired_project_is_served_on_a_later_pass(folder, tmp_path, caplog):
    served = _Served(folder)
    served.refresh()
    assert set(served.broken) == {folder / "garbage", folder / "newer"} and set(served.stores) == {folder / "good"}
    (folder / "garbage" / DB_NAME).unlink()
    _project(folder / "garbage").close()
    with caplog.at_level(logging.INFO, logger="core.jobs.worker"):
        served.refresh()
    assert set(served.stores) == {folder / "good", folder / "garbage"} and set(served.broken) == {folder / "newer"}
    assert any("can be opened again" in r.getMessage() for r in caplog.records)


def test_a_project_failing_while_served_is_skipped_and_the_others_served(folder, tmp_path, monkeypatch, caplog):
    other = _project(folder / "other", digits_folder(tmp_path / "src2", per_class=3))
    jid, _ = jobs.request_job(other, "features", {})
    real = jobs.claim_next

    def claim_next(store, **kw):
        if store.dir == (folder / "good").resolve():
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(store, **kw)

    monkeypatch.setattr(jobs, "claim_next", claim_next)
    with caplog.at_level(logging.INFO, logger="core.jobs.worker"):
        assert serve(folder, once=True) == 1
    assert jobs.get_job(other, jid)["status"] == "done"
    assert any(str(folder / "good") in r.getMessage() and "malformed" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
