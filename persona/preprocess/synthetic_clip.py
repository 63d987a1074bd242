"""A synthetic talking-head mp4 with known cameras, expressions and audio: ground truth for
``persona preprocess`` (tests, notebook 06, benchmark).

The synthetic world's talking video (:func:`persona.data.world.make_video`: speech-driven
mouth, blinks, smiles, brows, audio in sync) rendered along a head-pose sweep (yaw and pitch
sinusoids of different periods, small roll) and encoded with its audio by ffmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from persona.data.formats import unit_to_uint8
from persona.preprocess.decode import write_mp4


@dataclass
class ClipTruth:
    """Ground truth of :func:`write_clip`: ``cameras`` [N,25], ``expressions`` [N,76],
    ``controls`` [N,12] (the world's face controls: mouth_open, mouth_width, pucker, corner_up,
    brow_up, lid, ...), ``waveform`` 16 kHz [T], ``fps``."""

    cameras: np.ndarray
    expressions: np.ndarray
    controls: np.ndarray
    waveform: np.ndarray
    fps: float


def sweep_cameras(n: int, yaw_deg: float = 30.0, pitch_deg: float = 20.0, roll_deg: float = 4.0) -> np.ndarray:
    """[n,25] cameras sweeping yaw (one period), pitch (1.6 periods) and roll (0.7 periods)."""
    from persona.cameras import camera_with_roll

    t = np.arange(n) / max(n, 1)
    yaw = yaw_deg * np.sin(2 * np.pi * t)
    pitch = pitch_deg * np.sin(2 * np.pi * 1.6 * t + 0.5)
    roll = roll_deg * np.sin(2 * np.pi * 0.7 * t + 1.0)
    return np.stack([camera_with_roll(a, b, c) for a, b, c in zip(yaw, pitch, roll)]).astype(np.float32)


def clip_truth(n_frames: int = 50, fps: float = 25.0, seed: int = 0, yaw_deg: float = 30.0,
               pitch_deg: float = 20.0, roll_deg: float = 4.0) -> ClipTruth:
    """The ground truth of :func:`write_clip` with the same arguments, without rendering."""
    from persona.data import world as S

    video = S.make_video(n_frames, fps, seed, moving_head=True)
    cams = sweep_cameras(n_frames, yaw_deg, pitch_deg, roll_deg)
    controls = S.expression_controls(torch.from_numpy(video.expressions)).numpy()
    return ClipTruth(cams, video.expressions, controls, video.waveform, float(fps))


def write_clip(path: str | Path, n_frames: int = 50, resolution: int = 192, fps: float = 25.0, seed: int = 0,
               identity_seed: int = 1, yaw_deg: float = 30.0, pitch_deg: float = 20.0, roll_deg: float = 4.0,
               audio: bool = True, batch: int = 16) -> ClipTruth:
    """Render a talking clip to ``path`` (mp4, with its audio unless ``audio`` is False)."""
    from persona.data import world as S

    truth = clip_truth(n_frames, fps, seed, yaw_deg, pitch_deg, roll_deg)
    cams = truth.cameras
    ident = S.sample_identity(identity_seed)
    frames = []
    for i in range(0, n_frames, batch):
        e = torch.from_numpy(truth.expressions[i:i + batch])
        img = S.render_batch([ident] * len(e), e, torch.from_numpy(cams[i:i + batch]), resolution)
        frames.append(unit_to_uint8(img.permute(0, 2, 3, 1)))
    write_mp4(path, np.concatenate(frames), fps, truth.waveform if audio else None)
    return truth
