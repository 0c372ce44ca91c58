"""The import job: the Home page queues it, a worker imports with progress through the jobs row."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ValidationError
from core.io.ingest import request_import
from core.jobs import queue as jobs
from core.jobs.worker import run_job
from core.store.project_store import Store
from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def empty(tmp_path):
    return Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)


def test_import_job_imports_with_progress(empty, tmp_path, monkeypatch):
    src = digits_folder(tmp_path / "src", per_class=20)            # 60 files
    jid, coalesced = request_import(empty, src, labels_from_folders="initial", annotator="ann", requested_by="me")
    assert not coalesced and empty.item_count() == 0               # queued, nothing imported yet
    job = jobs.get_job(empty, jid)
    assert job["kind"] == "import" and job["params"]["source"] == str(src.resolve())
    seen: list[dict] = []
    real = jobs.set_progress

    def record(store, job_id, progress, message=None, *, claim):
        seen.append(dict(progress))
        real(store, job_id, progress, message, claim=claim)

    monkeypatch.setattr(jobs, "set_progress", record)
    assert run_job(empty, jobs.claim_next(empty)) == "done"
    steps = [p["step"] for p in seen if p.get("phase") == "check files"]
    assert steps == sorted(steps) and steps[-1] == 60 and len(steps) >= 5   # progress while decoding
    assert all(p["total"] == 60 for p in seen if p.get("phase") == "check files")
    job = jobs.get_job(empty, jid)
    assert job["status"] == "done" and "Imported 60 items" in job["message"]
    assert job["progress"]["report"]["added"] == 60 and job["progress"]["report"]["annotations"] == 60
    assert empty.item_count() == 60 and len(empty.active_votes()) == 60
    feats = jobs.active_job(empty, "features")                     # features follow, as after any import
    assert feats is not None and feats["status"] == "queued" and feats["requested_by"] == "me"


def test_import_job_reports_problems_and_bad_source(empty, tmp_path):
    with pytest.raises(ValidationError, match="'source'"):
        request_import(empty, tmp_path / "nowhere")
    with pytest.raises(ValidationError, match="'labels_from_folders'"):
        request_import(empty, tmp_path, labels_from_folders="everything")
    src = digits_folder(tmp_path / "src", per_class=3)
    (src / "0" / "broken.png").write_bytes(b"not a png")
    jid, _ = request_import(empty, src, labels_from_folders="reference")
    assert run_job(empty, jobs.claim_next(empty)) == "done"
    report = jobs.get_job(empty, jid)["progress"]["report"]
    assert report["added"] == 9 and report["skipped"] == 1
    assert report["problems"][0]["path"] == "0/broken.png"


def test_import_job_can_be_cancelled(empty, tmp_path):
    src = digits_folder(tmp_path / "src", per_class=20)
    jid, _ = request_import(empty, src)
    job = jobs.claim_next(empty)
    assert jobs.request_cancel(empty, jid) == "running"
    assert run_job(empty, job) == "cancelled"
    assert empty.item_count() == 0


def test_worker_process_runs_the_import_job(empty, tmp_path):
    src = digits_folder(tmp_path / "src", per_class=10)
    jid, _ = request_import(empty, src, labels_from_folders="reference")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "core", "worker", str(empty.dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job = jobs.wait_for(empty, jid, timeout=180)
    finally:
        proc.terminate()
        proc.wait(30)
    assert job["status"] == "done", job["message"]
    assert job["progress"]["step"] == job["progress"]["total"] == 30
    assert empty.item_count() == 30 and len(empty.reference_labels()) == 30
