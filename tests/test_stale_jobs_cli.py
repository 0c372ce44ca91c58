"""A ``core train`` killed with ``kill -9`` and no worker up must not block the project's training for good: the next
request finds the job's process gone, marks the job failed and runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.io.ingest import import_folder
from core.jobs import queue as jobs
from core.store.project_store import Store
from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
LONG = ["--param", "grid=full", "--param", 'families=["mlp"]', "--param", "mlp_max_steps=50000",
        "--param", "mlp_max_epochs=100000"]  # minutes of training
SHORT = ["--param", 'families=["knn"]', "--param", "knn_k=[1]"]  # seconds


@pytest.fixture
def project(tmp_path) -> Store:
    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)
    import_folder(store, digits_folder(tmp_path / "src", per_class=8), labels_from_folders="initial", annotator="ann")
    return store


def _train(project: Store, *params: str) -> list[str]:
    return [sys.executable, "-m", "core", "train", str(project.dir), "--device", "cpu", "--json", *params]


def _running_job_of(store: Store, pid: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [j for j in jobs.list_jobs(store, status="running") if j["pid"] == pid]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no job of process {pid} was running after {timeout} s")


@pytest.mark.slow  # two CLI processes and a training run: ~17 s
def test_train_after_a_killed_cli_train_runs_instead_of_exiting_busy(project):
    first = subprocess.Popen(_train(project, *LONG), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        job = _running_job_of(project, first.pid)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert jobs.get_job(project, job["id"])["status"] == "running"  # what kill -9 leaves behind
    second = subprocess.run(_train(project, *SHORT), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"job {job['id']} was left running by a process that is gone: marked failed" in second.stderr
    out = json.loads(second.stdout)
    assert out["n_labelled"] == 24 and out["model_selected"] == "knn"
    dead = jobs.get_job(project, job["id"])
    assert dead["status"] == "failed" and f"process {first.pid} is gone" in dead["message"]
    assert project.run()["id"] == out["run"]  # the second request's run is the one in service


CLAIM_AND_EXIT = ("import sys; from core.jobs import queue as jobs; from core.store.project_store import Store;"
                  "s = Store(sys.argv[1]); j = jobs.claim_next(s); print(j['id'])")


def test_request_job_recovers_a_job_whose_process_is_gone_without_a_worker(project):
    jid, _ = jobs.request_job(project, "train", {"model": "classifier"})
    out = subprocess.run([sys.executable, "-c", CLAIM_AND_EXIT, str(project.dir)], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == jid and jobs.get_job(project, jid)["status"] == "running"
    new, coalesced = jobs.request_job(project, "train", {"model": "classifier"})
    assert new != jid and not coalesced
    assert jobs.get_job(project, jid)["status"] == "failed"
    assert jobs.get_job(project, new)["message"] is None  # not queued behind the dead job
    assert jobs.claim_next(project, job_id=new)["id"] == new


def test_request_job_leaves_a_live_job_running(project):
    jid, _ = jobs.request_job(project, "train", {"model": "classifier"})
    job = jobs.claim_next(project)  # this process: alive, heartbeat fresh
    other, _ = jobs.request_job(project, "train", {"model": "other"})
    assert jobs.get_job(project, jid)["status"] == "running"
    assert jobs.get_job(project, other)["message"] == f"queued after running train job {jid} (other parameters)"
    assert jobs.claim_next(project, job_id=other) is None
    assert jobs.finish(project, jid, "done", claim=job["claim"])
