"""Out-of-fold class probabilities of DEC's labelled items, for calibration and the model-aware consensus.

A DEC run trains on its confirmed labels (the cross-entropy term and the Hungarian mapping), so its own
probabilities of those items are in-sample and over-confident. Here the labelled rows are split into
``folds`` stratified parts; for each part a DEC is fitted **from the same label-free start** as the run (the
pretrained autoencoder and its initial partition, which saw no label) on all items with the labels of the
other parts only, and its mapped probabilities of the held-out part are that part's out-of-fold rows. This is
scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` recipe: the calibration map is learned on the fold
models' predictions and applied to the final model, which trained on every label.

Cost: ``folds`` more clustering phases (no pretraining, no initial partition): on MNIST-5k with the default
config about the clustering share of one run per fold (``bench/bench_calibration.py`` records the seconds).
With too few labels for a calibration to be estimated (:class:`core.models.calibration.CalibrationConfig`)
no fold is fitted and the reason is returned instead.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from core.models.calibration import Calibrator, stratified_parts
from core.models.dec.config import DECConfig


def dec_out_of_fold(
    config: DECConfig,
    views: Sequence[np.ndarray],
    start: dict,
    labelled: np.ndarray,
    y: np.ndarray,
    classes: Sequence[str],
    *,
    sample_weight: np.ndarray | None = None,
    device: str = "cpu",
    progress: Callable[[dict], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray | None, dict]:
    """Out-of-fold probabilities (m, C) of the labelled rows, or None and the reason.

    Parameters
    ----------
    config : DECConfig            the run's config; ``config.oof_folds`` parts (0: none)
    views : list of ndarray (n, d_b)
    start : dict                  a label-free :meth:`MultiModalDEC.state_dict` (``init_state_`` of a fresh fit)
    labelled : ndarray (m,) int   rows of the labelled items
    y : ndarray (m,)              their labels (members of ``classes``)
    classes : sequence of str (C,)
    sample_weight : ndarray (m,) | None

    Returns
    -------
    (ndarray (m, C) float32 or None, dict)
        Rows in the order of ``labelled``, columns in the order of ``classes``; the record has ``folds``,
        ``seconds`` per fold and ``reason`` (why there are none, else None).
    """
    import time

    from core.models.dec.model import MultiModalDEC

    folds = int(config.oof_folds)
    if folds == 0:
        return None, {"folds": 0, "reason": "disabled (oof_folds=0)"}
    index = {c: j for j, c in enumerate(classes)}
    y_cls = np.array([index[str(v)] for v in y], dtype=np.int64)
    why = Calibrator().estimable(y_cls)
    if why is not None:
        return None, {"folds": folds, "reason": f"no out-of-fold fits: {why}"}
    part = stratified_parts(y_cls, folds, config.seed)
    weight = None if sample_weight is None else np.asarray(sample_weight, np.float32)
    oof = np.full((len(labelled), len(classes)), np.nan, np.float32)
    seconds: list[float] = []
    fold_config = replace(config, oof_folds=0)
    for k in range(folds):
        test, train = part == k, part != k
        if not test.any() or not train.any():
            continue

        def report(info: dict, _k: int = k) -> None:
            if progress is not None:
                progress({**info, "phase": f"calibration fold {_k + 1}/{folds} {info.get('phase', '')}".strip()})

        t0 = time.perf_counter()
        model = MultiModalDEC(fold_config, device=device).fit(
            views, labelled_idx=labelled[train], y=np.asarray(y)[train], classes=classes, init_from=start,
            sample_weight=None if weight is None else weight[train], progress=report, should_cancel=should_cancel)
        oof[test] = (model.soft_[labelled[test]] @ np.asarray(model.cluster_class_, np.float64)).astype(np.float32)
        seconds.append(round(time.perf_counter() - t0, 3))
    return oof, {"folds": folds, "seconds": seconds, "reason": None,
                 "start": "the run's label-free start (pretrained autoencoder + initial partition)"}
