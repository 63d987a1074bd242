"""Talking-head video trajectories of the synthetic world: expressions, head poses and speech."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from persona import cameras
from persona.data.world.expression import (BLINK, BROW_FROWN, BROW_RAISE, EXPRESSION_DIM, JAW_OPEN, JAW_SIDE, LIP_ROUND,
                                           LIP_STRETCH, NUM_LARGE, SMILE)

def ou_process(n: int, std: float, tau_frames: float, rng: np.random.Generator, mean: float = 0.0) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck samples [n] (smooth random wander)."""
    a = math.exp(-1.0 / max(tau_frames, 1e-6))
    x = np.empty(n)
    x[0] = rng.normal(0, std)
    noise = rng.normal(0, std * math.sqrt(1 - a * a), n)
    for i in range(1, n):
        x[i] = a * x[i - 1] + noise[i]
    return x + mean


@dataclass
class Video:
    """A talking-head video's ground truth: expressions [N,76], cameras [N,25], 16 kHz waveform."""

    expressions: np.ndarray
    cameras: np.ndarray
    waveform: np.ndarray
    fps: float


def make_video(n_frames: int, fps: float, seed: int, moving_head: bool) -> Video:
    """Speech-driven mouth (in sync with the waveform), blinks, smiles, brows, small dims; the
    head wanders (yaw/pitch/roll) when ``moving_head``, else the camera is fixed and frontal."""
    from persona.data import audio

    rng = np.random.default_rng([int(seed), 313])
    seconds = n_frames / fps
    track = audio.speech_track(seconds, seed=int(seed))
    wave_ = audio.synthesize(track, seed=int(seed))
    mouth = audio.mouth_at(track, n_frames, fps)
    e = np.zeros((n_frames, EXPRESSION_DIM))
    for d in range(NUM_LARGE, EXPRESSION_DIM):
        e[:, d] = ou_process(n_frames, 0.5, fps * 1.0, rng)
    e[:, JAW_OPEN] = mouth["jaw"]
    e[:, LIP_ROUND] = mouth["round"]
    e[:, LIP_STRETCH] = 0.6 * mouth["stretch"] + ou_process(n_frames, 0.15, fps * 2, rng)
    expressive = 1.0 if moving_head else 0.5
    e[:, SMILE] = np.clip(ou_process(n_frames, 0.45 * expressive, fps * 2.5, rng, mean=0.1), -0.3, 1.0)
    e[:, BROW_RAISE] = np.clip(ou_process(n_frames, 0.4 * expressive, fps * 1.5, rng), -1, 1)
    e[:, BROW_FROWN] = np.clip(ou_process(n_frames, 0.3 * expressive, fps * 2.0, rng), 0, 1)
    e[:, JAW_SIDE] = ou_process(n_frames, 0.12, fps * 1.0, rng)
    blink = np.zeros(n_frames)
    t = rng.uniform(0.3, 2.0)
    while t < seconds:
        centre = t * fps
        blink = np.maximum(blink, np.clip(1 - np.abs(np.arange(n_frames) - centre) / (0.09 * fps), 0, 1))
        t += rng.uniform(1.5, 4.5)
    e[:, BLINK] = blink
    if moving_head:
        yaw = np.clip(ou_process(n_frames, 12.0, fps * 2.0, rng), -30, 30)
        pitch = np.clip(ou_process(n_frames, 5.0, fps * 2.0, rng), -15, 15)
        roll = np.clip(ou_process(n_frames, 3.0, fps * 2.0, rng), -8, 8)
        cams = np.stack([cameras.camera_with_roll(y, p, r) for y, p, r in zip(yaw, pitch, roll)])
    else:
        cams = np.repeat(cameras.camera_label(0.0, 0.0)[None], n_frames, axis=0)
    return Video(e.astype(np.float32), cams.astype(np.float32), wave_, float(fps))
