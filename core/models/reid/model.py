"""The unsupervised re-identification model: pseudo-identities, camera-aware proxies and their contrastive loss.

Each epoch (the seed paper's pipeline, Cao et al. section III, after CAP):

1. embed every item with the current network (eval mode): ``F`` (n, e), unit rows;
2. pseudo-identities: the sparse k-reciprocal Jaccard distance of ``F`` (:func:`~core.models.reid.jaccard.
   sparse_jaccard`, pruned at ``eps``) and DBSCAN with the annotators' must-links and cannot-links
   (:func:`~core.models.reid.clustering.constrained_dbscan`); outliers (-1) sit the epoch out;
3. camera-aware proxies of the clusters and their memory bank of centroids (:func:`~core.models.reid.proxies.
   build_proxies`);
4. mini-batches of inliers from the configured sampler (:mod:`core.models.reid.samplers`); each step minimises
   :func:`~core.models.reid.losses.camera_proxy_loss` of the batch against the bank, then updates the bank with
   momentum (:func:`~core.models.reid.proxies.update`).

After the last epoch the items are embedded and clustered once more: ``labels_`` are the published
pseudo-identities and ``confidence_`` each item's soft assignment to its own cluster among all cluster centroids
(``softmax(F C^T / tau)``; 0 for outliers), which orders the Identities page's queue.

The network is :func:`core.models.reid.nets.build_embedding_net`: a projection head on cached features
(``variant="head"``) or a pretrained backbone on crops (``"finetune"``). Everything runs on ``device``; the k-NN
graph of the Jaccard distance is built by faiss on the CPU, by a batched torch top-k on a GPU.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np
import torch

from core.errors import TrainingError
from core.models.context import Canceller
from core.models.reid.clustering import EPS_TOLERANCE, PseudoLabels, constrained_dbscan
from core.models.reid.config import OWNER, ReidConfig
from core.models.reid.jaccard import sparse_jaccard
from core.models.reid.links import Links
from core.models.reid.losses import camera_proxy_loss
from core.models.reid.proxies import ProxyBank, build_proxies, update
from core.models.reid.samplers import make_sampler

EMBED_BATCH = 256


def _float_input(xb: torch.Tensor) -> torch.Tensor:
    """A batch of crops (uint8 -> [0, 1]) or features (as float32)."""
    return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb.float()


@torch.no_grad()
def embed_all(net: torch.nn.Module, data: torch.Tensor, device: str, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """Embeddings (n, e) float32 of every row of ``data`` (n, d) features or (n, 3, H, W) uint8 crops, eval mode."""
    was_training = net.training
    net.eval()
    out = [net(_float_input(data[s:s + batch_size].to(device))).float().cpu()
           for s in range(0, len(data), batch_size)]
    net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def pseudo_identities(F: np.ndarray, config: ReidConfig, links: Links, device: str = "cpu") -> PseudoLabels:
    """DBSCAN pseudo-identities (with links) of the embeddings ``F`` (n, e) on their pruned Jaccard distance (k-NN
    graph by faiss on the CPU, by a torch top-k on a CUDA ``device``)."""
    D = sparse_jaccard(F, k1=min(config.k1, max(1, len(F) - 1)), k2=min(config.k2, max(1, len(F) - 1)),
                       max_distance=min(1.0, config.eps + 2 * EPS_TOLERANCE), device=device)
    return constrained_dbscan(D, config.eps, config.min_samples, must_link=links.must, cannot_link=links.cannot)


def identity_confidence(F: np.ndarray, labels: np.ndarray, tau: float) -> np.ndarray:
    """Soft assignment (n,) of each item to its own cluster: ``softmax(F C^T / tau)[own]``, 0 for outliers.

    Parameters
    ----------
    F : np.ndarray, shape (n, e)      unit embeddings
    labels : np.ndarray, shape (n,)   clusters, -1 = outlier
    tau : float                       temperature
    """
    out = np.zeros(len(F), np.float32)
    inl = labels >= 0
    if not inl.any():
        return out
    k = int(labels.max()) + 1
    C = np.zeros((k, F.shape[1]), np.float64)
    np.add.at(C, labels[inl], F[inl])
    C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    logits = (F[inl] @ C.T) / tau
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    out[inl] = p[np.arange(int(inl.sum())), labels[inl]].astype(np.float32)
    return out


def steps_per_epoch(config: ReidConfig, n_items: int) -> int | None:
    """``iters_per_epoch``, or its default: None (one pass of the sampler) for the head; one pass of the items
    (``round(n / batch_size)``) for the fine-tuned backbone, which a P x K pass (one visit per proxy, a few
    steps) leaves under-trained (reid_col780: mAP 0.065 against 0.158 with a pass of the items, docs/reid.md)."""
    if config.iters_per_epoch is not None:
        return int(config.iters_per_epoch)
    if config.variant == "finetune":
        return max(1, int(round(n_items / config.batch_size)))
    return None


def epoch_batches(config: ReidConfig, labels: np.ndarray, bank: ProxyBank, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of item indices: the sampler's batches (the last smaller one dropped unless it is the
    only one), repeated with fresh draws up to :func:`steps_per_epoch` when that is set."""
    sampler = make_sampler(config.sampler, labels, bank.item_proxy.cpu().numpy(), batch_size=config.batch_size,
                           k=config.k, seed=config.seed)
    steps = steps_per_epoch(config, len(labels))
    draw = 0
    out: list[np.ndarray] = []
    while True:
        batches = [b for b in sampler.batches(epoch * 1000 + draw) if len(b) >= 2]
        full = [b for b in batches if len(b) == config.batch_size]
        out.extend(full or batches)
        draw += 1
        if steps is None or len(out) >= steps or not batches:
            break
    return out if steps is None else out[:steps]


