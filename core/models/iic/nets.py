"""The networks of IIC: a trunk (MLP on cached features, a small CNN, or ResNet-18 from scratch) and two
clustering heads (main with ``k`` clusters, overclustering with ``k_over``), each ``n_sub_heads`` linear +
softmax sub-heads on the trunk's output (Ji, Henriques, Vedaldi 2019).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class MLPTrunk(nn.Module):
    """Features (b, d) -> (b, embed_dim): two Linear + BatchNorm + ReLU layers."""

    def __init__(self, d_in: int, hidden: int = 512, embed_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(int(d_in), hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dim), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """A small VGG-style CNN for MNIST-sized images (b, c, s, s) -> (b, embed_dim).

    conv32-conv32-pool, conv64-conv64-pool, conv128, global average pool, Linear + BatchNorm + ReLU; about
    20 M multiply-adds per 28 x 28 image (a CPU budget; IIC's own MNIST net is VGG-11 sized).
    """

    def __init__(self, in_channels: int = 1, embed_dim: int = 128, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(*_conv(in_channels, w), *_conv(w, w), nn.MaxPool2d(2),
                                      *_conv(w, 2 * w), *_conv(2 * w, 2 * w), nn.MaxPool2d(2),
                                      *_conv(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(4 * w, embed_dim), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNet18Small(nn.Module):
    """torchvision ResNet-18 with random weights (no pretraining, as in the seed study), adapted to small
    images: a 3 x 3 stride-1 first convolution and no max-pool (the CIFAR stem); (b, c, s, s) -> (b, embed_dim).
    """

    def __init__(self, in_channels: int = 3, embed_dim: int = 128):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.body = net
        self.fc = nn.Sequential(nn.Linear(512, embed_dim), nn.BatchNorm1d(embed_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class ClusterHead(nn.Module):
    """``n_sub_heads`` linear + softmax sub-heads: (b, e) -> list of (b, k) soft assignments."""

    def __init__(self, embed_dim: int, k: int, n_sub_heads: int):
        super().__init__()
        self.heads = nn.ModuleList([nn.Linear(embed_dim, k) for _ in range(n_sub_heads)])

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        return [torch.softmax(h(z), dim=1) for h in self.heads]


class IICNet(nn.Module):
    """A trunk with a main head (``k``) and an optional overclustering head (``k_over``; 0 = none)."""

    def __init__(self, trunk: nn.Module, embed_dim: int, k: int, k_over: int, n_sub_heads: int):
        super().__init__()
        self.trunk = trunk
        self.main = ClusterHead(embed_dim, k, n_sub_heads)
        self.over = ClusterHead(embed_dim, k_over, n_sub_heads) if k_over else None

    def forward(self, x: torch.Tensor, head: str = "main") -> list[torch.Tensor]:
        """Soft assignments of every sub-head of ``head`` ("main" or "over"), list of (b, k)."""
        z = self.trunk(x)
        return (self.main if head == "main" else self.over)(z)

    def heads_and_embedding(self, x: torch.Tensor
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor]:
        """(main sub-heads [(b, k)], over sub-heads [(b, k_over)] or None, trunk output (b, e)) in one pass."""
        z = self.trunk(x)
        return self.main(z), (None if self.over is None else self.over(z)), z


def build_net(backbone: str, in_shape: tuple[int, ...], *, k: int, k_over: int, n_sub_heads: int,
              hidden: int = 512, embed_dim: int = 128, cnn_width: int = 32) -> IICNet:
    """The :class:`IICNet` of ``backbone`` ("mlp", "small_cnn", "resnet18") for inputs of shape ``in_shape``
    without the batch axis: ``(d,)`` for the MLP, ``(c, s, s)`` for the CNNs."""
    if backbone == "mlp":
        trunk: nn.Module = MLPTrunk(in_shape[0], hidden, embed_dim)
    elif backbone == "small_cnn":
        trunk = SmallCNN(in_shape[0], embed_dim, cnn_width)
    elif backbone == "resnet18":
        trunk = ResNet18Small(in_shape[0], embed_dim)
    else:  # the config validated the name already
        raise ValueError(f"unknown IIC backbone {backbone!r}")
    return IICNet(trunk, embed_dim, k, k_over, n_sub_heads)
