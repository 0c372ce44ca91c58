"""DEC: losses against plain-loop references from the equations, the Hungarian mapping, small fits, the trainer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.errors import JobCancelled, ValidationError
from core.evaluation.metrics import cluster_acc, hungarian_mapping
from core.models.dec.model import (DECConfig, MultiModalDEC, cluster_class_matrix, collapse_report, confusion_matrix,
                             match_clusters)
from core.models.dec.losses import (class_prior, joint_target, kl_prior, kl_target, soft_assignment,
                                    supervised_ce, target_distribution)

SMALL = dict(dims=(32, 32, 4), pretrain_epochs=15, batch_size=64, max_iter=300, update_interval=50, kmeans_n_init=5)


# ------------------------------------------------------------------------------------ plain-loop references
def ref_soft(z, mu, alpha=1.0):
    n, k = len(z), len(mu)
    q = [[0.0] * k for _ in range(n)]
    for i in range(n):
        num = [(1 + sum((z[i][e] - mu[j][e]) ** 2 for e in range(len(z[i]))) / alpha) ** (-(alpha + 1) / 2)
               for j in range(k)]
        for j in range(k):
            q[i][j] = num[j] / sum(num)
    return q


def ref_target(q):
    n, k = len(q), len(q[0])
    f = [sum(q[i][j] for i in range(n)) for j in range(k)]
    p = [[0.0] * k for _ in range(n)]
    for i in range(n):
        denom = sum(q[i][j2] ** 2 / f[j2] for j2 in range(k))
        for j in range(k):
            p[i][j] = (q[i][j] ** 2 / f[j]) / denom
    return p


def ref_kl(p, q):
    total = 0.0
    for i in range(len(p)):
        for j in range(len(p[0])):
            if p[i][j] > 0:
                total += p[i][j] * math.log(p[i][j] / q[i][j])
    return total / len(p)


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    return z, mu


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_soft_assignment_matches_loop(tiny, alpha):
    z, mu = tiny
    q = soft_assignment(z, mu, alpha)
    np.testing.assert_allclose(q.numpy(), ref_soft(z.tolist(), mu.tolist(), alpha), rtol=1e-10)
    np.testing.assert_allclose(q.sum(1).numpy(), 1.0)


def test_target_distribution_matches_loop(tiny):
    q = soft_assignment(*tiny)
    np.testing.assert_allclose(target_distribution(q).numpy(), ref_target(q.tolist()), rtol=1e-10)


def test_joint_target_is_mean_of_sharpened(tiny):
    z, mu = tiny
    q, r = soft_assignment(z, mu), soft_assignment(z * 0.5 + 1, mu)
    pq, pr = ref_target(q.tolist()), ref_target(r.tolist())
    ref = [[(a + b) / 2 for a, b in zip(ra, rb)] for ra, rb in zip(pq, pr)]
    np.testing.assert_allclose(joint_target([q, r]).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(joint_target([q]).numpy(), pq, rtol=1e-10)


def test_kl_terms_match_loop(tiny):
    z, mu = tiny
    q = soft_assignment(z, mu)
    p = target_distribution(q)
    assert float(kl_target(p, q)) == pytest.approx(ref_kl(p.tolist(), q.tolist()), rel=1e-10)
    assert float(kl_target(q, q)) == pytest.approx(0.0, abs=1e-12)
    # a zero in p contributes nothing (0 log 0 = 0)
    p0 = p.clone()
    p0[0] = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert float(kl_target(p0, q)) == pytest.approx(ref_kl(p0.tolist(), q.tolist()), rel=1e-10)


def test_prior_kl_and_class_prior_match_loop(tiny):
    q = soft_assignment(*tiny)
    p = target_distribution(q)
    y = torch.tensor([0, 0, 1, 3, 3, 3])
    w = class_prior(y, 4, smoothing=1.0)
    counts = [2, 1, 0, 3]
    w_ref = [(c + 1.0) / (6 + 4.0) for c in counts]
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-6)
    h = [sum(p[i][j].item() for i in range(len(p))) / len(p) for j in range(4)]
    ref = sum(h[j] * math.log(h[j] / w_ref[j]) for j in range(4))
    assert float(kl_prior(p.mean(0), w.double())) == pytest.approx(ref, rel=1e-6)


def test_supervised_ce_matches_loop(tiny):
    q = soft_assignment(*tiny)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    ref = -sum(math.log(q[i, y[i]].item()) for i in range(7)) / 7
    assert float(supervised_ce(q, y)) == pytest.approx(ref, rel=1e-10)


def test_weighted_supervised_ce_matches_loop(tiny):
    q = soft_assignment(*tiny)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    v = torch.tensor([1.0, 0.5, 0.0, 2.0, 1.0, 0.25, 1.0], dtype=torch.float64)
    ref = -sum(v[i].item() * math.log(q[i, y[i]].item()) for i in range(7)) / sum(v.tolist())
    assert float(supervised_ce(q, y, v)) == pytest.approx(ref, rel=1e-10)
    assert float(supervised_ce(q, y, torch.ones(7))) == pytest.approx(float(supervised_ce(q, y)), rel=1e-6)


def test_losses_are_batched_on_large_input():
    z, mu = torch.randn(5000, 10), torch.randn(10, 10)
    q = soft_assignment(z, mu)
    assert q.shape == (5000, 10) and torch.allclose(target_distribution(q).sum(1), torch.ones(5000))


# --------------------------------------------------------------------------------------- Hungarian mapping
def test_match_clusters_on_hand_made_confusion():
    table = np.array([[0, 9, 1],   # cluster 0 is mostly class 1
                      [8, 0, 2],   # cluster 1 -> class 0
                      [1, 1, 7]])  # cluster 2 -> class 2
    assert match_clusters(table).tolist() == [1, 0, 2]
    # greedy would give both rows 0 and 1 class 0; Hungarian picks the best one-to-one total
    table2 = np.array([[10, 9], [8, 0]])
    assert match_clusters(table2).tolist() == [1, 0]
    # more clusters than classes: one is left unmatched
    table3 = np.array([[5, 0], [0, 5], [3, 1]])
    assert match_clusters(table3).tolist() == [0, 1, -1]


def test_match_clusters_agrees_with_core_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    clusters = (y + (rng.random(200) < 0.3) * rng.integers(0, 4, 200)) % 4
    mine = match_clusters(confusion_matrix(clusters, y, 4, 4))
    theirs = hungarian_mapping(y, clusters)
    assert {j: int(c) for j, c in enumerate(mine)} == theirs


def test_cluster_class_matrix_spreads_unmatched():
    table = np.array([[5, 0], [0, 5], [3, 1], [0, 0]])
    M = cluster_class_matrix(np.array([0, 1, -1, -1]), table, 2)
    np.testing.assert_allclose(M, [[1, 0], [0, 1], [1, 0], [0.5, 0.5]])


# ------------------------------------------------------------------------------------------ collapse report
def test_collapse_detection():
    ok = collapse_report(np.repeat(np.arange(4), 25), 4)
    assert not ok["collapsed"] and ok["effective_clusters"] == pytest.approx(4.0)
    bad = collapse_report(np.r_[np.zeros(80, int), np.ones(20, int)], 4)
    assert bad["collapsed"] and bad["n_empty"] == 2 and bad["largest_fraction"] == 0.8
    assert any("empty" in r for r in bad["reasons"]) and any("80%" in r for r in bad["reasons"])


# ---------------------------------------------------------------------------------------------- config
def test_config_validation_names_parameter_value_and_allowed():
    with pytest.raises(ValidationError, match=r"'n_clusters' parameter of DEC must be None or an int >= 2. Got 1"):
        DECConfig(n_clusters=1).validate()
    with pytest.raises(ValidationError, match="'kappa'.*Got 0"):
        DECConfig(kappa=0).validate()
    with pytest.raises(ValidationError, match="'input_scaling'.*'dec', 'standard', 'none'"):
        DECConfig(input_scaling="minmax").validate()
    with pytest.raises(ValidationError, match="'parameter name'.*'n_clusters'"):
        DECConfig.from_params({"n_clusterz": 3})
    assert DECConfig.from_params({"dims": [8, 2]}).dims == (8, 2)


# ------------------------------------------------------------------------------------------------- fits
def blobs(n_per=80, d=20, k=3, seed=0, spread=1.0):
    """k Gaussian blobs in d dimensions, centres 6 apart (clearly separated), labels (n,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, d)) * 6 / math.sqrt(2)
    X = np.concatenate([c + rng.normal(0, spread, (n_per, d)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(k), n_per)


def test_unsupervised_fit_recovers_separated_blobs():
    torch.set_num_threads(1)
    X, y = blobs()
    m = MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X])
    assert cluster_acc(y, m.clusters_) > 0.95
    s = m.summary()
    assert s["iterations"] > 0 and s["delta_label_history"] and not s["collapse"]["collapsed"]
    assert m.embedding_.shape == (len(X), 4) and m.soft_.shape == (len(X), 3)
    np.testing.assert_array_equal(m.cluster([X]), m.clusters_)
    assert m.predict_proba([X]).shape == (len(X), 3)


