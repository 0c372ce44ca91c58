"""Calibration: ECE / Brier / reliability against loops written from their definitions, temperature scaling on a
known miscalibration, the calibrator's rules and input checks, and the record a classifier run publishes."""
from __future__ import annotations

import numpy as np
import pytest

from core.errors import ValidationError
from core.models import calibration as cal
from tests.helpers import open_page


def _random_proba(rng, m, k, sharp=1.0):
    z = rng.normal(size=(m, k)) * sharp
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _ece_loop(p, y, n_bins):
    """ECE straight from its definition: bins (lo, hi], weight |B|/m, |acc - conf|."""
    m, total = len(y), 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        rows = [i for i in range(m) if (lo < p[i].max() <= hi) or (b == 0 and p[i].max() == 0)]
        if rows:
            acc = sum(int(np.argmax(p[i]) == y[i]) for i in rows) / len(rows)
            conf = sum(p[i].max() for i in rows) / len(rows)
            total += len(rows) / m * abs(acc - conf)
    return total


def test_ece_brier_and_reliability_match_their_definitions():
    rng = np.random.default_rng(0)
    p = _random_proba(rng, 300, 4, sharp=2.0)
    y = rng.integers(0, 4, 300)
    for n_bins in (1, 5, 15):
        assert cal.ece(p, y, n_bins) == pytest.approx(_ece_loop(p, y, n_bins), abs=1e-12)
    brier = sum(sum((p[i, j] - (j == y[i])) ** 2 for j in range(4)) for i in range(300)) / 300
    assert cal.brier(p, y) == pytest.approx(brier, abs=1e-12)
    t = cal.reliability_table(p, y, 10)
    assert len(t["edges"]) == 11 and sum(t["count"]) == 300
    for b in range(10):
        rows = [i for i in range(300) if b / 10 < p[i].max() <= (b + 1) / 10]
        assert t["count"][b] == len(rows)
        if rows:
            assert t["confidence"][b] == pytest.approx(np.mean([p[i].max() for i in rows]))
            assert t["accuracy"][b] == pytest.approx(np.mean([np.argmax(p[i]) == y[i] for i in rows]))
        else:
            assert t["confidence"][b] is None and t["accuracy"][b] is None
    # perfect one-hot predictions: no calibration error, no Brier loss
    onehot = np.eye(4)[y]
    assert cal.ece(onehot, y) == 0.0 and cal.brier(onehot, y) == 0.0


