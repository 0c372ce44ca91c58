"""AppTest of the Label page's "more like this" panel and of the queue's notes."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.io.demo import create_demo
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    store, _ = create_demo(tmp_path / "projects" / "demo", n=60, queue_features=False)
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _label_page(annotator: str = "tester") -> AppTest:
    return open_page("pages/label.py", annotator=annotator)


def _current(at) -> int:
    cap = next(c.value for c in at.caption if c.value.startswith("item "))
    return int(cap.split()[1])


def test_more_like_this_labels_the_chosen_neighbours_in_one_undoable_action(project):
    from core.models.training import ensure_features
    from core.views.similar import item_index, more_like_this

    ensure_features(project)
    at = _label_page()
    assert not any("near-duplicate suppression is off" in c.value for c in at.caption)
    shown = _current(at)
    at.toggle(key="more-like-this").set_value(True).run()
    assert not at.exception, at.exception
    expected = more_like_this(project, item_index(project), shown, k=12)["item_id"].tolist()
    pick = at.multiselect(key=f"near-pick-{shown}")
    assert list(pick.value) == expected  # every neighbour, nearest first, none voted on yet
    chosen = expected[:5]
    pick.set_value(chosen).run()
    at.selectbox(key="near-label").set_value("4").run()
    at.button(key="near-go").click().run()
    assert not at.exception, at.exception
    votes = [v for v in project.active_votes() if v["annotator"] == "tester"]
    assert sorted(v["item_id"] for v in votes) == sorted(chosen)
    assert {v["kind"] for v in votes} == {"bulk"} and {v["label"] for v in votes} == {"4"}
    batches = {r[0] for r in project.conn.execute("SELECT batch FROM annotations WHERE annotator = 'tester'")}
    assert len(batches) == 1 and None not in batches
    assert any("Labelled 5 similar item(s) '4'" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Undo last").click().run()
    assert not at.exception, at.exception
    assert not [v for v in project.active_votes() if v["annotator"] == "tester"]


def test_label_page_says_why_near_duplicates_are_not_suppressed(project):
    at = _label_page()
    assert any("near-duplicate suppression is off" in c.value and "no 'pixels_pca' features" in c.value
               for c in at.caption)
    at.toggle(key="more-like-this").set_value(True).run()
    assert not at.exception, at.exception
    assert any("no 'pixels_pca' features are cached yet" in c.value for c in at.caption)
