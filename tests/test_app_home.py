"""AppTest of the Home page: creating a project selects it in the sidebar; import runs as a job, not in the script."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.jobs import queue as jobs
from core.jobs.worker import run_job
from core.store.project_store import Store
from tests.helpers import digits_folder, ensure_account

ROOT = Path(__file__).resolve().parents[1]
# app.py's order of work (the sidebar, then the page), as one script: AppTest of app.py itself reruns only the
# page script after the first run (it takes the project's pages/ folder for the old multipage layout), so the
# sidebar would not be rendered again after "Create".
HOME_WITH_SIDEBAR = """
import runpy
from pages.common import sidebar
sidebar()
runpy.run_path("pages/home.py", run_name="__main__")
"""


@pytest.fixture
def projects(tmp_path, monkeypatch):
    """A projects folder named by a *relative* path (as with the default ``projects``), holding project 'a'."""
    root = tmp_path / "projects"
    Store.create(root / "a", modality="image", extractor="pixels_pca", min_votes=1)
    ensure_account(root / "a", "tester", "admin")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("LABELTOOL_PROJECTS", os.path.relpath(root, ROOT))
    monkeypatch.setenv("LABELTOOL_MEDIA_ROOTS", str(tmp_path))  # the browser imports only below these
    return root


def _app(*, with_sidebar: bool = False) -> AppTest:
    at = (AppTest.from_string(HOME_WITH_SIDEBAR, default_timeout=60) if with_sidebar
          else AppTest.from_file(str(ROOT / "app.py"), default_timeout=60))
    at.session_state["signed_in"] = {str(p.resolve()): "tester" for p in Path(os.environ["LABELTOOL_PROJECTS"]).iterdir()}
    at.run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest, label: str):
    return next(t for t in at.text_input if t.label.startswith(label))


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _selected(at: AppTest) -> Path:
    return Path(at.sidebar.selectbox[0].value).resolve()


def test_create_project_selects_it_and_the_next_import_lands_there(projects, tmp_path):
    at = _app(with_sidebar=True)
    assert _selected(at) == (projects / "a").resolve()
    _text(at, "Folder name").input("b")
    _text(at, "Labels").input("0,1,2")
    _button(at, "Create").click().run()
    assert not at.exception, at.exception
    assert _selected(at) == (projects / "b").resolve()
    src = digits_folder(tmp_path / "src", per_class=2)
    _text(at, "Folder or manifest").input(str(src))
    _button(at, "Import").click().run()
    assert not at.exception, at.exception
    b, a = Store(projects / "b"), Store(projects / "a")
    assert jobs.active_job(b, "import") is not None
    assert jobs.active_job(a, "import") is None


def test_home_import_queues_a_job_and_shows_its_progress(projects, tmp_path):
    store = Store(projects / "a")
    src = digits_folder(tmp_path / "src", per_class=10)
    at = _app()
    _text(at, "Folder or manifest").input(str(src))
    at.radio[0].set_value("initial labels")
    _button(at, "Import").click().run()
    assert not at.exception, at.exception
    assert store.item_count() == 0                      # nothing imported in the script thread
    job = jobs.active_job(store, "import")
    assert job["status"] == "queued" and job["requested_by"] == "tester"
    assert job["params"]["source"] == str(src.resolve()) and job["params"]["labels_from_folders"] == "initial"
    assert any(f"Import job {job['id']} is queued" in i.value for i in at.info)
    worker = Store(projects / "a", origin="worker")  # what the worker does (its writes were allowed at request)
    assert run_job(worker, jobs.claim_next(worker, job_id=job["id"])) == "done"
    at.run()
    assert store.item_count() == 30
    assert any("Imported 30 items" in s.value for s in at.success)


def test_home_import_refuses_a_missing_source(projects, tmp_path):
    at = _app()
    _text(at, "Folder or manifest").input(str(tmp_path / "nowhere"))
    _button(at, "Import").click().run()
    assert any("'source'" in e.value for e in at.error)
    assert jobs.active_job(Store(projects / "a"), "import") is None
