"""k-nearest-neighbour classification on a faiss index: a drop-in for scikit-learn's ``KNeighborsClassifier``.

:class:`FaissKNNClassifier` gives the same predictions and probabilities as
``sklearn.neighbors.KNeighborsClassifier(n_neighbors, weights, metric)`` for ``weights`` in
{"uniform", "distance"} and ``metric`` in {"euclidean", "cosine"} (cosine distance ``1 - cos``), including
sklearn's rule for a query at distance 0 from training points (those get weight 1, the others 0). faiss
(:class:`core.features.neighbours.NeighbourIndex`) finds a few more than ``n_neighbors`` candidates; their
distances are recomputed in float64 and sorted (ties by the lower training row), so that float32 rounding in
the index does not reorder near-ties.

The classifier's grid search (:mod:`core.models.classifier.model`) uses it above a training-set size, where
sklearn's brute-force search is slower and keeps a float64 (n_query, n_train) block per chunk.

``smoothing`` (both here and in :class:`SmoothedKNeighborsClassifier`, the sklearn estimator the grid search
uses on small sets) adds a Dirichlet prior to the vote (:func:`smooth_votes`): the ``n`` neighbours' vote
fractions count as ``n`` observations and ``smoothing`` pseudo-observations are spread evenly over the classes,
so no probability is exactly 0 or 1 (issue 12: a 1-NN gave every item confidence 1.0). The argmax, hence every
prediction, is the unsmoothed vote's; ``smoothing=0`` is sklearn's ``predict_proba`` exactly.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.validation import check_is_fitted

from core.errors import check_choice, check_param
from core.features.neighbours import NeighbourIndex

WEIGHTS = ("uniform", "distance")
METRICS = ("euclidean", "cosine")
#: extra candidates fetched from faiss before the exact float64 re-ranking
EXTRA_CANDIDATES = 8
_OWNER = "FaissKNNClassifier"
#: floats of one float64 re-ranking block (queries x candidates x d)
_RERANK_FLOATS = 1 << 22


def smooth_votes(proba: np.ndarray, n_votes: int, smoothing: float) -> np.ndarray:
    """Dirichlet-smoothed vote fractions: ``(n_votes * proba + smoothing / k) / (n_votes + smoothing)``.

    Parameters
    ----------
    proba : ndarray (q, k)
        Vote fractions (rows sum to 1), e.g. sklearn's distance-weighted ``predict_proba``.
    n_votes : int
        Neighbours that voted (the weight of the observed vote).
    smoothing : float
        Pseudo-observations spread evenly over the ``k`` classes (>= 0; 0 leaves ``proba`` unchanged).

    Returns
    -------
    ndarray (q, k), rows summing to 1; every entry in (0, 1) when ``smoothing > 0``.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if smoothing <= 0:
        return proba
    return (n_votes * proba + smoothing / proba.shape[1]) / (n_votes + smoothing)


