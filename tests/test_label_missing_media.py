"""AppTest: the Label page when the next item's media file is missing says which file, and Skip and Undo still
move the annotator on (before, ``st.image`` raised MediaFileStorageError and the page had no buttons)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.io.demo import create_demo
from core.store.project_store import Store
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch) -> Store:
    store, _ = create_demo(tmp_path / "projects" / "demo", n=40, queue_features=False)
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _current(at: AppTest) -> int:
    cap = next(c.value for c in at.caption if c.value.startswith("item "))
    return int(cap.split()[1])


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _click(at: AppTest, label: str) -> None:
    _button(at, label).click().run()
    assert not at.exception, at.exception


def test_missing_media_is_shown_and_skip_moves_on(project):
    at = open_page("pages/label.py")
    first = _current(at)
    path = project.item(first).path
    path.unlink()
    at.run()
    assert not at.exception, at.exception
    assert _current(at) == first
    errors = [e.value.replace("\\", "") for e in at.error]  # the Markdown source: file names are escaped
    assert len(errors) == 1 and f"item {first} is missing" in errors[0] and path.name in errors[0]
    label = project.labels()[0]
    assert at.button(key=f"lab-{label}").disabled  # nothing to see, nothing to label
    assert not _button(at, "Skip").disabled and not _button(at, "Undo last").disabled
    _click(at, "Skip")
    assert _current(at) != first and not at.error
    assert not project.active_votes()  # skipping wrote nothing


def test_undo_works_while_the_next_item_is_missing(project):
    at = open_page("pages/label.py")
    first = _current(at)
    label = project.labels()[0]
    at.button(key=f"lab-{label}").click().run()
    assert not at.exception, at.exception
    second = _current(at)
    assert second != first and [v["item_id"] for v in project.active_votes()] == [first]
    project.item(second).path.unlink()
    at.run()
    assert any(f"item {second} is missing" in e.value for e in at.error)
    _click(at, "Undo last")
    assert _current(at) == first and not at.error  # the undone item is back, its file is there
    assert not project.active_votes()
    assert any("Undid your label on 1 item(s)." in c.value for c in at.caption)
