"""IIC model family: config validation, the trainer through the train job (labels, no labels, warm start,
calibration), cancellation, the collapse flag and its advice, the small CNN on images, and the CE mapping."""
from __future__ import annotations

import numpy as np
import pytest

from core.io.artefacts import load_artefact
import torch

from core.errors import JobCancelled, ValidationError
from core.evaluation.metrics import cluster_acc
from core.models.iic.config import IICConfig
from core.models.iic.model import IICModel

#: a tiny CPU configuration for 36 digits
SMALL = {"epochs": 15, "batch_size": 32, "hidden": 64, "embed_dim": 16, "n_sub_heads": 2, "n_neighbours": 5,
         "overcluster_factor": 2}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


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
    ("lamb", 0, "None or a number > 0"), ("k", 1, "None or an int >= 2"), ("backbone", "vgg", "'auto', 'mlp'"),
    ("pairs", "both", "'auto', 'neighbours', 'augment'"), ("overcluster_factor", 1, "0 (no overclustering head)"),
    ("calibration_fraction", 1.0, "a number in [0, 1)"), ("n_sub_heads", 0, "an int >= 1"),
    ("epochs", 2.5, "None or an int >= 1"), ("time_budget_s", -1, "None or a number > 0"),
    ("objective", "mi", "'auto', 'iic', 'scan'"), ("entropy_weight", -1, "a number >= 0"),
    ("repeats", 0, "an int >= 1"), ("augment_both", "yes", "None, True or False"),
    ("cnn_width", 0, "None or an int >= 1")])
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
    # the measured per-backbone defaults (docs/iic.md): small_cnn lamb 1.5, width 16, both sides augmented
    assert (cnn.lamb, cnn.cnn_width, cnn.augment_both, cnn.objective, cnn.repeats) == (1.5, 16, True, "iic", 1)
    assert (mlp.lamb, mlp.augment_both, mlp.objective) == (1.0, True, "scan")  # neighbour pairs: SCAN's loss
    assert IICConfig(pairs="augment").resolved(3).objective == "iic"
    mine = IICConfig(backbone="small_cnn", lamb=2.0, cnn_width=8, augment_both=False, objective="scan").resolved(3)
    assert (mine.lamb, mine.cnn_width, mine.augment_both, mine.objective) == (2.0, 8, False, "scan")


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
    assert (d / "iic_state.npz").is_file()
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
    rid = train_model(store, "iic", params={**SMALL, "objective": "iic", "lamb": 0.01, "lr": 0.05}, device="cpu",
                      project_map=False)
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
    state = load_artefact(store.run_dir(run), "iic_state")
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


def test_scan_objective_clusters_blobs_and_its_advice_names_the_entropy_weight():
    X, y = blobs()
    m = IICModel(IICConfig(k=3, objective="scan", **SMALL)).fit(X)
    assert cluster_acc(y, m.clusters_) > 0.9 and not m.collapse_["collapsed"]
    assert m.summary()["objective"] == "scan" and m.summary()["entropy_weight"] == 5.0
    # no entropy term: one cluster satisfies every pair, and the advice says what to raise
    flat = IICModel(IICConfig(k=3, objective="scan", entropy_weight=0.0, **{**SMALL, "lr": 0.05})).fit(X)
    from core.models.iic.model import collapse_advice

    report = {**flat.collapse_, "collapsed": True}
    assert any("entropy_weight" in a for a in collapse_advice(flat.config, report, 0, 3))
    assert not any("lamb" in a for a in collapse_advice(flat.config, report, 0, 3))


