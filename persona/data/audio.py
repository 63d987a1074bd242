"""Speech-like audio in sync with the mouth, 29-d audio features, and AD-NeRF's windows.

* :func:`speech_track` draws an articulation timeline (phrases of syllables: a consonant - a
  stop closure and burst, a fricative, or nothing - then a vowel with its jaw opening, lip
  rounding and stretch; pauses between phrases) at :data:`CONTROL_RATE` Hz.
* :func:`synthesize` turns it into a 16 kHz waveform: voiced segments are additive harmonics of a
  wandering f0 shaped by formants that follow the mouth (F1 rises as the jaw opens, F2 falls with
  rounding and rises with stretch), fricatives and bursts are high-passed noise, silences are
  near-silent. :func:`mouth_at` samples the same timeline at the video frame times, so the
  audio and the mouth are in sync by construction.
* :func:`features` maps any 16 kHz waveform to 29-d vectors at 50 fps (one per 20 ms): 28 log
  mel-band energies + 1 log total energy, fixed affine normalisation. It STANDS IN for the
  DeepSpeech 0.1.0 character logits (also 29-d at 50 fps) that AD-NeRF uses; that network cannot
  be obtained here. A real DeepSpeech ``aud.npy`` is accepted unchanged by the dataset.
* :func:`windows` lays the 50 fps features out as AD-NeRF's ``aud.npy``: [N,16,29] for N video
  frames at 25 fps, padding 8 zero frames at each end, window i = padded[2i : 2i+16] (stride
  2), i.e. 16 feature frames (320 ms) centred on the start time of video frame i.
"""

from __future__ import annotations

import io
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FEATURE_FPS = 50
FEATURE_DIM = 29
WINDOW = 16
CONTROL_RATE = 200  # Hz of the articulation timeline

# vowel -> (jaw open, lip round, lip stretch)
_VOWELS = {"a": (0.95, 0.0, 0.1), "e": (0.55, 0.0, 0.6), "i": (0.28, 0.0, 0.95), "o": (0.65, 0.8, -0.4),
           "u": (0.3, 1.0, -0.6), "@": (0.45, 0.1, 0.0)}


@dataclass
class SpeechTrack:
    """Articulation timeline at ``rate`` Hz, arrays [T]."""

    rate: int
    jaw: np.ndarray      # jaw opening in [0,1]
    round: np.ndarray    # lip rounding in [0,1]
    stretch: np.ndarray  # lip stretch in [-1,1]
    voiced: np.ndarray   # voicing amplitude in [0,1]
    noise: np.ndarray    # fricative / burst noise amplitude in [0,1]
    f0: np.ndarray       # fundamental frequency in Hz

    @property
    def seconds(self) -> float:
        return len(self.jaw) / self.rate


def _smooth(x: np.ndarray, sigma_s: float, rate: int) -> np.ndarray:
    n = max(1, int(round(3 * sigma_s * rate)))
    k = np.exp(-0.5 * (np.arange(-n, n + 1) / (sigma_s * rate)) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(x, n, mode="edge"), k, mode="valid")


