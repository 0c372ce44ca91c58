"""A linear SVM (one-vs-rest, squared hinge, L2) solved with full-batch L-BFGS in PyTorch.

It minimises, per class k, the same objective as scikit-learn's ``LinearSVC`` (liblinear's default)::

    0.5 * ||w_k||^2 + C * sum_i max(0, 1 - t_ik (w_k . x_i + b_k))^2,     t_ik = +1 if y_i == k else -1

except that the intercept is not regularised. liblinear's dual solver took minutes on 10k x 1280 CIFAR
features at some values of C (see bench/results); this solves all classes at once on the GPU when there is
one, and in a few seconds on the CPU.

``fit(..., init=(coef, intercept))`` warm-starts L-BFGS from another solution, e.g. the previous C's on the same
fold in the grid search: the path over C costs a fraction of cold starts (issue 12).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class TorchLinearSVM(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVM with squared hinge loss.

    Parameters
    ----------
    C : float
        Inverse regularisation strength, as in ``LinearSVC``.
    max_iter : int
        L-BFGS iterations.
    device : str
        ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 300, tol: float = 1e-6, device: str = "cpu"):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
            init: tuple[np.ndarray, np.ndarray] | None = None) -> "TorchLinearSVM":
        """Fit on ``X`` (n, d) and labels ``y`` (n,); ``sample_weight`` (n,) scales each item's hinge loss.

        ``init`` = (coef (k or 1, d), intercept (k or 1,)) starts L-BFGS there (a solution for the same classes,
        e.g. at another C); ignored when its shape does not fit. Sets ``n_iter_`` (L-BFGS iterations) and
        ``objective_`` (the final objective divided by C * n).
        """
        import torch

        # on a busy 2-core CPU two threads spin against each other: one is up to 15x faster (issue 12)
        threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(1)
        try:
            return self._fit(X, y, sample_weight, init)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None,
             init: tuple[np.ndarray, np.ndarray] | None) -> "TorchLinearSVM":
        import torch

        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        k = len(self.classes_)
        Xt = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self.device).double()
        n, d = Xt.shape
        T = -torch.ones((n, k), dtype=torch.float64, device=self.device)
        T[torch.arange(n, device=self.device), torch.as_tensor(y_idx, device=self.device)] = 1.0
        if k == 2:  # binary: one hyperplane, as LinearSVC
            T = T[:, 1:]
        sw = torch.ones((n, 1), dtype=torch.float64, device=self.device)
        if sample_weight is not None:
            sw = torch.as_tensor(np.asarray(sample_weight, dtype=np.float64), device=self.device)[:, None]
        W = torch.zeros((d, T.shape[1]), dtype=torch.float64, device=self.device)
        b = torch.zeros(T.shape[1], dtype=torch.float64, device=self.device)
        if init is not None and np.shape(init[0]) == (T.shape[1], d) and np.shape(init[1]) == (T.shape[1],):
            W = torch.as_tensor(np.asarray(init[0], dtype=np.float64).T.copy(), device=self.device)
            b = torch.as_tensor(np.asarray(init[1], dtype=np.float64).copy(), device=self.device)
        W.requires_grad_(True)
        b.requires_grad_(True)
        # the objective divided by C * n keeps its scale independent of the data size
        scale = 1.0 / (self.C * n)
        opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=self.max_iter, tolerance_grad=self.tol,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            margin = torch.clamp(1.0 - T * (Xt @ W + b), min=0.0)
            loss = 0.5 * scale * (W * W).sum() + (sw * margin * margin).sum() / n
            loss.backward()
            return loss

        opt.step(closure)
        self.n_iter_ = int(opt.state[opt._params[0]].get("n_iter", 0))
        with torch.no_grad():
            margin = torch.clamp(1.0 - T * (Xt @ W + b), min=0.0)
            self.objective_ = float(0.5 * scale * (W * W).sum() + (sw * margin * margin).sum() / n)
        self.coef_ = W.detach().T.float().cpu().numpy()        # (k or 1, d)
        self.intercept_ = b.detach().float().cpu().numpy()     # (k or 1,)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Signed distances: (n, k), or (n,) for two classes (positive means ``classes_[1]``)."""
        scores = np.asarray(X, dtype=np.float32) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        s = self.decision_function(X)
        idx = (s > 0).astype(int) if s.ndim == 1 else s.argmax(1)
        return self.classes_[idx]
