"""Estimated precision of pseudo-labels (core.evaluation.precision) and the Pseudo-labels page's use of it.

The estimate at a threshold is the accuracy of the out-of-fold (OOF) rows at or above it. On a fixture whose
unlabelled pool has known labels it must match the precision realised on the pool within 3 points (2,000
labelled rows, thresholds with >= 200 OOF rows above), and the same estimate from in-sample (training)
probabilities must not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.errors import ValidationError
from core.evaluation.precision import (estimate_precision, oof_confidence, reliability_table,
                                       threshold_for_precision, wilson_interval)
from core.store.project_store import Store
from tests.helpers import open_page

ROOT = Path(__file__).resolve().parents[1]
TOL = 0.03


@pytest.fixture(scope="module")
def forest():
    """A random forest on 2,000 labelled rows (8 % label noise): OOF, in-sample and pool confidences."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_predict

    X, y = make_classification(n_samples=22_000, n_features=20, n_informative=6, n_classes=3, flip_y=0.08,
                               class_sep=1.0, random_state=0)
    Xl, yl, Xp, yp = X[:2000], y[:2000], X[2000:], y[2000:]
    make = lambda: RandomForestClassifier(n_estimators=60, min_samples_leaf=1, random_state=0, n_jobs=1)  # noqa: E731
    oof = cross_val_predict(make(), Xl, yl, cv=5, method="predict_proba")
    model = make().fit(Xl, yl)
    ins, pool = model.predict_proba(Xl), model.predict_proba(Xp)
    classes = ["a", "b", "c"]
    names = np.array(classes, dtype=object)
    return {"oof": oof_confidence(oof, classes, names[yl]), "ins": oof_confidence(ins, classes, names[yl]),
            "pool": (pool.max(1), pool.argmax(1) == yp)}


def _realised(pool, t):
    conf, ok = pool
    return float(ok[conf >= t].mean())


@pytest.mark.parametrize("t", [0.5, 0.6, 0.7, 0.8])
def test_oof_estimate_matches_realised_precision(forest, t):
    est = estimate_precision(*forest["oof"], t)
    assert est.status == "estimated" and est.n >= 200
    assert abs(est.precision - _realised(forest["pool"], t)) <= TOL
    assert est.lower <= est.precision <= est.upper


def test_in_sample_estimate_is_too_high(forest):
    # the same estimator on training probabilities: over-confident, misses the realised precision
    misses = [t for t in (0.6, 0.7, 0.8) if
              estimate_precision(*forest["ins"], t).precision - _realised(forest["pool"], t) > TOL]
    assert misses == [0.6, 0.7, 0.8]


def test_threshold_for_target_holds_on_the_pool(forest):
    # 8 % of the labels are noise: 90 % is reachable, 95 % is not
    choice = threshold_for_precision(*forest["oof"], 0.90, min_count=50)
    assert choice.threshold is not None and choice.estimate.lower >= 0.90
    assert _realised(forest["pool"], choice.threshold) >= 0.90 - TOL
    assert threshold_for_precision(*forest["oof"], 0.95, min_count=50).threshold is None
    loose = threshold_for_precision(*forest["oof"], 0.90, criterion="estimate", min_count=50)
    assert loose.threshold <= choice.threshold  # the point estimate accepts at least as many


def test_threshold_by_hand():
    conf = np.array([0.99, 0.95, 0.9, 0.9, 0.8, 0.6])
    ok = np.array([True, True, True, False, True, False])
    c = threshold_for_precision(conf, ok, 0.75, criterion="estimate")
    assert c.threshold == 0.8 and c.estimate.n == 5 and c.estimate.correct == 4  # 0.6 -> 4/6 < 0.75
    assert threshold_for_precision(conf, ok, 1.0, criterion="estimate").threshold == 0.95
    none = threshold_for_precision(conf, ok, 0.99)  # 2/2 right: Wilson lower bound 0.34
    assert none.threshold is None and "no threshold reaches" in none.reason


def test_unknown_above_the_highest_confidence_and_without_rows():
    est = estimate_precision(np.array([0.7, 0.8]), np.array([True, False]), 0.9)
    assert est.status == "unknown" and est.precision is None and est.n == 0 and "0.800" in est.reason
    assert estimate_precision(np.zeros(0), np.zeros(0, bool), 0.5).status == "unknown"
    assert threshold_for_precision(np.zeros(0), np.zeros(0, bool), 0.9).threshold is None


