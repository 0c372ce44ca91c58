"""Log-mel spectrogram of an audio clip for display (the Label page shows it beside the player)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def log_mel(path: str | Path, *, sr: int = 16000, n_mels: int = 64, max_seconds: float = 30.0) -> tuple[np.ndarray, float]:
    """Log-mel spectrogram in dB with a 25 ms window and a 12.5 ms hop.

    Returns
    -------
    S_db : ndarray (n_mels, frames) float32
    hop_seconds : float   the time between two frames
    """
    import librosa
    import soundfile as sf

    try:
        y, file_sr = sf.read(str(path), dtype="float32", always_2d=True, frames=int(max_seconds * 96000))
        y = y.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError):
        y, file_sr = librosa.load(str(path), sr=None, mono=True, duration=max_seconds)
    y = y[: int(max_seconds * file_sr)]
    if file_sr != sr:
        y = librosa.resample(y, orig_sr=file_sr, target_sr=sr)
    n_fft, hop = int(0.025 * sr), int(0.0125 * sr)
    S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, win_length=n_fft,
                                       window="hamming", n_mels=n_mels, power=2.0)
    return librosa.power_to_db(S, ref=np.max).astype(np.float32), hop / sr
