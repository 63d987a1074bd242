"""Identities of the synthetic world (:class:`Identity`, :func:`sample_identity`) and the prior pool.

Identities differ in what a generic prior cannot guess: head, face, jaw, nose, ear shape, skin /
hair / eye / lip colour, hairline, glasses, teeth and tongue colour, background. The prior pool
(the FFHQ stand-in's identities) starts at :data:`PRIOR_POOL_OFFSET`, disjoint from the benchmark's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

# Seeds of the prior pool start here so benchmark identities (small seeds) are never in it.
PRIOR_POOL_OFFSET = 1_000_000
PRIOR_POOL_SIZE = 100_000


@dataclass(frozen=True)
class Identity:
    """Shape, colour and accessory parameters of one synthetic person (all plain floats)."""

    seed: int
    # shape multipliers (1 = average)
    head_width: float = 1.0
    head_height: float = 1.0
    head_depth: float = 1.0
    face_width: float = 1.0
    jaw_width: float = 1.0
    chin_length: float = 1.0
    nose_length: float = 1.0
    nose_width: float = 1.0
    nose_protrusion: float = 1.0
    ear_size: float = 1.0
    ear_protrusion: float = 0.5
    eye_spacing: float = 1.0
    # colours, RGB in [0,1]
    skin: tuple[float, float, float] = (0.85, 0.66, 0.55)
    hair: tuple[float, float, float] = (0.25, 0.16, 0.1)
    iris: tuple[float, float, float] = (0.35, 0.22, 0.12)
    brow: tuple[float, float, float] = (0.2, 0.13, 0.08)
    lips: tuple[float, float, float] = (0.75, 0.38, 0.38)
    teeth: tuple[float, float, float] = (0.93, 0.9, 0.82)
    tongue: tuple[float, float, float] = (0.85, 0.42, 0.45)
    cavity: tuple[float, float, float] = (0.22, 0.05, 0.06)
    background_top: tuple[float, float, float] = (0.6, 0.65, 0.7)
    background_bottom: tuple[float, float, float] = (0.4, 0.42, 0.45)
    # hair: volume 0 = bald; hairline in the hair shell's local y at the front / back
    hair_volume: float = 1.0
    hairline_front: float = 0.45
    hairline_back: float = -0.55
    brow_thickness: float = 1.0
    # glasses
    glasses: bool = False
    glasses_rim: tuple[float, float, float] = (0.1, 0.1, 0.1)
    glasses_size: float = 1.0
    glasses_tint: float = 0.15
    hair_length: float = 0.0   # 0 = short; up to 1 = shoulder length
    shoulder_width: float = 1.0
    shirt: tuple[float, float, float] = (0.3, 0.35, 0.5)


_SKIN_TONES = np.array([[0.96, 0.8, 0.69], [0.9, 0.7, 0.57], [0.78, 0.57, 0.42], [0.6, 0.42, 0.3],
                        [0.42, 0.28, 0.19], [0.3, 0.2, 0.14]])
_HAIR_COLOURS = np.array([[0.06, 0.05, 0.05], [0.2, 0.12, 0.07], [0.38, 0.24, 0.13], [0.75, 0.6, 0.35],
                          [0.55, 0.22, 0.08], [0.6, 0.6, 0.6], [0.88, 0.85, 0.8]])
_IRIS_COLOURS = np.array([[0.3, 0.18, 0.08], [0.18, 0.1, 0.05], [0.25, 0.45, 0.7], [0.3, 0.5, 0.3],
                          [0.5, 0.55, 0.6]])


def sample_identity(seed: int) -> Identity:
    """A random identity, a pure function of ``seed``."""
    rng = np.random.default_rng([int(seed), 7919])

    def u(lo: float, hi: float) -> float:
        return float(rng.uniform(lo, hi))

    def jitter(colour: np.ndarray, amount: float) -> tuple[float, float, float]:
        c = np.clip(colour * (1 + rng.normal(0, amount, 3)), 0, 1)
        return tuple(float(v) for v in c)

    tone = rng.uniform(0, len(_SKIN_TONES) - 1)
    lo = int(math.floor(tone))
    skin = _SKIN_TONES[lo] + (tone - lo) * (_SKIN_TONES[min(lo + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[lo])
    skin_t = jitter(skin, 0.04)
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]
    hair_t = jitter(hair, 0.08)
    iris_t = jitter(_IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))], 0.1)
    brow = np.minimum(np.asarray(hair_t) * 0.8 + 0.02, np.asarray(skin_t) * 0.5)
    lips = np.clip(np.asarray(skin_t) * np.array([0.95, 0.62, 0.62]) + np.array([0.05, 0.0, 0.02]) * u(0, 1), 0, 1)
    bg_base = rng.uniform(0.12, 0.9, 3)
    bg_base = 0.55 * bg_base + 0.45 * bg_base.mean()
    bald = rng.uniform() < 0.08
    glasses = bool(rng.uniform() < 0.35)
    rim = np.array([[0.08, 0.08, 0.08], [0.45, 0.3, 0.15], [0.7, 0.7, 0.72], [0.5, 0.1, 0.1]])[rng.integers(4)]
    return Identity(
        seed=int(seed),
        head_width=u(0.9, 1.1), head_height=u(0.93, 1.07), head_depth=u(0.92, 1.08),
        face_width=u(0.88, 1.12), jaw_width=u(0.82, 1.18), chin_length=u(0.8, 1.2),
        nose_length=u(0.8, 1.25), nose_width=u(0.75, 1.35), nose_protrusion=u(0.75, 1.35),
        ear_size=u(0.8, 1.25), ear_protrusion=u(0.0, 1.0), eye_spacing=u(0.92, 1.08),
        skin=skin_t, hair=hair_t, iris=iris_t,
        brow=tuple(float(v) for v in brow),
        lips=tuple(float(v) for v in lips),
        teeth=jitter(np.array([0.93, 0.9, 0.8]), 0.05),
        tongue=jitter(np.array([0.82, 0.4, 0.45]), 0.1),
        cavity=jitter(np.array([0.25, 0.06, 0.07]), 0.3),
        background_top=tuple(float(v) for v in np.clip(bg_base + rng.normal(0, 0.08, 3), 0, 1)),
        background_bottom=tuple(float(v) for v in np.clip(bg_base * u(0.55, 0.95), 0, 1)),
        hair_volume=0.0 if bald else u(0.9, 1.25),
        hairline_front=u(0.3, 0.65), hairline_back=u(-0.9, -0.35),
        brow_thickness=u(0.7, 1.4),
        glasses=glasses, glasses_rim=tuple(float(v) for v in rim), glasses_size=u(0.85, 1.15),
        glasses_tint=u(0.05, 0.35),
        hair_length=u(0.3, 1.0) if rng.uniform() < 0.35 else 0.0,
        shoulder_width=u(0.85, 1.15),
        shirt=tuple(float(c) for c in rng.uniform(0.05, 0.85, 3)),
    )


_FIELDS = [f.name for f in fields(Identity) if f.name not in ("seed",)]


def _pack_identities(identities: Sequence[Identity]) -> dict[str, torch.Tensor]:
    """Identity fields stacked to float32 tensors: scalars [B], colours [B,3]."""
    out = {}
    for name in _FIELDS:
        values = [getattr(ident, name) for ident in identities]
        out[name] = torch.tensor(np.asarray(values, dtype=np.float32))
    return out


def _identity_vector(identity: Identity) -> np.ndarray:
    """All packed fields of one identity, flattened [D] (layout of _FIELD_SLICES)."""
    return np.concatenate([np.atleast_1d(np.asarray(getattr(identity, n), np.float32)) for n in _FIELDS])


_FIELD_SLICES: dict[str, slice] = {}
_offset = 0
for _name in _FIELDS:
    _width = 3 if isinstance(getattr(Identity(seed=0), _name), tuple) else 1
    _FIELD_SLICES[_name] = slice(_offset, _offset + _width)
    _offset += _width
del _offset, _name, _width


@lru_cache(maxsize=None)
def _pool_vector(index: int) -> np.ndarray:
    return _identity_vector(sample_identity(PRIOR_POOL_OFFSET + int(index)))


def _prior_identities(indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Packed identities of prior-pool members (seed PRIOR_POOL_OFFSET + index), cached per index."""
    rows = torch.from_numpy(np.stack([_pool_vector(int(i)) for i in indices]))
    return {n: (rows[:, sl] if sl.stop - sl.start > 1 else rows[:, sl.start]) for n, sl in _FIELD_SLICES.items()}
