"""Job lifecycle under concurrency, with real processes: the claim token, a lost job, the stale rule, coalescing
only identical requests, and a failed COMMIT.

Another worker is a real ``python`` process here (``python -m core worker`` or a short ``python -c`` script),
so the SQLite locking and the per-process connections are the ones of production.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import JobCancelled
from core.io.ingest import import_folder
from core.jobs import queue as jobs
from core.store import project_store
from core.store.project_store import BUSY_TIMEOUT_S, Store
from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
LONG = {"params": {"grid": "full", "families": ["mlp"], "mlp_max_steps": 50000, "mlp_max_epochs": 100000}}  # minutes
SHORT = {"params": {"families": ["knn"], "knn_k": [1]}}                # seconds


@pytest.fixture
def project(tmp_path):
    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)
    import_folder(store, digits_folder(tmp_path / "src", per_class=12), labels_from_folders="initial", annotator="ann")
    return store


def _python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (another process on the same database); returns its stdout."""
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _worker(path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "worker", str(path)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait_status(store: Store, job_id: int, status: str, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.get_job(store, job_id)
        if job["status"] == status:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is {jobs.get_job(store, job_id)['status']!r}, not {status!r}, after {timeout} s")


STEAL = ("import sys; from core.jobs import queue as jobs; from core.store.project_store import Store;"
         "print(jobs.recover_stale(Store(sys.argv[1]), stale_after=0))")


def test_stale_timeout_exceeds_the_busy_timeout():
    # a heartbeat can wait the whole busy timeout for the write lock, one interval after the previous one
    assert jobs.STALE_AFTER_S > BUSY_TIMEOUT_S + jobs.HEARTBEAT_EVERY_S
    assert jobs.stale_after_s() == jobs.STALE_AFTER_S
    assert jobs.stale_after_s(5.0) > 5.0 + jobs.HEARTBEAT_EVERY_S


def test_stale_rule_follows_the_store_busy_timeout(project, monkeypatch):
    """recover_stale's default threshold is derived from the store's busy timeout when it is called."""
    jid, _ = jobs.request_job(project, "train", SHORT)
    jobs.claim_next(project)
    with project.transaction() as conn:
        conn.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ?", (project_store.now() - 20.0, jid))
    monkeypatch.setattr(project_store, "BUSY_TIMEOUT_S", 30.0)
    assert jobs.recover_stale(project) == []          # 20 s without heartbeat is fine when a write may wait 30 s
    monkeypatch.setattr(project_store, "BUSY_TIMEOUT_S", 10.0)
    assert jobs.recover_stale(project) == [jid]       # and too long when a write waits at most 10 s


@pytest.mark.slow
def test_live_worker_blocked_on_the_lock_is_not_declared_dead(project):
    """A worker process whose heartbeat waits on the write lock (held 35 s, within the 60 s busy timeout) is
    alive: another worker that gets the lock first must not fail its job."""
    jid, _ = jobs.request_job(project, "train", LONG)
    proc = _worker(project.dir)
    try:
        _wait_status(project, jid, "running", 120)
        time.sleep(3 * jobs.HEARTBEAT_EVERY_S)
        with project.transaction():
            time.sleep(35.0)                           # the worker's heartbeat and progress writes wait here
            # the lock is released to this other worker first: it sees a 35 s old heartbeat
            assert jobs.recover_stale(project) == []
        assert jobs.get_job(project, jid)["status"] == "running"
        hb = jobs.get_job(project, jid)["heartbeat_at"]
        time.sleep(3 * jobs.HEARTBEAT_EVERY_S)
        assert jobs.get_job(project, jid)["heartbeat_at"] > hb   # it is alive and heartbeats again
        assert jobs.request_cancel(project, jid) == "running"
        assert _wait_status(project, jid, "cancelled", 60)["run_id"] is None
    finally:
        _stop(proc)


def test_worker_that_lost_its_job_stops_it_and_does_not_publish(project):
    """A worker process whose running job was declared dead by another process notices at its next heartbeat,
    stops the job without publishing or touching the job row, and goes on with the next job."""
    lost, _ = jobs.request_job(project, "train", LONG)
    proc = _worker(project.dir)
    try:
        _wait_status(project, lost, "running", 120)
        assert json.loads(_python(STEAL, str(project.dir))) == [lost]   # another worker declares it dead
        failed = jobs.get_job(project, lost)
        assert failed["status"] == "failed"
        nxt, _ = jobs.request_job(project, "features", {})   # features are cached: done at once when it runs
        # the worker runs one job at a time: the next one only starts once it has dropped the lost one
        _wait_status(project, nxt, "done", 120)
        after = jobs.get_job(project, lost)
        assert (after["status"], after["message"], after["finished_at"]) == (
            failed["status"], failed["message"], failed["finished_at"])
        assert after["run_id"] is None and project.runs() == []
    finally:
        _stop(proc)


def test_heartbeat_progress_finish_and_publish_need_the_claim(project):
    """Once another process has taken a job over, this worker's heartbeat, progress, publish and finish fail
    loudly (ClaimLost) or change nothing."""
    from core.models.training import train_model

    jid, _ = jobs.request_job(project, "train", SHORT)
    job = jobs.claim_next(project)
    claim = job["claim"]
    assert isinstance(claim, str) and len(claim) >= 16
    assert jobs.heartbeat(project, jid, claim) is False                  # ours: no cancel requested
    with pytest.raises(jobs.ClaimLost):
        jobs.heartbeat(project, jid, "not-the-claim")
    assert json.loads(_python(STEAL, str(project.dir))) == [jid]
    failed = jobs.get_job(project, jid)
    with pytest.raises(jobs.ClaimLost):
        jobs.heartbeat(project, jid, claim)
    with pytest.raises(jobs.ClaimLost):
        jobs.set_progress(project, jid, {"phase": "fit", "step": 1, "total": 2}, claim=claim)
    assert issubclass(jobs.ClaimLost, JobCancelled)
    with pytest.raises(jobs.ClaimLost):
        train_model(project, "classifier", params=SHORT["params"], device="cpu", job_id=jid, project_map=False,
                    on_publish=jobs.publisher(jid, claim))
    assert project.runs() == []                                          # nothing published
    assert [d for d in (project.dir / "runs").iterdir() if d.is_dir()] == []  # and no orphan artefact folder
    assert jobs.finish(project, jid, "done", "published run 1", claim=claim) is False
    after = jobs.get_job(project, jid)
    assert (after["status"], after["message"], after["finished_at"], after["progress"]) == (
        "failed", failed["message"], failed["finished_at"], failed["progress"])


def test_publish_marks_the_job_done_in_the_same_transaction(project):
    from core.models.training import train_model

    jid, _ = jobs.request_job(project, "train", SHORT)
    job = jobs.claim_next(project)
    run_id = train_model(project, "classifier", params=SHORT["params"], device="cpu", job_id=jid,
                         project_map=False, on_publish=jobs.publisher(jid, job["claim"]))
    row = jobs.get_job(project, jid)
    assert (row["status"], row["message"], row["run_id"]) == ("done", f"published run {run_id}", run_id)
    assert jobs.finish(project, jid, "done", "again", claim=job["claim"]) is False  # nothing left to finish


def test_run_job_reports_a_lost_claim(project):
    jid, _ = jobs.request_job(project, "train", SHORT)
    job = jobs.claim_next(project)
    _python(STEAL, str(project.dir))
    from core.jobs.worker import run_job

    assert run_job(project, job) == "lost"
    assert jobs.get_job(project, jid)["status"] == "failed" and project.runs() == []


def _queue_train(project: Path, *params: str) -> subprocess.Popen:
    args = [a for p in params for a in ("--param", p)]
    return subprocess.Popen([sys.executable, "-m", "core", "train", str(project), "--queue", "--json", *args],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_only_identical_requests_coalesce(project):
    """Requests from separate processes: identical ones join the queued job, others queue visibly after it."""
    procs = [_queue_train(project.dir, "knn_k=[1]") for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    other = _queue_train(project.dir, "knn_k=[5]")
    out3 = json.loads(other.communicate(timeout=120)[0])
    a, b, c = outs[0]["job"], outs[1]["job"], out3["job"]
    assert a == b and sorted(o["coalesced"] for o in outs) == [False, True]
    assert c != a and out3["coalesced"] is False
    ja, jc = jobs.get_job(project, a), jobs.get_job(project, c)
    assert ja["requests"] == 2 and jc["requests"] == 1
    assert ja["params"]["params"] == {"knn_k": [1]} and jc["params"]["params"] == {"knn_k": [5]}
    assert jc["status"] == "queued" and f"job {a}" in (jc["message"] or "")   # visibly queued behind a
    # both run, in order, each with its own parameters
    first = jobs.claim_next(project)
    assert first["id"] == a and jobs.claim_next(project) is None             # one training job at a time
    assert jobs.finish(project, a, "done", claim=first["claim"])
    second = jobs.claim_next(project)
    assert second["id"] == c and second["params"]["params"] == {"knn_k": [5]}


def test_failed_commit_rolls_back(project):
    """A COMMIT that fails (here a deferred foreign key) must roll back: the connection is usable again and a
    later write is committed, as another process sees."""
    n_items = project.item_count()
    with pytest.raises(sqlite3.IntegrityError):
        with project.transaction() as conn:
            conn.execute("PRAGMA defer_foreign_keys = ON")
            conn.execute("INSERT INTO items (source_id, uri, modality, content_hash, created_at) "
                         "VALUES (999, 'ghost.png', 'image', 'x', 0)")
    assert not project.conn.in_transaction
    jid, _ = jobs.request_job(project, "features", {})
    seen = _python("import sys, sqlite3; c = sqlite3.connect(sys.argv[1]);"
                   "print(c.execute('SELECT COUNT(*) FROM items').fetchone()[0],"
                   " c.execute('SELECT COUNT(*) FROM jobs WHERE id = ?', (int(sys.argv[2]),)).fetchone()[0])",
                   str(project.path), str(jid))
    assert seen.split() == [str(n_items), "1"]
