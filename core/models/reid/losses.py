"""The camera-aware proxy contrastive loss with hard-negative mining, batched in PyTorch.

From the seed paper (Cao et al., "Exploring sampler strategies in unsupervised person re-identification",
eq. 1) and the pipeline it follows (Wang et al., "Camera-aware proxies for unsupervised person
re-identification", AAAI 2021, eqs. 2-4; "other settings are following [6]").

Notation, for batch item ``i`` with (unit-length) feature ``f_i`` and proxy ``p_i`` (see
:mod:`core.models.reid.proxies`): ``y_i`` the cluster of ``p_i``, ``c_i`` its camera, ``M`` the memory bank of
proxy centroids (constant: no gradient flows into it), ``tau`` the temperature and::

    s(u, i) = M[u]^T f_i / tau

* **intra-camera term** (CAP eq. 2): within its own camera, each item is classified among that camera's
  proxies, ``Q_c = {u : camera(u) = c}``::

      l_intra(i) = - log( exp s(p_i, i) / sum_{u in Q_{c_i}} exp s(u, i) )

* **inter-camera term** with hard negatives (seed eq. 1, CAP eq. 3): each item against **all** its positive
  proxies ``P+_i = {u : cluster(u) = y_i}`` (its cluster's proxies in every camera) and its ``K`` hardest
  negatives ``P-_i`` (the ``K`` proxies of other clusters with the highest ``s(u, i)``; all of them when fewer
  than ``K`` exist)::

      l_inter(i) = - 1/|P+_i| sum_{u in P+_i} log( exp s(u, i) / (sum_{p in P+_i} exp s(p, i)
                                                                  + sum_{q in P-_i} exp s(q, i)) )

* both terms are averaged within each camera of the batch (``N_c`` items of camera ``c``) and summed over the
  cameras, as CAP's reference code does (``sum_c 1/N_c sum_{i: c_i = c}``; with one camera this is the batch
  mean, i.e. the seed's ``sum_{i=1}^B`` divided by ``B``), then weighted (CAP: ``lambda = 0.5``)::

      L = w_intra sum_c 1/N_c sum_{c_i = c} l_intra(i) + w_inter sum_c 1/N_c sum_{c_i = c} l_inter(i)

  The seed's eq. 1 alone is ``intra_weight=0, inter_weight=1``.

Without camera ids there is one proxy per cluster: the intra term is then the cluster-level contrastive loss
over every cluster centroid and the inter term the same item against its cluster and its ``K`` hardest other
clusters. Everything is computed on whole ``(b, P)`` tensors, in float32 (also under autocast; float64 stays
float64).
"""
from __future__ import annotations

import torch

from core.errors import check_param
from core.models.reid.proxies import ProxyBank

__all__ = [
    "DEFAULT_INTER_WEIGHT",
    "DEFAULT_K_NEG",
    "DEFAULT_TAU",
    "camera_proxy_loss",
    "inter_camera_loss",
    "intra_camera_loss",
    "proxy_logits",
]

#: temperature (0.05-0.09 in the literature: CAP 0.07, the seed 0.09)
DEFAULT_TAU = 0.07
#: hard negatives per item (CAP's ``bg_knn``)
DEFAULT_K_NEG = 50
#: weight of the inter-camera term (CAP's lambda)
DEFAULT_INTER_WEIGHT = 0.5

_OWNER = "camera_proxy_loss"


def _check_index(owner: str, proxy_idx: torch.Tensor, b: int, n_proxies: int) -> None:
    check_param(owner, "proxy_idx", f"tensor of shape {tuple(proxy_idx.shape)}", proxy_idx.shape == (b,),
                f"a 1-D tensor of length {b} (one proxy per batch item)")
    if b:
        lo, hi = int(proxy_idx.min()), int(proxy_idx.max())
        check_param(owner, "proxy_idx", f"values in [{lo}, {hi}]", lo >= 0 and hi < n_proxies,
                    f"proxy numbers in [0, {n_proxies}) (outliers, -1, cannot be in a batch)")


