"""A run trained without confirmed labels suggests no class (defect 3).

A label-free DEC run names cluster j after class j only to fill its probability columns. It must say so in
the run, the Label page must show its cluster ("cluster 7") instead of "Model suggests <class>", and its
pseudo-labels must not be accepted (with a clear error, and the Pseudo-labels page saying why).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ValidationError
from core.store.project_store import Store
from core.views.clusters import cluster_label_confusion, merge_clusters
from core.views.common import suggests_classes
from core.views.map import map_frame
from core.views.pseudo_labels import accept_pseudo_labels, accept_refusal, candidates
from core.views.suggestions import item_suggestion
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PARAMS = {"dims": [32, 32, 4], "pretrain_epochs": 20, "batch_size": 32, "max_iter": 150,
                "update_interval": 50, "kmeans_n_init": 3}


def _digits_project(tmp_path: Path, labels: str | None) -> Store:
    from core.io.ingest import import_folder
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=12), labels_from_folders=labels, annotator="ann")
    return store


def _publish(store: Store, name: str, *, metrics: dict, clusters: np.ndarray, labels: list[str]) -> int:
    """A hand-made run over every item, with its probability file (the Label page's queue reads it)."""
    ids = store.item_ids()
    run_dir = store.dir / "runs" / name
    run_dir.mkdir(parents=True)
    classes = store.labels()
    proba = np.full((len(ids), len(classes)), 0.02 / max(len(classes) - 1, 1), np.float32)
    proba[np.arange(len(ids)), [classes.index(lab) for lab in labels]] = 0.98
    np.save(run_dir / "item_ids.npy", ids)
    np.save(run_dir / "proba.npy", proba)
    return store.publish_run(model="dec", config={}, metrics=metrics, artefact_dir=run_dir, classes=classes,
                             item_ids=ids, labels=labels, confidences=np.full(len(ids), 0.98),
                             clusters=clusters, coords=np.zeros((len(ids), 2)))


def test_dec_run_without_labels_records_it_suggests_no_class_and_refuses_accept(tmp_path):
    import torch

    from core.models.training import train_model

    torch.set_num_threads(1)
    store = _digits_project(tmp_path, "reference")  # reference labels only: nothing confirmed
    rid = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    run = store.run(rid)
    assert run["metrics"]["suggests_classes"] is False and not suggests_classes(run)
    assert candidates(store, rid, 0.0)  # there is something that accepting would write ...
    with pytest.raises(ValidationError, match=r"'run_id' parameter of accept_pseudo_labels.*without confirmed labels"):
        accept_pseudo_labels(store, rid, 0.0, annotator="dave")  # ... but it is refused
    assert not [v for v in store.active_votes() if v["annotator"] == "dave"]
    pred = store.predictions(rid)[0]
    hint = item_suggestion(store, int(pred["item_id"]), rid)
    assert hint["text"] == f"cluster {pred['cluster']}" and hint["is_class"] is False and hint["label"] is None
    assert hint["title"] != "Model suggests"


def test_dec_run_with_labels_suggests_classes(tmp_path):
    import torch

    from core.models.training import train_model

    torch.set_num_threads(1)
    store = _digits_project(tmp_path, "initial")  # every item confirmed
    rid = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    run = store.run(rid)
    assert run["metrics"]["suggests_classes"] is True and suggests_classes(run) and accept_refusal(run) is None
    pred = store.predictions(rid)[0]
    hint = item_suggestion(store, int(pred["item_id"]), rid)
    assert hint["title"] == "Model suggests" and hint["text"] == pred["label"] and hint["is_class"] is True


def test_suggestion_of_hand_made_runs_old_flag_and_merges(tmp_path):
    store = _digits_project(tmp_path, None)
    n = len(store.item_ids())
    clusters = np.arange(n) % 3
    labels = [str(c) for c in clusters]
    # a DEC run published before the flag existed: its label source says it had no labels
    old = _publish(store, "old", metrics={"dec": {"label_source": "none (clusters named in class order)"}},
                   clusters=clusters, labels=labels)
    first = int(store.item_ids()[2])  # cluster 2
    assert not suggests_classes(store.run(old))
    assert item_suggestion(store, first, old)["text"] == "cluster 2"
    assert merge_clusters(store, old, [2, 1]) == 1  # shown after merges
    assert item_suggestion(store, first, old)["text"] == "cluster 1"
    assert "without confirmed labels" in accept_refusal(store.run(old))
    hover = map_frame(store, old).set_index("item_id").loc[first, "hover"]
    assert hover.endswith("— cluster 1 (0.98)") and "predicted" not in hover
    # the class names a label-free run gave its clusters are not a mapping the Clusters page should show
    mapping = {"0": "0", "1": "1", "2": "2"}
    free = _publish(store, "free", metrics={"suggests_classes": False, "dec": {"mapping": mapping}},
                    clusters=clusters, labels=labels)
    assert cluster_label_confusion(store, free)["source"] == "hungarian"
    fine = _publish(store, "fine", metrics={"dec": {"label_source": "hungarian"}}, clusters=clusters, labels=labels)
    hint = item_suggestion(store, first)  # the newest run
    assert hint["run_id"] == fine and hint["text"] == "2" and hint["confidence"] == pytest.approx(0.98)
    with pytest.raises(ValidationError, match="'item_id'"):
        item_suggestion(store, "1")


# ---------------------------------------------------------------------------------------------- pages
@pytest.fixture
def label_free_demo(tmp_path, monkeypatch):
    from core.io.demo import create_demo

    store, _ = create_demo(tmp_path / "projects" / "demo", n=60, queue_features=False)
    n = len(store.item_ids())
    _publish(store, "dec-free", metrics={"suggests_classes": False, "dec": {"label_source": "none"}},
             clusters=np.full(n, 7), labels=["7"] * n)
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return store


def _page(page: str, annotator: str) -> AppTest:
    return open_page(page, annotator=annotator)


def test_label_page_shows_the_cluster_of_a_label_free_run(label_free_demo):
    at = _page("pages/label.py", "tester")
    assert not any(m.label == "Model suggests" for m in at.metric)
    assert any(m.value == "cluster 7" for m in at.metric)


def test_pseudo_labels_page_says_why_a_label_free_run_cannot_be_accepted(label_free_demo):
    at = _page("pages/pseudo_labels.py", "dave")
    at.slider[0].set_value(0.0).run()
    assert any("without confirmed labels" in w.value for w in at.warning)
    accept = next(b for b in at.button if b.label.startswith("Accept"))
    assert accept.disabled
    assert not [v for v in label_free_demo.active_votes() if v["annotator"] == "dave"]
