"""Spectrograms on torch tensors (batched, on the GPU when asked): power STFT, mel, dB, images.

Framing: a Hamming window of ``n_fft`` samples (periodic, as librosa's ``get_window("hamming", n_fft)``),
``hop`` samples between frames, frames centred: the signal is padded by ``n_fft // 2`` at both ends by
reflection (torch's default, librosa's ``center=True, pad_mode="reflect"``; zero padding would put a step,
hence a broadband smear, in the first and last column of every block), so ``n`` samples give
``1 + n // hop`` frames: 81 frames for a 1 s block at 16 kHz with a 12.5 ms hop. A signal of at most
``n_fft // 2`` samples, too short to reflect, is zero-padded. Mel bands are Slaney-scale, Slaney-normalised
(librosa's defaults) from 0 Hz to ``f_max``; the log spectrogram keeps the STFT bins at or below ``f_max``.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def stft_power(x: "torch.Tensor", *, n_fft: int, hop: int) -> "torch.Tensor":
    """Power spectrogram ``|STFT|^2`` with a Hamming window.

    The same as ``torchaudio.functional.spectrogram(..., power=2.0)``, computed as ``re^2 + im^2`` of
    ``torch.stft`` (torchaudio's ``abs().pow(2)`` is about twice slower on the CPU).

    Parameters
    ----------
    x : Tensor of shape (B, n_samples) float32

    Returns
    -------
    Tensor of shape (B, n_fft // 2 + 1, 1 + n_samples // hop) float32, on ``x``'s device
    """
    import torch

    window = _window(n_fft, x.device.type, x.device.index)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    z = torch.stft(x.to(torch.float32), n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window,
                   center=True, pad_mode=pad_mode, normalized=False, onesided=True, return_complex=True)
    return z.real.square() + z.imag.square()


@functools.lru_cache(maxsize=16)
def _window(n_fft: int, device_type: str, device_index: int | None) -> "torch.Tensor":
    import torch

    return torch.hamming_window(n_fft, periodic=True, dtype=torch.float32,
                                device=torch.device(device_type, device_index))


@functools.lru_cache(maxsize=64)
def _mel_fb(sample_rate: int, n_fft: int, n_mels: int, f_max: float, device_type: str,
            device_index: int | None) -> "torch.Tensor":
    import torch
    from torchaudio.functional import melscale_fbanks

    fb = melscale_fbanks(n_fft // 2 + 1, f_min=0.0, f_max=float(f_max), n_mels=n_mels, sample_rate=sample_rate,
                         norm="slaney", mel_scale="slaney")
    return fb.to(device=torch.device(device_type, device_index), dtype=torch.float32)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_max: float, *, device: str = "cpu") -> "torch.Tensor":
    """Slaney mel filterbank from 0 Hz to ``f_max`` (cached per arguments and device).

    Returns
    -------
    Tensor of shape (n_fft // 2 + 1, n_mels) float32
        ``power.transpose(-1, -2) @ fb`` maps (B, T, n_freqs) power to (B, T, n_mels) mel power;
        the transpose of librosa's ``filters.mel(sr=..., n_fft=..., n_mels=..., fmax=f_max)``.
    """
    import torch

    dev = torch.device(device)
    return _mel_fb(int(sample_rate), int(n_fft), int(n_mels), float(f_max), dev.type, dev.index)


def mel_power(power: "torch.Tensor", fb: "torch.Tensor") -> "torch.Tensor":
    """(B, n_freqs, T) power -> (B, n_mels, T) mel power with a (n_freqs, n_mels) filterbank."""
    import torch

    return torch.matmul(power.transpose(-1, -2), fb).transpose(-1, -2)


def n_bins_below(f_max: float, *, sample_rate: int, n_fft: int) -> int:
    """How many STFT bins (0 Hz upward, spacing ``sample_rate / n_fft``) lie at or below ``f_max``."""
    return min(int(np.floor(f_max * n_fft / sample_rate + 1e-9)) + 1, n_fft // 2 + 1)


def power_to_db(S: "torch.Tensor", *, top_db: float = 80.0, amin: float = 1e-10) -> "torch.Tensor":
    """``10 log10(S)`` relative to each item's maximum, floored at ``-top_db``.

    Parameters
    ----------
    S : Tensor of shape (B, F, T), power

    Returns
    -------
    Tensor of shape (B, F, T) in [-top_db, 0]
        librosa's ``power_to_db(S, ref=np.max, top_db=top_db)`` applied to each item; an item with no
        power above ``amin`` (digital silence) is all ``-top_db``.
    """
    import torch

    db = 10.0 * torch.log10(torch.clamp(S, min=amin))
    ref = db.amax(dim=(-2, -1), keepdim=True)
    db = torch.clamp(db - ref, min=-float(top_db))
    silent = ref <= 10.0 * np.log10(amin)
    return torch.where(silent, torch.full_like(db, -float(top_db)), db)


def db_to_image(db: "torch.Tensor", *, top_db: float, size: int, channels: int = 3) -> "torch.Tensor":
    """dB spectrograms to 3-channel square images in [0, 1] for an ImageNet CNN.

    ``(db + top_db) / top_db`` maps [-top_db, 0] dB to [0, 1]; the frequency axis is flipped so that row 0
    is the highest frequency (the picture of a spectrogram, low frequencies at the bottom); the image is
    resized with bilinear interpolation (antialiased when shrinking) to ``size x size`` and repeated on 3
    channels. These [0, 1] values stand where an RGB picture's ``pixel / 255`` stands: a model that
    normalises its input as ``(x - 0.5) / 0.5`` (EfficientNet-Lite0) or with ImageNet mean/std takes them
    directly, just as it would take ``pixels / 255``.

    Parameters
    ----------
    db : Tensor of shape (B, F, T)
    channels : int
        3 for a CNN; 1 returns the single grey channel (the caller broadcasts it).

    Returns
    -------
    Tensor of shape (B, channels, size, size) float32 in [0, 1], contiguous
    """
    import torch
    import torch.nn.functional as F

    img = ((db + top_db) / top_db).flip(-2).unsqueeze(1)
    img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    img = torch.clamp(img, 0.0, 1.0)
    return img if channels == 1 else img.expand(-1, channels, -1, -1).contiguous()


def log_mel_db(y: np.ndarray, *, sample_rate: int, n_mels: int = 64, f_max: float | None = None,
               window_seconds: float = 0.025, hop_seconds: float = 0.0125, top_db: float = 80.0,
               device: str = "cpu") -> np.ndarray:
    """Log-mel spectrogram of one signal in dB relative to its maximum (for display).

    Parameters
    ----------
    y : ndarray of shape (n_samples,) at ``sample_rate``

    Returns
    -------
    S_db : ndarray of shape (n_mels, 1 + n_samples // hop) float32 in [-top_db, 0]
    """
    import torch

    n_fft, hop = int(round(window_seconds * sample_rate)), int(round(hop_seconds * sample_rate))
    x = torch.as_tensor(np.asarray(y, dtype=np.float32), device=device).unsqueeze(0)
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_max or sample_rate / 2, device=device)
    with torch.no_grad():
        S = power_to_db(mel_power(stft_power(x, n_fft=n_fft, hop=hop), fb), top_db=top_db)
    return S[0].cpu().numpy().astype(np.float32)
