"""Issue 12: k-NN confidences are smoothed votes of several neighbours, and the retrain adapts its grid to the labels.

A new user labels 30 digits and presses "Retrain now": the grid search must not pick a 1-NN whose 0/1 vote gives
every item confidence 1.0, and the default ("auto") grid must cost far less cross-validation than the full one
while the full grid stays reachable with ``grid="full"``.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from core.errors import ValidationError
from core.models.classifier.model import ClassifierConfig, FeatureClassifier, _candidates
from core.models.classifier.linear_svm import TorchLinearSVM
from core.models.classifier.mlp import TorchMLP


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))
    return d.data[idx].astype(np.float32), d.target[idx].astype(str)


def _demo_labels(y: np.ndarray, per_class: int = 3) -> np.ndarray:
    """The demo's first retrain: ``per_class`` labels of each digit (30 in all)."""
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])


def test_thirty_labels_do_not_give_every_item_confidence_one(digits):
    X, y = digits
    lab = _demo_labels(y)
    for families in (("knn",), ("knn", "linear_svm", "mlp")):
        clf = FeatureClassifier(ClassifierConfig(families=families)).fit(X[lab], y[lab])
        conf = clf.predict_proba(X).max(1)
        assert conf.max() < 1.0, families  # not one item is certain, the labelled ones included
        assert np.median(conf) < 0.95, families
        if families == ("knn",):
            assert clf.best_["params"]["k"] >= 3


def test_knn_candidates_use_at_least_three_neighbours_and_smoothing():
    cands = _candidates(ClassifierConfig(families=("knn",), knn_k=(1, 5), grid="full"), 100, "cpu")
    ks = [p["k"] for _, p, _ in cands]
    assert ks == [3, 5]
    assert all(e.steps[-1][1].smoothing > 0 for _, _, e in cands)
    # fewer training rows than 3: every row votes
    assert [p["k"] for _, p, _ in _candidates(ClassifierConfig(families=("knn",), knn_k=(1,)), 2, "cpu")] == [2]


def test_auto_grid_is_smaller_than_the_full_grid(digits):
    X, y = digits
    full = FeatureClassifier(ClassifierConfig(grid="full")).fit(X[:300], y[:300])
    auto = FeatureClassifier(ClassifierConfig()).fit(X[:300], y[:300])
    assert full.best_["n_splits"] == 5 and auto.best_["n_splits"] == 3
    n_fits = lambda c: sum(len(r["fold_macro_f1"]) for r in c.cv_results_ if r["family"] != "knn")  # noqa: E731
    assert n_fits(auto) <= n_fits(full) / 3
    assert auto.best_["mean_macro_f1"] > 0.9
    assert auto.oof_proba_.shape == (300, 10) and not np.isnan(auto.oof_proba_).any()
    # the fold splits are computed once and shared by every candidate
    assert len(auto.folds_) == 3


def test_time_budget_skips_the_remaining_candidates(digits):
    X, y = digits
    clf = FeatureClassifier(ClassifierConfig(time_budget_s=1e-9)).fit(X[:200], y[:200])
    ran = [r for r in clf.cv_results_ if not r.get("skipped")]
    assert len(ran) == 1 and ran[0]["family"] == "knn"  # the first (cheap) candidate always runs
    assert any(r.get("skipped") for r in clf.cv_results_)


def test_bad_grid_and_budget_name_the_parameter():
    with pytest.raises(ValidationError, match="'grid'"):
        ClassifierConfig(grid="huge").validate()
    with pytest.raises(ValidationError, match="'time_budget_s'"):
        ClassifierConfig(time_budget_s=0).validate()


def test_svm_warm_start_reaches_the_same_solution_in_fewer_iterations(digits):
    X, y = digits
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    prev = TorchLinearSVM(C=0.1).fit(X[:400], y[:400])
    cold = TorchLinearSVM(C=1.0).fit(X[:400], y[:400])
    warm = TorchLinearSVM(C=1.0).fit(X[:400], y[:400], init=(prev.coef_, prev.intercept_))
    assert warm.n_iter_ < cold.n_iter_
    assert warm.objective_ <= cold.objective_ * (1 + 1e-4)
    assert (warm.predict(X[400:]) == cold.predict(X[400:])).mean() > 0.97


def test_mlp_early_stopping_stops_before_max_epochs(digits):
    X, y = digits
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    m = TorchMLP(batch_size=32, max_epochs=200, max_steps=100000, early_stopping=True, patience=3).fit(X[:600], y[:600])
    assert len(m.loss_curve_) < 200 and m.best_epoch_ < len(m.loss_curve_)
    assert (m.predict(X[600:]) == y[600:]).mean() > 0.9


def test_budget_is_checked_between_folds_of_a_candidate(digits, monkeypatch):
    """A candidate that starts under the budget and runs past it mid-way is stopped and recorded as skipped."""
    import core.models.classifier.model as model

    X, y = digits
    clock = {"t": 0.0}

    def fake_clock() -> float:  # every reading of the model's clock advances 1 s
        clock["t"] += 1.0
        return clock["t"]

    from types import SimpleNamespace

    monkeypatch.setattr(model, "time", SimpleNamespace(perf_counter=fake_clock))
    # readings: t0 = 1; candidate 1: t_cand 2, end 3; candidate 2: start check 4 (3 s, under 5.5), t_cand 5,
    # fold 1 check 6 (5 s), fold 2 check 7 (6 s > 5.5): stopped after one fold
    clf = FeatureClassifier(ClassifierConfig(families=("knn", "linear_svm"), time_budget_s=5.5)).fit(X[:200], y[:200])
    second = clf.cv_results_[1]
    assert second["skipped"] == "time budget (after 1 of 3 folds)" and second["fold_macro_f1"] == []
    assert all(r.get("skipped") for r in clf.cv_results_[1:])


def test_refit_svm_probabilities_are_on_the_scale_of_its_out_of_fold_rows(digits):
    """The calibration map is fitted on out-of-fold rows (softmax of SVM decision values): the published
    probabilities of the refit SVM must be that same function of its decision values, not a Platt scaling."""
    from core.models.classifier.model import estimator_proba

    X, y = digits
    clf = FeatureClassifier(ClassifierConfig(families=("linear_svm",))).fit(X[:300], y[:300])
    est = clf.estimator_
    assert not hasattr(est, "calibrated_classifiers_")
    d = est.decision_function(X[300:400])
    d = np.exp(d - d.max(1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X[300:400]), d / d.sum(1, keepdims=True), atol=1e-5)
    assert np.array_equal(estimator_proba(est, X[:5], clf.classes_), clf.predict_proba(X[:5]))
