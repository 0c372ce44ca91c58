"""The "dec" model: (semi-supervised, multi-modal) Deep Embedded Clustering on cached features.

Follows DEC (Xie et al. 2016), MultiDEC (Yang et al. 2019) and the semi-supervised multi-modal DEC of the seed
paper (Algorithm 1):

1. one stacked autoencoder per view (image features, caption features; default ``d-500-500-2000-10``, Glorot
   init), pretrained end to end with MSE (Adam) as a denoising autoencoder (20% input dropout, as DEC);
2. an initial partition of the latent space gives the initial centroids (the latent means of its clusters):
   k-means as in DEC (``init_method="kmeans"``), or by default UMAP of the latent followed by a Gaussian
   mixture (``"umap_gmm"``, N2D), far closer to the classes on a weak latent. With two views, it runs on the
   concatenation of both latents (each scaled to unit overall spread so neither dominates) and each branch's
   centroids are the means of its own latent over the joint clusters: the branches start with one shared
   partition, which the joint target needs (cluster ``j`` of the image branch is cluster ``j`` of the text branch);
3. with confirmed labels, the clusters are matched to classes by the Hungarian algorithm on the cluster/label
   confusion matrix and the centroids are reordered so that cluster ``j`` is class ``j``;
4. rounds alternate, as in Algorithm 1: a supervised phase (cross-entropy between each branch's soft
   assignment and the labels of the labelled items, learning rate ``lr``), then an unsupervised phase of
   ``update_interval`` mini-batches over all items minimising ``sum_b KL(p || q_b) + KL(h || w)`` at learning
   rate ``kappa * lr`` (``lr`` when there are no labels: plain DEC / MultiDEC). The target ``p`` (the joint
   target of all branches) is recomputed over the **whole** data set at the start of every round; training
   stops when fewer than ``tol`` of the assignments changed since the previous round, or at ``max_iter``;
5. ``idec=True`` keeps the reconstruction loss during clustering (IDEC), which guards against collapse.

Since ``p`` is a constant target, ``h = mean_i p_ij`` would give ``KL(h || w)`` no gradient; the prior term
is therefore applied to the mean soft assignment of the mini-batch of each branch (the quantity the network
controls), and ``KL(mean p || w)`` over the whole data set is reported in the metrics.

The data live on the device as one tensor per view; mini-batches are index slices of a ``torch.randperm``
made on the device; the full-data soft assignment is one forward pass in chunks. No DataLoader.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import ValidationError, check_param
from core.models.dec.config import INITS, SCALINGS, WARM_IGNORED, DECConfig
from core.models.cluster_report import cluster_class_matrix, collapse_report, confusion_matrix, match_clusters
from core.models.context import Canceller

__all__ = ["DECConfig", "MultiModalDEC", "WARM_IGNORED", "SCALINGS", "INITS", "cluster_class_matrix",
           "cluster_means", "collapse_report", "confusion_matrix", "initial_partition", "match_clusters"]

Progress = Callable[[dict], None]
CHUNK = 16384


class MultiModalDEC:
    """Deep Embedded Clustering with one autoencoder branch per view, optionally semi-supervised.

    Attributes (after ``fit``)
    --------------------------
    classes_ : ndarray (C,)          the label set (cluster ids 0..k-1 when fitted without classes)
    n_clusters_ : int
    net_ : MultiBranch               autoencoders and centroids
    shift_, scale_ : list of ndarray (d_b,)   input scaling per view, x' = (x - shift) * scale
    clusters_ : ndarray (n,) int64   argmax of the (branch-averaged) soft assignment of the training items
    soft_ : ndarray (n, k)           that soft assignment
    embedding_ : ndarray (n, e * B)  concatenated branch latents
    mapping_ : ndarray (k,) int64    class index of each cluster (Hungarian on the cluster/label confusion;
                                     -1 for a cluster matched to no class)
    cluster_class_ : ndarray (k, C)  how each cluster's probability is spread over classes (rows sum to 1)
    confusion_ : ndarray (k, C)      cluster x class counts over the labelled items
    collapse_ : dict                 the collapse report of :func:`collapse_report`
    history_ : dict                  pretrain loss, iterations, delta-label history, ...
    init_clusters_, init_state_      k-means clusters on the pretrained latent (n,) and the state at that point
                                     (a fresh fit only; ``init_from=init_state_`` replays the same start)
    """

    def __init__(self, config: DECConfig = DECConfig(), *, device: str = "cpu"):
        self.config = config
        self.device = device

    # ------------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        views: Sequence[np.ndarray],
        *,
        labelled_idx: np.ndarray | None = None,
        y: np.ndarray | None = None,
        classes: Sequence[Any] | None = None,
        init_from: "dict | MultiModalDEC | None" = None,
        sample_weight: np.ndarray | None = None,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> "MultiModalDEC":
        """Pretrain, initialise and train the clustering.

        Parameters
        ----------
        views : list of ndarray (n, d_b)
            One feature matrix per modality, rows aligned (item i is row i of every view).
        labelled_idx : ndarray (m,) int, optional
            Rows with a confirmed label.
        y : ndarray (m,), optional
            Their labels.
        classes : sequence (C,), optional
            The label set and the order of probability columns (default: the sorted distinct ``y``).
        init_from : state dict or MultiModalDEC, optional
            Warm start: reuse its scaling, weights and centroids (no pretraining, no k-means).
        sample_weight : ndarray (m,), optional
            Weight of each labelled item in the supervised cross-entropy (e.g. the consensus confidence of its
            label), aligned with ``labelled_idx``; all 1 when omitted.
        progress : callable(dict), optional
        should_cancel : callable() -> bool, optional
            Polled between iterations; :class:`core.errors.JobCancelled` is raised when it returns True.
        """
        import torch

        cfg = self.config
        cfg.validate()
        views = _check_views(views)
        lab, y_cls = self._check_labels(views[0].shape[0], labelled_idx, y, classes)
        weight = _check_weight(sample_weight, len(lab))
        k = cfg.n_clusters or len(self.classes_)
        check_param("DEC", "n_clusters", k, k >= 2, "an int >= 2 (or None with at least 2 classes)")
        check_param("DEC", "n_clusters", k, k <= views[0].shape[0], f"at most the number of items ({views[0].shape[0]})")
        self.n_clusters_ = int(k)
        cancel = Canceller(should_cancel, "DEC")
        report = progress or (lambda info: None)
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        self._setup(views, init_from)
        Xs = [torch.as_tensor(self._scaled(v, b), device=self.device) for b, v in enumerate(views)]
        self.history_: dict[str, Any] = {"warm_start": init_from is not None}
        if init_from is None:
            self.history_["pretrain_loss"] = self._pretrain(Xs, report, cancel)
            report({"phase": "kmeans", "step": 0, "total": 1})
            self._init_centroids(Xs)
            self.init_state_ = self.state_dict()  # pretrained + k-means start, to compare variants fairly
        else:
            self.history_["pretrain_loss"] = None
        align = self._align(Xs, lab, y_cls, weight)
        self._cluster(Xs, lab, y_cls, weight, align, report, cancel)
        self._finish(Xs, lab, y_cls, weight, align)
        self.history_["seconds"] = round(time.perf_counter() - t0, 3)
        return self

    def _check_labels(self, n, labelled_idx, y, classes) -> tuple[np.ndarray, np.ndarray]:
        """Set ``classes_``; return labelled rows (m,) and their class indices (m,)."""
        lab = np.zeros(0, np.int64) if labelled_idx is None else np.asarray(labelled_idx, dtype=np.int64).reshape(-1)
        yy = np.zeros(0, object) if y is None else np.asarray(y).reshape(-1)
        check_param("DEC", "y", f"{len(yy)} labels", len(yy) == len(lab), f"one label per labelled row ({len(lab)})")
        check_param("DEC", "labelled_idx", lab.tolist()[:5], len(lab) == 0 or (lab.min() >= 0 and lab.max() < n),
                    f"row indices in [0, {n})")
        if classes is not None:
            self.classes_ = np.asarray(list(classes), dtype=object)
        elif len(yy):
            self.classes_ = np.asarray(sorted(set(yy.tolist()), key=str), dtype=object)
        else:
            self.classes_ = np.arange(self.config.n_clusters or 0)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(v) for v in yy.tolist() if v not in index})
        if unknown:
            raise ValidationError(f"The 'y' parameter of DEC must hold labels of 'classes' "
                                  f"({', '.join(map(str, self.classes_.tolist()))}). Got {', '.join(unknown)}.")
        return lab, np.array([index[v] for v in yy.tolist()], dtype=np.int64)

    # ---------------------------------------------------------------------------------------------- setup
    def _setup(self, views: list[np.ndarray], init_from) -> None:
        """Build the network and the input scaling (fresh, or copied from ``init_from``)."""
        from core.models.dec.nets import MultiBranch

        cfg = self.config
        d_ins = [v.shape[1] for v in views]
        self.net_ = MultiBranch(d_ins, cfg.dims, self.n_clusters_, cfg.weight_init).to(self.device)
        if init_from is None:
            self.shift_, self.scale_ = zip(*[_scaling(v, cfg.input_scaling) for v in views])
            self.shift_, self.scale_ = list(self.shift_), list(self.scale_)
            return
        state = init_from.state_dict() if isinstance(init_from, MultiModalDEC) else init_from
        check_param("DEC", "init_from", f"input dims {state['input_dims']}", list(state["input_dims"]) == d_ins,
                    f"a state with the same input dims {d_ins}")
        check_param("DEC", "init_from", f"n_clusters {state['n_clusters']}", state["n_clusters"] == self.n_clusters_,
                    f"a state with n_clusters {self.n_clusters_}")
        check_param("DEC", "init_from", f"dims {tuple(state['config']['dims'])}", tuple(state["config"]["dims"])
                    == tuple(cfg.dims), f"a state with dims {tuple(cfg.dims)}")
        self._load_weights(state)

    def _load_weights(self, state: dict) -> None:
        import torch

        self.shift_ = [np.asarray(s, np.float32) for s in state["shift"]]
        self.scale_ = [np.asarray(s, np.float32) for s in state["scale"]]
        self.net_.load_state_dict({k: torch.as_tensor(v) for k, v in state["weights"].items()})

    def _scaled(self, x: np.ndarray, b: int) -> np.ndarray:
        return np.ascontiguousarray((np.asarray(x, np.float32) - self.shift_[b]) * self.scale_[b], dtype=np.float32)

    # ------------------------------------------------------------------------------------------- pretrain
    def _pretrain(self, Xs, report: Progress, cancel: Canceller) -> list[float]:
        """Train every branch's autoencoder with MSE (Adam); returns the last epoch's loss of each branch."""
        import torch
        import torch.nn.functional as F

        cfg, n = self.config, Xs[0].shape[0]
        params = [p for name, p in self.net_.named_parameters() if not name.endswith("centroids")]
        opt = torch.optim.Adam(params, lr=cfg.pretrain_lr)
        gen = _generator(self.device, cfg.seed)
        last = [float("nan")] * len(Xs)
        bs = cfg.pretrain_batch_size or cfg.batch_size
        drop = cfg.pretrain_dropout  # denoising: the input is corrupted, the clean input is the target
        for epoch in range(cfg.pretrain_epochs):
            order = torch.randperm(n, device=self.device, generator=gen)
            totals = torch.zeros(len(Xs), device=self.device)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                clean = [X[idx] for X in Xs]
                losses = torch.stack([F.mse_loss(br.reconstruct(F.dropout(x, drop) if drop else x)[1], x)
                                      for br, x in zip(self.net_.branches, clean)])
                opt.zero_grad(set_to_none=True)
                losses.sum().backward()
                opt.step()
                totals += losses.detach() * len(idx)
                cancel("pretraining")
            last = (totals / n).tolist()
            report({"phase": "pretrain", "step": epoch + 1, "total": cfg.pretrain_epochs, "loss": float(sum(last))})
        return [round(float(v), 6) for v in last]

    # ------------------------------------------------------------------------------------------ centroids
    def _latents(self, Xs) -> list:
        """Latent of every item per branch, list of Tensor (n, e), computed in chunks without gradient."""
        import torch

        with torch.no_grad():
            return [torch.cat([br(X[s:s + CHUNK]) for s in range(0, X.shape[0], CHUNK)])
                    for br, X in zip(self.net_.branches, Xs)]

    def _soft_all(self, Xs) -> list:
        """Soft assignment of every item per branch, list of Tensor (n, k), no gradient."""
        import torch

        from core.models.dec.losses import soft_assignment

        with torch.no_grad():
            return [soft_assignment(z, br.centroids, self.config.alpha) for z, br in zip(self._latents(Xs), self.net_.branches)]

    def _init_centroids(self, Xs) -> None:
        """Initial partition of the latent space (k-means, or UMAP + GMM); each branch's centroids are its
        latent means over those clusters."""
        import torch

        cfg = self.config
        zs = [z.cpu().numpy().astype(np.float64) for z in self._latents(Xs)]
        if cfg.init == "first" or len(zs) == 1:
            Z = zs[0]
        else:  # each branch at unit overall spread, so neither view dominates the joint k-means
            Z = np.hstack([z / max(float(z.std()), 1e-12) for z in zs])
        labels, info = initial_partition(Z, self.n_clusters_, cfg)
        self.history_["init"] = {k: v for k, v in info.items() if k != "kmeans_inertia"}
        if "kmeans_inertia" in info:
            self.history_["kmeans_inertia"] = info["kmeans_inertia"]
        with torch.no_grad():
            for br, z in zip(self.net_.branches, zs):
                br.centroids.copy_(torch.as_tensor(cluster_means(z, labels, self.n_clusters_), dtype=torch.float32))
        self.init_clusters_ = labels

    def _align(self, Xs, lab: np.ndarray, y_cls: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """Match clusters to classes (Hungarian on the cluster/label table, each labelled item counting its
        ``weight``) and reorder the centroids so that cluster j is class j.

        Returns
        -------
        ndarray (C,) int64
            Cluster of each class after the reordering (-1 for a class left without a cluster).
        """
        import torch

        k, C = self.n_clusters_, len(self.classes_)
        if len(lab) == 0:
            return np.full(C, -1, np.int64)
        assign = torch.stack(self._soft_all(Xs)).mean(0).argmax(1).cpu().numpy()
        table = confusion_matrix(assign[lab], y_cls, k, C, weight)
        cluster_of = match_clusters(table)  # (k,) class of each cluster or -1
        matched = [j for c in range(C) for j in np.flatnonzero(cluster_of == c)]
        order = matched + [j for j in range(k) if j not in matched]
        with torch.no_grad():
            for br in self.net_.branches:
                br.centroids.copy_(br.centroids[torch.as_tensor(order, device=br.centroids.device)].clone())
        out = np.full(C, -1, np.int64)
        for new_j, old_j in enumerate(order):
            if cluster_of[old_j] >= 0:
                out[cluster_of[old_j]] = new_j
        return out

    # ------------------------------------------------------------------------------------------ clustering
    def _cluster(self, Xs, lab: np.ndarray, y_cls: np.ndarray, weight: np.ndarray | None, align: np.ndarray,
                 report: Progress, cancel: Canceller) -> None:
        """Algorithm 1: rounds of a supervised phase, a full-data target update, an unsupervised phase."""
        import torch

        from core.models.dec.losses import joint_target, kl_prior

        cfg, n, dev = self.config, Xs[0].shape[0], self.device
        keep = align[y_cls] >= 0 if len(lab) else np.zeros(0, bool)
        lab_t = torch.as_tensor(lab[keep], device=dev)
        y_t = torch.as_tensor(align[y_cls[keep]], device=dev)
        v_t = None if weight is None else torch.as_tensor(weight[keep], device=dev)
        semi = len(lab_t) > 0
        w = self._prior(y_cls, y_t) if semi and cfg.prior_weight > 0 else None
        interval = cfg.update_interval
        opt = torch.optim.SGD(self.net_.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        lr_u = cfg.kappa * cfg.lr if semi else cfg.lr
        gen = _generator(dev, cfg.seed + 1)
        sampler = _Batches(n, cfg.batch_size, dev, gen)
        prev, deltas, it, sup_steps, converged, prior_kl = None, [], 0, 0, False, None
        while True:
            qs = self._soft_all(Xs)
            p = joint_target(qs)
            assign = torch.stack(qs).mean(0).argmax(1)
            if w is not None:
                prior_kl = float(kl_prior(p.mean(0), w))
            if prev is not None:
                deltas.append(float((assign != prev).float().mean()))
                report({"phase": "cluster", "step": it, "total": cfg.max_iter, "delta_label": deltas[-1]})
                if deltas[-1] < cfg.tol:
                    converged = True
                    break
            prev = assign
            if it >= cfg.max_iter:
                break
            cancel("clustering")
            if semi:
                _set_lr(opt, cfg.lr)
                sup_steps += self._supervised_phase(Xs, lab_t, y_t, v_t, opt, gen, cancel)
            _set_lr(opt, lr_u)
            for _ in range(min(interval, cfg.max_iter - it)):
                self._unsupervised_step(Xs, p, sampler.next(), w, opt)
                it += 1
        self.history_.update({"iterations": it, "supervised_steps": sup_steps, "update_interval": interval,
                              "n_updates": len(deltas) + 1, "delta_label_history": [round(d, 6) for d in deltas],
                              "converged": converged, "semi_supervised": semi, "n_labelled_used": int(len(lab_t)),
                              "prior_kl": prior_kl, "lr_unsupervised": lr_u, "sample_weighted": v_t is not None})

    def _prior(self, y_cls: np.ndarray, y_t):
        """The class prior w (k,) of ``KL(h || w)`` on the device, per ``prior_source``; records the choice.

        Parameters
        ----------
        y_cls : ndarray (m,) int64   class index of every labelled item (for the per-class counts)
        y_t : Tensor (m',)           cluster index of the labelled items whose class has a cluster
        """
        import torch

        from core.models.dec.losses import class_prior

        cfg, k = self.config, self.n_clusters_
        counts = np.bincount(y_cls, minlength=len(self.classes_))
        source = cfg.prior_source
        if source == "auto":
            few = [str(c) for c, n in zip(self.classes_.tolist(), counts.tolist()) if n < cfg.prior_min_per_class]
            source = "uniform" if few else "labels"
            why = (f"classes with fewer than {cfg.prior_min_per_class} confirmed labels: {', '.join(few[:10])}"
                   + (f" and {len(few) - 10} more" if len(few) > 10 else "")) if few else \
                f"every class has at least {cfg.prior_min_per_class} confirmed labels"
        else:
            why = f"prior_source={source!r}"
        w = class_prior(y_t, k, cfg.prior_smoothing) if source == "labels" else torch.full((k,), 1.0 / k)
        self.history_["prior"] = {"source": source, "reason": why, "w": [round(float(v), 4) for v in w.tolist()]}
        return w.to(self.device)

    def _branch_losses(self, Xs, idx):
        """Per branch: (soft assignment (b, k), reconstruction MSE or None) of the rows ``idx`` (b,)."""
        import torch.nn.functional as F

        from core.models.dec.losses import soft_assignment

        out = []
        for br, X in zip(self.net_.branches, Xs):
            x = X[idx]
            if self.config.idec:
                z, rec = br.reconstruct(x)
                mse = F.mse_loss(rec, x)
            else:
                z, mse = br(x), None
            out.append((soft_assignment(z, br.centroids, self.config.alpha), mse))
        return out

    def _total(self, clustering, outs):
        """IDEC: (L_rec + gamma L_clu) / gamma, so ``lr`` keeps DEC's meaning; DEC: the clustering loss."""
        if not self.config.idec:
            return clustering
        return clustering + sum(mse for _, mse in outs) / self.config.gamma

    def _supervised_phase(self, Xs, lab_t, y_t, v_t, opt, gen, cancel: Canceller) -> int:
        """Cross-entropy between each branch's q and the labels (``sup_epochs`` passes, at least ``sup_min_steps``
        steps); returns the number of steps."""
        import torch

        from core.models.dec.losses import supervised_ce

        cfg, m = self.config, len(lab_t)
        steps, total = 0, max(cfg.sup_epochs * math.ceil(m / cfg.batch_size), cfg.sup_min_steps)
        while steps < total:
            perm = torch.randperm(m, device=self.device, generator=gen)
            for start in range(0, m, cfg.batch_size):
                if steps >= total:
                    break
                sel = perm[start:start + cfg.batch_size]
                outs = self._branch_losses(Xs, lab_t[sel])
                v = None if v_t is None else v_t[sel]
                loss = self._total(sum(supervised_ce(q, y_t[sel], v) for q, _ in outs), outs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            cancel("the supervised phase")
        return steps

    def _unsupervised_step(self, Xs, p, idx, w, opt) -> None:
        """One step on ``sum_b KL(p || q_b) + prior_weight * sum_b KL(mean_batch q_b || w)``."""
        from core.models.dec.losses import kl_prior, kl_target

        outs = self._branch_losses(Xs, idx)
        loss = sum(kl_target(p[idx], q) for q, _ in outs)
        if w is not None:
            loss = loss + self.config.prior_weight * sum(kl_prior(q.mean(0), w) for q, _ in outs)
        loss = self._total(loss, outs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # ----------------------------------------------------------------------------------------- finishing
    def _finish(self, Xs, lab: np.ndarray, y_cls: np.ndarray, weight: np.ndarray | None, align: np.ndarray) -> None:
        """Final assignments, the cluster -> class mapping, the confusion matrix and the collapse report."""
        import torch

        cfg, k, C = self.config, self.n_clusters_, len(self.classes_)
        self.soft_ = torch.stack(self._soft_all(Xs)).mean(0).cpu().numpy()
        self.clusters_ = self.soft_.argmax(1).astype(np.int64)
        self.embedding_ = torch.cat(self._latents(Xs), 1).cpu().numpy()
        self.confusion_ = confusion_matrix(self.clusters_[lab], y_cls, k, C)
        if len(lab):
            # half the smallest item weight for the trained alignment: it breaks ties only
            tie = 0.5 if weight is None or not (weight > 0).any() else 0.5 * float(weight[weight > 0].min())
            trained = np.zeros((k, C))
            for c, j in enumerate(align):
                if j >= 0:
                    trained[j, c] = tie
            self.mapping_ = match_clusters(confusion_matrix(self.clusters_[lab], y_cls, k, C, weight) + trained)
        else:  # no labels: cluster j is named after class j (arbitrary names, in the classes' order)
            self.mapping_ = np.array([j if j < C else -1 for j in range(k)], np.int64)
        self.cluster_class_ = cluster_class_matrix(self.mapping_, self.confusion_, C)
        self.collapse_ = collapse_report(self.clusters_, k, cfg.collapse_fraction, cfg.min_effective_fraction)

    # ------------------------------------------------------------------------------------------ predict
    def _tensors(self, views):
        import torch

        views = _check_views(views)
        check_param("DEC", "views", f"{len(views)} views", len(views) == len(self.net_), f"{len(self.net_)} views")
        return [torch.as_tensor(self._scaled(v, b), device=self.device) for b, v in enumerate(views)]

    def soft_assign(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Soft cluster assignment (n, k), the mean over branches of each branch's Student's t assignment."""
        import torch

        self.net_.eval()
        return torch.stack(self._soft_all(self._tensors(views))).mean(0).cpu().numpy()

    def cluster(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Cluster of each item (n,) int64."""
        return self.soft_assign(views).argmax(1).astype(np.int64)

    def predict_proba(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (n, C), columns in the order of ``classes_``: ``soft_assign @ cluster_class_``."""
        return (self.soft_assign(views) @ self.cluster_class_).astype(np.float32)

    def predict(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Mapped label of each item (n,)."""
        return self.classes_[self.predict_proba(views).argmax(1)]

    def transform(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """Latent embedding (n, e * B): the branch latents side by side."""
        import torch

        return torch.cat(self._latents(self._tensors(views)), 1).cpu().numpy()

    # ---------------------------------------------------------------------------------- state and report
    def state_dict(self) -> dict:
        """Everything needed to predict or warm-start, as NumPy arrays and plain values (device-free)."""
        return {
            "format": "dec-v1", "config": asdict(self.config), "n_clusters": self.n_clusters_,
            "input_dims": [int(s.shape[0]) if np.ndim(s) else None for s in self.shift_],
            "shift": [np.asarray(s) for s in self.shift_], "scale": [np.asarray(s) for s in self.scale_],
            "weights": {k: v.detach().cpu().numpy().copy() for k, v in self.net_.state_dict().items()},
            "classes": self.classes_.tolist(),
            "mapping": None if getattr(self, "mapping_", None) is None else self.mapping_.tolist(),
            "cluster_class": getattr(self, "cluster_class_", None),
        }

    @classmethod
    def from_state(cls, state: dict, *, device: str = "cpu") -> "MultiModalDEC":
        """A fitted model from :meth:`state_dict` (predicts, transforms, and warm-starts a new fit)."""
        from core.models.dec.nets import MultiBranch

        cfg = DECConfig(**{**state["config"], "dims": tuple(state["config"]["dims"])})
        model = cls(cfg, device=device)
        model.n_clusters_ = int(state["n_clusters"])
        model.net_ = MultiBranch(state["input_dims"], cfg.dims, model.n_clusters_).to(device)  # weights loaded next
        model._load_weights(state)
        model.classes_ = np.asarray(state["classes"], dtype=object)
        k, C = model.n_clusters_, len(model.classes_)
        model.mapping_ = np.asarray(state["mapping"] if state["mapping"] is not None
                                    else [j if j < C else -1 for j in range(k)], np.int64)
        model.cluster_class_ = (np.asarray(state["cluster_class"]) if state["cluster_class"] is not None
                                else cluster_class_matrix(model.mapping_, np.zeros((k, C)), C))
        return model

    def summary(self) -> dict:
        """The run's ``metrics["dec"]``: mapping, confusion, collapse report and the training history."""
        names = [str(c) for c in self.classes_.tolist()]
        return {
            "n_clusters": self.n_clusters_, "n_branches": len(self.net_),
            "mapping": {str(j): (names[c] if c >= 0 else None) for j, c in enumerate(self.mapping_.tolist())},
            "confusion": {"rows": [str(j) for j in range(self.n_clusters_)], "cols": names,
                          "counts": self.confusion_.tolist(), "row_name": "cluster", "col_name": "label"},
            "cluster_sizes": np.bincount(self.clusters_, minlength=self.n_clusters_).tolist(),
            "collapse": self.collapse_, **self.history_,
        }


# ----------------------------------------------------------------------------------------------- helpers
def initial_partition(Z: np.ndarray, k: int, config: DECConfig) -> tuple[np.ndarray, dict]:
    """The initial partition of a latent ``Z`` (n, e) into ``k`` clusters per ``config.init_method``.

    Returns
    -------
    labels : ndarray (n,) int64
    info : dict
        ``method`` used ("umap_gmm" or "kmeans"), and ``umap_dim`` / ``gmm_converged``, or the ``reason`` for
        k-means and its ``kmeans_inertia``.
    """
    from sklearn.cluster import KMeans

    n = Z.shape[0]
    if config.init_method == "umap_gmm" and n >= 50:
        import umap
        from sklearn.mixture import GaussianMixture

        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": wanted, reproducible
            warnings.simplefilter("ignore", UserWarning)
            E = umap.UMAP(n_components=min(config.umap_dim, n - 2), n_neighbors=min(config.umap_neighbors, n - 1),
                          min_dist=0.0, random_state=config.seed).fit_transform(Z)
        gmm = GaussianMixture(k, covariance_type="full", n_init=1, random_state=config.seed).fit(E)
        labels = gmm.predict(E)
        if len(np.unique(labels)) == k:
            return labels.astype(np.int64), {"method": "umap_gmm", "umap_dim": E.shape[1],
                                             "gmm_converged": bool(gmm.converged_)}
        why = f"the Gaussian mixture left {k - len(np.unique(labels))} of {k} clusters empty"
    else:
        why = "init_method='kmeans'" if config.init_method == "kmeans" else f"only {n} items (umap_gmm needs 50)"
    km = KMeans(n_clusters=k, n_init=config.kmeans_n_init, random_state=config.seed).fit(Z)
    return km.labels_.astype(np.int64), {"method": "kmeans", "reason": why, "kmeans_inertia": float(km.inertia_)}


def cluster_means(z: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``z`` (n, e) over each of the ``k`` clusters of ``labels`` (n,), (k, e); an empty cluster gets 0."""
    onehot = np.eye(k)[labels]
    return onehot.T @ z / np.maximum(onehot.sum(0), 1.0)[:, None]


class _Batches:
    """Endless mini-batch indices from a device-side ``randperm``, a fresh permutation per epoch."""

    def __init__(self, n: int, batch_size: int, device: str, gen):
        self.n, self.bs, self.device, self.gen = n, batch_size, device, gen
        self.order, self.pos = None, n

    def next(self):
        import torch

        if self.pos >= self.n:
            self.order, self.pos = torch.randperm(self.n, device=self.device, generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx


def _generator(device: str, seed: int):
    import torch

    return torch.Generator(device=device).manual_seed(int(seed))


def _set_lr(opt, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _check_weight(sample_weight: np.ndarray | None, m: int) -> np.ndarray | None:
    """``sample_weight`` as float32 (m,), or None; refuses a wrong length and negative or non-finite values."""
    if sample_weight is None:
        return None
    v = np.asarray(sample_weight, np.float32).reshape(-1)
    check_param("DEC", "sample_weight", f"{len(v)} weights", len(v) == m, f"one weight per labelled row ({m})")
    check_param("DEC", "sample_weight", "weights with a negative, NaN or inf value",
                bool(np.isfinite(v).all() and (v >= 0).all()), "finite weights >= 0")
    return v


def _check_views(views: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(views, np.ndarray):
        views = [views]
    views = [np.asarray(v) for v in views]
    check_param("DEC", "views", f"{len(views)} views", len(views) >= 1, "a non-empty list of 2-D arrays")
    for v in views:
        check_param("DEC", "views", f"an array of shape {v.shape}", v.ndim == 2 and v.shape[0] >= 1 and v.shape[1] >= 1,
                    "a list of 2-D arrays (n, d)")
        check_param("DEC", "views", "an array with NaN or inf", bool(np.isfinite(v).all()), "finite features")
    n = {v.shape[0] for v in views}
    check_param("DEC", "views", f"row counts {sorted(n)}", len(n) == 1, "arrays with the same number of rows")
    return views


def _scaling(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift (d,), scale (d,)) of one view for ``x' = (x - shift) * scale``."""
    x = np.asarray(x, np.float64)
    d = x.shape[1]
    if kind == "standard":
        mean, std = x.mean(0), x.std(0)
        return mean.astype(np.float32), (1.0 / np.where(std > 1e-8, std, 1.0)).astype(np.float32)
    if kind == "dec":
        ms = float((x ** 2).sum(1).mean()) / d
        return np.zeros(d, np.float32), np.full(d, 1.0 / math.sqrt(ms) if ms > 0 else 1.0, np.float32)
    return np.zeros(d, np.float32), np.ones(d, np.float32)
