"""IIC losses against plain-loop references written from the paper's equations, and their closed forms."""
from __future__ import annotations

import math
import sys

import pytest
import torch

from core.errors import ValidationError
from core.models.iic.losses import iic_loss, joint_distribution, mutual_information, scan_loss, supervised_ce

EPS = sys.float_info.epsilon


# ------------------------------------------------------------------------------------ plain-loop references
def ref_joint(p, q):
    """P_ij = sum_b p_bi q_bj, symmetrised, normalised (Python loops over i, j and rows b)."""
    b, k = len(p), len(p[0])
    P = [[sum(p[r][i] * q[r][j] for r in range(b)) for j in range(k)] for i in range(k)]
    S = [[(P[i][j] + P[j][i]) / 2 for j in range(k)] for i in range(k)]
    total = sum(S[i][j] for i in range(k) for j in range(k))
    return [[S[i][j] / total for j in range(k)] for i in range(k)]


def ref_iic(p, q, lamb=1.0, eps=EPS):
    """-sum_ij P_ij (log P_ij - lamb log P_i - lamb log P_j), every term clamped at eps (IID_loss)."""
    P = ref_joint(p, q)
    k = len(P)
    Pi = [sum(P[i][j] for j in range(k)) for i in range(k)]
    Pj = [sum(P[i][j] for i in range(k)) for j in range(k)]
    loss = 0.0
    for i in range(k):
        for j in range(k):
            pij = max(P[i][j], eps)
            loss -= pij * (math.log(pij) - lamb * math.log(max(Pj[j], eps)) - lamb * math.log(max(Pi[i], eps)))
    return loss


def ref_mi(p, q):
    P = ref_joint(p, q)
    k = len(P)
    Pi = [sum(P[i]) for i in range(k)]
    Pj = [sum(P[i][j] for i in range(k)) for j in range(k)]
    return sum(P[i][j] * math.log(P[i][j] / (Pi[i] * Pj[j])) for i in range(k) for j in range(k) if P[i][j] > 0)


def ref_scan(p, q, w, eps=1e-8):
    """SCAN eq. 2 with loops: -1/b sum_b log(sum_j p_bj q_bj) + w sum_j m_j log m_j, m_j = 1/b sum_b p_bj."""
    b, k = len(p), len(p[0])
    consistency = -sum(math.log(max(sum(p[r][j] * q[r][j] for j in range(k)), eps)) for r in range(b)) / b
    m = [max(sum(p[r][j] for r in range(b)) / b, eps) for j in range(k)]
    return consistency + w * sum(mj * math.log(mj) for mj in m)


def softmax_pair(b, k, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(scale * torch.randn(b, k, generator=g, dtype=torch.float64), 1)
    q = torch.softmax(scale * torch.randn(b, k, generator=g, dtype=torch.float64), 1)
    return p, q


# ------------------------------------------------------------------------------------ against the references
@pytest.mark.parametrize("k", [2, 3, 5, 10])
@pytest.mark.parametrize("lamb", [1.0, 2.0])
def test_iic_loss_matches_plain_loop_reference(k, lamb):
    p, q = softmax_pair(17, k, seed=k)
    p.requires_grad_(True)
    q.requires_grad_(True)
    loss = iic_loss(p, q, lamb=lamb)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref_iic(p.tolist(), q.tolist(), lamb), rel=1e-9, abs=1e-12)
    loss.backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(q.grad).all()
    assert p.grad.abs().sum() > 0


def test_iic_loss_float32_and_clamp_with_empty_clusters():
    # hard one-hot assignments leave zero cells in the joint: the eps clamp keeps the loss and gradients finite
    p = torch.zeros(6, 4)
    p[torch.arange(6), torch.tensor([0, 0, 1, 1, 0, 1])] = 1.0
    p.requires_grad_(True)
    loss = iic_loss(p, p.detach().clone())
    assert loss.item() == pytest.approx(ref_iic(p.tolist(), p.tolist()), rel=1e-5)
    loss.backward()
    assert torch.isfinite(p.grad).all()