def test_semi_supervised_on_digits_beats_or_equals_unsupervised():
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    d = load_digits()
    keep = np.isin(d.target, [0, 1, 3, 4, 7])
    X, y = (d.data[keep] / 16.0).astype(np.float32)[:450], d.target[keep][:450]
    classes = sorted(set(y.tolist()))
    cfg = DECConfig(n_clusters=5, **{**SMALL, "dims": (64, 64, 8), "pretrain_epochs": 25})
    un = MultiModalDEC(cfg).fit([X], classes=classes)
    rng = np.random.default_rng(0)
    lab = np.concatenate([rng.choice(np.flatnonzero(y == c), 6, replace=False) for c in classes])
    semi = MultiModalDEC(cfg).fit([X], labelled_idx=lab, y=y[lab], classes=classes)
    rest = np.setdiff1d(np.arange(len(y)), lab)
    acc_un = cluster_acc(y[rest], un.clusters_[rest])
    acc_semi = float((semi.predict([X])[rest] == y[rest]).mean())
    assert acc_un > 0.8
    assert acc_semi >= acc_un - 0.01
    assert semi.history_["semi_supervised"] and semi.history_["supervised_steps"] > 0
    # the mapping is recorded and maps every cluster to a class
    assert sorted(semi.summary()["mapping"].values()) == [str(c) for c in classes]


