"""The classifier family's trainer: the grid-searched feature classifier as a train-job entry."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from core.errors import check_choice
from core.models.classifier.model import ClassifierConfig, FeatureClassifier
from core.models.context import TrainContext, TrainOutput


def train_classifier(ctx: TrainContext) -> TrainOutput:
    """Grid-search k-NN / linear SVM / MLP on the labelled rows; probabilities for every item in the
    project's label order (a class without labels gets probability 0)."""
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
    oof = np.zeros((len(ctx.labelled), len(ctx.classes)), dtype=np.float32)
    for j, c in enumerate(clf.classes_):
        proba[:, ctx.classes.index(c)] = proba_known[:, j]
        oof[:, ctx.classes.index(c)] = clf.oof_proba_[:, j]  # NaN rows (no fold predicted them) stay NaN
    return TrainOutput(proba=proba, config=asdict(config), metrics=clf.summary(), artefacts={"model": clf},
                       oof_proba=oof)
