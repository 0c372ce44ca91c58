"""Estimated precision of pseudo-labels above a confidence threshold, from out-of-fold predictions.

A pseudo-label is the model's top class on an unlabelled item, accepted when its confidence is ``>= t``. Its
precision cannot be measured on the unlabelled items themselves, but the labelled items carry out-of-fold
(OOF) predictions: each was predicted by a model that did not see it, so an OOF row with confidence ``c``
stands for an unlabelled item with confidence ``c``. The estimate is

    precision(t) = (OOF rows with confidence >= t whose top class is the training label) / (OOF rows >= t)

with a Wilson score interval (default 95 %) and the count ``k`` it rests on. With no OOF row at or above
``t`` the precision is unknown (``status == "unknown"``), never 0 or 1.

In-sample (training) probabilities must not be used: a model is over-confident on the rows it was fitted
to, and the estimate would come out too high (``tests/test_pseudo_precision.py`` shows by how much).

:func:`threshold_for_precision` picks the smallest threshold whose Wilson LOWER bound reaches a target. The
lower bound, not the point estimate, because scanning thresholds for the first point estimate above the
target stops where noise happens to be favourable; the lower bound trades a few accepted items for a
precision that holds on new items (``bench/bench_pseudo_precision.py`` measures both).

Examples
--------
>>> import numpy as np
>>> from core.evaluation.precision import estimate_precision
>>> est = estimate_precision(np.array([0.99, 0.98, 0.7]), np.array([True, True, False]), 0.9)
>>> est.n, est.precision
(2, 1.0)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from core.errors import check_param

__all__ = ["PrecisionEstimate", "ThresholdChoice", "oof_confidence", "estimate_precision", "precision_curve",
           "threshold_for_precision", "reliability_table", "wilson_interval"]

#: z of the default two-sided 95 % Wilson interval
Z95 = 1.959963984540054


@dataclass(frozen=True)
class PrecisionEstimate:
    """Estimated precision of the pseudo-labels at confidence ``>= threshold``.

    Attributes
    ----------
    threshold : float
    n : int
        OOF rows with confidence >= threshold (what the estimate rests on).
    correct : int
        Those whose top class equals the training label.
    precision, lower, upper : float or None
        ``correct / n`` and its Wilson interval; None when ``n == 0``.
    status : str
        ``"estimated"`` or ``"unknown"`` (no OOF row at or above the threshold).
    reason : str or None
        Why the status is unknown.
    """

    threshold: float
    n: int
    correct: int
    precision: float | None
    lower: float | None
    upper: float | None
    status: str
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold :func:`threshold_for_precision` chose (``threshold`` None when no threshold reaches it)."""

    target: float
    criterion: str
    threshold: float | None
    estimate: PrecisionEstimate | None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the estimate nested)."""
        return {"target": self.target, "criterion": self.criterion, "threshold": self.threshold,
                "estimate": None if self.estimate is None else self.estimate.as_dict(), "reason": self.reason}


def _check_unit(owner: str, name: str, value: Any, *, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value)) and (0.0 < float(value) if open_low else 0.0 <= float(value))
    ok = ok and float(value) <= 1.0
    check_param(owner, name, value, ok, "a number in (0, 1]" if open_low else "a number in [0, 1]")
    return float(value)


def _check_pairs(owner: str, confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=float)
    ok_arr = np.asarray(correct)
    check_param(owner, "confidence", f"array of shape {conf.shape}", conf.ndim == 1, "a 1-D array (m,)")
    check_param(owner, "correct", f"array of shape {ok_arr.shape}", ok_arr.shape == conf.shape,
                f"a 1-D boolean array of the same length as 'confidence' ({conf.shape[0]})")
    check_param(owner, "correct", f"array of dtype {ok_arr.dtype}",
                ok_arr.dtype == np.bool_ or ok_arr.size == 0, "a boolean array")
    fin = np.isfinite(conf)
    check_param(owner, "confidence", "values outside [0, 1]",
                bool(np.all((conf[fin] >= 0) & (conf[fin] <= 1 + 1e-6))), "confidences in [0, 1] (NaN = no prediction)")
    return conf[fin], ok_arr.astype(bool)[fin]


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``correct / n`` (``n >= 1``)."""
    p = correct / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def oof_confidence(oof_proba: np.ndarray, classes: Sequence[str], train_labels: Sequence[Any]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Top-class confidence and correctness of each out-of-fold row.

    Parameters
    ----------
    oof_proba : np.ndarray, shape (m, k)
        Out-of-fold class probabilities of the labelled rows; rows with a NaN are dropped.
    classes : sequence of str, length k
        Class of each column.
    train_labels : sequence, length m
        The label each row was trained with.

    Returns
    -------
    confidence : np.ndarray, shape (m',), float
    correct : np.ndarray, shape (m',), bool
        Whether the top class equals the training label.
    """
    owner = "oof_confidence"
    p = np.asarray(oof_proba, dtype=float)
    lab = np.asarray(train_labels, dtype=object)
    check_param(owner, "oof_proba", f"array of shape {p.shape}", p.ndim == 2 and p.shape[1] == len(classes),
                f"an (m, k) array with one column per class ({len(classes)})")
    check_param(owner, "train_labels", f"{lab.shape[0]} labels", lab.ndim == 1 and lab.shape[0] == p.shape[0],
                f"one label per OOF row ({p.shape[0]})")
    keep = np.isfinite(p).all(axis=1)
    p, lab = p[keep], lab[keep]
    if p.shape[0] == 0:
        return np.zeros(0), np.zeros(0, bool)
    top = p.argmax(axis=1)
    names = np.asarray([str(c) for c in classes], dtype=object)
    return p[np.arange(p.shape[0]), top], names[top] == np.asarray([str(v) for v in lab], dtype=object)


def estimate_precision(confidence: np.ndarray, correct: np.ndarray, threshold: float, *,
                       z: float = Z95) -> PrecisionEstimate:
    """Precision of the OOF rows with ``confidence >= threshold``, with a Wilson interval.

    Parameters
    ----------
    confidence : np.ndarray, shape (m,)
        Top-class confidence of each OOF row (NaN rows are ignored).
    correct : np.ndarray, shape (m,), bool
        Whether each row's top class is its label.
    threshold : float
        In [0, 1].
    z : float
        z of the interval (1.96: 95 %).

    Returns
    -------
    PrecisionEstimate
        ``status == "unknown"`` (precision None) when no OOF row reaches the threshold.
    """
    owner = "estimate_precision"
    t = _check_unit(owner, "threshold", threshold)
    conf, ok = _check_pairs(owner, confidence, correct)
    above = conf >= t
    n, k = int(above.sum()), int(ok[above].sum())
    if n == 0:
        why = ("no out-of-fold prediction" if conf.size == 0
               else f"no out-of-fold prediction has confidence >= {t:.2f} (highest {conf.max():.3f})")
        return PrecisionEstimate(t, 0, 0, None, None, None, "unknown", why)
    lo, hi = wilson_interval(k, n, z)
    return PrecisionEstimate(t, n, k, k / n, lo, hi, "estimated")


def precision_curve(confidence: np.ndarray, correct: np.ndarray, thresholds: Sequence[float], *,
                    z: float = Z95) -> list[PrecisionEstimate]:
    """:func:`estimate_precision` at each threshold (one sort, then cumulative counts)."""
    return [estimate_precision(confidence, correct, float(t), z=z) for t in thresholds]


def threshold_for_precision(confidence: np.ndarray, correct: np.ndarray, target: float, *,
                            criterion: str = "lower", min_count: int = 1, z: float = Z95) -> ThresholdChoice:
    """The smallest threshold whose estimated precision reaches ``target``.

    Candidate thresholds are the distinct OOF confidences (a threshold between two of them accepts the same
    OOF rows as the next one up). With ``criterion="lower"`` (default) the Wilson lower bound must reach the
    target, with ``"estimate"`` the point estimate; either way at least ``min_count`` OOF rows must lie above.

    Parameters
    ----------
    confidence : np.ndarray, shape (m,)
    correct : np.ndarray, shape (m,), bool
    target : float
        Precision wanted, in (0, 1].
    criterion : {"lower", "estimate"}
    min_count : int
        Fewest OOF rows an estimate may rest on (>= 1).
    z : float
        z of the interval.

    Returns
    -------
    ThresholdChoice
        ``threshold`` None (with a reason) when no threshold reaches the target.
    """
    owner = "threshold_for_precision"
    target = _check_unit(owner, "target", target, open_low=True)
    check_param(owner, "criterion", criterion, criterion in ("lower", "estimate"), "'lower' or 'estimate'")
    check_param(owner, "min_count", min_count,
                isinstance(min_count, (int, np.integer)) and not isinstance(min_count, bool) and min_count >= 1,
                "an int >= 1")
    conf, ok = _check_pairs(owner, confidence, correct)
    if conf.size == 0:
        return ThresholdChoice(target, criterion, None, None, "no out-of-fold predictions: precision unknown")
    order = np.argsort(-conf, kind="stable")
    c, hit = conf[order], ok[order]
    n_at = np.arange(1, c.size + 1)
    k_at = np.cumsum(hit)
    last = np.r_[c[1:] != c[:-1], True]  # the last row of each group of equal confidences
    n, k, t = n_at[last], k_at[last], c[last]
    p = k / n
    if criterion == "lower":
        den = 1 + z * z / n
        score = (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / den
    else:
        score = p
    good = np.flatnonzero((score >= target - 1e-12) & (n >= min_count))
    if good.size == 0:
        best = float(score[n >= min_count].max()) if np.any(n >= min_count) else float("nan")
        what = "lower bound" if criterion == "lower" else "estimated precision"
        return ThresholdChoice(target, criterion, None, None,
                               f"no threshold reaches {target:.1%} (best {what} {best:.1%} on >= {min_count} "
                               f"out-of-fold predictions)")
    j = int(good[-1])  # the lowest threshold (most rows) that qualifies
    thr = float(t[j])
    return ThresholdChoice(target, criterion, thr, estimate_precision(conf, ok, thr, z=z))


def reliability_table(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Reliability diagram data: per confidence bin, the count, mean confidence and accuracy.

    Bins split [0, 1] into ``n_bins`` equal parts (1.0 in the last). Empty bins have count 0 and
    confidence / accuracy None.

    Returns
    -------
    list of dict
        lo, hi, count, confidence, accuracy: one per bin, low to high.
    """
    owner = "reliability_table"
    check_param(owner, "n_bins", n_bins,
                isinstance(n_bins, (int, np.integer)) and not isinstance(n_bins, bool) and n_bins >= 1, "an int >= 1")
    conf, ok = _check_pairs(owner, confidence, correct)
    b = np.clip(np.floor(np.clip(conf, 0, 1) * n_bins).astype(np.int64), 0, n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins)
    s_conf = np.bincount(b, weights=conf, minlength=n_bins)
    s_ok = np.bincount(b, weights=ok.astype(float), minlength=n_bins)
    return [{"lo": i / n_bins, "hi": (i + 1) / n_bins, "count": int(cnt[i]),
             "confidence": float(s_conf[i] / cnt[i]) if cnt[i] else None,
             "accuracy": float(s_ok[i] / cnt[i]) if cnt[i] else None} for i in range(n_bins)]
