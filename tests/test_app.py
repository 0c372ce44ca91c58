"""AppTest smoke tests: every page renders on a tiny project, labelling records votes, Retrain queues a job."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.labels import engine as consensus_engine
from core.jobs import queue as jobs
from core.io.demo import create_demo
from core.store.project_store import Store
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def demo(tmp_path, monkeypatch):
    store, created = create_demo(tmp_path / "projects" / "demo", n=60, queue_features=False)
    assert created
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _app(page: str | None = None, annotator: str = "tester") -> AppTest:
    return open_page(page, annotator=annotator, timeout=60)


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 120-digit demo project with two annotators, a disagreement and two published runs."""
    from core.models.training import train_model

    root = tmp_path_factory.mktemp("trained")
    store, _ = create_demo(root / "projects" / "demo", n=120, queue_features=False)
    ref = store.reference_labels()
    ids = sorted(ref)[:40]
    store.annotate_many([(i, ref[i]) for i in ids[:30]], annotator="alice")
    store.annotate_many([(i, ref[i]) for i in ids[30:]], annotator="alice")
    wrong = [(i, "0" if ref[i] != "0" else "1") for i in ids[30:35]]
    store.annotate_many(wrong, annotator="bob")
    params = {"mlp_max_steps": 50, "knn_k": [1, 5]}
    train_model(store, "classifier", device="cpu", params=params)
    store.annotate_many([(i, ref[i]) for i in sorted(ref)[40:60]], annotator="alice")
    train_model(store, "classifier", device="cpu", params=params)
    return root / "projects"


@pytest.fixture
def trained_app(trained, monkeypatch):
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(trained))
    monkeypatch.chdir(ROOT)
    return Store(trained / "demo")


@pytest.mark.parametrize("page", ["pages/embeddings.py", "pages/pseudo_labels.py", "pages/clusters.py",
                                  "pages/consensus.py", "pages/train.py", "pages/label.py", "pages/home.py"])
def test_every_page_renders_with_runs(trained_app, page):
    at = _app(page, annotator="carol")
    assert not at.exception
    if page == "pages/train.py":
        assert any("predictions changed" in m.value for m in at.markdown)
    if page == "pages/label.py":
        assert any(m.label == "Model suggests" for m in at.metric)


def test_pseudo_labels_accept_is_one_undoable_bulk_action(trained_app):
    at = _app("pages/pseudo_labels.py", annotator="dave")
    at.slider[0].set_value(0.0).run()
    accept = next(b for b in at.button if b.label.startswith("Accept"))
    before = len([v for v in trained_app.active_votes() if v["annotator"] == "dave"])
    accept.click().run()
    assert not at.exception
    votes = [v for v in trained_app.active_votes() if v["annotator"] == "dave"]
    assert len(votes) > before and all(v["kind"] == "bulk" for v in votes)
    trained_app.undo_last("dave")
    assert not [v for v in trained_app.active_votes() if v["annotator"] == "dave"]


def test_consensus_page_adjudicates(trained_app):
    at = _app("pages/consensus.py", annotator="rev")
    assert any(m.label == "Fleiss' kappa" and m.value != "-" for m in at.metric)
    first = next(b for b in at.button if b.key and b.key.startswith("adj-btn-"))
    item_id = int(first.key.split("-")[-1])
    first.click().run()
    assert not at.exception
    adj = [v for v in trained_app.active_votes([item_id]) if v["kind"] == "adjudication"]
    assert len(adj) == 1 and adj[0]["annotator"] == "rev"


def test_consensus_page_switches_method(trained_app):
    at = _app("pages/consensus.py", annotator="rev")
    at.radio[0].set_value("dawid_skene")
    at.slider[0].set_value(0.6)
    next(b for b in at.button if b.label == "Apply and re-estimate").click().run()
    assert not at.exception
    cfg = consensus_engine.settings(trained_app)
    assert cfg["method"] == "dawid_skene" and cfg["min_confidence"] == 0.6
    assert {r["method"] for r in trained_app.consensus_rows()} <= {"dawid_skene", "adjudication"}
    consensus_engine.refit(trained_app, "majority", by="rev")  # leave the shared project as the other tests expect it


