"""Registry of the engine's model families.

Each family is a *trainer*: a function ``(ctx: TrainContext) -> TrainOutput``. The shared glue in
:mod:`core.models.training` loads features and confirmed labels, calls the trainer, and publishes the run
(predictions, clusters, map coordinates, artefacts). Later issues add "dec", "iic", "pseudo_label", "reid".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core.errors import check_choice


@dataclass
class TrainContext:
    """What a trainer receives.

    Attributes
    ----------
    X : ndarray (n, d) float32     features of every item, rows in the order of ``item_ids``
    item_ids : ndarray (n,) int64
    labelled : ndarray (m,) int64  row indices into X of the confirmed items
    y : ndarray (m,) object        their consensus labels
    classes : list[str]            the project's label set (the order of probability columns)
    params : dict                  model parameters from the job / command line
    device : str                   "cpu" or "cuda"
    progress : callable(dict)      report step/total/loss/phase
    should_cancel : callable() -> bool
    previous : dict | None         the newest published run of this model (for warm starts)
    previous_dir : Path | None     its artefact folder
    views : dict[str, slice]       columns of X per extractor, e.g. {"efficientnet_lite0": slice(0, 1280),
                                   "minilm": slice(1280, 1664)} for image+caption items (one entry otherwise)
    sample_weight : ndarray (m,) float32 | None
                                   per labelled row, the consensus confidence when the project asks for it
    items : list | None            the store's Item rows in the order of ``item_ids`` (paths, text, group),
                                   for families that read the media themselves (pseudo_label, reid)
    """

    X: np.ndarray
    item_ids: np.ndarray
    labelled: np.ndarray
    y: np.ndarray
    classes: list[str]
    params: dict
    device: str
    progress: Callable[[dict], None]
    should_cancel: Callable[[], bool]
    previous: dict | None = None
    previous_dir: Any = None
    views: dict[str, slice] = field(default_factory=dict)
    sample_weight: np.ndarray | None = None
    items: list | None = None

    def view(self, name: str) -> np.ndarray:
        """The columns of ``X`` that extractor ``name`` produced, (n, d_name)."""
        return self.X[:, self.views[name]] if self.views else self.X


@dataclass
class TrainOutput:
    """What a trainer returns.

    Attributes
    ----------
    proba : ndarray (n, k) float32       probabilities over ``classes`` for every item
    config : dict                        the resolved configuration (stored with the run)
    metrics : dict                       e.g. cross-validated macro-F1
    artefacts : dict[str, object]        objects saved with joblib under the run's folder
    embeddings : ndarray (n, e) | None   model embedding for the map (features used when None)
    clusters : ndarray (n,) int | None   the model's own clusters (k-means on the embedding when None)
    pseudo_labels : list[dict]           machine labels to store as "pseudo" annotations of the new run:
                                         {"row": int (index into X), "label": str, "confidence": float,
                                         "round": int}; never confirmed until a person accepts them
    """

    proba: np.ndarray
    config: dict
    metrics: dict
    artefacts: dict[str, Any] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    clusters: np.ndarray | None = None
    pseudo_labels: list[dict] = field(default_factory=list)


def _train_classifier(ctx: TrainContext) -> TrainOutput:
    from dataclasses import asdict

    from core.models.classifier.model import ClassifierConfig, FeatureClassifier

    allowed = ClassifierConfig.__dataclass_fields__
    kwargs = {}
    for key, value in ctx.params.items():
        check_choice("classifier", "parameter name", key, list(allowed))
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    config = ClassifierConfig(**kwargs)
    clf = FeatureClassifier(config, device=ctx.device)
    clf.fit(ctx.X[ctx.labelled], ctx.y, progress=ctx.progress, should_cancel=ctx.should_cancel,
            sample_weight=ctx.sample_weight)
    proba_known = clf.predict_proba(ctx.X)
    # columns in the project's label order; classes without labels get probability 0
    proba = np.zeros((len(ctx.X), len(ctx.classes)), dtype=np.float32)
    for j, c in enumerate(clf.classes_):
        proba[:, ctx.classes.index(c)] = proba_known[:, j]
    return TrainOutput(proba=proba, config=asdict(config), metrics=clf.summary(), artefacts={"model": clf})


def _train_pseudo_label(ctx: TrainContext) -> TrainOutput:
    from core.models.pseudo_label.model import train_pseudo_label

    return train_pseudo_label(ctx)


def _train_pseudo_label_head(ctx: TrainContext) -> TrainOutput:
    from core.models.pseudo_label.model import train_pseudo_label

    return train_pseudo_label(ctx, variant="head")


def _train_dec(ctx: TrainContext) -> TrainOutput:
    """Deep Embedded Clustering (semi-supervised, one branch per feature view); see :mod:`core.models.dec.model`."""
    from core.models.dec.trainer import train_dec

    return train_dec(ctx)


MODELS: dict[str, Callable[[TrainContext], TrainOutput]] = {
    "classifier": _train_classifier,
    "pseudo_label": _train_pseudo_label,            # fine-tunes a CNN on the media (images, audio)
    "pseudo_label_head": _train_pseudo_label_head,  # the light variant on cached features
    "dec": _train_dec,                              # deep embedded clustering, semi-supervised, multi-view
}

#: families that can train with no confirmed label at all (clustering)
LABEL_FREE: set[str] = {"dec"}


def get_trainer(name: str) -> Callable[[TrainContext], TrainOutput]:
    """The trainer of model family ``name``; an unknown name lists the valid ones."""
    check_choice("train", "model", name, list(MODELS))
    return MODELS[name]