def test_repeats_put_each_image_several_times_in_a_batch_with_its_own_views():
    """IIC's num_dataloaders: a batch of b images holds b x repeats pairs; both sides are augmented views."""
    from core.models.pseudo_label.finetune import Inputs

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (24, 3, 12, 12), dtype=torch.uint8, generator=g)
    data = Inputs(images, torch.arange(24), 24, "image")
    cfg = IICConfig(k=2, backbone="small_cnn", epochs=1, batch_size=8, min_steps_per_epoch=1, repeats=3,
                    cnn_width=4, embed_dim=8, n_sub_heads=1, overcluster_factor=0)
    seen = []
    model = IICModel(cfg)
    original = IICModel._setup

    def spy(self, data, init_from):
        original(self, data, init_from)
        forward = self.net_.forward

        def recording(x, head="main"):
            seen.append(x.detach().clone())
            return forward(x, head)
        self.net_.forward = recording
    IICModel._setup = spy
    try:
        model.fit(data)
    finally:
        IICModel._setup = original
    train = [x for x in seen if len(x) == 2 * 8 * 3]
    assert len(train) == 3  # 24 images / 8 per batch, each batch doubled (two sides) and repeated 3 times
    x = train[0]
    a, b = x[:24], x[24:]
    assert not torch.equal(a[:8], a[8:16])  # the same 8 images, each repeat with its own random view
    assert not torch.equal(a, b)  # neither side is the plain image (augment_both)


def test_small_cnn_on_an_audio_project_trains_on_spectrogram_blocks(tmp_path):
    """Audio end to end: clips decode to log-mel blocks (several rows per clip), augmentation pairs are
    spectrogram masks / shifts, and a clip's assignment is the mean over its blocks; low and high tones split."""
    from core.io.ingest import import_source
    from core.models.training import train_model
    from core.store.project_store import Store
    from tests.helpers import tone_wav

    store = Store.create(tmp_path / "speech", modality="audio", extractor="logmel", min_votes=1,
                         labels=["low", "high"])
    src = tmp_path / "clips"
    for label, freqs in (("low", (200, 230, 260, 290, 320, 350)), ("high", (1900, 2100, 2300, 2500, 2700, 2900))):
        (src / label).mkdir(parents=True)
        for f in freqs:
            tone_wav(src / label / f"{f}.wav", freq=f, seconds=1.2)
    import_source(store, src, labels_from_folders="initial", annotator="ann")
    params = {"backbone": "small_cnn", "epochs": 4, "batch_size": 8, "n_sub_heads": 2, "embed_dim": 16,
              "cnn_width": 4, "overcluster_factor": 2, "calibration_fraction": 0.0}
    rid = train_model(store, "iic", params=params, device="cpu", project_map=False)
    run = store.run(rid)
    iic = run["metrics"]["iic"]
    assert (iic["backbone"], iic["pairs"], iic["epochs_run"], iic["n_media_failures"]) == ("small_cnn", "augment", 4, 0)
    state = load_artefact(store.run_dir(run), "iic_state")
    assert state["input_shape"][0] == 1 and len(state["input_shape"]) == 3  # one log-mel channel
    proba = np.load(store.run_dir(run) / "proba.npy")
    assert proba.shape == (12, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    names = [it.path.parent.name for it in store.items()]
    pred = np.asarray(["low", "high"])[proba.argmax(1)]
    assert float((pred == np.asarray(names)).mean()) >= 0.9  # the CE on the confirmed labels and the mapping


def test_restarts_keep_the_network_with_the_lowest_final_loss():
    X, y = blobs()
    seen = []
    m = IICModel(IICConfig(k=3, restarts=3, **{**SMALL, "epochs": 3})).fit(X, progress=seen.append)
    tried = m.info_["restarts"]["tried"]
    assert [t["seed"] for t in tried] == [0, 1, 2] and all(t["epochs_run"] == 3 for t in tried)
    kept = m.info_["restarts"]["kept"]
    assert kept == int(np.argmin([t["loss"] for t in tried]))
    assert min(m.history_[-1]["main_loss"]) == pytest.approx(tried[kept]["loss"], abs=1e-5)
    assert [p["step"] for p in seen] == list(range(1, 10)) and {p["total"] for p in seen} == {9}
    # restart 0 is the single run of the same seed, step for step
    one = IICModel(IICConfig(k=3, **{**SMALL, "epochs": 3})).fit(X)
    assert min(one.history_[-1]["main_loss"]) == pytest.approx(tried[0]["loss"], abs=1e-5)
    # a warm start trains once and says so
    warm = IICModel(IICConfig(k=3, restarts=3, **{**SMALL, "epochs": 2})).fit(X, init_from=m)
    assert len(warm.info_["restarts"]["tried"]) == 1 and "warm start" in warm.info_["restarts"]["note"]
