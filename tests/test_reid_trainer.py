"""The "reid" family through the train job: clusters only without identity names, pair decisions and confirmed
identities as links, warm start, the fine-tuned backbone on crops, and what the published run holds."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from core.models.training import load_run_arrays, train_model
from core.store.project_store import Store

HEAD = {"variant": "head", "epochs": 4, "k1": 8, "k2": 3, "min_samples": 3, "lr": 1e-3, "batch_size": 16}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def person_crops(root, n_ids: int = 6, per_cam: int = 4, size: tuple[int, int] = (16, 32), seed: int = 0):
    """PNG crops (W x H = ``size``) of ``n_ids`` people seen by 2 cameras and a manifest with the camera as group.

    A person is a shirt and a trouser colour (two bands); camera 2 is darker; each crop has pixel noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    w, h = size
    for pid in range(n_ids):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        for cam in (1, 2):
            for v in range(per_cam):
                img = np.zeros((h, w, 3), np.float64)
                img[: h // 2], img[h // 2:] = top, bottom
                img = img * (1.0 if cam == 1 else 0.75) + rng.normal(0, 12, img.shape)
                name = f"p{pid:02d}_c{cam}_{v}.png"
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
                rows.append({"path": name, "group": f"cam{cam}", "reference_label": f"p{pid:02d}"})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "group", "reference_label"])
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def reid_project(tmp_path, **kw) -> Store:
    from core.io.ingest import import_manifest

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1)
    import_manifest(store, person_crops(tmp_path / "crops", **kw))
    return store


def test_unnamed_project_publishes_clusters_confidences_and_no_label(tmp_path):
    store = reid_project(tmp_path)
    run_id = train_model(store, "reid", params=HEAD, project_map=False)
    run = store.run(run_id)
    arrays = load_run_arrays(store, run)
    conf = np.load(store.run_dir(run) / "identity_confidence.npy")
    assert arrays["clusters"].shape == (48,) and arrays["embeddings"].shape[0] == 48
    assert ((conf >= 0) & (conf <= 1)).all() and (conf[arrays["clusters"] < 0] == 0).all()
    preds = store.predictions(run_id)
    assert all(p["label"] is None for p in preds)
    rep = run["metrics"]["reid"]
    assert rep["sampler"] == "pk_proxy" and rep["k"] == 4 and rep["epochs_run"] == 4
    assert rep["cameras"] == ["cam1", "cam2"] and len(rep["history"]) == 4
    assert rep["history"][0]["n_proxies"] >= rep["history"][0]["n_clusters"]
    assert run["metrics"]["calibration"]["status"] == "unknown"
    ari = run["metrics"]["evaluation"]["all"]["clusters"]
    assert ari  # scored against the reference identities


def test_pair_decisions_and_named_identities_are_respected_by_the_next_run(tmp_path):
    store = reid_project(tmp_path)
    first = train_model(store, "reid", params=HEAD, project_map=False)
    ids = store.item_ids()
    clusters = dict(zip(load_run_arrays(store, store.run(first))["item_ids"].tolist(),
                        load_run_arrays(store, store.run(first))["clusters"].tolist()))
    ref = store.reference_labels()
    p0 = [i for i in ids if ref[int(i)] == "p00"]
    p1 = [i for i in ids if ref[int(i)] == "p01"]
    # an annotator says two crops of p00 are different, and a crop of p00 is the same as one of p01
    store.vote_pairs([(int(p0[0]), int(p0[1]))], "different", annotator="ann")
    store.vote_pairs([(int(p0[2]), int(p1[0]))], "same", annotator="ann")
    # and names identity "alice" on two crops of p01
    store.add_labels(["alice"])
    store.annotate(int(p1[1]), "ann", "alice")
    store.annotate(int(p1[2]), "ann", "alice")
    second = train_model(store, "reid", params=HEAD, project_map=False)
    arr = load_run_arrays(store, store.run(second))
    cl = dict(zip(arr["item_ids"].tolist(), arr["clusters"].tolist()))
    assert cl[int(p0[0])] != cl[int(p0[1])]
    assert cl[int(p0[2])] == cl[int(p1[0])] >= 0
    assert cl[int(p1[1])] == cl[int(p1[2])] >= 0
    rep = store.run(second)["metrics"]["reid"]
    assert rep["links"]["n_must"] == 2 and rep["links"]["n_cannot"] == 1
    assert rep["warm_start"] and rep["warm_start_reason"] == f"from run {first}"
    preds = {p["item_id"]: p["label"] for p in store.predictions(second)}
    assert preds[int(p1[1])] == "alice"  # the named identity's prototype labels its own crops
    assert clusters  # the first run published clusters too


def test_warm_start_refused_when_the_network_changes(tmp_path):
    store = reid_project(tmp_path, n_ids=4)
    train_model(store, "reid", params=HEAD, project_map=False)
    run = store.run(train_model(store, "reid", params={**HEAD, "embed_dim": 8}, project_map=False))
    rep = run["metrics"]["reid"]
    assert not rep["warm_start"] and "embed_dim changed" in rep["warm_start_reason"]


def test_finetuned_tiny_backbone_trains_on_crops(tmp_path):
    store = reid_project(tmp_path, n_ids=4)
    params = {**HEAD, "variant": "finetune", "backbone": "tiny", "height": 32, "width": 16, "epochs": 2,
              "embed_dim": 16}
    run = store.run(train_model(store, "reid", params=params, project_map=False))
    arrays = load_run_arrays(store, run)
    assert arrays["embeddings"].shape == (32, 16)
    assert run["metrics"]["reid"]["variant"] == "finetune"
