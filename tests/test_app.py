"""AppTest smoke tests: every page renders on a tiny project, labelling records votes, Retrain queues a job."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.demo import create_demo
from core.store import Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo(tmp_path, monkeypatch):
    store, created = create_demo(tmp_path / "projects" / "demo", n=60, queue_features=False)
    assert created
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _app(page: str | None = None, annotator: str = "tester") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["annotator"] = annotator
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, at.exception
    return at


def test_home_shows_overview(demo):
    at = _app()
    values = {m.label: m.value for m in at.metric}
    assert values["Items"] == "60" and values["Confirmed"] == "0"
    assert any("No model yet" in i.value for i in at.info)


def test_label_page_records_votes_and_undo(demo):
    at = _app("pages/label.py")
    buttons = [b for b in at.button if b.key and b.key.startswith("lab-")]
    assert len(buttons) == 10
    at.button(key="lab-3").click().run()
    assert not at.exception
    votes = demo.active_votes()
    assert len(votes) == 1 and votes[0]["annotator"] == "tester" and votes[0]["label"] == "3"
    at.button(key="lab-5").click().run()
    assert len(demo.active_votes()) == 2
    undo = next(b for b in at.button if b.label.startswith("Undo"))
    undo.click().run()
    assert len(demo.active_votes()) == 1


def test_train_page_queues_a_job(demo):
    at = _app("pages/train.py")
    retrain = next(b for b in at.button if b.label == "Retrain now")
    retrain.click().run()
    assert not at.exception
    job = jobs.active_job(demo, "train")
    assert job is not None and job["status"] == "queued" and job["requested_by"] == "tester"