def test_two_branch_fit_and_state_round_trip():
    torch.set_num_threads(1)
    X, y = blobs(n_per=60)
    rng = np.random.default_rng(1)
    T = np.eye(3)[y] @ rng.normal(0, 3, (3, 8)) + rng.normal(0, 1, (len(y), 8))  # a second, noisier view
    m = MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X, T.astype(np.float32)])
    assert cluster_acc(y, m.clusters_) > 0.95
    assert m.transform([X, T]).shape == (len(y), 8)
    again = MultiModalDEC.from_state(m.state_dict())
    np.testing.assert_allclose(again.soft_assign([X, T]), m.soft_, atol=1e-5)
    with pytest.raises(ValidationError, match="'views'"):
        again.soft_assign([X])


def test_warm_start_skips_pretraining():
    torch.set_num_threads(1)
    X, y = blobs()
    cfg = DECConfig(n_clusters=3, **SMALL)
    first = MultiModalDEC(cfg).fit([X])
    X2 = np.concatenate([X, X[:10] + 0.01]).astype(np.float32)  # new items
    warm = MultiModalDEC(cfg).fit([X2], init_from=first.state_dict())
    assert warm.history_["warm_start"] and warm.history_["pretrain_loss"] is None
    assert cluster_acc(np.r_[y, y[:10]], warm.clusters_) > 0.95
    with pytest.raises(ValidationError, match="'init_from'.*same input dims"):
        MultiModalDEC(cfg).fit([X[:, :5]], init_from=first.state_dict())


def test_cancel_raises_job_cancelled():
    X, _ = blobs(n_per=20)
    with pytest.raises(JobCancelled):
        MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X], should_cancel=lambda: True)


def test_bad_labels_are_rejected():
    X, y = blobs(n_per=10)
    with pytest.raises(ValidationError, match="'y' parameter of DEC must hold labels of 'classes'"):
        MultiModalDEC(DECConfig(**SMALL)).fit([X], labelled_idx=[0, 1], y=["a", "z"], classes=["a", "b", "c"])


