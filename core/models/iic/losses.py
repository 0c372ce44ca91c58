"""The losses of Invariant Information Clustering (Ji, Henriques, Vedaldi 2019), batched in PyTorch.

Equations (the reference implementation is ``IID_loss`` of xu-ji/IIC):

* joint distribution of the cluster assignments ``z`` and ``z'`` of two views (a pair) of the same items, with
  ``p_b``, ``q_b`` (k,) the soft assignments of row ``b`` of each view::

      P = sum_b outer(p_b, q_b);   P = (P + P^T) / 2;   P = P / sum(P)

* marginals ``P_i = sum_j P_ij`` and ``P_j = sum_i P_ij`` (equal, since ``P`` is symmetric);
* the IIC objective, with every probability clamped to ``>= eps`` (``eps = sys.float_info.epsilon``)::

      L = - sum_ij P_ij (log P_ij - lamb log P_j - lamb log P_i)

  which is ``-I(z, z')`` when ``lamb = 1``; ``lamb > 1`` weighs the marginal entropy more and so penalises
  degenerate solutions (every item in one cluster) more strongly;
* :func:`scan_loss`: SCAN's objective for neighbour pairs (Van Gansbeke et al. 2020, eq. 2), the alternative
  ``objective="scan"`` of the model: the consistency of a row and its neighbour, ``-log <p_b, q_b>``, averaged
  over the batch, minus ``entropy_weight`` x the entropy of the first view's mean assignment (clamped at
  ``1e-8`` as SCAN's code)::

      L = - mean_b log <p_b, q_b> - w H(mean_b p_b),    H(m) = - sum_j m_j log m_j

* :func:`mutual_information`: the exact ``I(z, z')`` of the same joint (no clamp, ``0 log 0 = 0``), for reports;
* :func:`supervised_ce`: the weighted cross-entropy ``-sum_b v_b log p_{b, y_b} / sum_b v_b`` on labelled items
  (DEC's, re-exported).

Every function works on whole tensors; there is no per-item Python loop.
"""
from __future__ import annotations

import sys

import torch

from core.errors import check_param
from core.models.dec.losses import supervised_ce

EPS = sys.float_info.epsilon
_LOW_PRECISION = (torch.float16, torch.bfloat16)

SCAN_EPS = 1e-8

__all__ = ["EPS", "SCAN_EPS", "joint_distribution", "iic_loss", "scan_loss", "mutual_information", "supervised_ce"]


def joint_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Symmetrised joint distribution of the cluster assignments of two paired views.

    Parameters
    ----------
    p : Tensor (b, k)
        Soft assignments (rows sum to 1) of the first view.
    q : Tensor (b, k)
        Soft assignments of the paired view (an augmented twin or a neighbour), same rows.

    Returns
    -------
    Tensor (k, k)
        Symmetric, non-negative, sums to 1; float32 when the inputs are float16 / bfloat16 (mixed precision).
    """
    check_param("iic_loss", "q", f"shapes {tuple(p.shape)} and {tuple(q.shape)}",
                p.ndim == 2 and p.shape == q.shape, "a (b, k) tensor of the same shape as p")
    if p.dtype in _LOW_PRECISION or q.dtype in _LOW_PRECISION:  # eps = 2.2e-16 underflows in float16
        p, q = p.float(), q.float()
    with torch.autocast(device_type=p.device.type, enabled=False):  # autocast would run the matmul in half
        pij = p.t() @ q  # sum_b outer(p_b, q_b)
    pij = (pij + pij.t()) / 2.0
    return pij / pij.sum()


def iic_loss(p: torch.Tensor, q: torch.Tensor, *, lamb: float = 1.0,
             eps: float = EPS) -> torch.Tensor:
    """IIC loss ``-sum_ij P_ij (log P_ij - lamb log P_i - lamb log P_j)`` (``-I(z, z')`` at ``lamb = 1``).

    Parameters
    ----------
    p : Tensor (b, k)
        Soft assignments of the first view.
    q : Tensor (b, k)
        Soft assignments of the paired view.
    lamb : float
        Weight of the marginal terms (1 = mutual information; > 1 penalises one dominant cluster more).
    eps : float
        Lower clamp of ``P_ij``, ``P_i`` and ``P_j`` before the logarithms (as the reference code).

    Returns
    -------
    Tensor ()
        Scalar to minimise; differentiable in ``p`` and ``q``. Computed in float32 for float16 / bfloat16
        inputs (autocast), where ``eps`` would underflow to 0.
    """
    pij = joint_distribution(p, q)
    k = pij.shape[0]
    pi = pij.sum(1).view(k, 1).expand(k, k)
    pj = pij.sum(0).view(1, k).expand(k, k)
    pij = pij.clamp_min(eps)
    pi = pi.clamp_min(eps)
    pj = pj.clamp_min(eps)
    return -(pij * (torch.log(pij) - lamb * torch.log(pj) - lamb * torch.log(pi))).sum()


def scan_loss(p: torch.Tensor, q: torch.Tensor, *, entropy_weight: float = 5.0,
              eps: float = SCAN_EPS) -> torch.Tensor:
    """SCAN loss ``- mean_b log <p_b, q_b> - entropy_weight * H(mean_b p_b)`` (Van Gansbeke et al. 2020).

    Parameters
    ----------
    p : Tensor (b, k)
        Soft assignments of the rows (SCAN's anchors).
    q : Tensor (b, k)
        Soft assignments of their paired neighbours, same rows.
    entropy_weight : float
        Weight of the entropy of the mean assignment (SCAN uses 5): spreads the items over the clusters.
    eps : float
        Lower clamp of the dot products and of the mean assignment before the logarithms.

    Returns
    -------
    Tensor ()
        Scalar to minimise; its minimum ``-entropy_weight * log k`` is reached by confident, agreeing pairs
        spread equally over the ``k`` clusters. Float32 for float16 / bfloat16 inputs.
    """
    check_param("scan_loss", "q", f"shapes {tuple(p.shape)} and {tuple(q.shape)}",
                p.ndim == 2 and p.shape == q.shape, "a (b, k) tensor of the same shape as p")
    if p.dtype in _LOW_PRECISION or q.dtype in _LOW_PRECISION:
        p, q = p.float(), q.float()
    consistency = -torch.log((p * q).sum(1).clamp_min(eps)).mean()
    mean = p.mean(0).clamp_min(eps)
    return consistency + entropy_weight * (mean * torch.log(mean)).sum()


def mutual_information(p: torch.Tensor, q: torch.Tensor) -> float:
    """Exact mutual information ``I(z, z')`` (nats) of the joint of two paired views, for reporting.

    Parameters
    ----------
    p : Tensor (b, k)
    q : Tensor (b, k)

    Returns
    -------
    float
        ``sum_ij P_ij log(P_ij / (P_i P_j))`` with ``0 log 0 = 0``; in ``[0, log k]``.
    """
    with torch.no_grad():
        pij = joint_distribution(p.detach().double(), q.detach().double())
        outer = pij.sum(1, keepdim=True) * pij.sum(0, keepdim=True)
        ratio = torch.where(pij > 0, pij / torch.where(outer > 0, outer, torch.ones_like(outer)),
                            torch.ones_like(pij))
        return float((torch.xlogy(pij, ratio)).sum().clamp_min(0.0))
