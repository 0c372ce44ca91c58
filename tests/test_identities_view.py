"""The Identities page's back end (core.views.identities): loading a reid run, ranked matches, the query queue,
cluster members and summaries, the run report, retrain parameters and naming an identity.

The helpers at the top (:func:`add_items`, :func:`publish_reid_run`, :func:`people_project`) are shared by the
page and browser tests of the Identities page.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import StoreError, ValidationError
from core.store.project_store import Store
from core.views.identities import (OUTLIER, cluster_members, cluster_summary, identity_queue, load_identity_run,
                                   name_identity, ranked_matches, retrain_params, run_report)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- helpers
def add_items(store: Store, root: Path, groups: list[str | None]) -> np.ndarray:
    """Insert one image item per entry of ``groups`` (its camera) with uris under ``root``; returns ids (n,)."""
    root.mkdir(parents=True, exist_ok=True)
    source = store.add_source(root, kind="folder", spec=str(root))
    rows = [{"source_id": source, "uri": f"p{k:03d}.png", "modality": "image", "group": g,
             "content_hash": uuid.uuid4().hex} for k, g in enumerate(groups)]
    with store.transaction() as conn:
        return np.array(store.insert_items(conn, rows), dtype=np.int64)


def publish_reid_run(store: Store, item_ids: np.ndarray, clusters: np.ndarray, embeddings: np.ndarray,
                     confidence: np.ndarray, *, metrics: dict | None = None, job_id: int | None = None,
                     coords: bool = True) -> int:
    """Publish a "reid" run as the trainer does: its arrays in a folder under ``store.dir / "runs"``; label None."""
    folder = store.dir / "runs" / f"reid-fake-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    emb = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    np.save(folder / "item_ids.npy", np.asarray(item_ids, dtype=np.int64))
    np.save(folder / "clusters.npy", np.asarray(clusters, dtype=np.int64))
    np.save(folder / "embeddings.npy", emb.astype(np.float32))
    np.save(folder / "identity_confidence.npy", np.asarray(confidence, dtype=np.float32))
    n = len(item_ids)
    xy = np.random.default_rng(0).normal(size=(n, 2)) if coords else None
    return store.publish_run(model="reid", config={}, metrics={"suggests_classes": False, **(metrics or {})},
                             artefact_dir=folder, classes=store.labels(), item_ids=np.asarray(item_ids),
                             labels=[None] * n, confidences=np.asarray(confidence, dtype=float),
                             clusters=np.asarray(clusters), coords=xy, job_id=job_id)


def people_project(project_dir: Path, *, n_ids: int = 8, per_id: int = 6, cameras: int = 2, size=(24, 48)) -> Store:
    """An image project of person-like crops (W x H ``size``) imported from a manifest that carries the camera.

    Identity ``i`` wears a shirt and trousers of its own colours, with ``i % 3 + 1`` stripes; camera ``c``
    changes the brightness; each crop is jittered a little. ``identity`` and ``group`` come from the manifest.
    """
    from PIL import Image, ImageDraw

    from core.io.ingest import import_manifest

    rng = np.random.default_rng(0)
    media = project_dir.parent / f"{project_dir.name}-media"
    media.mkdir(parents=True, exist_ok=True)
    palette = rng.integers(30, 226, size=(n_ids, 2, 3))
    lines = ["path,group,identity"]
    w, h = size
    for i in range(n_ids):
        for k in range(per_id):
            cam = k % cameras
            gain = 0.75 + 0.5 * cam / max(cameras - 1, 1)
            img = Image.new("RGB", size, (200, 200, 200))
            d = ImageDraw.Draw(img)
            dx = int(rng.integers(-2, 3))
            shirt, trousers = (tuple(int(min(255, v * gain)) for v in palette[i, j]) for j in range(2))
            d.ellipse([w // 2 - 5 + dx, 1, w // 2 + 5 + dx, 11], fill=(int(180 * gain), int(140 * gain), 110))
            d.rectangle([4 + dx, 12, w - 5 + dx, h // 2 + 4], fill=shirt)
            for s in range(i % 3 + 1):
                y = 15 + 5 * s
                d.rectangle([4 + dx, y, w - 5 + dx, y + 1], fill=(255 - shirt[0], 255 - shirt[1], 255 - shirt[2]))
            d.rectangle([6 + dx, h // 2 + 5, w - 7 + dx, h - 2], fill=trousers)
            name = f"id{i:02d}_c{cam}_{k:02d}.png"
            noisy = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, size=(h, w, 3))  # no two crops alike
            Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(media / name)
            lines.append(f"{name},cam{cam},person{i}")
    (media / "manifest.csv").write_text("\n".join(lines) + "\n")
    store = Store.create(project_dir, modality="image", min_votes=1, extractor="pixels_pca")
    import_manifest(store, media / "manifest.csv")
    return store


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def people(tmp_path):
    """12 items: identities 0, 1, 2 of 3 items each (cameras alternate a/b), 3 outliers; a published reid run.

    Returns (store, item ids (12,), clusters (12,), confidence (12,), embeddings (12, 4)).
    """
    store = Store.in_memory(project_dir=tmp_path / "proj")
    groups = ["a", "b", "a", "b", "a", "b", "a", "b", "a", None, "b", "a"]
    ids = add_items(store, tmp_path / "media", groups)
    rng = np.random.default_rng(1)
    centres = np.eye(4)
    clusters = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, OUTLIER, OUTLIER, OUTLIER])
    emb = np.where(clusters[:, None] >= 0, centres[np.maximum(clusters, 0)], centres[3]) + rng.normal(
        scale=0.2, size=(12, 4))
    conf = np.array([0.9, 0.8, 0.7, 0.3, 0.4, 0.2, 0.6, 0.5, 0.65, 0.0, 0.0, 0.0], dtype=np.float32)
    publish_reid_run(store, ids, clusters, emb, conf)
    return store, ids, clusters, conf, emb / np.linalg.norm(emb, axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------- loading
def test_load_returns_none_without_a_reid_run(tmp_path):
    store = Store.in_memory(project_dir=tmp_path / "p")
    assert load_identity_run(store) is None


def test_load_reads_the_newest_reid_run_with_cameras(people, tmp_path):
    store, ids, clusters, conf, emb = people
    first = load_identity_run(store)
    publish_reid_run(store, ids, np.zeros(12, int), emb, np.full(12, 0.5))  # a newer reid run
    other = store.publish_run(model="classifier", config={}, metrics={}, artefact_dir=tmp_path / "x", classes=[],
                              item_ids=ids, labels=[None] * 12, confidences=np.zeros(12))  # newest, not reid
    run = load_identity_run(store)
    assert run.id == first.id + 1 and set(run.clusters.tolist()) == {0}
    again = load_identity_run(store, first.id)
    np.testing.assert_array_equal(again.clusters, clusters)
    np.testing.assert_allclose(again.embeddings, emb, atol=1e-6)
    np.testing.assert_allclose(again.confidence, conf)
    assert again.cameras.tolist() == ["a", "b", "a", "b", "a", "b", "a", "b", "a", None, "b", "a"]
    with pytest.raises(ValidationError, match="'reid' run"):
        load_identity_run(store, other)


def test_load_names_a_missing_array(people):
    store, *_ = people
    run = store.run(model="reid")
    (store.run_dir(run) / "identity_confidence.npy").unlink()
    with pytest.raises(StoreError, match="identity_confidence.npy"):
        load_identity_run(store)


def test_load_refuses_arrays_of_other_lengths(people):
    store, *_ = people
    run = store.run(model="reid")
    np.save(store.run_dir(run) / "clusters.npy", np.zeros(5, np.int64))
    with pytest.raises(StoreError, match=r"clusters \(5,\)"):
        load_identity_run(store)


def test_load_applies_the_clusters_pages_merges(people):
    from core.views.clusters import merge_clusters

    store, *_ = people
    merge_clusters(store, store.run(model="reid")["id"], [1, 2])
    run = load_identity_run(store)
    assert sorted(set(run.clusters.tolist())) == [OUTLIER, 0, 1]
    np.testing.assert_array_equal(run.clusters[6:9], [1, 1, 1])


# ---------------------------------------------------------------------------------------------- matches
def test_ranked_matches_put_other_cameras_first_each_by_score(people):
    store, ids, clusters, _, emb = people
    run = load_identity_run(store)
    query = int(ids[0])  # camera a
    matches = ranked_matches(run, query, k=6)
    sims = emb @ emb[0]
    nearest = np.argsort(-sims)[1:7]  # reference: brute-force cosine, the query left out
    assert {m.item_id for m in matches} == {int(ids[j]) for j in nearest}
    cams = run.cameras
    other = [m for m in matches if not m.same_camera]
    same = [m for m in matches if m.same_camera]
    assert matches == other + same  # two blocks, other cameras first
    assert all(m.camera != "a" for m in other) and all(m.camera == "a" for m in same)
    for block in (other, same):
        assert [m.score for m in block] == sorted((m.score for m in block), reverse=True)
    row = {int(i): k for k, i in enumerate(ids)}
    for m in matches:
        assert m.score == pytest.approx(float(sims[row[m.item_id]]), abs=1e-5)
        assert m.cluster == clusters[row[m.item_id]] and m.camera == cams[row[m.item_id]]
    assert query not in {m.item_id for m in ranked_matches(run, query, k=100)}
    assert len(ranked_matches(run, query, k=100)) == 11


def test_ranked_matches_without_cameras_are_one_camera_by_score(tmp_path):
    store = Store.in_memory(project_dir=tmp_path / "p")
    ids = add_items(store, tmp_path / "m", [None] * 6)
    emb = np.random.default_rng(3).normal(size=(6, 5))
    publish_reid_run(store, ids, np.zeros(6, int), emb, np.full(6, 0.5))
    matches = ranked_matches(load_identity_run(store), int(ids[2]), k=5)
    assert [m.same_camera for m in matches] == [True] * 5 and {m.camera for m in matches} == {None}
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)


def test_an_item_without_a_camera_is_of_its_own_camera(people):
    store, ids, *_ = people
    matches = ranked_matches(load_identity_run(store), int(ids[9]), k=11)  # the item without a group
    assert [m.same_camera for m in matches] == [False] * 11


def test_ranked_matches_validate(people):
    store, ids, *_ = people
    run = load_identity_run(store)
    with pytest.raises(ValidationError, match="'item_id'.*Got 99999"):
        ranked_matches(run, 99999)
    with pytest.raises(ValidationError, match="'k'"):
        ranked_matches(run, int(ids[0]), k=0)


# ---------------------------------------------------------------------------------------------- the queue
def test_queue_orders_clusters_by_certainty_then_outliers(people):
    store, ids, *_ = people
    run = load_identity_run(store)
    queue = identity_queue(store, run, "ann", k=3)
    # certainties: cluster 1 (0.3), cluster 2 (0.583), cluster 0 (0.8); members by ascending confidence
    expected = [ids[5], ids[3], ids[4], ids[7], ids[6], ids[8], ids[2], ids[1], ids[0], ids[9], ids[10], ids[11]]
    assert queue == [int(i) for i in expected]
    assert identity_queue(store, run, "ann", k=3, limit=4) == queue[:4]
    assert identity_queue(store, run, "ann", k=3, exclude=[int(ids[5]), int(ids[0])]) == [
        q for q in queue if q not in (int(ids[5]), int(ids[0]))]


def test_queue_skips_fully_decided_items_of_this_annotator(people):
    store, ids, *_ = people
    run = load_identity_run(store)
    q = int(ids[5])
    matches = [m.item_id for m in ranked_matches(run, q, k=3)]
    store.vote_pairs([(q, m) for m in matches[:2]], "different", annotator="ann")
    assert q in identity_queue(store, run, "ann", k=3)  # one match still undecided
    store.vote_pairs([(q, matches[2])], "same", annotator="ann")
    assert q not in identity_queue(store, run, "ann", k=3)
    assert q in identity_queue(store, run, "bob", k=3)  # another annotator's queue keeps it
    assert q in identity_queue(store, run, "ann", k=4)  # a 4th match is undecided
    store.undo_last_pair_votes("ann")
    assert q in identity_queue(store, run, "ann", k=3)  # a retracted decision is no decision


def test_queue_validates(people):
    store, *_ = people
    run = load_identity_run(store)
    with pytest.raises(ValidationError, match="'limit'"):
        identity_queue(store, run, "ann", limit=0)
    with pytest.raises(ValidationError, match="'annotator'"):
        identity_queue(store, run, "  ")


# ---------------------------------------------------------------------------------------------- clusters
def test_cluster_members_most_confident_first(people):
    store, ids, *_ = people
    run = load_identity_run(store)
    assert cluster_members(run, 1) == [int(ids[4]), int(ids[3]), int(ids[5])]
    assert cluster_members(run, 1, limit=2) == [int(ids[4]), int(ids[3])]
    assert sorted(cluster_members(run, OUTLIER)) == [int(i) for i in ids[9:]]
    with pytest.raises(ValidationError, match="'cluster'.*Got 7"):
        cluster_members(run, 7)


def test_cluster_summary(people):
    store, *_ = people
    run = load_identity_run(store)
    rows = cluster_summary(run)
    assert [r.cluster for r in rows] == [0, 1, 2, OUTLIER]
    assert [r.size for r in rows] == [3, 3, 3, 3]
    assert [round(r.certainty, 3) for r in rows] == [0.8, 0.3, 0.583, 0.0]
    assert rows[0].cameras == ("a", "b") and rows[3].cameras == ("a", "b")


def test_run_report_reads_the_runs_report_or_counts(people):
    store, ids, clusters, conf, emb = people
    run = load_identity_run(store)
    assert run_report(run) == {"clusters": 3, "outliers": 3, "must_links": None, "cannot_links": None}
    publish_reid_run(store, ids, clusters, emb, conf, metrics={"reid": {"pseudo": {"n_clusters": 5, "n_outliers": 1},
                                                                         "links": {"n_must": 4, "n_cannot": 2}}})
    assert run_report(load_identity_run(store)) == {"clusters": 5, "outliers": 1, "must_links": 4, "cannot_links": 2}
    publish_reid_run(store, ids, clusters, emb, conf, metrics={"reid": {"pseudo": "broken", "links": None}})
    assert run_report(load_identity_run(store))["clusters"] == 3


def test_retrain_params_come_from_the_runs_job(people):
    from core.jobs import queue as jobs

    store, ids, clusters, conf, emb = people
    assert retrain_params(store, load_identity_run(store)) == {}
    assert retrain_params(store, None) == {}
    job, _ = jobs.request_job(store, "train", {"model": "reid", "params": {"variant": "head", "epochs": 3}})
    publish_reid_run(store, ids, clusters, emb, conf, job_id=job)
    assert retrain_params(store, load_identity_run(store)) == {"variant": "head", "epochs": 3}


# ---------------------------------------------------------------------------------------------- naming
def test_name_identity_is_one_bulk_label_through_the_consensus(people):
    store, *_ = people
    run = load_identity_run(store)
    members = cluster_members(run, 0)
    assert name_identity(store, members, "alice", annotator="ann") == 3
    assert "alice" in store.labels()
    cons = {r["item_id"]: r for r in store.consensus_rows()}
    assert all(cons[i]["label"] == "alice" and cons[i]["confirmed"] for i in members)  # min_votes 1
    votes = store.active_votes(members)
    assert {v["kind"] for v in votes} == {"bulk"} and len(votes) == 3
    assert name_identity(store, members, "alice", annotator="ann") == 0  # the same votes are not written twice
    assert sorted(store.undo_last("ann")) == sorted(members)
    assert not store.active_votes(members)
    with pytest.raises(ValidationError, match="'item_ids'"):
        name_identity(store, [], "alice", annotator="ann")
    with pytest.raises(ValidationError, match="'label'"):
        name_identity(store, members, "  ", annotator="ann")
