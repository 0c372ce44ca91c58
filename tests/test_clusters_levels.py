"""The Clusters page at two levels (main clusters / overclustering) and the collapse advice of each family.

A clustering family (IIC) may save ``overclusters.npy`` (one overcluster per item, rows in the order of the
run folder's ``item_ids.npy``). The views then work on either level; merges stay main-level only. A family's
own report is ``run["metrics"][run["model"]]``; its collapse warning shows the report's reasons and advice.
Runs are made by hand (no training) except one tiny DEC fit that checks DEC's advice lives in its report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import StoreError, ValidationError
from core.store.project_store import Store
from core.views.clusters import (cluster_label_confusion, cluster_levels, cluster_members, cluster_summary,
                                 label_cluster, merge_clusters)
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["0", "1", "2"]
IIC_ADVICE = ["use neighbour pairs on pretrained features", "confirm labels of more classes"]


def _project(root: Path) -> Store:
    from core.io.ingest import import_folder
    from tests.helpers import digits_folder

    store = Store.create(root, modality="image", extractor="pixels_pca", min_votes=1, labels=CLASSES)
    import_folder(store, digits_folder(root.parent / f"src-{root.name}", per_class=8), labels_from_folders=None,
                  annotator="ann")
    return store


def _publish(store: Store, name: str, *, model: str, metrics: dict, over: bool) -> dict:
    """A hand-made run: main cluster = item position % 3, overcluster = position % 6 (so each main cluster
    splits in two overclusters), ``item_ids.npy`` written in REVERSED order to check the row order is used."""
    ids = store.item_ids()
    n = len(ids)
    main = np.arange(n) % 3
    run_dir = store.dir / "runs" / name
    run_dir.mkdir(parents=True)
    order = ids[::-1]
    np.save(run_dir / "item_ids.npy", order)
    proba = np.full((n, 3), 0.01, np.float32)
    proba[np.arange(n), main] = 0.98
    np.save(run_dir / "proba.npy", proba[::-1])
    if over:
        pos = {int(i): p for p, i in enumerate(ids)}
        np.save(run_dir / "overclusters.npy", np.array([pos[int(i)] % 6 for i in order], np.int64))
    rid = store.publish_run(model=model, config={}, metrics=metrics, artefact_dir=run_dir, classes=CLASSES,
                            item_ids=ids, labels=[CLASSES[c] for c in main], confidences=np.full(n, 0.98),
                            clusters=main, coords=np.zeros((n, 2)))
    return {"id": rid, "ids": ids, "main": main, "over": np.arange(n) % 6}


def _confirm(store: Store, ids: np.ndarray, positions: list[int], labels: list[str]) -> None:
    store.annotate_many([(int(ids[p]), lab) for p, lab in zip(positions, labels)], annotator="ann")


def _iic_metrics(collapsed: bool) -> dict:
    collapse = {"collapsed": collapsed, "reasons": ["cluster 0 holds 90% of the items (> 50%)"] if collapsed else [],
                "advice": IIC_ADVICE}
    return {"suggests_classes": True, "iic": {"collapse": collapse, "mapping": {"0": "0", "1": "1", "2": "2"}}}


@pytest.fixture
def iic(tmp_path):
    store = _project(tmp_path / "proj")
    run = _publish(store, "iic", model="iic", metrics=_iic_metrics(True), over=True)
    return store, run


# ---------------------------------------------------------------------------------------------- views
def test_levels_are_offered_only_with_overclusters(iic, tmp_path):
    store, run = iic
    assert cluster_levels(store, run["id"]) == ["main", "over"]
    plain = _publish(store, "plain", model="iic", metrics=_iic_metrics(False), over=False)
    assert cluster_levels(store, plain["id"]) == ["main"]
    with pytest.raises(ValidationError, match=r"'level' parameter of cluster_summary.*overclusters.npy.*Got 'over'"):
        cluster_summary(store, plain["id"], level="over")
    for fn, args in ((cluster_summary, ()), (cluster_label_confusion, ()), (cluster_members, (0,))):
        with pytest.raises(ValidationError, match=rf"'level' parameter of {fn.__name__}.*'main', 'over'.*'sub'"):
            fn(store, run["id"], *args, level="sub")
    with pytest.raises(ValidationError, match=r"'level' parameter of label_cluster.*'main', 'over'"):
        label_cluster(store, run["id"], 0, "0", annotator="ann", level="sub")


def test_summary_at_both_levels(iic):
    store, run = iic
    ids = run["ids"]
    # confirm overcluster 0 (positions 0, 6, 12, ...) as "0", overcluster 3 (3, 9, ...) as "1" / "0"
    _confirm(store, ids, [0, 6, 12, 3, 9, 15], ["0", "0", "0", "1", "1", "0"])
    main = cluster_summary(store, run["id"])
    assert main["cluster"].tolist() == [0, 1, 2] and main["size"].tolist() == [8, 8, 8]
    assert main.loc[0, "confirmed"] == 6 and main.loc[0, "confirmed_label"] == "0"
    over = cluster_summary(store, run["id"], level="over")
    assert over["cluster"].tolist() == list(range(6)) and over["size"].tolist() == [4] * 6
    assert over.loc[0, "confirmed_label"] == "0" and over.loc[0, "purity"] == 1.0
    assert over.loc[3, "confirmed_label"] == "1" and over.loc[3, "purity"] == pytest.approx(2 / 3)
    assert over.loc[0, "predicted_label"] == "0" and over.loc[4, "predicted_label"] == "1"  # 4 % 3 == 1
    assert (over["merged_from"] == "").all()


def test_members_and_label_cluster_at_the_over_level(iic):
    store, run = iic
    ids, over = run["ids"], run["over"]
    expected = sorted(int(i) for i in ids[over == 4])
    assert cluster_members(store, run["id"], 4, limit=100, level="over") == expected
    with pytest.raises(ValidationError, match="'cluster' parameter of cluster_members must be a cluster of run"):
        cluster_members(store, run["id"], 4)  # the main level has clusters 0..2 only ...
    with pytest.raises(ValidationError, match="'cluster' parameter of cluster_members must be an overcluster"):
        cluster_members(store, run["id"], 6, level="over")  # ... and the over level 0..5
    n = label_cluster(store, run["id"], 4, "2", annotator="bob", level="over")
    voted = sorted(int(v["item_id"]) for v in store.active_votes() if v["annotator"] == "bob")
    assert n == len(expected) and voted == expected


def test_merges_are_main_level_only(iic):
    store, run = iic
    with pytest.raises(ValidationError, match=r"'level' parameter of merge_clusters.*main.*Got 'over'"):
        merge_clusters(store, run["id"], [0, 1], level="over")
    assert merge_clusters(store, run["id"], [2, 1]) == 1
    assert cluster_summary(store, run["id"])["cluster"].tolist() == [0, 1]
    over = cluster_summary(store, run["id"], level="over")  # the overclustering is untouched by merges
    assert over["cluster"].tolist() == list(range(6)) and (over["merged_from"] == "").all()


def test_confusion_at_the_over_level_is_hungarian(iic):
    store, run = iic
    ids = run["ids"]
    _confirm(store, ids, [0, 6, 1, 7, 2, 8, 3, 9], ["0", "0", "1", "1", "2", "2", "0", "0"])
    main = cluster_label_confusion(store, run["id"])
    assert main["source"] == "model" and main["mapping"] == {0: "0", 1: "1", 2: "2"}
    over = cluster_label_confusion(store, run["id"], level="over")
    assert over["source"] == "hungarian" and over["table"].shape == (6, 3)
    assert over["table"].loc[3, "0"] == 2 and over["table"].loc[0, "0"] == 2 and over["table"].to_numpy().sum() == 8
    assert over["mapping"] in ({0: "0", 1: "1", 2: "2"}, {3: "0", 1: "1", 2: "2"})  # one cluster per class
    assert over["collapse"]["advice"] == IIC_ADVICE  # the run's own report, at both levels


def test_the_family_report_is_read_from_the_run_model(iic):
    store, run = iic
    conf = cluster_label_confusion(store, run["id"])
    assert conf["collapse"]["collapsed"] and conf["collapse"]["reasons"] == ["cluster 0 holds 90% of the items (> 50%)"]
    assert conf["collapse"]["advice"] == IIC_ADVICE


def test_damaged_overclusters_file_is_reported(iic):
    store, run = iic
    np.save(store.run_dir(store.run(run["id"])) / "overclusters.npy", np.zeros(5, np.int64))
    with pytest.raises(StoreError, match="overclusters.npy"):
        cluster_summary(store, run["id"], level="over")


def test_dec_report_carries_its_advice(tmp_path):
    import torch

    from core.models.training import train_model

    torch.set_num_threads(1)
    store = _project(tmp_path / "dec")
    params = {"dims": [16, 4], "pretrain_epochs": 2, "batch_size": 32, "max_iter": 10, "update_interval": 5,
              "kmeans_n_init": 1, "collapse_fraction": 0.01}  # any cluster holds > 1%: reported as collapsed
    rid = train_model(store, "dec", params=params, device="cpu", project_map=False)
    collapse = store.run(rid)["metrics"]["dec"]["collapse"]
    assert collapse["collapsed"] and any("idec=true" in a for a in collapse["advice"])
    assert cluster_label_confusion(store, rid)["collapse"]["advice"] == collapse["advice"]


# ---------------------------------------------------------------------------------------------- page
@pytest.fixture
def projects(tmp_path, monkeypatch):
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(ROOT)
    return tmp_path / "projects"


def test_page_offers_the_switch_and_shows_the_advice(projects):
    store = _project(projects / "p")
    run = _publish(store, "iic", model="iic", metrics=_iic_metrics(True), over=True)
    _confirm(store, run["ids"], [0, 1, 2], CLASSES)
    at = open_page("pages/clusters.py")
    warning = " ".join(w.value for w in at.warning)
    assert "cluster 0 holds 90% of the items" in warning and all(a in warning for a in IIC_ADVICE)
    assert "idec" not in warning.lower()
    switch = next(r for r in at.radio if r.label == "Level")
    assert at.expander and at.expander[0].proto.expanded  # clustering family: opened by default
    assert any(b.label == "Merge" for b in at.button)
    switch.set_value("over").run()
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == 6
    assert not any(b.label == "Merge" for b in at.button)
    assert any("main level only" in c.value for c in [*at.caption, *at.info])


def test_page_without_overclusters_has_no_switch_and_dec_advice(projects):
    store = _project(projects / "p")
    collapse = {"collapsed": True, "reasons": ["2 of 3 clusters are empty"],
                "advice": ["Fit DEC again with idec=true", "Label more classes"]}
    metrics = {"suggests_classes": True, "dec": {"collapse": collapse}}
    run = _publish(store, "dec", model="dec", metrics=metrics, over=False)
    _confirm(store, run["ids"], [0, 1, 2], CLASSES)
    at = open_page("pages/clusters.py")
    assert not any(r.label == "Level" for r in at.radio)
    warning = " ".join(w.value for w in at.warning)
    assert "2 of 3 clusters are empty" in warning and "Fit DEC again with idec=true" in warning
    assert "Label more classes" in warning
    assert at.expander and at.expander[0].proto.expanded
    assert any(b.label == "Merge" for b in at.button)
