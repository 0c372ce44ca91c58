"""Automatic light retrains: the settings and their one validation rule, the pure decision, the worker's check,
the Label page's "suggestions from" line, the CLI, and a real worker that retrains after N confirmed labels."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ValidationError
from core.io.ingest import import_folder
from core.jobs import auto_retrain
from core.jobs import queue as jobs
from core.jobs.worker import check_auto_retrain
from core.store.project_store import Store
from core.views.suggestions import suggestion_source
from tests.helpers import ensure_account, digits_folder, open_page

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
ON = {"auto_retrain": True, "auto_retrain_every": 5}


@pytest.fixture
def project(tmp_path):
    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=8), labels_from_folders="reference")
    return store


def _label(store: Store, n: int, annotator: str = "ann", skip: int = 0) -> list[int]:
    """Vote the reference label on ``n`` items (classes interleaved), after the first ``skip`` of that order."""
    truth = store.reference_labels()
    order = sorted(truth, key=lambda i: (list(truth).index(i) % 8, truth[i]))[skip:skip + n]
    for i in order:
        store.annotate(int(i), annotator, truth[i])
    return order


# ---------------------------------------------------------------------------------------------- settings
def test_settings_default_off_validated_by_the_store_and_on_in_the_demo(project, tmp_path):
    from core.io.demo import create_demo

    assert auto_retrain.read_settings(project.settings()) == (False, 20)
    for key, bad in (("auto_retrain", "yes"), ("auto_retrain", 1), ("auto_retrain_every", 0),
                     ("auto_retrain_every", 2.5), ("auto_retrain_every", True)):
        with pytest.raises(ValidationError, match=f"'{key}' parameter of settings must be .*Got {bad!r}"):
            project.set_setting(key, bad)
    project.set_setting("auto_retrain", True)
    project.set_setting("auto_retrain_every", 7)
    assert auto_retrain.read_settings(project.settings()) == (True, 7)
    demo, _ = create_demo(tmp_path / "demo", n=20, queue_features=False)
    assert auto_retrain.read_settings(demo.settings()) == (True, 20)


def test_light_params_are_classifier_settings():
    from core.models.classifier.model import ClassifierConfig

    params = auto_retrain.job_params(12)
    assert params["model"] == "classifier" and params["auto"] == {"n_confirmed": 12}
    assert set(params["params"]) <= {f.name for f in dataclasses.fields(ClassifierConfig)}
    ClassifierConfig(**params["params"]).validate()


# ---------------------------------------------------------------------------------------------- decision
def test_decide_counts_from_the_newest_run_or_the_last_auto_request():
    d = auto_retrain.decide
    assert not d({}, 100, None, []).queue  # off by default
    assert d(ON, 4, None, []).queue is False
    yes = d(ON, 5, None, [])
    assert yes.queue and (yes.n_confirmed, yes.baseline, yes.every) == (5, 0, 5)
    run = {"id": 3, "n_labelled": 10}
    assert not d(ON, 14, run, []).queue and d(ON, 15, run, []).queue
    # a failed or cancelled automatic job moves the baseline too: no retry on every poll
    failed = {"id": 9, "status": "failed", "params": auto_retrain.job_params(15)}
    no = d(ON, 16, run, [], failed)
    assert not no.queue and no.baseline == 15 and "1 of 5" in no.reason
    assert d(ON, 20, run, [], failed).queue
    # an older automatic request below the newest run's count does not lower the baseline
    assert d(ON, 14, {"id": 4, "n_labelled": 12}, [], failed).baseline == 15
    assert d(ON, 20, {"id": 4, "n_labelled": 18}, [], failed).baseline == 18
    busy = d(ON, 50, run, [{"id": 11, "status": "running"}])
    assert not busy.queue and busy.reason == "train job 11 is running"
    assert d({**ON, "auto_retrain": False}, 50, None, []).reason == "automatic retraining is off"


def test_worker_check_queues_one_light_job_per_threshold(project):
    _label(project, 5)
    decision, job_id = check_auto_retrain(project)
    assert (decision.queue, decision.reason, job_id) == (False, "automatic retraining is off", None)
    assert jobs.list_jobs(project) == []
    project.set_setting("auto_retrain", True)
    project.set_setting("auto_retrain_every", 5)
    decision, job_id = check_auto_retrain(project)
    assert decision.queue and job_id is not None
    job = jobs.get_job(project, job_id)
    assert (job["kind"], job["status"], job["requested_by"]) == ("train", "queued", "auto")
    assert job["params"] == auto_retrain.job_params(5)
    _label(project, 6, skip=5)
    assert check_auto_retrain(project)[1] is None  # one train job queued already
    jobs.request_cancel(project, job_id)
    decision, again = check_auto_retrain(project)  # 11 confirmed, baseline 5 (the cancelled request)
    assert again is not None and again != job_id and decision.baseline == 5
    jobs.request_cancel(project, again)
    assert check_auto_retrain(project)[1] is None  # baseline 11 now


# ---------------------------------------------------------------------------------------------- label page
def _publish(store: Store, n_labelled: int) -> int:
    ids = store.item_ids()
    classes = store.labels()
    run_dir = store.dir / "runs" / "hand"
    run_dir.mkdir(parents=True)
    np.save(run_dir / "item_ids.npy", ids)
    np.save(run_dir / "proba.npy", np.full((len(ids), len(classes)), 1 / len(classes), np.float32))
    return store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=run_dir, classes=classes,
                             item_ids=ids, labels=[classes[0]] * len(ids), confidences=np.full(len(ids), 0.5),
                             n_labelled=n_labelled)


def test_suggestion_source_names_the_run_its_age_and_a_job_in_training(project):
    assert suggestion_source(project) is None
    run_id = _publish(project, 42)
    created = project.run()["created_at"]
    assert suggestion_source(project, now=created + 3 * 3600 + 7 * 60 + 30) == (
        f"Suggestions from run {run_id} (classifier, trained 3:07 ago on 42 labels)")
    job_id, _ = jobs.request_job(project, "train", auto_retrain.job_params(50), requested_by="auto")
    assert suggestion_source(project, now=created).endswith(f"; a newer model is training (job {job_id}, queued)")
    job = jobs.claim_next(project)
    jobs.set_progress(project, job_id, {"phase": "fit", "step": 1, "total": 3}, claim=job["claim"])
    assert suggestion_source(project, now=created + 59) == (
        f"Suggestions from run {run_id} (classifier, trained 0:00 ago on 42 labels); "
        f"a newer model is training (job {job_id}, phase fit)")


def test_label_page_shows_where_suggestions_come_from(tmp_path, monkeypatch):
    from core.io.demo import create_demo

    store, _ = create_demo(tmp_path / "projects" / "demo", n=30, queue_features=False)
    run_id = _publish(store, 17)
    job_id, _ = jobs.request_job(store, "train", auto_retrain.job_params(37), requested_by="auto")
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    at = open_page("pages/label.py")
    caps = [c.value for c in at.caption]
    assert any(c.startswith(f"Suggestions from run {run_id} (classifier, trained 0:0") and "on 17 labels" in c
               and c.endswith(f"a newer model is training (job {job_id}, queued)") for c in caps), caps


# ---------------------------------------------------------------------------------------------- cli, home
def test_cli_sets_and_shows_the_settings(project):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "core", "settings", str(project.dir), *args], cwd=ROOT,
                              env=ENV, capture_output=True, text=True, timeout=120)

    out = cli("--auto-retrain", "on", "--every", "9")
    assert out.returncode == 0, out.stderr
    assert "auto_retrain: True" in out.stdout and "auto_retrain_every: 9" in out.stdout
    assert auto_retrain.read_settings(Store(project.dir).settings()) == (True, 9)
    bad = cli("--every", "0")
    assert bad.returncode == 1 and "'auto_retrain_every' parameter of settings must be an int >= 1" in bad.stderr


def test_home_page_saves_the_settings(project, monkeypatch):
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(project.dir.parent))
    monkeypatch.chdir(ROOT)
    ensure_account(project.dir, "boss", "admin")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.session_state["project"] = str(project.dir)
    at.session_state["signed_in"] = {str(project.dir): "boss"}
    at.run()
    assert not at.exception, at.exception
    at.toggle(key="auto-retrain-on").set_value(True)
    at.number_input(key="auto-retrain-every").set_value(8)
    next(b for b in at.button if b.label == "Save").click().run()
    assert not at.exception, at.exception
    assert auto_retrain.read_settings(Store(project.dir).settings()) == (True, 8)
    assert [r["user"] for r in Store(project.dir).audit_log(action="settings", limit=2)] == ["boss", "boss"]


# ---------------------------------------------------------------------------------------------- real worker
@pytest.mark.slow
def test_a_worker_retrains_after_n_confirmed_labels(project):
    project.set_setting("auto_retrain", True)
    project.set_setting("auto_retrain_every", 6)
    worker = subprocess.Popen([sys.executable, "-m", "core", "worker", str(project.dir)], cwd=ROOT, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _label(project, 5)
        time.sleep(2)  # a few worker passes: 5 < 6, nothing is queued
        assert jobs.list_jobs(project) == []
        _label(project, 3, skip=5)  # a burst past the threshold queues one job
        deadline = time.monotonic() + 60
        while not jobs.list_jobs(project) and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
        assert [j["requested_by"] for j in jobs.list_jobs(project)] == ["auto"], worker.poll()
        deadline = time.monotonic() + 300
        while project.run() is None and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
        run = project.run()
        assert run is not None, [(j["id"], j["status"], j["message"]) for j in jobs.list_jobs(project)]
        job = jobs.get_job(project, run["job_id"])
        assert (job["requested_by"], job["status"], job["params"]["params"]) == ("auto", "done",
                                                                                 auto_retrain.LIGHT_PARAMS)
        assert run["n_labelled"] >= 6 and len(jobs.list_jobs(project)) == 1
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
