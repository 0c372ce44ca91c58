"""The "dec" trainer: :class:`~core.models.dec.model.MultiModalDEC` on a project's features, with warm start.

One branch per feature extractor of the project (``ctx.views``): image+caption projects get an image and a
text branch, others one. ``ctx.params`` override :class:`~core.models.dec.model.DECConfig` fields. It trains with
no confirmed label at all (plain DEC / MultiDEC); with labels it runs the semi-supervised alternation.

Outputs
-------
* ``proba`` (n, C): the soft cluster assignment mapped to the project's classes through the Hungarian
  mapping (``MultiModalDEC.cluster_class_``). With no confirmed label, cluster ``j`` is named after class
  ``j`` (arbitrary names: the column order of the classes) only to fill the columns, and
  ``metrics["suggests_classes"]`` is False: the pages then show the cluster ("cluster 7"), not a class, and
  the run's pseudo-labels cannot be accepted (:func:`core.views.common.suggests_classes`).
* ``clusters`` (n,): argmax of the soft assignment; ``embeddings`` (n, 10 x branches): the latents.
* ``metrics["dec"]``: mapping, cluster/label confusion (rows, cols, counts), collapse report (with
  ``advice``: what to try when it collapsed, shown by the Clusters page), iterations,
  delta-label history, pretraining loss, warm-start decision.
* ``oof_proba`` (m, C): out-of-fold probabilities of the labelled items from ``oof_folds`` fits that start
  from the run's label-free start (:mod:`core.models.dec.out_of_fold`); the train job calibrates on them.
* artefact ``dec_state`` (``<run_dir>/dec_state.npz``, a plain tree of :mod:`core.io.artefacts`: no pickle):
  NumPy weights, centroids, scaling, config, view names, and the label-free start (``label_free_start``: the
  state after pretraining and the initial partition, which saw no label); the next run warm-starts from it
  when the views, their dimensions and the config match, and fits its out-of-fold models from the label-free
  start it carries forward.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from core.errors import TrainingError
from core.models import TrainContext, TrainOutput
from core.models.dec.model import WARM_IGNORED, DECConfig, MultiModalDEC

STATE_NAME = "dec_state"
START_NAME = "label_free_start"  # key of the label-free start inside the state
# what to try when the clustering collapsed: metrics["dec"]["collapse"]["advice"] (empty when it did not)
ADVICE = ["Try the IDEC option (parameter idec=true)", "confirm labels of more classes"]


def train_dec(ctx: TrainContext) -> TrainOutput:
    """Fit DEC on ``ctx`` and return probabilities, clusters, latents and the DEC report."""
    config = DECConfig.from_params(ctx.params)
    config.validate()
    if not ctx.classes:
        raise TrainingError("DEC names its clusters after the project's labels, and the project has none yet: "
                            "add the label set first (import with labels, or create the project with --labels).")
    if config.n_clusters is None:
        config = DECConfig(**{**asdict(config), "n_clusters": max(2, len(ctx.classes))})
    names = list(ctx.views) or ["features"]
    views = [ctx.view(name) for name in names] if ctx.views else [ctx.X]
    state, why = _previous_state(ctx, config, names, [v.shape[1] for v in views])
    model = MultiModalDEC(config, device=ctx.device).fit(
        views, labelled_idx=ctx.labelled, y=ctx.y, classes=ctx.classes, init_from=state,
        sample_weight=ctx.sample_weight,
        progress=ctx.progress, should_cancel=ctx.should_cancel)
    proba = np.asarray(model.cluster_class_, np.float64)
    proba = (model.soft_ @ proba).astype(np.float32)
    # the label-free start (pretrained autoencoder + initial partition) of this run, kept for the next one
    start = model.init_state_ if state is None else state.get(START_NAME)
    oof, oof_record = _out_of_fold(ctx, config, views, start)
    artefact = {**model.state_dict(), "view_names": names, START_NAME: start}
    summary = model.summary()
    summary["collapse"] = {**summary["collapse"], "advice": list(ADVICE) if summary["collapse"]["collapsed"] else []}
    report = {**summary, "views": names, "warm_start_reason": why, "out_of_fold": oof_record,
              "label_source": "hungarian" if len(ctx.labelled) else "none (clusters named in class order)"}
    # zero confirmed labels: no cluster -> class mapping, so the run suggests clusters, not classes
    metrics = {"dec": report, "suggests_classes": bool(len(ctx.labelled))}
    return TrainOutput(proba=proba, config=asdict(config), metrics=metrics,
                       artefacts={STATE_NAME: artefact}, embeddings=model.embedding_.astype(np.float32),
                       clusters=model.clusters_.astype(np.int64), oof_proba=oof, oof_reason=oof_record["reason"])


def _out_of_fold(ctx: TrainContext, config: DECConfig, views: list[np.ndarray], start: dict | None
                 ) -> tuple[np.ndarray | None, dict]:
    """Out-of-fold probabilities (m, C) of the labelled rows from the label-free ``start``, or None and why."""
    from core.models.dec.out_of_fold import dec_out_of_fold

    if not len(ctx.labelled):
        return None, {"folds": 0, "reason": "no confirmed labels: the run suggests clusters, not classes"}
    if start is None:
        return None, {"folds": 0, "reason": "the previous DEC state it warm-started from has no label-free start "
                      "(made before calibration): retrain once with warm_start=False"}
    return dec_out_of_fold(config, views, start, ctx.labelled, ctx.y, ctx.classes, sample_weight=ctx.sample_weight,
                           device=ctx.device, progress=ctx.progress, should_cancel=ctx.should_cancel)


def _previous_state(ctx: TrainContext, config: DECConfig, names: list[str], dims: list[int]) -> tuple[dict | None, str]:
    """The previous run's DEC state when a warm start is allowed, else None; and why."""
    from core.models.context import load_previous_state

    state, why = load_previous_state(ctx, STATE_NAME, "DEC", config.warm_start)
    if state is None:
        return None, why
    if state.get("view_names") != names or list(state.get("input_dims", [])) != dims:
        return None, f"views changed ({state.get('view_names')} {state.get('input_dims')} -> {names} {dims})"
    old = {k: v for k, v in state["config"].items() if k not in WARM_IGNORED}
    new = {k: v for k, v in asdict(config).items() if k not in WARM_IGNORED}
    old["dims"] = tuple(old["dims"])
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        return None, f"config changed ({', '.join(changed)})"
    return state, why