def test_wilson_and_reliability():
    lo, hi = wilson_interval(95, 100)
    assert 0.88 < lo < 0.9 and 0.97 < hi < 0.99
    rows = reliability_table(np.array([0.05, 0.95, 1.0, 0.92]), np.array([False, True, True, False]), 10)
    assert len(rows) == 10 and rows[0]["count"] == 1 and rows[9]["count"] == 3
    assert rows[9]["accuracy"] == pytest.approx(2 / 3) and rows[5]["accuracy"] is None


def test_oof_confidence_drops_nan_rows():
    p = np.array([[0.9, 0.1], [np.nan, np.nan], [0.3, 0.7]])
    conf, ok = oof_confidence(p, ["x", "y"], ["x", "x", "x"])
    assert conf.tolist() == [0.9, 0.7] and ok.tolist() == [True, False]


@pytest.mark.parametrize("call, param", [
    (lambda: estimate_precision(np.array([0.5]), np.array([True]), 1.5), "threshold"),
    (lambda: estimate_precision(np.array([0.5]), np.array([1]), 0.5), "correct"),
    (lambda: threshold_for_precision(np.array([0.5]), np.array([True]), 0.0), "target"),
    (lambda: threshold_for_precision(np.array([0.5]), np.array([True]), 0.9, criterion="mean"), "criterion"),
    (lambda: oof_confidence(np.ones((2, 3)) / 3, ["a", "b"], ["a", "b"]), "oof_proba"),
])
def test_bad_input_names_the_parameter(call, param):
    with pytest.raises(ValidationError, match=f"'{param}'"):
        call()


# ------------------------------------------------------------------------------ view and page
def _project(tmp_path: Path, *, oof: bool = True, train_labels: bool = True, calibration: dict | None = None,
             right_from: float = 0.9) -> Store:
    """36 digits (3 classes); 24 confirmed; a hand-made run whose OOF rows are right iff confidence >= right_from."""
    from core.io.ingest import import_folder
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=12), labels_from_folders="reference",
                  annotator="ann")
    ids = store.item_ids()
    ref = store.reference_labels()
    lab = [ref[int(i)] for i in ids]
    conf_ids = ids[:24]
    store.annotate_many([(int(i), ref[int(i)]) for i in conf_ids], annotator="ann")
    classes = store.labels()
    run_dir = store.dir / "runs" / "hand"
    run_dir.mkdir(parents=True)
    conf = np.linspace(0.6, 1.0, len(ids))
    proba = np.zeros((len(ids), 3))
    for r, c in enumerate(conf):
        j = classes.index(lab[r])
        proba[r] = (1 - c) / 2
        proba[r, j] = c
    np.save(run_dir / "item_ids.npy", ids)
    np.save(run_dir / "proba.npy", proba.astype(np.float32))
    if oof:
        oof_p = np.zeros((24, 3))
        for r in range(24):
            j = classes.index(lab[r])
            c = 0.5 + r / 48  # 0.5 .. 0.98
            good = j if c >= right_from else (j + 1) % 3
            oof_p[r] = (1 - c) / 2
            oof_p[r, good] = c
        np.save(run_dir / "oof_proba.npy", oof_p.astype(np.float32))
        np.save(run_dir / "train_item_ids.npy", conf_ids)
        if train_labels:
            np.save(run_dir / "train_labels.npy", np.array(lab[:24], dtype=str))
    metrics = {} if calibration is None else {"calibration": calibration}
    store.publish_run(model="logreg", config={}, metrics=metrics, artefact_dir=run_dir, classes=classes,
                      item_ids=ids, labels=[classes[j] for j in proba.argmax(1)], confidences=proba.max(1),
                      clusters=np.zeros(len(ids), int), coords=np.zeros((len(ids), 2)))
    return store


def test_summary_gives_precision_and_reliability(tmp_path):
    from core.views.pseudo_labels import pseudo_label_summary, threshold_by_target

    store = _project(tmp_path)
    s = pseudo_label_summary(store, threshold=0.9)
    # OOF rows r with 0.5 + r/48 >= 0.9: r = 20..23, all right
    assert s["confidence_status"] == "known" and s["precision"]["n"] == 4 and s["precision"]["precision"] == 1.0
    assert s["precision_text"].startswith(f"accept {s['total_gain']} at >= 0.90: estimated precision 100%")
    assert "from 4 out-of-fold predictions" in s["precision_text"]
    assert sum(r["count"] for r in s["reliability"]) == 24
    # the hand-made run predicts every item's reference class: those of its unconfirmed items above 0.9 are all right
    assert s["reference_precision"] == {"n": s["total_gain"], "precision": 1.0}
    assert s["total_gain"] == 9  # items 27..35 of 36
    low = pseudo_label_summary(store, threshold=0.5)
    assert low["precision"]["precision"] == pytest.approx(4 / 24)
    t = threshold_by_target(store, None, 0.99, criterion="estimate", min_count=1)
    assert t["threshold"] == pytest.approx(0.5 + 20 / 48, abs=1e-6)


