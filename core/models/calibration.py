"""Calibration of class probabilities: error measures and a map fitted on out-of-fold predictions.

A model's probabilities are only as trustworthy as their calibration: among items given confidence 0.9, about
90% should be right. This module measures that on out-of-sample predictions (the out-of-fold probabilities of
the confirmed items, which the model did not train on) and learns a map that corrects it, applied to every item:

- :func:`ece`, :func:`brier`, :func:`reliability_table`: top-label expected calibration error (Guo et al.,
  2017), the multi-class Brier score and the reliability table behind the ECE.
- :func:`fit_temperature` / :func:`apply_temperature`: temperature scaling, one parameter ``T > 0`` fitted by
  minimising the negative log-likelihood of ``softmax(log p / T)``; it keeps the ranking of every row.
- :class:`Calibrator`: chooses the map from the number of out-of-fold labels (see :class:`CalibrationConfig`):
  nothing (calibration "cannot be estimated") below a minimum, temperature scaling by default, isotonic
  regression one-vs-rest (scikit-learn's ``IsotonicRegression``, rows renormalised) when every class has
  enough labels for a non-parametric map.

Every function takes class *indices* ``y`` (m,) into the columns of ``proba`` (m, k).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import ValidationError, check_choice, check_param

EPS = 1e-7  # probabilities are clipped to [EPS, 1] before the logarithm of temperature scaling


def _check(owner: str, proba: np.ndarray, y: np.ndarray, *,
           probabilities: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 ``proba`` (m, k) and int64 ``y`` (m,)."""
    p = np.asarray(proba, dtype=np.float64)
    check_param(owner, "proba", f"an array of shape {p.shape}", p.ndim == 2 and p.shape[1] >= 1,
                "a 2-D array (m, k) with k >= 1 columns")
    check_param(owner, "proba", "an array with NaN or infinite values", bool(np.isfinite(p).all()),
                "finite (drop the rows no fold predicted first)")
    if probabilities and len(p):
        sums = p.sum(1)
        bad = np.flatnonzero((p < -1e-6).any(1) | (np.abs(sums - 1.0) > 1e-3))
        check_param(owner, "proba", f"row {int(bad[0])} summing to {sums[bad[0]]:.4g} (min {p[bad[0]].min():.4g})"
                    if len(bad) else "", len(bad) == 0, "rows of non-negative values summing to 1")
    y_arr = np.asarray(y)
    check_param(owner, "y", f"an array of shape {y_arr.shape}", y_arr.ndim == 1 and len(y_arr) == len(p),
                f"a 1-D array of {len(p)} class indices (one per row of proba)")
    check_param(owner, "y", f"an array of dtype {y_arr.dtype}", y_arr.dtype.kind in "iu" or len(y_arr) == 0,
                "integer class indices")
    y_arr = y_arr.astype(np.int64)
    if len(y_arr):
        bad = y_arr[(y_arr < 0) | (y_arr >= p.shape[1])]
        check_param(owner, "y", f"class indices such as {int(bad[0])}" if len(bad) else "", len(bad) == 0,
                    f"class indices in [0, {p.shape[1] - 1}]")
    return p, y_arr


def _check_bins(owner: str, n_bins: int) -> None:
    check_param(owner, "n_bins", n_bins, isinstance(n_bins, (int, np.integer)) and not isinstance(n_bins, bool)
                and n_bins >= 1, "an int >= 1")


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence (m,): bin b holds (b/n, (b+1)/n]; a confidence of 0 goes to bin 0."""
    return np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_table(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> dict[str, list]:
    """Top-label reliability table in equal-width confidence bins.

    Parameters
    ----------
    proba : ndarray (m, k)
        Class probabilities, rows summing to 1.
    y : ndarray (m,) int
        True class index of each row.
    n_bins : int
        Number of equal-width bins over [0, 1]; bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]``.

    Returns
    -------
    dict
        ``edges`` (n_bins + 1,) bin edges, ``count`` (n_bins,) rows per bin, ``confidence`` (n_bins,) mean top
        probability of the bin's rows and ``accuracy`` (n_bins,) share of them whose top class is right
        (None for an empty bin).
    """
    p, y = _check("reliability_table", proba, y)
    _check_bins("reliability_table", n_bins)
    conf, hit = p.max(1), (p.argmax(1) == y).astype(np.float64)
    b = _bin_index(conf, n_bins)
    count = np.bincount(b, minlength=n_bins)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(b, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, hit_sum / count
    return {"edges": [float(e) for e in np.linspace(0.0, 1.0, n_bins + 1)],
            "count": [int(c) for c in count],
            "confidence": [None if c == 0 else float(v) for c, v in zip(count, mean_conf)],
            "accuracy": [None if c == 0 else float(v) for c, v in zip(count, acc)]}


def ece(proba: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error: ``sum_b |B_b|/m * |accuracy(B_b) - confidence(B_b)|``.

    Parameters
    ----------
    proba : ndarray (m, k)
        Class probabilities, rows summing to 1.
    y : ndarray (m,) int
        True class index of each row.
    n_bins : int
        Equal-width confidence bins (see :func:`reliability_table`).

    Returns
    -------
    float
        In [0, 1]; NaN for no rows.
    """
    table = reliability_table(proba, y, n_bins)
    m = sum(table["count"])
    if m == 0:
        return float("nan")
    return float(sum(c / m * abs(a - f) for c, a, f in zip(table["count"], table["accuracy"], table["confidence"])
                     if c))


