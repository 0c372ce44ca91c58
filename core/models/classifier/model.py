"""The "classifier" model: k-NN, linear SVM and a small MLP on cached features, chosen by grid search.

After the Pinterest study in the seeds: pretrained CNN features, then KNN (k in 1, 5, 10, 20, 50), a linear
SVM (C in 0.01 ... 100) and a 3-layer network (batch size in 32, 64, 128), each candidate scored by
stratified k-fold cross-validation with macro-F1; the best is refit on all confirmed labels and predicts
every item with class probabilities.

Issue 12 (a 1-NN gave all 5,000 demo items confidence 1.0; a retrain on 30 labels took 451 s):

* k-NN votes with at least :data:`KNN_MIN_NEIGHBOURS` distance-weighted neighbours (all training rows when
  there are fewer) and Dirichlet smoothing (``knn_smoothing``), so no probability is exactly 0 or 1.
* ``grid="auto"`` (the default) adapts the search to the labels: at most :data:`AUTO_FOLDS` folds, the
  :data:`AUTO_SVM_C` smallest values of C solved as a warm-started path (each C's L-BFGS starts from the
  previous C's solution on the same fold, at most :data:`AUTO_SVM_MAX_ITER` iterations), one MLP batch size with early stopping, the fold splits and each
  fold's scaled / normalised matrices computed once and shared by every candidate, and a time budget
  (``time_budget_s``) after which the remaining candidates are skipped (cheapest first: k-NN, SVM, MLP).
  ``grid="full"`` is the grid as it was (every value, ``n_folds`` folds, cold starts, no early stopping).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from sklearn.base import clone
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from core.errors import JobCancelled, TrainingError, check_choice, check_param
from core.models.classifier.faiss_knn import FaissKNNClassifier, SmoothedKNeighborsClassifier
from core.models.classifier.linear_svm import TorchLinearSVM
from core.models.classifier.mlp import TorchMLP

FAMILIES = ("knn", "linear_svm", "mlp")
GRIDS = ("auto", "full")
Progress = Callable[[dict], None]
#: k-NN runs on faiss (same predictions as sklearn) from this many training rows on; see bench/bench_faiss_knn.py
FAISS_KNN_MIN_TRAIN = 1000
#: every k-NN candidate votes with at least this many neighbours (or every training row, when fewer)
KNN_MIN_NEIGHBOURS = 3
#: grid="auto": folds, and how many of the smallest C values of ``svm_C`` are searched
AUTO_FOLDS = 3
AUTO_SVM_C = 3
#: grid="auto": L-BFGS iterations of each SVM fit (the full grid's 300 change the CV macro-F1 by < 0.01; issue 12)
AUTO_SVM_MAX_ITER = 100


@dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameter grid and training settings of :class:`FeatureClassifier`.

    ``grid="auto"`` searches an adapted subset of the values below (see the module docstring) within
    ``time_budget_s`` seconds of cross-validation; ``grid="full"`` searches all of them with ``n_folds`` folds
    and ignores the budget. ``knn_smoothing`` is the Dirichlet pseudo-count added to every k-NN vote.
    """

    families: tuple[str, ...] = FAMILIES
    knn_k: tuple[int, ...] = (1, 5, 10, 20, 50)
    svm_C: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    mlp_batch: tuple[int, ...] = (32, 64, 128)
    mlp_hidden: int = 256
    mlp_max_epochs: int = 40
    mlp_max_steps: int = 600
    n_folds: int = 5
    random_state: int = 0
    grid: str = "auto"
    time_budget_s: float = 15.0
    knn_smoothing: float = 1.0

    def validate(self) -> None:
        check_param("classifier", "families", self.families,
                    len(self.families) > 0 and set(self.families) <= set(FAMILIES), f"a non-empty subset of {FAMILIES}")
        check_param("classifier", "n_folds", self.n_folds, isinstance(self.n_folds, int) and self.n_folds >= 2,
                    "an int >= 2")
        check_param("classifier", "knn_k", self.knn_k, all(int(k) >= 1 for k in self.knn_k), "ints >= 1")
        check_param("classifier", "svm_C", self.svm_C, all(float(c) > 0 for c in self.svm_C), "floats > 0")
        check_param("classifier", "mlp_batch", self.mlp_batch, all(int(b) >= 1 for b in self.mlp_batch), "ints >= 1")
        check_choice("classifier", "grid", self.grid, GRIDS)
        check_param("classifier", "time_budget_s", self.time_budget_s,
                    isinstance(self.time_budget_s, (int, float)) and self.time_budget_s > 0, "seconds > 0")
        check_param("classifier", "knn_smoothing", self.knn_smoothing,
                    isinstance(self.knn_smoothing, (int, float)) and self.knn_smoothing >= 0, "a float >= 0")


