"""The re-identification model on synthetic person embeddings: camera-aware proxies, links, progress,
cancellation, budget, errors, confidences and the epoch's batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from core.errors import JobCancelled, TrainingError, ValidationError
from core.models.reid.config import ReidConfig
from core.models.reid.links import resolve_links
from core.models.reid.model import ReidModel, epoch_batches, identity_confidence
from core.models.reid.proxies import build_proxies

FAST = {"epochs": 6, "k1": 10, "k2": 3, "lr": 1e-3}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def people(n_ids: int = 12, per: int = 8, d: int = 32, cam_shift: float = 0.8, noise: float = 0.35, seed: int = 0):
    """Features (n, d) of ``n_ids`` identities seen by 2 cameras, each camera adding its own offset; (X, ids, cams)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_ids, d))
    shift = rng.normal(0, 1, (2, d)) * cam_shift
    ids = np.repeat(np.arange(n_ids), per)
    cams = np.tile(np.repeat([0, 1], per // 2), n_ids)
    X = (centres[ids] + shift[cams] + rng.normal(0, noise, (len(ids), d))).astype(np.float32)
    return X, ids, cams


def test_camera_aware_proxies_join_what_the_camera_offset_splits():
    X, ids, cams = people()
    aware = ReidModel(ReidConfig(**FAST, use_cameras=True)).fit(X, cams=cams)
    blind = ReidModel(ReidConfig(**FAST, use_cameras=False)).fit(X, cams=cams)
    a, b = adjusted_rand_score(ids, aware.labels_), adjusted_rand_score(ids, blind.labels_)
    assert a >= 0.9 and a > b + 0.05, (a, b)
    first = aware.history_[0]
    assert first["n_proxies"] > first["n_clusters"]  # clusters split by camera
    assert aware.embedding_.shape == (len(X), 32)
    np.testing.assert_allclose(np.linalg.norm(aware.embedding_, axis=1), 1.0, atol=1e-5)


def test_final_clustering_respects_must_and_cannot_links():
    X, ids, cams = people(n_ids=6)
    a, b = np.flatnonzero(ids == 0)[0], np.flatnonzero(ids == 1)[0]  # two different people: must-link them
    c, d = np.flatnonzero(ids == 2)[:2]  # one person: cannot-link two of its crops
    links = resolve_links(np.array([[a, b]]), np.array([[c, d]]), len(X))
    m = ReidModel(ReidConfig(**FAST)).fit(X, cams=cams, links=links)
    assert m.labels_[a] == m.labels_[b] >= 0
    assert m.labels_[c] != m.labels_[d]
    assert m.summary()["links"]["n_must"] == 1 and m.summary()["links"]["n_cannot"] == 1


def test_progress_per_epoch_and_cancellation():
    X, _, cams = people(n_ids=6)
    rows = []
    ReidModel(ReidConfig(**{**FAST, "epochs": 3})).fit(X, cams=cams, progress=rows.append)
    done = [r for r in rows if r.get("loss") is not None]
    assert [r["step"] for r in done] == [1, 2, 3] and all(r["total"] == 3 for r in done)
    with pytest.raises(JobCancelled, match="re-identification"):
        ReidModel(ReidConfig(**FAST)).fit(X, cams=cams, should_cancel=lambda: True)


def test_time_budget_stops_after_an_epoch_and_says_so():
    X, _, cams = people(n_ids=6)
    m = ReidModel(ReidConfig(**{**FAST, "epochs": 50, "time_budget_s": 1e-3})).fit(X, cams=cams)
    assert m.summary()["epochs_run"] == 1 and "time budget" in m.stopped_


def test_no_pseudo_identity_is_a_clear_error_and_tiny_projects_too():
    X, _, cams = people(n_ids=6)
    with pytest.raises(TrainingError, match="no pseudo-identity .*raise eps"):
        ReidModel(ReidConfig(**{**FAST, "eps": 1e-4})).fit(X, cams=cams)
    with pytest.raises(TrainingError, match="at least 5 items"):
        ReidModel(ReidConfig(**FAST)).fit(X[:3])


@pytest.mark.parametrize("field,value,allowed", [
    ("variant", "full", "'head', 'finetune'"), ("sampler", "pk", "'random'"), ("k", 0, "an int >= 1"),
    ("batch_size", 30, "a multiple of k=4"), ("tau", 0, "a number > 0"), ("momentum", 1.5, "[0, 1]"),
    ("height", 8, "[16, 512]"), ("iters_per_epoch", 0, "None or an int >= 1"), ("k2", 30, "k1 + 1 = 21")])
def test_config_validation_names_the_bad_field(field, value, allowed):
    with pytest.raises(ValidationError, match=f"'{field}' parameter of reid") as err:
        ReidConfig(**{field: value}).validate()
    assert allowed in str(err.value)
    with pytest.raises(ValidationError, match="parameter name"):
        ReidConfig.from_params({"temperature": 0.05})


def test_identity_confidence_is_the_softmax_share_of_the_own_cluster():
    F = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], np.float32)
    labels = np.array([0, 0, 1, -1])
    conf = identity_confidence(F, labels, tau=0.5)
    c0 = F[:2].sum(0) / np.linalg.norm(F[:2].sum(0))
    c1 = F[2]
    for i, own in ((0, 0), (1, 0), (2, 1)):
        s = np.array([F[i] @ c0, F[i] @ c1]) / 0.5
        assert conf[i] == pytest.approx(np.exp(s[own]) / np.exp(s).sum(), rel=1e-5)
    assert conf[3] == 0.0