def speech_track(seconds: float, seed: int = 0, talkativeness: float = 0.8, rate: int = CONTROL_RATE) -> SpeechTrack:
    """A random articulation timeline of ``seconds`` (deterministic in ``seed``)."""
    rng = np.random.default_rng([int(seed), 4421])
    t_len = int(round(seconds * rate))
    jaw, rnd, stretch = np.zeros(t_len), np.zeros(t_len), np.zeros(t_len)
    voiced, noise = np.zeros(t_len), np.zeros(t_len)
    base_f0 = rng.uniform(100, 210)
    i = int(rng.uniform(0.1, 0.4) * rate)
    vowels = list(_VOWELS)
    while i < t_len:
        for _ in range(int(rng.integers(2, 9))):  # one phrase
            kind = rng.choice(["stop", "fricative", "none", "nasal"], p=[0.35, 0.3, 0.2, 0.15])
            if kind == "stop":
                n = int(rng.uniform(0.04, 0.07) * rate)
                i += n  # closure: mouth closed, silent
                b = int(0.015 * rate)
                noise[i:i + b] = 0.6
                i += b
            elif kind == "fricative":
                n = int(rng.uniform(0.06, 0.11) * rate)
                jaw[i:i + n] = 0.12
                stretch[i:i + n] = 0.3
                noise[i:i + n] = rng.uniform(0.25, 0.5)
                i += n
            elif kind == "nasal":
                n = int(rng.uniform(0.04, 0.08) * rate)
                voiced[i:i + n] = 0.25
                i += n
            v = vowels[int(rng.integers(len(vowels)))]
            j, r, s = _VOWELS[v]
            n = int(rng.uniform(0.09, 0.22) * rate)
            amp = rng.uniform(0.6, 1.0)
            jaw[i:i + n] = j * rng.uniform(0.8, 1.05)
            rnd[i:i + n] = r
            stretch[i:i + n] = s
            voiced[i:i + n] = amp
            i += n
            if i >= t_len:
                break
        pause = rng.uniform(0.15, 0.6) / max(talkativeness, 1e-3)
        i += int(pause * rate)
    jaw, rnd, stretch = (_smooth(x[:t_len], 0.025, rate) for x in (jaw, rnd, stretch))
    voiced = _smooth(voiced[:t_len], 0.012, rate)
    noise = _smooth(noise[:t_len], 0.006, rate)
    tt = np.arange(t_len) / rate
    f0 = base_f0 * (1 + 0.12 * np.sin(2 * np.pi * 0.35 * tt + rng.uniform(0, 6)) + 0.04 * np.sin(2 * np.pi * 2.1 * tt))
    return SpeechTrack(rate, jaw.clip(0, 1), rnd.clip(0, 1), stretch.clip(-1, 1), voiced.clip(0, 1), noise.clip(0, 1), f0)


def mouth_at(track: SpeechTrack, n_frames: int, fps: float) -> dict[str, np.ndarray]:
    """The timeline sampled at video frame times i / fps: {'jaw','round','stretch'} each [n_frames]."""
    idx = np.clip(np.round(np.arange(n_frames) / fps * track.rate).astype(int), 0, len(track.jaw) - 1)
    return {"jaw": track.jaw[idx].astype(np.float32), "round": track.round[idx].astype(np.float32),
            "stretch": track.stretch[idx].astype(np.float32)}


def _formant_gain(freq: np.ndarray, centre: np.ndarray, bandwidth: float) -> np.ndarray:
    return 1.0 / (1.0 + ((freq - centre) / bandwidth) ** 2)