def test_joint_matches_reference_symmetric_and_normalised():
    p, q = softmax_pair(9, 4, seed=1)
    P = joint_distribution(p, q)
    assert P.shape == (4, 4)
    assert torch.allclose(P, torch.tensor(ref_joint(p.tolist(), q.tolist()), dtype=P.dtype), atol=1e-12)
    assert torch.allclose(P, P.t())
    assert P.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (P >= 0).all()
    # p and q play symmetric roles
    assert torch.allclose(joint_distribution(q, p), P)


def test_joint_rejects_mismatched_shapes():
    with pytest.raises(ValidationError, match="'q'"):
        joint_distribution(torch.rand(4, 3), torch.rand(5, 3))


# ------------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("k", [2, 4, 7])
def test_identical_one_hot_pairs_reach_log_k(k):
    # k equal clusters, both views agree: I(z, z') = H(z) = log k
    p = torch.eye(k, dtype=torch.float64).repeat(3, 1)
    assert mutual_information(p, p) == pytest.approx(math.log(k), abs=1e-12)
    # the clamped loss: the k(k-1) zero cells each add -eps*(log eps + 2 log k) > 0, at most ~1e-12
    loss = iic_loss(p, p).item()
    assert loss == pytest.approx(-math.log(k), abs=k * k * EPS * 50)


def test_independent_assignments_give_zero():
    k = 5
    # every row uniform (no information in either view)
    uniform = torch.full((8, k), 1.0 / k, dtype=torch.float64)
    assert mutual_information(uniform, uniform) == pytest.approx(0.0, abs=1e-12)
    assert iic_loss(uniform, uniform).item() == pytest.approx(0.0, abs=1e-12)
    # note: uniform against arbitrary q is NOT zero: the symmetrised joint (u s^T + s u^T) / 2 is no product
    p, _ = softmax_pair(8, k, seed=3)
    assert mutual_information(uniform, p) > 1e-4
    # every row the same distribution r on both sides: P = r r^T is a product of its marginals
    r = torch.softmax(torch.randn(k, dtype=torch.float64), 0)
    rows = r.expand(6, k)
    assert mutual_information(rows, rows) == pytest.approx(0.0, abs=1e-12)
    assert iic_loss(rows, rows).item() == pytest.approx(0.0, abs=1e-12)


def test_mutual_information_matches_reference_and_loss_at_lamb_1():
    p, q = softmax_pair(20, 6, seed=7)
    mi = mutual_information(p, q)
    assert mi == pytest.approx(ref_mi(p.tolist(), q.tolist()), rel=1e-9)
    assert 0.0 <= mi <= math.log(6)
    assert iic_loss(p, q, lamb=1.0).item() == pytest.approx(-mi, rel=1e-9)


