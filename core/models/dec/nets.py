"""The networks of DEC: a symmetric stacked autoencoder per branch, with the cluster centroids of that branch.

DEC's default for input dimension ``d`` is ``d-500-500-2000-10``: ReLU after every hidden layer, a linear
embedding layer and a linear reconstruction layer (Xie et al. 2016).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with ReLU between them and none after the last."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Branch(nn.Module):
    """One modality: encoder ``d -> dims``, decoder back to ``d``, and ``k`` centroids in the latent space.

    Parameters
    ----------
    d_in : int
        Input dimension.
    dims : sequence of int
        Hidden widths then the latent width, e.g. (500, 500, 2000, 10).
    n_clusters : int
    """

    def __init__(self, d_in: int, dims: Sequence[int], n_clusters: int):
        super().__init__()
        sizes = [int(d_in), *[int(x) for x in dims]]
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])
        self.centroids = nn.Parameter(torch.zeros(n_clusters, sizes[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latent embedding (n, e) of ``x`` (n, d)."""
        return self.encoder(x)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(latent (n, e), reconstruction (n, d)) of ``x`` (n, d)."""
        z = self.encoder(x)
        return z, self.decoder(z)


class MultiBranch(nn.Module):
    """One :class:`Branch` per view (image, text, ...), all with the same hidden widths and cluster count."""

    def __init__(self, d_ins: Sequence[int], dims: Sequence[int], n_clusters: int, weight_init: str = "torch"):
        super().__init__()
        self.branches = nn.ModuleList([Branch(d, dims, n_clusters) for d in d_ins])
        if weight_init == "glorot":  # Xavier-uniform weights and zero biases, as DEC's Keras and IDEC code
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

    def __len__(self) -> int:
        return len(self.branches)