def synthesize(track: SpeechTrack, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """16 kHz float32 waveform in [-1,1] of a :class:`SpeechTrack` (deterministic in ``seed``)."""
    rng = np.random.default_rng([int(seed), 991])
    n = int(round(track.seconds * sample_rate))
    t_ctrl = np.arange(len(track.jaw)) / track.rate
    t = np.arange(n) / sample_rate

    def up(x):
        return np.interp(t, t_ctrl, x)

    f0 = up(track.f0)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    f1 = 260 + 560 * track.jaw
    f2 = 1450 + 650 * track.stretch - 650 * track.round
    f3 = np.full_like(f1, 2600.0)
    voiced = np.zeros(n)
    n_harm = int(4000 // track.f0.min())
    for k in range(1, n_harm + 1):
        fk = k * track.f0
        gain = (_formant_gain(fk, f1, 90) + 0.6 * _formant_gain(fk, f2, 120) + 0.25 * _formant_gain(fk, f3, 180))
        gain = gain * (fk < 4500) / k ** 0.6
        voiced += up(gain) * np.sin(k * phase)
    voiced *= up(track.voiced * (0.35 + 0.65 * track.jaw))
    white = rng.normal(0, 1, n)
    hiss = np.diff(white, prepend=0.0)  # first difference: high-passed noise
    hiss = np.diff(hiss, prepend=0.0) * 0.5
    fric = hiss * up(track.noise)
    floor = white * 0.002
    wave_ = 0.25 * voiced + 0.12 * fric + floor
    return (wave_ / max(1.0, np.abs(wave_).max() / 0.95)).astype(np.float32)


# ----------------------------------------------------------------------------- features
def _mel_filters(n_fft: int, sample_rate: int, n_bands: int, f_lo: float = 80.0, f_hi: float = 7600.0) -> np.ndarray:
    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    def hz(m):
        return 700 * (10 ** (m / 2595) - 1)

    edges = hz(np.linspace(mel(f_lo), mel(f_hi), n_bands + 2))
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    bank = np.zeros((n_bands, len(freqs)))
    for b in range(n_bands):
        lo, mid, hi = edges[b:b + 3]
        bank[b] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return bank


def features(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """29-d features at 50 fps [T,29] float32 of a mono waveform (resampled to 16 kHz if needed).

    Frame j summarises 32 ms centred on time (j + 0.5) * 20 ms: 28 log mel energies and the log
    total energy, affinely normalised to roughly [-1, 1]. T = ceil(seconds * 50).
    Stand-in for DeepSpeech 0.1.0 logits (see the module doc).
    """
    x = np.asarray(waveform, np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or Inf")
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sample_rate) // g)
    hop, n_fft = SAMPLE_RATE // FEATURE_FPS, 512
    t_out = int(math.ceil(len(x) / hop))
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad + hop * t_out))
    centres = (np.arange(t_out) * hop + hop // 2)
    idx = centres[:, None] + np.arange(n_fft)[None, :] + pad - n_fft // 2
    frames = xp[idx] * np.hanning(n_fft)[None]
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mel = power @ _mel_filters(n_fft, SAMPLE_RATE, FEATURE_DIM - 1).T
    log_mel = np.log10(mel + 1e-6)
    log_energy = np.log10(power.sum(-1, keepdims=True) + 1e-6)
    out = np.concatenate([(log_mel + 3.0) / 3.0, (log_energy + 2.0) / 3.0], axis=1)
    return out.astype(np.float32)


def windows(feats: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """AD-NeRF layout [n_frames,16,29] of 50 fps features [T,29] (see the module doc).

    Features missing at the end (T < 2 * n_frames) read as zeros, as the padding does.
    """
    feats = np.asarray(feats, np.float32)
    if feats.ndim != 2:
        raise ValueError(f"features must be [T,{FEATURE_DIM}], got shape {feats.shape}")
    stride = FEATURE_FPS / fps
    if abs(stride - round(stride)) > 1e-6:
        raise ValueError(f"video fps {fps:g} must divide the audio feature rate {FEATURE_FPS} (e.g. 25 or 50)")
    stride = int(round(stride))
    half = WINDOW // 2
    need = half + stride * (n_frames - 1) + half
    padded = np.zeros((max(need, feats.shape[0] + 2 * half), feats.shape[1]), np.float32)
    padded[half:half + feats.shape[0]] = feats
    starts = np.arange(n_frames) * stride
    return padded[starts[:, None] + np.arange(WINDOW)[None, :]]


def audio_windows(waveform: np.ndarray, n_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """waveform -> [n_frames,16,29] (:func:`features` then :func:`windows`)."""
    return windows(features(waveform, sample_rate), n_frames, fps)


# ----------------------------------------------------------------------------- wav files
def wav_bytes(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV file contents (deterministic)."""
    pcm = (np.clip(np.asarray(waveform, np.float64), -1, 1) * 32767).round().astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(float32 mono waveform in [-1,1], sample rate) of a PCM WAV file (channels averaged).

    Integer samples are divided by 2^(bits-1) (int16: 32768), the PCM convention: -32768 -> -1 and
    ``x * 32768`` gives back the raw samples exactly, as SyncNet's MFCC (raw int16 input) and
    ffmpeg's s16le decoding (:mod:`persona.preprocess.decode`) expect. :func:`wav_bytes` writes
    ``round(x * 32767)``, so a round trip scales by 32767/32768 (1 - 3e-5)."""
    from persona.errors import PersonaFileError, PersonaInputError

    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: audio file not found")
    try:
        from scipy.io import wavfile

        rate, data = wavfile.read(str(path))
    except Exception as exc:  # noqa: BLE001 - report which file is unreadable
        raise PersonaInputError(f"{path}: not a readable WAV file ({exc})") from exc
    if not 1000 <= int(rate) <= 768_000:
        raise PersonaInputError(f"{path}: sample rate {rate} Hz; expected 1000 to 768000 Hz (16000 for DeepSpeech)")
    data = np.asarray(data)
    if data.dtype.kind not in "iuf" or data.ndim not in (1, 2) or data.size == 0:
        raise PersonaInputError(f"{path}: {data.dtype} samples of shape {list(data.shape)}; expected non-empty PCM "
                                f"(integer or float) mono or multi-channel audio")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise PersonaInputError(f"{path}: samples contain NaN or Inf; expected finite float PCM")
    if data.dtype.kind == "i":
        data = data / -float(np.iinfo(data.dtype).min)
    elif data.dtype.kind == "u":
        data = (data.astype(np.float64) - 128) / 128
    if data.ndim == 2:
        data = data.mean(1)
    return data.astype(np.float32), int(rate)
