"""Clips to 1-second blocks to spectrogram images, in one batched pass; block predictions back to clips.

Blocks. A clip of ``n`` samples is cut into blocks of ``L = block_seconds * sample_rate`` samples whose
starts are ``step = L - block_overlap * sample_rate`` apart: starts 0, step, 2 step, ... while a block fits
in the clip; when samples remain after the last full block, one more block is placed flush with the end
of the clip (start ``n - L``), so it overlaps its neighbour by more than ``block_overlap`` but holds only
real audio. A 2.5 s clip (1 s blocks, 0.1 s overlap) gives starts 0, 0.9 s and 1.5 s. A clip of at most
``L`` samples gives exactly one block, padded at its end with zeros (``pad="zeros"``: the image shows
silence, at the floor of the dB range, right of the speech) or filled by repeating the clip
(``pad="repeat"``).

Images. Each block becomes a power STFT (Hamming window, 25 ms / 12.5 ms: 81 frames per second), then
either 64 mel bands from 0 Hz to ``f_max`` (``kind="mel"``) or the STFT bins at or below ``f_max``
(``kind="log"``), in dB relative to the block's maximum with an ``top_db`` range, scaled to [0, 1],
resized to ``image_size`` square and repeated on 3 channels (see :func:`core.audio.spectrogram.db_to_image`
for why [0, 1] is the right input to EfficientNet-Lite0's own ``(x - 0.5) / 0.5`` scaling).

Augmentation. The paper makes one image set per maximum frequency (7000, 7500, 8000 Hz): call
:func:`batch_blocks` once per value of ``config.augment_f_max`` with ``f_max=``. At 16 kHz the mel
filterbank then spans 0-7000 Hz, 0-7500 Hz or 0-8000 Hz (the Nyquist). A clip recorded at 8 kHz (the
spoken digits of FSDD) and resampled to 16 kHz holds nothing above 4 kHz: its images have an empty top,
whose height changes with ``f_max``; the mechanism is the same.

Prediction. A clip's class probabilities are the mean of its blocks' probabilities
(:func:`aggregate_blocks`; ``method="log_mean"`` takes the renormalised geometric mean instead).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ValidationError, check_choice, check_param
from core.audio.config import AGGREGATIONS, AudioConfig, check_f_max
from core.audio.load import load_clip
from core.audio.spectrogram import db_to_image, mel_filterbank, mel_power, n_bins_below, power_to_db, stft_power

if TYPE_CHECKING:
    import torch

#: Blocks per spectrogram pass: bounds the memory of the STFT and of the resize.
CHUNK = 512


def block_starts(n_samples: int, config: AudioConfig) -> np.ndarray:
    """Start sample of each block of a clip of ``n_samples`` (see the module docstring).

    Returns
    -------
    starts : ndarray of shape (n_blocks,) int64, n_blocks >= 1
    """
    L, step = config.block_len, config.block_step
    if n_samples <= L:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n_samples - L + 1, step, dtype=np.int64)
    if starts[-1] + L < n_samples:
        starts = np.append(starts, n_samples - L)
    return starts


def _padded(y: np.ndarray, L: int, pad: str) -> np.ndarray:
    if len(y) >= L:
        return y
    if pad == "repeat":
        return np.tile(y, -(-L // len(y)))[:L]
    return np.concatenate([y, np.zeros(L - len(y), dtype=np.float32)])


def batch_blocks(signals: list[np.ndarray], config: AudioConfig, *, device: str = "cpu",
                 f_max: float | None = None, chunk: int = CHUNK) -> tuple["torch.Tensor", np.ndarray]:
    """Spectrogram images of all blocks of many clips, in batched passes on ``device``.

    Parameters
    ----------
    signals : list of ndarray (n_samples_i,) float
        Mono clips at ``config.sample_rate``, already through the VAD when wanted (as :func:`load_clip`
        returns them); this function applies no VAD. Each must hold at least one sample.
    config : AudioConfig
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; the returned tensor lives there.
    f_max : float or None
        Overrides ``config.f_max`` (the augmentation loops over ``config.augment_f_max``).
    chunk : int
        Blocks per spectrogram pass (bounds the working memory; the output holds all blocks).

    Returns
    -------
    images : Tensor of shape (b, 3, image_size, image_size) float32 in [0, 1]
        Blocks of clip 0 first, in time order, then those of clip 1, ...
    clip_index : ndarray of shape (b,) int64
        The position in ``signals`` of each block's clip; every clip has at least one block.
    """
    import torch

    config.validate()
    f_max = config.f_max if f_max is None else f_max
    check_f_max(f_max, config.sample_rate, owner="batch_blocks")
    check_param("batch_blocks", "chunk", chunk, isinstance(chunk, int) and chunk >= 1, "an int >= 1")
    check_param("batch_blocks", "signals", type(signals).__name__, isinstance(signals, (list, tuple)),
                "a list of 1-D arrays")
    L = config.block_len
    size = config.image_size
    if len(signals) == 0:
        return torch.zeros((0, 3, size, size), device=device), np.zeros(0, dtype=np.int64)
    parts, starts, clip_index, offset = [], [], [], 0
    for i, y in enumerate(signals):
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 1 or y.size == 0:
            raise ValidationError(f"The 'signals' parameter of batch_blocks must hold non-empty 1-D arrays. "
                                  f"Got shape {y.shape} at position {i}.")
        s = block_starts(len(y), config)
        y = _padded(y, L, config.pad)
        parts.append(y)
        starts.append(s + offset)
        clip_index.append(np.full(len(s), i, dtype=np.int64))
        offset += len(y)
    flat = torch.from_numpy(np.concatenate(parts)).to(device)
    windows = flat.unfold(0, L, 1)  # (offset - L + 1, L): a view, no copy
    starts_t = torch.from_numpy(np.concatenate(starts)).to(device)
    clip_index_np = np.concatenate(clip_index)
    b = len(clip_index_np)
    out = torch.empty((b, 3, size, size), dtype=torch.float32, device=device)
    with torch.no_grad():
        for a in range(0, b, chunk):
            out[a:a + chunk] = _gray_images(windows[starts_t[a:a + chunk]], config, f_max)  # broadcast to 3
    return out, clip_index_np


def block_images(blocks: "torch.Tensor", config: AudioConfig, *, f_max: float | None = None) -> "torch.Tensor":
    """Images of blocks already cut: (B, block_len) samples -> (B, 3, image_size, image_size) in [0, 1]."""
    f_max = config.f_max if f_max is None else f_max
    return _gray_images(blocks, config, f_max).expand(-1, 3, -1, -1).contiguous()


def _gray_images(blocks: "torch.Tensor", config: AudioConfig, f_max: float) -> "torch.Tensor":
    """(B, block_len) -> (B, 1, image_size, image_size) in [0, 1]; the three channels are copies of it."""
    power = stft_power(blocks, n_fft=config.n_fft, hop=config.hop)
    if config.kind == "mel":
        fb = mel_filterbank(config.sample_rate, config.n_fft, config.n_mels, f_max, device=str(blocks.device))
        spec = mel_power(power, fb)
    else:
        spec = power[:, : n_bins_below(f_max, sample_rate=config.sample_rate, n_fft=config.n_fft)]
    return db_to_image(power_to_db(spec, top_db=config.top_db), top_db=config.top_db, size=config.image_size,
                       channels=1)


def clip_blocks(path: Any, config: AudioConfig, *, device: str = "cpu", f_max: float | None = None) -> "torch.Tensor":
    """The block images of one sound file: :func:`load_clip` (load, resample, VAD) then :func:`batch_blocks`.

    Returns
    -------
    images : Tensor of shape (b, 3, image_size, image_size) float32 in [0, 1], b >= 1

    Raises
    ------
    AudioError
        When the file cannot be used (see :func:`core.audio.load.load_audio` and
        :func:`core.audio.vad.voiced_signal`).
    """
    images, _ = batch_blocks([load_clip(path, config)], config, device=device, f_max=f_max)
    return images


def aggregate_blocks(block_proba: np.ndarray, clip_index: np.ndarray, n_clips: int, *,
                     method: str = "mean") -> np.ndarray:
    """Clip probabilities from block probabilities.

    Parameters
    ----------
    block_proba : ndarray of shape (b, k)
        Class probabilities of each block (rows sum to 1).
    clip_index : ndarray of shape (b,) int
        The clip of each block, in ``[0, n_clips)``.
    n_clips : int
    method : {"mean", "log_mean"}
        ``"mean"``: the arithmetic mean of the clip's block probabilities (each block one vote weighted
        by its confidence). ``"log_mean"``: the geometric mean (mean of log-probabilities, floored at
        1e-12), renormalised to sum to 1, which lets one confident "no" veto a class.

    Returns
    -------
    proba : ndarray of shape (n_clips, k) float64
        Rows of clips without any block are NaN.
    """
    check_choice("aggregate_blocks", "method", method, AGGREGATIONS)
    P = np.asarray(block_proba, dtype=np.float64)
    idx = np.asarray(clip_index)
    check_param("aggregate_blocks", "block_proba", f"array of shape {P.shape}", P.ndim == 2, "a 2-D array (b, k)")
    check_param("aggregate_blocks", "clip_index", f"array of shape {idx.shape}",
                idx.shape == (P.shape[0],) and (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)),
                f"an int array of shape ({P.shape[0]},)")
    check_param("aggregate_blocks", "n_clips", n_clips, isinstance(n_clips, (int, np.integer)) and n_clips >= 0,
                "an int >= 0")
    if idx.size and (idx.min() < 0 or idx.max() >= n_clips):
        raise ValidationError(f"The 'clip_index' parameter of aggregate_blocks must lie in [0, {n_clips}). "
                              f"Got values from {idx.min()} to {idx.max()}.")
    counts = np.bincount(idx, minlength=n_clips)
    values = np.log(np.maximum(P, 1e-12)) if method == "log_mean" else P
    sums = np.zeros((n_clips, P.shape[1]))
    np.add.at(sums, idx, values)
    out = np.full((n_clips, P.shape[1]), np.nan)
    has = counts > 0
    mean = sums[has] / counts[has, None]
    if method == "log_mean" and mean.size:
        mean = np.exp(mean - mean.max(axis=1, keepdims=True))
        mean /= mean.sum(axis=1, keepdims=True)
    out[has] = mean
    return out
