"""What a model family's trainer receives and returns (the contract between the train job and a family)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core.errors import JobCancelled


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
    pair_links : (ndarray (p, 2), ndarray (q, 2)) int64 | None
                                   confirmed pair decisions as row-index pairs: "same" (must-links) and
                                   "different" (cannot-links) from the Identities page (reid)
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
    pair_links: tuple[np.ndarray, np.ndarray] | None = None

    def view(self, name: str) -> np.ndarray:
        """The columns of ``X`` that extractor ``name`` produced, (n, d_name)."""
        return self.X[:, self.views[name]] if self.views else self.X


@dataclass
class TrainOutput:
    """What a trainer returns.

    Attributes
    ----------
    proba : ndarray (n, k) float32       probabilities over ``classes`` for every item; an all-zero row (or
                                         k = 0) means no label for that item (reid before identities are named)
    config : dict                        the resolved configuration (stored with the run)
    metrics : dict                       e.g. cross-validated macro-F1
    artefacts : dict[str, object]        objects saved under the run's folder by
                                         :func:`core.io.artefacts.save_artefact` (plain trees as .npz;
                                         anything else as a signed pickle)
    embeddings : ndarray (n, e) | None   model embedding for the map (features used when None)
    clusters : ndarray (n,) int | None   the model's own clusters (k-means on the embedding when None)
    pseudo_labels : list[dict]           machine labels to store as "pseudo" annotations of the new run:
                                         {"row": int (index into X), "label": str, "confidence": float,
                                         "round": int}; never confirmed until a person accepts them
    oof_proba : ndarray (m, k) | None    out-of-fold probabilities over ``classes`` of the labelled rows
                                         (rows in the order of ``TrainContext.labelled``), saved as
                                         ``oof_proba.npy``; the model-aware consensus grades the model on them
    oof_reason : str | None              why ``oof_proba`` is None (the run's calibration record says it)
    arrays : dict[str, ndarray]          more per-item arrays of the run, rows in the order of ``item_ids``,
                                         saved as ``<name>.npy`` in its folder (e.g. IIC's ``overclusters``)
    """

    proba: np.ndarray
    config: dict
    metrics: dict
    artefacts: dict[str, Any] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    clusters: np.ndarray | None = None
    pseudo_labels: list[dict] = field(default_factory=list)
    oof_proba: np.ndarray | None = None
    oof_reason: str | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Canceller:
    """Polls ``should_cancel`` at most every ``every_s`` seconds (it may read a database); raises
    :class:`core.errors.JobCancelled` naming ``owner`` and where the training was when it returns True."""

    def __init__(self, should_cancel: Callable[[], bool] | None, owner: str, every_s: float = 0.25):
        self.fn, self.owner, self.every_s, self.last = should_cancel, owner, every_s, -math.inf

    def __call__(self, where: str) -> None:
        t = time.perf_counter()
        if self.fn is None or t - self.last < self.every_s:
            return
        self.last = t
        if self.fn():
            raise JobCancelled(f"{self.owner} cancelled during {where}")


def load_previous_state(ctx: TrainContext, name: str, family: str, warm_start: bool) -> tuple[dict | None, str]:
    """The previous run's artefact ``name`` for a warm start, or None and why not.

    The artefact is read with :func:`core.io.artefacts.load_artefact`: a plain tree (``<name>.npz``: arrays and
    plain values, no pickle) or a pickle this installation signed (``<name>.joblib``). None when ``warm_start``
    is off, there is no previous run of the family, the file is missing, it is a pickle this installation did
    not sign (a project copied from elsewhere, a replaced file: it is never unpickled), or it cannot be read (a
    damaged artefact must not stop a retrain: the run starts fresh and says why). Whether the state fits the
    new run is the family's own check.
    """
    from core.io.artefacts import UntrustedArtefact, artefact_path, load_artefact

    if not warm_start:
        return None, "disabled (warm_start=False)"
    if ctx.previous is None or ctx.previous_dir is None:
        return None, f"no previous {family} run"
    path = artefact_path(ctx.previous_dir, name)
    if path is None:
        return None, f"no {name}.npz in the previous run"
    try:
        state = load_artefact(ctx.previous_dir, name, remedy="this run starts fresh instead (as with warm_start=False)")
    except UntrustedArtefact as exc:
        return None, f"previous state refused, fresh fit: {exc}"
    except Exception as exc:  # noqa: BLE001 - any damage: the run starts fresh and records why
        return None, f"previous state unreadable, fresh fit ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict):
        return None, f"previous state unreadable, fresh fit ({path.name} holds a {type(state).__name__}, not a dict)"
    return state, f"from run {ctx.previous.get('id')}"