def test_train_page_passes_json_parameters_and_refuses_bad_ones(demo):
    at = _app("pages/train.py")
    at.text_area[0].set_value('{"mlp_max_steps": 20}').run()
    next(b for b in at.button if b.label == "Retrain now").click().run()
    assert jobs.active_job(demo, "train")["params"] == {"model": "classifier", "params": {"mlp_max_steps": 20}}
    at.text_area[0].set_value("[1, 2").run()
    assert at.error and "JSON object" in at.error[0].value
    assert next(b for b in at.button if b.label == "Retrain now").disabled


def test_train_page_queues_other_parameters_visibly_behind_the_first(demo):
    at = _app("pages/train.py")
    retrain = lambda: next(b for b in at.button if b.label == "Retrain now").click().run()  # noqa: E731
    retrain()
    retrain()  # the same request joins the queued job
    queued = jobs.queued_jobs(demo, "train")
    assert len(queued) == 1 and queued[0]["requests"] == 2
    at.text_area[0].set_value('{"mlp_max_steps": 20}').run()
    retrain()  # other parameters: a job of its own, shown behind the first
    queued = jobs.queued_jobs(demo, "train")
    assert [j["params"]["params"] for j in queued] == [{}, {"mlp_max_steps": 20}]
    assert not at.exception
    assert any("Queued after it: 1 job" in c.value for c in at.caption)
    assert at.dataframe[0].value["job"].tolist() == [queued[1]["id"]]


def test_clusters_page_shows_mapping_confusion_and_collapse(demo):
    import numpy as np

    ids = demo.item_ids()
    ref = demo.reference_labels()
    demo.annotate_many([(int(i), ref[int(i)]) for i in ids[:20]], annotator="alice")
    run_dir = demo.dir / "runs" / "dec-fake"
    run_dir.mkdir(parents=True)
    clusters = np.arange(len(ids)) % 3
    dec = {"mapping": {"0": "0", "1": "1", "2": "2"},
           "collapse": {"collapsed": True, "reasons": ["cluster 0 holds 70% of the items (> 50%)"]},
           "prior": {"source": "uniform", "reason": "classes with fewer than 3 confirmed labels: 7, 8", "w": [0.1] * 10}}
    demo.publish_run(model="dec", config={}, metrics={"dec": dec}, artefact_dir=run_dir, classes=demo.labels(),
                     item_ids=ids, labels=[str(c) for c in clusters], confidences=np.full(len(ids), 0.9),
                     clusters=clusters, coords=np.zeros((len(ids), 2)))
    at = _app("pages/clusters.py")
    assert any("degenerate" in w.value and "70%" in w.value for w in at.warning)
    assert any("the model mapping" in e.label for e in at.expander)
    mapping = next(d for d in at.dataframe if "mapped label" in d.value.columns)
    assert mapping.value["mapped label"].tolist() == ["0", "1", "2"]
    assert any("Class prior w" in c.value and "uniform" in c.value and "7, 8" in c.value for c in at.caption)


def test_label_page_plays_an_audio_clip_and_shows_its_spectrogram(tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    from core.io.ingest import import_folder

    src = tmp_path / "clips"
    for label, hz in (("low", 220.0), ("high", 880.0)):
        (src / label).mkdir(parents=True)
        for k in range(3):
            t = np.arange(int(0.8 * 8000)) / 8000
            sf.write(src / label / f"{label}_{k}.wav", 0.3 * np.sin(2 * np.pi * hz * t), 8000)
    store = Store.create(tmp_path / "projects" / "speech", modality="audio", min_votes=1)
    import_folder(store, src, labels_from_folders="reference")
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    at = _app("pages/label.py")
    assert len(at.get("audio")) == 1
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and "mel band" in charts[0].proto.spec
