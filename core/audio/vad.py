"""Energy-based voice activity detection.

The clip is cut into frames of ``window_seconds`` every ``hop_seconds`` (25 ms / 12.5 ms: the framing of
the spectrogram), the last frame zero-padded so that every sample lies in a frame. A frame is voiced when
its RMS, in dB relative to the loudest frame of the clip, is above ``vad_threshold_db``. Runs of voiced
frames shorter than ``vad_min_seconds`` are dropped; each remaining run, as a sample range
``[first frame's start, last frame's end)``, is widened by ``vad_pad_seconds`` on both sides (hangover)
and runs that then overlap are merged. Boundaries are therefore exact to one hop (12.5 ms) before padding.
"""
from __future__ import annotations

import numpy as np

from core.audio.config import AudioConfig, AudioError


def frame_rms_db(y: np.ndarray, *, frame: int, hop: int) -> np.ndarray:
    """RMS of each frame in dB relative to the loudest frame.

    Parameters
    ----------
    y : ndarray of shape (n_samples,)
    frame, hop : int
        Frame length and hop in samples.

    Returns
    -------
    db : ndarray of shape (n_frames,) float64, n_frames = 1 + ceil(max(n_samples - frame, 0) / hop)
        0 for the loudest frame, ``-inf`` for an all-zero frame (every frame of an all-zero clip).
    """
    y = np.asarray(y, dtype=np.float64)
    n_frames = 1 + int(np.ceil(max(len(y) - frame, 0) / hop))
    padded = np.zeros((n_frames - 1) * hop + frame)
    padded[: len(y)] = y
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop]
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    peak = rms.max()
    if peak <= 0:
        return np.full(n_frames, -np.inf)
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms / peak)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Start and end (exclusive) of each run of True in a 1-D bool array: shape (n_runs, 2)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def vad_segments(y: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Voiced segments of a clip, as sample ranges.

    Parameters
    ----------
    y : ndarray of shape (n_samples,) at ``config.sample_rate``
    config : AudioConfig
        Uses ``vad_threshold_db``, ``vad_min_seconds``, ``vad_pad_seconds``, ``window_seconds``,
        ``hop_seconds`` and ``sample_rate``.

    Returns
    -------
    segments : ndarray of shape (n_segments, 2) int64
        ``[start, end)`` in samples, sorted, disjoint, within ``[0, n_samples]``; empty (0, 2) when no
        frame is voiced.
    """
    config.validate()
    frame, hop = config.n_fft, config.hop
    db = frame_rms_db(y, frame=frame, hop=hop)
    runs = _runs(db > config.vad_threshold_db)
    if len(runs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    start = runs[:, 0] * hop
    end = np.minimum((runs[:, 1] - 1) * hop + frame, len(y))
    keep = (end - start) >= config.vad_min_seconds * config.sample_rate
    start, end = start[keep], end[keep]
    if len(start) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pad = int(round(config.vad_pad_seconds * config.sample_rate))
    start = np.maximum(start - pad, 0)
    end = np.minimum(end + pad, len(y))
    merged = [[start[0], end[0]]]
    for s, e in zip(start[1:], end[1:]):
        if s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return np.asarray(merged, dtype=np.int64)


def voiced_signal(y: np.ndarray, config: AudioConfig) -> np.ndarray:
    """The voiced segments of a clip, concatenated.

    Returns
    -------
    ndarray of shape (n_voiced_samples,) float32

    Raises
    ------
    AudioError
        ``"no_voice"`` when no frame is voiced (an all-zero clip, or only runs shorter than
        ``vad_min_seconds``).
    """
    seg = vad_segments(y, config)
    if len(seg) == 0:
        raise AudioError("no_voice", f"no voiced frame (threshold {config.vad_threshold_db:g} dB below the peak, "
                                     f"min segment {config.vad_min_seconds:g} s)")
    return np.concatenate([y[s:e] for s, e in seg]).astype(np.float32)
