"""Glue between the store, the feature cache and the model families: features, training, publishing.

:func:`train_model` is what a "train" job runs: it computes the features the project lacks, trains the
chosen model on the confirmed consensus labels, predicts every item, clusters and projects the embedding,
writes the artefacts to a new folder and publishes the run in one transaction. Until that transaction
commits, the previous run stays in service.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.labels import engine as consensus_engine
from core.device import resolve_device
from core.errors import FeatureError, JobCancelled, TrainingError, ValidationError
from core.evaluation.runs import evaluate_arrays
from core.views.common import suggests_classes
from core.features import compute_features
from core.features.base import ItemRef
from core.models import LABEL_FREE, TrainContext, get_trainer
from core.store.project_store import Store

ProgressFn = Callable[[dict], None]


@dataclass
class FeatureMatrix:
    """Features of the items that have them: ``ids`` (n,) int64, ``X`` (n, d) float32."""

    ids: np.ndarray
    X: np.ndarray
    extractors: list[str]
    failures: list[dict] = field(default_factory=list)
    views: dict[str, slice] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.views and self.extractors:  # one extractor: all columns are its own
            self.views = {self.extractors[0]: slice(0, self.X.shape[1])}


def _extractors_for(store: Store, override: str | None) -> list[str]:
    settings = store.settings()
    if override:
        return [override]
    names = [settings.get("extractor")]
    if settings["modality"] == "image+text":
        names.append(settings.get("text_extractor", "minilm"))
    return [n for n in names if n]


def ensure_features(
    store: Store,
    *,
    extractor: str | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> FeatureMatrix:
    """Compute (only what is missing) and return the project's feature matrix.

    For image+text projects the image and text features are L2-normalised and concatenated.
    Items whose media cannot be decoded are left out and listed in ``failures``.
    """
    items = store.items()
    if not items:
        raise FeatureError("The project has no items yet: import some first ('python -m core import').")
    names = _extractors_for(store, extractor)
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    failures: list[dict] = []
    for name in names:
        refs = [ItemRef(it.id, it.path, it.text) for it in items]
        if name in ("tfidf_svd", "minilm"):
            refs = [r for r in refs if r.text]
        if not refs:
            raise FeatureError(f"No item of this project has input for the extractor {name!r}.")

        def report(done: int, total: int, _name: str = name) -> None:
            if progress is not None:
                progress({"phase": f"features {_name}", "step": done, "total": total})

        fails: list = []
        ids, X = compute_features(refs, name, store.dir / "features", device=device, progress=report,
                                  should_cancel=should_cancel, failures=fails)
        failures.extend(_failure_dict(f, name) for f in fails)
        blocks.append((np.asarray(ids, dtype=np.int64), np.asarray(X, dtype=np.float32)))
    if len(blocks) == 1:
        ids, X = blocks[0]
        return FeatureMatrix(ids, X, names, failures)
    common = blocks[0][0]
    for ids, _ in blocks[1:]:
        common = np.intersect1d(common, ids)
    parts = []
    views: dict[str, slice] = {}
    start = 0
    for name, (ids, X) in zip(names, blocks):
        pos = {int(i): k for k, i in enumerate(ids)}
        sub = X[[pos[int(i)] for i in common]]
        parts.append(sub / np.maximum(np.linalg.norm(sub, axis=1, keepdims=True), 1e-12))
        views[name] = slice(start, start + sub.shape[1])
        start += sub.shape[1]
    return FeatureMatrix(common, np.hstack(parts).astype(np.float32), names, failures, views)


def media_only(store: Store) -> FeatureMatrix:
    """Every item of the project with no feature columns (X of shape (n, 0)): for a family that trains on the
    media itself (:meth:`core.models.registry.Family.needs_features`), so no feature is computed for it."""
    items = store.items()
    if not items:
        raise FeatureError("The project has no items yet: import some first ('python -m core import').")
    return FeatureMatrix(np.array([it.id for it in items], dtype=np.int64), np.zeros((len(items), 0), np.float32), [])


def _failure_dict(f, extractor: str) -> dict:
    """An :class:`~core.features.ItemFailure` as a JSON-able dict."""
    return {"extractor": extractor, "item_id": int(f.item_id), "path": None if f.path is None else str(f.path),
            "reason": f.reason}


class PhaseProgress:
    """Turns per-phase step/total reports into throttled progress rows with a per-phase ETA."""

    def __init__(self, sink: ProgressFn | None, every_s: float = 0.5):
        self.sink = sink
        self.every_s = every_s
        self.phase: str | None = None
        self.phase_t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, info: dict) -> None:
        if self.sink is None:
            return
        t = time.perf_counter()
        phase = str(info.get("phase", ""))
        phase_key = phase.split(" ")[0]
        changed = phase_key != self.phase
        if changed:
            self.phase, self.phase_t0 = phase_key, t
        step, total = info.get("step"), info.get("total")
        done = bool(step and total and step >= total)
        if not (changed or done or t - self.last >= self.every_s):
            return
        self.last = t
        out = dict(info)
        if step and total and step > 0 and "eta_s" not in info:  # a phase may know its own ETA better
            elapsed = t - self.phase_t0
            out["eta_s"] = round(elapsed / step * max(total - step, 0), 1)
        self.sink(out)


def train_model(
    store: Store,
    model: str = "classifier",
    *,
    params: dict | None = None,
    device: str | None = None,
    extractor: str | None = None,
    job_id: int | None = None,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
    project_map: bool = True,
    on_publish: Callable[[Any, int], None] | None = None,
    by: str | None = None,
) -> int:
    """Train ``model`` on the confirmed labels and publish a new run; returns its id. ``by``: who asked for
    it (the job's requester), recorded with the published run in the audit log.

    ``on_publish(conn, run_id)`` (a job's :func:`core.jobs.queue.publisher`) runs inside the publish
    transaction: it raises when the job is no longer this worker's, so nothing is published then (and the
    run's artefact folder is removed), and otherwise marks the job done in the same transaction, so a
    published run never belongs to a job marked failed.
    """
    trainer = get_trainer(model)
    device = resolve_device(device)
    report = PhaseProgress(progress)
    cancel = should_cancel or (lambda: False)
    t0 = time.perf_counter()

    phases: dict[str, float] = {}
    t_phase = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t_phase
        phases[name] = round(time.perf_counter() - t_phase, 3)
        t_phase = time.perf_counter()

    if trainer.needs_features(dict(params or {})):
        feats = ensure_features(store, extractor=extractor, device=device, progress=report, should_cancel=cancel)
    else:
        feats = media_only(store)
    lap("features")
    classes = store.labels()
    consensus_fit = None
    if consensus_engine.settings(store)["method"] != "majority":
        report({"phase": "consensus", "step": 0, "total": 1})
        consensus_fit = consensus_engine.refit(store)
        lap("consensus")
    conf_ids, conf_labels, conf_weight = store.confirmed_with_confidence()
    annotated = store.annotated_item_ids()  # as training saw them: evaluate_run scores the run against these
    pos = {int(i): k for k, i in enumerate(feats.ids)}
    keep = [k for k, i in enumerate(conf_ids) if int(i) in pos]
    labelled = np.array([pos[int(conf_ids[k])] for k in keep], dtype=np.int64)
    y = conf_labels[keep]
    params = dict(params or {})
    weight_by_confidence = bool(params.pop("weight_by_confidence", store.settings().get("weight_by_confidence", False)))
    sample_weight = conf_weight[keep] if weight_by_confidence else None
    if len(labelled) == 0 and model not in LABEL_FREE:
        raise TrainingError(
            "No confirmed labels to train on yet: label items until they reach the project's min_votes "
            f"({store.settings().get('min_votes')}), or import labels."
        )
    previous = store.run(model=model)
    ctx = TrainContext(
        X=feats.X, item_ids=feats.ids, labelled=labelled, y=y, classes=classes, params=params,
        device=device, progress=report, should_cancel=cancel, previous=previous,
        previous_dir=None if previous is None else store.run_dir(previous), views=feats.views,
        items=_items_in_order(store, feats.ids), sample_weight=sample_weight,
        pair_links=_pair_links(store, feats.ids),
    )
    report({"phase": "fit", "step": 0, "total": 1})
    out = trainer(ctx)
    lap("fit_and_predict")
    if cancel():
        raise JobCancelled("cancelled after training")
    train_seconds = time.perf_counter() - t0

    raw_proba = np.asarray(out.proba, dtype=np.float32)
    proba, calibration, oof_calibrated, oof_published = calibrate_output(out, y, classes)
    pseudo = calibrated_pseudo_labels(out.pseudo_labels, proba, classes)
    labels, confidences = top_labels(proba, classes)
    emb = out.embeddings if out.embeddings is not None else feats.X
    clusters = out.clusters
    if clusters is None:
        report({"phase": "cluster", "step": 0, "total": 1})
        clusters = kmeans_clusters(emb, n_clusters=max(2, len(classes)))
        lap("cluster")
    coords = None
    if project_map:
        report({"phase": "project", "step": 0, "total": 1})
        coords = _map_coords(store, model, feats, emb, own_embedding=out.embeddings is not None, previous=previous)
        lap("project")
    if cancel():
        raise JobCancelled("cancelled before publishing")

    report({"phase": "publish", "step": 0, "total": 1})
    evaluation = evaluate_arrays(feats.ids, labels, clusters, store.reference_labels(), annotated,
                                 label_free=not suggests_classes({"metrics": out.metrics}))
    metrics = {
        **out.metrics, "n_labelled": int(len(labelled)), "n_items": int(len(feats.ids)),
        "label_counts": {str(k): int(v) for k, v in zip(*np.unique(y, return_counts=True))},
        "feature_failures": feats.failures[:50], "n_feature_failures": len(feats.failures),
        "train_seconds": round(train_seconds, 3), "device": device, "evaluation": evaluation,
        "phase_seconds": phases, "weight_by_confidence": weight_by_confidence, "calibration": calibration,
        "consensus": {"method": consensus_engine.settings(store)["method"],
                      **({} if consensus_fit is None else {"refit_seconds": consensus_fit["seconds"]})},
    }
    run_dir = _write_artefacts(store, model, out, feats.ids, proba, classes, clusters, emb,
                               {"annotated_item_ids": np.array(sorted(annotated), dtype=np.int64),
                                "train_item_ids": feats.ids[labelled],
                                "train_labels": np.array([str(v) for v in y], dtype=str),  # consensus labels of those rows
                                **({} if out.oof_proba is None else {"oof_proba": np.asarray(out.oof_proba, np.float32)}),
                                **({} if oof_calibrated is None else {"proba_uncalibrated": raw_proba,
                                                                      "oof_proba_calibrated": oof_calibrated,
                                                                      "oof_proba_published": oof_published})})
    try:
        with store.transaction() as conn:  # publish_run joins this transaction: the claim holds until COMMIT
            run_id = store.publish_run(
                model=model, config={**out.config, "extractors": feats.extractors}, metrics=_jsonable(metrics),
                artefact_dir=run_dir, classes=classes, item_ids=feats.ids, labels=labels, confidences=confidences,
                clusters=clusters, coords=coords, n_labelled=len(labelled),
                parent_id=None if previous is None else previous["id"], job_id=job_id,
                extractor="+".join(feats.extractors), device=device, train_seconds=train_seconds,
                pseudo_labels=[(int(feats.ids[p["row"]]), p["label"], p["confidence"], p["round"])
                               for p in pseudo], by=by,
            )
            if on_publish is not None:
                on_publish(conn, run_id)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing refers to it: the transaction rolled back
        raise
    return run_id


def top_labels(proba: np.ndarray, classes: list[str]) -> tuple[list[str | None], np.ndarray]:
    """The most probable class of each row of ``proba`` (n, k) and its probability (n,); rows with no
    probability mass (a family that names no class for them, or k = 0) get None and NaN."""
    n = len(proba)
    if proba.shape[1] == 0:
        return [None] * n, np.full(n, np.nan, np.float32)
    top = proba.argmax(1)
    conf = proba[np.arange(n), top].astype(np.float32)
    named = proba.sum(1) > 0
    return [classes[j] if ok else None for j, ok in zip(top, named)], np.where(named, conf, np.nan)


def _pair_links(store: Store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confirmed "same" / "different" pair decisions as row-index pairs into ``ids`` (n,): (must, cannot)."""
    from core.labels.pairs import confirmed_links

    rows = confirmed_links(store).rows(ids)
    return rows.must, rows.cannot


def calibrated_pseudo_labels(pseudo_labels: list[dict], proba: np.ndarray, classes: list[str]) -> list[dict]:
    """The trainer's pseudo-labels with the published (calibrated) probability of their label as confidence.

    ``proba`` (n, k) is the run's published probability matrix; a pseudo-label's ``row`` indexes it. The
    trainer's own confidence (raw, from the round that made it) is kept as ``raw_confidence``.
    """
    index = {c: j for j, c in enumerate(classes)}
    return [{**p, "raw_confidence": p["confidence"], "confidence": float(proba[int(p["row"]), index[str(p["label"])]])}
            for p in pseudo_labels]


def calibrate_output(out: Any, y: np.ndarray, classes: list[str]
                     ) -> tuple[np.ndarray, dict, np.ndarray | None, np.ndarray | None]:
    """The probabilities of every item after calibration, and the run's calibration record.

    The map (:class:`core.models.calibration.Calibrator`) is fitted on the trainer's out-of-fold probabilities
    ``out.oof_proba`` (m, k) of the labelled rows against their labels ``y`` (m,) (rows no fold predicted are
    left out) and applied to ``out.proba`` (n, k). A family without out-of-fold predictions, or too few of them,
    keeps its probabilities and records ``status: "unknown"`` with the reason: its confidence is not known.

    Returns
    -------
    (ndarray (n, k) float32, dict, ndarray (m, k) float32 or None, ndarray (m, k) float32 or None)
        The probabilities, the record of :func:`core.models.calibration.calibration_report` (``metrics
        ["calibration"]``) and, when calibrated, the out-of-fold rows (NaN where no fold predicted) twice:
        cross-fitted (each half through the map of the other half; the honest ECE, saved as
        ``oof_proba_calibrated.npy``) and through the final map (the scale of the published probabilities, on
        which the Pseudo-labels page estimates the precision above a threshold; ``oof_proba_published.npy``).
        The raw probabilities are saved as ``proba_uncalibrated.npy``.
    """
    from core.models.calibration import calibration_report, unknown_record

    proba = np.asarray(out.proba, dtype=np.float32)
    if out.oof_proba is None:
        why = getattr(out, "oof_reason", None) or "the family gives no out-of-sample predictions"
        return proba, unknown_record(why), None, None
    index = {c: j for j, c in enumerate(classes)}
    yi = np.array([index[str(v)] for v in y], dtype=np.int64)
    try:
        cal, record = calibration_report(np.asarray(out.oof_proba, dtype=np.float64), yi,
                                         labelled_classes=np.unique(yi))
    except ValidationError as exc:  # e.g. rows that are not distributions: the run stands, its confidence unknown
        return proba, unknown_record(f"the out-of-fold predictions cannot be used: {exc}"), None, None
    if cal.status_ != "calibrated":
        return proba, record, None, None
    oof = np.asarray(out.oof_proba, dtype=np.float64)
    known = np.isfinite(oof).all(1)
    published = np.full(oof.shape, np.nan, np.float32)
    published[known] = cal.transform(oof[known])
    return cal.transform(proba).astype(np.float32), record, cal.oof_cross_fitted_.astype(np.float32), published


def _map_coords(store: Store, model: str, feats: FeatureMatrix, emb: np.ndarray, *, own_embedding: bool,
                previous: dict | None) -> np.ndarray:
    """2-D map coordinates (n, 2) of ``feats.ids`` (n,) from ``emb`` (n, d).

    A run on the project's features shares one cached projection per extractor set. A model's own embedding
    (DEC, pseudo_label) is another space in every run, so it is keyed by its fingerprint (a repeated embedding
    reuses its map), fitted afresh and aligned to the map of the previous run of the model (else of the newest
    run) so the picture keeps its orientation; the superseded embedding caches of the model are removed.
    """
    from core.views.projection import embedding_key, project, prune, reduce_for_map

    cache = store.dir / "projections"
    X = reduce_for_map(emb)
    if not own_embedding:
        return project(feats.ids, X, cache, key="features-" + "+".join(feats.extractors))
    prefix = f"{model}-embedding"
    key = embedding_key(prefix, feats.ids, X)
    reference = None
    for run in (previous, store.run()):
        if run is None:
            continue
        rows = [(r["item_id"], r["x"], r["y"]) for r in store.predictions(run["id"]) if r["x"] is not None
                and r["y"] is not None]
        if rows:
            arr = np.array(rows, dtype=np.float64)
            reference = (arr[:, 0].astype(np.int64), arr[:, 1:3])
            break
    coords = project(feats.ids, X, cache, key=key, align_to=reference)
    prune(cache, prefix, keep=key)
    return coords


def _items_in_order(store: Store, ids: np.ndarray) -> list:
    """The store's item rows in the order of ``ids`` (n,)."""
    by_id = {it.id: it for it in store.items()}
    return [by_id[int(i)] for i in ids]


def kmeans_clusters(X: np.ndarray, *, n_clusters: int, random_state: int = 0) -> np.ndarray:
    """k-means cluster of each row of ``X`` (n, d); mini-batch k-means above 20,000 rows."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n_clusters = min(n_clusters, len(X))
    if len(X) > 20000:
        km = MiniBatchKMeans(n_clusters=n_clusters, random_state=random_state, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=n_clusters, random_state=random_state, n_init=3)
    return km.fit_predict(X).astype(np.int64)


def _write_artefacts(store, model, out, ids, proba, classes, clusters, emb, arrays: dict | None = None) -> Path:
    """Write a run's folder: arrays as ``.npy`` (never pickled), classes as JSON, and each of the family's
    ``out.artefacts`` through :func:`core.io.artefacts.save_artefact` (a plain tree ``<name>.npz`` when it is
    made of arrays and plain values, else a signed pickle ``<name>.joblib``). Returns the folder."""
    from core.io.artefacts import save_artefact

    final = store.dir / "runs" / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tmp = final.with_name(final.name + ".tmp")
    tmp.mkdir(parents=True)
    npy = {"item_ids": ids, "proba": proba, "clusters": clusters,
           **(arrays or {}),  # annotated_item_ids (items labelled when training read the labels), train_item_ids
           **getattr(out, "arrays", {})}  # a family's own per-item arrays (IIC: overclusters)
    if out.embeddings is not None:
        npy["embeddings"] = np.asarray(out.embeddings, dtype=np.float32)
    for name, arr in npy.items():
        np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
    (tmp / "classes.json").write_text(json.dumps(classes))
    for name, obj in out.artefacts.items():
        save_artefact(tmp, name, obj)
    os.replace(tmp, final)
    return final


def load_run_arrays(store: Store, run: dict) -> dict[str, np.ndarray]:
    """The probability matrix of a run and its item ids: {"item_ids": (n,), "proba": (n, k), "clusters": (n,)}."""
    d = store.run_dir(run)
    out = {name: np.load(d / f"{name}.npy") for name in ("item_ids", "proba", "clusters")}
    if (d / "embeddings.npy").exists():
        out["embeddings"] = np.load(d / "embeddings.npy")
    return out


def _jsonable(obj):
    """Replace NaN and numpy scalars so the metrics survive json.dumps."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