def brier(proba: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of ``sum_j (p_j - [y == j])**2``, in [0, 2]; NaN for no rows.

    Parameters
    ----------
    proba : ndarray (m, k)
    y : ndarray (m,) int
    """
    p, y = _check("brier", proba, y)
    if len(p) == 0:
        return float("nan")
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(1).mean())


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, EPS, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(proba_or_logits: np.ndarray, y: np.ndarray, *, logits: bool = False,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature ``T`` minimising the negative log-likelihood of ``softmax(z / T)``.

    Parameters
    ----------
    proba_or_logits : ndarray (m, k)
        Probabilities (``z = log p``, clipped at :data:`EPS`) or, with ``logits=True``, logits ``z``.
    y : ndarray (m,) int
        True class index of each row.
    logits : bool
        Whether the first argument holds logits.
    bounds : (float, float)
        Search interval of ``T`` (bounded scalar search on ``log T``).

    Returns
    -------
    float
        ``T > 1`` softens over-confident predictions, ``T < 1`` sharpens under-confident ones.
    """
    from scipy.optimize import minimize_scalar

    z, y = _check("fit_temperature", proba_or_logits, y, probabilities=not logits)
    check_param("fit_temperature", "y", "no rows", len(y) >= 1, "at least one labelled row")
    check_param("fit_temperature", "bounds", bounds, 0 < bounds[0] < bounds[1], "(low, high) with 0 < low < high")
    if not logits:
        z = _log(z)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[np.arange(len(y)), y]).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def apply_temperature(proba_or_logits: np.ndarray, temperature: float, *, logits: bool = False) -> np.ndarray:
    """``softmax(z / T)`` (m, k) with ``z = log p`` (or the logits); a column that is 0 in every row stays 0
    (a class the model never predicts, e.g. one without labels)."""
    check_param("apply_temperature", "temperature", temperature, temperature > 0, "a float > 0")
    z = np.asarray(proba_or_logits, dtype=np.float64)
    dead = np.zeros(z.shape[1], bool) if logits else (z <= 0).all(0)
    out = _softmax((z if logits else _log(z)) / temperature)
    if dead.any() and not dead.all():
        out[:, dead] = 0.0
        out /= out.sum(1, keepdims=True)
    return out


@dataclass(frozen=True)
class CalibrationConfig:
    """How :class:`Calibrator` chooses its map from the out-of-fold labels.

    The rule, with ``n_c`` the number of out-of-fold labels of class ``c`` (over the classes that have labels):

    - ``min(n_c) < min_per_class`` or ``sum(n_c) < min_total``: calibration cannot be estimated (status
      ``"unknown"``): the probabilities are left as they are and the run says its confidence is unknown.
    - ``method="auto"``: isotonic one-vs-rest when ``min(n_c) >= isotonic_min_per_class`` (a non-parametric
      map per class needs many labels of it), else temperature scaling (one parameter: safe with few labels).
    - ``method="temperature"`` or ``"isotonic"`` force the map (above the minimum).

    Parameters
    ----------
    method : {"auto", "temperature", "isotonic"}
    min_per_class : int
        Fewest out-of-fold labels per labelled class to calibrate at all (default 2).
    min_total : int
        Fewest out-of-fold labels in all to calibrate at all (default 20).
    isotonic_min_per_class : int
        Fewest out-of-fold labels per class for ``"auto"`` to choose isotonic regression (default 50).
    n_bins : int
        Bins of the ECE and of the reliability table (default 15).
    """

    method: str = "auto"
    min_per_class: int = 2
    min_total: int = 20
    isotonic_min_per_class: int = 50
    n_bins: int = 15

    def __post_init__(self) -> None:
        check_choice("CalibrationConfig", "method", self.method, ("auto", "temperature", "isotonic"))
        for name in ("min_per_class", "min_total", "isotonic_min_per_class", "n_bins"):
            v = getattr(self, name)
            check_param("CalibrationConfig", name, v, isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                        "an int >= 1")


