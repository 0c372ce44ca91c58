"""The configuration of the audio pipeline and its per-item error.

:class:`AudioConfig` holds every setting of load -> voice activity detection -> 1-second blocks ->
spectrogram images, as a frozen dataclass (it is stored with a model run, so a run can be reproduced).
:class:`AudioError` is raised for one clip that cannot be used (unreadable, empty, silent, no voiced
frame); it subclasses :class:`core.features.base.ItemError`, so the feature machinery and any caller that
already catches ``ItemError`` report it for that item and go on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import check_choice, check_param
from core.features.base import ItemError

KINDS = ("mel", "log")
PADS = ("zeros", "repeat")
AGGREGATIONS = ("mean", "log_mean")
#: The maximum frequencies of the paper's augmentation (one image set per value).
PAPER_F_MAX = (7000.0, 7500.0, 8000.0)


class AudioError(ItemError):
    """One clip cannot be used. ``reason`` is a short code, ``str(err)`` a one-line explanation.

    Codes: ``"missing"`` (no file), ``"empty"`` (0 bytes or 0 samples), ``"not_audio"`` (neither
    soundfile nor librosa can decode it), ``"non_finite"`` (no finite sample), ``"silent"`` (all samples
    zero), ``"no_voice"`` (the voice activity detector found no voiced frame).
    """

    def __init__(self, reason: str, message: str, *, path: Any = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(message)


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class AudioConfig:
    """Settings of the audio pipeline (loading, VAD, blocks, spectrogram images).

    Attributes
    ----------
    sample_rate : int
        Every clip is mixed to mono and resampled to this rate (Hz) before anything else.
    vad : bool
        Keep only the voiced part of each clip (energy VAD, :mod:`core.audio.vad`) before cutting blocks.
    vad_threshold_db : float
        A 25 ms frame is voiced when its RMS is above this level in dB relative to the loudest frame of
        the clip (-40 dB: 1 % of the peak RMS).
    vad_min_seconds : float
        Voiced runs shorter than this are dropped as clicks (before padding).
    vad_pad_seconds : float
        Each kept segment is widened by this much on both sides (hangover); segments that then touch are
        merged, so pauses shorter than twice this value stay in.
    block_seconds : float
        Length of one block (one image), 1 s in the paper.
    block_overlap : float
        Overlap in seconds between consecutive blocks (the paper states 10 ms; 0.1 s here by default).
    pad : {"zeros", "repeat"}
        How a clip shorter than one block is filled up to one block: with silence after it ("zeros") or
        by repeating it ("repeat").
    kind : {"mel", "log"}
        Mel spectrogram (``n_mels`` bands, filterbank up to ``f_max``) or log-power STFT (bins up to
        ``f_max``, then resized).
    n_mels : int
    f_max : float
        Highest frequency in Hz shown in the image; at most ``sample_rate / 2``.
    augment_f_max : tuple of float
        The maximum frequencies a caller loops over for the paper's augmentation (one image per block
        and value); each at most ``sample_rate / 2``.
    window_seconds, hop_seconds : float
        STFT Hamming window and hop (25 ms and 12.5 ms: 400 and 200 samples at 16 kHz). The VAD uses
        the same framing.
    top_db : float
        Dynamic range of an image: dB values below ``max - top_db`` (per block) map to 0.
    image_size : int
        Images are ``image_size x image_size`` (128 or 224 are typical).
    max_seconds : float or None
        Only the first ``max_seconds`` of a file are read (bounds memory on long files); None reads all.
    """

    sample_rate: int = 16000
    vad: bool = True
    vad_threshold_db: float = -40.0
    vad_min_seconds: float = 0.05
    vad_pad_seconds: float = 0.1
    block_seconds: float = 1.0
    block_overlap: float = 0.1
    pad: str = "zeros"
    kind: str = "mel"
    n_mels: int = 64
    f_max: float = 8000.0
    augment_f_max: tuple[float, ...] = PAPER_F_MAX
    window_seconds: float = 0.025
    hop_seconds: float = 0.0125
    top_db: float = 80.0
    image_size: int = 128
    max_seconds: float | None = 600.0

    def validate(self) -> "AudioConfig":
        """Raise :class:`core.errors.ValidationError` on a bad value; return self."""
        own = "AudioConfig"
        check_param(own, "sample_rate", self.sample_rate,
                    isinstance(self.sample_rate, int) and not isinstance(self.sample_rate, bool)
                    and 1000 <= self.sample_rate <= 384000, "an int in [1000, 384000]")
        check_param(own, "vad", self.vad, isinstance(self.vad, bool), "a bool")
        check_param(own, "vad_threshold_db", self.vad_threshold_db,
                    _number(self.vad_threshold_db) and self.vad_threshold_db < 0, "a number < 0 (dB below the peak)")
        check_param(own, "vad_min_seconds", self.vad_min_seconds,
                    _number(self.vad_min_seconds) and self.vad_min_seconds >= 0, "a number >= 0")
        check_param(own, "vad_pad_seconds", self.vad_pad_seconds,
                    _number(self.vad_pad_seconds) and self.vad_pad_seconds >= 0, "a number >= 0")
        check_param(own, "window_seconds", self.window_seconds,
                    _number(self.window_seconds) and 0 < self.window_seconds <= 0.5, "a number in (0, 0.5]")
        check_param(own, "hop_seconds", self.hop_seconds,
                    _number(self.hop_seconds) and 0 < self.hop_seconds <= self.window_seconds,
                    f"a number in (0, window_seconds={self.window_seconds}]")
        check_param(own, "block_seconds", self.block_seconds,
                    _number(self.block_seconds) and self.window_seconds <= self.block_seconds <= 60,
                    f"a number in [window_seconds={self.window_seconds}, 60]")
        check_param(own, "block_overlap", self.block_overlap,
                    _number(self.block_overlap) and 0 <= self.block_overlap < self.block_seconds,
                    f"a number >= 0 and < block_seconds={self.block_seconds}")
        check_choice(own, "pad", self.pad, PADS)
        check_choice(own, "kind", self.kind, KINDS)
        check_param(own, "n_mels", self.n_mels,
                    isinstance(self.n_mels, int) and not isinstance(self.n_mels, bool) and 1 <= self.n_mels <= 512,
                    "an int in [1, 512]")
        nyquist = self.sample_rate / 2
        check_f_max(self.f_max, self.sample_rate, owner=own)
        check_param(own, "augment_f_max", self.augment_f_max,
                    isinstance(self.augment_f_max, tuple) and len(self.augment_f_max) > 0
                    and all(_number(f) and 0 < f <= nyquist for f in self.augment_f_max),
                    f"a non-empty tuple of numbers in (0, sample_rate / 2 = {nyquist:g}]")
        check_param(own, "top_db", self.top_db, _number(self.top_db) and self.top_db > 0, "a number > 0")
        check_param(own, "image_size", self.image_size,
                    isinstance(self.image_size, int) and not isinstance(self.image_size, bool)
                    and 8 <= self.image_size <= 1024, "an int in [8, 1024]")
        check_param(own, "max_seconds", self.max_seconds,
                    self.max_seconds is None or (_number(self.max_seconds) and self.max_seconds > 0),
                    "a number > 0 or None")
        return self

    # ------------------------------------------------------------------ derived sizes in samples / frames
    @property
    def n_fft(self) -> int:
        """Window length in samples (400 at 16 kHz)."""
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def hop(self) -> int:
        """Hop in samples (200 at 16 kHz)."""
        return int(round(self.hop_seconds * self.sample_rate))

    @property
    def block_len(self) -> int:
        """Samples per block (16000 for 1 s at 16 kHz)."""
        return int(round(self.block_seconds * self.sample_rate))

    @property
    def block_step(self) -> int:
        """Samples between the starts of two consecutive blocks (14400 for 1 s blocks, 0.1 s overlap)."""
        return self.block_len - int(round(self.block_overlap * self.sample_rate))


def check_f_max(f_max: Any, sample_rate: int, *, owner: str = "AudioConfig") -> None:
    """Raise :class:`core.errors.ValidationError` unless ``0 < f_max <= sample_rate / 2``."""
    nyquist = sample_rate / 2
    check_param(owner, "f_max", f_max, _number(f_max) and 0 < f_max <= nyquist,
                f"a number in (0, sample_rate / 2 = {nyquist:g}]")
