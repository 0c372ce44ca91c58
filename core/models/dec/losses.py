"""The losses of (semi-supervised, multi-modal) Deep Embedded Clustering, batched in PyTorch.

Equations (DEC: Xie et al. 2016; MultiDEC: Yang et al. 2019; semi-supervised multi-modal DEC, the seed paper):

* soft assignment (Student's t, ``alpha`` degrees of freedom, 1 in DEC)::

      q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha+1)/2) / sum_j' (1 + ||z_i - mu_j'||^2 / alpha)^(-(alpha+1)/2)

* target distribution, with cluster frequencies ``f_j = sum_i q_ij`` over the **whole data set**::

      p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')

* joint target of two branches (late fusion, Eq. 5 of the seed): the mean of their sharpened distributions;
* ``KL(p || q) = 1/n sum_i sum_j p_ij log(p_ij / q_ij)`` (mean over items, as DEC's Keras ``kld``);
* ``KL(h || w) = sum_j h_j log(h_j / w_j)`` with ``h`` the mean of an assignment over items and ``w`` the
  class prior from the confirmed labels (:func:`class_prior`);
* the supervised cross-entropy ``-1/m sum_i log q_{i, y_i}`` on the labelled items.

Every function works on whole tensors; there is no per-item Python loop.
"""
from __future__ import annotations

from typing import Sequence

import torch

EPS = 1e-12

__all__ = ["soft_assignment", "target_distribution", "joint_target", "kl_target", "kl_prior", "class_prior",
           "supervised_ce"]


def soft_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Student's t similarity of every embedding to every centroid, normalised per item.

    Parameters
    ----------
    z : Tensor (n, e)
        Embeddings.
    centroids : Tensor (k, e)
        Cluster centres.
    alpha : float
        Degrees of freedom of the t kernel (1 in DEC).

    Returns
    -------
    Tensor (n, k)
        Rows sum to 1.
    """
    d2 = (z.unsqueeze(1) - centroids.unsqueeze(0)).pow(2).sum(-1)
    num = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return num / num.sum(1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC's auxiliary target: ``q`` squared over the cluster frequency, normalised per item.

    Call it on the soft assignment of the **whole** data set: the frequencies ``f_j`` are sums over all items
    (computing them per mini-batch is a known bug of several public implementations).

    Parameters
    ----------
    q : Tensor (n, k)

    Returns
    -------
    Tensor (n, k)
        Rows sum to 1; no gradient flows through it when ``q`` is detached.
    """
    weight = q.pow(2) / q.sum(0).clamp_min(EPS)
    return weight / weight.sum(1, keepdim=True).clamp_min(EPS)


def joint_target(qs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Joint target of several branches: the mean of their target distributions (Eq. 5 of the seed paper).

    Parameters
    ----------
    qs : sequence of Tensor (n, k)
        Soft assignments of each branch over the whole data set (e.g. image ``q`` and text ``r``).

    Returns
    -------
    Tensor (n, k)
    """
    return torch.stack([target_distribution(q) for q in qs]).mean(0)


def kl_target(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` summed over clusters and averaged over items.

    Parameters
    ----------
    p : Tensor (n, k)
        Target (treated as a constant by the caller).
    q : Tensor (n, k)
        Soft assignment.

    Returns
    -------
    Tensor ()
    """
    return (torch.xlogy(p, p) - p * torch.log(q.clamp_min(EPS))).sum(1).mean()


def kl_prior(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``KL(h || w) = sum_j h_j log(h_j / w_j)`` between two distributions over clusters.

    Parameters
    ----------
    h : Tensor (k,)
        The mean assignment over items (e.g. ``p.mean(0)`` or ``q.mean(0)``).
    w : Tensor (k,)
        The class prior (strictly positive, see :func:`class_prior`).

    Returns
    -------
    Tensor ()
    """
    return (torch.xlogy(h, h) - h * torch.log(w.clamp_min(EPS))).sum()


def class_prior(y: torch.Tensor, k: int, smoothing: float = 1.0) -> torch.Tensor:
    """The class distribution of the confirmed labels, ``w_j`` proportional to ``count_j + smoothing``.

    The seed paper's ``w_j = sum_i y_ij / N``, normalised to sum to 1; the additive smoothing keeps ``w_j > 0``
    for clusters without a confirmed label, where ``KL(h || w)`` would be infinite.

    Parameters
    ----------
    y : Tensor (m,) int64
        Cluster index of each labelled item's class.
    k : int
        Number of clusters.
    smoothing : float
        Pseudo-count added to every cluster.

    Returns
    -------
    Tensor (k,)
    """
    counts = torch.bincount(y, minlength=k).to(torch.float32) + smoothing
    return counts / counts.sum()


def supervised_ce(q: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy between the soft assignment and one-hot labels, ``-sum_i v_i log q_{i, y_i} / sum_i v_i``.

    Parameters
    ----------
    q : Tensor (m, k)
        Soft assignment of the labelled items.
    y : Tensor (m,) int64
        Cluster index of each item's class.
    weight : Tensor (m,), optional
        Per-item weight ``v_i`` (e.g. the consensus confidence of the label); all 1 when omitted.

    Returns
    -------
    Tensor ()
    """
    nll = -torch.log(q.gather(1, y.view(-1, 1)).clamp_min(EPS)).view(-1)
    if weight is None:
        return nll.mean()
    weight = weight.to(nll.dtype)
    return (weight * nll).sum() / weight.sum().clamp_min(EPS)
