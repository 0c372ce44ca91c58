"""Log-mel spectrogram of an audio clip for display (the Label page shows it beside the player).

A thin view over the audio pipeline: :func:`core.audio.load_audio` reads and resamples the clip (a silent
clip is shown, not refused) and :func:`core.audio.log_mel_db` computes the spectrogram with the pipeline's
25 ms Hamming window and 12.5 ms hop, so what an annotator sees is what the models are fed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def log_mel(path: str | Path, *, sr: int = 16000, n_mels: int = 64, max_seconds: float = 30.0) -> tuple[np.ndarray, float]:
    """Log-mel spectrogram in dB (relative to its maximum, 80 dB range) with a 25 ms window and a 12.5 ms hop.

    Returns
    -------
    S_db : ndarray (n_mels, frames) float32
    hop_seconds : float   the time between two frames

    Raises
    ------
    core.audio.AudioError
        When the file is missing, empty or not audio.
    """
    from core.audio import load_audio, log_mel_db

    y = load_audio(path, sample_rate=sr, max_seconds=max_seconds, allow_silent=True)
    hop = int(round(0.0125 * sr))
    return log_mel_db(y, sample_rate=sr, n_mels=n_mels), hop / sr