def test_epoch_batches_fill_iters_per_epoch_with_full_batches():
    X, ids, cams = people(n_ids=6)
    pseudo = ids.copy()
    pseudo[:2] = -1
    bank = build_proxies(X, pseudo, cams)
    for sampler in ("random", "pk_cluster", "pk_proxy", "group"):
        cfg = ReidConfig(sampler=sampler, batch_size=8, k=4, iters_per_epoch=15)
        batches = epoch_batches(cfg, pseudo, bank, epoch=0)
        assert len(batches) == 15 and all(len(b) == 8 for b in batches)
        assert not np.isin(np.concatenate(batches), [0, 1]).any()  # outliers are never sampled
    one_pass = epoch_batches(ReidConfig(sampler="random", batch_size=8), pseudo, bank, epoch=0)
    assert sum(len(b) for b in one_pass) == 40  # 46 inliers: five full batches, the last 6 dropped


def test_camera_standardisation_removes_each_cameras_shift_and_applies_to_new_rows():
    from core.models.reid.model import camera_standardise

    X, ids, cams = people(cam_shift=5.0)
    Z, stats = camera_standardise(torch.as_tensor(X), cams)
    for c in (0, 1):
        np.testing.assert_allclose(Z[cams == c].mean(0).numpy(), 0, atol=1e-5)
        np.testing.assert_allclose(Z[cams == c].std(0).numpy(), 1, atol=1e-4)
    again, _ = camera_standardise(torch.as_tensor(X[:5]), cams[:5], stats)  # new rows: the training statistics
    np.testing.assert_allclose(again.numpy(), Z[:5].numpy(), atol=1e-5)
    m = ReidModel(ReidConfig(**FAST)).fit(X, cams=cams)
    np.testing.assert_allclose(m.transform(X, cams), m.embedding_, atol=1e-5)
    assert set(m.state_dict()["camera_stats"]) == {0, 1}
    with pytest.raises(TrainingError, match="pass the cameras"):
        m.transform(X)


def test_the_finetuned_backbone_defaults_to_one_pass_of_the_items_per_epoch():
    from core.models.reid.model import steps_per_epoch

    assert steps_per_epoch(ReidConfig(variant="finetune", batch_size=32), 656) == 20
    assert steps_per_epoch(ReidConfig(variant="head"), 656) is None
    assert steps_per_epoch(ReidConfig(variant="finetune", iters_per_epoch=3), 656) == 3
    X, ids, cams = people(n_ids=6)
    bank = build_proxies(X, ids, cams)
    batches = epoch_batches(ReidConfig(variant="finetune", batch_size=8), ids, bank, epoch=0)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)  # round(48 / 8)
