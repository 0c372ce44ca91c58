"""The audio pipeline: load any sound file, keep its voiced part, cut 1-second blocks, make spectrogram
images for an ImageNet CNN (batched on the GPU), and aggregate block predictions back to clips.

Public API
----------
``AudioConfig``        frozen settings of the whole pipeline (``validate()``)
``AudioError``         one clip cannot be used (a :class:`core.features.base.ItemError`, with ``reason``)
``read_audio``         a file at its own rate, mono: (y, sr)
``load_audio``         a file mixed to mono and resampled, checked (empty, non-finite, silent)
``load_clip``          ``load_audio`` then the VAD, per a config; ``load_clips`` for many files
``vad_segments``       voiced sample ranges of a clip; ``voiced_signal`` their concatenation
``batch_blocks``       block images of many clips in one batched pass, and each block's clip
``clip_blocks``        block images of one file
``aggregate_blocks``   clip probabilities from block probabilities (mean, or log-mean)
``log_mel_db``         a clip's log-mel spectrogram in dB (the Label page's display)

Importing this package is cheap: torch, torchaudio, librosa and soxr are imported when first used.
"""
from __future__ import annotations

from core.audio.blocks import aggregate_blocks, batch_blocks, block_images, block_starts, clip_blocks
from core.audio.config import PAPER_F_MAX, AudioConfig, AudioError
from core.audio.load import load_audio, load_clip, load_clips, read_audio, resample
from core.audio.spectrogram import log_mel_db, mel_filterbank, power_to_db, stft_power
from core.audio.vad import frame_rms_db, vad_segments, voiced_signal

__all__ = [
    "PAPER_F_MAX", "AudioConfig", "AudioError", "aggregate_blocks", "batch_blocks", "block_images",
    "block_starts", "clip_blocks", "frame_rms_db", "load_audio", "load_clip", "load_clips", "log_mel_db",
    "mel_filterbank", "power_to_db", "read_audio", "resample", "stft_power", "vad_segments", "voiced_signal",
]
