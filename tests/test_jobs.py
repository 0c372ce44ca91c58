"""Job queue and worker: coalescing, one training job at a time, cancel, a worker killed mid-job."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.jobs import queue as jobs
from core.io.ingest import import_folder
from core.store.project_store import Store
from core.jobs.worker import run_job, serve
from tests.helpers import digits_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path):
    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)
    src = digits_folder(tmp_path / "src", per_class=12)
    import_folder(store, src, labels_from_folders="initial", annotator="ann")
    return store


def test_requests_coalesce_and_one_training_job_runs_at_a_time(project):
    a, merged = jobs.request_job(project, "train", {"model": "classifier"})
    b, merged2 = jobs.request_job(project, "train", {"model": "classifier"})
    assert a == b and not merged and merged2
    assert jobs.get_job(project, a)["requests"] == 2
    job = jobs.claim_next(project)
    assert job["id"] == a and job["status"] == "running"
    c, merged3 = jobs.request_job(project, "train", {})  # while one runs: a new queued job
    assert c != a and not merged3
    assert jobs.claim_next(project) is None  # not while the first runs
    assert jobs.finish(project, a, "done", claim=job["claim"])
    assert jobs.claim_next(project)["id"] == c


def test_cancel_queued_job(project):
    jid, _ = jobs.request_job(project, "train", {})
    assert jobs.request_cancel(project, jid) == "cancelled"
    assert jobs.claim_next(project) is None


def test_worker_trains_publishes_and_reports_progress(project):
    jid, _ = jobs.request_job(project, "train", {"model": "classifier", "params": {"mlp_max_steps": 100}})
    assert serve(project.dir, once=True) == 1
    job = jobs.get_job(project, jid)
    assert job["status"] == "done", job["message"]
    run = project.run()
    assert run["id"] == job["run_id"] and run["n_labelled"] == 36
    assert job["progress"]["phase"] == "publish"
    assert len(project.predictions(run["id"])) == 36
    assert run["metrics"]["evaluation"]["n_reference"] == 0


def test_cancel_running_job_keeps_previous_run(project):
    jid, _ = jobs.request_job(project, "train", {"params": {"mlp_max_steps": 100}})
    serve(project.dir, once=True)
    first = project.run()["id"]
    jid2, _ = jobs.request_job(project, "train", {"params": {"grid": "full", "families": ["mlp"], "mlp_max_steps": 20000,
                                                               "mlp_max_epochs": 100000}})
    job = jobs.claim_next(project)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("s", run_job(Store(project.dir), job)))
    t.start()
    deadline = time.time() + 60
    while jobs.get_job(project, jid2)["progress"].get("phase", "").split(" ")[0] not in ("cv",) and time.time() < deadline:
        time.sleep(0.05)
    assert jobs.request_cancel(project, jid2) == "running"
    t.join(120)
    assert result["s"] == "cancelled"
    assert jobs.get_job(project, jid2)["status"] == "cancelled"
    assert project.run()["id"] == first


def test_training_failure_is_reported_in_the_job(tmp_path):
    store = Store.create(tmp_path / "p", modality="image", extractor="pixels_pca", min_votes=1)
    import_folder(store, digits_folder(tmp_path / "src", per_class=3), labels_from_folders="reference")
    jid, _ = jobs.request_job(store, "train", {})
    serve(store.dir, once=True)
    job = jobs.get_job(store, jid)
    assert job["status"] == "failed" and "No confirmed labels" in job["message"]


@pytest.mark.slow
def test_worker_killed_mid_job_is_marked_failed_at_next_start(project):
    jobs.request_job(project, "train", {"params": {"mlp_max_steps": 100}})
    serve(project.dir, once=True)
    first = project.run()["id"]
    jid, _ = jobs.request_job(project, "train", {"params": {"grid": "full", "families": ["mlp"], "mlp_max_steps": 50000,
                                                              "mlp_max_epochs": 100000}})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "core", "worker", str(project.dir)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while jobs.get_job(project, jid)["status"] != "running" and time.time() < deadline:
            time.sleep(0.1)
        assert jobs.get_job(project, jid)["status"] == "running"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert jobs.get_job(project, jid)["status"] == "running"  # nobody has noticed yet
    serve(project.dir, once=True)  # a new worker starts
    job = jobs.get_job(project, jid)
    assert job["status"] == "failed" and "died" in job["message"]
    assert project.run()["id"] == first


def test_worker_trains_an_iic_run_like_retrain_now(project):
    """The Train page's "Retrain now" with IIC chosen queues this job; the worker publishes an IIC run."""
    params = {"epochs": 3, "batch_size": 32, "hidden": 32, "embed_dim": 8, "n_sub_heads": 2, "n_neighbours": 5}
    jid, _ = jobs.request_job(project, "train", {"model": "iic", "params": params})
    assert serve(project.dir, once=True) == 1
    job = jobs.get_job(project, jid)
    assert job["status"] == "done", job["message"]
    run = project.run()
    assert run["model"] == "iic" and run["id"] == job["run_id"]
    assert (project.run_dir(run) / "overclusters.npy").exists()
    assert run["metrics"]["iic"]["k"] == 3 and "collapse" in run["metrics"]["iic"]
