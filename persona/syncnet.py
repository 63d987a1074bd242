"""Lip-sync scores with the SyncNet protocol (Chung & Zisserman 2016; as used by AD-NeRF, DFRF,
Wav2Lip and the paper's Table 3).

Protocol (faithful to joonson/syncnet_python):

- video stream: 5 consecutive frames ``[B,3,5,S,S]`` (BGR, 0..255, as OpenCV reads them); the
  official model takes 224x224 face crops;
- audio stream: 13 MFCCs x 20 steps (0.2 s at 100 Hz; 4 MFCC steps per video frame at 25 fps)
  ``[B,1,13,20]``; MFCCs are computed here with numpy/scipy exactly as ``python_speech_features``
  does (25 ms rectangular window, 10 ms step, 26 mel filters, 512-point FFT, pre-emphasis 0.97,
  lifter 22, c0 replaced by the log frame energy, int16 sample scale);
- both are embedded to 1024-d; for each video window ``i`` the Euclidean distances to the audio
  windows ``i-15 .. i+15`` are taken (audio features zero-padded at the ends, as the official
  code); the per-shift mean distance over windows gives ``LSE-D`` = its minimum, the AV offset =
  ``vshift - argmin`` and ``LSE-C`` (the paper's "SyncNet confidence") = median - minimum.

Offset sign (official convention): ``offset = +k`` means the audio runs k frames *ahead* of the
video (the sound of a mouth shape is heard k frames before it is seen); delaying the audio by k
frames re-synchronises it. So advancing the audio of a synced clip by 3 frames gives offset 3.

Two scorers share one network definition (:class:`SyncNet`, same layer names and order as the
official ``S`` model, widths scaled by ``SyncNetConfig.width``):

- :func:`load_official` loads a user's ``syncnet_v2.model`` (a torch pickle of a state dict,
  read with ``weights_only=True``, names mapped strictly); its scores are named "SyncNet".
- :func:`load_synthetic_expert` loads the shipped offline default
  (``persona/assets/syncnet_synthetic.safetensors``): the same architecture at 1/4 width on 64x64
  mouth crops, trained contrastively on the synthetic world's ground-truth audio and mouth crops
  (``python -m persona syncnet train``). Its scores are named "Sync-C (synthetic expert)" /
  "Sync-D (synthetic expert)", never "SyncNet": they are not comparable with published numbers.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from persona.errors import PersonaFileError, PersonaInputError, flag_int, flag_number
from persona.profiles import for_profile
from persona.runs import (RunDir, load_tensors, load_torch_weights, prefixed, restore_training_state, run_record, save_tensors,
                          training_state, unprefixed)

ASSET = Path(__file__).parent / "assets" / "syncnet_synthetic.safetensors"
SYNTHETIC_NAME = "Sync-C (synthetic expert)"
SYNTHETIC_DISTANCE_NAME = "Sync-D (synthetic expert)"
OFFICIAL_NAME = "SyncNet"
VIDEO_FRAMES = 5
MFCC_STEPS = 20
MFCC_RATE_HZ = 100
SAMPLE_RATE = 16000
VSHIFT = 15
# The shortest clip the +-VSHIFT offset search can score: at shift s, window i meets audio window
# i+s, zero-padded past the clip. With W >= 2*VSHIFT+1 windows every shift compares a majority of
# real audio windows (W - |s| > W/2), so neither the minimum (LSE-D) nor the median over shifts
# (LSE-C's reference) is decided by the padding. W = frames - VIDEO_FRAMES, hence 36 frames.
MIN_WINDOWS = 2 * VSHIFT + 1
MIN_CLIP_FRAMES = MIN_WINDOWS + VIDEO_FRAMES

# official channel widths of the audio and lip trunks, and of the fc heads
_AUDIO_WIDTHS = (64, 192, 384, 256, 256, 512)
_LIP_WIDTHS = (96, 256, 256, 256, 256, 512)
_FC_HIDDEN = 512


@dataclass(frozen=True)
class SyncNetConfig:
    """Sizes of a SyncNet. ``width`` scales every channel count of the official model (1.0 =
    official); ``crop_size`` is the side of the square video input; ``crop`` says what is cut from
    a frame: ``face`` (whole frame = a face crop, the official input) or ``mouth`` (a square around
    the dataset's ``mouth_box``)."""

    width: float = 1.0
    embed_dim: int = 1024
    crop_size: int = 224
    crop: str = "face"
    mouth_margin: float = 1.6  # mouth crop side = margin x the longer side of the mouth box


@dataclass(frozen=True)
class SyncTrainConfig:
    """Training of the synthetic expert (contrastive: synced vs shifted / foreign audio)."""

    net: SyncNetConfig = field(default_factory=lambda: SyncNetConfig(width=0.25, crop_size=64, crop="mouth"))
    profile: str = "default"  # benchmark profile whose audio videos are the training data
    steps: int = 3000
    batch: int = 16
    lr: float = 1e-3
    margin: float = 8.0
    loss: str = "shift_softmax"  # or "contrastive" (SyncNet's margin loss; stalls at a constant on our data)
    candidates: int = 8  # shift_softmax: audio windows per video window (the synced one + off-sync ones)
    min_shift: int = 2  # negatives: same clip, |shift| in [min_shift, VSHIFT], or another clip
    max_minutes: float = 14.0
    seed: int = 0


NET_PROFILES = {
    "smoke": SyncNetConfig(width=0.125, crop_size=64, crop="mouth"),
    "default": SyncNetConfig(width=0.25, crop_size=64, crop="mouth"),
    "paper": SyncNetConfig(),
}
TRAIN_PROFILES = {
    "smoke": SyncTrainConfig(net=NET_PROFILES["smoke"], profile="smoke", steps=60, batch=8, max_minutes=1.0),
    "default": SyncTrainConfig(),
    "paper": SyncTrainConfig(net=NET_PROFILES["paper"], profile="paper", steps=100000, batch=64, max_minutes=1e9),
}


# ---------------------------------------------------------------------------------------------
# MFCC (python_speech_features' defaults, numpy/scipy)


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_filters: int = 26, nfft: int = 512, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters ``[n_filters, nfft//2+1]`` (python_speech_features' construction)."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate).astype(int)
    bank = np.zeros((n_filters, nfft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(lo, mid):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(mid, hi):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def mfcc(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Waveform in [-1,1] (float) or int16 ``[N]`` -> MFCC ``[13, M]`` at 100 Hz (M = 1 + ceil((N-400)/160)).

    Other sample rates are resampled to 16 kHz first (the official model assumes 16 kHz)."""
    from scipy.fft import dct
    from scipy.signal import resample_poly

    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"mfcc: wave has shape {wave.shape}; expected a mono waveform [N]")
    signal = wave.astype(np.float64) * (32768.0 if wave.dtype.kind == "f" else 1.0)  # int16 scale
    if sample_rate != SAMPLE_RATE:
        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        signal = resample_poly(signal, SAMPLE_RATE // g, int(sample_rate) // g)
    signal = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    frame_len, frame_step, nfft = 400, 160, 512
    n = len(signal)
    n_frames = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / frame_step))
    padded = np.concatenate([signal, np.zeros((n_frames - 1) * frame_step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + frame_step * np.arange(n_frames)[:, None]
    frames = padded[idx]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    feats = power @ mel_filterbank(26, nfft, SAMPLE_RATE).T
    feats = np.log(np.where(feats == 0, np.finfo(float).eps, feats))
    ceps = dct(feats, type=2, axis=1, norm="ortho")[:, :13]
    ceps = ceps * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22.0))
    ceps[:, 0] = np.log(energy)
    return ceps.T.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# network


def _scaled(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _lip_spatial_size(crop_size: int) -> int:
    """Spatial side before the lip trunk's last conv (6 for the official 224 input)."""
    s = (crop_size - 7) // 2 + 1          # conv 7x7 stride 2
    s = (s - 3) // 2 + 1                  # maxpool 3 stride 2
    s = (s + 2 - 5) // 2 + 1              # conv 5x5 stride 2 pad 1
    s = (s + 2 - 3) // 2 + 1              # maxpool 3 stride 2 pad 1
    s = (s - 3) // 2 + 1                  # (three 3x3 pad-1 convs keep s) maxpool 3 stride 2
    if s < 1:
        raise ValueError(f"SyncNetConfig.crop_size={crop_size} is too small; expected at least 56")
    return s


class SyncNet(nn.Module):
    """The official SyncNet ``S`` (same submodule names and indices), channel widths x ``width``.

    ``forward_aud(mfcc [B,1,13,20]) -> [B,embed_dim]``; ``forward_lip(video [B,3,5,S,S]) -> [B,embed_dim]``.
    """

    def __init__(self, config: SyncNetConfig = SyncNetConfig()):
        super().__init__()
        self.config = config
        a = [_scaled(c, config.width) for c in _AUDIO_WIDTHS]
        v = [_scaled(c, config.width) for c in _LIP_WIDTHS]
        hidden = _scaled(_FC_HIDDEN, config.width)
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, a[0], 3, 1, 1), nn.BatchNorm2d(a[0]), nn.ReLU(inplace=True), nn.MaxPool2d(1, 1),
            nn.Conv2d(a[0], a[1], 3, 1, 1), nn.BatchNorm2d(a[1]), nn.ReLU(inplace=True), nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(a[1], a[2], 3, padding=1), nn.BatchNorm2d(a[2]), nn.ReLU(inplace=True),
            nn.Conv2d(a[2], a[3], 3, padding=1), nn.BatchNorm2d(a[3]), nn.ReLU(inplace=True),
            nn.Conv2d(a[3], a[4], 3, padding=1), nn.BatchNorm2d(a[4]), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(a[4], a[5], (5, 4)), nn.BatchNorm2d(a[5]), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(a[5], hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, config.embed_dim))
        self.netfclip = nn.Sequential(nn.Linear(v[5], hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, config.embed_dim))
        last = _lip_spatial_size(config.crop_size)
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, v[0], (5, 7, 7), (1, 2, 2), 0), nn.BatchNorm3d(v[0]), nn.ReLU(inplace=True), nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(v[0], v[1], (1, 5, 5), (1, 2, 2), (0, 1, 1)), nn.BatchNorm3d(v[1]), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(v[1], v[2], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[2]), nn.ReLU(inplace=True),
            nn.Conv3d(v[2], v[3], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[3]), nn.ReLU(inplace=True),
            nn.Conv3d(v[3], v[4], (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(v[4]), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(v[4], v[5], (1, last, last), padding=0), nn.BatchNorm3d(v[5]), nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


# ---------------------------------------------------------------------------------------------
# scorers


@dataclass
class SyncScores:
    """Scores of one video. ``distances`` [2*vshift+1]: mean distance per shift -vshift..+vshift
    (audio window i+shift vs video window i)."""

    lse_d: float
    lse_c: float
    offset: int
    distances: np.ndarray
    windows: int
    scorer: str
    offset_accuracy: float = math.nan  # share of windows whose nearest audio window is the synced one (chance 1/(2*vshift+1))

    def as_row(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "lse_c": self.lse_c, "lse_d": self.lse_d, "offset": self.offset,
                "offset_accuracy": self.offset_accuracy, "windows": self.windows}


class SyncScorer:
    """A SyncNet in eval mode plus its preprocessing; :meth:`score` gives :class:`SyncScores`."""

    def __init__(self, model: SyncNet, name: str, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.config = model.config
        self.name = name
        self.device = torch.device(device)

    def prepare_frames(self, images: torch.Tensor, mouth_boxes: torch.Tensor | None = None) -> torch.Tensor:
        """images [T,3,H,W] in [-1,1] (+ mouth_boxes [T,4] for ``crop='mouth'``) -> [T,3,S,S] BGR 0..255."""
        return prepare_frames(images, self.config, mouth_boxes)

    @torch.no_grad()
    def embed(self, frames: torch.Tensor, mfccs: np.ndarray, fps: float = 25.0, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [T,3,S,S] (prepared) and MFCC [13,M] -> (video [W,D], audio [W,D]) for the W windows."""
        step = mfcc_steps_per_frame(fps)
        windows = min(frames.shape[0], mfccs.shape[1] // step) - VIDEO_FRAMES
        if windows < 1:
            raise ValueError(f"sync: {frames.shape[0]} frames / {mfccs.shape[1]} MFCC steps are too short; need >= 6 frames")
        cc = torch.from_numpy(np.ascontiguousarray(mfccs)).float()
        vfeats, afeats = [], []
        for start in range(0, windows, batch):
            idx = range(start, min(windows, start + batch))
            video = torch.stack([frames[i:i + VIDEO_FRAMES] for i in idx]).permute(0, 2, 1, 3, 4)  # [b,3,5,S,S]
            audio = torch.stack([cc[:, i * step:i * step + MFCC_STEPS] for i in idx])[:, None]  # [b,1,13,20]
            vfeats.append(self.model.forward_lip(video.to(self.device)).cpu())
            afeats.append(self.model.forward_aud(audio.to(self.device)).cpu())
        return torch.cat(vfeats), torch.cat(afeats)

    def score(self, images: torch.Tensor, wave: np.ndarray, sample_rate: int = SAMPLE_RATE, fps: float = 25.0,
              mouth_boxes: torch.Tensor | None = None, vshift: int = VSHIFT, where: str = "sync") -> SyncScores:
        """A talking video: images [T,3,H,W] in [-1,1] with its waveform [N] -> :class:`SyncScores`.
        Raises :class:`SyncClipTooShort` (naming ``where``) below :data:`MIN_CLIP_FRAMES` frames."""
        check_clip_length(min(int(images.shape[0]), int(len(wave) / sample_rate * fps + 1e-6)), where, fps, vshift)
        frames = self.prepare_frames(images, mouth_boxes)
        video, audio = self.embed(frames, mfcc(wave, sample_rate), fps)
        return scores_from_distances(shift_distances(video, audio, vshift), vshift, self.name)


class SyncClipTooShort(PersonaInputError):
    """A clip too short for the offset search (see :data:`MIN_CLIP_FRAMES`)."""


def check_clip_length(frames: int, where: str = "sync", fps: float = 25.0, vshift: int = VSHIFT) -> None:
    """Raise :class:`SyncClipTooShort` when a clip of ``frames`` frames (video and audio) is too
    short for the +-``vshift`` offset search (fewer than 2*vshift+1 windows of 5 frames)."""
    need = 2 * vshift + 1 + VIDEO_FRAMES
    if frames < need:
        raise SyncClipTooShort(f"{where}: lip-sync clip of {frames} frames; expected >= {need} frames ({need / fps:.2f} s at "
                               f"{fps:g} fps): the +-{vshift}-frame offset search needs {2 * vshift + 1} windows of "
                               f"{VIDEO_FRAMES} frames, else most shifts compare padding and a black video can beat the truth")


def mfcc_steps_per_frame(fps: float) -> int:
    steps = MFCC_RATE_HZ / float(fps)
    if abs(steps - round(steps)) > 1e-6:
        raise ValueError(f"sync: fps={fps}; expected a rate dividing 100 Hz (25 fps as the official protocol)")
    return int(round(steps))


def prepare_frames(images: torch.Tensor, config: SyncNetConfig, mouth_boxes: torch.Tensor | None = None) -> torch.Tensor:
    """images [T,3,H,W] in [-1,1] -> network input frames [T,3,S,S], BGR, 0..255 (OpenCV's convention)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"sync: images have shape {tuple(images.shape)}; expected [T,3,H,W] in [-1,1]")
    images = images.detach().float().cpu()
    t, _, h, w = images.shape
    size = config.crop_size
    if config.crop == "face":
        crops = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    elif config.crop == "mouth":
        if mouth_boxes is None:
            raise ValueError("sync: crop='mouth' needs mouth_boxes [T,4] (x0,y0,x1,y1 in [0,1])")
        boxes = torch.as_tensor(mouth_boxes, dtype=torch.float32).reshape(-1, 4).expand(t, 4)
        crops = torch.stack([_crop_square(images[i], boxes[i], config.mouth_margin, size) for i in range(t)])
    else:
        raise ValueError(f"SyncNetConfig.crop={config.crop!r}; expected 'face' or 'mouth'")
    return ((crops.clamp(-1, 1) + 1) * 127.5).flip(1)  # RGB -> BGR


def _crop_square(image: torch.Tensor, box: torch.Tensor, margin: float, size: int) -> torch.Tensor:
    _, h, w = image.shape
    cx, cy = float(box[0] + box[2]) / 2 * w, float(box[1] + box[3]) / 2 * h
    side = max(float(box[2] - box[0]) * w, float(box[3] - box[1]) * h) * margin
    side = int(min(max(round(side), 4), h, w))
    x0 = int(min(max(round(cx - side / 2), 0), w - side))
    y0 = int(min(max(round(cy - side / 2), 0), h - side))
    crop = image[None, :, y0:y0 + side, x0:x0 + side]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)[0]


def shift_distances(video: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """video, audio [W,D] -> distances [W, 2*vshift+1]: |video_i - audio_{i+s}|, s = -vshift..vshift;
    audio outside the clip is a zero vector (as the official code)."""
    padded = F.pad(audio, (0, 0, vshift, vshift))
    idx = torch.arange(video.shape[0])[:, None] + torch.arange(2 * vshift + 1)[None, :]
    return F.pairwise_distance(video[:, None, :].expand(-1, 2 * vshift + 1, -1), padded[idx], eps=1e-6)


def scores_from_distances(distances: torch.Tensor, vshift: int = VSHIFT, scorer: str = SYNTHETIC_NAME) -> SyncScores:
    """Per-window distances [W, 2*vshift+1] -> LSE-D (min of the per-shift mean), offset, LSE-C (median - min)."""
    mean = distances.mean(0)
    low, argmin = torch.min(mean, 0)
    accuracy = float((distances.argmin(1) == vshift).double().mean())  # per window: is the synced audio the nearest?
    return SyncScores(lse_d=float(low), lse_c=float(torch.median(mean) - low), offset=int(vshift - int(argmin)),
                      distances=mean.numpy(), windows=int(distances.shape[0]), scorer=scorer, offset_accuracy=accuracy)


def load_official(path: str | Path, device: str = "cpu") -> SyncScorer:
    """A user's official ``syncnet_v2.model`` (torch pickle of a state dict) -> scorer named "SyncNet".

    Read with ``torch.load(weights_only=True)``: only tensors are unpickled. Names map 1:1 onto
    :class:`SyncNet` (official widths, 224x224 face crops); a missing or unexpected name, or a shape
    mismatch, is an error (``num_batches_tracked`` may be absent from old files)."""
    path = Path(path)
    state = load_torch_weights(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PersonaInputError(f"{path}: expected a state dict (syncnet_v2.model), got {type(state).__name__}")
    model = SyncNet(NET_PROFILES["paper"])
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    if unexpected or missing:
        raise PersonaInputError(f"{path}: not an official SyncNet state dict; unexpected {unexpected[:5]}, missing {missing[:5]}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise PersonaInputError(f"{path}: {name} has shape {tuple(tensor.shape)}; expected {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=False)
    return SyncScorer(model, OFFICIAL_NAME, device)


def save_expert(model: SyncNet, path: str | Path, meta: dict[str, Any]) -> None:
    save_tensors(path, model.state_dict(), {"config": asdict(model.config), **meta})


def load_synthetic_expert(path: str | Path | None = None, device: str = "cpu") -> SyncScorer:
    """The shipped synthetic lip-sync expert (or another checkpoint written by ``syncnet train``)."""
    path = Path(path) if path is not None else ASSET
    if not path.is_file():
        raise PersonaFileError(f"{path}: no synthetic lip-sync expert; create it with: python -m persona syncnet train")
    tensors, meta = load_tensors(path)
    if "config" not in meta:
        raise PersonaInputError(f"{path.with_suffix('.json')}: missing field 'config' (a SyncNetConfig)")
    try:
        model = SyncNet(SyncNetConfig(**meta["config"]))
    except TypeError as err:
        raise PersonaInputError(f"{path.with_suffix('.json')}: config: {err}; expected the fields of a SyncNetConfig") from None
    model.load_state_dict(tensors)
    return SyncScorer(model, SYNTHETIC_NAME, device)


# ---------------------------------------------------------------------------------------------
# datasets: ground-truth video and its waveform


def dataset_clip(dataset: Any, max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, int, float]:
    """A FrameDataset split (consecutive frames) -> (images [T,3,H,W], mouth_boxes [T,4], wave, rate, fps).

    The waveform is ``<root>/aud.wav`` cut to the split's frames (frame k spans [k/fps, (k+1)/fps))."""
    n = len(dataset) if max_frames is None else min(len(dataset), max_frames)
    samples = [dataset[i] for i in range(n)]
    indices = [int(s["index"]) for s in samples]
    if indices != list(range(indices[0], indices[0] + n)):
        raise ValueError(f"{dataset.root}: split {dataset.split!r} frames are not consecutive; lip-sync needs a contiguous clip")
    images = torch.stack([torch.as_tensor(s["image"]) for s in samples])
    boxes = torch.stack([torch.as_tensor(s["mouth_box"], dtype=torch.float32) for s in samples])
    from persona.data.audio import read_wav

    wave, rate = read_wav(Path(dataset.root) / "aud.wav")
    fps = float(dataset.fps)
    start = int(round(indices[0] / fps * rate))
    stop = int(round((indices[0] + n) / fps * rate))
    return images, boxes, wave[start:stop], rate, fps


def ground_truth_scores(dataset: Any, scorer: SyncScorer | None = None, max_frames: int | None = None) -> SyncScores:
    """The paper's Table 3 ground-truth row: scores of the dataset split's own video and audio."""
    scorer = scorer or load_synthetic_expert()
    images, boxes, wave, rate, fps = dataset_clip(dataset, max_frames)
    return scorer.score(images, wave, rate, fps, boxes, where=clip_name(dataset))


def score_frames(scorer: SyncScorer, images: torch.Tensor, dataset: Any) -> SyncScores:
    """Rendered frames [T,3,H,W] of a dataset split (in its order) scored against that split's audio."""
    _, boxes, wave, rate, fps = dataset_clip(dataset, images.shape[0])
    return scorer.score(images, wave, rate, fps, boxes, where=clip_name(dataset))


def clip_name(dataset: Any) -> str:
    """``<root>/aud.wav (<split> split)``: how errors name a dataset's clip."""
    return f"{Path(getattr(dataset, 'root', '.')) / 'aud.wav'} ({getattr(dataset, 'split', '?')} split)"


REFERENCE_ROWS = ("ground truth", "frozen frame", "audio from another clip", "black video")


def reference_scores(dataset: Any, other: Any | None, scorer: SyncScorer | None = None) -> Any:
    """The floor and ceiling of the lip-sync column for one test clip, as rows of a DataFrame
    (``method`` in :data:`REFERENCE_ROWS`, then :meth:`SyncScores.as_row`'s columns):

    - ``ground truth``: the clip's video and audio;
    - ``frozen frame``: the clip's first frame held for the whole clip, with its audio;
    - ``audio from another clip``: the clip's video with ``other``'s audio (a FrameDataset split of
      at least as many frames, e.g. another identity's test clip), cut to the same length (no
      such row when ``other`` is None);
    - ``black video``: an all-black video with the clip's audio.
    A method's score means something only well above the last three."""
    import pandas as pd

    scorer = scorer or load_synthetic_expert()
    images, boxes, wave, rate, fps = dataset_clip(dataset)
    n, where = images.shape[0], clip_name(dataset)
    videos = {"ground truth": (images, wave), "frozen frame": (images[:1].expand_as(images).clone(), wave)}
    if other is not None:
        if len(other) < n:
            raise PersonaInputError(f"{clip_name(other)}: {len(other)} frames; expected >= {n} (the length of {where}) "
                                    "for the 'audio from another clip' reference")
        _, _, other_wave, other_rate, other_fps = dataset_clip(other, n)
        if other_rate != rate or other_fps != fps:
            raise PersonaInputError(f"{clip_name(other)}: {other_rate} Hz / {other_fps:g} fps; expected {rate} Hz / {fps:g} fps like {where}")
        videos["audio from another clip"] = (images, other_wave[:len(wave)])
    videos["black video"] = (torch.full_like(images, -1.0), wave)
    return pd.DataFrame([{"method": name, **scorer.score(video, audio, rate, fps, boxes, where=where).as_row()}
                         for name, (video, audio) in videos.items()])


def shift_wave(wave: np.ndarray, frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """Advance the audio by ``frames`` video frames (positive: the sound comes earlier; the end is
    zero-padded; negative delays it). A synced clip so shifted scores ``offset == frames``."""
    n = int(round(abs(frames) * sample_rate / fps))
    if frames >= 0:
        return np.concatenate([wave[n:], np.zeros(n)])
    return np.concatenate([np.zeros(n), wave[:len(wave) - n]])


# ---------------------------------------------------------------------------------------------
# training the synthetic expert


@dataclass
class Clip:
    """One talking clip ready for training: frames [T,3,S,S] uint8 (BGR) and MFCC [13,M]."""

    frames: torch.Tensor
    mfccs: torch.Tensor
    step: int

    @property
    def windows(self) -> int:
        return min(self.frames.shape[0], self.mfccs.shape[1] // self.step) - VIDEO_FRAMES

    def video(self, i: int) -> torch.Tensor:
        return self.frames[i:i + VIDEO_FRAMES].float().permute(1, 0, 2, 3)  # [3,5,S,S]

    def audio(self, i: int) -> torch.Tensor:
        return self.mfccs[None, :, i * self.step:i * self.step + MFCC_STEPS]  # [1,13,20]


def clip_from_dataset(dataset: Any, config: SyncNetConfig) -> Clip:
    images, boxes, wave, rate, fps = dataset_clip(dataset)
    frames = prepare_frames(images, config, boxes).round().clamp(0, 255).to(torch.uint8)
    return Clip(frames, torch.from_numpy(mfcc(wave, rate)), mfcc_steps_per_frame(fps))


def training_clips(data_root: str | Path, config: SyncNetConfig, splits: Sequence[str] = ("train", "val")) -> list[Clip]:
    """Every ``id*/audio`` talking video of a benchmark folder, the given splits (never test)."""
    from persona.data.dataset import FrameDataset

    roots = sorted(Path(data_root).glob("id*/audio"))
    if not roots:
        raise FileNotFoundError(f"{data_root}: no id*/audio talking videos; build the benchmark first (python -m persona data build)")
    clips = []
    for root in roots:
        for split in splits:
            if (root / f"transforms_{split}.json").is_file():
                clips.append(clip_from_dataset(FrameDataset(root, split=split), config))
    return clips


def _sample_batch(clips: list[Clip], batch: int, min_shift: int, rng: np.random.Generator):
    """Half synced pairs, half off-sync pairs (same clip shifted by >= min_shift frames, or another clip)."""
    videos, audios, labels = [], [], []
    for k in range(batch):
        c = clips[rng.integers(len(clips))]
        i = int(rng.integers(c.windows))
        videos.append(c.video(i))
        if k % 2 == 0:
            audios.append(c.audio(i))
            labels.append(1.0)
            continue
        if len(clips) > 1 and rng.random() < 0.25:
            other = clips[rng.integers(len(clips))]
            audios.append(other.audio(int(rng.integers(other.windows))))
        else:
            candidates = [j for j in range(max(0, i - VSHIFT), min(c.windows, i + VSHIFT + 1)) if abs(j - i) >= min_shift]
            audios.append(c.audio(int(rng.choice(candidates))))
        labels.append(0.0)
    return torch.stack(videos), torch.stack(audios), torch.tensor(labels)


def contrastive_loss(video: torch.Tensor, audio: torch.Tensor, synced: torch.Tensor, margin: float) -> torch.Tensor:
    """SyncNet's loss: synced pairs pulled together (d^2), off-sync pairs pushed past ``margin``."""
    d = F.pairwise_distance(video, audio, eps=1e-6)
    return (synced * d.square() + (1 - synced) * F.relu(margin - d).square()).mean()


def _sample_shift_batch(clips: list[Clip], batch: int, candidates: int, min_shift: int, rng: np.random.Generator):
    """Video windows [B,3,5,S,S] and, per window, audio [B,K,1,13,20]: index 0 synced, the rest off by >= min_shift."""
    videos, audios = [], []
    for _ in range(batch):
        c = clips[rng.integers(len(clips))]
        i = int(rng.integers(c.windows))
        pool = [j for j in range(max(0, i - VSHIFT), min(c.windows, i + VSHIFT + 1)) if abs(j - i) >= min_shift]
        others = rng.choice(pool, size=candidates - 1, replace=len(pool) < candidates - 1)
        videos.append(c.video(i))
        audios.append(torch.stack([c.audio(i)] + [c.audio(int(j)) for j in others]))
    return torch.stack(videos), torch.stack(audios)


def shift_softmax_loss(model: SyncNet, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over candidate audio windows with logits = -distance: the synced one (index 0)
    must be the nearest, which is what LSE-D / the offset search measure."""
    b, k = audio.shape[:2]
    v = model.forward_lip(video)
    a = model.forward_aud(audio.flatten(0, 1)).view(b, k, -1)
    d = F.pairwise_distance(v[:, None].expand(-1, k, -1), a, eps=1e-6)
    return F.cross_entropy(-d, torch.zeros(b, dtype=torch.long))


def train_expert(clips: list[Clip], config: SyncTrainConfig, progress: bool = True, run: RunDir | None = None,
                 checkpoint_every: int = 250, data: str = "") -> tuple[SyncNet, dict[str, Any]]:
    """Train a SyncNet contrastively on clips; stops after ``steps`` or ``max_minutes`` (of
    training, over all resumes). With ``run``: checkpoints every ``checkpoint_every`` steps (and
    at the end) and resumes from the newest one, continuing exactly as an uninterrupted run (the
    batch sampler's numpy state and torch's random state are in the checkpoint)."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = SyncNet(config.net)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    losses: list[float] = []
    first, seconds = 0, 0.0
    if run is not None:
        run.begin(run_record("syncnet", asdict(config), data=data))
        first, path = run.resume_point()
        if path is not None:
            tensors, meta = load_tensors(path)
            model.load_state_dict(unprefixed("model", tensors))
            restore_training_state(tensors, meta, optimizer, str(path))
            rng.bit_generator.state = meta["numpy_rng"]
            losses, seconds = tensors["losses"].tolist(), float(meta["seconds"])
    start, step = time.time() - seconds, first - 1
    bar = tqdm(range(first, config.steps), desc="syncnet train", disable=not progress, initial=first, total=config.steps)
    for step in bar:
        if config.loss == "shift_softmax":
            video, audio = _sample_shift_batch(clips, config.batch, config.candidates, config.min_shift, rng)
            loss = shift_softmax_loss(model, video, audio)
        else:
            video, audio, synced = _sample_batch(clips, config.batch, config.min_shift, rng)
            loss = contrastive_loss(model.forward_lip(video), model.forward_aud(audio), synced, config.margin)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if run is not None:
            run.log(step + 1, loss=losses[-1])
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        out_of_time = time.time() - start > config.max_minutes * 60
        if run is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == config.steps or out_of_time):
            state, meta = training_state(optimizer)
            run.save_checkpoint(step + 1, {**prefixed("model", model.state_dict()), **state,
                                           "losses": torch.tensor(losses, dtype=torch.float64)},
                                {**meta, "numpy_rng": rng.bit_generator.state, "seconds": time.time() - start})
        if out_of_time:
            break
    model.eval()
    return model, {"steps_done": step + 1, "seconds": round(time.time() - start, 1),
                   "loss_first_50": float(np.mean(losses[:50])), "loss_last_50": float(np.mean(losses[-50:]))}


def main_train(argv: list[str]) -> int:
    """``python -m persona syncnet train [--profile default] [--data DIR] [--out PATH] [--seed 0] [--max-minutes M]``."""
    from persona import cli
    from persona.notebooks import REPO_ROOT

    parser = cli.parser("syncnet train", "Train the synthetic lip-sync expert.")
    parser.add_argument("--profile", default="default", choices=sorted(TRAIN_PROFILES), help="sizes and steps")
    parser.add_argument("--data", help="benchmark folder (None: data/synthetic/<profile> of this checkout; built if missing)")
    parser.add_argument("--out", default=str(ASSET), help="where the expert's weights go (.safetensors)")
    parser.add_argument("--seed", type=flag_int(0), help="training seed (None: the profile's)")
    cli.add_steps(parser, "training steps (None: the profile's)")
    parser.add_argument("--max-minutes", type=flag_number(0, lo_open=True), help="stop after this long (None: no limit)")
    parser.add_argument("--threads", type=flag_int(1, 1024), default=1, help="torch CPU threads")
    parser.add_argument("--source", choices=["benchmark", "direct"], default="benchmark",
                        help="training clips: the benchmark's id*/audio train+val splits, or clips rendered directly")
    parser.add_argument("--clips", type=flag_int(1, 10000), default=8, help="--source direct: number of identities (10 s each)")
    parser.add_argument("--run", help="checkpoint folder, resumed when it holds checkpoints of the same settings "
                                      "(default runs/syncnet_<profile>_<source>)")
    parser.add_argument("--force", action="store_true", help="start over: delete the checkpoints persona wrote in --run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = for_profile(TRAIN_PROFILES, args.profile, seed=args.seed, steps=args.steps, max_minutes=args.max_minutes)
    data = Path(args.data or REPO_ROOT / "data" / "synthetic" / config.profile)
    if args.source == "direct":
        clips = direct_clips(args.clips, 10.0, config.net, seed=config.seed)
        data = f"direct: {args.clips} clips x 10 s, identities {config.seed + 1000}.., the benchmark's speech model, 64 px frontal"
    else:
        if not any(data.glob("id*/audio")):
            from persona.data.world import build_benchmark

            print(f"building the {config.profile} benchmark in {data}")
            build_benchmark(data, config.profile, seed=0)
        clips = training_clips(data, config.net)
    print(f"{len(clips)} clips, {sum(c.windows for c in clips)} windows")
    run = RunDir(args.run or REPO_ROOT / "runs" / f"syncnet_{config.profile}_{args.source}")
    if args.force:
        run.clear()
    model, log = train_expert(clips, config, run=run, data=str(data))
    meta = {"name": SYNTHETIC_NAME, "train": asdict(config), "data": str(data), "log": log,
            "command": f"python -m persona syncnet train --profile {args.profile} --seed {config.seed}"
                       f" --steps {log['steps_done']} --max-minutes 1e9 --threads {args.threads} --source {args.source}"
                       + (f" --clips {args.clips}" if args.source == "direct" else "")}
    save_expert(model, args.out, meta)
    print(json.dumps(log))
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------
# fallback training data: talking clips made directly with the synthetic renderer
# (used when the benchmark's data module is not available; documented in the checkpoint's meta)

def render_talking_clip(identity_seed: int, seconds: float, resolution: int = 64,
                        fps: float = 25.0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """One synced talking clip of the synthetic world, made exactly as the benchmark's audio videos
    (:func:`persona.data.world.make_video`: fixed frontal camera, speech-driven mouth):
    (images [T,3,R,R] in [-1,1], mouth boxes [T,4], waveform [N] at 16 kHz)."""
    from persona.data import world

    video = world.make_video(int(round(seconds * fps)), fps, identity_seed, moving_head=False)
    identity = world.sample_identity(identity_seed)
    expr = torch.as_tensor(video.expressions, dtype=torch.float32)
    cams = torch.as_tensor(video.cameras, dtype=torch.float32)
    images = torch.cat([world.render_batch([identity] * len(e), e, c, resolution)
                        for e, c in zip(expr.split(64), cams.split(64))])
    boxes = world.mouth_boxes([identity] * len(expr), expr, cams)
    return images, boxes, np.asarray(video.waveform, dtype=np.float64)


def direct_clips(count: int, seconds: float, config: SyncNetConfig, resolution: int = 64, seed: int = 0,
                 fps: float = 25.0) -> list[Clip]:
    """Training clips rendered directly (fixed frontal camera, identities ``seed + 1000 + k``)."""
    from tqdm import tqdm

    clips = []
    for k in tqdm(range(count), desc="render talking clips"):
        images, boxes, wave = render_talking_clip(seed + 1000 + k, seconds, resolution, fps)
        frames = prepare_frames(images, config, boxes).round().clamp(0, 255).to(torch.uint8)
        clips.append(Clip(frames, torch.from_numpy(mfcc(wave)), mfcc_steps_per_frame(fps)))
    return clips