def _knn_ks(config: ClassifierConfig, n_train_min: int) -> list[int]:
    """Neighbour counts to search: each k raised to :data:`KNN_MIN_NEIGHBOURS` (capped at the smallest training
    fold when that is smaller), k above the fold skipped, duplicates dropped."""
    out: list[int] = []
    for k in config.knn_k:
        k = int(k)
        if k > n_train_min:
            continue
        k = min(max(k, KNN_MIN_NEIGHBOURS), n_train_min)
        if k not in out:
            out.append(k)
    return out


def _candidates(config: ClassifierConfig, n_train_min: int, device: str) -> list[tuple[str, dict, Any]]:
    """(family, params, unfitted estimator) for every grid point that fits the data size, cheapest family first."""
    auto = config.grid == "auto"
    out: list[tuple[str, dict, Any]] = []
    if "knn" in config.families:
        for k in _knn_ks(config, n_train_min):
            if n_train_min >= FAISS_KNN_MIN_TRAIN:
                knn = FaissKNNClassifier(n_neighbors=k, weights="distance", smoothing=float(config.knn_smoothing))
            else:
                knn = SmoothedKNeighborsClassifier(n_neighbors=k, weights="distance",
                                                   smoothing=float(config.knn_smoothing))
            out.append(("knn", {"k": k}, make_pipeline(Normalizer(), knn)))
    if "linear_svm" in config.families:
        cs = sorted({float(c) for c in config.svm_C})[:AUTO_SVM_C] if auto else [float(c) for c in config.svm_C]
        for c in cs:  # ascending under "auto": the warm-started path over C
            est = make_pipeline(StandardScaler(), TorchLinearSVM(C=c, device=device, **(
                {"max_iter": AUTO_SVM_MAX_ITER} if auto else {})))
            out.append(("linear_svm", {"C": c}, est))
    if "mlp" in config.families:
        batches = [int(b) for b in config.mlp_batch]
        if auto:
            batches = [sorted(batches)[len(batches) // 2]]
        for b in batches:
            est = make_pipeline(StandardScaler(), TorchMLP(
                hidden=config.mlp_hidden, batch_size=b, max_epochs=config.mlp_max_epochs,
                max_steps=config.mlp_max_steps, device=device, random_state=config.random_state,
                early_stopping=auto))
            out.append(("mlp", {"batch_size": b}, est))
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
        auto = self.config.grid == "auto"
        n_folds = min(self.config.n_folds, AUTO_FOLDS) if auto else self.config.n_folds
        n_splits = int(min(n_folds, max(2, counts.min())))
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.config.random_state)
        # the smallest training fold bounds k of k-NN
        n_train_min = len(y) - int(np.ceil(len(y) / n_splits))
        cands = _candidates(self.config, n_train_min, self.device)
        # the splits, computed once per fit and shared by every candidate
        folds = list(skf.split(X, y)) if counts.min() >= 2 else _loose_folds(len(y), n_splits, self.config.random_state)
        self.folds_ = folds
        prep = _FoldCache(X, folds)
        total = len(cands) * len(folds) + 1
        step = 0
        t0 = time.perf_counter()
        self.cv_results_ = []
        def check_cancel(*_args) -> None:
            if should_cancel is not None and should_cancel():
                raise JobCancelled("cancelled during cross-validation")

        oof_best, key_best = None, None
        warm: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # fold -> the previous C's SVM solution
        for i_cand, (family, params, est) in enumerate(cands):
            if auto and i_cand > 0 and time.perf_counter() - t0 > self.config.time_budget_s:
                self.cv_results_.append({"family": family, "params": params, "fold_macro_f1": [],
                                         "mean_macro_f1": float("nan"), "seconds": 0.0, "skipped": "time budget"})
                step += len(folds)
                continue
            scores = []
            oof = np.full((len(y), len(classes)), np.nan, dtype=np.float32)
            t_cand = time.perf_counter()
            pre, final = est.steps[0][1], est.steps[-1][1]
            over_budget = False
            for i_fold, (train, test) in enumerate(folds):
                check_cancel()
                if auto and i_cand > 0 and time.perf_counter() - t0 > self.config.time_budget_s:
                    over_budget = True  # checked per fold: one slow candidate must not run far past the budget
                    break
                if len(np.unique(y[train])) < 2:
                    continue
                Xtr, Xte = prep.get(i_fold, pre)
                fit_params = _weight_params(family, None if sample_weight is None else sample_weight[train], bare=True)
                if family == "mlp":
                    fit_params["on_epoch"] = check_cancel
                if family == "linear_svm" and auto and i_fold in warm:
                    fit_params["init"] = warm[i_fold]
                model = clone(final).fit(Xtr, y[train], **fit_params)
                if family == "linear_svm":
                    warm[i_fold] = (model.coef_, model.intercept_)
                scores.append(float(f1_score(y[test], model.predict(Xte), average="macro", labels=classes,
                                             zero_division=0)))
                oof[test] = estimator_proba(model, Xte, classes)
                step += 1
                if progress is not None:
                    progress({"step": step, "total": total, "phase": f"cv {family} {params}",
                              "score": float(np.mean(scores))})
            if over_budget:  # a candidate scored on some folds only is not comparable: skipped
                self.cv_results_.append({"family": family, "params": params, "fold_macro_f1": [],
                                         "mean_macro_f1": float("nan"), "seconds": round(time.perf_counter() - t_cand, 3),
                                         "skipped": f"time budget (after {len(scores)} of {len(folds)} folds)"})
                step += len(folds) - len(scores)
                continue
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
        """Refit on all labels, as the folds fitted: the probabilities of every item are then on the scale of
        the out-of-fold rows (a linear SVM: the softmax of its decision values), which is what the train job's
        calibration map (:mod:`core.models.calibration`) is fitted on. (An inner Platt scaling here, as before,
        put the published probabilities on another scale than the rows the map was fitted on, and cost three
        more fits.)"""
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
            "cv_results": [{**{k: r[k] for k in ("family", "params", "mean_macro_f1", "seconds")},
                            **({"skipped": r["skipped"]} if r.get("skipped") else {})} for r in self.cv_results_],
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


def _weight_params(family: str, sample_weight: np.ndarray | None, bare: bool = False) -> dict:
    """Pipeline fit parameters passing ``sample_weight`` to the final step of a weighted family
    (``bare``: the final step's own parameter name, for a fit without the pipeline)."""
    if sample_weight is None or family == "knn":
        return {}
    if bare:
        return {"sample_weight": np.asarray(sample_weight, dtype=np.float32)}
    step = {"linear_svm": "torchlinearsvm", "mlp": "torchmlp"}[family]
    return {f"{step}__sample_weight": np.asarray(sample_weight, dtype=np.float32)}


class _FoldCache:
    """Each fold's (train, test) rows of ``X`` (n, d) through a preprocessing step, fitted once per fold and
    kind of step and shared by every candidate with that step."""

    def __init__(self, X: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]):
        self.X, self.folds = X, folds
        self._cache: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}

    def get(self, fold: int, step) -> tuple[np.ndarray, np.ndarray]:
        """(X_train (n_train, d), X_test (n_test, d)) of ``fold`` transformed by a clone of ``step``."""
        key = (fold, repr(step))
        if key not in self._cache:
            train, test = self.folds[fold]
            fitted = clone(step).fit(self.X[train])
            self._cache[key] = (fitted.transform(self.X[train]), fitted.transform(self.X[test]))
        return self._cache[key]


def _loose_folds(n: int, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain shuffled k-fold, for label sets where some class has a single example."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    parts = np.array_split(perm, n_splits)
    return [(np.concatenate(parts[:i] + parts[i + 1 :]), parts[i]) for i in range(n_splits)]
