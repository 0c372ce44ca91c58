"""The ``mfcc_profile`` audio extractor: reference MFCCs, time order, level invariance, f_max variants, failures."""
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.features as F  # noqa: E402
from core.errors import ValidationError  # noqa: E402
from core.features.audio import power_frames  # noqa: E402
from core.features.audio_profile import HOP, N_FFT, MfccProfile, mfcc, profile  # noqa: E402
from core.features.base import ItemRef  # noqa: E402

SR = 16000


def _wav(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    sf.write(path, y.astype(np.float32), sr)
    return path


def _chirp(f0: float, f1: float, seconds: float = 0.8, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    return 0.5 * np.sin(phase)


def test_mfcc_matches_a_plain_loop_reference():
    """Mel filterbank, natural log and an orthonormal DCT-II written out coefficient by coefficient."""
    from librosa.filters import mel

    y = _chirp(300, 3000)
    P = power_frames(y, n_fft=N_FFT, hop=HOP)
    M = mfcc(P, n_mels=40, f_max=4000.0, n_mfcc=13)
    L = np.log(mel(sr=SR, n_fft=N_FFT, n_mels=40, fmin=0, fmax=4000.0) @ P + 1e-6)  # (40, T)
    n = L.shape[0]
    ref = np.zeros((13, L.shape[1]))
    for k in range(13):
        scale = np.sqrt(1 / n) if k == 0 else np.sqrt(2 / n)
        for m in range(n):
            ref[k] += scale * L[m] * np.cos(np.pi * k * (2 * m + 1) / (2 * n))
    ref[0] -= ref[0].mean()
    np.testing.assert_allclose(M, ref, rtol=1e-4, atol=1e-3)


def test_profile_keeps_time_order_and_summary_does_not():
    M = np.arange(24, dtype=np.float32).reshape(2, 12)  # 2 coefficients rising over 12 frames
    v = profile(M, 4)
    np.testing.assert_allclose(v[:8], [1, 4, 7, 10, 13, 16, 19, 22])  # segment means, coefficient-major
    w = profile(M[:, ::-1].copy(), 4)
    np.testing.assert_allclose(w[:8], [10, 7, 4, 1, 22, 19, 16, 13])  # reversed in time: reversed profile
    np.testing.assert_allclose(v[8:], w[8:], atol=1e-6)  # mean, std, delta std cannot tell the two apart
    short = profile(np.ones((2, 3), np.float32), 8)  # fewer frames than segments still fills every segment
    assert short.shape == (2 * 8 + 3 * 2,) and np.isfinite(short).all()


def test_extractor_rising_vs_falling_level_and_failures(tmp_path):
    up = _wav(tmp_path / "up.wav", _chirp(300, 3000))
    up_quiet = _wav(tmp_path / "up_quiet.wav", 0.05 * _chirp(300, 3000))
    up8k = _wav(tmp_path / "up8k.wav", _chirp(300, 3000, sr=8000), 8000)
    down = _wav(tmp_path / "down.wav", _chirp(3000, 300))
    silent = _wav(tmp_path / "silent.wav", np.zeros(SR))
    empty = _wav(tmp_path / "empty.wav", np.zeros(0))
    items = [ItemRef(i, p) for i, p in enumerate([up, up_quiet, up8k, down, silent, empty])]
    failures: list = []
    ids, X = F.compute_features(items, "mfcc_profile", tmp_path / "cache", failures=failures)
    assert ids.tolist() == [0, 1, 2, 3, 4] and X.shape == (5, 286) and np.isfinite(X).all()
    assert [f.item_id for f in failures] == [5] and "empty" in failures[0].reason
    d = lambda a, b: float(np.linalg.norm(X[a] - X[b]))  # noqa: E731
    assert d(0, 1) < 0.05 * d(0, 3)  # the recording level does not count
    assert d(0, 2) < 0.5 * d(0, 3)  # the same sound recorded at 8 kHz stays near; the reversed one is far
    assert F.default_extractor("audio") == "mfcc_profile"


def test_options_and_dimension():
    assert MfccProfile(f_max=(4000.0,), n_mfcc=10, segments=4).dim == 10 * 7
    with pytest.raises(ValidationError, match="f_max"):
        MfccProfile(f_max=(12000.0,))
    with pytest.raises(ValidationError, match="n_mfcc"):
        MfccProfile(n_mels=20, n_mfcc=30)
