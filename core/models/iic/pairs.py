"""Paired views for Invariant Information Clustering: batched augmentations and k-NN neighbour partners.

IIC (Ji et al. 2019) maximises the mutual information between the cluster assignments of two views of the same
item; the views come from

* :class:`ImageAugment`: one random affine warp per image (crop of random area and aspect ratio, horizontal and
  vertical flips, rotation), done as a single ``affine_grid`` + ``grid_sample`` call, then per-image colour
  jitter (brightness, contrast, saturation, hue) and optionally IIC's :func:`sobel` preprocessing;
* :class:`SpectrogramAugment`: SpecAugment-style time and frequency masks plus a circular time shift;
* :class:`FeatureAugment`: Gaussian noise (in units of each feature's standard deviation) and dropout on
  cached feature vectors;
* :func:`neighbour_graph` / :func:`neighbour_partners`: SCAN-style pairs (Van Gansbeke et al. 2020), an item and
  one of its ``k`` nearest neighbours in a feature space (cosine, through faiss: :mod:`core.features.neighbours`).

Every augmentation works on a whole batch at once, on the batch's device, and draws its randomness from a
``torch.Generator``: the same generator state gives the same views. Random numbers are drawn on the
generator's device and moved to the batch's device (pass a generator on the batch's device to avoid copies).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import check_param

__all__ = ["ImageAugment", "SpectrogramAugment", "FeatureAugment", "sobel", "grayscale", "neighbour_graph",
           "neighbour_partners"]

_LUMA = (0.299, 0.587, 0.114)


def _uniform(gen: torch.Generator | None, shape: tuple[int, ...], low: float, high: float,
             device: torch.device) -> torch.Tensor:
    """``shape`` floats uniform in ``[low, high)`` drawn from ``gen``, on ``device``."""
    gdev = gen.device if gen is not None else torch.device("cpu")
    u = torch.rand(shape, generator=gen, device=gdev)
    return (low + (high - low) * u).to(device)


def _randint(gen: torch.Generator | None, low: int, high: int, shape: tuple[int, ...],
             device: torch.device) -> torch.Tensor:
    """``shape`` int64 uniform in ``[low, high)`` drawn from ``gen``, on ``device``."""
    gdev = gen.device if gen is not None else torch.device("cpu")
    return torch.randint(low, high, shape, generator=gen, device=gdev).to(device)


def _randn(gen: torch.Generator | None, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    gdev = gen.device if gen is not None else torch.device("cpu")
    return torch.randn(shape, generator=gen, device=gdev).to(device)


def _check_range(owner: str, name: str, value: tuple[float, float], low: float, high: float) -> None:
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
          and low <= value[0] <= value[1] <= high)
    check_param(owner, name, value, ok, f"a pair (lo, hi) with {low} <= lo <= hi <= {high}")


def _check_fraction(owner: str, name: str, value: float, high: float = 1.0) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= high
    check_param(owner, name, value, ok, f"a number in [0, {high}]")


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of an image batch.

    Parameters
    ----------
    x : Tensor (b, c, h, w)
        RGB when ``c == 3`` (ITU-R 601 weights), else the channel mean.

    Returns
    -------
    Tensor (b, 1, h, w)
    """
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def sobel(x: torch.Tensor) -> torch.Tensor:
    """IIC's Sobel preprocessing: grayscale, then horizontal and vertical Sobel gradients.

    Borders are replicated (not zero-padded), so a constant image has zero gradient everywhere.

    Parameters
    ----------
    x : Tensor (b, c, h, w)

    Returns
    -------
    Tensor (b, 2, h, w)
        Channel 0 = ``d/dx`` (responds to vertical edges), channel 1 = ``d/dy`` (horizontal edges).
    """
    g = F.pad(grayscale(x), (1, 1, 1, 1), mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # (2, 1, 3, 3)
    return F.conv2d(g, kernels)


@dataclass(frozen=True)
class ImageAugment:
    """Random views of an image batch (IIC's image transforms, batched).

    Parameters
    ----------
    crop_scale : (float, float)
        Range of the crop's area as a fraction of the image (1, 1 = no crop).
    crop_ratio : (float, float)
        Range of the crop's aspect ratio width / height (drawn log-uniformly).
    hflip, vflip : float
        Probabilities of a horizontal / vertical flip.
    rotation : float
        Rotations are uniform in ``[-rotation, rotation]`` degrees.
    brightness, contrast, saturation : float
        Jitter factors are uniform in ``[1 - v, 1 + v]`` per image (torchvision's ColorJitter semantics,
        applied in this fixed order).
    hue : float
        Hue shift uniform in ``[-hue, hue]`` turns (at most 0.5), a rotation of the chroma plane in YIQ space
        (an approximation of torchvision's HSV hue shift); RGB only.
    sobel : bool
        Replace the output by its :func:`sobel` gradients (2 channels).

    Notes
    -----
    Crop, flips and rotation are one affine map per image, sampled once with bilinear ``grid_sample``; pixels
    that come from outside the image are 0. When there is no crop and no rotation the warp is skipped and
    flips are exact ``torch.flip``; an identity configuration returns the input unchanged. Outputs are clamped
    to ``[0, 1]`` after the jitter.
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 15.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.0
    sobel: bool = False

    def __post_init__(self) -> None:
        owner = "ImageAugment"
        _check_range(owner, "crop_scale", self.crop_scale, 1e-3, 1.0)
        ok = (isinstance(self.crop_ratio, (tuple, list)) and len(self.crop_ratio) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.crop_ratio)
              and 0 < self.crop_ratio[0] <= self.crop_ratio[1])
        check_param(owner, "crop_ratio", self.crop_ratio, ok, "a pair (lo, hi) with 0 < lo <= hi")
        _check_fraction(owner, "hflip", self.hflip)
        _check_fraction(owner, "vflip", self.vflip)
        _check_fraction(owner, "rotation", self.rotation, 180.0)
        _check_fraction(owner, "brightness", self.brightness)
        _check_fraction(owner, "contrast", self.contrast)
        _check_fraction(owner, "saturation", self.saturation)
        _check_fraction(owner, "hue", self.hue, 0.5)
        check_param(owner, "sobel", self.sobel, isinstance(self.sobel, bool), "True or False")

    def out_channels(self, c: int) -> int:
        """Channels of the views of a ``c``-channel batch (2 with ``sobel``)."""
        return 2 if self.sobel else int(c)

    def _warps(self) -> bool:
        return tuple(self.crop_scale) != (1.0, 1.0) or tuple(self.crop_ratio) != (1.0, 1.0) or self.rotation > 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One random view of every image.

        Parameters
        ----------
        x : Tensor (b, c, h, w), float in [0, 1]
        gen : torch.Generator, optional
            Source of randomness (torch's default generator when omitted).

        Returns
        -------
        Tensor (b, c', h, w)
            ``c' = 2`` with ``sobel``, else ``c``.
        """
        check_param("ImageAugment", "x", f"tensor of shape {tuple(x.shape)}",
                    x.ndim == 4 and x.is_floating_point(), "a float (b, c, h, w) tensor")
        b, c, h, w = x.shape
        dev = x.device
        if b == 0:
            return x.new_zeros((0, 2, h, w)) if self.sobel else x
        out = x
        if self._warps():
            out = self._warp(x, gen)
        elif self.hflip > 0 or self.vflip > 0:
            if self.hflip > 0:
                m = (_uniform(gen, (b,), 0.0, 1.0, dev) < self.hflip).view(b, 1, 1, 1)
                out = torch.where(m, torch.flip(out, dims=(3,)), out)
            if self.vflip > 0:
                m = (_uniform(gen, (b,), 0.0, 1.0, dev) < self.vflip).view(b, 1, 1, 1)
                out = torch.where(m, torch.flip(out, dims=(2,)), out)
        out = self._jitter(out, gen)
        return sobel(out) if self.sobel else out

    def _warp(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """Crop + flips + rotation as one affine map per image (output coords -> input coords)."""
        b, _, h, w = x.shape
        dev = x.device
        area = _uniform(gen, (b,), self.crop_scale[0], self.crop_scale[1], dev)
        lr = _uniform(gen, (b,), math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), dev)
        ratio = torch.exp(lr)
        cw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        ch = torch.sqrt(area / ratio).clamp(max=1.0)
        tx = _uniform(gen, (b,), -1.0, 1.0, dev) * (1.0 - cw)  # crop centre, normalised coords
        ty = _uniform(gen, (b,), -1.0, 1.0, dev) * (1.0 - ch)
        fx = torch.where(_uniform(gen, (b,), 0.0, 1.0, dev) < self.hflip, -1.0, 1.0)
        fy = torch.where(_uniform(gen, (b,), 0.0, 1.0, dev) < self.vflip, -1.0, 1.0)
        angle = _uniform(gen, (b,), -self.rotation, self.rotation, dev) * (math.pi / 180.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # rotation in pixel space, expressed in normalised coords: S^-1 R S with S = diag(w, h)
        r00, r01 = cos, -sin * (h / w)
        r10, r11 = sin * (w / h), cos
        # theta = crop(scale+shift) @ rotation @ flip
        theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=dev)
        theta[:, 0, 0] = cw * r00 * fx
        theta[:, 0, 1] = cw * r01 * fy
        theta[:, 1, 0] = ch * r10 * fx
        theta[:, 1, 1] = ch * r11 * fy
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _jitter(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        b, c = x.shape[:2]
        dev = x.device
        if not (self.brightness or self.contrast or (c == 3 and (self.saturation or self.hue))):
            return x
        out = x
        if self.brightness:
            out = out * _uniform(gen, (b, 1, 1, 1), 1 - self.brightness, 1 + self.brightness, dev).to(x.dtype)
        if self.contrast:
            f = _uniform(gen, (b, 1, 1, 1), 1 - self.contrast, 1 + self.contrast, dev).to(x.dtype)
            mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * f + mean
        if c == 3 and self.saturation:
            f = _uniform(gen, (b, 1, 1, 1), 1 - self.saturation, 1 + self.saturation, dev).to(x.dtype)
            g = grayscale(out)
            out = (out - g) * f + g
        if c == 3 and self.hue:
            out = _hue_shift(out, _uniform(gen, (b,), -self.hue, self.hue, dev).to(x.dtype))
        return out.clamp(0.0, 1.0)


_RGB2YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _hue_shift(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma (I, Q) of RGB images ``x`` (b, 3, h, w) by ``turns`` (b,) of a full circle."""
    m = torch.tensor(_RGB2YIQ, dtype=x.dtype, device=x.device)
    minv = torch.linalg.inv(m)
    a = turns * (2.0 * math.pi)
    rot = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1] = torch.cos(a)
    rot[:, 1, 2] = -torch.sin(a)
    rot[:, 2, 1] = torch.sin(a)
    rot[:, 2, 2] = torch.cos(a)
    full = minv.unsqueeze(0) @ rot @ m.unsqueeze(0)  # (b, 3, 3)
    return torch.einsum("bij,bjhw->bihw", full, x)


@dataclass(frozen=True)
class SpectrogramAugment:
    """Random views of a spectrogram batch (SpecAugment-style masks and a circular time shift).

    Parameters
    ----------
    time_masks : int
        Number of time masks per item.
    time_mask_width : float
        Width of each time mask as a fraction of the frames: ``max(1, round(time_mask_width * t))`` frames
        (0 disables the time masks).
    freq_masks : int
        Number of frequency masks per item.
    freq_mask_width : float
        Width of each frequency mask as a fraction of the bins, as for time.
    max_shift : float
        Circular roll in time by an integer uniform in ``[-round(max_shift * t), round(max_shift * t)]``.

    Notes
    -----
    Masked cells are set to 0 (silence in the [0, 1] spectrogram images of :mod:`core.audio`), in every
    channel. Masks of one item may overlap, so an item has between one width and ``masks * width`` masked
    frames (bins). The shift is applied first, then the masks.
    """

    time_masks: int = 2
    time_mask_width: float = 0.1
    freq_masks: int = 2
    freq_mask_width: float = 0.1
    max_shift: float = 0.1

    def __post_init__(self) -> None:
        owner = "SpectrogramAugment"
        for name in ("time_masks", "freq_masks"):
            v = getattr(self, name)
            check_param(owner, name, v, isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0")
        for name in ("time_mask_width", "freq_mask_width", "max_shift"):
            _check_fraction(owner, name, getattr(self, name))

    @staticmethod
    def _width(frac: float, size: int) -> int:
        return 0 if frac <= 0 else min(size, max(1, int(round(frac * size))))

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One random view of every spectrogram.

        Parameters
        ----------
        x : Tensor (b, c, f, t)
            Frequency bins along dim 2, frames along dim 3.
        gen : torch.Generator, optional

        Returns
        -------
        Tensor (b, c, f, t)
        """
        check_param("SpectrogramAugment", "x", f"tensor of shape {tuple(x.shape)}",
                    x.ndim == 4 and x.is_floating_point(), "a float (b, c, f, t) tensor")
        b, c, nf, nt = x.shape
        dev = x.device
        out = x
        shift = int(round(self.max_shift * nt))
        if shift > 0 and b:
            s = _randint(gen, -shift, shift + 1, (b,), dev)
            idx = (torch.arange(nt, device=dev).view(1, nt) - s.view(b, 1)) % nt  # out[t] = x[t - s]
            out = torch.gather(out, 3, idx.view(b, 1, 1, nt).expand(b, c, nf, nt))
        keep_t = self._keep(gen, b, nt, self.time_masks, self._width(self.time_mask_width, nt), dev)
        keep_f = self._keep(gen, b, nf, self.freq_masks, self._width(self.freq_mask_width, nf), dev)
        if keep_t is not None:
            out = out * keep_t.view(b, 1, 1, nt).to(out.dtype)
        if keep_f is not None:
            out = out * keep_f.view(b, 1, nf, 1).to(out.dtype)
        return out

    @staticmethod
    def _keep(gen: torch.Generator | None, b: int, size: int, masks: int, width: int,
              dev: torch.device) -> torch.Tensor | None:
        """Boolean (b, size): False inside one of ``masks`` windows of ``width`` cells per row."""
        if masks == 0 or width == 0 or b == 0:
            return None
        start = _randint(gen, 0, size - width + 1, (b, masks), dev)  # (b, m)
        pos = torch.arange(size, device=dev).view(1, 1, size)
        inside = (pos >= start.unsqueeze(-1)) & (pos < start.unsqueeze(-1) + width)  # (b, m, size)
        return ~inside.any(1)


@dataclass(frozen=True)
class FeatureAugment:
    """Random views of cached feature vectors: Gaussian noise then dropout.

    Parameters
    ----------
    noise : float
        Noise standard deviation in units of each feature's standard deviation over the batch (the whole
        batch's standard deviation when the batch has a single row).
    dropout : float
        Probability of zeroing a feature; kept features are scaled by ``1 / (1 - dropout)`` (inverted dropout).
    """

    noise: float = 0.1
    dropout: float = 0.1

    def __post_init__(self) -> None:
        ok = isinstance(self.noise, (int, float)) and not isinstance(self.noise, bool) and self.noise >= 0
        check_param("FeatureAugment", "noise", self.noise, ok, "a number >= 0")
        ok = isinstance(self.dropout, (int, float)) and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1
        check_param("FeatureAugment", "dropout", self.dropout, ok, "a number in [0, 1)")

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """One random view of every feature vector.

        Parameters
        ----------
        x : Tensor (b, d), float
        gen : torch.Generator, optional

        Returns
        -------
        Tensor (b, d)
        """
        check_param("FeatureAugment", "x", f"tensor of shape {tuple(x.shape)}",
                    x.ndim == 2 and x.is_floating_point(), "a float (b, d) tensor")
        b, d = x.shape
        out = x
        if self.noise > 0 and b:
            with torch.no_grad():
                std = x.std(0, unbiased=False, keepdim=True) if b > 1 else x.std(unbiased=False).expand(1, d)
            out = out + self.noise * std * _randn(gen, (b, d), x.device).to(x.dtype)
        if self.dropout > 0 and b:
            keep = _uniform(gen, (b, d), 0.0, 1.0, x.device) >= self.dropout
            out = out * keep.to(x.dtype) / (1.0 - self.dropout)
        return out


def neighbour_graph(X: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest neighbours (cosine) of every row of ``X``, excluding the row itself.

    The search goes through faiss (:class:`core.features.neighbours.NeighbourIndex`, exact inner product on
    unit rows). When duplicates make another row score as high as the row itself, the row is still the one
    removed; if faiss does not return it at all, the last (farthest) neighbour is dropped instead.

    Parameters
    ----------
    X : np.ndarray (n, d)
        Feature vectors.
    k : int
        Neighbours per row, ``1 <= k <= n - 1``.

    Returns
    -------
    np.ndarray (n, k) int64
        Row indices, nearest first.
    """
    from core.features.neighbours import NeighbourIndex

    X = np.asarray(X)
    check_param("neighbour_graph", "X", f"array of shape {X.shape}", X.ndim == 2 and X.shape[0] >= 2,
                "a 2-D (n, d) array with n >= 2")
    n = int(X.shape[0])
    ok = isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 1 <= k <= n - 1
    check_param("neighbour_graph", "k", k, ok, f"an int in [1, {n - 1}] (n - 1 for n = {n} rows)")
    k = int(k)
    _, rows = NeighbourIndex(X, metric="cosine").search(X, k + 1)  # (n, k + 1)
    drop = rows == np.arange(n, dtype=np.int64)[:, None]
    drop[~drop.any(1), -1] = True
    return np.ascontiguousarray(rows[~drop].reshape(n, k), dtype=np.int64)


def neighbour_partners(graph: torch.Tensor, idx: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly random neighbour of each item of a batch.

    Parameters
    ----------
    graph : Tensor (n, k) int64
        Neighbour lists (:func:`neighbour_graph`), on the training device.
    idx : Tensor (b,) int64
        Items of the batch (rows of ``graph``).
    gen : torch.Generator, optional

    Returns
    -------
    Tensor (b,) int64
        ``graph[idx[i], j_i]`` with ``j_i`` uniform in ``[0, k)``, on ``graph``'s device.
    """
    check_param("neighbour_partners", "graph", f"tensor of shape {tuple(graph.shape)}",
                graph.ndim == 2 and graph.shape[1] >= 1, "a (n, k) tensor with k >= 1")
    idx = idx.to(graph.device).long().view(-1)
    col = _randint(gen, 0, int(graph.shape[1]), (idx.shape[0],), graph.device)
    return graph[idx, col]