def test_older_run_falls_back_to_todays_labels(tmp_path):
    from core.views.pseudo_labels import pseudo_label_summary

    s = pseudo_label_summary(_project(tmp_path, train_labels=False), threshold=0.9)
    assert s["confidence_status"] == "known" and s["precision"]["n"] == 4
    assert "today's confirmed labels" in s["confidence_note"]


@pytest.mark.parametrize("kind", ["no_oof", "calibration_unknown"])
def test_unknown_confidence_says_so(tmp_path, kind):
    from core.views.pseudo_labels import pseudo_label_summary, threshold_by_target

    cal = {"status": "unknown", "reason": "too few labels", "reliability": None}
    store = _project(tmp_path, oof=kind != "no_oof", calibration=cal if kind != "no_oof" else None)
    s = pseudo_label_summary(store, threshold=0.9)
    assert s["confidence_status"] == "unknown" and "precision" not in s
    assert "confidence is unknown" in s["confidence_note"] and "cannot be estimated" in s["precision_text"]
    assert threshold_by_target(store, None, 0.9)["threshold"] is None


def test_recorded_reliability_is_used(tmp_path):
    from core.views.pseudo_labels import pseudo_label_summary

    table = {"edges": [0.0, 0.5, 1.0], "count": [3, 21], "confidence": [0.4, 0.8], "accuracy": [0.3, 0.7]}
    cal = {"status": "calibrated", "method": "isotonic", "temperature": None, "reliability": table}
    s = pseudo_label_summary(_project(tmp_path, calibration=cal), threshold=0.9)
    assert [r["count"] for r in s["reliability"]] == [3, 21] and s["reliability"][1]["accuracy"] == 0.7


def _page(store: Store, monkeypatch) -> AppTest:
    monkeypatch.setenv("LABELTOOL_PROJECTS", str(store.dir.parent))
    monkeypatch.chdir(ROOT)
    return open_page("pages/pseudo_labels.py")


def test_page_shows_estimate_and_sets_threshold_by_target(tmp_path, monkeypatch):
    # OOF rows right from confidence 0.6 on: 19 of 24 (Wilson lower bound 0.60 > 0.5 at the lowest threshold)
    at = _page(_project(tmp_path, right_from=0.6), monkeypatch)
    texts = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "estimated precision" in texts and "out-of-fold" in texts
    assert len(at.get("plotly_chart")) >= 2  # histogram and reliability diagram
    assert at.slider(key="pl-threshold").value == pytest.approx(0.95)
    at.number_input(key="pl-target").set_value(0.5).run()
    at.button(key="pl-by-target").click().run()
    assert not at.exception
    assert at.slider(key="pl-threshold").value == pytest.approx(0.5)
    assert any("estimated precision 79%" in m.value for m in at.markdown)  # 19 / 24
    at.number_input(key="pl-target").set_value(0.99).run()
    at.button(key="pl-by-target").click().run()
    assert any("no threshold reaches 99.0%" in i.value for i in at.info)
    assert at.slider(key="pl-threshold").value == pytest.approx(0.5)


def test_page_says_confidence_unknown(tmp_path, monkeypatch):
    at = _page(_project(tmp_path, oof=False), monkeypatch)
    assert any("confidence is unknown" in w.value for w in at.warning)


def test_a_trained_run_saves_its_training_labels_and_gets_an_estimate(tmp_path):
    from core.io.ingest import import_folder
    from core.models.training import train_model
    from core.views.pseudo_labels import pseudo_label_summary
    from tests.helpers import digits_folder

    store = Store.create(tmp_path / "proj", modality="image", extractor="pixels_pca", min_votes=1,
                         labels=["0", "1", "2"])
    import_folder(store, digits_folder(tmp_path / "src", per_class=20), labels_from_folders="reference")
    ref = store.reference_labels()
    store.annotate_many([(i, ref[i]) for i in sorted(ref)[::2]], annotator="alice")
    rid = train_model(store, "classifier", device="cpu", project_map=False,
                      params={"families": ["knn"], "knn_k": [3, 5]})
    d = store.run_dir(store.run(rid))
    ids, labs = np.load(d / "train_item_ids.npy"), np.load(d / "train_labels.npy")
    assert labs.dtype.kind == "U" and [ref[int(i)] for i in ids] == labs.tolist()
    s = pseudo_label_summary(store, rid, threshold=0.5)
    assert s["confidence_status"] == "known" and s["precision"]["n"] > 0
    assert "out-of-fold" in s["precision_text"]
