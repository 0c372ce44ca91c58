"""The "reid" trainer: :class:`~core.models.reid.model.ReidModel` on a project, with annotators' links and warm start.

Inputs: the light variant (``variant="head"``, default) trains a projection head on the cached features
``ctx.X``; ``"finetune"`` decodes the items' crops at ``height x width`` and trains the backbone. The camera of
an item is its ``group`` column (proxies split clusters by camera; no group anywhere: one proxy per cluster).
Confirmed identity labels (``ctx.labelled`` / ``ctx.y``) and confirmed pair decisions (``ctx.pair_links``)
become must-links and cannot-links of every epoch's clustering (:mod:`core.models.reid.links`).

Outputs
-------
* ``clusters`` (n,): the final pseudo-identities, -1 for outliers; ``embeddings`` (n, e) unit rows;
  ``arrays["identity_confidence"]`` (n,): soft assignment to the own cluster (0 for outliers).
* ``proba`` (n, C) over the project's identity labels: softmax over the labels' prototypes (normalised mean
  embedding of each label's confirmed items) at temperature ``tau``; a label with no confirmed item gets
  probability 0; all zeros when no label is confirmed yet (the run then publishes no label, only clusters). Out-of-sample predictions are not produced: the
  run's calibration is "unknown".
* ``metrics["reid"]``: :meth:`ReidModel.summary` plus ``warm_start``, ``warm_start_reason``, cameras used.
* artefact ``reid_state``: NumPy weights, config and the network signature for the next warm start.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from core.errors import TrainingError
from core.models.context import TrainContext, TrainOutput, load_previous_state
from core.models.reid.config import WARM_IGNORED, ReidConfig
from core.models.reid.links import combine_links
from core.models.reid.model import ReidModel, signature

STATE_NAME = "reid_state"


def train_reid(ctx: TrainContext) -> TrainOutput:
    """Fit the re-identification model on ``ctx`` and return clusters, embeddings, confidences and the report."""
    t0 = time.perf_counter()
    config = ReidConfig.from_params(ctx.params).validate()
    ctx.progress({"phase": "decode inputs", "step": 0, "total": 1})
    data = _inputs(ctx, config)
    cams, camera_values = _cameras(ctx, config)
    links = combine_links(len(ctx.item_ids), ctx.labelled, ctx.y, getattr(ctx, "pair_links", None))
    sig = signature(config, tuple(data.shape))
    state, why = _previous_state(ctx, config, sig)
    model = ReidModel(config, device=ctx.device).fit(data, cams=cams, links=links, init_from=state,
                                                     progress=ctx.progress, should_cancel=ctx.should_cancel)
    proba = label_proba(model.embedding_, ctx.labelled, ctx.y, ctx.classes, config.tau)
    report = {**model.summary(), "warm_start": state is not None, "warm_start_reason": why,
              "cameras": [str(v) for v in camera_values], "seconds": round(time.perf_counter() - t0, 3)}
    return TrainOutput(proba=proba, config=asdict(config), metrics={"reid": report, "suggests_classes": False},
                       artefacts={STATE_NAME: {**model.state_dict(), "signature": sig}},
                       embeddings=model.embedding_, clusters=model.labels_.astype(np.int64),
                       oof_reason="the re-identification model gives no out-of-sample predictions",
                       arrays={"identity_confidence": model.confidence_.astype(np.float32)})


def _inputs(ctx: TrainContext, config: ReidConfig) -> torch.Tensor:
    """(n, d) float32 cached features for the head; (n, 3, H, W) uint8 crops for the fine-tuned backbone."""
    if config.variant == "head":
        return torch.as_tensor(np.ascontiguousarray(ctx.X, dtype=np.float32))
    if ctx.items is None:
        raise TrainingError("The fine-tuned re-identification backbone reads the items' crops, and none were given: "
                            "use variant='head' on the cached features.")
    from core.models.reid.inputs import load_crops

    return load_crops(ctx.items, config.height, config.width)


def _cameras(ctx: TrainContext, config: ReidConfig) -> tuple[np.ndarray | None, list]:
    """Camera index (n,) of each item from its group column and the camera names; None when not used."""
    if not config.use_cameras or ctx.items is None:
        return None, []
    groups = [getattr(it, "group", None) for it in ctx.items]
    if all(g is None for g in groups):
        return None, []
    values, codes = np.unique(np.array(["" if g is None else str(g) for g in groups], dtype=object),
                              return_inverse=True)
    return codes.astype(np.int64), list(values)


def label_proba(F: np.ndarray, labelled: np.ndarray, y: np.ndarray, classes: list[str], tau: float) -> np.ndarray:
    """Probabilities (n, C) over ``classes`` from label prototypes of the embeddings ``F`` (n, e).

    The prototype of a label is the normalised mean embedding of its confirmed rows ``labelled`` (m,) with labels
    ``y`` (m,); rows get ``softmax(F P^T / tau)`` over the labels that have a prototype, 0 for the others.
    """
    n, C = len(F), len(classes)
    proba = np.zeros((n, C), np.float32)
    if C == 0 or len(labelled) == 0:
        return proba  # no identity named yet: no row has a label (the run publishes clusters only)
    index = {c: j for j, c in enumerate(classes)}
    yi = np.array([index[str(v)] for v in np.asarray(y, dtype=object).tolist()], np.int64)
    P = np.zeros((C, F.shape[1]), np.float64)
    np.add.at(P, yi, F[np.asarray(labelled, np.int64)])
    has = np.linalg.norm(P, axis=1) > 0
    P[has] /= np.linalg.norm(P[has], axis=1, keepdims=True)
    logits = (F @ P[has].T) / tau
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    proba[:, has] = (p / p.sum(1, keepdims=True)).astype(np.float32)
    return proba


def _previous_state(ctx: TrainContext, config: ReidConfig, sig: dict) -> tuple[dict | None, str]:
    """The previous reid run's state when its network matches ``sig`` and the config, else None; and why."""
    state, why = load_previous_state(ctx, STATE_NAME, "reid", config.warm_start)
    if state is None:
        return None, why
    old_sig = state.get("signature", {})
    changes = [f"{k} changed ({old_sig.get(k)} -> {v})" for k, v in sig.items() if old_sig.get(k) != v]
    old = {k: v for k, v in state.get("config", {}).items() if k not in WARM_IGNORED}
    new = {k: v for k, v in asdict(config).items() if k not in WARM_IGNORED}
    other = sorted(k for k in new if old.get(k) != new[k] and k not in sig)
    if other:
        changes.append(f"config changed ({', '.join(other)})")
    if changes:
        return None, "; ".join(changes)
    return state, why
