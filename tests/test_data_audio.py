"""Speech-like audio, the 29-d featuriser, and AD-NeRF's [N,16,29] window layout."""

import numpy as np
import pytest

from persona.data import audio as A


def test_window_layout_padding_and_stride():
    t = 40
    feats = np.arange(1, t + 1, dtype=np.float32)[:, None].repeat(29, 1)  # frame j holds j+1
    win = A.windows(feats, n_frames=20, fps=25)
    assert win.shape == (20, 16, 29)
    # frame 0: 8 zero frames then features 0..7
    assert np.all(win[0, :8] == 0) and np.all(win[0, 8:, 0] == np.arange(1, 9))
    # frame i is centred on feature 2i: window = features [2i-8, 2i+8)
    i = 7
    np.testing.assert_array_equal(win[i, :, 0], np.arange(2 * i - 8, 2 * i + 8) + 1)
    # the last frame reaches into the zero padding at the end
    assert np.all(win[19, 8:, 0] == np.array([39, 40, 0, 0, 0, 0, 0, 0]))


def test_features_rate_and_shape_on_any_wav():
    rate = 16000
    x = np.sin(2 * np.pi * 220 * np.arange(int(1.5 * rate)) / rate).astype(np.float32)
    f = A.features(x)
    assert f.shape == (75, 29) and f.dtype == np.float32
    # resampling path: same tone at 8 kHz gives the same number of frames and similar features
    x8 = np.sin(2 * np.pi * 220 * np.arange(int(1.5 * 8000)) / 8000)
    f8 = A.features(x8, sample_rate=8000)
    assert f8.shape == (75, 29)
    assert np.abs(f8[5:-5, :10] - f[5:-5, :10]).mean() < 0.3
    with pytest.raises(ValueError, match="NaN"):
        A.features(np.array([0.0, np.nan]))


def test_speech_is_in_sync_with_the_mouth():
    fps, n = 25, 250
    track = A.speech_track(n / fps, seed=3)
    wave = A.synthesize(track, seed=3)
    assert wave.shape == (n * 640,) and np.abs(wave).max() <= 1
    jaw = A.mouth_at(track, n, fps)["jaw"]
    win = A.audio_windows(wave, n, fps)
    loudness = win[:, 8, -1]  # the feature at the frame's own time
    corr = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    aligned = corr(jaw, loudness)
    shifted = corr(jaw[:-8], loudness[8:])
    assert aligned > 0.5 and aligned > shifted + 0.25
    # silence where the mouth stays closed and no consonant sounds: quieter than open vowels
    assert loudness[jaw > 0.6].mean() > loudness[(jaw < 0.02) & (track.noise[np.clip(np.arange(n) * 8, 0, len(track.noise) - 1)] < 0.01)].mean()


def test_determinism_and_wav_round_trip(tmp_path):
    a = A.synthesize(A.speech_track(1.0, seed=1), seed=1)
    b = A.synthesize(A.speech_track(1.0, seed=1), seed=1)
    np.testing.assert_array_equal(a, b)
    assert A.wav_bytes(a) == A.wav_bytes(b)
    path = tmp_path / "aud.wav"
    path.write_bytes(A.wav_bytes(a))
    back, rate = A.read_wav(path)
    assert rate == 16000 and np.abs(back - a).max() < 1e-4
    raw = np.frombuffer(A.wav_bytes(a)[44:], "<i2")
    np.testing.assert_array_equal(back.astype(np.float64) * 32768, raw)  # PCM convention: x * 32768 = the int16 samples
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        A.read_wav(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match="bad.wav"):
        A.read_wav(tmp_path / "bad.wav")