class SmoothedKNeighborsClassifier(KNeighborsClassifier):
    """scikit-learn's ``KNeighborsClassifier`` with :func:`smooth_votes` on its probabilities.

    Parameters
    ----------
    n_neighbors : int
        Neighbours that vote (at most the number of training rows, as in sklearn).
    weights : {"uniform", "distance"}
    smoothing : float
        Dirichlet pseudo-observations added to the vote (>= 0).
    """

    def __init__(self, n_neighbors: int = 5, *, weights: str = "uniform", smoothing: float = 1.0,
                 algorithm: str = "auto", metric: str = "minkowski"):
        super().__init__(n_neighbors=n_neighbors, weights=weights, algorithm=algorithm, metric=metric)
        self.smoothing = smoothing

    def fit(self, X: np.ndarray, y: np.ndarray) -> "SmoothedKNeighborsClassifier":
        """Store ``X`` (n, d) and ``y`` (n,); ``n_neighbors`` above ``n`` votes with all ``n`` rows."""
        check_param("SmoothedKNeighborsClassifier", "smoothing", self.smoothing,
                    isinstance(self.smoothing, (int, float)) and self.smoothing >= 0, "a float >= 0")
        super().fit(X, y)
        self._votes = int(self.n_neighbors)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Smoothed class probabilities (q, k), columns in the order of ``classes_``."""
        return smooth_votes(super().predict_proba(X), self._votes, float(self.smoothing))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The class (q,) with the largest vote (the same as the unsmoothed vote's)."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class FaissKNNClassifier(ClassifierMixin, BaseEstimator):
    """k-NN classifier whose neighbour search runs on faiss (scikit-learn estimator contract).

    Parameters
    ----------
    n_neighbors : int
        Neighbours that vote (>= 1); capped at the number of training rows.
    weights : {"uniform", "distance"}
        Equal votes, or votes weighted by ``1 / distance``.
    metric : {"euclidean", "cosine"}
        Euclidean distance, or cosine distance ``1 - cos(x, y)``.
    smoothing : float
        Dirichlet pseudo-observations added to the vote (:func:`smooth_votes`); 0 is sklearn's vote.

    Attributes
    ----------
    classes_ : np.ndarray, shape (k,)
    n_features_in_ : int
    """

    def __init__(self, n_neighbors: int = 5, *, weights: str = "uniform", metric: str = "euclidean",
                 smoothing: float = 0.0) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.smoothing = smoothing

    def fit(self, X: np.ndarray, y: np.ndarray) -> "FaissKNNClassifier":
        """Store the training rows ``X`` (n, d) with labels ``y`` (n,) in a faiss index."""
        ok = isinstance(self.n_neighbors, (int, np.integer)) and not isinstance(self.n_neighbors, bool)
        check_param(_OWNER, "n_neighbors", self.n_neighbors, ok and self.n_neighbors >= 1, "an int >= 1")
        check_choice(_OWNER, "weights", self.weights, WEIGHTS)
        check_choice(_OWNER, "metric", self.metric, METRICS)
        check_param(_OWNER, "smoothing", self.smoothing,
                    isinstance(self.smoothing, (int, float)) and self.smoothing >= 0, "a float >= 0")
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        check_param(_OWNER, "X", f"array of shape {X.shape}", X.ndim == 2 and len(X) == len(y) and len(X) >= 1,
                    "a non-empty 2-D (n, d) array with one label per row")
        self.classes_, self._y = np.unique(y, return_inverse=True)
        self._X = X
        self._index = NeighbourIndex(X, metric="cosine" if self.metric == "cosine" else "euclidean", fp16=False)
        self.n_features_in_ = X.shape[1]
        return self

    def __getstate__(self) -> dict:
        """Pickle (joblib) without the faiss index; it is rebuilt from the training rows on load."""
        state = dict(super().__getstate__())
        state.pop("_index", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_X" in self.__dict__:
            self._index = NeighbourIndex(self._X, metric="cosine" if self.metric == "cosine" else "euclidean",
                                         fp16=False)

    def kneighbors(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (q, k) float64, ascending, and training rows (q, k) int64 of the ``k`` nearest neighbours."""
        check_is_fitted(self, "_index")
        Q = np.asarray(X, dtype=np.float32)
        k = min(int(self.n_neighbors), len(self._X))
        _, cand = self._index.search(Q, min(k + EXTRA_CANDIDATES, len(self._X)))
        dist = np.empty(cand.shape)
        step = max(1, _RERANK_FLOATS // max(1, cand.shape[1] * Q.shape[1]))
        for s in range(0, len(Q), step):  # float64 re-ranking of the candidates, a block of queries at a time
            A, B = Q[s:s + step].astype(np.float64)[:, None, :], self._X[cand[s:s + step]].astype(np.float64)
            if self.metric == "cosine":
                norms = np.linalg.norm(A, axis=2) * np.linalg.norm(B, axis=2)
                dist[s:s + step] = 1.0 - (A * B).sum(2) / np.maximum(norms, 1e-300)
            else:
                dist[s:s + step] = np.sqrt(((A - B) ** 2).sum(2))
        order = np.lexsort((cand, dist), axis=1)[:, :k]  # by distance, ties by the lower training row
        return np.take_along_axis(dist, order, 1), np.take_along_axis(cand, order, 1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (q, k classes), columns in the order of ``classes_``."""
        dist, rows = self.kneighbors(X)
        if self.weights == "uniform":
            w = np.ones_like(dist)
        else:
            with np.errstate(divide="ignore"):
                w = 1.0 / dist
            inf = np.isinf(w)
            exact = inf.any(axis=1)
            w[exact] = inf[exact]  # sklearn: a query on training points takes only those points
        proba = np.zeros((len(dist), len(self.classes_)))
        np.add.at(proba, (np.arange(len(dist))[:, None], self._y[rows]), w)
        return smooth_votes(proba / proba.sum(axis=1, keepdims=True), dist.shape[1], float(self.smoothing))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The class (q,) with the largest (weighted) vote; ties go to the first class, as in sklearn."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