def test_lamb_above_one_penalises_a_dominant_cluster_more():
    k, b = 4, 40
    # degenerate: 90% of the items in cluster 0, both views agree exactly (I = H(z) ~ 0.43 nats)
    dominant = torch.zeros(b, k, dtype=torch.float64)
    dominant[:36, 0] = 1.0
    dominant[36:, 1:] = torch.eye(3, dtype=torch.float64).repeat(2, 1)[:4]
    # balanced clusters but soft, noisy assignments: lower mutual information
    soft = 0.6 * torch.eye(k, dtype=torch.float64) + 0.4 / k
    balanced = soft.repeat(b // k, 1)
    assert mutual_information(balanced, balanced) < mutual_information(dominant, dominant)
    # lamb = 1 (plain -I) prefers the degenerate solution ...
    assert iic_loss(dominant, dominant, lamb=1.0) < iic_loss(balanced, balanced, lamb=1.0)
    # ... lamb = 2 weighs the marginal entropy more and prefers the balanced one
    assert iic_loss(dominant, dominant, lamb=2.0) > iic_loss(balanced, balanced, lamb=2.0)
    # the gap between degenerate and balanced one-hot solutions grows with lamb
    one_hot = torch.eye(k, dtype=torch.float64).repeat(b // k, 1)
    gap1 = iic_loss(dominant, dominant, lamb=1.0) - iic_loss(one_hot, one_hot, lamb=1.0)
    gap2 = iic_loss(dominant, dominant, lamb=2.0) - iic_loss(one_hot, one_hot, lamb=2.0)
    assert 0 < gap1 < gap2


def test_supervised_ce_weighted_mean():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]], dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    w = torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64)
    nll = [-math.log(0.7), -math.log(0.8), -math.log(0.5)]
    assert supervised_ce(p, y).item() == pytest.approx(sum(nll) / 3)
    assert supervised_ce(p, y, w).item() == pytest.approx((nll[0] + 3 * nll[1]) / 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    # eps = 2.2e-16 underflows to 0 in float16 (log 0 * 0 = nan): the loss upcasts low-precision inputs
    k = 4
    p = torch.eye(k).repeat(3, 1)
    p16 = p.to(dtype).requires_grad_(True)
    loss = iic_loss(p16, p16.detach().clone())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-math.log(k), abs=1e-3)
    loss.backward()
    assert torch.isfinite(p16.grad.float()).all()


def test_loss_stays_float32_under_autocast():
    # autocast would run the joint's matmul in low precision; the loss opts out of it
    p, q = softmax_pair(12, 5, seed=11)
    p, q = p.float(), q.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = iic_loss(p, q)
        P = joint_distribution(p, q)
    assert loss.dtype == torch.float32 and P.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_iic(p.tolist(), q.tolist()), rel=1e-5)


# ------------------------------------------------------------------------------------------------ SCAN
@pytest.mark.parametrize("k", [2, 5, 10])
@pytest.mark.parametrize("w", [0.0, 1.0, 5.0])
def test_scan_loss_matches_plain_loop_reference(k, w):
    p, q = softmax_pair(13, k, seed=10 + k)
    p.requires_grad_(True)
    q.requires_grad_(True)
    loss = scan_loss(p, q, entropy_weight=w)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref_scan(p.tolist(), q.tolist(), w), rel=1e-9, abs=1e-12)
    loss.backward()
    assert torch.isfinite(p.grad).all() and q.grad.abs().sum() > 0


@pytest.mark.parametrize("k", [2, 4, 10])
def test_scan_loss_closed_forms(k):
    """Identical one-hot pairs spread equally over k clusters: consistency 0, entropy log k -> -w log k; every
    row in one cluster: entropy 0 -> 0; disagreeing one-hot pairs hit the clamp: -log(1e-8)."""
    one_hot = torch.eye(k, dtype=torch.float64).repeat(3, 1)
    assert scan_loss(one_hot, one_hot, entropy_weight=5.0).item() == pytest.approx(-5.0 * math.log(k), abs=1e-9)
    same = torch.zeros(6, k, dtype=torch.float64)
    same[:, 0] = 1
    assert scan_loss(same, same, entropy_weight=5.0).item() == pytest.approx(0.0, abs=1e-5)  # clamp: 5 x 1e-8 log 1e-8
    other = torch.roll(one_hot, 1, dims=1)
    assert scan_loss(one_hot, other, entropy_weight=0.0).item() == pytest.approx(-math.log(1e-8), rel=1e-9)


def test_scan_loss_rejects_mismatched_shapes():
    p, q = softmax_pair(4, 3, seed=0)
    with pytest.raises(ValidationError, match="q"):
        scan_loss(p, q[:, :2])


def test_scan_loss_half_precision_is_float32():
    p, q = softmax_pair(8, 4, seed=1)
    loss = scan_loss(p.half(), q.half())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(scan_loss(p, q).item(), abs=1e-2)
