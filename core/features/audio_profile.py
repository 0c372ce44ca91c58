"""Audio feature extractor ``mfcc_profile``: the time profile and statistics of a clip's MFCCs.

What it computes, per clip:

1. The clip is read by the shared loader (:func:`core.audio.load.load_audio`: any rate and channel count, mixed
   to mono, resampled to 16 kHz) and cut to its voiced segments by the energy VAD of the block pipeline
   (:func:`core.audio.vad.voiced_signal`, default :class:`core.audio.AudioConfig`); a clip without a voiced
   frame (silence) is summarised whole, as ``logmel`` does. The voiced signal is scaled to an RMS of 0.1.
2. A power STFT (25 ms Hann window, 10 ms hop) and, for each maximum frequency of ``f_max`` (the "f_max
   variants"), ``n_mels`` Slaney mel bands from 0 Hz to that frequency, log-compressed, and their DCT-II (the
   first ``n_mfcc`` coefficients: MFCCs). The first coefficient (log energy) is taken relative to its mean over
   the clip, so the recording level does not count.
3. Per variant: the *profile*, the mean of each coefficient over ``segments`` equal stretches of the voiced
   clip (a time-normalised outline of what was said: ``n_mfcc * segments`` values), then each coefficient's
   mean, standard deviation and the standard deviation of its frame-to-frame change over the whole clip
   (``3 * n_mfcc``). Default: 2 variants x (13 x 8 + 3 x 13) = 286 values.

Why these choices (measured on FSDD's speaker-independent folds, issue 16, see docs/pseudo_label.md): the
192-d ``logmel`` summary throws away the order of sounds within a word; a time profile of decorrelated
coefficients keeps it. Two variants (0-4 kHz, 0-8 kHz) cover sources recorded at 8 kHz (telephone, FSDD:
nothing above 4 kHz) and wide-band ones in one vector.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import check_param
from core.features.audio import SAMPLE_RATE, power_frames
from core.features.base import Extractor, ItemRef, Options

N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms


@functools.lru_cache(maxsize=8)
def mel_filterbank(n_mels: int, f_max: float) -> np.ndarray:
    """Slaney-normalised mel filterbank from 0 Hz to ``f_max``, shape (n_mels, N_FFT // 2 + 1) float32."""
    from librosa.filters import mel

    return mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=0.0, fmax=f_max).astype(np.float32)


def mfcc(power: np.ndarray, *, n_mels: int, f_max: float, n_mfcc: int) -> np.ndarray:
    """MFCCs (n_mfcc, T) of a power STFT (N_FFT // 2 + 1, T); coefficient 0 relative to its mean over time."""
    from scipy.fft import dct

    log_mel = np.log(mel_filterbank(n_mels, f_max) @ power + 1e-6)
    out = dct(log_mel, type=2, norm="ortho", axis=0)[:n_mfcc]
    out[0] -= out[0].mean()
    return out.astype(np.float32)


def profile(M: np.ndarray, segments: int) -> np.ndarray:
    """[segment means (c * segments,), mean (c,), std (c,), std of the frame-to-frame change (c,)] of (c, T)."""
    c, T = M.shape
    if T >= segments:
        parts = [M[:, s].mean(axis=1) for s in np.array_split(np.arange(T), segments)]
    else:  # fewer frames than segments: each segment takes the frame at its relative position
        parts = [M[:, min(T - 1, (i * T) // segments)] for i in range(segments)]
    delta = np.diff(M, axis=1).std(axis=1) if T > 1 else np.zeros(c, np.float32)
    return np.concatenate([np.stack(parts, axis=1).ravel(), M.mean(axis=1), M.std(axis=1), delta]).astype(np.float32)


@dataclass(frozen=True)
class MfccProfileOptions(Options):
    """Options of ``mfcc_profile`` (see the module docstring).

    Attributes
    ----------
    f_max : tuple of float
        Upper edge (Hz) of the mel bands of each variant; at most 8000 (the Nyquist frequency at 16 kHz).
    n_mels, n_mfcc, segments : int
    vad : bool
        Keep only the voiced segments before profiling.
    max_seconds : float
        Only the first ``max_seconds`` of a recording are read (bounds memory on long files).
    """

    f_max: tuple[float, ...] = (4000.0, 8000.0)
    n_mels: int = 40
    n_mfcc: int = 13
    segments: int = 8
    vad: bool = True
    max_seconds: float = 600.0

    def validate(self, owner: str) -> None:
        super().validate(owner)
        check_param(owner, "f_max", self.f_max, isinstance(self.f_max, (tuple, list)) and len(self.f_max) > 0
                    and all(isinstance(f, (int, float)) and 500 <= f <= SAMPLE_RATE / 2 for f in self.f_max),
                    f"a non-empty tuple of frequencies in [500, {SAMPLE_RATE // 2}] Hz")
        check_param(owner, "n_mels", self.n_mels, isinstance(self.n_mels, int) and 8 <= self.n_mels <= 128,
                    "an int in [8, 128]")
        check_param(owner, "n_mfcc", self.n_mfcc, isinstance(self.n_mfcc, int) and 2 <= self.n_mfcc <= self.n_mels,
                    f"an int in [2, n_mels={self.n_mels}]")
        check_param(owner, "segments", self.segments, isinstance(self.segments, int) and 1 <= self.segments <= 64,
                    "an int in [1, 64]")
        check_param(owner, "vad", self.vad, isinstance(self.vad, bool), "a bool")
        check_param(owner, "max_seconds", self.max_seconds,
                    isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0, "a number > 0")


class MfccProfile(Extractor):
    """MFCC time profile + statistics at two f_max variants (0-4 kHz, 0-8 kHz): 286-d, no network, no state."""

    name = "mfcc_profile"
    version = "1"
    modality = "audio"
    description = ("MFCC-13 of the voiced clip at 0-4 and 0-8 kHz: the means over 8 time segments plus "
                   "mean, std and delta std per coefficient: 286-d")
    Options = MfccProfileOptions
    dim = 2 * (13 * 8 + 3 * 13)
    cpu_batch_size = 64
    gpu_batch_size = 256

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        self.dim = len(o.f_max) * o.n_mfcc * (o.segments + 3)

    def load(self, item: ItemRef) -> np.ndarray:
        from core.audio import AudioConfig
        from core.audio.config import AudioError
        from core.audio.load import load_audio
        from core.audio.vad import voiced_signal

        o = self.options
        y = load_audio(item.path, sample_rate=SAMPLE_RATE, max_seconds=o.max_seconds, allow_silent=True)
        if o.vad:
            try:
                y = voiced_signal(y, AudioConfig())
            except AudioError:  # nothing voiced (silence): profile the whole clip
                pass
        rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
        if rms > 0:  # the same level for every clip: the log floor then sits equally far below every recording
            y = y * np.float32(0.1 / rms)
        power = power_frames(y, n_fft=N_FFT, hop=HOP)
        return np.concatenate([profile(mfcc(power, n_mels=o.n_mels, f_max=float(f), n_mfcc=o.n_mfcc), o.segments)
                               for f in o.f_max])

    def embed(self, batch: list[np.ndarray], *, device: str) -> np.ndarray:
        return np.stack(batch).astype(np.float32)
