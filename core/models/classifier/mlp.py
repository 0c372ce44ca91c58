"""A small multi-layer perceptron in plain PyTorch with a scikit-learn face (fit / predict_proba).

The Pinterest study in the seeds uses a 3-layer neural network on pretrained CNN features; its batch size
is the grid-searched parameter. Training is a plain loop over mini-batches of a tensor that lives on the
device (no DataLoader: the features are already in memory), on CUDA when asked.

``early_stopping=True`` (the grid search's default since issue 12) holds out ``validation_fraction`` of the
rows, stops once their error rate has not improved for ``patience`` epochs and keeps the best epoch's weights; with
fewer than ``MIN_VALIDATION_ROWS`` rows it watches the training loss instead (no rows held out).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

#: below this many training rows, early stopping watches the training loss (no validation rows held out)
MIN_VALIDATION_ROWS = 40


class TorchMLP(ClassifierMixin, BaseEstimator):
    """Input -> hidden -> hidden -> classes, ReLU and dropout, trained with Adam and cross-entropy.

    Parameters
    ----------
    hidden : int
        Width of both hidden layers.
    batch_size : int
        Mini-batch size.
    max_epochs : int
        Upper bound on epochs; ``max_steps`` bounds the total number of optimiser steps as well.
    lr, weight_decay, dropout : float
        Adam's learning rate and weight decay; dropout after each hidden layer.
    device : str
        ``"cpu"`` or ``"cuda"``.
    early_stopping : bool
        Stop when the held-out error rate (the training loss on small sets) stops improving.
    validation_fraction : float
        Share of the rows held out for early stopping (0 < f < 0.5).
    patience : int
        Epochs without improvement (by more than 0.1 %) before stopping.

    Attributes
    ----------
    loss_curve_ : list[float]   mean training loss per epoch
    val_curve_ : list[float]    held-out error rate per epoch (empty without early stopping on held-out rows)
    best_epoch_ : int           the epoch whose weights were kept (the last one without early stopping)
    """

    def __init__(
        self,
        hidden: int = 256,
        batch_size: int = 64,
        max_epochs: int = 40,
        max_steps: int = 600,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.2,
        device: str = "cpu",
        random_state: int = 0,
        early_stopping: bool = False,
        validation_fraction: float = 0.15,
        patience: int = 5,
    ):
        self.hidden = hidden
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.device = device
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience

    def _build(self, d: int, k: int):
        import torch.nn as nn

        return nn.Sequential(
            nn.Linear(d, self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
            nn.Linear(self.hidden, self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
            nn.Linear(self.hidden, k),
        )

    def fit(self, X: np.ndarray, y: np.ndarray, *, on_epoch: Callable[[int, float], None] | None = None,
            sample_weight: np.ndarray | None = None) -> "TorchMLP":
        """Train on ``X`` (n, d) float and ``y`` (n,) labels of any hashable type.

        ``sample_weight`` (n,) scales each item's cross-entropy (normalised to mean 1).
        """
        import torch

        torch.manual_seed(self.random_state)
        # small dense layers on the CPU run fastest on one thread (thread hand-offs dominate otherwise)
        threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(1)
        try:
            return self._fit(X, y, on_epoch, sample_weight)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X: np.ndarray, y: np.ndarray, on_epoch: Callable[[int, float], None] | None,
             sample_weight: np.ndarray | None = None) -> "TorchMLP":
        import torch
        import torch.nn.functional as F

        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        X = np.ascontiguousarray(X, dtype=np.float32)
        held = np.zeros(len(X), dtype=bool)
        if self.early_stopping and len(X) >= MIN_VALIDATION_ROWS:
            rng = np.random.default_rng(self.random_state)
            held[rng.permutation(len(X))[: max(1, int(round(self.validation_fraction * len(X))))]] = True
        Xv = torch.as_tensor(X[held], device=self.device)
        yv = torch.as_tensor(y_idx[held], dtype=torch.long, device=self.device)
        X, y_idx = X[~held], y_idx[~held]
        Xt = torch.as_tensor(X, device=self.device)
        yt = torch.as_tensor(y_idx, dtype=torch.long, device=self.device)
        n = Xt.shape[0]
        wt = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float32)[~held]
            wt = torch.as_tensor(w / max(float(w.mean()), 1e-12), device=self.device)
        self.model_ = self._build(Xt.shape[1], len(self.classes_)).to(self.device)
        opt = torch.optim.Adam(self.model_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps_per_epoch = max(1, math.ceil(n / self.batch_size))
        epochs = max(1, min(self.max_epochs, math.ceil(self.max_steps / steps_per_epoch)))
        gen = torch.Generator(device="cpu").manual_seed(self.random_state)
        self.loss_curve_, self.val_curve_ = [], []
        best, best_state, stale = float("inf"), None, 0
        self.best_epoch_ = 0
        self.model_.train()
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).to(self.device)
            total = 0.0
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                if wt is None:
                    loss = F.cross_entropy(self.model_(Xt[idx]), yt[idx])
                else:
                    loss = (F.cross_entropy(self.model_(Xt[idx]), yt[idx], reduction="none") * wt[idx]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            mean = float(total) / n
            self.loss_curve_.append(mean)
            if on_epoch is not None:
                on_epoch(epoch, mean)
            self.best_epoch_ = epoch
            if self.early_stopping:
                watched = mean
                if len(Xv):
                    # held-out error, not loss: the cross-entropy of an over-confident network rises after an
                    # epoch or two while its accuracy still climbs (CIFAR features, issue 12)
                    self.model_.eval()
                    with torch.no_grad():
                        watched = float((self.model_(Xv).argmax(1) != yv).float().mean())
                    self.model_.train()
                    self.val_curve_.append(watched)
                if (watched <= best) if len(Xv) else (watched < best * (1 - 1e-3)):  # ties: the later epoch
                    best, stale = watched, 0
                    best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
                    best_epoch = epoch
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
        if self.early_stopping and best_state is not None:
            self.model_.load_state_dict(best_state)
            self.best_epoch_ = best_epoch
        self.model_.eval()
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in the order of ``classes_``."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(X), 65536):
                xb = torch.as_tensor(np.ascontiguousarray(X[start : start + 65536], dtype=np.float32), device=self.device)
                out.append(torch.softmax(self.model_(xb).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]

    def __getstate__(self) -> dict:
        """Device-free pickles: the network is copied to the CPU; the live model stays where it is.

        ``nn.Module.to`` moves a module in place, so the copy is a new CPU network loaded with CPU copies of
        the weights: pickling a CUDA-trained model never moves it off the GPU under its ``device`` setting.
        """
        state = self.__dict__.copy()
        if "model_" in state:
            state["model_"] = self._cpu_copy(state["model_"])
            state["device"] = "cpu"
        return state

    def _cpu_copy(self, model):
        """A new CPU network (eval mode) with a copy of ``model``'s weights; ``model`` is left untouched."""
        import torch

        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        with torch.random.fork_rng(devices=[]):  # building a network draws its init from the global RNG
            clone = self._build(int(model[0].in_features), int(model[-1].out_features))
        clone.load_state_dict(weights)
        clone.train(model.training)
        return clone
