"""The display spectrogram: a tone puts its energy in the right mel band."""

from core.audio.preview import log_mel
from tests.helpers import tone_wav


def test_tone_energy_in_expected_band(tmp_path):
    low = log_mel(tone_wav(tmp_path / "low.wav", freq=300, seconds=1.0, sr=8000))[0]
    high, hop = log_mel(tone_wav(tmp_path / "high.wav", freq=2500, seconds=1.0, sr=8000))
    assert low.shape[0] == 64 and abs(hop - 0.0125) < 1e-9
    assert 70 <= low.shape[1] <= 90  # 1 s at a 12.5 ms hop
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()