def _miscalibrated(seed, m=2000, k=5, factor=3.0):
    """Labels drawn from softmax(z); the model reports softmax(factor * z): over-confident by a known factor."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(m, k)) * 1.5
    true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in true])
    reported = np.exp(factor * z) / np.exp(factor * z).sum(1, keepdims=True)
    return reported, y, z


def test_temperature_scaling_recovers_the_known_factor_and_lowers_ece():
    p, y, z = _miscalibrated(1)
    t = cal.fit_temperature(p, y)
    assert t == pytest.approx(3.0, rel=0.15)
    assert cal.fit_temperature(3.0 * z, y, logits=True) == pytest.approx(t, rel=0.01)  # p clipped at EPS
    # measured on fresh draws of the same model: the map learned on one sample generalises
    p2, y2, _ = _miscalibrated(2)
    before, after = cal.ece(p2, y2), cal.ece(cal.apply_temperature(p2, t), y2)
    assert before > 0.1 and after < before / 3
    assert cal.brier(cal.apply_temperature(p2, t), y2) < cal.brier(p2, y2)
    # ranking kept: temperature scaling never changes the predicted class
    assert (cal.apply_temperature(p2, t).argmax(1) == p2.argmax(1)).all()


def test_calibrator_chooses_its_method_by_the_number_of_labels():
    p, y, _ = _miscalibrated(3, m=1000, k=4)
    c = cal.Calibrator().fit(p, y)
    assert c.status_ == "calibrated" and c.method_ == "isotonic"  # >= 50 labels per class
    out = c.transform(p)
    np.testing.assert_allclose(out.sum(1), 1.0)
    small = cal.Calibrator().fit(p[:60], y[:60])
    assert small.status_ == "calibrated" and small.method_ == "temperature"
    assert small.temperature_ > 1.5
    # too few: nothing fitted, probabilities left as they are, and a reason
    few = cal.Calibrator().fit(p[:12], y[:12])
    assert few.status_ == "unknown" and "too few labels" in few.reason_
    np.testing.assert_array_equal(few.transform(p[:5]), p[:5])
    one = np.array([0] * 30 + [1])
    lone = cal.Calibrator().fit(np.eye(2)[one], one)
    assert lone.status_ == "unknown" and "per class" in lone.reason_
    # a labelled class with no out-of-fold row blocks calibration too
    y2 = np.array([0, 1] * 15)
    assert cal.Calibrator().fit(np.eye(3)[y2], y2, labelled_classes=np.array([0, 1, 2])).status_ == "unknown"


def test_a_class_without_probability_keeps_zero_after_temperature_scaling():
    rng = np.random.default_rng(4)
    p = np.zeros((50, 3))
    p[:, :2] = _random_proba(rng, 50, 2, sharp=3.0)
    out = cal.apply_temperature(p, 4.0)
    assert (out[:, 2] == 0).all() and np.allclose(out.sum(1), 1.0)


@pytest.mark.parametrize("proba, y, word", [
    (np.ones(4), [0, 0, 0, 0], "proba"),
    (np.array([[0.5, 0.5], [np.nan, 0.5]]), [0, 1], "proba"),
    (np.array([[0.9, 0.9], [0.5, 0.5]]), [0, 1], "proba"),
    (np.array([[0.5, 0.5], [0.5, 0.5]]), [0, 2], "y"),
    (np.array([[0.5, 0.5], [0.5, 0.5]]), [0], "y"),
    (np.array([[0.5, 0.5], [0.5, 0.5]]), ["a", "b"], "y"),
])
def test_bad_input_is_refused_naming_the_parameter(proba, y, word):
    for fn in (cal.ece, cal.brier, lambda p, t: cal.Calibrator().fit(p, t), cal.fit_temperature):
        with pytest.raises(ValidationError, match=f"'{word}'"):
            fn(proba, np.asarray(y))


def test_bad_configuration_is_refused():
    with pytest.raises(ValidationError, match="'method'"):
        cal.CalibrationConfig(method="platt-ish")
    with pytest.raises(ValidationError, match="'min_total'"):
        cal.CalibrationConfig(min_total=0)
    with pytest.raises(ValidationError, match="'n_bins'"):
        cal.ece(np.eye(2), np.array([0, 1]), n_bins=0)
    with pytest.raises(ValidationError, match="not fitted"):
        cal.Calibrator().transform(np.eye(2))


def test_report_after_is_cross_fitted_not_in_sample():
    """ece_after is measured on rows the map did not see: an isotonic map fitted on noise cannot reach 0."""
    rng = np.random.default_rng(5)
    p = _random_proba(rng, 400, 2, sharp=2.0)
    y = rng.integers(0, 2, 400)  # labels unrelated to the probabilities
    c, rec = cal.calibration_report(p, y, config=cal.CalibrationConfig(method="isotonic"))
    in_sample = cal.ece(c.transform(p), y)
    assert rec["status"] == "calibrated" and rec["method"] == "isotonic"
    assert rec["ece_after"] > in_sample
    assert set(rec) == set(cal.unknown_record("x"))


def _digits_project(tmp_path, n_labelled_per_class, *, per_class=20):
    from core.io.ingest import import_folder
    from core.store.project_store import Store
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "projects" / "proj", modality="image", extractor="pixels_pca", min_votes=1)
    import_folder(store, digits_folder(tmp_path / "src", per_class=per_class), labels_from_folders="reference")
    _label(store, n_labelled_per_class)
    return store


def _label(store, n_per_class, start=0):
    ref = store.reference_labels()
    by_class: dict = {}
    for i in sorted(ref):
        by_class.setdefault(ref[i], []).append(i)
    store.annotate_many([(i, ref[i]) for ids in by_class.values() for i in ids[start:n_per_class]],
                        annotator="alice")


def test_a_classifier_run_records_its_calibration(tmp_path):
    from core.models.training import train_model

    store = _digits_project(tmp_path, 15)
    rid = train_model(store, "classifier", device="cpu", project_map=False,
                      params={"families": ["knn"], "knn_k": [3, 5]})
    rec = store.run(rid)["metrics"]["calibration"]
    assert rec["status"] == "calibrated" and rec["method"] == "temperature" and rec["reason"] is None
    assert rec["n"] == 45 and rec["temperature"] > 0
    for key in ("ece_before", "ece_after", "brier_before", "brier_after"):
        assert 0 <= rec[key] <= 2
    assert sum(rec["reliability"]["count"]) == 45
    # the published probabilities are the calibrated ones
    run = store.run(rid)
    proba = np.load(store.run_dir(run) / "proba.npy")
    raw = np.load(store.run_dir(run) / "proba_uncalibrated.npy")
    np.testing.assert_allclose(proba, cal.apply_temperature(raw, rec["temperature"]), atol=1e-5)
    oof_cal = np.load(store.run_dir(run) / "oof_proba_calibrated.npy")  # cross-fitted: what ece_after measured
    ref = store.reference_labels()
    train_ids = np.load(store.run_dir(run) / "train_item_ids.npy")
    y = np.array([run["classes"].index(ref[int(i)]) for i in train_ids])
    assert cal.ece(oof_cal, y) == pytest.approx(rec["ece_after"])
    conf = {r["item_id"]: r["confidence"] for r in store.predictions(rid)}
    ids = np.load(store.run_dir(run) / "item_ids.npy")
    assert conf[int(ids[0])] == pytest.approx(float(proba[0].max()), abs=1e-5)


def test_a_run_with_too_few_labels_says_its_calibration_is_unknown(tmp_path):
    from core.models.training import train_model

    store = _digits_project(tmp_path, 3)
    rid = train_model(store, "classifier", device="cpu", project_map=False,
                      params={"families": ["knn"], "knn_k": [1]})
    rec = store.run(rid)["metrics"]["calibration"]
    assert rec["status"] == "unknown" and "too few labels" in rec["reason"]
    assert rec["ece_after"] is None and rec["temperature"] is None


def test_train_page_run_history_shows_ece_and_calibration_status(tmp_path, monkeypatch):
    from pathlib import Path

    from core.models.training import train_model

    root = Path(__file__).resolve().parents[1]
    store = _digits_project(tmp_path, 3)
    params = {"families": ["knn"], "knn_k": [1, 3]}
    train_model(store, "classifier", device="cpu", project_map=False, params=params)
    _label(store, 15, start=3)
    rid = train_model(store, "classifier", device="cpu", project_map=False, params=params)
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(tmp_path / "projects"))
    monkeypatch.chdir(root)
    at = open_page("pages/train.py")
    df = next(d.value for d in at.dataframe if "ECE" in d.value.columns)
    by_run = df.set_index("run")
    assert by_run.loc[rid, "calibration"] == "calibrated (temperature)"
    assert by_run.loc[rid, "ECE"] == pytest.approx(store.run(rid)["metrics"]["calibration"]["ece_after"])
    older = [r for r in by_run.index if r != rid][0]
    assert by_run.loc[older, "calibration"] == "unknown" and np.isnan(by_run.loc[older, "ECE"])


def test_a_family_without_out_of_sample_predictions_records_unknown():
    from core.models.context import TrainOutput
    from core.models.training import calibrate_output

    proba = np.full((4, 2), 0.5, dtype=np.float32)
    out, rec, oof, _ = calibrate_output(TrainOutput(proba=proba, config={}, metrics={}), np.array(["a", "b"]), ["a", "b"])
    assert rec["status"] == "unknown" and rec["reason"] == "the family gives no out-of-sample predictions"
    assert oof is None and out is not None and np.array_equal(out, proba)


def test_pseudo_label_head_run_is_calibrated_on_its_validation_rows(tmp_path):
    from core.models.training import train_model

    store = _digits_project(tmp_path, 40, per_class=50)
    rid = train_model(store, "pseudo_label_head", device="cpu", project_map=False,
                      params={"rounds": 1, "max_epochs": 10})
    run = store.run(rid)
    rec, m = run["metrics"]["calibration"], run["metrics"]
    assert m["oof_source"] == "validation split"
    assert rec["status"] == "calibrated" and rec["n"] == m["n_val"] == 24
    oof = np.load(store.run_dir(run) / "oof_proba.npy")
    assert oof.shape == (120, 3) and np.isfinite(oof).all(1).sum() == 24


def test_unusable_out_of_fold_rows_leave_the_run_standing_with_unknown_calibration():
    from core.models.context import TrainOutput
    from core.models.training import calibrate_output

    proba = np.full((4, 2), 0.5, dtype=np.float32)
    oof = np.full((30, 2), 0.9, dtype=np.float32)  # rows summing to 1.8
    out, rec, _, _ = calibrate_output(TrainOutput(proba=proba, config={}, metrics={}, oof_proba=oof),
                                   np.array(["a", "b"] * 15), ["a", "b"])
    assert rec["status"] == "unknown" and "cannot be used" in rec["reason"] and np.array_equal(out, proba)