# ----------------------------------------------------------------------------------- trainer via training
TRAIN_PARAMS = {"dims": [32, 32, 4], "pretrain_epochs": 20, "batch_size": 32, "max_iter": 150,
                "update_interval": 50, "kmeans_n_init": 3}


def _project(tmp_path, labels: str | None):
    from core.io.ingest import import_folder
    from core.store.project_store import Store
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    src = digits_folder(tmp_path / "src", per_class=12)
    import_folder(store, src, labels_from_folders=labels, annotator="ann")
    return store


def test_trainer_is_registered_and_label_free():
    from core.models import LABEL_FREE, MODELS

    assert "dec" in MODELS and "dec" in LABEL_FREE


def test_trainer_publishes_with_zero_labels_then_warm_starts(tmp_path):
    from core.models.training import load_run_arrays, train_model

    torch.set_num_threads(1)
    store = _project(tmp_path, "reference")  # reference labels only: nobody confirmed anything
    rid = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    run = store.run(rid)
    dec = run["metrics"]["dec"]
    assert run["n_labelled"] == 0 and dec["label_source"].startswith("none")
    assert set(dec) >= {"mapping", "confusion", "collapse", "iterations", "delta_label_history", "pretrain_loss"}
    arrays = load_run_arrays(store, run)
    assert arrays["proba"].shape == (36, 3) and arrays["embeddings"].shape == (36, 4)
    np.testing.assert_allclose(arrays["proba"].sum(1), 1.0, atol=1e-5)
    assert cluster_acc(np.repeat([0, 1, 2], 12), arrays["clusters"]) > 0.8  # digits 0/1/2 separate easily
    assert (store.run_dir(run) / "dec_state.npz").is_file()
    # second run: same views and config -> warm start, no pretraining
    rid2 = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    dec2 = store.run(rid2)["metrics"]["dec"]
    assert dec2["warm_start"] and dec2["warm_start_reason"] == f"from run {rid}" and dec2["pretrain_loss"] is None
    # a changed architecture trains from scratch and says why
    rid3 = train_model(store, "dec", params={**TRAIN_PARAMS, "dims": [16, 4]}, device="cpu", project_map=False)
    dec3 = store.run(rid3)["metrics"]["dec"]
    assert not dec3["warm_start"] and "dims" in dec3["warm_start_reason"]


def test_trainer_semi_supervised_maps_clusters_to_labels(tmp_path):
    from core.models.training import train_model

    torch.set_num_threads(1)
    store = _project(tmp_path, "initial")
    rid = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    run = store.run(rid)
    dec = run["metrics"]["dec"]
    assert run["n_labelled"] == 36 and dec["semi_supervised"]
    assert dec["confusion"]["cols"] == ["0", "1", "2"] and np.array(dec["confusion"]["counts"]).sum() == 36
    preds = {r["item_id"]: r["label"] for r in store.predictions(rid)}
    truth = dict(zip(*store.confirmed_labels()))
    assert np.mean([preds[i] == truth[i] for i in truth]) > 0.9


def test_trainer_rejects_unknown_param(tmp_path):
    from core.models.training import train_model

    store = _project(tmp_path, None)
    with pytest.raises(ValidationError, match="'parameter name' parameter of DEC.*'n_clusters'"):
        train_model(store, "dec", params={"n_cluster": 3}, device="cpu", project_map=False)


def test_idec_keeps_reconstruction_and_clusters():
    torch.set_num_threads(1)
    X, y = blobs(n_per=50)
    m = MultiModalDEC(DECConfig(n_clusters=3, idec=True, **SMALL)).fit([X])
    assert cluster_acc(y, m.clusters_) > 0.95 and m.history_["iterations"] > 0


