"""core.views (map, pseudo_labels, clusters, consensus, runs) on a nine-item text project with hand-made runs, checked against hand-computed values.

Items 1-9 (ids in import order). Run 1 (published by hand):

====  =====  ==========  =======  ======  ==================================
item  label  confidence  cluster  coords  votes (min_votes = 2)
====  =====  ==========  =======  ======  ==================================
1     a      0.99        0        (1,-1)  alice a, bob a          -> a confirmed
2     a      0.95        0        (2,-2)  alice a, bob a          -> a confirmed
3     a      0.50        0        (3,-3)  alice b, bob b          -> b confirmed
4     b      0.97        1        (4,-4)  alice b, bob c          -> tie, unconfirmed
5     b      0.60        1        (5,-5)  alice c, bob b, carol c -> c confirmed, agreement 2/3
6     b      0.92        1        (6,-6)
7     c      0.91        2        (7,-7)  alice a                 -> one vote, unconfirmed
8     c      0.30        2        (8,-8)
9     c      0.96        2        none    dave c
====  =====  ==========  =======  ======  ==================================
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pandas as pd
import pytest

from core.store.cluster_merges import MERGES_FILE, migrate_merges_file
from core.views.clusters import (cluster_label_confusion, cluster_members, cluster_merges, cluster_summary,
                                 effective_clusters, label_cluster, merge_clusters, reset_cluster_merges)
from core.views.consensus import adjudicate, agreement_report, disagreements
from core.views.map import COLOR_BY, map_frame
from core.views.pseudo_labels import accept_pseudo_labels, candidates, pseudo_label_rounds, pseudo_label_summary
from core.views.runs import compare_runs
from core.errors import ValidationError
from core.io.ingest import import_manifest
from core.store.project_store import Store

LONG = "a long text " * 12  # 144 characters: the hover keeps 80

LABELS1 = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
CONF1 = [0.99, 0.95, 0.50, 0.97, 0.60, 0.92, 0.91, 0.30, 0.96]
CLUST1 = [0, 0, 0, 1, 1, 1, 2, 2, 2]
VOTES = [(1, "alice", "a"), (1, "bob", "a"), (2, "alice", "a"), (2, "bob", "a"), (3, "alice", "b"), (3, "bob", "b"),
         (4, "alice", "b"), (4, "bob", "c"), (5, "alice", "c"), (5, "bob", "b"), (5, "carol", "c"),
         (7, "alice", "a"), (9, "dave", "c")]


@pytest.fixture
def project(tmp_path):
    manifest = tmp_path / "texts.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerow([LONG])
        for k in range(2, 10):
            w.writerow([f"text number {k}"])
    store = Store.create(tmp_path / "proj", modality="text", labels=["a", "b", "c"])
    report = import_manifest(store, manifest)
    assert report.added == 9
    ids = store.item_ids()
    assert ids.tolist() == list(range(1, 10))
    coords = np.array([[k, -k] for k in range(1, 10)], dtype=float)
    coords[8] = np.nan  # item 9 is not on the map
    run1 = store.publish_run(model="hand", config={}, metrics={}, artefact_dir=store.dir / "runs" / "r1",
                             classes=["a", "b", "c"], item_ids=ids, labels=LABELS1, confidences=np.array(CONF1),
                             clusters=np.array(CLUST1), coords=coords)
    for item, who, lab in VOTES:
        store.annotate(item, who, lab)
    return store, run1


def publish_second(store: Store) -> int:
    """Run 2 over items 1-8 only: item 3 a->b, item 5 b->c, item 8 c->a change."""
    return store.publish_run(model="hand", config={}, metrics={}, artefact_dir=store.dir / "runs" / "r2",
                             classes=["a", "b", "c"], item_ids=np.arange(1, 9),
                             labels=["a", "a", "b", "b", "c", "b", "c", "a"],
                             confidences=np.array([0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6]),
                             clusters=np.zeros(8, int), coords=np.zeros((8, 2)))


# ---------------------------------------------------------------------------------------------- map
def test_map_frame_rows_columns_and_values(project):
    store, run1 = project
    df = map_frame(store, run1)
    assert df["item_id"].tolist() == list(range(1, 9))  # item 9 has no coordinates
    assert list(df.columns) == ["item_id", "x", "y", "consensus", "confirmed", "prediction", "confidence", "cluster",
                                "disagreement", "n_votes", "hover", "color"]
    by = df.set_index("item_id")
    assert by.loc[3, "x"] == 3 and by.loc[3, "y"] == -3
    assert by.loc[1, "consensus"] == "a" and by.loc[3, "consensus"] == "b"
    assert by.loc[4, "consensus"] is None and by.loc[6, "consensus"] is None
    assert by["confirmed"].tolist() == [True, True, True, False, True, False, False, False]
    assert by["n_votes"].tolist() == [2, 2, 2, 2, 3, 0, 1, 0]
    assert by.loc[4, "disagreement"] == pytest.approx(0.5)
    assert by.loc[5, "disagreement"] == pytest.approx(1 / 3)
    assert by.loc[7, "disagreement"] == 0.0 and by.loc[1, "disagreement"] == 0.0
    assert by["prediction"].tolist() == LABELS1[:8]
    assert by["cluster"].tolist() == CLUST1[:8]
    assert by["color"].tolist() == ["a", "a", "b", "(none)", "c", "(none)", "a", "(none)"]  # 7: one vote, unconfirmed
    assert by.loc[1, "hover"] == LONG[:79] + "… — predicted a (0.99)"
    assert by.loc[2, "hover"] == "text number 2 — predicted a (0.95)"


def test_map_frame_colors(project):
    store, run1 = project
    assert map_frame(store, run1, color_by="prediction")["color"].tolist() == LABELS1[:8]
    assert map_frame(store, run1, color_by="confidence")["color"].tolist() == pytest.approx(CONF1[:8])
    assert map_frame(store, run1, color_by="cluster")["color"].tolist() == [str(c) for c in CLUST1[:8]]
    dis = map_frame(store, run1, color_by="disagreement")["color"].tolist()
    assert dis == pytest.approx([0, 0, 0, 0.5, 1 / 3, 0, 0, 0])
    assert set(COLOR_BY) == {"consensus", "prediction", "confidence", "cluster", "disagreement"}


def test_map_frame_newest_run_and_empty_project(project, tmp_path):
    store, run1 = project
    assert map_frame(store)["item_id"].tolist() == list(range(1, 9))
    empty = Store.create(tmp_path / "empty", modality="text", labels=["a"])
    assert map_frame(empty).empty
    assert cluster_summary(empty).empty
    assert pseudo_label_summary(empty, threshold=0.5)["gains"] == []


# ---------------------------------------------------------------------------------------------- pseudo-labels
def test_pseudo_label_summary_gains_and_histogram(project):
    store, run1 = project
    s = pseudo_label_summary(store, run1, threshold=0.9)
    # unconfirmed: 4 (b .97), 6 (b .92), 7 (c .91), 8 (c .30), 9 (c .96)
    assert s["n_unconfirmed"] == 5 and s["total_gain"] == 4
    gains = pd.DataFrame(s["gains"]).set_index("label")
    assert gains["gain"].to_dict() == {"a": 0, "b": 2, "c": 2}
    assert gains["predicted"].to_dict() == {"a": 0, "b": 2, "c": 3}
    assert gains["confirmed"].to_dict() == {"a": 2, "b": 1, "c": 1}
    hist = pd.DataFrame(s["histogram"])
    assert len(hist) == 3 * 20 and len(s["bins"]) == 21
    nonzero = {(r.label, round(r.lo, 2)): r.count for r in hist.itertuples() if r.count}
    assert nonzero == {("b", 0.95): 1, ("b", 0.9): 1, ("c", 0.9): 1, ("c", 0.3): 1, ("c", 0.95): 1}
    assert hist.loc[(hist["label"] == "c") & (hist["count"] == 1), "bin"].round(3).tolist() == [0.325, 0.925, 0.975]
    assert pseudo_label_summary(store, run1, threshold=0.0)["total_gain"] == 5
    assert pseudo_label_summary(store, run1, threshold=1)["total_gain"] == 0


def test_candidates_sorted_filtered_limited(project):
    store, run1 = project
    got = candidates(store, run1, 0.9)
    assert [(i, lab) for i, lab, _ in got] == [(4, "b"), (9, "c"), (6, "b"), (7, "c")]
    assert [c for _, _, c in got] == pytest.approx([0.97, 0.96, 0.92, 0.91])
    assert [i for i, _, _ in candidates(store, run1, 0.9, label="c")] == [9, 7]
    assert [i for i, _, _ in candidates(store, run1, 0.9, limit=2)] == [4, 9]
    assert [i for i, _, _ in candidates(store, run1, 0.9, annotator="dave")] == [4, 6, 7]


def test_accept_pseudo_labels_one_batch_and_undo(project):
    store, run1 = project
    before = store.annotation_count(include_retracted=False)
    # dave already voted on item 9, so he adds 4, 6, 7 (item 4 b: alice b, bob c, dave b -> b confirmed)
    n = accept_pseudo_labels(store, run1, 0.9, annotator="dave")
    assert n == 3
    assert store.annotation_count(include_retracted=False) == before + 3
    rows = store.conn.execute("SELECT item_id, label, kind, run_id, batch FROM annotations WHERE annotator = 'dave'"
                              " AND kind = 'bulk' ORDER BY item_id").fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [(4, "b", "bulk", run1), (6, "b", "bulk", run1),
                                                      (7, "c", "bulk", run1)]
    assert len({r[4] for r in rows}) == 1 and rows[0][4]
    cons = {r["item_id"]: r for r in store.consensus_rows()}
    assert cons[4]["label"] == "b" and cons[4]["confirmed"] == 1
    assert accept_pseudo_labels(store, run1, 0.9, annotator="dave") == 0  # nothing left to add
    assert sorted(store.undo_last("dave")) == [4, 6, 7]
    assert store.annotation_count(include_retracted=False) == before
    cons = {r["item_id"]: r for r in store.consensus_rows()}
    assert cons[4]["confirmed"] == 0 and 6 not in cons


def test_accept_pseudo_labels_restricted_to_labels(project):
    store, run1 = project
    assert accept_pseudo_labels(store, run1, 0.9, annotator="erin", labels=["c"]) == 2  # items 9 and 7
    assert sorted(store.undo_last("erin")) == [7, 9]


# ---------------------------------------------------------------------------------------------- clusters
def test_cluster_summary(project):
    store, run1 = project
    s = cluster_summary(store, run1).set_index("cluster")
    assert s["size"].tolist() == [3, 3, 3]
    assert s["confirmed"].tolist() == [3, 1, 0]
    assert s.loc[0, "confirmed_label"] == "a" and s.loc[0, "purity"] == pytest.approx(2 / 3)
    assert s.loc[1, "confirmed_label"] == "c" and s.loc[1, "purity"] == 1.0
    assert s.loc[2, "confirmed_label"] is None and math.isnan(s.loc[2, "purity"])
    assert s["predicted_label"].tolist() == ["a", "b", "c"]
    assert s["predicted_share"].tolist() == [1.0, 1.0, 1.0]
    assert s["merged_from"].tolist() == ["", "", ""]


def _merge_rows(store: Store, run_id: int) -> list[tuple]:
    return [tuple(r) for r in store.conn.execute(
        "SELECT cluster, into_cluster, merged_by, reset_at IS NOT NULL FROM cluster_merges WHERE run_id = ? ORDER BY id",
        (run_id,)).fetchall()]


def test_merge_clusters_table_summary_and_map(project):
    store, run1 = project
    assert merge_clusters(store, run1, [2, 1], merged_by="alice") == 1
    assert _merge_rows(store, run1) == [(2, 1, "alice", 0)]
    assert not (store.dir / "cluster_merges.json").exists()  # the database holds the merges now
    s = cluster_summary(store, run1).set_index("cluster")
    assert s["size"].to_dict() == {0: 3, 1: 6}
    assert s.loc[1, "confirmed"] == 1 and s.loc[1, "merged_from"] == "1, 2"
    assert s.loc[1, "predicted_label"] == "b" and s.loc[1, "predicted_share"] == 0.5  # b 3, c 3: tie -> first
    assert map_frame(store, run1)["cluster"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    # a second merge takes the earlier one along (2 -> 1 -> 0)
    assert merge_clusters(store, run1, [1, 0]) == 0
    assert cluster_merges(store, run1) == {1: 0, 2: 0}
    assert _merge_rows(store, run1) == [(2, 1, "alice", 0), (1, 0, None, 0)]
    eff = effective_clusters(store, run1)
    assert eff.to_dict() == {i: 0 for i in range(1, 10)}
    s = cluster_summary(store, run1)
    assert s["size"].tolist() == [9] and s["confirmed"].tolist() == [4]
    assert s["purity"].tolist() == pytest.approx([2 / 4])
    reset_cluster_merges(store, run1)
    assert cluster_summary(store, run1)["size"].tolist() == [3, 3, 3]
    assert cluster_merges(store, run1) == {}
    assert _merge_rows(store, run1) == [(2, 1, "alice", 1), (1, 0, None, 1)]  # reset rows are kept
    assert merge_clusters(store, run1, [0, 2]) == 0  # merging again after a reset starts from the published ids
    assert cluster_merges(store, run1) == {2: 0}
    with pytest.raises(ValidationError, match="merged_by"):
        merge_clusters(store, run1, [0, 1], merged_by="")


def test_merges_of_another_store_connection_are_seen(project):
    store, run1 = project
    other = Store(store.dir)  # another process's view of the same project
    merge_clusters(other, run1, [1, 2])
    assert cluster_merges(store, run1) == {2: 1}


def test_legacy_merges_file_is_imported_once_and_renamed(project):
    store, run1 = project
    run2 = publish_second(store)
    legacy = {str(run1): {"1": 0, "2": 0}, str(run2): {"0": 0}, "999": {"3": 1}}  # run 999 no longer exists
    (store.dir / MERGES_FILE).write_text(json.dumps(legacy))
    (store.dir / (MERGES_FILE + ".lock")).write_text("")
    s = cluster_summary(store, run1)  # first use imports the file
    assert s["size"].tolist() == [9] and s["merged_from"].tolist() == ["0, 1, 2"]
    assert not (store.dir / MERGES_FILE).exists() and not (store.dir / (MERGES_FILE + ".lock")).exists()
    assert json.loads((store.dir / (MERGES_FILE + ".migrated")).read_text()) == legacy
    assert _merge_rows(store, run1) == [(1, 0, MERGES_FILE, 0), (2, 0, MERGES_FILE, 0)]
    assert _merge_rows(store, run2) == [(0, 0, MERGES_FILE, 0)]
    assert store.conn.execute("SELECT COUNT(*) FROM cluster_merges WHERE run_id = 999").fetchone()[0] == 0
    assert migrate_merges_file(store) == 0  # nothing left to import: no duplicate rows
    assert len(_merge_rows(store, run1)) == 2
    reset_cluster_merges(store, run1)
    assert cluster_summary(store, run1)["size"].tolist() == [3, 3, 3]


def test_broken_legacy_merges_file_is_refused_and_left_in_place(project):
    store, run1 = project
    (store.dir / MERGES_FILE).write_text("{not json")
    with pytest.raises(ValidationError, match="not valid JSON"):
        cluster_summary(store, run1)
    assert (store.dir / MERGES_FILE).exists() and not (store.dir / (MERGES_FILE + ".migrated")).exists()
    assert store.conn.execute("SELECT COUNT(*) FROM cluster_merges").fetchone()[0] == 0


def test_cluster_members_and_label_cluster(project):
    store, run1 = project
    assert cluster_members(store, run1, 1) == [4, 5, 6]
    sample = cluster_members(store, run1, 1, limit=2, seed=3)
    assert len(sample) == 2 and set(sample) <= {4, 5, 6}
    assert sample == cluster_members(store, run1, 1, limit=2, seed=3)
    # cluster 1: item 5 is confirmed, so 4 and 6 are labelled
    assert label_cluster(store, run1, 1, "b", annotator="frank") == 2
    assert label_cluster(store, run1, 1, "b", annotator="frank") == 0  # identical votes are not repeated
    assert sorted(store.undo_last("frank")) == [4, 6]
    assert label_cluster(store, run1, 1, "b", annotator="frank", only_unconfirmed=False) == 3
    merge_clusters(store, run1, [0, 2])
    assert cluster_members(store, run1, 0, limit=10) == [1, 2, 3, 7, 8, 9]


# ---------------------------------------------------------------------------------------------- consensus
def test_disagreements_and_adjudicate(project):
    store, run1 = project
    rows = disagreements(store)
    assert [r["item_id"] for r in rows] == [4, 5]  # agreement 0.5, then 2/3
    assert rows[0]["votes"] == [("alice", "b"), ("bob", "c")] and rows[0]["n_votes"] == 2
    assert rows[0]["agreement"] == 0.5 and rows[0]["confirmed"] is False
    assert rows[1]["votes"] == [("alice", "c"), ("bob", "b"), ("carol", "c")]
    assert rows[1]["agreement"] == pytest.approx(2 / 3) and rows[1]["confirmed"] is True
    assert [r["item_id"] for r in disagreements(store, limit=1)] == [4]
    aid = adjudicate(store, 4, "c", reviewer="rita")
    assert isinstance(aid, int)
    cons = {r["item_id"]: r for r in store.consensus_rows()}
    assert cons[4]["label"] == "c" and cons[4]["confirmed"] == 1 and cons[4]["method"] == "adjudication"
    assert [r["item_id"] for r in disagreements(store)] == [5]
    assert [r["item_id"] for r in disagreements(store, include_adjudicated=True)] == [4, 5]


# ---------------------------------------------------------------------------------------------- runs
def test_compare_runs(project):
    store, run1 = project
    run2 = publish_second(store)
    cmp = compare_runs(store, run1, run2)
    assert cmp["n_common"] == 8 and cmp["changed"] == 3 and cmp["changed_share"] == pytest.approx(3 / 8)
    assert cmp["only_a"] == 1 and cmp["only_b"] == 0
    assert cmp["mean_confidence_a"] == pytest.approx(np.mean(CONF1[:8]))
    assert cmp["mean_confidence_b"] == pytest.approx(0.75)
    t = cmp["per_class"].set_index("class")
    assert t["count_a"].to_dict() == {"a": 3, "b": 3, "c": 2}
    assert t["count_b"].to_dict() == {"a": 3, "b": 3, "c": 2}
    assert t["changed_from"].to_dict() == {"a": 1, "b": 1, "c": 1}
    assert t["changed_to"].to_dict() == {"a": 1, "b": 1, "c": 1}
    assert cmp["transitions"].loc["c", "a"] == 1 and cmp["transitions"].loc["a", "a"] == 2
    same = compare_runs(store, run2, run2)
    assert same["changed"] == 0 and same["n_common"] == 8


# ---------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("call, bad", [
    (lambda s, r: map_frame(s, r, color_by="banana"), "banana"),
    (lambda s, r: map_frame(s, 999), "999"),
    (lambda s, r: map_frame(s, "1"), "'1'"),
    (lambda s, r: pseudo_label_summary(s, r, threshold=1.5), "1.5"),
    (lambda s, r: pseudo_label_summary(s, r, threshold=-0.1), "-0.1"),
    (lambda s, r: pseudo_label_summary(s, r, threshold=float("nan")), "nan"),
    (lambda s, r: candidates(s, r, 2.0), "2.0"),
    (lambda s, r: candidates(s, r, 0.5, label="zebra"), "zebra"),
    (lambda s, r: candidates(s, r, 0.5, limit=0), "Got 0"),
    (lambda s, r: accept_pseudo_labels(s, 777, 0.9, annotator="x"), "777"),
    (lambda s, r: accept_pseudo_labels(s, r, 0.9, annotator="x", labels=["zebra"]), "zebra"),
    (lambda s, r: accept_pseudo_labels(s, r, 0.9, annotator=""), "''"),
    (lambda s, r: cluster_summary(s, 42), "42"),
    (lambda s, r: cluster_members(s, r, 17), "17"),
    (lambda s, r: label_cluster(s, r, 0, "zebra", annotator="x"), "zebra"),
    (lambda s, r: merge_clusters(s, r, [1]), "[1]"),
    (lambda s, r: merge_clusters(s, r, [0, 55]), "55"),
    (lambda s, r: disagreements(s, limit=-3), "-3"),
    (lambda s, r: compare_runs(s, r, 321), "321"),
    (lambda s, r: adjudicate(s, 1, "zebra", reviewer="rita"), "zebra"),
])
def test_bad_inputs_name_the_value(project, call, bad):
    store, run1 = project
    with pytest.raises(ValidationError) as exc:
        call(store, run1)
    assert bad in str(exc.value)


def test_run_without_map_or_clusters_and_missing_predictions(project):
    store, _ = project
    store.add_labels(["d"])  # a label added after the run: still a valid filter
    run = store.publish_run(model="hand", config={}, metrics={}, artefact_dir=store.dir / "runs" / "r3",
                            classes=["a", "b", "c"], item_ids=np.array([6, 8]), labels=[None, "a"],
                            confidences=np.array([0.4, 0.95]))
    assert map_frame(store, run).empty
    assert cluster_summary(store, run).empty
    assert effective_clusters(store, run).empty
    with pytest.raises(ValidationError, match="clusters"):
        merge_clusters(store, run, [0, 1])
    assert candidates(store, run, 0.5) == [(8, "a", 0.95)]
    assert candidates(store, run, 0.5, label="d") == []
    s = pseudo_label_summary(store, run, threshold=0.5)
    assert s["n_unconfirmed"] == 1 and s["total_gain"] == 1
    coords = np.array([[0.0, 0.0], [1.0, 1.0]])
    run4 = store.publish_run(model="hand", config={}, metrics={}, artefact_dir=store.dir / "runs" / "r4",
                             classes=["a", "b", "c"], item_ids=np.array([6, 8]), labels=[None, "a"],
                             confidences=np.array([np.nan, 0.95]), coords=coords)
    df = map_frame(store, run4)
    assert df["hover"].tolist() == ["text number 6 — predicted (none)", "text number 8 — predicted a (0.95)"]
    assert df["prediction"].tolist() == [None, "a"] and df["cluster"].isna().all()
    assert map_frame(store, run4, color_by="cluster")["color"].tolist() == ["(none)", "(none)"]


def test_label_matrix_and_agreement_report(tmp_path):
    from core.io.ingest import import_manifest
    from core.labels.matrix import label_matrix

    store = Store.create(tmp_path / "agree", modality="text", labels=["a", "b"], min_votes=1, extractor="tfidf_svd")
    man = tmp_path / "agree.csv"
    man.write_text("text\n" + "\n".join(f"text number {i}" for i in range(4)) + "\n")
    import_manifest(store, man)
    store.annotate_many([(1, "a"), (2, "a"), (3, "b")], annotator="x")
    store.annotate_many([(1, "a"), (2, "b"), (3, "b")], annotator="y")
    store.annotate(2, "x", "b")  # x changes their mind: only the latest vote counts
    lm = label_matrix(store)
    assert lm.item_ids.tolist() == [1, 2, 3] and lm.annotators == ["x", "y"]
    assert lm.L.tolist() == [[0, 0], [1, 1], [1, 1]]
    rep = agreement_report(store)
    assert rep["fleiss_kappa"] == pytest.approx(1.0) and rep["krippendorff_alpha"] == pytest.approx(1.0)
    assert rep["cohen"].loc["x", "y"] == pytest.approx(1.0)
    assert rep["annotators"].set_index("annotator").loc["y", "n_votes"] == 3
    assert int(rep["class_confusion"].loc["a", "a"]) == 2  # item 1: x said a, y said a (both directions)


def test_cluster_label_confusion_and_mapping(project):
    store, run1 = project
    out = cluster_label_confusion(store, run1)
    table = out["table"]
    assert list(table.columns) == ["a", "b", "c"] and table.to_numpy().sum() == len(store.confirmed_labels()[0])
    # the Hungarian mapping gives each cluster with confirmed items a distinct label
    assert out["source"] == "hungarian" and len(set(out["mapping"].values())) == len(out["mapping"])
    for cluster, label in out["mapping"].items():
        assert cluster in table.index and label in table.columns


def test_pseudo_label_rounds(project):
    store, _ = project
    rid = store.publish_run(model="pseudo_label", config={}, artefact_dir=store.dir / "runs" / "r3",
                            metrics={"rounds": [{"round": 1, "val_macro_f1": 0.8, "n_pseudo": 2, "per_class": {"a": 2}},
                                                {"round": 2, "val_macro_f1": 0.85, "n_pseudo": 1}]},
                            classes=["a", "b", "c"], item_ids=np.array([1, 2, 3]), labels=["a", "a", "b"],
                            confidences=np.array([0.99, 0.995, 0.999]),
                            pseudo_labels=[(1, "a", 0.99, 1), (2, "a", 0.995, 1), (3, "b", 0.999, 2)])
    out = pseudo_label_rounds(store, rid)
    assert out["counts"].loc[1, "a"] == 2 and out["counts"].loc[2, "b"] == 1
    assert out["metrics"]["val_macro_f1"].tolist() == [0.8, 0.85] and "per_class" not in out["metrics"]