def _camera_weights(cam: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``1 / N_{c_i}`` (b,): averages within each camera of the batch, summed over cameras."""
    counts = torch.bincount(cam)
    return 1.0 / counts[cam].to(dtype)


def proxy_logits(features: torch.Tensor, centroids: torch.Tensor, tau: float = DEFAULT_TAU) -> torch.Tensor:
    """Scaled similarities ``s(u, i) = M[u]^T f_i / tau`` of the batch to every proxy.

    Parameters
    ----------
    features : torch.Tensor, shape (b, d)
        Batch embeddings (unit length for the cosine form of the paper; not renormalised here).
    centroids : torch.Tensor, shape (P, d)
        The memory bank; detached (the memory is updated by :func:`core.models.reid.proxies.update`).
    tau : float
        Temperature > 0.

    Returns
    -------
    torch.Tensor, shape (b, P)
        float32 (float64 for float64 features; float32 under autocast too).
    """
    check_param(_OWNER, "tau", tau, isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0,
                "a float > 0")
    check_param(_OWNER, "features", f"tensor of shape {tuple(features.shape)}",
                features.ndim == 2 and centroids.ndim == 2 and features.shape[1] == centroids.shape[1],
                f"a 2-D (b, {centroids.shape[-1]}) tensor matching the centroids")
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=features.device.type, enabled=False):
        return features.to(dtype) @ centroids.detach().to(device=features.device, dtype=dtype).t() / float(tau)


def intra_camera_loss(logits: torch.Tensor, proxy_idx: torch.Tensor, proxy_camera: torch.Tensor) -> torch.Tensor:
    """Intra-camera term: each item classified among its own camera's proxies, camera-averaged.

    Parameters
    ----------
    logits : torch.Tensor, shape (b, P)
        :func:`proxy_logits` of the batch.
    proxy_idx : torch.Tensor, shape (b,), int
        Proxy of each batch item.
    proxy_camera : torch.Tensor, shape (P,), int
        Camera of each proxy.

    Returns
    -------
    torch.Tensor, shape ()
        ``sum_c 1/N_c sum_{i: c_i = c} -log softmax_{u in Q_c}(s(., i))[p_i]``; 0 for an empty batch.
    """
    b, n_proxies = logits.shape
    _check_index("intra_camera_loss", proxy_idx, b, n_proxies)
    if b == 0:
        return logits.sum() * 0.0
    proxy_idx = proxy_idx.long()
    cam = proxy_camera.long()[proxy_idx]                                  # (b,)
    same_cam = proxy_camera.long()[None, :] == cam[:, None]               # (b, P)
    log_denominator = torch.logsumexp(logits.masked_fill(~same_cam, float("-inf")), dim=1)
    own = logits.gather(1, proxy_idx[:, None])[:, 0]
    return ((log_denominator - own) * _camera_weights(cam, logits.dtype)).sum()


def inter_camera_loss(logits: torch.Tensor, proxy_idx: torch.Tensor, proxy_cluster: torch.Tensor,
                      proxy_camera: torch.Tensor, *, k_neg: int = DEFAULT_K_NEG) -> torch.Tensor:
    """Inter-camera term: each item against all its cluster's proxies and its ``k_neg`` hardest negatives.

    Parameters
    ----------
    logits : torch.Tensor, shape (b, P)
        :func:`proxy_logits` of the batch.
    proxy_idx : torch.Tensor, shape (b,), int
        Proxy of each batch item.
    proxy_cluster : torch.Tensor, shape (P,), int
        Cluster of each proxy (the positives of an item are the proxies of its cluster).
    proxy_camera : torch.Tensor, shape (P,), int
        Camera of each proxy (for the per-camera averaging over the batch).
    k_neg : int
        Hard negatives per item (>= 1); all the other clusters' proxies when fewer exist.

    Returns
    -------
    torch.Tensor, shape ()
        ``sum_c 1/N_c sum_{i: c_i = c} l_inter(i)`` (see the module docstring); 0 for an empty batch.
    """
    ok = isinstance(k_neg, int) and not isinstance(k_neg, bool) and k_neg >= 1
    check_param(_OWNER, "k_neg", k_neg, ok, "an int >= 1")
    b, n_proxies = logits.shape
    _check_index("inter_camera_loss", proxy_idx, b, n_proxies)
    if b == 0:
        return logits.sum() * 0.0
    proxy_idx = proxy_idx.long()
    cluster = proxy_cluster.long()[proxy_idx]                             # (b,)
    positive = proxy_cluster.long()[None, :] == cluster[:, None]          # (b, P), >= 1 per row (p_i itself)
    neg_inf = float("-inf")
    # the K most similar proxies of other clusters; rows with fewer negatives get -inf fillers (exp = 0)
    hard = torch.topk(logits.detach().masked_fill(positive, neg_inf), min(k_neg, n_proxies), dim=1).indices
    hard_logits = logits.gather(1, hard).masked_fill(positive.gather(1, hard), neg_inf)
    log_denominator = torch.logsumexp(torch.cat([logits.masked_fill(~positive, neg_inf), hard_logits], 1), dim=1)
    mean_positive = (logits * positive).sum(1) / positive.sum(1)
    cam = proxy_camera.long()[proxy_idx]
    return ((log_denominator - mean_positive) * _camera_weights(cam, logits.dtype)).sum()


def camera_proxy_loss(features: torch.Tensor, proxy_idx: torch.Tensor, bank: ProxyBank, *,
                      tau: float = DEFAULT_TAU, k_neg: int = DEFAULT_K_NEG, intra_weight: float = 1.0,
                      inter_weight: float = DEFAULT_INTER_WEIGHT) -> torch.Tensor:
    """The camera-aware proxy contrastive loss ``w_intra L_intra + w_inter L_inter`` of a batch.

    Parameters
    ----------
    features : torch.Tensor, shape (b, d)
        Batch embeddings (unit length), differentiable.
    proxy_idx : torch.Tensor, shape (b,), int
        Proxy of each batch item (``bank.item_proxy`` of the batch; never -1).
    bank : ProxyBank
        Proxies and memory (on the device of ``features``).
    tau : float
        Temperature > 0 (0.05-0.09 in the literature).
    k_neg : int
        Hard negative proxies per item (>= 1).
    intra_weight, inter_weight : float
        Weights (>= 0) of the two terms (CAP: 1 and 0.5; the seed's eq. 1 alone: 0 and 1; CAP switches the
        inter term on after a few epochs, which the trainer does with ``inter_weight=0``).

    Returns
    -------
    torch.Tensor, shape ()
        The scalar to minimise; gradients flow into ``features`` only.
    """
    for name, w in (("intra_weight", intra_weight), ("inter_weight", inter_weight)):
        check_param(_OWNER, name, w, isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0,
                    "a float >= 0")
    logits = proxy_logits(features, bank.centroids, tau)
    proxy_idx = torch.as_tensor(proxy_idx, device=logits.device).long()
    loss = logits.sum() * 0.0
    if intra_weight:
        loss = loss + intra_weight * intra_camera_loss(logits, proxy_idx, bank.proxy_camera)
    if inter_weight:
        loss = loss + inter_weight * inter_camera_loss(logits, proxy_idx, bank.proxy_cluster, bank.proxy_camera,
                                                       k_neg=k_neg)
    return loss
