"""The "iic" trainer: :class:`~core.models.iic.model.IICModel` on a project, with calibration split and warm start.

Inputs: the MLP (``backbone="auto"``/``"mlp"``) trains on the cached features ``ctx.X`` (or one view of them,
``view``), with neighbour pairs from a faiss k-NN graph of the same features; the CNNs decode the items' media
once (:func:`core.models.pseudo_label.model.make_inputs`: images at ``image_size``, or spectrogram blocks for
audio) and default to augmentation pairs (their neighbour pairs come from the cached features).
``ctx.params`` override :class:`~core.models.iic.config.IICConfig` fields.

Outputs
-------
* ``proba`` (n, C): the best main sub-head's soft assignment @ the Hungarian cluster -> class matrix. With no
  confirmed label, cluster ``j`` is named after class ``j`` only to fill the columns and
  ``metrics["suggests_classes"]`` is False (the pages show clusters, not classes).
* ``clusters`` (n,): main-head argmax; ``arrays["overclusters"]`` (n,) int64 when the overclustering head
  exists; ``embeddings`` (n, embed_dim): the trunk output.
* ``oof_proba`` (m, C): the predictions of the calibration split (``calibration_fraction`` of each class's
  confirmed labels, held out of the cross-entropy and of the mapping), NaN for the other labelled rows; None
  (with ``oof_reason``) without labels or when no class has two labels.
* ``metrics["iic"]``: :meth:`IICModel.summary` plus ``warm_start``, ``warm_start_reason``, ``seconds``,
  ``calibration_split``.
* artefact ``iic_state`` (``<run_dir>/iic_state.npz``, a plain tree of :mod:`core.io.artefacts`: no pickle):
  NumPy weights, config, classes, k, input shape; the next run starts from it when k, the label set, the
  backbone, the input shape and the architecture are unchanged (the reason is recorded either way).
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from core.errors import TrainingError, check_choice
from core.models.context import TrainContext, TrainOutput
from core.models.iic.config import OWNER, WARM_IGNORED, IICConfig
from core.models.iic.model import IICModel, as_inputs

STATE_NAME = "iic_state"


def train_iic(ctx: TrainContext) -> TrainOutput:
    """Fit IIC on ``ctx`` and return probabilities, clusters, overclusters, embeddings and the IIC report."""
    from core.models.pseudo_label.model import split_validation

    t0 = time.perf_counter()
    config = IICConfig.from_params(ctx.params).validate()
    if not ctx.classes:
        raise TrainingError("IIC names its clusters after the project's labels, and the project has none yet: "
                            "add the label set first (import with labels, or create the project with --labels).")
    config = config.resolved(len(ctx.classes))
    ctx.progress({"phase": "decode inputs", "step": 0, "total": 1})
    data, features = _inputs(ctx, config)
    index = {c: j for j, c in enumerate(ctx.classes)}
    labelled = np.asarray(ctx.labelled, np.int64)
    y = np.asarray(ctx.y, dtype=object)
    y_cls = np.array([index[str(v)] for v in y.tolist()], np.int64)
    train_pos, cal_pos = split_validation(y_cls, config.calibration_fraction, config.seed) if len(labelled) \
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    weight = None if ctx.sample_weight is None else np.asarray(ctx.sample_weight, np.float32)
    state, why = _previous_state(ctx, config, tuple(_input_shape(config, data)))
    model = IICModel(config, device=ctx.device).fit(
        data, labelled_idx=labelled[train_pos], y=y[train_pos], classes=ctx.classes, init_from=state,
        sample_weight=None if weight is None else weight[train_pos],
        pair_features=features if config.pairs == "neighbours" else None,
        progress=ctx.progress, should_cancel=ctx.should_cancel)
    proba = (model.soft_ @ model.cluster_class_).astype(np.float32)
    oof, oof_reason = _calibration_rows(proba, labelled, cal_pos, len(ctx.classes))
    report = {**model.summary(), "warm_start": state is not None, "warm_start_reason": why,
              "calibration_split": {"n_train": int(len(train_pos)), "n_calibration": int(len(cal_pos)),
                                    "fraction": config.calibration_fraction},
              "label_source": "hungarian" if len(labelled) else "none (clusters named in class order)",
              "view": config.view, "seconds": round(time.perf_counter() - t0, 3)}
    metrics = {"iic": report, "suggests_classes": bool(len(labelled))}
    arrays = {} if model.overclusters_ is None else {"overclusters": model.overclusters_.astype(np.int64)}
    return TrainOutput(proba=proba, config=asdict(model.config), metrics=metrics,
                       artefacts={STATE_NAME: model.state_dict()}, embeddings=model.embedding_.astype(np.float32),
                       clusters=model.clusters_.astype(np.int64), oof_proba=oof, oof_reason=oof_reason, arrays=arrays)


def _inputs(ctx: TrainContext, config: IICConfig):
    """(model inputs, features of the k-NN graph (n, d)): the cached features (or one view) for the MLP, the
    decoded media for the CNNs."""
    if config.view is not None:
        check_choice(OWNER, "view", config.view, list(ctx.views or {}))
    features = np.asarray(ctx.view(config.view) if config.view else ctx.X, np.float32)
    if config.backbone == "mlp":
        return as_inputs(features, device=ctx.device), features
    from core.models.pseudo_label.model import PseudoLabelConfig, make_inputs

    if ctx.items is None:
        raise TrainingError(f"IIC's {config.backbone} backbone trains on the items' media files, and none were "
                            "given: use backbone='mlp' on the cached features.")
    data, _ = make_inputs(ctx, PseudoLabelConfig(variant="finetune", image_size=int(config.image_size)).validate())
    return data, features


def _input_shape(config: IICConfig, data) -> list[int]:
    """The network's input shape of ``data`` without the batch axis (what a warm start must match)."""
    if config.backbone == "mlp":
        return [int(data.x.shape[1])]
    c = 2 if config.sobel else (1 if config.backbone == "small_cnn" else 3)
    return [c, int(data.x.shape[2]), int(data.x.shape[3])]


