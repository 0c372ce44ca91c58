"""Crop inputs of the fine-tuned re-id network: decoding once into one uint8 tensor, and the train augmentation.

:func:`load_crops` decodes every item's image once (Pillow, in a few threads, through
:func:`core.features.image.decode_image`) and resizes it to ``height x width`` with a plain resize: a crop is
already a person's bounding box, so nothing is cut off and the aspect ratio is not kept. Images no larger than
the target in both directions are decoded at their own size; images of the same size are then resized
together in one batched, antialiased interpolation (the usual case: every crop of a camera has one size).

:class:`CropAugment` is the standard re-id train augmentation (Luo et al.'s bag of tricks; the CAP / SpCL code
the seed paper follows): random horizontal flip (p = 0.5), zero padding of 10 px and a random crop back to the
input size, and random erasing (p = 0.5, area 2-40 % of the image, aspect ratio 0.3-3.3, filled with the
ImageNet mean colour). It works on a whole float batch on any device, every random draw from one
``torch.Generator`` per device, so a seed gives the same batch again.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import TrainingError, check_param, is_int

__all__ = ["load_crops", "CropAugment", "IMAGENET_MEAN"]

#: ImageNet mean colour in [0, 1]: the random-erasing fill (zero after the ResNet input normalisation)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: random-erasing attempts per image before giving up (torchvision's RandomErasing tries 10 times)
ERASE_ATTEMPTS = 10


# ---------------------------------------------------------------------------------------------- decoding
def _decode(path: Any, size: int) -> np.ndarray | str:
    """(h, w, 3) uint8 with h, w <= size, or the reason it cannot be read."""
    from core.features.base import ItemError
    from core.features.image import decode_image

    try:
        return decode_image(path, size, "RGB", keep_small=True)
    except ItemError as exc:
        return str(exc)


def _resize_group(pixels: list[np.ndarray], height: int, width: int) -> torch.Tensor:
    """Same-sized (h, w, 3) uint8 images -> (g, 3, height, width) uint8, one batched antialiased resize."""
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
    if x.shape[2:] == (height, width):
        return x.contiguous()
    y = F.interpolate(x.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def load_crops(items: Sequence[Any], height: int, width: int, *, num_workers: int = 4) -> torch.Tensor:
    """Decode the images of ``items`` once and resize each to ``height x width`` (no aspect-preserving crop).

    Parameters
    ----------
    items : sequence of n :class:`core.store.ItemRow` (anything with ``.path``; ``.id`` names it in errors)
    height, width : int        target size in pixels
    num_workers : int          decoding threads

    Returns
    -------
    Tensor (n, 3, height, width) uint8 on the CPU, in the order of ``items``.

    Raises
    ------
    ValidationError
        A bad ``height``, ``width`` or ``num_workers``.
    TrainingError
        Some file is missing or cannot be decoded; the message names the paths (the first five) and why.
    """
    for name, v in (("height", height), ("width", width), ("num_workers", num_workers)):
        check_param("load_crops", name, v, is_int(v) and v >= 1, "an int >= 1")
    items = list(items)
    size = max(int(height), int(width))
    with ThreadPoolExecutor(max_workers=max(1, min(int(num_workers), len(items), os.cpu_count() or 1))) as pool:
        decoded = list(pool.map(lambda it: _decode(it.path, size), items))
    bad = [(it, why) for it, why in zip(items, decoded) if isinstance(why, str)]
    if bad:
        listed = "; ".join(f"item {getattr(it, 'id', '?')} at {it.path}: {why}" for it, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise TrainingError(f"{len(bad)} of {len(items)} re-id crops cannot be read: {listed}{more}. "
                            "Fix or remove these files (or their items) and retrain.")
    out = torch.empty((len(items), 3, int(height), int(width)), dtype=torch.uint8)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, px in enumerate(decoded):
        groups.setdefault(px.shape, []).append(i)
    for idx in groups.values():
        out[torch.as_tensor(idx)] = _resize_group([decoded[i] for i in idx], int(height), int(width))
    return out


# ---------------------------------------------------------------------------------------------- augmentation
def _pair_ok(pair: Any, *, upper: float = math.inf) -> bool:
    """A pair of numbers (lo, hi) with 0 < lo <= hi < upper."""
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError):
        return False
    return 0 < lo <= hi < upper


class CropAugment:
    """Random flip, pad + random crop and random erasing of a float batch, on its own device.

    Parameters
    ----------
    padding : int                 zero padding on each side before the random crop back to (H, W); 0 turns it off
    flip_p : float                probability of a horizontal flip per image
    erase_p : float               probability of erasing one rectangle per image
    erase_scale : (float, float)  erased area as a fraction of the image, drawn uniformly
    erase_ratio : (float, float)  aspect ratio (height / width) of the rectangle, drawn log-uniformly
    erase_value : (float, float, float)   fill colour in [0, 1] (ImageNet mean)
    seed : int                    seed of the per-device generators

    Notes
    -----
    The draws of a batch (flip, crop offsets, erasing) come from :meth:`generator` of its device, in that order;
    :meth:`state_dict` / :meth:`load_state_dict` save and restore every generator (checkpoints).
    """

    def __init__(self, *, padding: int = 10, flip_p: float = 0.5, erase_p: float = 0.5,
                 erase_scale: tuple[float, float] = (0.02, 0.4), erase_ratio: tuple[float, float] = (0.3, 3.3),
                 erase_value: tuple[float, float, float] = IMAGENET_MEAN, seed: int = 0) -> None:
        owner = "CropAugment"
        check_param(owner, "padding", padding, is_int(padding) and padding >= 0, "an int >= 0 (pixels)")
        for name, v in (("flip_p", flip_p), ("erase_p", erase_p)):
            check_param(owner, name, v, isinstance(v, (int, float)) and 0 <= v <= 1, "a probability in [0, 1]")
        check_param(owner, "erase_scale", erase_scale, _pair_ok(erase_scale, upper=1.0),
                    "a pair (lo, hi) with 0 < lo <= hi < 1 (fractions of the image area)")
        check_param(owner, "erase_ratio", erase_ratio, _pair_ok(erase_ratio),
                    "a pair (lo, hi) with 0 < lo <= hi (height / width)")
        check_param(owner, "erase_value", erase_value, isinstance(erase_value, (tuple, list)) and len(erase_value) == 3,
                    "three numbers (an RGB colour in [0, 1])")
        check_param(owner, "seed", seed, is_int(seed) and seed >= 0, "an int >= 0")
        self.padding, self.flip_p, self.erase_p = int(padding), float(flip_p), float(erase_p)
        self.erase_scale = (float(erase_scale[0]), float(erase_scale[1]))
        self.erase_ratio = (float(erase_ratio[0]), float(erase_ratio[1]))
        self.erase_value = tuple(float(v) for v in erase_value)
        self.seed = int(seed)
        self._gen: dict[str, torch.Generator] = {}

    # ------------------------------------------------------------------ random state
    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator of ``device``, created from ``seed`` at first use."""
        key = str(torch.device(device))
        if key not in self._gen:
            self._gen[key] = torch.Generator(device=key).manual_seed(self.seed)
        return self._gen[key]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{device: generator state (uint8 tensor)} of every generator used so far."""
        return {key: g.get_state() for key, g in self._gen.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, s in state.items():
            self.generator(key).set_state(s)

    # ------------------------------------------------------------------ the three steps
    def _flip(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        flip = torch.rand(b, device=x.device, generator=gen) < self.flip_p
        return torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)

    def _pad_crop(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Zero-pad by ``padding`` and gather a (H, W) window at a random offset per image."""
        from core.models.pseudo_label.finetune import random_windows

        p = self.padding
        return random_windows(F.pad(x, (p, p, p, p), mode="constant", value=0.0), x.shape[2], x.shape[3], gen)

    def erase_boxes(self, b: int, h: int, w: int, gen: torch.Generator,
                    device: torch.device | str) -> tuple[torch.Tensor, ...]:
        """Random-erasing rectangles of ``b`` images of size (h, w).

        Each image draws ``ERASE_ATTEMPTS`` (area, aspect ratio) pairs and keeps the first whose rectangle fits
        inside the image; an image erases when its coin (p = ``erase_p``) says so and some attempt fits.

        Returns
        -------
        erase : Tensor (b,) bool
        y0, x0, eh, ew : Tensor (b,) int64     top-left corner, height and width of each rectangle
        """
        a = ERASE_ATTEMPTS
        coin = torch.rand(b, device=device, generator=gen) < self.erase_p
        lo, hi = self.erase_scale
        area = (lo + (hi - lo) * torch.rand(b, a, device=device, generator=gen)) * (h * w)
        lr0, lr1 = math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1])
        ratio = torch.exp(lr0 + (lr1 - lr0) * torch.rand(b, a, device=device, generator=gen))
        eh = torch.sqrt(area * ratio).round().long()
        ew = torch.sqrt(area / ratio).round().long()
        fits = (eh >= 1) & (ew >= 1) & (eh < h) & (ew < w)
        first = fits.long().argmax(dim=1, keepdim=True)  # the first attempt that fits (0 when none does)
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        erase = coin & fits.any(dim=1)
        u = torch.rand(b, 2, device=device, generator=gen)
        y0 = (u[:, 0] * (h - eh + 1).clamp(min=1)).long()
        x0 = (u[:, 1] * (w - ew + 1).clamp(min=1)).long()
        return erase, y0, x0, eh, ew

    def _erase(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        erase, y0, x0, eh, ew = self.erase_boxes(b, h, w, gen, x.device)
        r = torch.arange(h, device=x.device)[None, :]
        q = torch.arange(w, device=x.device)[None, :]
        in_rows = (r >= y0[:, None]) & (r < (y0 + eh)[:, None])  # (b, h)
        in_cols = (q >= x0[:, None]) & (q < (x0 + ew)[:, None])  # (b, w)
        mask = (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None])[:, None]  # (b, 1, h, w)
        fill = torch.tensor(self.erase_value, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return torch.where(mask, fill, x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) float in [0, 1] -> augmented (b, 3, H, W), same dtype and device (uint8 is scaled to
        [0, 1] first)."""
        check_param("CropAugment", "x", f"tensor of shape {tuple(x.shape)}", x.ndim == 4 and x.shape[1] == 3,
                    "a (b, 3, H, W) image batch")
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        if x.shape[0] == 0:
            return x
        gen = self.generator(x.device)
        if self.flip_p > 0:
            x = self._flip(x, gen)
        if self.padding > 0:
            x = self._pad_crop(x, gen)
        if self.erase_p > 0:
            x = self._erase(x, gen)
        return x
