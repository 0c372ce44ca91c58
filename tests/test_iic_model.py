"""IIC model family: config validation, the trainer through the train job (labels, no labels, warm start,
calibration), cancellation, the collapse flag and its advice, the small CNN on images, and the CE mapping."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import JobCancelled, ValidationError
from core.evaluation.metrics import cluster_acc
from core.models.iic.config import IICConfig
from core.models.iic.model import IICModel

#: a tiny CPU configuration for 36 digits
SMALL = {"epochs": 15, "batch_size": 32, "hidden": 64, "embed_dim": 16, "n_sub_heads": 2, "n_neighbours": 5,
         "overcluster_factor": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _project(tmp_path, labels: str | None, *, size: int = 16):
    from core.io.ingest import import_folder
    from core.store.project_store import Store
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    src = digits_folder(tmp_path / "src", per_class=12, size=size)
    import_folder(store, src, labels_from_folders=labels, annotator="ann")
    return store


def blobs(n_per: int = 40, k: int = 3, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (k, d))
    X = np.vstack([c + rng.normal(0, 1, (n_per, d)) for c in centres]).astype(np.float32)
    return X, np.repeat(np.arange(k), n_per)


# ------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field,value,allowed", [
    ("lamb", 0, "a number > 0"), ("k", 1, "None or an int >= 2"), ("backbone", "vgg", "'auto', 'mlp'"),
    ("pairs", "both", "'auto', 'neighbours', 'augment'"), ("overcluster_factor", 1, "0 (no overclustering head)"),
    ("calibration_fraction", 1.0, "a number in [0, 1)"), ("n_sub_heads", 0, "an int >= 1"),
    ("epochs", 2.5, "None or an int >= 1"), ("time_budget_s", -1, "None or a number > 0")])
def test_config_validation_names_the_bad_field(field, value, allowed):
    with pytest.raises(ValidationError, match=f"'{field}' parameter of IIC") as err:
        IICConfig(**{field: value}).validate()
    assert allowed in str(err.value) and str(value) in str(err.value)


def test_from_params_refuses_unknown_names_and_resolves_per_backbone():
    with pytest.raises(ValidationError, match="'parameter name' parameter of IIC.*'overcluster_factor'"):
        IICConfig.from_params({"overcluster": 3})
    mlp = IICConfig.from_params({}).validate().resolved(10)
    assert (mlp.backbone, mlp.pairs, mlp.k, mlp.k_over) == ("mlp", "neighbours", 10, 50)
    cnn = IICConfig.from_params({"backbone": "small_cnn", "k": 4}).resolved(10)
    assert (cnn.pairs, cnn.k, cnn.image_size, cnn.hflip) == ("augment", 4, 28, 0.0)
    assert IICConfig(backbone="resnet18", overcluster_factor=0).resolved(3).k_over == 0


def test_registered_label_free_and_cli_takes_model_names_from_the_registry():
    from core.models import LABEL_FREE, MODELS, get_trainer

    assert "iic" in MODELS and "iic" in LABEL_FREE
    with pytest.raises(ValidationError, match="'iic'"):
        get_trainer("iicc")


# ------------------------------------------------------------------------------------------ the trainer
def test_trainer_with_labels_publishes_proba_clusters_overclusters_and_calibration(tmp_path):
    from core.models.training import load_run_arrays, train_model

    store = _project(tmp_path, "initial")
    rid = train_model(store, "iic", params=SMALL, device="cpu", project_map=False)
    run = store.run(rid)
    iic = run["metrics"]["iic"]
    assert run["n_labelled"] == 36 and run["metrics"]["suggests_classes"] is True
    assert set(iic) >= {"k", "k_over", "backbone", "pairs", "sub_head_losses", "best_sub_head", "history", "mapping",
                        "confusion", "collapse", "warm_start", "warm_start_reason", "seconds"}
    assert (iic["k"], iic["k_over"], iic["backbone"], iic["pairs"]) == (3, 6, "mlp", "neighbours")
    assert len(iic["sub_head_losses"]["main"]) == 2 and len(iic["sub_head_losses"]["over"]) == 2
    assert iic["best_sub_head"] == int(np.argmin(iic["sub_head_losses"]["main"]))
    assert len(iic["history"]) == 15 and {"main_loss", "over_loss", "ce", "size_entropy", "largest_share",
                                          "effective_clusters"} <= set(iic["history"][0])
    assert iic["confusion"]["cols"] == ["0", "1", "2"] and iic["confusion"]["row_name"] == "cluster"
    assert isinstance(iic["collapse"]["advice"], list) and not iic["warm_start"]
    arrays = load_run_arrays(store, run)
    assert arrays["proba"].shape == (36, 3) and arrays["embeddings"].shape == (36, 16)
    np.testing.assert_allclose(arrays["proba"].sum(1), 1.0, atol=1e-5)
    d = store.run_dir(run)
    over = np.load(d / "overclusters.npy")
    assert over.shape == (36,) and over.dtype == np.int64 and over.max() < 6
    assert (d / "iic_state.joblib").is_file()
    # the calibration split: its rows are predicted (out of the CE and the mapping), the others NaN
    oof = np.load(d / "oof_proba.npy")
    held = np.isfinite(oof).all(1)
    assert oof.shape == (36, 3) and held.sum() == iic["calibration_split"]["n_calibration"] > 0
    assert iic["calibration_split"]["n_train"] + held.sum() == 36
    assert run["metrics"]["calibration"]["status"] in ("calibrated", "unknown")


def test_trainer_with_zero_labels_publishes_clusters_only_then_warm_starts(tmp_path):
    from core.models.training import load_run_arrays, train_model

    store = _project(tmp_path, "reference")  # reference labels only: nobody confirmed anything
    rid = train_model(store, "iic", params=SMALL, device="cpu", project_map=False)
    run = store.run(rid)
    iic = run["metrics"]["iic"]
    assert run["n_labelled"] == 0 and run["metrics"]["suggests_classes"] is False
    assert run["metrics"]["calibration"]["status"] == "unknown"
    assert "no confirmed labels" in run["metrics"]["calibration"]["reason"]
    assert iic["ce"].startswith("off") and iic["warm_start_reason"] == "no previous IIC run"
    assert cluster_acc(np.repeat([0, 1, 2], 12), load_run_arrays(store, run)["clusters"]) > 0.8
    rid2 = train_model(store, "iic", params=SMALL, device="cpu", project_map=False)
    iic2 = store.run(rid2)["metrics"]["iic"]
    assert iic2["warm_start"] and iic2["warm_start_reason"] == f"from run {rid}"
    rid3 = train_model(store, "iic", params={**SMALL, "k": 4}, device="cpu", project_map=False)
    iic3 = store.run(rid3)["metrics"]["iic"]
    assert not iic3["warm_start"] and "k changed" in iic3["warm_start_reason"] and iic3["k"] == 4


def test_trainer_is_cancellable_and_reports_progress_per_epoch(tmp_path):
    from core.models.training import train_model

    store = _project(tmp_path, None)
    seen: list[dict] = []
    with pytest.raises(JobCancelled):
        train_model(store, "iic", params=SMALL, device="cpu", project_map=False, should_cancel=lambda: True)
    X, _ = blobs()
    calls = iter(range(10 ** 6))  # the first poll says go on, the next one (0.25 s later) cancels
    with pytest.raises(JobCancelled, match="IIC cancelled during epoch"):
        IICModel(IICConfig(k=3, **{**SMALL, "epochs": 10 ** 6})).fit(X, should_cancel=lambda: next(calls) > 0)
    model = IICModel(IICConfig(k=3, **{**SMALL, "epochs": 4})).fit(X, progress=seen.append)
    epochs = [p for p in seen if p["phase"] == "iic"]
    assert [p["step"] for p in epochs] == [1, 2, 3, 4] and all(p["total"] == 4 for p in epochs)
    assert len(model.history_) == 4


def test_collapsed_run_is_flagged_with_reasons_and_advice(tmp_path):
    from core.models.training import train_model

    store = _project(tmp_path, None)
    # lamb -> 0 leaves only the joint entropy to minimise: every item in one cluster is optimal
    rid = train_model(store, "iic", params={**SMALL, "lamb": 0.01, "lr": 0.05}, device="cpu", project_map=False)
    collapse = store.run(rid)["metrics"]["iic"]["collapse"]
    assert collapse["collapsed"] and collapse["reasons"] and collapse["largest_fraction"] > 0.5
    assert any("lamb" in a for a in collapse["advice"]) and any("epochs" in a for a in collapse["advice"])
    history = store.run(rid)["metrics"]["iic"]["history"]
    assert history[-1]["largest_share"] > 0.5  # degeneracy tracked per epoch
    # constant inputs cannot be told apart: collapsed too, and a healthy run gives no advice
    const = IICModel(IICConfig(k=3, **SMALL)).fit(np.ones((60, 4), np.float32))
    assert const.collapse_["collapsed"] and const.collapse_["advice"]
    X, y = blobs()
    ok = IICModel(IICConfig(k=3, **SMALL)).fit(X)
    assert not ok.collapse_["collapsed"] and ok.collapse_["advice"] == [] and cluster_acc(y, ok.clusters_) > 0.9


def test_small_cnn_with_augment_pairs_trains_on_28px_digits(tmp_path):
    from core.models.training import train_model

    store = _project(tmp_path, None, size=28)
    params = {"backbone": "small_cnn", "epochs": 2, "batch_size": 18, "n_sub_heads": 2, "embed_dim": 16, "cnn_width": 8,
              "overcluster_factor": 2}
    rid = train_model(store, "iic", params=params, device="cpu", project_map=False)
    run = store.run(rid)
    iic = run["metrics"]["iic"]
    assert (iic["backbone"], iic["pairs"], iic["epochs_run"]) == ("small_cnn", "augment", 2)
    assert np.isfinite(iic["history"][-1]["main_loss"]).all() and iic["n_media_failures"] == 0
    state = __import__("joblib").load(store.run_dir(run) / "iic_state.joblib")
    assert state["input_shape"] == [1, 28, 28]
    assert np.load(store.run_dir(run) / "embeddings.npy").shape == (36, 16)
    # the restored model predicts the same assignments from the decoded images
    from core.models.pseudo_label.model import decode_images

    model = IICModel.from_state(state)
    data = decode_images([it.path for it in store.items()], 28)
    assert model.predict_proba(data).shape == (36, 3)


def test_semi_supervised_ce_maps_clusters_to_labels(tmp_path):
    from core.models.training import train_model

    store = _project(tmp_path, "initial")
    rid = train_model(store, "iic", params={**SMALL, "calibration_fraction": 0.0}, device="cpu", project_map=False)
    run = store.run(rid)
    iic = run["metrics"]["iic"]
    assert iic["ce"].startswith("on") and iic["history"][-1]["ce"] is not None
    assert sorted(v for v in iic["mapping"].values()) == ["0", "1", "2"]
    preds = {r["item_id"]: r["label"] for r in store.predictions(rid)}
    truth = dict(zip(*store.confirmed_labels()))
    assert np.mean([preds[i] == truth[i] for i in truth]) > 0.9
    assert run["metrics"]["calibration"]["status"] == "unknown"  # nothing held out: confidence unknown


def test_bad_inputs_and_state_round_trip():
    X, y = blobs()
    with pytest.raises(ValidationError, match="'backbone' parameter of IIC"):
        IICModel(IICConfig(k=3, backbone="small_cnn")).fit(X)
    with pytest.raises(ValidationError, match="'y' parameter of IIC must hold labels"):
        IICModel(IICConfig(**SMALL)).fit(X, labelled_idx=[0, 1], y=["a", "z"], classes=["a", "b", "c"])
    m = IICModel(IICConfig(k=3, **SMALL)).fit(X, labelled_idx=np.arange(0, 120, 10), y=y[::10], classes=[0, 1, 2])
    back = IICModel.from_state(m.state_dict())
    np.testing.assert_allclose(back.predict_proba(X), m.soft_ @ m.cluster_class_, atol=1e-5)
    np.testing.assert_allclose(back.transform(X), m.embedding_, atol=1e-5)
    assert back.soft_assign(X, "over").shape == (120, 6)
    with pytest.raises(ValidationError, match="'inputs' parameter of IIC"):
        back.predict_proba(X[:, :4])


@pytest.mark.parametrize("backbone,shape", [("mlp", (12,)), ("small_cnn", (1, 28, 28)), ("resnet18", (3, 16, 16))])
def test_nets_give_embeddings_and_distributions_per_sub_head(backbone, shape):
    from core.models.iic.nets import build_net

    net = build_net(backbone, shape, k=4, k_over=12, n_sub_heads=3, hidden=32, embed_dim=8).eval()
    with torch.no_grad():
        main, over, z = net.heads_and_embedding(torch.rand(5, *shape))
    assert z.shape == (5, 8) and len(main) == 3 and len(over) == 3
    assert all(p.shape == (5, 4) for p in main) and all(p.shape == (5, 12) for p in over)
    torch.testing.assert_close(main[0].sum(1), torch.ones(5))
    if backbone == "resnet18":  # from scratch, with the small-image stem
        assert net.trunk.body.conv1.stride == (1, 1) and isinstance(net.trunk.body.maxpool, torch.nn.Identity)


def test_cnn_with_neighbour_pairs_from_cached_features(tmp_path):
    from core.models.pseudo_label.model import decode_images
    from tests.helpers import digits_folder

    root = digits_folder(tmp_path / "src", per_class=8, size=28)
    paths = sorted(root.glob("*/*.png"))
    y = np.array([int(p.parent.name) for p in paths])
    data = decode_images(paths + [None], 28)  # one item without a file: no rows, uniform assignment
    feats = np.vstack([np.eye(3)[y] * 5 + np.random.default_rng(0).normal(0, 0.1, (len(y), 3)), np.ones((1, 3))])
    cfg = IICConfig(k=3, backbone="small_cnn", pairs="neighbours", epochs=2, batch_size=25, n_sub_heads=2,
                    embed_dim=8, cnn_width=8, n_neighbours=3, overcluster_factor=0)
    m = IICModel(cfg).fit(data, pair_features=feats)
    assert m.info_["n_neighbours"] == 3 and m.info_["n_media_failures"] == 1 and m.overclusters_ is None
    np.testing.assert_allclose(m.soft_[-1], 1 / 3, atol=1e-6)
    assert m.soft_.shape == (25, 3) and m.embedding_.shape == (25, 8)
    with pytest.raises(ValidationError, match="'pair_features' parameter of IIC"):
        IICModel(IICConfig(k=3, backbone="small_cnn", pairs="neighbours", epochs=1)).fit(data)


def test_time_budget_stops_early_and_zero_weight_labels_are_ignored():
    X, y = blobs()
    m = IICModel(IICConfig(k=3, **{**SMALL, "epochs": 10 ** 6, "time_budget_s": 0.2})).fit(X)
    assert m.stopped_.startswith("time budget (0.2 s) after epoch") and 1 <= len(m.history_) < 10 ** 6
    good = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    wrong = np.flatnonzero(y == 1)[4:20]  # class-1 items labelled 0 ...
    lab = np.concatenate([good, wrong])
    labels = np.concatenate([y[good], np.zeros(len(wrong), int)])
    weight = np.concatenate([np.ones(len(good)), np.zeros(len(wrong))])  # ... with no confidence at all
    m = IICModel(IICConfig(k=3, **SMALL)).fit(X, labelled_idx=lab, y=labels, classes=[0, 1, 2], sample_weight=weight)
    assert float((m.predict(X) == y).mean()) > 0.95
    with pytest.raises(ValidationError, match="'sample_weight'.*one weight per labelled row"):
        IICModel(IICConfig(k=3, **SMALL)).fit(X, labelled_idx=good, y=y[good], sample_weight=[1.0])


def test_small_projects_still_make_min_steps_per_epoch():
    from core.models.iic.model import _epoch_batches

    gen = torch.Generator().manual_seed(0)
    small = _epoch_batches(36, 32, 10, gen)  # 36 items: 10 random batches of 32, not one batch an epoch
    assert len(small) == 10 and all(len(b) == 32 for b in small) and int(torch.cat(small).max()) < 36
    big = _epoch_batches(5000, 256, 10, gen)  # one permutation in 19 near-equal batches
    assert len(big) == 19 and min(len(b) for b in big) >= 256
    assert sorted(torch.cat(big).tolist()) == list(range(5000))


def test_neighbour_partners_of_multi_row_items_are_first_rows_of_neighbour_items():
    from core.models.pseudo_label.finetune import Inputs

    owner = torch.tensor([0, 0, 1, 2, 2, 2, 4])  # item 3 has no row (undecodable), items own 1-3 rows (audio)
    data = Inputs(torch.zeros(7, 3, 8, 8, dtype=torch.uint8), owner, 5, "audio", {3: "bad file"})
    feats = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.99, 0.01], [0.1, 0.9]], np.float32)  # 0~1, 2~4
    model = IICModel(IICConfig(k=2, backbone="small_cnn", pairs="neighbours", n_neighbours=1).resolved(2))
    rows = model._partners(data, feats).numpy()
    assert rows.shape == (7, 1)
    # item 0 -> item 1 (row 2); item 1 -> item 0 (first row 0); item 2 -> item 4 (row 6); item 4 -> item 2 (row 3)
    assert rows[:, 0].tolist() == [2, 2, 0, 6, 6, 6, 3]
