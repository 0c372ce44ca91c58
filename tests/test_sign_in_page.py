"""AppTest of signing in, the roles on the pages, the Admin page and the Home page's confinement."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.jobs import queue as jobs
from core.store.project_store import Store
from tests.helpers import ROOT, digits_folder, ensure_account, open_page

PW = "the test password"


@pytest.fixture
def project(tmp_path, monkeypatch):
    store = Store.create(tmp_path / "projects" / "p", modality="image", labels=["0", "1", "2"], min_votes=1,
                         extractor="pixels_pca")
    store.origin = "cli"  # the tests' set-up writes are not role-checked; the pages' are
    store.add_user("boss", PW, "admin", by="tests")
    store.add_user("ann", PW, "annotator", by="tests")
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.setenv("LABELTOOL_MEDIA_ROOTS", str(tmp_path / "media"))
    monkeypatch.chdir(ROOT)
    return store


# the sidebar, then a page, as one script: AppTest of app.py reruns only the page script after the first run
# (see tests/test_app_home.py), so the sidebar's sign-in form would not be rendered again
WITH_SIDEBAR = """
import runpy
from pages.common import sidebar
sidebar()
runpy.run_path({page!r}, run_name="__main__")
"""


def _app(page: str = "pages/home.py") -> AppTest:
    at = AppTest.from_string(WITH_SIDEBAR.format(page=page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.sidebar.text_input[0].input(name)
    at.sidebar.text_input[1].input(password)
    next(b for b in at.sidebar.button if b.label == "Sign in").click().run()
    assert not at.exception, at.exception
    return at


def test_nothing_shows_before_sign_in_and_a_wrong_password_is_refused(project):
    at = _app()
    assert not at.metric and any("Sign in in the sidebar" in i.value for i in at.info)
    _sign_in(at, "boss", "not the password")
    assert any("wrong password" in e.value for e in at.sidebar.error)
    _sign_in(at, "boss", PW)
    assert any("Signed in as **boss** (admin)" in c.value for c in at.sidebar.caption)
    assert at.metric  # the overview
    actions = [r["action"] for r in project.audit_log(limit=2)]
    assert actions == ["sign_in", "sign_in_failed"]
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    assert not at.metric and project.audit_log(limit=1)[0]["action"] == "sign_out"


def test_an_annotator_sees_no_import_settings_or_admin_page(project):
    at = _app()
    _sign_in(at, "ann", PW)
    labels = [e.label for e in at.expander]
    assert "Import items" not in labels and "Automatic retraining" not in labels and "Create a project" not in labels
    assert at.metric  # the overview is there
    at = open_page("pages/admin.py", annotator="ann", role="annotator")
    assert any("needs the admin role" in i.value for i in at.info) and not at.dataframe


def test_the_admin_page_adds_an_account_and_filters_the_audit_log(project):
    at = open_page("pages/admin.py", annotator="boss")
    form_inputs = [t for t in at.text_input if t.label == "Account name"]
    form_inputs[0].input("carol")
    next(s for s in at.selectbox if s.label == "Role").set_value("reviewer")
    next(t for t in at.text_input if t.label.startswith("Password")).input("carol's password")
    next(b for b in at.button if b.label == "Add").click().run()
    assert not at.exception, at.exception
    assert project.role_of("carol") == "reviewer" and project.sign_in("carol", "carol's password")
    next(s for s in at.selectbox if s.label == "Action").set_value("add_user").run()
    log = at.dataframe[-1].value
    assert set(log["action"]) == {"add_user"} and "carol" in " ".join(log["details"])


def test_home_imports_only_below_the_media_roots_and_names_projects_plainly(project, tmp_path):
    inside = digits_folder(tmp_path / "media" / "digits", per_class=2)
    outside = digits_folder(tmp_path / "elsewhere", per_class=2)
    at = open_page(annotator="boss")
    box = next(t for t in at.text_input if t.label.startswith("Folder or manifest"))
    box.input(str(outside))
    next(b for b in at.button if b.label == "Import").click().run()
    assert any("outside the media roots" in e.value for e in at.error)
    assert jobs.active_job(project, "import") is None
    next(t for t in at.text_input if t.label.startswith("Folder or manifest")).input(str(inside))
    next(b for b in at.button if b.label == "Import").click().run()
    assert jobs.active_job(project, "import")["requested_by"] == "boss"
    for bad in ("../x", "/tmp/y", ".hidden"):
        next(t for t in at.text_input if t.label.startswith("Folder name")).input(bad)
        next(b for b in at.button if b.label == "Create").click().run()
        assert at.error, bad
    assert sorted(p.name for p in Path(os.environ["LABELTOOL_PROJECTS"]).iterdir()) == ["p"]
    assert not (tmp_path / "x").exists() and not Path("/tmp/y").exists()
