"""The "classifier" model: k-NN, linear SVM and a small MLP on cached features, chosen by grid search.

After the Pinterest study in the seeds: pretrained CNN features, then KNN (k in 1, 5, 10, 20, 50), a linear
SVM (C in 0.01 ... 100) and a 3-layer network (batch size in 32, 64, 128), each candidate scored by
stratified k-fold cross-validation with macro-F1; the best is refit on all confirmed labels and predicts
every item with class probabilities.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from core.errors import JobCancelled, TrainingError, check_param
from core.models.classifier.faiss_knn import FaissKNNClassifier
from core.models.classifier.linear_svm import TorchLinearSVM
from core.models.classifier.mlp import TorchMLP

FAMILIES = ("knn", "linear_svm", "mlp")
Progress = Callable[[dict], None]
#: k-NN runs on faiss (same predictions as sklearn) from this many training rows on; see bench/bench_faiss_knn.py
FAISS_KNN_MIN_TRAIN = 1000


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameter grid and training settings of :class:`FeatureClassifier`."""

    families: tuple[str, ...] = FAMILIES
    knn_k: tuple[int, ...] = (1, 5, 10, 20, 50)
    svm_C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    mlp_batch: tuple[int, ...] = (32, 64, 128)
    mlp_hidden: int = 256
    mlp_max_epochs: int = 40
    mlp_max_steps: int = 600
    n_folds: int = 5
    random_state: int = 0

    def validate(self) -> None:
        check_param("classifier", "families", self.families,
                    len(self.families) > 0 and set(self.families) <= set(FAMILIES), f"a non-empty subset of {FAMILIES}")
        check_param("classifier", "n_folds", self.n_folds, isinstance(self.n_folds, int) and self.n_folds >= 2,
                    "an int >= 2")
        check_param("classifier", "knn_k", self.knn_k, all(int(k) >= 1 for k in self.knn_k), "ints >= 1")
        check_param("classifier", "svm_C", self.svm_C, all(float(c) > 0 for c in self.svm_C), "floats > 0")
        check_param("classifier", "mlp_batch", self.mlp_batch, all(int(b) >= 1 for b in self.mlp_batch), "ints >= 1")


def _candidates(config: ClassifierConfig, n_train_min: int, device: str) -> list[tuple[str, dict, Any]]:
    """(family, params, unfitted estimator) for every grid point that fits the data size."""
    out: list[tuple[str, dict, Any]] = []
    if "knn" in config.families:
        for k in config.knn_k:
            if k <= n_train_min:
                knn = FaissKNNClassifier if n_train_min >= FAISS_KNN_MIN_TRAIN else KNeighborsClassifier
                est = make_pipeline(Normalizer(), knn(n_neighbors=int(k), weights="distance"))
                out.append(("knn", {"k": int(k)}, est))
    if "linear_svm" in config.families:
        for c in config.svm_C:
            est = make_pipeline(StandardScaler(), TorchLinearSVM(C=float(c), device=device))
            out.append(("linear_svm", {"C": float(c)}, est))
    if "mlp" in config.families:
        for b in config.mlp_batch:
            est = make_pipeline(StandardScaler(), TorchMLP(
                hidden=config.mlp_hidden, batch_size=int(b), max_epochs=config.mlp_max_epochs,
                max_steps=config.mlp_max_steps, device=device, random_state=config.random_state))
            out.append(("mlp", {"batch_size": int(b)}, est))
    return out


