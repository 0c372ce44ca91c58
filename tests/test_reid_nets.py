"""Re-id embedding networks (core.models.reid.nets) and their crop inputs (core.models.reid.inputs)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import TrainingError, ValidationError
from core.features.neighbours import NeighbourIndex
from core.models.reid.inputs import IMAGENET_MEAN, CropAugment, load_crops
from core.models.reid.nets import GeM, EmbeddingNet, ProjectionHead, build_embedding_net
from core.store.items import ItemRow

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- GeM
def _gem_loop(x: torch.Tensor, p: float, eps: float) -> torch.Tensor:
    """Plain-loop GeM from its definition: (1/(h w) sum_{i,j} max(x, eps)^p)^(1/p) per (b, c)."""
    b, c, h, w = x.shape
    out = torch.zeros(b, c, dtype=torch.float64)
    for n in range(b):
        for k in range(c):
            total = 0.0
            for i in range(h):
                for j in range(w):
                    total += max(float(x[n, k, i, j]), eps) ** p
            out[n, k] = (total / (h * w)) ** (1.0 / p)
    return out


@pytest.mark.parametrize("p", [3.0, 1.7])
def test_gem_matches_a_plain_loop(p):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g)  # negatives exercise the clamp
    gem = GeM(p=p)
    assert gem.p.requires_grad and float(gem.p.detach()) == pytest.approx(p)
    got = gem(x).double()
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, _gem_loop(x, p, gem.eps), rtol=1e-5, atol=1e-7)


def test_gem_default_p_and_eps():
    gem = GeM()
    assert float(gem.p.detach()) == 3.0 and gem.eps == 1e-6


def test_gem_with_p_one_is_average_pooling_and_p_learns():
    x = torch.rand(3, 4, 6, 2) + 0.01
    gem = GeM(p=1.0)
    torch.testing.assert_close(gem(x), x.mean(dim=(2, 3)))
    gem(x).sum().backward()
    assert gem.p.grad is not None and torch.isfinite(gem.p.grad).all() and float(gem.p.grad.abs()) > 0


def test_gem_grows_towards_max_pooling_with_p():
    x = torch.rand(2, 3, 5, 5) + 0.1
    low, high = GeM(p=1.0)(x), GeM(p=50.0)(x)
    assert (high > low).all()
    torch.testing.assert_close(high, x.amax(dim=(2, 3)), rtol=0.1, atol=0.0)


# ---------------------------------------------------------------------------------------------- EmbeddingNet
@pytest.mark.parametrize("pooling", ["avg", "gem"])
def test_tiny_embedding_net_gives_unit_rows(pooling):
    torch.manual_seed(0)
    net = EmbeddingNet("tiny", pooling=pooling)
    x = torch.rand(5, 3, 32, 16)
    y = net(x)
    assert y.shape == (5, net.out_dim) and net.out_dim == net.trunk_dim == 32
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=1), torch.ones(5))
    assert isinstance(net.pool, GeM) == (pooling == "gem")
    if pooling == "gem":
        assert any(p is net.pool.p for p in net.parameters())


def test_tiny_embedding_net_embed_dim_and_frozen_neck_bias():
    torch.manual_seed(0)
    net = EmbeddingNet("tiny", embed_dim=8)
    assert net.out_dim == 8 and net.bn.num_features == 8
    y = net(torch.rand(4, 3, 24, 12))
    assert y.shape == (4, 8)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(4))
    y.pow(3).sum().backward()
    assert not net.bn.bias.requires_grad and net.bn.bias.grad is None
    assert net.bn.weight.grad is not None and net.proj.weight.grad is not None
    assert float(net.bn.bias.abs().max()) == 0.0


def test_embedding_net_accepts_uint8_like_scaled_float():
    torch.manual_seed(0)
    net = EmbeddingNet("tiny").eval()
    xb = torch.randint(0, 256, (3, 3, 16, 8), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(net(xb), net(xb.float() / 255.0))


def test_embedding_net_under_autocast_gives_float32_unit_rows():
    torch.manual_seed(0)
    net = EmbeddingNet("tiny", pooling="gem", embed_dim=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(torch.rand(4, 3, 16, 8))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.norm(dim=1), torch.ones(4))


def test_embedding_net_validates_its_options():
    with pytest.raises(ValidationError, match="'backbone'.*'resnet50'.*Got 'vgg'"):
        EmbeddingNet("vgg")
    with pytest.raises(ValidationError, match="'pooling'.*'gem'.*Got 'max'"):
        EmbeddingNet("tiny", pooling="max")
    with pytest.raises(ValidationError, match="'embed_dim'.*Got 0"):
        EmbeddingNet("tiny", embed_dim=0)
    with pytest.raises(ValidationError, match="'last_stride'"):
        EmbeddingNet("tiny", last_stride=3)


def test_efficientnet_lite0_builds_offline_and_scales_its_inputs():
    torch.manual_seed(0)
    net = EmbeddingNet("efficientnet_lite0", pooling="gem").eval()
    assert net.out_dim == 1280
    torch.testing.assert_close(net.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(net.std.flatten(), torch.full((3,), 0.5))
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        y = net(x)
        fmap = net.trunk.net.extract_features((x - 0.5) / 0.5)
        manual = torch.nn.functional.normalize(net.bn(net.pool(fmap)), dim=1)
        unscaled = torch.nn.functional.normalize(net.bn(net.pool(net.trunk.net.extract_features(x))), dim=1)
    assert fmap.shape == (2, 1280, 2, 1)
    torch.testing.assert_close(y, manual)
    assert not torch.allclose(y, unscaled, atol=1e-3)  # the scaling really happens inside the net


def test_resnet50_without_weights_file_is_a_clear_training_error(tmp_path):
    missing = tmp_path / "no_such_resnet50.pth"
    with pytest.raises(TrainingError) as err:
        EmbeddingNet("resnet50", weights=str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "resnet50" in msg
    assert "weights=PATH" in msg and "LABELTOOL_WEIGHTS_DIR" in msg and "resnet50-" in msg


@pytest.mark.parametrize("last_stride, fmap", [(1, (8, 4)), (2, (4, 2))])
def test_resnet50_from_a_local_weights_file(tmp_path, last_stride, fmap):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "resnet50-local.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    net = EmbeddingNet("resnet50", weights=str(path), last_stride=last_stride, embed_dim=16).eval()
    assert net.trunk_dim == 2048 and net.out_dim == 16
    torch.testing.assert_close(net.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(net.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    x = torch.rand(2, 3, 128, 64)
    with torch.no_grad():
        assert net.trunk(net.normalise_input(x)).shape[1:] == (2048, *fmap)
        y = net(x)
    assert y.shape == (2, 16)
    torch.testing.assert_close(y.norm(dim=1), torch.ones(2))


# ---------------------------------------------------------------------------------------------- ProjectionHead
def _clustered(seed: int = 0, n_clusters: int = 10, per: int = 20, d: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, 1, d)) * 3
    return (centres + rng.normal(size=(n_clusters, per, d))).reshape(-1, d).astype(np.float32)


def _knn(X: np.ndarray, k: int = 5) -> np.ndarray:
    _, idx = NeighbourIndex(X, metric="cosine").search(X, k + 1)
    return idx[:, 1:]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(r) & set(s)) / a.shape[1] for r, s in zip(a, b)]))


@pytest.mark.parametrize("out_dim, hidden", [(None, None), (96, None), (None, 32)])
def test_untrained_head_keeps_the_feature_neighbourhoods(out_dim, hidden):
    X = _clustered()
    torch.manual_seed(0)
    head = ProjectionHead(64, out_dim, hidden).eval()
    with torch.no_grad():
        Y = head(torch.from_numpy(X)).numpy()
    assert Y.shape == (len(X), out_dim or 64)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-5)
    assert _overlap(_knn(X), _knn(Y)) > 0.98  # identity / isometry: the same neighbours (float ties aside)


def test_narrower_head_starts_as_a_random_orthogonal_projection():
    X = _clustered()
    torch.manual_seed(0)
    head = ProjectionHead(64, 48).eval()
    W = head.linear.weight.detach()
    torch.testing.assert_close(W @ W.T, torch.eye(48), atol=1e-5, rtol=0)
    with torch.no_grad():
        Y = head(torch.from_numpy(X)).numpy()
    ov = _overlap(_knn(X), _knn(Y))
    assert ov > 0.5  # a random orthogonal projection, close to an isometry (unrelated rows: ~0.03)


def test_head_trains_and_its_neck_bias_stays_frozen():
    torch.manual_seed(0)
    head = ProjectionHead(8, hidden=4).train()
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(16, 8)
    before = head.linear.weight.detach().clone()
    loss = -(head(x)[:8] * head(x)[8:]).sum()
    loss.backward()
    opt.step()
    assert not torch.equal(before, head.linear.weight.detach())
    assert head.residual[-1].weight.grad is not None and float(head.bn.bias.abs().max()) == 0.0


def test_build_embedding_net_variants():
    head = build_embedding_net("head", in_dim=12, embed_dim=6, hidden=5)
    assert isinstance(head, ProjectionHead) and head.out_dim == 6 and head.residual is not None
    net = build_embedding_net("finetune", backbone="tiny", pooling="gem", embed_dim=4)
    assert isinstance(net, EmbeddingNet) and net.out_dim == 4 and isinstance(net.pool, GeM)
    with pytest.raises(ValidationError, match="'in_dim'.*Got None"):
        build_embedding_net("head", in_dim=None)
    with pytest.raises(ValidationError, match="'variant'.*'finetune'.*Got 'both'"):
        build_embedding_net("both", in_dim=4)


# ---------------------------------------------------------------------------------------------- load_crops
def _item(i: int, path: Path | None) -> ItemRow:
    return ItemRow(id=i, uri=str(path), modality="image", path=path, text=None, group=None, identity=None)


def _png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(arr.astype(np.uint8), mode="RGB").save(path)
    return path


def test_load_crops_resizes_every_image_to_height_by_width(tmp_path):
    h, w = 16, 8
    exact = np.random.default_rng(0).integers(0, 256, size=(h, w, 3))
    ramp = np.zeros((40, 20, 3))  # dark left half, bright right half: a plain resize keeps it
    ramp[:, 10:] = 250
    red = np.zeros((6, 30, 3))
    red[..., 0] = 200  # wide and tiny: upscaled in height, no aspect-preserving crop
    items = [_item(0, _png(tmp_path / "exact.png", exact)), _item(1, _png(tmp_path / "ramp.png", ramp)),
             _item(2, _png(tmp_path / "red.png", red)), _item(3, _png(tmp_path / "exact2.png", exact[::-1]))]
    x = load_crops(items, h, w)
    assert x.shape == (4, 3, h, w) and x.dtype == torch.uint8
    np.testing.assert_array_equal(x[0].permute(1, 2, 0).numpy(), exact)  # already the size: untouched
    np.testing.assert_array_equal(x[3].permute(1, 2, 0).numpy(), exact[::-1])
    assert int(x[1, :, :, : w // 2 - 1].max()) < 30 and int(x[1, :, :, w // 2 + 1 :].min()) > 220
    assert (x[2, 0] == 200).all() and (x[2, 1:] == 0).all()
    assert load_crops([], h, w).shape == (0, 3, h, w)


def test_load_crops_names_unreadable_files(tmp_path):
    good = _png(tmp_path / "good.png", np.full((8, 4, 3), 90))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.png"
    with pytest.raises(TrainingError) as err:
        load_crops([_item(1, good), _item(2, broken), _item(3, missing)], 8, 4)
    msg = str(err.value)
    assert "2 of 3" in msg and str(broken) in msg and str(missing) in msg and str(good) not in msg
    with pytest.raises(ValidationError, match="'height'.*Got 0"):
        load_crops([_item(1, good)], 0, 4)


@pytest.mark.shared
def test_load_crops_on_the_real_reid_crops(shared_datasets):
    from PIL import Image

    files = sorted((shared_datasets / "reid_col780" / "train").glob("*/*.png"))[:12]
    assert len(files) == 12
    items = [_item(i, f) for i, f in enumerate(files)]
    native = load_crops(items, 128, 48)  # the crops' own size (48 x 128, W x H): decoded as they are
    with Image.open(files[0]) as im:
        np.testing.assert_array_equal(native[0].permute(1, 2, 0).numpy(), np.asarray(im.convert("RGB")))
    x = load_crops(items, 128, 64)
    assert x.shape == (12, 3, 128, 64) and x.dtype == torch.uint8
    assert abs(float(x.float().mean()) - float(native.float().mean())) < 2.0  # a resize, not a crop or a pad


# ---------------------------------------------------------------------------------------------- CropAugment
def _batch(b: int = 6, h: int = 12, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_crop_augment_keeps_shape_and_is_deterministic_by_seed():
    x = _batch()
    a, b, c = CropAugment(seed=1)(x), CropAugment(seed=1)(x), CropAugment(seed=2)(x)
    assert a.shape == x.shape and a.dtype == x.dtype
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    aug = CropAugment(seed=1)
    first = aug(x)
    assert not torch.equal(first, aug(x))  # the generator advances from batch to batch
    assert aug(torch.randint(0, 256, (2, 3, 12, 8), dtype=torch.uint8)).dtype == torch.float32


def test_crop_augment_state_round_trip_replays_a_batch():
    x = _batch()
    aug = CropAugment(seed=3)
    aug(x)
    state = {k: v.clone() for k, v in aug.state_dict().items()}
    nxt = aug(x)
    other = CropAugment(seed=99)
    other.load_state_dict(state)
    torch.testing.assert_close(other(x), nxt)


def test_flip_really_flips():
    x = _batch(b=16)
    always = CropAugment(padding=0, erase_p=0.0, flip_p=1.0)(x)
    torch.testing.assert_close(always, x.flip(3))
    assert not torch.equal(always, x)
    half = CropAugment(padding=0, erase_p=0.0, flip_p=0.5, seed=0)(x)
    flipped = torch.tensor([torch.equal(half[i], x[i].flip(2)) for i in range(16)])
    kept = torch.tensor([torch.equal(half[i], x[i]) for i in range(16)])
    assert (flipped ^ kept).all() and flipped.any() and kept.any()
    torch.testing.assert_close(CropAugment(padding=0, erase_p=0.0, flip_p=0.0)(x), x)


def test_pad_and_crop_is_a_window_of_the_zero_padded_image():
    p = 3
    x = _batch(b=10) + 0.5  # no zeros in the image: the padding shows
    out = CropAugment(padding=p, flip_p=0.0, erase_p=0.0, seed=4)(x)
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    h, w = x.shape[2:]
    offsets = set()
    for i in range(len(x)):  # reference: search every offset
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])]
        assert hits, f"image {i} is no window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 1


def test_random_erasing_paints_one_box_of_the_fill_colour():
    x = _batch(b=32, h=32, w=16) * 0.3 + 0.6  # never equal to the ImageNet-mean fill
    aug = CropAugment(padding=0, flip_p=0.0, erase_p=1.0, seed=5)
    out = aug(x)
    fill = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    painted = (out == fill).all(dim=1)  # (b, h, w)
    frac = painted.float().mean(dim=(1, 2))
    assert (frac > 0).float().mean() > 0.9  # a box fits in almost every draw
    assert float(frac.max()) <= 0.4 * 1.3
    for i in torch.nonzero(frac > 0).flatten().tolist():  # one axis-aligned rectangle, the rest untouched
        rows, cols = painted[i].any(1).nonzero().flatten(), painted[i].any(0).nonzero().flatten()
        box = painted[i, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and int(box.sum()) == int(painted[i].sum())
        torch.testing.assert_close(out[i][:, ~painted[i]], x[i][:, ~painted[i]])
    torch.testing.assert_close(CropAugment(padding=0, flip_p=0.0, erase_p=0.0)(x), x)
    half = CropAugment(padding=0, flip_p=0.0, erase_p=0.5, seed=6)(_batch(b=64, h=32, w=16) * 0.3 + 0.6)
    share = float(((half == fill).all(dim=1).flatten(1).any(1)).float().mean())
    assert 0.25 < share < 0.75


def test_crop_augment_validates():
    with pytest.raises(ValidationError, match="'padding'.*Got -1"):
        CropAugment(padding=-1)
    with pytest.raises(ValidationError, match="'erase_scale'"):
        CropAugment(erase_scale=(0.5, 0.1))
    with pytest.raises(ValidationError, match="'x'"):
        CropAugment()(torch.rand(3, 8, 8))


@pytest.mark.gpu
def test_nets_and_augment_on_cuda_match_the_cpu():
    torch.manual_seed(0)
    net = EmbeddingNet("tiny", pooling="gem").eval()
    x = _batch(b=8, h=32, w=16)
    with torch.no_grad():
        ref = net(x)
        on_gpu = net.to("cuda")(x.cuda())
    torch.testing.assert_close(on_gpu.cpu(), ref, atol=1e-4, rtol=1e-4)
    a = CropAugment(seed=7)(x.cuda())
    assert a.device.type == "cuda" and a.shape == x.shape
    torch.testing.assert_close(a, CropAugment(seed=7)(x.cuda()))