class Calibrator:
    """A calibration map fitted on out-of-fold probabilities and applied to any probabilities of the model.

    After :meth:`fit`: ``status_`` is ``"calibrated"`` or ``"unknown"`` (with ``reason_``), ``method_`` is
    ``"temperature"``, ``"isotonic"`` or None, ``temperature_`` the fitted temperature (None for isotonic).

    Parameters
    ----------
    config : CalibrationConfig, optional
    """

    def __init__(self, config: CalibrationConfig | None = None):
        self.config = config or CalibrationConfig()
        self.status_: str | None = None
        self.reason_: str | None = None
        self.method_: str | None = None
        self.temperature_: float | None = None
        self.isotonic_: list | None = None
        self.n_: int = 0
        self.oof_cross_fitted_: np.ndarray | None = None  # set by calibration_report

    def estimable(self, y: np.ndarray, labelled_classes: np.ndarray | None = None) -> str | None:
        """Why calibration cannot be estimated from out-of-fold labels ``y`` (m,), or None when it can.

        ``labelled_classes`` (c,) int: the classes that have labels (default: those in ``y``); a labelled class
        no fold predicted counts with 0 out-of-fold labels.
        """
        cfg = self.config
        y = np.asarray(y, dtype=np.int64)
        classes = np.unique(y) if labelled_classes is None else np.unique(np.asarray(labelled_classes, np.int64))
        counts = {int(c): int((y == c).sum()) for c in classes}
        if len(y) < cfg.min_total:
            return f"too few labels: {len(y)} out-of-fold predictions, at least {cfg.min_total} needed"
        low = {c: n for c, n in counts.items() if n < cfg.min_per_class}
        if low:
            return (f"too few labels per class: {len(low)} class(es) with fewer than {cfg.min_per_class} "
                    f"out-of-fold predictions (fewest: {min(low.values())})")
        return None

    def fit(self, proba: np.ndarray, y: np.ndarray, *, labelled_classes: np.ndarray | None = None) -> "Calibrator":
        """Fit the map on out-of-fold ``proba`` (m, k) and true class indices ``y`` (m,).

        Below the minimum of :class:`CalibrationConfig` nothing is fitted and ``status_`` is ``"unknown"``.
        """
        p, y = _check("Calibrator", proba, y)
        self.n_ = len(y)
        self.method_ = self.temperature_ = self.isotonic_ = None
        reason = self.estimable(y, labelled_classes)
        if reason is not None:
            self.status_, self.reason_ = "unknown", reason
            return self
        self.status_, self.reason_ = "calibrated", None
        counts = np.bincount(y, minlength=p.shape[1])
        present = counts[counts > 0] if labelled_classes is None else counts[np.asarray(labelled_classes, np.int64)]
        method = self.config.method
        if method == "auto":
            method = "isotonic" if present.min() >= self.config.isotonic_min_per_class else "temperature"
        self.method_ = method
        if method == "temperature":
            self.temperature_ = fit_temperature(p, y)
        else:
            from sklearn.isotonic import IsotonicRegression

            self.isotonic_ = [None if counts[j] == 0 else
                              IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
                              .fit(p[:, j], (y == j).astype(np.float64)) for j in range(p.shape[1])]
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, k) float64 of ``proba`` (n, k); unchanged when ``status_`` is "unknown".

        Isotonic maps are applied per column and the rows renormalised; a row every map sends to 0 keeps its
        original probabilities.
        """
        if self.status_ is None:
            raise ValidationError("The Calibrator is not fitted: call fit(proba, y) first.")
        p = np.asarray(proba, dtype=np.float64)
        check_param("Calibrator", "proba", f"an array of shape {p.shape}", p.ndim == 2, "a 2-D array (n, k)")
        if self.status_ == "unknown" or len(p) == 0:
            return p.copy()
        if self.method_ == "temperature":
            return apply_temperature(p, self.temperature_)
        out = np.zeros_like(p)
        for j, iso in enumerate(self.isotonic_):
            if iso is not None:
                out[:, j] = iso.predict(p[:, j])
        s = out.sum(1, keepdims=True)
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), p)


def stratified_parts(y: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Stratified part of each row (m,) int64 in ``[0, n_splits)``: each class's rows ``y`` (m,) dealt
    round-robin in a random order (from a random starting part), so every class is spread over the parts."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    part = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        part[idx] = (np.arange(len(idx)) + rng.integers(n_splits)) % n_splits
    return part


def cross_fitted(proba: np.ndarray, y: np.ndarray, method: str, *, n_splits: int = 2,
                 random_state: int = 0) -> np.ndarray:
    """Out-of-sample calibrated probabilities (m, k) of the calibration data itself.

    The rows are split in ``n_splits`` stratified parts; each part is transformed by the map ``method``
    fitted on the other parts, so the ECE of the result is not the in-sample fit of the map. A part whose
    complement lacks labels keeps its probabilities.

    Parameters
    ----------
    proba : ndarray (m, k)
    y : ndarray (m,) int
    method : {"temperature", "isotonic"}
    """
    check_choice("cross_fitted", "method", method, ("temperature", "isotonic"))
    p, y = _check("cross_fitted", proba, y)
    part = stratified_parts(y, n_splits, random_state)
    out = p.copy()
    loose = CalibrationConfig(method=method, min_per_class=1, min_total=1)
    for k in range(n_splits):
        test, train = part == k, part != k
        if test.any() and train.any():
            out[test] = Calibrator(loose).fit(p[train], y[train]).transform(p[test])
    return out


def calibration_report(oof_proba: np.ndarray, y: np.ndarray, *, labelled_classes: np.ndarray | None = None,
                       config: CalibrationConfig | None = None) -> tuple[Calibrator, dict]:
    """Fit a :class:`Calibrator` on out-of-fold predictions and measure it honestly.

    Parameters
    ----------
    oof_proba : ndarray (m, k)
        Out-of-fold probabilities of the labelled rows; rows with NaN (no fold predicted them) are dropped.
    y : ndarray (m,) int
        True class index of each row.
    labelled_classes : ndarray (c,) int, optional
        Classes with labels (a labelled class without out-of-fold rows then blocks calibration).
    config : CalibrationConfig, optional

    Returns
    -------
    (Calibrator, dict)
        The fitted calibrator (apply ``transform`` to every item) and the record: ``status``, ``method``,
        ``temperature``, ``n`` (out-of-fold rows used), ``n_bins``, ``ece_before``, ``ece_after``,
        ``brier_before``, ``brier_after``, ``reliability_before``, ``reliability`` (table of the calibrated
        out-of-fold rows) and ``reason`` (why calibration is unknown, else None). ``*_after`` are cross-fitted
        (:func:`cross_fitted`): each half is calibrated by the map of the other half. The calibrator's
        ``oof_cross_fitted_`` (m, k) holds those cross-fitted rows (NaN where ``oof_proba`` was, and everywhere
        when calibration is unknown: then it is None).
    """
    cal = Calibrator(config)
    p = np.asarray(oof_proba, dtype=np.float64)
    check_param("calibration_report", "oof_proba", f"an array of shape {p.shape}", p.ndim == 2, "a 2-D array (m, k)")
    keep = np.isfinite(p).all(1)
    check_param("calibration_report", "y", f"an array of shape {np.shape(y)}", np.shape(y) == (len(p),),
                f"a 1-D array of {len(p)} class indices (one per row of oof_proba)")
    full = p
    p, y = _check("calibration_report", p[keep], np.asarray(y)[keep])
    cal.fit(p, y, labelled_classes=labelled_classes)
    nb = cal.config.n_bins
    record: dict = {"status": cal.status_, "method": cal.method_, "temperature": cal.temperature_, "n": int(len(y)),
                    "n_bins": nb, "reason": cal.reason_}
    if len(y):
        record.update(ece_before=ece(p, y, nb), brier_before=brier(p, y),
                      reliability_before=reliability_table(p, y, nb))
    else:
        record.update(ece_before=None, brier_before=None, reliability_before=None)
    cal.oof_cross_fitted_ = None
    if cal.status_ == "calibrated":
        after = cross_fitted(p, y, cal.method_)
        cal.oof_cross_fitted_ = np.full(full.shape, np.nan)
        cal.oof_cross_fitted_[keep] = after
        record.update(ece_after=ece(after, y, nb), brier_after=brier(after, y),
                      reliability=reliability_table(after, y, nb))
    else:
        record.update(ece_after=None, brier_after=None, reliability=None)
    return cal, record


def unknown_record(reason: str) -> dict:
    """The calibration record of a run whose calibration cannot be estimated at all (same keys as
    :func:`calibration_report`)."""
    return {"status": "unknown", "method": None, "temperature": None, "n": 0, "n_bins": None, "reason": reason,
            "ece_before": None, "brier_before": None, "reliability_before": None, "ece_after": None,
            "brier_after": None, "reliability": None}