class FeatureClassifier:
    """Grid-searched classifier on feature vectors (scikit-learn estimator contract).

    Attributes (after ``fit``)
    --------------------------
    classes_ : ndarray (k,)
    best_ : dict            family, params and mean cross-validated macro-F1 of the chosen candidate
    cv_results_ : list[dict] every candidate's fold scores
    estimator_ : the refit estimator
    oof_proba_ : ndarray (n, k) float32
                            the chosen candidate's out-of-fold probabilities for the training rows (each row
                            from the fold model that did not see it; NaN where no fold predicted it): what
                            the model-aware consensus grades the model on, since ``predict_proba`` on the
                            training rows is in-sample (a 1-NN is right on every one)
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig(), *, device: str = "cpu"):
        self.config = config
        self.device = device

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> "FeatureClassifier":
        """Cross-validate every candidate, then refit the best on all of ``X`` (n, d) with labels ``y`` (n,).

        ``sample_weight`` (n,), e.g. the consensus confidence, weighs each item's loss in the linear SVM and
        the MLP (k-NN has no per-item loss and ignores it); the CV scores stay unweighted.
        """
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # an iterative fit stopped at its iteration limit is still a usable candidate; CV judges it
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._fit(X, y, progress, should_cancel, sample_weight)

    def _fit(self, X, y, progress, should_cancel, sample_weight=None) -> "FeatureClassifier":
        self.config.validate()
        y = np.asarray(y)
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise TrainingError(
                f"The classifier needs confirmed labels of at least 2 classes; got {len(classes)} "
                f"({', '.join(map(str, classes)) or 'none'}). Label more items first."
            )
        if len(y) < 4:
            raise TrainingError(f"The classifier needs at least 4 confirmed labels; got {len(y)}.")
        n_splits = int(min(self.config.n_folds, max(2, counts.min())))
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.config.random_state)
        # the smallest training fold bounds k of k-NN
        n_train_min = len(y) - int(np.ceil(len(y) / n_splits))
        cands = _candidates(self.config, n_train_min, self.device)
        folds = list(skf.split(X, y)) if counts.min() >= 2 else _loose_folds(len(y), n_splits, self.config.random_state)
        total = len(cands) * len(folds) + 1
        step = 0
        t0 = time.perf_counter()
        self.cv_results_ = []
        def check_cancel(*_args) -> None:
            if should_cancel is not None and should_cancel():
                raise JobCancelled("cancelled during cross-validation")

        oof_best, key_best = None, None
        for family, params, est in cands:
            scores = []
            oof = np.full((len(y), len(classes)), np.nan, dtype=np.float32)
            t_cand = time.perf_counter()
            fit_params = {"torchmlp__on_epoch": check_cancel} if family == "mlp" else {}
            for train, test in folds:
                check_cancel()
                if len(np.unique(y[train])) < 2:
                    continue
                model = clone(est).fit(X[train], y[train], **fit_params,
                                       **_weight_params(family, None if sample_weight is None else sample_weight[train]))
                scores.append(float(f1_score(y[test], model.predict(X[test]), average="macro", labels=classes,
                                             zero_division=0)))
                oof[test] = estimator_proba(model, X[test], classes)
                step += 1
                if progress is not None:
                    progress({"step": step, "total": total, "phase": f"cv {family} {params}",
                              "score": float(np.mean(scores))})
            self.cv_results_.append({"family": family, "params": params, "fold_macro_f1": scores,
                                     "mean_macro_f1": float(np.mean(scores)) if scores else float("nan"),
                                     "seconds": round(time.perf_counter() - t_cand, 3)})
            key = _selection_key(self.cv_results_[-1])
            if scores and (key_best is None or key > key_best):  # strict: the first best wins, as max() below
                oof_best, key_best = oof, key
        scored = [r for r in self.cv_results_ if r["fold_macro_f1"]]
        if not scored:
            raise TrainingError("No candidate could be cross-validated: label more items of each class.")
        best = max(scored, key=_selection_key)
        self.oof_proba_ = oof_best
        self.best_ = {**best, "n_splits": n_splits, "cv_seconds": time.perf_counter() - t0}
        est = next(e for f, p, e in cands if f == best["family"] and p == best["params"])
        self.estimator_ = self._refit(clone(est), X, y, counts, _weight_params(best["family"], sample_weight))
        self.weighted_ = sample_weight is not None and best["family"] != "knn"
        self.classes_ = classes
        if progress is not None:
            progress({"step": total, "total": total, "phase": "refit", "score": best["mean_macro_f1"]})
        return self

    def _refit(self, est, X: np.ndarray, y: np.ndarray, counts: np.ndarray, weights: dict):
        """Refit on all labels; a linear SVM gets Platt-scaled probabilities when every class has 3 labels."""
        svm = isinstance(est.steps[-1][1], TorchLinearSVM)
        if svm and counts.min() >= 3:
            if weights:  # the inner fits see the weights through the pipeline; calibration is weighted too
                cal = CalibratedClassifierCV(_WeightedPipeline(est.steps), cv=3, method="sigmoid")
                return cal.fit(X, y, sample_weight=next(iter(weights.values())))
            est = CalibratedClassifierCV(est, cv=3, method="sigmoid")
        return est.fit(X, y, **weights)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities (n, k), columns in the order of ``classes_``."""
        return estimator_proba(self.estimator_, X, self.classes_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def summary(self) -> dict:
        """What the run records: the chosen candidate, its CV macro-F1 and every candidate's score."""
        return {
            "model_selected": self.best_["family"],
            "params_selected": self.best_["params"],
            "cv_macro_f1": self.best_["mean_macro_f1"],
            "cv_folds": self.best_["n_splits"],
            "cv_seconds": round(self.best_["cv_seconds"], 3),
            "sample_weighted": bool(getattr(self, "weighted_", False)),
            "cv_results": [{k: r[k] for k in ("family", "params", "mean_macro_f1", "seconds")} for r in self.cv_results_],
            "config": asdict(self.config),
        }


def _selection_key(result: dict) -> tuple[float, int]:
    """How candidates rank: mean CV macro-F1, then the earlier family in :data:`FAMILIES`."""
    return (result["mean_macro_f1"], -FAMILIES.index(result["family"]))


def estimator_proba(est, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class probabilities (n, len(classes)) float32 of a fitted estimator, columns in the order of ``classes``.

    A class the estimator did not see (a fold without it) gets probability 0. An estimator without
    ``predict_proba`` (a linear SVM with too few labels to calibrate) gives the softmax of its decision values.
    """
    if hasattr(est, "predict_proba"):
        p = est.predict_proba(X)
    else:
        d = est.decision_function(X)
        if d.ndim == 1:
            d = np.stack([-d, d], axis=1)
        d = d - d.max(axis=1, keepdims=True)
        p = np.exp(d) / np.exp(d).sum(axis=1, keepdims=True)
    cols = {c: j for j, c in enumerate(est.classes_)}
    out = np.zeros((len(X), len(classes)), dtype=np.float32)
    for j, c in enumerate(classes):
        if c in cols:
            out[:, j] = p[:, cols[c]]
    return out


def _weight_params(family: str, sample_weight: np.ndarray | None) -> dict:
    """Pipeline fit parameters passing ``sample_weight`` to the final step of a weighted family."""
    if sample_weight is None or family == "knn":
        return {}
    step = {"linear_svm": "torchlinearsvm", "mlp": "torchmlp"}[family]
    return {f"{step}__sample_weight": np.asarray(sample_weight, dtype=np.float32)}


class _WeightedPipeline(Pipeline):
    """A pipeline whose ``fit`` names ``sample_weight`` (so that calibration passes the weights on)."""

    def fit(self, X, y=None, sample_weight=None, **params):
        if sample_weight is not None:
            params[f"{self.steps[-1][0]}__sample_weight"] = sample_weight
        return super().fit(X, y, **params)


def _loose_folds(n: int, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain shuffled k-fold, for label sets where some class has a single example."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    parts = np.array_split(perm, n_splits)
    return [(np.concatenate(parts[:i] + parts[i + 1 :]), parts[i]) for i in range(n_splits)]
