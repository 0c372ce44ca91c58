"""Audio feature extractor: a fixed-length summary of the 64-band log-mel spectrogram.

Any sample rate and channel count is read by the shared loader :func:`core.audio.load_audio` (soundfile
first, librosa/audioread as a fallback for formats libsndfile lacks), mixed to mono and resampled to
16 kHz with soxr. The spectrogram uses a 25 ms Hann window and a 12.5 ms hop (400 / 200 samples) and
Slaney mel bands from 0 to 8 kHz; the STFT is plain NumPy (librosa's own STFT costs a numba compilation
of ~15 s on a fresh machine). The summary vector is [per-band mean of log-mel, per-band std, per-band
mean absolute frame-to-frame change], 3 x 64 = 192 values. Unreadable, empty or all-non-finite files are
per-item failures; silent files are not (they summarise to the floor of the log).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import check_param
from core.features.base import Extractor, ItemRef, Options

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms at 16 kHz
HOP = 200  # 12.5 ms
N_MELS = 64


@functools.lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Slaney-normalised mel filterbank, shape (64, 201) float32."""
    from librosa.filters import mel

    return mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=SAMPLE_RATE / 2).astype(np.float32)


def read_audio(path: Any) -> tuple[np.ndarray, int]:
    """Read a sound file as mono float32 at its own rate (:func:`core.audio.read_audio`).

    Returns
    -------
    y : ndarray of shape (n_samples,) float32
    sr : int

    Raises
    ------
    ItemError
        (a :class:`core.audio.AudioError`) when neither soundfile nor librosa can read it.
    """
    from core.audio.load import read_audio as _read

    return _read(path)


def log_mel(y: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram of a 16 kHz signal.

    Parameters
    ----------
    y : ndarray of shape (n_samples,)

    Returns
    -------
    S : ndarray of shape (64, n_frames) float32, ``log(mel power + 1e-6)``
    """
    mel = mel_filterbank() @ power_frames(y)
    return np.log(mel + 1e-6).astype(np.float32)


def power_frames(y: np.ndarray, *, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Power STFT of a signal, centred frames (reflect padding), periodic Hann window, plain NumPy.

    Parameters
    ----------
    y : ndarray of shape (n_samples,)
    n_fft, hop : int

    Returns
    -------
    power : ndarray of shape (n_fft // 2 + 1, n_frames) float32
    """
    pad = n_fft // 2
    y = np.pad(y, (pad, pad), mode="reflect" if len(y) > pad else "constant")
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann, as in librosa
    return (np.abs(np.fft.rfft(frames * window, axis=1)) ** 2).T.astype(np.float32)


def summarize(S: np.ndarray) -> np.ndarray:
    """[mean, std, mean |delta|] over time of a (64, T) spectrogram -> (192,) float32."""
    delta = np.abs(np.diff(S, axis=1)).mean(axis=1) if S.shape[1] > 1 else np.zeros(S.shape[0], np.float32)
    return np.concatenate([S.mean(axis=1), S.std(axis=1), delta]).astype(np.float32)


@dataclass(frozen=True)
class LogMelOptions(Options):
    """Options of ``logmel``.

    Attributes
    ----------
    max_seconds : float
        Only the first ``max_seconds`` of a recording are summarised (bounds memory on long files).
    """

    max_seconds: float = 600.0

    def validate(self, owner: str) -> None:
        super().validate(owner)
        check_param(owner, "max_seconds", self.max_seconds,
                    isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0, "a number > 0")


class LogMel(Extractor):
    """64-band log-mel summary (mean, std, mean |delta| per band): 192-d, no network, no state."""

    name = "logmel"
    version = "1"
    modality = "audio"
    description = "64-band log-mel at 16 kHz summarised as per-band mean, std and mean |delta|: 192-d"
    Options = LogMelOptions
    dim = 3 * N_MELS
    cpu_batch_size = 64
    gpu_batch_size = 256

    def load(self, item: ItemRef) -> np.ndarray:
        from core.audio.load import load_audio

        y = load_audio(item.path, sample_rate=SAMPLE_RATE, max_seconds=self.options.max_seconds, allow_silent=True)
        return summarize(log_mel(y))

    def embed(self, batch: list[np.ndarray], *, device: str) -> np.ndarray:
        return np.stack(batch).astype(np.float32)
