"""DEC's out-of-fold probabilities (issue 12): fold fits from the label-free start, calibration of DEC runs."""
from __future__ import annotations

from dataclasses import replace

from core.io.artefacts import load_artefact, save_artefact
import numpy as np
import pytest
import torch

from core.errors import ValidationError
from core.models.dec.model import DECConfig, MultiModalDEC
from core.models.dec.out_of_fold import dec_out_of_fold
from tests.test_dec import SMALL, TRAIN_PARAMS, _project


def _blobs(n_per=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(3, 6))
    X = np.vstack([c + rng.normal(0, 1.0, size=(n_per, 6)) for c in centres]).astype(np.float32)
    return X, np.repeat(["a", "b", "c"], n_per).astype(object)


@pytest.mark.slow
def test_each_fold_is_predicted_by_a_model_that_never_saw_its_labels():
    torch.set_num_threads(1)
    X, y = _blobs()
    cfg = DECConfig(n_clusters=3, **SMALL)
    model = MultiModalDEC(cfg).fit([X])
    start = model.init_state_
    lab = np.arange(0, 120, 3)  # 40 labelled rows
    oof, rec = dec_out_of_fold(cfg, [X], start, lab, y[lab], ["a", "b", "c"])
    assert rec["folds"] == 2 and rec["reason"] is None and len(rec["seconds"]) == 2
    assert oof.shape == (40, 3) and np.isfinite(oof).all()
    np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-5)
    # replay fold 0 by hand: the same start, the labels of the other fold only
    from core.models.calibration import stratified_parts

    part = stratified_parts(np.array([{"a": 0, "b": 1, "c": 2}[v] for v in y[lab]]), 2, cfg.seed)
    held = part == 0
    refit = MultiModalDEC(replace(cfg, oof_folds=0)).fit([X], labelled_idx=lab[~held], y=y[lab][~held],
                                                         classes=["a", "b", "c"], init_from=start)
    expected = refit.soft_[lab[held]] @ refit.cluster_class_
    np.testing.assert_allclose(oof[held], expected, atol=1e-5)


def test_too_few_labels_fit_no_fold_and_say_why():
    X, y = _blobs(n_per=10)
    cfg = DECConfig(n_clusters=3, **SMALL)
    lab = np.array([0, 1, 10, 11, 20, 21])
    oof, rec = dec_out_of_fold(cfg, [X], {}, lab, y[lab], ["a", "b", "c"])
    assert oof is None and "too few labels" in rec["reason"]
    off, rec0 = dec_out_of_fold(replace(cfg, oof_folds=0), [X], {}, lab, y[lab], ["a", "b", "c"])
    assert off is None and "oof_folds=0" in rec0["reason"]


def test_one_fold_is_rejected_with_the_allowed_values():
    with pytest.raises(ValidationError, match="oof_folds.*0 \\(no out-of-fold fits\\) or an int >= 2"):
        DECConfig(oof_folds=1).validate()


def test_a_dec_run_is_calibrated_and_its_warm_start_keeps_the_label_free_start(tmp_path):
    from core.models.training import train_model

    torch.set_num_threads(1)
    store = _project(tmp_path, "initial")  # 36 confirmed labels over 3 classes
    rid = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    run = store.run(rid)
    cal, dec = run["metrics"]["calibration"], run["metrics"]["dec"]
    assert dec["out_of_fold"]["folds"] == 2 and dec["out_of_fold"]["reason"] is None
    assert cal["status"] == "calibrated" and cal["n"] == 36 and cal["ece_before"] is not None
    d = store.run_dir(run)
    oof = np.load(d / "oof_proba.npy")
    assert oof.shape == (36, 3) and np.isfinite(oof).all()
    assert (d / "oof_proba_published.npy").exists() and (d / "proba_uncalibrated.npy").exists()
    state = load_artefact(d, "dec_state")
    assert state["label_free_start"]["mapping"] is None  # made before any label was used
    # the next run warm-starts and still fits its folds from that start
    rid2 = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    run2 = store.run(rid2)
    assert run2["metrics"]["dec"]["warm_start"] and run2["metrics"]["calibration"]["status"] == "calibrated"
    # a state from before calibration (no label-free start): the run stands, its confidence unknown, and why
    old = load_artefact(store.run_dir(run2), "dec_state")
    old.pop("label_free_start")
    save_artefact(store.run_dir(run2), "dec_state", old)
    rid3 = train_model(store, "dec", params=TRAIN_PARAMS, device="cpu", project_map=False)
    cal3 = store.run(rid3)["metrics"]["calibration"]
    assert cal3["status"] == "unknown" and "warm_start=False" in cal3["reason"]


def test_pseudo_labels_are_stored_with_their_calibrated_confidence():
    from core.models.training import calibrated_pseudo_labels

    proba = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    out = calibrated_pseudo_labels([{"row": 1, "label": "b", "confidence": 0.999, "round": 1}], proba, ["a", "b"])
    assert out[0]["confidence"] == pytest.approx(0.8) and out[0]["raw_confidence"] == 0.999