def train_one_epoch(net: torch.nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor, bank: ProxyBank,
                    batches: list[np.ndarray], config: ReidConfig, augment: Callable | None, device: str,
                    cancel: Canceller) -> float:
    """One epoch of proxy-contrastive steps over ``batches``; returns the mean loss."""
    net.train()
    losses = []
    for b in batches:
        cancel("a training epoch")
        idx = torch.as_tensor(b, dtype=torch.long)
        x = _float_input(data[idx].to(device))
        if augment is not None:
            x = augment(x)
        f = net(x)
        proxy = bank.item_proxy[idx.to(bank.item_proxy.device)]
        loss = camera_proxy_loss(f, proxy, bank, tau=config.tau, k_neg=config.k_neg,
                                 intra_weight=config.intra_weight, inter_weight=config.inter_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update(bank, f.detach(), proxy, config.momentum)
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def camera_standardise(X: torch.Tensor, cams: np.ndarray | None, stats: dict | None = None
                       ) -> tuple[torch.Tensor, dict]:
    """Standardise features per camera: ``(x - mean_c) / std_c`` with the statistics of the item's camera ``c``.

    Camera-based normalisation (Zhuang et al., "Rethinking the distribution gap of person re-identification with
    camera-based batch normalization", ECCV 2020): each camera's background and light shift every feature, so
    pretrained features cluster by camera before they cluster by person; standardising each camera's features
    removes that shift (reid_col780's EfficientNet-Lite0 features, cross-camera mAP: docs/reid.md).

    Parameters
    ----------
    X : torch.Tensor, shape (n, d), float
    cams : np.ndarray, shape (n,), int, or None   (None: one camera, plain standardisation)
    stats : dict or None                           {camera: (mean (d,), std (d,))} to apply; None: from ``X``

    Returns
    -------
    (torch.Tensor (n, d) float32, dict)   the standardised features and the statistics used
    """
    X = X.float()
    cams = np.zeros(len(X), np.int64) if cams is None else np.asarray(cams, np.int64)
    out = X.clone()
    stats = dict(stats or {})
    overall = (X.mean(0), X.std(0).clamp_min(1e-3)) if len(X) > 1 else (X.mean(0), torch.ones(X.shape[1]))
    for c in np.unique(cams):
        rows = torch.as_tensor(np.flatnonzero(cams == c))
        if int(c) not in stats:
            part = X[rows]
            stats[int(c)] = (part.mean(0), part.std(0).clamp_min(1e-3)) if len(part) > 1 else overall
        mean, std = stats[int(c)]
        out[rows] = (X[rows] - mean) / std
    return out, stats


class ReidModel:
    """Camera-aware proxy contrastive re-identification on features or crops (scikit-learn-style estimator).

    Parameters
    ----------
    config : ReidConfig
    device : str

    Attributes (after :meth:`fit`)
    ------------------------------
    net_ : torch.nn.Module        the embedding network
    embedding_ : np.ndarray (n, e) float32, unit rows
    labels_ : np.ndarray (n,) int64           final pseudo-identities (-1 = outlier)
    confidence_ : np.ndarray (n,) float32     soft assignment to the own cluster (0 for outliers)
    pseudo_ : PseudoLabels                    the final clustering and its counts
    history_ : list[dict]                     per epoch: clusters, outliers, proxies, steps, loss, seconds
    stopped_ : str | None                     why training stopped before ``epochs`` (budget, no clusters)
    """

    def __init__(self, config: ReidConfig | None = None, *, device: str = "cpu") -> None:
        self.config = (config or ReidConfig()).validate()
        self.device = device

    def _network(self, data: torch.Tensor) -> torch.nn.Module:
        from core.models.reid.nets import build_embedding_net

        c = self.config
        in_dim = int(data.shape[1]) if c.variant == "head" else None
        return build_embedding_net(c.variant, in_dim=in_dim, backbone=c.backbone, pooling=c.pooling,
                                   weights=c.weights, embed_dim=c.embed_dim)

    def _augment(self) -> Callable | None:
        c = self.config
        if c.variant == "finetune":
            from core.models.reid.inputs import CropAugment

            return CropAugment(seed=c.seed)
        if c.feature_dropout > 0:
            drop = torch.nn.Dropout(c.feature_dropout)
            return lambda x: drop(x)
        return None

    def fit(self, data: torch.Tensor | np.ndarray, *, cams: np.ndarray | None = None, links: Links | None = None,
            init_from: dict | None = None, progress: Callable[[dict], None] | None = None,
            should_cancel: Callable[[], bool] | None = None) -> "ReidModel":
        """Train on ``data`` and cluster it.

        Parameters
        ----------
        data : (n, d) float features (variant "head") or (n, 3, H, W) uint8 crops ("finetune"), on any device
        cams : np.ndarray, shape (n,), int, or None     camera of each item (None: one proxy per cluster)
        links : Links or None                           must-links / cannot-links (row indices)
        init_from : dict or None                        a :meth:`state_dict` to start from (warm start)
        progress, should_cancel : callables             progress rows per epoch; polled cancellation
        """
        c = self.config
        t0 = time.perf_counter()
        torch.manual_seed(c.seed)
        data = torch.as_tensor(data)
        self.camera_stats_ = None
        if data.dtype != torch.uint8:
            data = data.float()
            if c.variant == "head" and c.camera_norm:
                data, self.camera_stats_ = camera_standardise(data, cams if c.use_cameras else None)
        n = int(data.shape[0])
        if n < max(4, c.min_samples + 1):
            raise TrainingError(f"Re-identification needs at least {max(4, c.min_samples + 1)} items to find "
                                f"pseudo-identities; this project has {n}. Import more crops.")
        links = links or Links(*(np.zeros((0, 2), np.int64),) * 3)
        cancel = Canceller(should_cancel, "re-identification training")
        report = progress or (lambda info: None)
        net = self._network(data).to(self.device)
        if init_from is not None:
            net.load_state_dict({k: torch.as_tensor(v) for k, v in init_from["weights"].items()})
        optimizer = torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        augment = self._augment()
        self.history_, self.stopped_ = [], None
        for epoch in range(c.epochs):
            te = time.perf_counter()
            report({"phase": "reid epoch", "step": epoch, "total": c.epochs})
            F = embed_all(net, data, self.device)
            cancel("clustering")
            pseudo = pseudo_identities(F, c, links, self.device)
            if pseudo.n_clusters == 0:
                if epoch == 0:
                    raise TrainingError(
                        f"DBSCAN found no pseudo-identity among {n} items (eps={c.eps}, min_samples={c.min_samples}): "
                        "raise eps or lower min_samples, or confirm a few identities first.")
                self.stopped_ = f"epoch {epoch}: every item became an outlier"
                break
            bank = build_proxies(F, pseudo.labels, cams if c.use_cameras else None).to(self.device)
            batches = epoch_batches(c, pseudo.labels, bank, epoch)
            loss = train_one_epoch(net, optimizer, data, bank, batches, c, augment, self.device, cancel)
            self.history_.append({"epoch": epoch, "n_clusters": pseudo.n_clusters, "n_outliers": pseudo.n_outliers,
                                  "n_proxies": bank.n_proxies, "steps": len(batches), "loss": round(loss, 5),
                                  "seconds": round(time.perf_counter() - te, 3)})
            report({"phase": "reid epoch", "step": epoch + 1, "total": c.epochs, "loss": loss,
                    "n_clusters": pseudo.n_clusters})
            if c.time_budget_s is not None and time.perf_counter() - t0 > c.time_budget_s and epoch + 1 < c.epochs:
                self.stopped_ = f"time budget of {c.time_budget_s} s reached after epoch {epoch + 1}"
                break
        self.net_ = net
        self.embedding_ = embed_all(net, data, self.device).astype(np.float32)
        self.pseudo_ = pseudo_identities(self.embedding_, c, links, self.device)
        self.labels_ = self.pseudo_.labels
        self.confidence_ = identity_confidence(self.embedding_, self.labels_, c.tau)
        self.links_ = links
        self.seconds_ = round(time.perf_counter() - t0, 3)
        return self

    def transform(self, data: torch.Tensor | np.ndarray, cams: np.ndarray | None = None) -> np.ndarray:
        """Embeddings (m, e) of new rows (features with their cameras ``cams`` (m,), or crops) with the trained
        network; features are standardised with the training cameras' statistics (an unseen camera: its own)."""
        data = torch.as_tensor(data)
        if self.camera_stats_ is not None:
            if cams is None and len(self.camera_stats_) > 1:
                raise TrainingError("This re-identification model standardises features per camera "
                                    f"({len(self.camera_stats_)} cameras in training): pass the cameras of the rows "
                                    "(cams=, one int per row, the training's camera codes).")
            data, _ = camera_standardise(data, cams, self.camera_stats_)
        return embed_all(self.net_, data, self.device)

    def summary(self) -> dict:
        """The run's report: the config's sampler and loss settings, per-epoch history, final clustering, links."""
        c = self.config
        return {"variant": c.variant, "sampler": c.sampler, "k": c.k, "batch_size": c.batch_size, "tau": c.tau,
                "k_neg": c.k_neg, "epochs_run": len(self.history_), "epochs": c.epochs, "stopped": self.stopped_,
                "history": self.history_, "pseudo": self.pseudo_.report(), "links": self.links_.report(),
                "seconds": self.seconds_}

    def state_dict(self) -> dict:
        """NumPy weights and the config (what a warm start reuses)."""
        return {"weights": {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()},
                "config": asdict(self.config),
                "camera_stats": None if self.camera_stats_ is None else
                {c: (m.numpy(), s.numpy()) for c, (m, s) in self.camera_stats_.items()}}


def signature(config: ReidConfig, data_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a warm start must match: the network's architecture and input shape."""
    return {"variant": config.variant, "backbone": config.backbone if config.variant == "finetune" else None,
            "pooling": config.pooling if config.variant == "finetune" else None, "embed_dim": config.embed_dim,
            "input_shape": list(data_shape[1:]), "owner": OWNER}