def _calibration_rows(proba: np.ndarray, labelled: np.ndarray, cal_pos: np.ndarray, C: int
                      ) -> tuple[np.ndarray | None, str | None]:
    """Out-of-sample probabilities (m, C) of the labelled rows (the calibration split; NaN elsewhere), or None
    and why."""
    if not len(labelled):
        return None, "no confirmed labels: the run suggests clusters, not classes"
    if not len(cal_pos):
        return None, "no class has two confirmed labels, so no calibration split could be held out"
    oof = np.full((len(labelled), C), np.nan, np.float32)
    oof[cal_pos] = proba[labelled[cal_pos]]
    return oof, None


def _previous_state(ctx: TrainContext, config: IICConfig, in_shape: tuple[int, ...]) -> tuple[dict | None, str]:
    """The previous run's IIC state when a warm start is allowed, else None; and why."""
    from core.models.context import load_previous_state

    state, why = load_previous_state(ctx, STATE_NAME, "IIC", config.warm_start)
    if state is None:
        return None, why
    changes = []
    if state.get("k") != config.k or state.get("k_over") != config.k_over:
        changes.append(f"k changed ({state.get('k')}/{state.get('k_over')} -> {config.k}/{config.k_over})")
    if list(state.get("classes", [])) != [str(c) for c in ctx.classes]:
        changes.append("the label set changed")
    if state.get("backbone") != config.backbone:
        changes.append(f"backbone changed ({state.get('backbone')} -> {config.backbone})")
    if tuple(state.get("input_shape", ())) != tuple(in_shape):
        changes.append(f"input shape changed ({tuple(state.get('input_shape', ()))} -> {tuple(in_shape)})")
    old = {k: v for k, v in state.get("config", {}).items() if k not in WARM_IGNORED}
    new = {k: v for k, v in asdict(config).items() if k not in WARM_IGNORED}
    other = sorted(k for k in new if old.get(k) != new[k] and k not in ("k", "backbone", "overcluster_factor"))
    if other:
        changes.append(f"config changed ({', '.join(other)})")
    if changes:
        return None, "; ".join(changes)
    return state, why

