"""Registry of the engine's model families.

A family is one folder under ``core/models/`` with a *trainer*: a function ``(ctx: TrainContext) ->
TrainOutput`` (:mod:`core.models.context`). The train job (:mod:`core.models.training`) loads features and
confirmed labels, calls the trainer, and publishes the run (predictions, clusters, map coordinates,
artefacts). Trainers are imported on first use, so listing the families (the Train page) loads no torch.
Adding a family is a folder and one entry in :data:`FAMILIES`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from typing import Any

from core.errors import check_choice
from core.models.context import TrainContext, TrainOutput


@dataclass(frozen=True)
class Family:
    """One model family: its trainer (``"module:function"``, imported lazily) and what the pages say of it."""

    name: str
    entry: str
    description: str
    label_free: bool = False  # trains with no confirmed label at all (clustering)
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: str = ""  # "module:Class", the family's frozen config dataclass (its fields are the parameters)
    #: whether training reads the project's feature matrix: True, or "module:function" of the job's parameters
    #: (a family that trains on the media itself, e.g. the pseudo-label fine-tune, computes no features)
    features: bool | str = True

    def __call__(self, ctx: TrainContext) -> TrainOutput:
        module, function = self.entry.split(":")
        return getattr(importlib.import_module(module), function)(ctx, **self.kwargs)

    def needs_features(self, params: dict[str, Any]) -> bool:
        """Whether a job of this family with ``params`` reads the project's features (``ctx.X``)."""
        if isinstance(self.features, bool):
            return self.features
        module, function = self.features.split(":")
        return bool(getattr(importlib.import_module(module), function)({**self.kwargs, **params}))

    def check_params(self, params: dict[str, Any]) -> None:
        """Refuse an unknown parameter name before anything is computed (a misspelled ``--param``), listing
        the family's parameters; the values are checked by the family's config when it trains."""
        module, name = self.config.split(":")
        allowed = [f.name for f in fields(getattr(importlib.import_module(module), name))]
        for key in params:
            check_choice(self.name, "parameter name", key, allowed)


FAMILIES: tuple[Family, ...] = (
    Family("classifier", "core.models.classifier.trainer:train_classifier",
           "k-NN / linear SVM / MLP on cached features, grid-searched by macro-F1",
           config="core.models.classifier.model:ClassifierConfig"),
    Family("pseudo_label", "core.models.pseudo_label.model:train_pseudo_label",
           "fine-tunes a pretrained CNN on the media, then rounds of confident pseudo-labels",
           config="core.models.pseudo_label.model:PseudoLabelConfig",
           features="core.models.pseudo_label.model:needs_features"),
    Family("pseudo_label_head", "core.models.pseudo_label.model:train_pseudo_label",
           "the light pseudo-labelling variant: a head on cached features", kwargs={"variant": "head"},
           config="core.models.pseudo_label.model:PseudoLabelConfig"),
    Family("dec", "core.models.dec.trainer:train_dec",
           "semi-supervised multi-modal Deep Embedded Clustering (trains with or without labels)", label_free=True,
           config="core.models.dec.config:DECConfig"),
    Family("iic", "core.models.iic.trainer:train_iic",
           "Invariant Information Clustering: neighbour or augmentation pairs, overclustering, optional labels",
           label_free=True, config="core.models.iic.config:IICConfig"),
    Family("reid", "core.models.reid.trainer:train_reid",
           "unsupervised re-identification: pseudo-identities, camera-aware proxies, annotators' same/different links",
           label_free=True, config="core.models.reid.config:ReidConfig"),
)

MODELS: dict[str, Family] = {f.name: f for f in FAMILIES}

#: families that can train without confirmed labels (clustering)
LABEL_FREE: set[str] = {f.name for f in FAMILIES if f.label_free}


def get_trainer(name: str) -> Family:
    """The family ``name`` (callable as its trainer); an unknown name lists the valid ones."""
    check_choice("train", "model", name, list(MODELS))
    return MODELS[name]
