"""The audio pipeline (core.audio): loading and its per-item errors, VAD, spectrograms, blocks, aggregation.

All signals are synthetic (tones, silence, noise bursts) written with soundfile into tmp_path; one test
reads a few FSDD clips from ../shared/datasets and skips where they are absent.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.audio import (AudioConfig, AudioError, aggregate_blocks, batch_blocks, block_images, block_starts,
                        clip_blocks, load_audio, load_clip, load_clips, mel_filterbank, stft_power, vad_segments,
                        voiced_signal)
from core.audio.spectrogram import mel_power, n_bins_below
from core.errors import ValidationError
from core.features.base import ItemError

SR = 16000


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spec.argmax()])


def write(path: Path, y: np.ndarray, sr: int, **kw) -> Path:
    sf.write(path, y, sr, **kw)
    return path


# ----------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("file_sr", [8000, 22050, 44100])
def test_load_resamples_any_rate(tmp_path, file_sr):
    p = write(tmp_path / "a.wav", tone(440, 0.5, file_sr), file_sr)
    y = load_audio(p, sample_rate=SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SR // 2) <= 1
    assert abs(peak_hz(y, SR) - 440) < 5
    assert abs(np.abs(y).max() - 0.3) < 0.02


def test_load_mixes_stereo_to_mono_and_truncates(tmp_path):
    y = tone(300, 1.0)
    p = write(tmp_path / "st.wav", np.stack([y, np.zeros_like(y)], axis=1), SR)
    out = load_audio(p, sample_rate=SR)
    assert out.shape == (SR,) and abs(np.abs(out).max() - 0.15) < 0.01  # mean of the two channels
    assert load_audio(p, sample_rate=SR, max_seconds=0.25).shape == (SR // 4,)


@pytest.mark.parametrize("ext,fmt", [("flac", "FLAC"), ("ogg", "OGG"), ("mp3", "MP3")])
def test_load_compressed_formats(tmp_path, ext, fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    p = tmp_path / f"a.{ext}"
    try:
        sf.write(p, tone(1000, 0.5, 22050), 22050, format=fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        pytest.skip(f"this libsndfile cannot write {fmt}: {exc}")
    y = load_audio(p, sample_rate=SR)
    assert abs(len(y) - SR // 2) < 0.05 * SR  # MP3 adds encoder padding
    assert abs(peak_hz(y, SR) - 1000) < 10


def test_bad_files_raise_per_item_errors(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_text("RIFF? no, just text pretending to be audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    no_samples = write(tmp_path / "nosamples.wav", np.zeros(0, np.float32), SR)
    silent = write(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    nan = write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), SR, subtype="FLOAT")
    cases = {junk: "not_audio", empty: "empty", no_samples: "empty", silent: "silent", nan: "non_finite",
             tmp_path / "missing.wav": "missing", None: "missing"}
    for path, reason in cases.items():
        with pytest.raises(AudioError) as info:
            load_audio(path, sample_rate=SR)
        assert info.value.reason == reason, (path, str(info.value))
        assert isinstance(info.value, ItemError) and str(info.value)
    # the display and the logmel features accept silence
    assert not load_audio(silent, sample_rate=SR, allow_silent=True).any()


def test_load_clips_reports_failures_and_keeps_order(tmp_path):
    good = [write(tmp_path / f"g{i}.wav", tone(300 + 100 * i, 0.4), SR) for i in range(3)]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    signals, ok, failures = load_clips([good[0], bad, good[1], good[2]], AudioConfig(), num_workers=2)
    assert ok == [0, 2, 3] and len(signals) == 3
    assert [i for i, _ in failures] == [1] and "empty" in failures[0][1]


def test_non_finite_samples_are_zeroed(tmp_path):
    y = tone(440, 0.2)
    y[10:20] = np.nan
    out = load_audio(write(tmp_path / "n.wav", y, SR, subtype="FLOAT"), sample_rate=SR)
    assert np.isfinite(out).all()


# ------------------------------------------------------------------------------------------------------ VAD
def test_vad_finds_the_tone_between_silences():
    # 0.5 s of zeros, 0.5 s tone (samples 8000..15999), 0.5 s zeros. Frames are 400 samples every 200:
    # frame i covers [200 i, 200 i + 400), so frames 39 .. 79 touch the tone -> samples [7800, 16200).
    y = np.concatenate([np.zeros(8000, np.float32), tone(440, 0.5), np.zeros(8000, np.float32)])
    cfg = AudioConfig(vad_pad_seconds=0.0, vad_min_seconds=0.0)
    assert vad_segments(y, cfg).tolist() == [[7800, 16200]]
    # 0.1 s (1600 samples) of hangover on each side
    assert vad_segments(y, replace(cfg, vad_pad_seconds=0.1)).tolist() == [[6200, 17800]]
    assert len(voiced_signal(y, cfg)) == 8400


def test_vad_threshold_min_length_and_merging():
    rng = np.random.default_rng(0)
    floor = (0.3 / np.sqrt(2) * 1e-3 * rng.standard_normal(3 * SR)).astype(np.float32)  # -60 dB re the tone
    y = floor.copy()
    y[8000:16000] += tone(440, 0.5)
    y[32000:32160] += 0.3 * rng.standard_normal(160).astype(np.float32)  # a 10 ms click
    cfg = AudioConfig(vad_pad_seconds=0.0, vad_min_seconds=0.05)
    assert vad_segments(y, cfg).tolist() == [[7800, 16200]]  # the click spans 600 samples < 800: dropped
    with_click = vad_segments(y, replace(cfg, vad_min_seconds=0.0))
    assert with_click.tolist() == [[7800, 16200], [31800, 32400]]
    assert vad_segments(y, replace(cfg, vad_threshold_db=-80.0)).tolist() == [[0, len(y)]]  # the floor too
    # two tones 0.1 s apart merge when the hangover (0.1 s each side) bridges the gap
    z = np.concatenate([tone(440, 0.3), np.zeros(1600, np.float32), tone(440, 0.3)])
    assert len(vad_segments(z, replace(cfg, vad_pad_seconds=0.0))) == 2
    assert vad_segments(z, replace(cfg, vad_pad_seconds=0.1)).tolist() == [[0, len(z)]]


def test_vad_reports_a_clip_without_voice(tmp_path):
    with pytest.raises(AudioError) as info:
        voiced_signal(np.zeros(SR, np.float32), AudioConfig())
    assert info.value.reason == "no_voice"
    p = write(tmp_path / "t.wav", np.concatenate([np.zeros(4000), tone(440, 0.5, 8000), np.zeros(4000)]), 8000)
    y = load_clip(p, AudioConfig(vad_pad_seconds=0.0, vad_min_seconds=0.0))
    assert abs(len(y) - 8400) <= 2  # the tone (8000 samples at 16 kHz) plus one hop on each side


# ----------------------------------------------------------------------------------------------- spectrogram
def test_stft_frames_for_one_second():
    from torchaudio.functional import spectrogram

    x = torch.from_numpy(tone(1000, 1.0))[None].repeat(2, 1)
    S = stft_power(x, n_fft=400, hop=200)
    assert S.shape == (2, 201, 81)  # 25 ms window, 12.5 ms hop, centred frames: 1 + 16000 // 200
    ref = spectrogram(x, pad=0, window=torch.hamming_window(400), n_fft=400, hop_length=200, win_length=400,
                      power=2.0, normalized=False, center=True, pad_mode="reflect")
    torch.testing.assert_close(S, ref, rtol=1e-4, atol=1e-4 * float(ref.max()))
    assert int(S[0].mean(dim=1).argmax()) == 25  # 1000 Hz / 40 Hz per bin


def test_mel_agrees_with_librosa():
    import librosa

    rng = np.random.default_rng(1)
    y = (tone(440, 1.0) + tone(2500, 1.0) + 0.05 * rng.standard_normal(SR)).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=400, hop_length=200, win_length=400, window="hamming",
                                         center=True, pad_mode="reflect", power=2.0, n_mels=64, fmax=8000)
    fb = mel_filterbank(SR, 400, 64, 8000.0)
    ours = mel_power(stft_power(torch.from_numpy(y)[None], n_fft=400, hop=200), fb)[0].numpy()
    assert ours.shape == ref.shape == (64, 81)
    assert np.abs(ours - ref).max() <= 1e-4 * ref.max()
    np.testing.assert_allclose(fb.numpy().T, librosa.filters.mel(sr=SR, n_fft=400, n_mels=64, fmax=8000),
                               atol=1e-6)


def test_f_max_changes_the_filterbank_and_the_images():
    fb7, fb8 = mel_filterbank(SR, 400, 64, 7000.0), mel_filterbank(SR, 400, 64, 8000.0)
    freqs = np.arange(201) * SR / 400
    assert freqs[fb7.numpy().sum(axis=1) > 1e-6].max() < 7000 < freqs[fb8.numpy().sum(axis=1) > 1e-6].max()
    assert n_bins_below(7000, sample_rate=SR, n_fft=400) == 176 and n_bins_below(8000, sample_rate=SR, n_fft=400) == 201
    y = tone(7600, 1.0) + tone(500, 1.0)
    for kind in ("mel", "log"):
        cfg = AudioConfig(kind=kind)
        im7, _ = batch_blocks([y], cfg, f_max=7000.0)
        im8, _ = batch_blocks([y], cfg, f_max=8000.0)
        # the 7.6 kHz tone lights a row near the top (high frequencies) with f_max = 8000, none with 7000
        top7, top8 = im7[0, 0, :20].mean(dim=1).max(), im8[0, 0, :20].mean(dim=1).max()
        assert top8 > 0.8 and top7 < 0.3, (kind, top7, top8)
    with pytest.raises(ValidationError, match="'f_max'"):
        batch_blocks([y], AudioConfig(), f_max=9000.0)


# ---------------------------------------------------------------------------------------------------- blocks
def test_blocks_of_a_two_and_a_half_second_clip():
    cfg = AudioConfig()  # 1 s blocks, 0.1 s overlap: step 14400 samples
    n = int(2.5 * SR)
    starts = block_starts(n, cfg)
    assert starts.tolist() == [0, 14400, 24000]  # the last block flush with the end of the clip
    assert starts[0] + cfg.block_len - starts[1] == 1600  # 0.1 s overlap
    assert block_starts(SR, cfg).tolist() == [0] and block_starts(SR + 1, cfg).tolist() == [0, 1]
    rng = np.random.default_rng(2)
    y = (0.1 * rng.standard_normal(n)).astype(np.float32)
    short = tone(300, 0.3)
    images, clip_index = batch_blocks([y, short, y[: 2 * SR]], cfg)
    assert images.shape == (3 + 1 + 3, 3, 128, 128)
    assert clip_index.tolist() == [0, 0, 0, 1, 2, 2, 2]
    # the gathered blocks are the right stretches of the signal
    direct = block_images(torch.from_numpy(y[14400:30400])[None], cfg)
    torch.testing.assert_close(images[1:2], direct, atol=1e-5, rtol=0)


def test_images_are_three_channel_in_unit_range_and_short_clips_padded():
    cfg = AudioConfig(image_size=224)
    short = tone(300, 0.3)
    images, _ = batch_blocks([short, tone(1000, 1.7)], cfg)
    assert images.shape == (3, 3, 224, 224) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and images.max() > 0.95
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    # zero padding: silence (0) right of the 0.3 s clip; repetition fills the block
    assert images[0, 0, :, 100:].max() == 0
    rep, _ = batch_blocks([short], replace(cfg, pad="repeat"))
    assert rep[0, 0, :, 100:].max() > 0.9


def test_clip_blocks_of_a_file(tmp_path):
    p = write(tmp_path / "t.wav", np.concatenate([np.zeros(8000), tone(440, 1.5, 8000), np.zeros(8000)]), 8000)
    images = clip_blocks(p, AudioConfig())
    assert images.shape == (2, 3, 128, 128)  # 1.5 s + 0.2 s of hangover after the VAD: two blocks
    assert clip_blocks(p, AudioConfig(vad=False)).shape[0] == 4  # 3.5 s: starts 0, .9, 1.8, 2.5 s
    silent = write(tmp_path / "s.wav", np.zeros(8000), 8000)
    with pytest.raises(AudioError, match="silent"):
        clip_blocks(silent, AudioConfig())


def test_config_validation_names_the_parameter():
    AudioConfig().validate()
    for bad, name in [({"kind": "cqt"}, "kind"), ({"f_max": 9000.0}, "f_max"), ({"block_overlap": 1.0}, "block_overlap"),
                      ({"sample_rate": 16000.0}, "sample_rate"), ({"image_size": 2}, "image_size"),
                      ({"augment_f_max": (7000.0, 12000.0)}, "augment_f_max"), ({"pad": "edge"}, "pad")]:
        with pytest.raises(ValidationError, match=f"'{name}'"):
            AudioConfig(**bad).validate()


# ------------------------------------------------------------------------------------------------ aggregation
def test_aggregate_blocks_by_hand():
    P = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.6, 0.4]])
    idx = np.array([0, 0, 2, 0])
    out = aggregate_blocks(P, idx, 3)
    np.testing.assert_allclose(out[0], [(0.9 + 0.5 + 0.6) / 3, (0.1 + 0.5 + 0.4) / 3])
    assert np.isnan(out[1]).all()
    np.testing.assert_allclose(out[2], [0.2, 0.8])
    g = aggregate_blocks(P, idx, 3, method="log_mean")
    a, b = (0.9 * 0.5 * 0.6) ** (1 / 3), (0.1 * 0.5 * 0.4) ** (1 / 3)
    np.testing.assert_allclose(g[0], [a / (a + b), b / (a + b)])
    np.testing.assert_allclose(g[2], [0.2, 0.8])
    with pytest.raises(ValidationError, match="'clip_index'"):
        aggregate_blocks(P, np.array([0, 0, 3, 0]), 3)
    with pytest.raises(ValidationError, match="'method'"):
        aggregate_blocks(P, idx, 3, method="max")


# -------------------------------------------------------------------------------------------- devices, data
@pytest.mark.gpu
def test_cuda_blocks_match_cpu():
    rng = np.random.default_rng(3)
    signals = [(0.1 * rng.standard_normal(int(s * SR))).astype(np.float32) for s in (0.4, 1.0, 2.5)]
    for kind in ("mel", "log"):
        cpu, ci = batch_blocks(signals, AudioConfig(kind=kind), device="cpu")
        gpu, gi = batch_blocks(signals, AudioConfig(kind=kind), device="cuda")
        assert gpu.is_cuda and (ci == gi).all()
        torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)


@pytest.mark.shared
def test_fsdd_clips(shared_datasets):
    paths = sorted((shared_datasets / "fsdd" / "recordings").glob("*.wav"))[:20]
    assert len(paths) == 20
    signals, ok, failures = load_clips(paths, AudioConfig())
    assert not failures and len(signals) == 20
    assert all(0.1 * SR < len(y) <= 2 * SR for y in signals)  # spoken digits, after the VAD
    images, clip_index = batch_blocks(signals, AudioConfig(), f_max=7500.0)
    assert images.shape[0] == len(clip_index) >= 20 and set(clip_index.tolist()) == set(range(20))
    assert 0 <= images.min() and images.max() <= 1
