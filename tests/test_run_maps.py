"""The map of a run that projects its own embedding (DEC, pseudo_label) is that run's map (defect 1).

Before, every DEC run projected under the one key "dec-embedding": the second run found all its items in
that cache and got the first run's coordinates back, placed by a UMAP fitted on another latent space.
"""
from __future__ import annotations

import numpy as np
import pytest

from core.views.projection import _procrustes, load_state, project, reduce_for_map

TRAIN_PARAMS = {"dims": [32, 32, 4], "pretrain_epochs": 20, "batch_size": 32, "max_iter": 150,
                "update_interval": 50, "kmeans_n_init": 3}


def _coords(store, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    rows = store.predictions(run_id)
    return (np.array([r["item_id"] for r in rows], np.int64),
            np.array([[r["x"], r["y"]] for r in rows], np.float64))


def test_two_dec_runs_get_their_own_maps_aligned_to_the_previous(tmp_path):
    import torch

    from core.models.training import load_run_arrays, train_model
    from tests.test_label_free_runs import _digits_project

    torch.set_num_threads(1)
    store = _digits_project(tmp_path, "reference")
    rid1 = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=True)
    rid2 = train_model(store, "dec", params={**TRAIN_PARAMS, "dims": [16, 4]}, device="cpu", project_map=True)
    ids1, c1 = _coords(store, rid1)
    ids2, c2 = _coords(store, rid2)
    assert ids1.tolist() == ids2.tolist() and np.isfinite(c2).all()
    arrays = load_run_arrays(store, store.run(rid2))
    order = np.argsort(arrays["item_ids"])
    assert arrays["item_ids"][order].tolist() == ids2.tolist()
    emb1 = load_run_arrays(store, store.run(rid1))["embeddings"]
    assert not np.allclose(emb1, arrays["embeddings"])  # the two runs have different latent spaces ...
    assert not np.allclose(c1, c2, atol=1e-3)           # ... so their maps differ

    # run 2's map is the UMAP of run 2's latents, up to the similarity transform that aligned it
    fresh = project(arrays["item_ids"], reduce_for_map(arrays["embeddings"]), tmp_path / "fresh", key="run2")
    fresh = fresh[order].astype(np.float64)
    fit = _procrustes(fresh, c2)
    assert fit is not None
    s, R, mu, mu_ref = fit
    spread = np.ptp(c2, axis=0).max()
    assert np.abs(s * (fresh - mu) @ R + mu_ref - c2).max() < 1e-3 * spread

    # ... and aligned to run 1's map: no other rotation, scale or shift brings it closer to run 1
    s, R, mu, mu_ref = _procrustes(c2, c1)
    assert abs(s - 1) < 1e-4 and np.abs(R - np.eye(2)).max() < 1e-4 and np.abs(mu - mu_ref).max() < 1e-4 * spread

    # each run's embedding has its own cache entry; the superseded one is removed
    folders = sorted(p.name for p in (store.dir / "projections").iterdir() if p.is_dir())
    assert len(folders) == 1 and folders[0].startswith("dec-embedding-")
    state = load_state(store.dir / "projections", folders[0])
    assert state is not None and state.extra.get("aligned_to") == "reference"


def test_project_aligns_a_first_fit_to_a_reference_map(tmp_path):
    from sklearn.datasets import load_digits

    X = load_digits().data[:200].astype(np.float32)
    ids = np.arange(200)
    plain = project(ids, X, tmp_path, key="plain")
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    reference = (3.0 * plain.astype(np.float64) @ rot + np.array([5.0, -2.0]))
    # the reference covers only some of the items (and one the new map does not have)
    ref_ids = np.concatenate([ids[::2], [999]])
    ref_xy = np.vstack([reference[::2], [[0.0, 0.0]]])
    aligned = project(ids, X, tmp_path, key="aligned", align_to=(ref_ids, ref_xy))
    np.testing.assert_allclose(aligned, reference, atol=1e-3 * np.ptp(reference))
    # a cached key keeps its coordinates: the reference only matters when fitting
    again = project(ids, X, tmp_path, key="aligned", align_to=(ids, plain))
    np.testing.assert_array_equal(again, aligned)


def test_embedding_key_and_prune(tmp_path):
    from core.errors import ValidationError
    from core.views.projection import embedding_key, prune

    ids = np.arange(6)
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    key = embedding_key("dec-embedding", ids, X)
    assert key.startswith("dec-embedding-") and key == embedding_key("dec-embedding", ids, X.astype(np.float64))
    assert key != embedding_key("dec-embedding", ids, X + 1e-3) and key != embedding_key("dec-embedding", ids + 1, X)
    for name in ("dec-embedding", key, "dec-embedding-old", "features-pixels_pca", "pseudo_label-embedding-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.json").write_text("{}")
    assert prune(tmp_path, "dec-embedding", keep=key) == ["dec-embedding", "dec-embedding-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, "features-pixels_pca", "pseudo_label-embedding-x"])
    with pytest.raises(ValidationError, match="'prefix'"):
        embedding_key("../x", ids, X)
