"""IIC pairs: batched image / spectrogram / feature augmentations, Sobel, faiss neighbour graph and partners."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ValidationError
from core.models.iic.pairs import (FeatureAugment, ImageAugment, SpectrogramAugment, neighbour_graph,
                                   neighbour_partners, sobel)

NO_GEOMETRY = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=0.0)
NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b=6, c=3, h=12, w=10, seed=0):
    return torch.rand(b, c, h, w, generator=gen(seed))


# ------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("c", [1, 3])
def test_image_augment_shapes_ranges_and_channels(c):
    x = images(c=c)
    out = ImageAugment(hue=0.1)(x, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out, x)
    s = ImageAugment(sobel=True)(x, gen(1))
    assert s.shape == (x.shape[0], 2, x.shape[2], x.shape[3])
    assert ImageAugment(sobel=True).out_channels(c) == 2 and ImageAugment().out_channels(c) == c


def test_image_augment_is_deterministic_per_seed_and_varies_per_sample():
    x = images()
    aug = ImageAugment(hue=0.05)
    a, b = aug(x, gen(5)), aug(x, gen(5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, aug(x, gen(6)))
    # per-sample parameters: the same image repeated gets different views within one call
    rep = x[:1].expand(4, -1, -1, -1).contiguous()
    v = aug(rep, gen(7))
    assert not torch.allclose(v[0], v[1])


def test_identity_config_returns_input():
    x = images()
    out = ImageAugment(**NO_GEOMETRY, hflip=0.0, vflip=0.0, **NO_JITTER)(x, gen(0))
    assert torch.equal(out, x)


def test_hflip_alone_equals_torch_flip():
    x = images()
    assert torch.equal(ImageAugment(**NO_GEOMETRY, hflip=1.0, **NO_JITTER)(x, gen(0)), torch.flip(x, dims=(3,)))
    assert torch.equal(ImageAugment(**NO_GEOMETRY, hflip=0.0, vflip=1.0, **NO_JITTER)(x, gen(0)),
                       torch.flip(x, dims=(2,)))


def test_affine_warp_flip_and_identity_agree_with_exact_ops():
    # a (numerically) negligible rotation forces the affine path: it must reproduce flip / identity
    x = images(h=9, w=14)
    warp_flip = ImageAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=1e-7, hflip=1.0, **NO_JITTER)
    assert torch.allclose(warp_flip(x, gen(0)), torch.flip(x, dims=(3,)), atol=1e-4)
    warp_id = ImageAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=1e-7, hflip=0.0, **NO_JITTER)
    assert torch.allclose(warp_id(x, gen(0)), x, atol=1e-4)


def test_rotation_keeps_the_centre_and_blanks_corners():
    # rotations turn about the image centre: the centre pixel of an odd square image stays; the corners of a
    # white image rotated by 20..30 degrees come from outside the image (0)
    x = images(b=8, h=9, w=9)
    aug = ImageAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation=30.0, hflip=0.5, **NO_JITTER)
    out = aug(x, gen(3))
    assert torch.allclose(out[..., 4, 4], x[..., 4, 4], atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-3)
    white = torch.ones(8, 1, 9, 9)
    rotated = aug(white, gen(3))
    assert (rotated.flatten(1).mean(1) < 1.0).all()
    assert torch.allclose(rotated[..., 3:6, 3:6], torch.ones(8, 1, 3, 3), atol=1e-5)


def test_crop_zooms_in():
    # a crop of area 0.25 of a horizontal ramp covers at most about half of its range
    w = 32
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(16, 1, w, w).contiguous()
    aug = ImageAugment(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), rotation=0.0, hflip=0.0, **NO_JITTER)
    out = aug(ramp, gen(2))
    span = out[:, 0, w // 2, -1] - out[:, 0, w // 2, 0]
    assert torch.all(span > 0.4) and torch.all(span < 0.55)


def test_jitter_per_sample_brightness_factor_range():
    x = torch.full((200, 1, 4, 4), 0.5)
    out = ImageAugment(**NO_GEOMETRY, hflip=0.0, brightness=0.4, contrast=0.0, saturation=0.0)(x, gen(0))
    f = out[:, 0, 0, 0] / 0.5
    assert torch.allclose(out, f.view(-1, 1, 1, 1).expand_as(out) * 0.5)  # one factor per image
    assert f.min() >= 0.6 - 1e-6 and f.max() <= 1.4 + 1e-6
    assert f.max() - f.min() > 0.6  # spread over most of the range


def test_hue_shift_keeps_grey_and_luma_and_changes_colour():
    hue_only = ImageAugment(**NO_GEOMETRY, hflip=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.5)
    grey = torch.rand(4, 1, 5, 5, generator=gen(0)).expand(4, 3, 5, 5).contiguous()
    assert torch.allclose(hue_only(grey, gen(1)), grey, atol=1e-5)  # no chroma to rotate
    colour = 0.35 + 0.3 * torch.rand(4, 3, 5, 5, generator=gen(2))  # stays inside [0, 1] after the shift
    out = hue_only(colour, gen(1))
    assert not torch.allclose(out, colour, atol=1e-2)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((out * luma).sum(1), (colour * luma).sum(1), atol=1e-4)


def test_image_augment_validates_parameters():
    with pytest.raises(ValidationError, match="hflip"):
        ImageAugment(hflip=1.5)
    with pytest.raises(ValidationError, match="crop_scale"):
        ImageAugment(crop_scale=(0.9, 0.5))
    with pytest.raises(ValidationError, match="'x'"):
        ImageAugment()(torch.rand(3, 8, 8), gen(0))


# ------------------------------------------------------------------------------------ sobel
def test_sobel_constant_is_zero_and_vertical_edge_is_horizontal_gradient():
    const = torch.full((2, 3, 7, 9), 0.3)
    assert torch.allclose(sobel(const), torch.zeros(2, 2, 7, 9), atol=1e-6)
    edge = torch.zeros(1, 1, 7, 9)
    edge[..., 5:] = 1.0  # a vertical edge between columns 4 and 5
    s = sobel(edge)
    assert s.shape == (1, 2, 7, 9)
    gx, gy = s[0, 0], s[0, 1]
    assert torch.allclose(gy, torch.zeros_like(gy), atol=1e-6)
    assert torch.all(gx[:, 4] == 4.0) and torch.all(gx[:, 5] == 4.0)  # 1 + 2 + 1 across the edge
    assert torch.all(gx[:, :4] == 0) and torch.all(gx[:, 6:] == 0)
    # a horizontal edge goes to the other channel
    s2 = sobel(edge.transpose(2, 3))
    assert torch.allclose(s2[0, 0], torch.zeros_like(s2[0, 0]), atol=1e-6) and s2[0, 1].abs().max() == 4.0


# ------------------------------------------------------------------------------------ spectrograms
def test_spectrogram_masks_zero_the_expected_frames_and_bins():
    b, c, nf, nt = 5, 3, 20, 50
    x = torch.rand(b, c, nf, nt, generator=gen(0)) + 0.5  # strictly positive: zeros come from masks
    time_only = SpectrogramAugment(time_masks=1, time_mask_width=0.1, freq_masks=0, max_shift=0.0)(x, gen(1))
    zero_frames = (time_only == 0).all(dim=2).all(dim=1)  # (b, t)
    assert zero_frames.sum(1).tolist() == [5] * b  # round(0.1 * 50) frames per item
    assert ((time_only == 0) | (time_only == x)).all()  # everything else untouched
    # masked frames are contiguous
    for row in zero_frames:
        pos = torch.nonzero(row).view(-1)
        assert (pos.max() - pos.min()).item() == 4
    # the width is rounded to the nearest frame: 0.1 * 47 = 4.7 -> 5
    odd = SpectrogramAugment(time_masks=1, freq_masks=0, max_shift=0.0)(x[..., :47], gen(1))
    assert (odd == 0).all(dim=2).all(dim=1).sum(1).tolist() == [5] * b
    freq_only = SpectrogramAugment(time_masks=0, freq_masks=1, freq_mask_width=0.15, max_shift=0.0)(x, gen(1))
    zero_bins = (freq_only == 0).all(dim=3).all(dim=1)  # (b, f)
    assert zero_bins.sum(1).tolist() == [3] * b
    # two masks of each: between one and two widths
    both = SpectrogramAugment(max_shift=0.0)(x, gen(2))
    nt_zero = (both == 0).all(dim=2).all(dim=1).sum(1)
    nf_zero = (both == 0).all(dim=3).all(dim=1).sum(1)
    assert ((nt_zero >= 5) & (nt_zero <= 10)).all() and ((nf_zero >= 2) & (nf_zero <= 4)).all()


def test_spectrogram_shift_is_a_circular_roll_in_time():
    x = torch.rand(4, 1, 6, 30, generator=gen(0))
    out = SpectrogramAugment(time_masks=0, freq_masks=0, max_shift=0.2)(x, gen(3))
    shifts = []
    for i in range(4):
        match = [s for s in range(-6, 7) if torch.equal(out[i], torch.roll(x[i], s, dims=-1))]
        assert len(match) == 1
        shifts.append(match[0])
    assert len(set(shifts)) > 1
    a = SpectrogramAugment()(x, gen(9))
    assert torch.equal(a, SpectrogramAugment()(x, gen(9)))
    assert not torch.equal(a, SpectrogramAugment()(x, gen(10)))


# ------------------------------------------------------------------------------------ features
def test_feature_augment_noise_scale_and_dropout_rate():
    b, d = 4000, 6
    scales = torch.arange(1, d + 1, dtype=torch.float32)
    x = torch.randn(b, d, generator=gen(0)) * scales
    noisy = FeatureAugment(noise=0.1, dropout=0.0)(x, gen(1))
    ratio = (noisy - x).std(0) / x.std(0)
    assert torch.allclose(ratio, torch.full((d,), 0.1), rtol=0.06)
    dropped = FeatureAugment(noise=0.0, dropout=0.25)(x, gen(1))
    zero = dropped == 0
    assert abs(zero.float().mean().item() - 0.25) < 0.02
    assert torch.allclose(dropped[~zero], x[~zero] / 0.75)
    a = FeatureAugment()(x, gen(4))
    assert torch.equal(a, FeatureAugment()(x, gen(4))) and not torch.equal(a, FeatureAugment()(x, gen(5)))
    with pytest.raises(ValidationError, match="dropout"):
        FeatureAugment(dropout=1.0)


# ------------------------------------------------------------------------------------ neighbours
def brute_force_cosine_knn(X: np.ndarray, k: int) -> list[set[int]]:
    n = len(X)
    out = []
    for i in range(n):
        sims = []
        for j in range(n):
            if j != i:
                sims.append((float(X[i] @ X[j]) / (np.linalg.norm(X[i]) * np.linalg.norm(X[j])), j))
        sims.sort(key=lambda t: -t[0])
        out.append({j for _, j in sims[:k]})
    return out


def test_neighbour_graph_matches_brute_force_cosine_and_excludes_self():
    rng = np.random.default_rng(0)
    # rows with very different norms: Euclidean neighbours would differ from cosine ones
    X = rng.normal(size=(40, 5)) * rng.uniform(0.1, 10.0, size=(40, 1))
    k = 6
    G = neighbour_graph(X, k)
    assert G.shape == (40, k) and G.dtype == np.int64
    assert not (G == np.arange(40)[:, None]).any()
    assert [set(row.tolist()) for row in G] == brute_force_cosine_knn(X, k)


def test_neighbour_graph_with_duplicates_still_excludes_self():
    X = np.repeat(np.eye(3), 4, axis=0)  # 12 rows, 4 copies of each
    G = neighbour_graph(X, 3)
    for i, row in enumerate(G):
        assert i not in row.tolist()
        assert set(row.tolist()) == {j for j in range(12) if j // 4 == i // 4 and j != i}


def test_neighbour_graph_validates_k():
    with pytest.raises(ValidationError, match="'k'"):
        neighbour_graph(np.random.rand(5, 2), 5)


def test_neighbour_partners_are_members_of_each_rows_list():
    rng = np.random.default_rng(1)
    G = torch.from_numpy(neighbour_graph(rng.normal(size=(30, 4)), 5))
    idx = torch.tensor([0, 3, 3, 7, 29, 12] * 20)
    part = neighbour_partners(G, idx, gen(0))
    assert part.shape == idx.shape and part.dtype == torch.int64
    for i, p in zip(idx.tolist(), part.tolist()):
        assert p in G[i].tolist()
    # every neighbour of a repeated row gets drawn
    assert set(part[idx == 3].tolist()) == set(G[3].tolist())
    assert torch.equal(part, neighbour_partners(G, idx, gen(0)))
