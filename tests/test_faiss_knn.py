"""FaissKNNClassifier gives scikit-learn's KNeighborsClassifier predictions, and the grid search uses it on big sets."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from core.errors import ValidationError
from core.models.classifier import model as classifier
from core.models.classifier.faiss_knn import FaissKNNClassifier


def _data(seed: int = 0, n: int = 600, q: int = 250, d: int = 20, k: int = 4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    X = (centres[y] + rng.normal(scale=1.5, size=(n, d))).astype(np.float32)
    Q = (centres[rng.integers(0, k, q)] + rng.normal(scale=1.5, size=(q, d))).astype(np.float32)
    Q[:10] = X[:10]  # queries on training points: the zero-distance rule of weights="distance"
    return X, np.array(["a", "b", "c", "d"])[y], Q


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_same_predictions_as_sklearn(metric, weights, k):
    X, y, Q = _data(seed=k)
    ref = KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric, algorithm="brute").fit(X, y)
    ours = FaissKNNClassifier(n_neighbors=k, weights=weights, metric=metric).fit(X, y)
    assert ours.predict(Q).tolist() == ref.predict(Q).tolist()
    # float32 rounding in sklearn: a query on a training point gets a cosine distance ~1e-7 there, 0 here
    np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q), atol=1e-5)
    assert list(ours.classes_) == list(ref.classes_)


def test_same_predictions_inside_the_grid_search_pipeline():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    X, y, Q = _data(seed=9)
    ref = make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=10, weights="distance")).fit(X, y)
    ours = make_pipeline(Normalizer(), FaissKNNClassifier(n_neighbors=10, weights="distance")).fit(X, y)
    assert ours.predict(Q).tolist() == ref.predict(Q).tolist()


def test_bad_parameters_name_the_parameter():
    X, y, _ = _data()
    for kwargs, name in (({"n_neighbors": 0}, "n_neighbors"), ({"weights": "gauss"}, "weights"),
                         ({"metric": "l1"}, "metric")):
        with pytest.raises(ValidationError, match=f"'{name}'"):
            FaissKNNClassifier(**kwargs).fit(X, y)


def test_grid_search_uses_faiss_above_the_size_threshold(monkeypatch):
    config = classifier.ClassifierConfig(families=("knn",), knn_k=(1, 5))
    small = classifier._candidates(config, 100, "cpu")
    assert all(isinstance(e.steps[-1][1], KNeighborsClassifier) for _, _, e in small)  # sklearn + smoothing
    big = classifier._candidates(config, classifier.FAISS_KNN_MIN_TRAIN, "cpu")
    assert len(big) == 2 and all(isinstance(e.steps[-1][1], FaissKNNClassifier) for _, _, e in big)
    assert all(e.steps[-1][1].smoothing == config.knn_smoothing > 0 for _, _, e in small + big)
    X, y, _ = _data(n=200)
    monkeypatch.setattr(classifier, "FAISS_KNN_MIN_TRAIN", 10)
    fitted = classifier.FeatureClassifier(config).fit(X, y)
    assert isinstance(fitted.estimator_.steps[-1][1], FaissKNNClassifier)
    assert fitted.predict_proba(X).shape == (200, 4)


def test_pickles_with_joblib(tmp_path):
    import joblib

    X, y, Q = _data(seed=2)
    model = FaissKNNClassifier(n_neighbors=5, weights="distance").fit(X, y)
    joblib.dump(model, tmp_path / "m.joblib")
    back = joblib.load(tmp_path / "m.joblib")
    np.testing.assert_array_equal(back.predict_proba(Q), model.predict_proba(Q))


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_smoothed_votes_match_sklearn_plus_the_same_smoothing(weights):
    from core.models.classifier.faiss_knn import SmoothedKNeighborsClassifier, smooth_votes

    X, y, Q = _data(seed=4)
    ref = KNeighborsClassifier(n_neighbors=5, weights=weights, algorithm="brute").fit(X, y)
    ours = FaissKNNClassifier(n_neighbors=5, weights=weights, smoothing=1.0).fit(X, y)
    small = SmoothedKNeighborsClassifier(n_neighbors=5, weights=weights, smoothing=1.0).fit(X, y)
    expected = (5 * ref.predict_proba(Q) + 1.0 / 4) / (5 + 1.0)
    np.testing.assert_allclose(smooth_votes(ref.predict_proba(Q), 5, 1.0), expected)
    np.testing.assert_allclose(ours.predict_proba(Q), expected, atol=1e-5)
    np.testing.assert_allclose(small.predict_proba(Q), expected, atol=1e-6)
    assert ours.predict(Q).tolist() == ref.predict(Q).tolist() == small.predict(Q).tolist()
    p = ours.predict_proba(Q)
    assert p.max() < 1.0 and p.min() > 0.0  # a query on a training point too
