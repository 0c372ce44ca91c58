"""AppTest of the Identities page (re-identification), and of the Clusters and Embeddings pages on a reid run.

A 16-crop project (4 identities x 4 crops, 2 cameras) with a fake published reid run whose last two items are
outliers; the keys S / D / N / U are the buttons' shortcuts, so clicking the buttons tests what they do.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.jobs import queue as jobs
from core.labels.pairs import pair_consensus
from tests.helpers import open_page
from tests.test_identities_view import people_project, publish_reid_run

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PAGE = "pages/identities.py"


@pytest.fixture
def people(tmp_path, monkeypatch):
    store = people_project(tmp_path / "projects" / "people", n_ids=4, per_id=4)
    store.origin = "cli"  # the tests' own set-up writes, like the CLI's, are not role-checked; the page's are
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


@pytest.fixture
def with_run(people):
    """The project with a reid run: clusters = the true identity, the last two items outliers."""
    items = people.items()
    ids = np.array([it.id for it in items], dtype=np.int64)
    truth = np.array([int(it.identity.removeprefix("person")) for it in items])
    clusters = truth.copy()
    clusters[-2:] = -1
    rng = np.random.default_rng(0)
    emb = np.eye(8)[truth] + rng.normal(scale=0.25, size=(len(ids), 8))
    conf = np.where(clusters >= 0, rng.uniform(0.3, 0.9, len(ids)), 0.0)
    publish_reid_run(people, ids, clusters, emb, conf,
                     metrics={"reid": {"pseudo": {"n_clusters": 4, "n_outliers": 2}, "links": {"n_must": 0,
                                                                                             "n_cannot": 0}}})
    return people


def _page(annotator: str | None = "ann"):
    return open_page(PAGE, annotator=annotator)


def _focused(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith("**▶ focused**")]


def _query(at) -> int:
    cap = next(c.value for c in at.caption if c.value.startswith("query item "))
    return int(cap.split()[2])


def _mine(store, annotator: str = "ann") -> list:
    return [v for v in store.active_pair_votes() if v["annotator"] == annotator]


def test_no_run_says_so_and_retrain_queues_a_reid_job(people):
    at = _page()
    assert any("No re-identification run yet" in i.value for i in at.info)
    at.button(key="id-retrain").click().run()
    assert not at.exception
    job = jobs.active_job(people, "train")
    assert job["params"] == {"model": "reid", "params": {}} and job["requested_by"] == "ann"


def test_no_annotator_gets_the_usual_message(with_run):
    at = _page(annotator=None)
    assert any("Sign in in the sidebar first" in w.value for w in at.warning)
    assert not at.get("metric")


def test_matches_shown_with_the_run_report(with_run):
    at = _page()
    values = {m.label: m.value for m in at.metric}
    assert values == {"Identities": "4", "Outliers": "2", "Must-links": "0", "Cannot-links": "0"}
    tiles = [m.value for m in at.markdown if " · " in m.value and "#" in m.value]
    assert len(tiles) == 10  # K matches of the 15 other items
    assert len(_focused(at)) == 1 and _focused(at)[0] == tiles[0]
    # the first tiles are of the other camera (the query's camera is named "same camera")
    cams = ["same camera" in t for t in tiles]
    assert cams == sorted(cams)


def test_same_and_different_keys_write_pair_votes_and_move_the_focus(with_run):
    at = _page()
    query = _query(at)
    first = _focused(at)[0]
    at.button(key="id-same").click().run()
    assert not at.exception
    votes = _mine(with_run)
    assert len(votes) == 1 and votes[0]["decision"] == "same" and query in (votes[0]["item_a"], votes[0]["item_b"])
    match = votes[0]["item_b"] if votes[0]["item_a"] == query else votes[0]["item_a"]
    assert f"#{match} " in first
    assert _focused(at)[0] != first  # the focus moved to the next match
    assert any(f"#{match} " in m.value and "same ✓" in m.value for m in at.markdown)
    at.button(key="id-different").click().run()
    votes = _mine(with_run)
    assert [v["decision"] for v in votes] == ["same", "different"]
    at.button(key="id-undo").click().run()
    assert [v["decision"] for v in _mine(with_run)] == ["same"]
    assert any("Undid 1 pair decision" in c.value for c in at.caption)


def test_focus_button_and_next_query(with_run):
    at = _page()
    query = _query(at)
    at.button(key="id-focus-3").click().run()
    tiles = [m.value for m in at.markdown if " · " in m.value and "#" in m.value]
    assert tiles[3].startswith("**▶ focused**")
    at.button(key="id-different").click().run()
    (vote,) = _mine(with_run)
    assert vote["decision"] == "different" and f"#{vote['item_a'] if vote['item_b'] == query else vote['item_b']} " \
        in tiles[3]
    at.button(key="id-next").click().run()
    assert not at.exception and _query(at) != query


def test_pick_a_query_by_item_id(with_run):
    at = _page()
    target = int(with_run.item_ids()[5])
    at.radio(key="id-mode").set_value("item id").run()
    at.number_input(key="id-pick-item").set_value(target).run()
    assert _query(at) == target
    at.number_input(key="id-pick-item").set_value(99999).run()
    assert not at.exception and any("99999" in e.value for e in at.error)


def test_pick_a_query_from_a_cluster_and_next_returns_to_the_queue(with_run):
    at = _page()
    at.radio(key="id-mode").set_value("cluster").run()
    at.selectbox(key="id-pick-cluster").set_value(-1).run()
    outliers = [int(i) for i in at.selectbox(key="id-pick-member--1").options]
    assert sorted(outliers) == sorted(int(i) for i in with_run.item_ids()[-2:])
    assert _query(at) == outliers[0] and "outlier" in next(c.value for c in at.caption if c.value.startswith("query"))
    at.button(key="id-next").click().run()
    assert at.radio(key="id-mode").value == "queue" and not at.exception


def test_merge_two_identities_is_one_undoable_batch(with_run):
    at = _page()
    at.selectbox(key="id-merge-a").set_value(0)
    at.selectbox(key="id-merge-b").set_value(1).run()
    at.button(key="id-merge").click().run()
    assert not at.exception and any("as one" in s.value for s in at.success)
    votes = _mine(with_run)
    assert len(votes) == 7 and {v["decision"] for v in votes} == {"same"} and len({v["batch"] for v in votes}) == 1
    confirmed = [d for d in pair_consensus(with_run) if d.confirmed]
    assert len(confirmed) == 7  # min_votes 1: each is a must-link for the next clustering
    at.button(key="id-undo").click().run()
    assert not _mine(with_run)


def test_split_an_identity(with_run):
    at = _page()
    at.selectbox(key="id-split-cluster").set_value(2).run()
    members = at.multiselect(key="id-split-off-2").options
    assert len(members) == 4
    at.multiselect(key="id-split-off-2").set_value([int(members[0])]).run()
    at.button(key="id-split").click().run()
    assert not at.exception
    votes = _mine(with_run)
    assert sorted(v["decision"] for v in votes) == ["different", "same", "same"]


def test_name_an_identity_writes_bulk_labels(with_run):
    at = _page()
    at.selectbox(key="id-name-cluster").set_value(1).run()
    at.text_input(key="id-name-new").set_value("bob").run()
    at.button(key="id-name").click().run()
    assert not at.exception
    assert "bob" in with_run.labels()
    votes = [v for v in with_run.active_votes() if v["annotator"] == "ann"]
    assert len(votes) == 4 and {v["label"] for v in votes} == {"bob"} and {v["kind"] for v in votes} == {"bulk"}
    at.run()
    assert "bob" in at.selectbox(key="id-name-existing").options


def test_retrain_with_parameters_and_a_new_run_is_shown(with_run):
    at = _page()
    at.text_area(key="id-params").set_value(json.dumps({"variant": "head", "epochs": 2})).run()
    at.button(key="id-retrain").click().run()
    assert jobs.active_job(with_run, "train")["params"] == {"model": "reid",
                                                            "params": {"variant": "head", "epochs": 2}}
    old = with_run.run(model="reid")["id"]
    ids = with_run.item_ids()
    publish_reid_run(with_run, ids, np.zeros(len(ids), int), np.random.default_rng(1).normal(size=(len(ids), 4)),
                     np.full(len(ids), 0.5))
    at.run()
    assert not at.exception
    assert any(c.value.startswith(f"reid run {old + 1} ") for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Identities"] == "1"


def test_bad_parameters_are_refused(with_run):
    at = _page()
    at.text_area(key="id-params").set_value("[1").run()
    assert any("JSON object" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "id-retrain"]


@pytest.mark.parametrize("page", ["pages/clusters.py", "pages/embeddings.py"])
def test_clusters_and_embeddings_pages_show_a_reid_run_with_outliers(with_run, page):
    at = open_page(page, annotator="ann")
    assert not at.exception
    if page == "pages/clusters.py":
        table = at.dataframe[0].value
        assert sorted(table["cluster"].tolist()) == [-1, 0, 1, 2, 3]
        assert table["predicted_label"].isna().all()
        assert any("outliers (-1)" in sb.options for sb in at.selectbox)
    else:
        at.radio[0].set_value("cluster").run()
        assert not at.exception
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        names = {t.get("name") for t in spec["data"]}
        assert "outliers" in names and {"0", "1", "2", "3"} <= names
        hovers = [h for t in spec["data"] if t.get("name") == "outliers" for h in t["hovertext"]]
        assert len(hovers) == 2 and all("— outlier" in h for h in hovers)
