"""Camera-aware proxies, their memory update and the proxy contrastive loss, against plain-loop references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.errors import ValidationError
from core.models.reid.losses import (
    camera_proxy_loss,
    inter_camera_loss,
    intra_camera_loss,
    proxy_logits,
)
from core.models.reid.proxies import ProxyBank, build_proxies, update

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ plain-loop references
def ref_sims(F, C, tau):
    return [[sum(a * b for a, b in zip(C[u], F[i], strict=True)) / tau for u in range(len(C))] for i in range(len(F))]


def ref_loss(F, C, proxy_idx, proxy_cluster, proxy_camera, tau, k_neg, w_intra=1.0, w_inter=0.5):
    """The module docstring's equations with Python loops (CAP eqs. 2-3, the seed's eq. 1)."""
    s = ref_sims(F, C, tau)
    b, n_proxies = len(F), len(C)
    cam = [proxy_camera[p] for p in proxy_idx]
    n_cam = {c: cam.count(c) for c in cam}
    intra = inter = 0.0
    for i in range(b):
        p = proxy_idx[i]
        same_cam = [u for u in range(n_proxies) if proxy_camera[u] == cam[i]]
        intra += -math.log(math.exp(s[i][p]) / sum(math.exp(s[i][u]) for u in same_cam)) / n_cam[cam[i]]
        positives = [u for u in range(n_proxies) if proxy_cluster[u] == proxy_cluster[p]]
        others = [u for u in range(n_proxies) if proxy_cluster[u] != proxy_cluster[p]]
        negatives = sorted(others, key=lambda u: -s[i][u])[:k_neg]
        denominator = sum(math.exp(s[i][u]) for u in positives) + sum(math.exp(s[i][q]) for q in negatives)
        term = -sum(math.log(math.exp(s[i][u]) / denominator) for u in positives) / len(positives)
        inter += term / n_cam[cam[i]]
    return w_intra * intra + w_inter * inter


def ref_update(C, feats, idx, m):
    """M[p_i] <- m M[p_i] + (1 - m) f_i, then renormalise; one item at a time, in batch order."""
    C = [list(row) for row in C]
    for f, p in zip(feats, idx, strict=True):
        mixed = [m * c + (1 - m) * x for c, x in zip(C[p], f, strict=True)]
        norm = max(math.sqrt(sum(v * v for v in mixed)), 1e-12)
        C[p] = [v / norm for v in mixed]
    return C


def unit(x):
    return torch.nn.functional.normalize(x, dim=1)


def toy(seed=0, n=30, d=8, n_clusters=4, n_cams=3, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = unit(torch.randn(n, d, generator=g, dtype=dtype))
    pseudo = torch.randint(0, n_clusters, (n,), generator=g).numpy()
    pseudo[::7] = -1
    cams = torch.randint(0, n_cams, (n,), generator=g).numpy()
    return feats, pseudo, cams


def bank64(feats, pseudo, cams):
    bank = build_proxies(feats, pseudo, cams)
    bank.centroids = bank.centroids.double()
    return bank


# ------------------------------------------------------------------------------------ proxies
def test_build_proxies_hand_example():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [1.0, 1.0], [5.0, 5.0], [0.0, 2.0]])
    pseudo = np.array([0, 0, 1, 1, -1, 0])
    cams = np.array(["a", "b", "a", "a", "b", "a"])
    bank = build_proxies(feats, pseudo, cams)
    # proxies by (cluster, camera): (0, a) = items 0, 5; (0, b) = item 1; (1, a) = items 2, 3; item 4 an outlier
    assert bank.item_proxy.tolist() == [0, 1, 2, 2, -1, 0]
    assert bank.proxy_cluster.tolist() == [0, 0, 1] and bank.proxy_camera.tolist() == [0, 1, 0]
    assert bank.camera_values.tolist() == ["a", "b"]
    assert bank.centroids.dtype == torch.float32 and bank.n_proxies == 3
    expected = unit(torch.stack([(feats[0] + feats[5]) / 2, feats[1], (feats[2] + feats[3]) / 2]))
    torch.testing.assert_close(bank.centroids, expected)


def test_build_proxies_without_cameras_one_per_cluster_and_sparse_ids():
    feats, _, _ = toy(1, n=12)
    pseudo = np.array([5, 5, 2, -1, 2, 9, 9, 9, 5, -1, 2, 2])
    bank = build_proxies(feats.numpy(), pseudo, None)
    assert bank.proxy_cluster.tolist() == [2, 5, 9] and bank.proxy_camera.tolist() == [0, 0, 0]
    assert bank.item_proxy.tolist() == [1, 1, 0, -1, 0, 2, 2, 2, 1, -1, 0, 0]
    for p, c in enumerate([2, 5, 9]):
        mean = feats[torch.as_tensor(pseudo == c)].mean(0, keepdim=True)
        torch.testing.assert_close(bank.centroids[p:p + 1], unit(mean).float())


def test_build_proxies_all_outliers_gives_an_empty_bank():
    bank = build_proxies(np.ones((3, 4)), np.array([-1, -1, -1]), np.array([0, 1, 0]))
    assert bank.n_proxies == 0 and bank.centroids.shape == (0, 4) and bank.item_proxy.tolist() == [-1, -1, -1]


@pytest.mark.parametrize("kwargs", [
    {"features": np.ones(3)},
    {"pseudo": np.array([0, 1])},
    {"pseudo": np.array([0, -2, 1])},
    {"pseudo": np.array([0.0, 1.0, 1.0])},
    {"cams": np.array([0, 1])},
])
def test_build_proxies_rejects_bad_input(kwargs):
    args = {"features": np.ones((3, 2)), "pseudo": np.array([0, 1, 1]), "cams": np.array([0, 0, 1])}
    args.update(kwargs)
    with pytest.raises(ValidationError):
        build_proxies(**args)


@pytest.mark.parametrize("momentum", [0.0, 0.2, 0.9, 1.0])
def test_update_equals_the_sequential_loop_with_repeated_proxies(momentum):
    feats, pseudo, cams = toy(2)
    bank = build_proxies(feats, pseudo, cams)
    before = bank.centroids.clone()
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, bank.n_proxies, (25,), generator=g)  # many repeats, in no order
    batch = unit(torch.randn(25, feats.shape[1], generator=g))
    expected = ref_update(before.tolist(), batch.tolist(), idx.tolist(), momentum)
    update(bank, batch, idx, momentum)
    torch.testing.assert_close(bank.centroids, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-6)
    assert torch.allclose(bank.centroids.norm(dim=1), torch.ones(bank.n_proxies))
    untouched = torch.ones(bank.n_proxies, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(bank.centroids[untouched], before[untouched])


def test_update_momentum_zero_keeps_the_last_item_of_each_proxy():
    bank = build_proxies(torch.eye(3), np.array([0, 1, 2]), None)
    batch = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [4.0, 0.0, 0.0]])
    update(bank, batch, torch.tensor([0, 0, 1]), 0.0)
    torch.testing.assert_close(bank.centroids, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))


@pytest.mark.parametrize("kwargs", [
    {"momentum": 1.5}, {"momentum": -0.1}, {"proxy_idx": torch.tensor([0, 3])}, {"proxy_idx": torch.tensor([-1, 0])},
    {"proxy_idx": torch.tensor([0])}, {"features": torch.ones(2, 5)},
])
def test_update_rejects_bad_input(kwargs):
    bank = build_proxies(torch.eye(3), np.array([0, 1, 2]), None)
    args = {"features": torch.ones(2, 3), "proxy_idx": torch.tensor([0, 1]), "momentum": 0.2}
    args.update(kwargs)
    with pytest.raises(ValidationError):
        update(bank, **args)


# ------------------------------------------------------------------------------------ the loss
@pytest.mark.parametrize("k_neg", [1, 2, 5, 50])
@pytest.mark.parametrize("tau", [0.05, 0.07, 0.5])
def test_loss_matches_plain_loop_reference(k_neg, tau):
    feats, pseudo, cams = toy(3)
    bank = bank64(feats, pseudo, cams)
    inliers = np.flatnonzero(pseudo >= 0)[:12]
    x = (feats[inliers] + 0.3 * unit(torch.randn(len(inliers), feats.shape[1], dtype=torch.float64))).requires_grad_()
    idx = bank.item_proxy[inliers]
    loss = camera_proxy_loss(x, idx, bank, tau=tau, k_neg=k_neg)
    expected = ref_loss(x.tolist(), bank.centroids.tolist(), idx.tolist(), bank.proxy_cluster.tolist(),
                        bank.proxy_camera.tolist(), tau, k_neg)
    assert loss.shape == () and loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("w_intra, w_inter", [(1.0, 0.0), (0.0, 1.0), (2.0, 0.25)])
def test_loss_weights_of_the_two_terms(w_intra, w_inter):
    feats, pseudo, cams = toy(4)
    bank = bank64(feats, pseudo, cams)
    rows = np.flatnonzero(pseudo >= 0)[:10]
    idx = bank.item_proxy[rows]
    loss = camera_proxy_loss(feats[rows], idx, bank, tau=0.07, k_neg=3, intra_weight=w_intra, inter_weight=w_inter)
    expected = ref_loss(feats[rows].tolist(), bank.centroids.tolist(), idx.tolist(), bank.proxy_cluster.tolist(),
                        bank.proxy_camera.tolist(), 0.07, 3, w_intra, w_inter)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    logits = proxy_logits(feats[rows], bank.centroids, 0.07)
    intra = intra_camera_loss(logits, idx, bank.proxy_camera)
    inter = inter_camera_loss(logits, idx, bank.proxy_cluster, bank.proxy_camera, k_neg=3)
    assert loss.item() == pytest.approx(w_intra * intra.item() + w_inter * inter.item(), rel=1e-12)


def test_k_larger_than_the_negatives_available_uses_them_all():
    feats, pseudo, cams = toy(5, n_clusters=3, n_cams=2)
    bank = bank64(feats, pseudo, cams)
    rows = np.flatnonzero(pseudo >= 0)[:9]
    idx = bank.item_proxy[rows]
    logits = proxy_logits(feats[rows], bank.centroids, 0.07)
    n_neg_max = bank.n_proxies - 1
    all_negatives = inter_camera_loss(logits, idx, bank.proxy_cluster, bank.proxy_camera, k_neg=n_neg_max)
    for k in (n_neg_max + 1, 1000):
        value = inter_camera_loss(logits, idx, bank.proxy_cluster, bank.proxy_camera, k_neg=k)
        assert value.item() == pytest.approx(all_negatives.item(), rel=1e-12)
    assert all_negatives.item() == pytest.approx(
        ref_loss(feats[rows].tolist(), bank.centroids.tolist(), idx.tolist(), bank.proxy_cluster.tolist(),
                 bank.proxy_camera.tolist(), 0.07, 10 ** 6, 0.0, 1.0), rel=1e-10)
    # fewer negatives than K: the hardest ones matter, so K=1 differs from all of them
    one = inter_camera_loss(logits, idx, bank.proxy_cluster, bank.proxy_camera, k_neg=1)
    assert one.item() < all_negatives.item()


def test_single_cluster_has_no_negatives_and_stays_finite():
    feats, _, cams = toy(6, n=10)
    pseudo = np.zeros(10, int)
    bank = bank64(feats, pseudo, cams)
    x = feats.clone().requires_grad_()
    loss = camera_proxy_loss(x, bank.item_proxy, bank, k_neg=5)
    expected = ref_loss(feats.tolist(), bank.centroids.tolist(), bank.item_proxy.tolist(),
                        bank.proxy_cluster.tolist(), bank.proxy_camera.tolist(), 0.07, 5)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_gradient_matches_finite_differences():
    feats, pseudo, cams = toy(7)
    bank = bank64(feats, pseudo, cams)
    rows = np.flatnonzero(pseudo >= 0)[:6]
    idx = bank.item_proxy[rows]
    x = feats[rows].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: camera_proxy_loss(f, idx, bank, tau=0.1, k_neg=2), (x,))
    # the memory is constant: no gradient reaches the centroids
    centroids = bank.centroids.clone().requires_grad_()
    bank.centroids = centroids
    camera_proxy_loss(x, idx, bank).backward()
    assert centroids.grad is None


def test_without_cameras_reduces_to_one_proxy_per_cluster():
    feats, pseudo, _ = toy(8)
    bank = bank64(feats, pseudo, None)
    clusters = sorted(set(pseudo[pseudo >= 0].tolist()))
    assert bank.proxy_cluster.tolist() == clusters
    rows = np.flatnonzero(pseudo >= 0)[:14]
    idx = bank.item_proxy[rows]
    tau, k = 0.07, 2
    loss = camera_proxy_loss(feats[rows], idx, bank, tau=tau, k_neg=k)
    # cluster-level reference: CE over all cluster centroids + 0.5 x (own cluster vs the K hardest clusters),
    # both averaged over the batch
    s = ref_sims(feats[rows].tolist(), bank.centroids.tolist(), tau)
    intra = inter = 0.0
    for i, y in enumerate(idx.tolist()):
        intra += -math.log(math.exp(s[i][y]) / sum(math.exp(v) for v in s[i])) / len(rows)
        hardest = sorted((v for u, v in enumerate(s[i]) if u != y), reverse=True)[:k]
        inter += -math.log(math.exp(s[i][y]) / (math.exp(s[i][y]) + sum(math.exp(v) for v in hardest))) / len(rows)
    assert loss.item() == pytest.approx(intra + 0.5 * inter, rel=1e-10)
    # and one constant camera gives the same bank and loss
    same = bank64(feats, pseudo, np.full(len(pseudo), 3))
    assert torch.equal(same.item_proxy, bank.item_proxy)
    assert camera_proxy_loss(feats[rows], idx, same, tau=tau, k_neg=k).item() == pytest.approx(loss.item(), rel=1e-12)


def test_float32_bank_and_half_features_compute_in_float32():
    feats, pseudo, cams = toy(9, dtype=torch.float32)
    bank = build_proxies(feats, pseudo, cams)
    rows = np.flatnonzero(pseudo >= 0)[:8]
    loss32 = camera_proxy_loss(feats[rows], bank.item_proxy[rows], bank)
    loss16 = camera_proxy_loss(feats[rows].to(torch.bfloat16), bank.item_proxy[rows], bank)
    assert loss32.dtype == torch.float32 and loss16.dtype == torch.float32
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.05)


@pytest.mark.parametrize("kwargs", [
    {"tau": 0.0}, {"tau": -1.0}, {"k_neg": 0}, {"k_neg": 2.5}, {"intra_weight": -1.0},
    {"proxy_idx": torch.tensor([0, -1])}, {"proxy_idx": torch.tensor([0, 99])}, {"proxy_idx": torch.tensor([0])},
    {"features": torch.ones(2, 3)},
])
def test_loss_rejects_bad_input(kwargs):
    feats, pseudo, cams = toy(10, dtype=torch.float32)
    bank = build_proxies(feats, pseudo, cams)
    args = {"features": feats[:2], "proxy_idx": torch.tensor([0, 1]), "bank": bank}
    args.update(kwargs)
    with pytest.raises(ValidationError):
        camera_proxy_loss(**args)


def test_bank_to_device_keeps_fields():
    bank = build_proxies(torch.eye(3), np.array([0, 1, 1]), np.array([0, 0, 1]))
    moved = bank.to("cpu")
    assert isinstance(moved, ProxyBank) and torch.equal(moved.centroids, bank.centroids)
    assert moved.camera_values.tolist() == [0, 1]
