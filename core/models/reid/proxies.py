"""Camera-aware proxies and their memory bank (Wang et al., "Camera-aware proxies for unsupervised person
re-identification", AAAI 2021; the seed paper, Cao et al., section III.A).

Each pseudo-identity (a DBSCAN cluster) is split by camera: the items of cluster ``y`` seen by camera ``c`` form
one **proxy** ``(y, c)``; without camera ids there is one proxy per cluster. The memory bank ``M`` stores one
unit-length centroid per proxy:

* built from the features of the epoch:  ``M[p] = normalise(mean_{i in p} f_i)``;
* updated after every step with the batch features, item by item in batch order (the moving average of
  Ge et al.'s hybrid memory, reference [7] of the seed)::

      M[p_i] <- m M[p_i] + (1 - m) f_i ;   M[p_i] <- M[p_i] / ||M[p_i]||

Outliers (pseudo-label ``-1``) belong to no proxy (``item_proxy == -1``).

Proxies are numbered by (cluster, camera), both ascending: the proxies of one cluster are consecutive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import check_param

__all__ = ["DEFAULT_MOMENTUM", "ProxyBank", "build_proxies", "update"]

#: momentum of the memory update (CAP and Cluster Contrast use 0.2)
DEFAULT_MOMENTUM = 0.2


@dataclass
class ProxyBank:
    """The proxies of one epoch's pseudo-labels and their memory of centroids.

    Attributes
    ----------
    centroids : torch.Tensor, shape (P, d), float32
        Unit-length centroid of each proxy (the memory bank ``M``; no gradient flows into it).
    proxy_cluster : torch.Tensor, shape (P,), int64
        The cluster (pseudo-identity, as given in ``pseudo``) of each proxy.
    proxy_camera : torch.Tensor, shape (P,), int64
        The camera of each proxy as an index into ``camera_values`` (all 0 without camera ids).
    item_proxy : torch.Tensor, shape (n,), int64
        The proxy of each item; -1 for outliers.
    camera_values : np.ndarray, shape (C,)
        The distinct camera ids of the inliers, sorted (``[0]`` without camera ids).
    """

    centroids: torch.Tensor
    proxy_cluster: torch.Tensor
    proxy_camera: torch.Tensor
    item_proxy: torch.Tensor
    camera_values: np.ndarray

    @property
    def n_proxies(self) -> int:
        """Number of proxies ``P``."""
        return int(self.centroids.shape[0])

    def to(self, device: torch.device | str) -> ProxyBank:
        """The same bank with its tensors on ``device`` (a copy when the device differs)."""
        return ProxyBank(self.centroids.to(device), self.proxy_cluster.to(device), self.proxy_camera.to(device),
                         self.item_proxy.to(device), self.camera_values)


def _as_float_tensor(features: Any) -> torch.Tensor:
    if isinstance(features, torch.Tensor):
        return features.detach().to(torch.float32)
    return torch.as_tensor(np.asarray(features, dtype=np.float32))


def build_proxies(features: np.ndarray | torch.Tensor, pseudo: np.ndarray, cams: np.ndarray | None = None
                  ) -> ProxyBank:
    """One proxy per (cluster, camera) pair (per cluster without ``cams``), centroid = normalised mean feature.

    Parameters
    ----------
    features : np.ndarray or torch.Tensor, shape (n, d)
        Item features (normally unit-length embeddings). The bank lives on their device.
    pseudo : np.ndarray, shape (n,), int
        Cluster of each item; -1 marks an outlier (no proxy). Cluster ids need not be contiguous.
    cams : np.ndarray, shape (n,), or None
        Camera of each item (any sortable scalars); None puts every item in one camera.

    Returns
    -------
    ProxyBank
        ``P`` proxies numbered by (cluster, camera) ascending.
    """
    owner = "build_proxies"
    feats = _as_float_tensor(features)
    check_param(owner, "features", f"tensor of shape {tuple(feats.shape)}", feats.ndim == 2 and feats.shape[1] >= 1,
                "a 2-D (n, d) array with d >= 1")
    n = int(feats.shape[0])
    pseudo = np.asarray(pseudo.cpu() if isinstance(pseudo, torch.Tensor) else pseudo)
    check_param(owner, "pseudo", f"array of shape {pseudo.shape}", pseudo.shape == (n,), f"a 1-D array of length {n}")
    check_param(owner, "pseudo", f"array of dtype {pseudo.dtype}",
                pseudo.size == 0 or np.issubdtype(pseudo.dtype, np.integer), "an int array")
    check_param(owner, "pseudo", f"min {pseudo.min() if pseudo.size else None}",
                pseudo.size == 0 or pseudo.min() >= -1, "cluster ids >= 0, or -1 for outliers")
    pseudo = pseudo.astype(np.int64)
    inlier = pseudo >= 0
    if cams is None:
        cam_codes = np.zeros(n, np.int64)
        camera_values = np.zeros(1, np.int64)
    else:
        cams = np.asarray(cams.cpu() if isinstance(cams, torch.Tensor) else cams)
        check_param(owner, "cams", f"array of shape {cams.shape}", cams.shape == (n,), f"a 1-D array of length {n}")
        camera_values, codes = np.unique(cams[inlier], return_inverse=True)
        cam_codes = np.full(n, -1, np.int64)
        cam_codes[inlier] = codes.reshape(-1)
        if camera_values.size == 0:
            camera_values = np.zeros(1, np.int64)
    # proxy key (cluster, camera) of each inlier -> proxy number, ordered by cluster then camera
    keys = np.stack([pseudo[inlier], cam_codes[inlier]], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True) if len(keys) else (np.zeros((0, 2), np.int64),
                                                                                       np.zeros(0, np.int64))
    item_proxy = np.full(n, -1, np.int64)
    item_proxy[inlier] = inverse.reshape(-1)

    device = feats.device
    idx = torch.as_tensor(item_proxy[inlier], device=device)
    sums = torch.zeros((len(uniq), feats.shape[1]), dtype=torch.float32, device=device)
    sums.index_add_(0, idx, feats[torch.as_tensor(inlier, device=device)])
    centroids = torch.nn.functional.normalize(sums, dim=1)  # the mean's direction: normalising the sum is the same
    return ProxyBank(
        centroids=centroids,
        proxy_cluster=torch.as_tensor(uniq[:, 0].astype(np.int64), device=device),
        proxy_camera=torch.as_tensor(uniq[:, 1].astype(np.int64), device=device),
        item_proxy=torch.as_tensor(item_proxy, device=device),
        camera_values=camera_values,
    )


@torch.no_grad()
def update(bank: ProxyBank, features: torch.Tensor, proxy_idx: torch.Tensor, momentum: float = DEFAULT_MOMENTUM
           ) -> None:
    """Moving-average update of the memory, in place, item by item in batch order.

    For ``i = 1 .. b`` in order: ``M[p_i] <- normalise(m M[p_i] + (1 - m) f_i)``. Items of distinct proxies do not
    interact, so the batch is processed in rounds: round ``r`` updates, at once, every proxy that has at least
    ``r + 1`` items in the batch with its ``(r + 1)``-th item. This equals the sequential loop exactly.

    Parameters
    ----------
    bank : ProxyBank
        The bank to update (its ``centroids`` change).
    features : torch.Tensor, shape (b, d)
        Batch features (detached; cast to the bank's dtype and device).
    proxy_idx : torch.Tensor, shape (b,), int
        Proxy of each batch item (``bank.item_proxy`` of the batch items), each in ``[0, P)``.
    momentum : float
        ``m`` in ``[0, 1]``: the weight kept by the old centroid.
    """
    owner = "update"
    check_param(owner, "momentum", momentum, isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0,
                "a float in [0, 1]")
    C = bank.centroids
    features = features.detach().to(device=C.device, dtype=C.dtype)
    proxy_idx = torch.as_tensor(proxy_idx, device=C.device).long()
    check_param(owner, "features", f"tensor of shape {tuple(features.shape)}",
                features.ndim == 2 and features.shape[1] == C.shape[1], f"a 2-D (b, {C.shape[1]}) tensor")
    check_param(owner, "proxy_idx", f"tensor of shape {tuple(proxy_idx.shape)}",
                proxy_idx.shape == (features.shape[0],), f"a 1-D tensor of length {features.shape[0]}")
    if proxy_idx.numel() == 0:
        return
    lo, hi = int(proxy_idx.min()), int(proxy_idx.max())
    check_param(owner, "proxy_idx", f"values in [{lo}, {hi}]", lo >= 0 and hi < C.shape[0],
                f"proxy numbers in [0, {C.shape[0]})")
    # occurrence rank of each item among the batch items of its proxy, in batch order
    order = torch.sort(proxy_idx, stable=True).indices
    sorted_idx = proxy_idx[order]
    pos = torch.arange(len(order), device=C.device)
    starts = torch.ones_like(sorted_idx, dtype=torch.bool)
    starts[1:] = sorted_idx[1:] != sorted_idx[:-1]
    group_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), dim=0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - group_start
    for r in range(int(rank.max()) + 1):
        sel = rank == r
        rows = proxy_idx[sel]  # distinct within one round
        mixed = momentum * C[rows] + (1.0 - momentum) * features[sel]
        C[rows] = mixed / mixed.norm(dim=1, keepdim=True).clamp_min(1e-12)
