"""Reading sound files: any format soundfile or librosa can decode, any rate, mixed to mono, resampled.

soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3 from libsndfile 1.1, AIFF, ...) is tried first;
librosa (audioread / ffmpeg) is the fallback for what libsndfile lacks. Resampling uses soxr at "HQ"
quality, the library librosa itself uses by default. A clip that cannot be used raises
:class:`core.audio.AudioError` with a reason code; nothing here lets a library exception escape.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.audio.config import AudioConfig, AudioError


def read_audio(path: Any, *, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a sound file at its own sample rate, mixed to mono.

    Parameters
    ----------
    path : str or pathlib.Path
    max_seconds : float or None
        Read only the first ``max_seconds`` (None: the whole file).

    Returns
    -------
    y : ndarray of shape (n_samples,) float32
        May be empty or hold non-finite values; :func:`load_audio` checks those.
    sr : int

    Raises
    ------
    AudioError
        ``"missing"`` when there is no file, ``"empty"`` for a 0-byte file, ``"not_audio"`` when neither
        soundfile nor librosa can decode it.
    """
    import soundfile as sf

    if path is None:
        raise AudioError("missing", "item has no media file")
    p = Path(path)
    if not p.is_file():
        raise AudioError("missing", f"file not found: {p}", path=p)
    if p.stat().st_size == 0:
        raise AudioError("empty", "empty audio file (0 bytes)", path=p)
    try:
        with sf.SoundFile(str(p)) as f:
            sr = int(f.samplerate)
            frames = -1 if max_seconds is None else int(np.ceil(max_seconds * sr))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
        return data.mean(axis=1, dtype=np.float32), sr
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, EOFError, TypeError) as first:
        return _read_with_librosa(p, first, max_seconds)


def _read_with_librosa(path: Path, first: Exception, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns when it falls back to audioread
            y, sr = librosa.load(str(path), sr=None, mono=True, duration=max_seconds)
    except Exception as exc:  # audioread and its backends raise many unrelated types on non-audio input
        raise AudioError("not_audio", f"cannot decode audio: {first}; librosa: {exc or type(exc).__name__}",
                         path=path) from exc
    return np.asarray(y, dtype=np.float32), int(sr)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono signal with soxr ("HQ"); returns float32 (the input itself when the rates agree).

    Parameters
    ----------
    y : ndarray of shape (n_samples,)

    Returns
    -------
    ndarray of shape (round(n_samples * target_sr / orig_sr),) float32
    """
    if orig_sr == target_sr:
        return np.asarray(y, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(y, dtype=np.float32), orig_sr, target_sr, quality="HQ").astype(np.float32)


def load_audio(path: Any, *, sample_rate: int, max_seconds: float | None = None,
               allow_silent: bool = False) -> np.ndarray:
    """Read, mix to mono and resample a sound file; check that it holds usable audio.

    Parameters
    ----------
    path : str or pathlib.Path
    sample_rate : int
        Target rate in Hz.
    max_seconds : float or None
        Read only the first ``max_seconds`` (None: the whole file).
    allow_silent : bool
        Return an all-zero clip instead of raising ``"silent"`` (the display spectrogram and the
        ``logmel`` features accept silence; the block pipeline does not).

    Returns
    -------
    y : ndarray of shape (n_samples,) float32, n_samples >= 1
        Non-finite samples (NaN, inf) in an otherwise valid clip are replaced by 0.

    Raises
    ------
    AudioError
        See :func:`read_audio`, plus ``"empty"`` (no samples), ``"non_finite"`` (no finite sample) and
        ``"silent"`` (every sample is 0, unless ``allow_silent``).
    """
    y, sr = read_audio(path, max_seconds=max_seconds)
    if max_seconds is not None:
        y = y[: int(np.ceil(max_seconds * sr))]
    if y.size == 0:
        raise AudioError("empty", "empty audio (no samples)", path=path)
    finite = np.isfinite(y)
    if not finite.all():
        if not finite.any():
            raise AudioError("non_finite", "audio holds no finite samples", path=path)
        y = np.where(finite, y, np.float32(0.0))
    if not allow_silent and not np.any(y):
        raise AudioError("silent", f"silent audio: all {y.size} samples are 0", path=path)
    y = resample(y, sr, sample_rate)
    if y.size == 0:  # a clip of a few samples at a low rate can round to nothing
        raise AudioError("empty", f"audio too short to resample to {sample_rate} Hz", path=path)
    return y


def load_clip(path: Any, config: AudioConfig) -> np.ndarray:
    """What the block pipeline sees of one file: :func:`load_audio`, then the voiced part when ``config.vad``.

    Returns
    -------
    y : ndarray of shape (n_samples,) float32 at ``config.sample_rate``

    Raises
    ------
    AudioError
        As :func:`load_audio`; ``"no_voice"`` when the VAD finds no voiced frame.
    """
    from core.audio.vad import voiced_signal

    config.validate()
    y = load_audio(path, sample_rate=config.sample_rate, max_seconds=config.max_seconds)
    if config.vad:
        try:
            y = voiced_signal(y, config)
        except AudioError as err:
            err.path = Path(path)
            raise
    return y


def load_clips(paths: Sequence[Any], config: AudioConfig, *, num_workers: int = 4
               ) -> tuple[list[np.ndarray], list[int], list[tuple[int, str]]]:
    """:func:`load_clip` on many files in a small thread pool (decoding releases the GIL).

    Returns
    -------
    signals : list of ndarray (n_samples_i,) float32
        The clips that loaded, in input order.
    ok : list of int
        The position in ``paths`` of each signal.
    failures : list of (int, str)
        Position in ``paths`` and the one-line reason of each clip that did not load.
    """
    config.validate()

    def one(p: Any) -> np.ndarray | AudioError:
        try:
            return load_clip(p, config)
        except AudioError as err:
            return err

    if num_workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            results = list(pool.map(one, paths))
    else:
        results = [one(p) for p in paths]
    signals, ok, failures = [], [], []
    for i, r in enumerate(results):
        if isinstance(r, AudioError):
            failures.append((i, str(r)))
        else:
            signals.append(r)
            ok.append(i)
    return signals, ok, failures