def test_prior_source_auto_uses_uniform_when_labels_miss_classes():
    torch.set_num_threads(1)
    X, y = blobs(n_per=50)
    one_class = np.flatnonzero(y == 0)[:12]  # labels confirmed in file order: all of class 0
    m = MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X], labelled_idx=one_class, y=y[one_class],
                                                            classes=[0, 1, 2])
    prior = m.history_["prior"]
    assert prior["source"] == "uniform" and "1, 2" in prior["reason"]
    assert prior["w"] == pytest.approx([1 / 3] * 3, abs=1e-4)
    assert cluster_acc(y, m.clusters_) > 0.95 and not m.collapse_["collapsed"]
    seed_rule = MultiModalDEC(DECConfig(n_clusters=3, prior_source="labels", **SMALL)).fit(
        [X], labelled_idx=one_class, y=y[one_class], classes=[0, 1, 2])
    assert seed_rule.history_["prior"]["source"] == "labels"
    assert seed_rule.history_["prior"]["w"][0] == pytest.approx(13 / 15, abs=1e-4)  # (12 + 1) / (12 + 3)
    every = np.concatenate([np.flatnonzero(y == c)[:3] for c in range(3)])
    m3 = MultiModalDEC(DECConfig(n_clusters=3, **{**SMALL, "max_iter": 0})).fit(
        [X], labelled_idx=every, y=y[every], classes=[0, 1, 2])
    assert m3.history_["prior"]["source"] == "labels"


def test_sample_weight_zero_ignores_wrong_labels_and_bad_weights_are_refused():
    torch.set_num_threads(1)
    X, y = blobs(n_per=50)
    good = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(3)])
    wrong = np.flatnonzero(y == 1)[5:15]  # class-1 items labelled 0 ...
    lab = np.concatenate([good, wrong])
    labels = np.concatenate([y[good], np.zeros(len(wrong), int)])
    weight = np.concatenate([np.ones(len(good)), np.zeros(len(wrong))])  # ... with no confidence at all
    m = MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X], labelled_idx=lab, y=labels, classes=[0, 1, 2],
                                                            sample_weight=weight)
    assert m.history_["sample_weighted"]
    assert float((m.predict([X]) == y).mean()) > 0.95
    with pytest.raises(ValidationError, match="'sample_weight'.*one weight per labelled row"):
        MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X], labelled_idx=good, y=y[good], sample_weight=[1.0])
    with pytest.raises(ValidationError, match="'sample_weight'.*finite weights >= 0"):
        MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X], labelled_idx=good, y=y[good],
                                                          sample_weight=-np.ones(len(good)))


def test_umap_gmm_initial_partition_and_its_fallback():
    torch.set_num_threads(1)
    X, y = blobs(n_per=50)
    m = MultiModalDEC(DECConfig(n_clusters=3, init_method="umap_gmm", **SMALL)).fit([X])
    assert m.history_["init"]["method"] == "umap_gmm"
    assert cluster_acc(y, m.init_clusters_) > 0.95 and cluster_acc(y, m.clusters_) > 0.95
    few = MultiModalDEC(DECConfig(n_clusters=3, init_method="umap_gmm", **SMALL)).fit([X[::5]])
    assert few.history_["init"] == {"method": "kmeans", "reason": "only 30 items (umap_gmm needs 50)"}


@pytest.mark.parametrize("field,value,allowed", [("pretrain_dropout", 1.0, "a number in [0, 1)"),
                                                 ("init_method", "spectral", "'kmeans', 'umap_gmm'"),
                                                 ("weight_init", "he", "'glorot', 'torch'"),
                                                 ("prior_source", "votes", "'auto', 'labels', 'uniform'")])
def test_new_config_fields_are_validated(field, value, allowed):
    with pytest.raises(ValidationError, match=f"'{field}'.*{value}") as err:
        DECConfig(**{field: value}).validate()
    assert allowed.split(",")[0] in str(err.value)


def test_state_dict_is_a_snapshot_not_a_view_of_live_weights():
    torch.set_num_threads(1)
    X, _ = blobs(n_per=30)
    m = MultiModalDEC(DECConfig(n_clusters=3, **SMALL)).fit([X])
    start = m.init_state_["weights"]["branches.0.centroids"].copy()
    before = m.state_dict()
    with torch.no_grad():
        for p in m.net_.parameters():
            p.add_(1.0)
    assert all(np.allclose(before["weights"][k], v.detach().numpy() - 1.0, atol=1e-5)
               for k, v in m.net_.state_dict().items())
    # the pretrained start kept for init_from is the k-means start, not the clustered end
    assert not np.allclose(start, m.state_dict()["weights"]["branches.0.centroids"] - 1.0)
