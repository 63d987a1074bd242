"""The synthetic talking-head world: procedural 3D heads with ground truth, rendered fast on a CPU.

A head is a handful of analytic primitives in EG3D's world frame (y up, face toward +z, near
the pivot (0, 0, 0.2); see :mod:`persona.cameras`):

* axis-aligned ellipsoids: cranium, face, jaw (drops when the mouth opens), nose, two ears, neck,
  two eyeballs, and a hair shell clipped along an identity-specific hairline;
* optional glasses: rims, bridge and temples on planes, tinted lenses.

Rays are cast in batched torch against all primitives at once (closed-form quadric roots), the
nearest hit is shaded with Lambert + ambient light, and facial detail is texture painted in
head-local coordinates: brows, eye sockets, lips, the mouth opening with teeth, tongue and a dark
cavity, nostrils, iris, pupil and eyelids (blink). Anti-aliasing: ``supersample`` x
``supersample`` samples per pixel (box filtered) plus texture edges smoothed over a pixel.

Expressions are a blendshape-like linear model: a fixed matrix maps the 76-d coefficient vector
(NerFACE's dimension) to a dozen face controls; eight dimensions have large visible effects
(:data:`JAW_OPEN`, :data:`LIP_STRETCH`, :data:`LIP_ROUND`, :data:`SMILE`, :data:`BROW_RAISE`,
:data:`BLINK`, :data:`BROW_FROWN`, :data:`JAW_SIDE`), the other 68 small ones (gaze, small mouth
and brow changes).

Identities (:class:`Identity`, :func:`sample_identity`) differ in what a generic prior cannot
guess: head, face, jaw, nose, ear shape, skin / hair / eye / lip colour, hairline, glasses, teeth
and tongue colour, background.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from persona import cameras

EXPRESSION_DIM = 76

# Large-effect expression dimensions (indices into the 76-d vector).
JAW_OPEN = 0
LIP_STRETCH = 1
LIP_ROUND = 2
SMILE = 3
BROW_RAISE = 4
BLINK = 5
BROW_FROWN = 6
JAW_SIDE = 7
LARGE_DIMS = {"JAW_OPEN": JAW_OPEN, "LIP_STRETCH": LIP_STRETCH, "LIP_ROUND": LIP_ROUND, "SMILE": SMILE,
              "BROW_RAISE": BROW_RAISE, "BLINK": BLINK, "BROW_FROWN": BROW_FROWN, "JAW_SIDE": JAW_SIDE}
NUM_LARGE = len(LARGE_DIMS)

# Face controls driven linearly by the expression (see _expression_matrix).
_CONTROLS = ("mouth_open", "mouth_width", "pucker", "corner_up", "brow_up", "lid", "frown", "jaw_x",
             "gaze_x", "gaze_y", "cheek", "lip_press")
NUM_CONTROLS = len(_CONTROLS)
_C = {name: i for i, name in enumerate(_CONTROLS)}

SHAPE_DIM = 12  # shape coefficients of morphable_mesh (standardised identity shape parameters)

# Seeds of the prior pool start here so benchmark identities (small seeds) are never in it.
PRIOR_POOL_OFFSET = 1_000_000
PRIOR_POOL_SIZE = 100_000

# The head model is authored in "model space"; world = HEAD_SCALE * model (about the origin), a
# size at which the head fills an FFHQ-like crop at radius 2.7, focal 4.2647.
HEAD_SCALE = 1.12


# ============================================================================= identities
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


# ============================================================================= expressions
@lru_cache(maxsize=1)
def _expression_matrix() -> torch.Tensor:
    """Fixed linear map [NUM_CONTROLS, 76] from expression coefficients to face controls."""
    rng = np.random.default_rng(20230224)
    a = np.zeros((NUM_CONTROLS, EXPRESSION_DIM))
    a[_C["mouth_open"], JAW_OPEN] = 1.0
    a[_C["mouth_width"], LIP_STRETCH] = 1.0
    a[_C["mouth_width"], LIP_ROUND] = -0.6
    a[_C["mouth_width"], SMILE] = 0.5
    a[_C["pucker"], LIP_ROUND] = 1.0
    a[_C["corner_up"], SMILE] = 1.0
    a[_C["brow_up"], BROW_RAISE] = 1.0
    a[_C["lid"], BLINK] = 1.0
    a[_C["lid"], SMILE] = 0.12
    a[_C["frown"], BROW_FROWN] = 1.0
    a[_C["jaw_x"], JAW_SIDE] = 1.0
    a[_C["cheek"], SMILE] = 0.6
    small = rng.normal(0.0, 0.035, (NUM_CONTROLS, EXPRESSION_DIM - NUM_LARGE))
    small[_C["gaze_x"]] *= 4.0
    small[_C["gaze_y"]] *= 4.0
    small[_C["lip_press"]] *= 3.0
    a[:, NUM_LARGE:] = small
    return torch.tensor(a, dtype=torch.float32)


def expression_controls(expressions: torch.Tensor) -> torch.Tensor:
    """[B,76] coefficients -> [B,NUM_CONTROLS] face controls (linear, then clamped to ranges)."""
    c = expressions.float() @ _expression_matrix().T
    lo = torch.tensor([0, -1, 0, -1, -1, 0, -0.5, -1, -1, -1, -0.5, -1.0])
    hi = torch.tensor([1.2, 1.2, 1.2, 1.2, 1.2, 1.0, 1.2, 1, 1, 1, 1.2, 1.0])
    return torch.maximum(torch.minimum(c, hi), lo)


def sample_expressions(batch: int, generator: torch.Generator | None = None, small_scale: float = 1.0) -> torch.Tensor:
    """Random expressions [B,76]: varied large dims (open mouths, smiles, blinks...) + small dims."""
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    e = torch.randn(batch, EXPRESSION_DIM, generator=g) * 0.5 * small_scale
    e[:, JAW_OPEN] = rand(batch) ** 1.5 * (rand(batch) < 0.75)
    e[:, LIP_STRETCH] = (rand(batch) * 2 - 1) * 0.8
    e[:, LIP_ROUND] = rand(batch) * (rand(batch) < 0.3)
    e[:, SMILE] = (rand(batch) * 1.6 - 0.5) * (rand(batch) < 0.6)
    e[:, BROW_RAISE] = (rand(batch) * 2 - 1) * (rand(batch) < 0.5)
    e[:, BLINK] = torch.where(rand(batch) < 0.15, torch.ones(batch), rand(batch) * 0.3)
    e[:, BROW_FROWN] = rand(batch) * (rand(batch) < 0.25)
    e[:, JAW_SIDE] = (rand(batch) * 2 - 1) * 0.5 * (rand(batch) < 0.3)
    return e


# ============================================================================= geometry
# Ellipsoid slots and their materials.
(_E_CRANIUM, _E_FACE, _E_JAW, _E_NOSE, _E_EAR_L, _E_EAR_R, _E_NECK, _E_EYE_L, _E_EYE_R, _E_HAIR, _E_LONG_HAIR,
 _E_TORSO) = range(12)
NUM_ELLIPSOIDS = 12
_M_SKIN, _M_EYE, _M_HAIR, _M_CLOTH = 0, 1, 2, 3
_MATERIAL = torch.tensor([_M_SKIN] * 7 + [_M_EYE, _M_EYE, _M_HAIR, _M_HAIR, _M_CLOTH])


def _col(x: torch.Tensor) -> torch.Tensor:
    return x[:, None]


def _scene(ident: dict[str, torch.Tensor], ctrl: torch.Tensor) -> dict[str, torch.Tensor]:
    """Primitive parameters of a batch: ellipsoid centres/radii [B,E,3] and feature anchors."""
    b = ctrl.shape[0]
    hw, hh, hd = ident["head_width"], ident["head_height"], ident["head_depth"]
    fw, jw, cl = ident["face_width"], ident["jaw_width"], ident["chin_length"]
    opening = ctrl[:, _C["mouth_open"]]
    drop = 0.04 * opening  # how far the jaw and lower lip move down
    jaw_x = 0.008 * ctrl[:, _C["jaw_x"]]
    zeros = torch.zeros(b)

    def v(x, y, z):
        return torch.stack(torch.broadcast_tensors(torch.as_tensor(x, dtype=torch.float32) + zeros,
                                                   torch.as_tensor(y, dtype=torch.float32) + zeros,
                                                   torch.as_tensor(z, dtype=torch.float32) + zeros), -1)

    centres = torch.zeros(b, NUM_ELLIPSOIDS, 3)
    radii = torch.ones(b, NUM_ELLIPSOIDS, 3)
    centres[:, _E_CRANIUM] = v(0.0, 0.045, -0.03)
    radii[:, _E_CRANIUM] = v(0.152 * hw, 0.198 * hh, 0.195 * hd)
    centres[:, _E_FACE] = v(0.0, -0.035 - 0.01 * (cl - 1), 0.03)
    radii[:, _E_FACE] = v(0.126 * fw, 0.178 * (0.5 * hh + 0.5 * cl), 0.145)
    chin_y = -0.135 - 0.02 * (cl - 1)
    centres[:, _E_JAW] = v(jaw_x, chin_y - drop, 0.045 - 0.3 * drop)
    radii[:, _E_JAW] = v(0.08 * jw, 0.08 * cl, 0.09)
    nl, nw, npz = ident["nose_length"], ident["nose_width"], ident["nose_protrusion"]
    centres[:, _E_NOSE] = v(0.0, -0.015 - 0.01 * (nl - 1), 0.15 + 0.02 * (npz - 1))
    radii[:, _E_NOSE] = v(0.022 * nw, 0.05 * nl, 0.05 * npz)
    es, ep = ident["ear_size"], ident["ear_protrusion"]
    ear_x = 0.148 * hw
    centres[:, _E_EAR_L] = v(ear_x + 0.004 * ep, 0.015, -0.02)
    centres[:, _E_EAR_R] = v(-ear_x - 0.004 * ep, 0.015, -0.02)
    radii[:, _E_EAR_L] = v(0.014 + 0.012 * ep, 0.042 * es, 0.028 * es)
    radii[:, _E_EAR_R] = radii[:, _E_EAR_L]
    centres[:, _E_NECK] = v(0.0, -0.33, -0.045)
    radii[:, _E_NECK] = v(0.085 * fw, 0.26, 0.095)
    ex = 0.052 * ident["eye_spacing"]
    eye_r = 0.027
    eye_y, eye_z = 0.035, 0.132
    centres[:, _E_EYE_L] = v(ex, eye_y, eye_z)
    centres[:, _E_EYE_R] = v(-ex, eye_y, eye_z)
    radii[:, _E_EYE_L] = eye_r
    radii[:, _E_EYE_R] = eye_r
    hv = ident["hair_volume"]
    hair_scale = torch.where(hv > 0, 1.0 + 0.07 * hv, torch.full_like(hv, 1e-3))
    centres[:, _E_HAIR] = v(0.0, 0.05 + 0.008 * hv, -0.035)
    radii[:, _E_HAIR] = radii[:, _E_CRANIUM] * _col(hair_scale) + torch.tensor([0.004, 0.0, 0.004])
    hl = ident["hair_length"] * (hv > 0)  # long hair: a volume behind the head framing the face
    centres[:, _E_LONG_HAIR] = v(0.0, -0.02 - 0.09 * hl, -0.085)
    radii[:, _E_LONG_HAIR] = torch.where(_col(hl) > 0, v(0.165 * hw + 0.015 * hl, 0.17 + 0.1 * hl, 0.115),
                                         torch.full((b, 3), 1e-3))
    centres[:, _E_TORSO] = v(0.0, -0.47, -0.06)
    radii[:, _E_TORSO] = v(0.36 * ident["shoulder_width"], 0.21, 0.16)
    return {"centres": centres, "radii": radii, "eye_x": ex, "eye_y": eye_y + zeros, "eye_r": eye_r + zeros,
            "eye_z": eye_z + zeros, "drop": drop, "jaw_x": jaw_x, "chin_y": chin_y + zeros}


def _intersect_ellipsoids(origin: torch.Tensor, dirs: torch.Tensor, scene: dict, ident: dict):
    """Nearest ellipsoid hit per ray: (t [B,N], index [B,N] long, hit [B,N] bool, inside [B,N] bool,
    t of every ellipsoid [B,N,E] (inf = missed)).

    The hair shell is clipped by the hairline: where its front hit is clipped away, its back
    (inner) surface counts instead.
    """
    c, r = scene["centres"], scene["radii"]  # [B,E,3]
    inv_r = 1.0 / r
    o = (origin[:, None, :] - c) * inv_r  # [B,E,3] ray origin in each unit-sphere frame
    # quadratic a t^2 + 2 bq t + cq = 0 per (ray, ellipsoid), layout [B,N,E], a and bq as matmuls
    a = torch.bmm(dirs * dirs, (inv_r * inv_r).transpose(1, 2))
    bq = torch.bmm(dirs, (o * inv_r).transpose(1, 2))
    cq = ((o * o).sum(-1) - 1.0)[:, None, :]
    disc = bq * bq - a * cq
    hit = disc > 0
    root = torch.sqrt(disc.clamp_min(0.0))
    inv_a = 1.0 / a
    t0 = (-bq - root) * inv_a
    t = torch.where(hit & (t0 > 0), t0, torch.full_like(t0, math.inf))
    # hair: clip by hairline (local y above a line rising from back to front)
    th = t[..., _E_HAIR]
    t1 = (root[..., _E_HAIR] - bq[..., _E_HAIR]) * inv_a[..., _E_HAIR]
    hf, hb = ident["hairline_front"][:, None], ident["hairline_back"][:, None]

    def hair_ok(tt):
        p = origin[:, None, :] + tt[..., None].clamp(max=10.0) * dirs
        local = (p - c[:, None, _E_HAIR]) / r[:, None, _E_HAIR]
        line = hf * (1 + local[..., 2]) / 2 + hb * (1 - local[..., 2]) / 2
        # a fringe dips over the forehead centre
        line = line - 0.12 * torch.exp(-(local[..., 0] / 0.35) ** 2) * (local[..., 2] > 0)
        return local[..., 1] > line

    front_ok = torch.isfinite(th) & hair_ok(th)
    back_ok = hit[..., _E_HAIR] & (t1 > 0) & hair_ok(t1)
    t[..., _E_HAIR] = torch.where(front_ok, th, torch.where(back_ok, t1, torch.full_like(th, math.inf)))
    t_min, index = t.min(dim=-1)
    inside = (index == _E_HAIR) & ~front_ok
    return t_min, index, torch.isfinite(t_min), inside, t


def _smooth(edge_distance: torch.Tensor, width: float) -> torch.Tensor:
    """1 inside (distance > 0), 0 outside, linear over ``width`` (anti-aliased mask)."""
    return (edge_distance / width + 0.5).clamp(0.0, 1.0)


def _mix(base: torch.Tensor, colour: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Blend colours [B,N,3] by weight [B,N]."""
    return base + (colour - base) * weight[..., None]


def _bcast(colour: torch.Tensor) -> torch.Tensor:
    return colour[:, None, :]  # [B,3] -> [B,1,3]


def _skin_colour(p: torch.Tensor, ident: dict, scene: dict, ctrl: torch.Tensor, aa: float) -> torch.Tensor:
    """Texture of skin at world points p [B,N,3]: brows, sockets, lips, mouth interior, nostrils."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    front = _smooth(z - 0.06, 0.02)
    skin = _bcast(ident["skin"]).expand_as(p).clone()
    col = lambda k: ctrl[:, _C[k], None]  # noqa: E731  [B,1]
    ex, ey = scene["eye_x"][:, None], scene["eye_y"][:, None]
    # eye sockets and cheeks
    for sx in (1.0, -1.0):
        d = torch.sqrt(((x - sx * ex) / 0.042) ** 2 + ((y - ey - 0.004) / 0.03) ** 2)
        skin = skin * (1 - 0.12 * (1 - d).clamp(0, 1)[..., None] * front[..., None])
        dc = torch.sqrt(((x - sx * 0.072) / 0.04) ** 2 + ((y + 0.055) / 0.03) ** 2)
        blush = (1 - dc).clamp(0, 1) * (0.12 + 0.15 * col("cheek").clamp(0, 1)) * front
        skin = _mix(skin, skin * torch.tensor([1.05, 0.82, 0.82]), blush)
    # brows
    brow_y = ey + 0.048 + 0.016 * col("brow_up") - 0.006 * col("frown")
    thick = 0.0055 * ident["brow_thickness"][:, None]
    for sx in (1.0, -1.0):
        bx = sx * (ex + 0.004)
        u = (x - bx) / 0.034 * sx  # +1 toward the temple, -1 toward the nose
        arch = 0.008 * (1 - u * u) - 0.012 * col("frown") * (-u).clamp(0, 1)
        inside = torch.minimum(thick * (1.0 - 0.4 * u.clamp(0, 1)) - (y - brow_y - arch).abs(),
                               (1 - u.abs()) * 0.034)
        skin = _mix(skin, _bcast(ident["brow"]), _smooth(inside, aa) * front)
    # nostrils (under the nose tip)
    nose = scene["centres"][:, _E_NOSE]
    nb_y = nose[:, 1, None] - 0.8 * scene["radii"][:, _E_NOSE, 1, None]
    for sx in (1.0, -1.0):
        d = torch.sqrt(((x - sx * 0.011 * ident["nose_width"][:, None]) / 0.008) ** 2 + ((y - nb_y) / 0.005) ** 2)
        skin = _mix(skin, skin * 0.35, _smooth(1 - d, aa / 0.006) * front)
    # mouth: opening (cavity, teeth, tongue) framed by lips
    opening = col("mouth_open")
    drop = scene["drop"][:, None]
    width = 0.041 * (1 + 0.3 * col("mouth_width")) * (1 - 0.3 * col("pucker"))
    mx = scene["jaw_x"][:, None] * 0.6
    my = -0.098 + 0.25 * (scene["chin_y"][:, None] + 0.135)
    s = ((x - mx) / width).clamp(-1.5, 1.5)
    curve = 0.016 * col("corner_up") * s * s - 0.004 * col("pucker")  # corners rise when smiling
    top = my + curve + 0.001
    half_open = 0.0012 + 0.5 * drop * (1 + 0.4 * col("pucker")) - 0.0015 * col("lip_press").clamp(0, 1)
    centre = top - half_open
    shape = torch.sqrt((1 - s * s).clamp_min(0))
    dist_open = half_open * shape - (y - centre).abs()
    in_open = _smooth(torch.minimum(dist_open, (1 - s.abs()) * width), aa) * front
    lip_up, lip_low = 0.0075, 0.0095
    lip_half = torch.where(y > centre, half_open + lip_up * (1 - 0.3 * col("corner_up").clamp(0)),
                           half_open + lip_low) * (1 + 0.3 * col("pucker"))
    lip_w = width + 0.006
    s2 = ((x - mx) / lip_w).clamp(-1.5, 1.5)
    dist_lip = lip_half * torch.sqrt((1 - s2 * s2).clamp_min(0)) ** 0.7 - (y - centre).abs()
    in_lip = _smooth(torch.minimum(dist_lip, (1 - s2.abs()) * lip_w), aa) * front
    lip_colour = _bcast(ident["lips"]) * (1 + 0.15 * col("lip_press")[..., None])
    skin = _mix(skin, lip_colour, in_lip)
    # interior: upper teeth, cavity, tongue, lower teeth
    rel_top = top - y  # >= 0 inside, distance below the upper lip edge
    rel_bot = y - (centre - half_open)  # distance above the lower lip edge
    interior = _bcast(ident["cavity"]).expand_as(p).clone()
    interior = _mix(interior, _bcast(ident["tongue"]), _smooth(0.7 * width - (x - mx).abs(), aa)
                    * _smooth(0.4 * half_open - rel_bot, aa))
    gaps = 1 - 0.25 * (torch.cos((x - mx) / 0.0055 * math.pi) ** 16)
    teeth = _bcast(ident["teeth"]) * gaps[..., None]
    interior = _mix(interior, teeth, _smooth(0.0105 - rel_top, aa) * _smooth(0.85 * width - (x - mx).abs(), aa))
    interior = _mix(interior, teeth * 0.9, _smooth(0.005 - rel_bot, aa) * _smooth(0.6 * width - (x - mx).abs(), aa)
                    * (opening > 0.35))
    return _mix(skin, interior, in_open)


def _eye_colour(p: torch.Tensor, index: torch.Tensor, ident: dict, scene: dict, ctrl: torch.Tensor,
                aa: float) -> torch.Tensor:
    """Eyeball texture: sclera, iris, pupil, and skin-coloured lids closing with ``lid``."""
    sx = torch.where(index == _E_EYE_L, 1.0, -1.0)
    centre_x = sx * scene["eye_x"][:, None]
    r = scene["eye_r"][:, None]
    qx = (p[..., 0] - centre_x) / r
    qy = (p[..., 1] - scene["eye_y"][:, None]) / r
    qz = (p[..., 2] - scene["eye_z"][:, None]) / r
    gx = 0.35 * ctrl[:, _C["gaze_x"], None]
    gy = 0.25 * ctrl[:, _C["gaze_y"], None]
    gn = torch.sqrt(1 + gx * gx + gy * gy)
    cos = (qx * gx + qy * gy + qz) / gn
    aa_l = aa / 0.027
    colour = torch.tensor([0.93, 0.9, 0.88]).expand_as(p).clone()
    colour = _mix(colour, _bcast(ident["iris"]), _smooth(cos - 0.86, aa_l))
    colour = _mix(colour, torch.tensor([0.03, 0.03, 0.03]), _smooth(cos - 0.965, aa_l))
    lid = ctrl[:, _C["lid"], None]
    upper = 0.48 - 1.6 * lid.clamp_min(0) ** 1.5  # mostly open until the lid really closes
    lower = -0.55 + 0.1 * lid
    lid_colour = _bcast(ident["skin"]) * 0.88
    lash = _smooth(qy - (upper - 0.22), aa_l)
    colour = _mix(colour, torch.tensor([0.05, 0.04, 0.04]), lash)
    colour = _mix(colour, lid_colour, _smooth(qy - upper, aa_l))
    colour = _mix(colour, lid_colour, _smooth(lower - qy, aa_l))
    return colour


def _hair_colour(p: torch.Tensor, ident: dict) -> torch.Tensor:
    streak = 0.95 + 0.05 * torch.sin(p[..., 0] * 260 + torch.sin(p[..., 2] * 37) * 4 + torch.sin(p[..., 1] * 23) * 3)
    return _bcast(ident["hair"]) * streak[..., None]


_LIGHT = torch.tensor([0.35, 0.45, 0.82])
_LIGHT = _LIGHT / _LIGHT.norm()
_FILL = torch.tensor([-0.6, 0.1, 0.5])
_FILL = _FILL / _FILL.norm()


def _glasses(origin: torch.Tensor, dirs: torch.Tensor, t_scene: torch.Tensor, ident: dict, scene: dict):
    """Glasses (plane primitives): (rim weight [B,N], rim depth mask, lens weight [B,N])."""
    on = ident["glasses"][:, None] > 0.5
    size = ident["glasses_size"][:, None]
    zg = 0.163
    a, b_ = 0.03 * size, 0.022 * size
    ex, ey = scene["eye_x"][:, None], scene["eye_y"][:, None] + 0.002
    th = 0.0032
    oz, dz = origin[:, 2, None], dirs[..., 2]
    t = (zg - oz) / torch.where(dz.abs() < 1e-6, torch.full_like(dz, 1e-6), dz)
    p = origin[:, None, :] + t[..., None] * dirs
    x, y = p[..., 0], p[..., 1]
    rim = torch.full_like(x, -1.0)   # signed distances (positive inside); -1 = far outside
    lens = torch.full_like(x, -1.0)
    for sx in (1.0, -1.0):
        rho = torch.sqrt(((x - sx * ex) / a) ** 2 + ((y - ey) / b_) ** 2)
        rim = torch.maximum(rim, (th / a) - (rho - 1).abs())
        lens = torch.maximum(lens, 1 - rho)
    bridge = torch.minimum(th - (y - ey - 0.35 * b_).abs(), ex - a - x.abs() + th)
    rim_d = torch.maximum(rim * a, bridge)
    visible = on & (t > 0) & (t < t_scene)
    # temples: planes x = +-xt from the rims back toward the ears
    xt = ex + a
    ox, dx = origin[:, 0, None], dirs[..., 0]
    temple = torch.full_like(x, -1.0)  # signed distance to a temple arm; negative = none
    t_temple = torch.full_like(x, math.inf)
    for sx in (1.0, -1.0):
        tt = (sx * xt - ox) / torch.where(dx.abs() < 1e-6, torch.full_like(dx, 1e-6), dx)
        q = origin[:, None, :] + tt[..., None] * dirs
        d = torch.minimum(th - (q[..., 1] - ey - 0.35 * b_ + 0.04 * (zg - q[..., 2])).abs(),
                          torch.minimum(zg - q[..., 2], q[..., 2] - (zg - 0.19)))
        ok = on & (tt > 0) & (tt < t_scene) & (d > -0.002)
        temple = torch.where(ok & (tt < t_temple), d, temple)
        t_temple = torch.where(ok & (tt < t_temple), tt, t_temple)
    return rim_d, visible, lens, temple


def _take(d: dict, rows: torch.Tensor, b: int, keys: Sequence[str] | None = None) -> dict:
    """Rows of every [B,...] tensor in a dict of batch parameters (others passed through);
    only ``keys`` when given."""
    return {k: (x[rows] if torch.is_tensor(x) and x.ndim and x.shape[0] == b else x) for k, x in d.items()
            if keys is None or k in keys}


_SKIN_KEYS = ("skin", "brow", "brow_thickness", "nose_width", "lips", "cavity", "tongue", "teeth")
_EYE_KEYS = ("skin", "iris")


_BLEND = (_E_CRANIUM, _E_FACE, _E_JAW, _E_NECK)


def _smooth_union_normals(normal, origin, dirs, t, index, t_all, scene, width: float = 0.015):
    """Blend the normals of the big skin ellipsoids whose surfaces lie within ~``width`` of the
    visible one along the ray: shading then hides the creases where the primitives meet."""
    slots = list(_BLEND)
    near = torch.zeros_like(index, dtype=torch.bool)
    for k in slots:
        near |= index == k
    tb = t_all[..., slots]  # [B,N,S]
    ok = torch.isfinite(tb)
    gap = torch.where(ok, tb - t[..., None], torch.full_like(tb, 1e3))
    w = torch.exp(-(gap / width) ** 2)  # [B,N,S]
    p = origin[:, None, None, :] + torch.where(ok, tb, torch.zeros_like(tb))[..., None] * dirs[:, :, None, :]
    c = scene["centres"][:, None, slots]  # [B,1,S,3]
    r = scene["radii"][:, None, slots]
    n = (p - c) / (r * r)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    blended = (w[..., None] * n).sum(2)
    blended = blended / blended.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.where(near[..., None], blended, normal)


def _trace(ident: dict, scene: dict, ctrl: torch.Tensor, camera: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
           aa: float, background: bool):
    """Shade rays through image points u, v [B|1,N]: (colour [B,N,3] in [0,1], alpha [B,N],
    key [B,N] long: which surface was hit, -1 for none; used to find edges)."""
    origins, dirs = cameras.rays(camera, torch.stack([u, v], -1))
    origin = origins[:, 0]  # [B,3] camera centres
    origin = origin / HEAD_SCALE  # into model space (directions are unchanged by a uniform scale)
    aa = aa / HEAD_SCALE
    t, index, hit, inside, t_all = _intersect_ellipsoids(origin, dirs, scene, ident)
    t_safe = torch.where(hit, t, torch.zeros_like(t))
    p = origin[:, None, :] + t_safe[..., None] * dirs
    c = torch.gather(scene["centres"], 1, index[..., None].expand(-1, -1, 3))
    r = torch.gather(scene["radii"], 1, index[..., None].expand(-1, -1, 3))
    normal = (p - c) / (r * r)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    normal = torch.where(inside[..., None], -normal, normal)
    normal = _smooth_union_normals(normal, origin, dirs, t, index, t_all, scene)
    material = _MATERIAL[index]
    b = p.shape[0]
    colour = _bcast(ident["skin"]).expand_as(p).clone()
    # facial texture only where it can be (front of the face), evaluated on that subset of rays
    face = hit & (material == _M_SKIN) & (p[..., 2] > 0.04) & (p[..., 1] > -0.2) & (p[..., 1] < 0.15) \
        & (p[..., 0].abs() < 0.13)
    bi, ni = face.nonzero(as_tuple=True)
    if bi.numel():
        colour[bi, ni] = _skin_colour(p[bi, ni][:, None], _take(ident, bi, b, _SKIN_KEYS), _take(scene, bi, b), ctrl[bi], aa)[:, 0]
    bi, ni = ((material == _M_EYE) & hit).nonzero(as_tuple=True)
    if bi.numel():
        colour[bi, ni] = _eye_colour(p[bi, ni][:, None], index[bi, ni][:, None], _take(ident, bi, b, _EYE_KEYS),
                                     _take(scene, bi, b), ctrl[bi], aa)[:, 0]
    hair = (material == _M_HAIR) & hit
    colour = torch.where(((material == _M_CLOTH) & hit)[..., None], _bcast(ident["shirt"]).expand_as(colour), colour)
    colour = torch.where(hair[..., None], _hair_colour(p, ident), colour)
    colour = torch.where((index == _E_NECK)[..., None], colour * 0.9, colour)
    # wrapped Lambert (softens the creases where primitives meet) + fill light + ambient
    lambert = ((normal @ _LIGHT + 0.4) / 1.4).clamp_min(0) * 0.56 + (normal @ _FILL).clamp_min(0) * 0.12
    colour = colour * (0.36 + lambert)[..., None]
    # glasses over the head
    rim_d, visible, lens, temple = _glasses(origin, dirs, torch.where(hit, t, torch.full_like(t, 1e9)), ident, scene)
    rim_col = _bcast(ident["glasses_rim"])
    lens_w = _smooth(lens, aa / 0.03) * visible * ident["glasses_tint"][:, None]
    colour = _mix(colour, torch.tensor([0.55, 0.6, 0.65]), lens_w)
    rim_w = torch.maximum(_smooth(rim_d, aa) * visible, _smooth(temple, aa))
    alpha = torch.maximum(hit.float(), rim_w)
    if background:
        bg = _bcast(ident["background_top"]) * (1 - v[..., None]) + _bcast(ident["background_bottom"]) * v[..., None]
    else:
        bg = torch.zeros_like(colour)
    colour = torch.where(hit[..., None], colour, bg)
    colour = _mix(colour, rim_col * 0.85, rim_w)
    key = torch.where(hit, index + NUM_ELLIPSOIDS * inside, torch.full_like(index, -1))
    return colour, alpha, key


# sub-pixel sample offsets (rotated grids) used on edge pixels, by samples per pixel side
_SUBSAMPLES = {
    2: [(-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125)],
    3: [((i - 1) / 3 + 0.05 * (j - 1), (j - 1) / 3 - 0.05 * (i - 1)) for i in range(3) for j in range(3)],
}


def _edge_pixels(key: torch.Tensor) -> torch.Tensor:
    """[B,H,W] surface ids -> bool [B,H,W]: pixels whose id differs from a 4-neighbour."""
    edge = torch.zeros_like(key, dtype=torch.bool)
    dx = key[:, :, 1:] != key[:, :, :-1]
    dy = key[:, 1:, :] != key[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge


@torch.no_grad()
def render_batch(identities: Sequence[Identity] | dict[str, torch.Tensor], expressions: Any, cameras_: Any,
                 resolution: int, supersample: int | None = None, background: bool = True,
                 return_mask: bool = False):
    """Render heads: identities (B of them, or packed), expressions [B,76], cameras [B,25].

    Returns torch [B,3,H,W] in [-1,1] (H = W = resolution) and, with ``return_mask``, the
    coverage mask [B,1,H,W] in [0,1] of the head (1) over the background (0).
    Anti-aliasing: one ray per pixel, then ``supersample``^2 rays (rotated grid) on the pixels
    where the visible surface changes (silhouettes, eyes, ears, hairline; default 2, 1 = off);
    texture edges are smoothed analytically over one pixel.
    """
    ident = identities if isinstance(identities, dict) else _pack_identities(list(identities))
    expressions = torch.as_tensor(expressions, dtype=torch.float32)
    camera = torch.as_tensor(cameras_, dtype=torch.float32)
    if expressions.ndim != 2 or expressions.shape[1] != EXPRESSION_DIM:
        raise ValueError(f"expressions must be [B,{EXPRESSION_DIM}], got {tuple(expressions.shape)}")
    if camera.ndim != 2 or camera.shape[1] != 25:
        raise ValueError(f"cameras must be [B,25], got {tuple(camera.shape)}")
    if not (torch.isfinite(expressions).all() and torch.isfinite(camera).all()):
        raise ValueError("expressions and cameras must be finite (found NaN or Inf)")
    b = camera.shape[0]
    if expressions.shape[0] != b or ident["skin"].shape[0] != b:
        raise ValueError(f"batch sizes differ: {ident['skin'].shape[0]} identities, {expressions.shape[0]} "
                         f"expressions, {b} cameras")
    ss = 2 if supersample is None else int(supersample)
    res = int(resolution)
    ctrl = expression_controls(expressions)
    scene = _scene(ident, ctrl)
    focal = float(cameras.split_label(camera)[1][:, 0, 0].abs().mean())
    aa = float(cameras.RADIUS / focal / res)  # world size of one pixel at the head
    coords = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    colour, alpha, key = _trace(ident, scene, ctrl, camera, u, v, aa, background)
    if ss > 1:
        edge = _edge_pixels(key.reshape(b, res, res)).reshape(b, -1)
        bi, pi = edge.nonzero(as_tuple=True)
        if bi.numel():
            offsets = torch.tensor(_SUBSAMPLES[ss] if ss in _SUBSAMPLES else
                                   [((i + 0.5) / ss - 0.5, (j + 0.5) / ss - 0.5) for j in range(ss) for i in range(ss)])
            su = u[0, pi, None] + offsets[None, :, 0] / res  # [M,S]
            sv = v[0, pi, None] + offsets[None, :, 1] / res
            c_sub, a_sub, _ = _trace(_take(ident, bi, b), _take(scene, bi, b), ctrl[bi], camera[bi], su, sv, aa, background)
            colour[bi, pi] = c_sub.mean(1)
            alpha[bi, pi] = a_sub.mean(1)
    image = colour.reshape(b, res, res, 3).permute(0, 3, 1, 2)
    image = (image.clamp(0, 1) * 2 - 1).contiguous()
    if return_mask:
        return image, alpha.reshape(b, 1, res, res).contiguous()
    return image


def render(identity: Identity, expression: Any, camera: Any, resolution: int, **kw: Any) -> np.ndarray:
    """One image: np.float32 [3,H,W] in [-1,1] (see :func:`render_batch`)."""
    e = torch.as_tensor(np.asarray(expression, np.float32)).reshape(1, EXPRESSION_DIM)
    c = torch.as_tensor(np.asarray(camera, np.float32)).reshape(1, 25)
    return render_batch([identity], e, c, resolution, **kw)[0].numpy()


def mouth_boxes(identities: Sequence[Identity] | dict[str, torch.Tensor], expressions: Any, cameras_: Any,
                margin: float = 0.25) -> torch.Tensor:
    """Image boxes [B,4] (x0, y0, x1, y1 in [0,1]) around the lips and mouth opening, padded by
    ``margin`` of their size (the region of mouth metrics)."""
    ident = identities if isinstance(identities, dict) else _pack_identities(list(identities))
    e = torch.as_tensor(expressions, dtype=torch.float32).reshape(-1, EXPRESSION_DIM)
    camera = torch.as_tensor(cameras_, dtype=torch.float32).reshape(-1, 25)
    ctrl = expression_controls(e)
    scene = _scene(ident, ctrl)
    width = 0.041 * (1 + 0.3 * ctrl[:, _C["mouth_width"]]) * (1 - 0.3 * ctrl[:, _C["pucker"]]) + 0.006
    mx = scene["jaw_x"] * 0.6
    my = -0.098 + 0.25 * (scene["chin_y"] + 0.135)
    top = my + 0.016 * ctrl[:, _C["corner_up"]].clamp_min(0) + 0.012
    bottom = my - scene["drop"] * (1 + 0.4 * ctrl[:, _C["pucker"]]) - 0.014
    xs = torch.stack([mx - width, mx + width], 1)
    ys = torch.stack([bottom, top], 1)
    zs = torch.tensor([0.1, 0.175])
    corners = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(2), torch.arange(2), indexing="ij"), -1).reshape(-1, 3)
    pts = torch.stack([xs[:, corners[:, 0]], ys[:, corners[:, 1]], zs[corners[:, 2]].expand(e.shape[0], -1)], -1)
    uv = cameras.project(pts * HEAD_SCALE, camera)
    lo, hi = uv.min(1).values, uv.max(1).values
    pad = (hi - lo) * margin
    return torch.cat([lo - pad, hi + pad], 1).clamp(0, 1)


# ============================================================================= prior corpus
def sample_cameras(batch: int, generator: torch.Generator | None = None, yaw_std_deg: float = 18.0,
                   pitch_std_deg: float = 8.0, max_yaw_deg: float = 45.0, max_pitch_deg: float = 25.0,
                   roll_std_deg: float = 0.0) -> torch.Tensor:
    """Random look-at cameras around the pivot [B,25] (FFHQ-like pose spread: mostly frontal)."""
    yaw = (torch.randn(batch, generator=generator) * yaw_std_deg).clamp(-max_yaw_deg, max_yaw_deg)
    pitch = (torch.randn(batch, generator=generator) * pitch_std_deg).clamp(-max_pitch_deg, max_pitch_deg)
    return cameras.labels_from_angles(yaw, pitch)


def sample_prior_batch(batch: int, resolution: int, generator: torch.Generator | None = None,
                       supersample: int | None = None) -> dict[str, torch.Tensor]:
    """The stand-in for FFHQ: {'image' [B,3,H,W] in [-1,1], 'camera' [B,25]}.

    Random identity from a pool of ``PRIOR_POOL_SIZE`` (disjoint from the benchmark identities),
    random expression (:func:`sample_expressions`), random camera (:func:`sample_cameras`).
    """
    idx = torch.randint(0, PRIOR_POOL_SIZE, (batch,), generator=generator)
    ident = _prior_identities(idx)
    expressions = sample_expressions(batch, generator)
    camera = sample_cameras(batch, generator)
    image = render_batch(ident, expressions, camera, resolution, supersample=supersample)
    return {"image": image, "camera": camera}


# ============================================================================= morphable mesh
_SHAPE_FIELDS = ("head_width", "head_height", "head_depth", "face_width", "jaw_width", "chin_length",
                 "nose_length", "nose_width", "nose_protrusion", "ear_size", "ear_protrusion", "eye_spacing")
_SHAPE_MEAN = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0225, 1.05, 1.05, 1.025, 0.5, 1.0])
_SHAPE_STD = torch.tensor([0.058, 0.04, 0.046, 0.07, 0.127, 0.115, 0.13, 0.173, 0.173, 0.13, 0.289, 0.046])


def shape_coefficients(identity: Identity) -> np.ndarray:
    """Standardised shape parameters [SHAPE_DIM] of an identity (the input ``shape`` of
    :func:`morphable_mesh`)."""
    values = torch.tensor([getattr(identity, f) for f in _SHAPE_FIELDS])
    return ((values - _SHAPE_MEAN) / _SHAPE_STD).numpy().astype(np.float32)


@lru_cache(maxsize=4)
def _sphere_grid(n_lat: int, n_lon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit directions [V,3] of a lat-long sphere (poles included) and its triangles [F,3]."""
    lat = torch.linspace(0, math.pi, n_lat)
    lon = torch.linspace(0, 2 * math.pi, n_lon + 1)[:-1]
    dirs = [torch.tensor([[0.0, 1.0, 0.0]])]
    for th in lat[1:-1]:
        dirs.append(torch.stack([torch.sin(th) * torch.sin(lon), torch.cos(th).expand(n_lon),
                                 torch.sin(th) * torch.cos(lon)], -1))
    dirs.append(torch.tensor([[0.0, -1.0, 0.0]]))
    dirs = torch.cat(dirs)
    faces = []
    rings = n_lat - 2
    ring = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, ring(0, j + 1), ring(0, j)])
    for i in range(rings - 1):
        for j in range(n_lon):
            a, b_, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, b_, d], [a, d, c]]
    last = dirs.shape[0] - 1
    for j in range(n_lon):
        faces.append([last, ring(rings - 1, j), ring(rings - 1, j + 1)])
    return dirs, torch.tensor(faces, dtype=torch.long)[:, [0, 2, 1]]  # counter-clockwise from outside


def morphable_mesh(expression: Any, shape: Any = None, n_lat: int = 40, n_lon: int = 56):
    """The world's generic morphable head mesh (the stand-in for FLAME).

    expression [B,76], shape [B,SHAPE_DIM] standardised shape coefficients or None (mean head).
    Returns (vertices [B,V,3] float32 in the cameras' world coordinates, faces [F,3] long), with
    V = (n_lat-2)*n_lon + 2 (2018 by default). The surface is star-shaped around the head centre:
    along each direction, the farthest exit point of the skin primitives (cranium, face, jaw,
    nose, ears, neck cut at the chin's height), so it moves with the jaw as the mouth opens.
    Faces are counter-clockwise seen from outside.
    """
    e = torch.as_tensor(expression, dtype=torch.float32)
    if e.ndim == 1:
        e = e[None]
    b = e.shape[0]
    coeffs = torch.zeros(b, SHAPE_DIM) if shape is None else torch.as_tensor(shape, dtype=torch.float32).reshape(b, SHAPE_DIM)
    values = _SHAPE_MEAN + coeffs * _SHAPE_STD
    ident = {f: values[:, i] for i, f in enumerate(_SHAPE_FIELDS)}
    ident["hair_volume"] = torch.zeros(b)
    ident["hair_length"] = torch.zeros(b)
    ident["shoulder_width"] = torch.ones(b)
    scene = _scene(ident, expression_controls(e))
    dirs, faces = _sphere_grid(n_lat, n_lon)
    centre = torch.tensor([0.0, -0.02, 0.0])
    slots = [_E_CRANIUM, _E_FACE, _E_JAW, _E_NOSE, _E_EAR_L, _E_EAR_R, _E_NECK]
    c = scene["centres"][:, slots]  # [B,S,3]
    r = scene["radii"][:, slots]
    o = (centre - c) / r  # [B,S,3]
    d = dirs[None, None] / r[:, :, None]  # [B,S,V,3]
    a = (d * d).sum(-1)
    bq = (o[:, :, None] * d).sum(-1)
    cq = (o * o).sum(-1, keepdim=True) - 1
    disc = bq * bq - a * cq
    t_exit = (-bq + torch.sqrt(disc.clamp_min(1e-12))) / a  # clamp > 0: finite gradients w.r.t. shape
    t_exit = torch.where(disc > 0, t_exit, torch.zeros_like(t_exit))
    # the neck only counts below the jaw, and is cut off at y = -0.3
    t_exit[:, -1] = torch.where(dirs[None, :, 1] < -0.5, t_exit[:, -1], torch.zeros_like(t_exit[:, -1]))
    radius = t_exit.max(dim=1).values  # [B,V]
    bottom = (-0.3 - centre[1]) / dirs[:, 1].clamp(max=-1e-3)
    radius = torch.where(dirs[None, :, 1] < 0, torch.minimum(radius, bottom[None].abs()), radius)
    vertices = (centre + radius[..., None] * dirs[None]) * HEAD_SCALE
    return vertices.float(), faces


# ============================================================================= videos
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


# ============================================================================= benchmark
@dataclass(frozen=True)
class BenchmarkConfig:
    """Sizes of the synthetic benchmark (profiles change sizes only)."""

    resolution: int = 64
    identities: int = 1
    fps: int = 25
    mono_train_frames: int = 48
    mono_test_frames: int = 12
    audio_train_frames: int = 60
    audio_test_frames: int = 15
    val_frames: int = 4          # val = the first test frames (NerFACE wants a val split)
    novel_every: int = 3         # novel-view ground truth for every k-th test frame
    prior_images: int = 64
    render_batch: int = 32


BENCHMARK_PROFILES: dict[str, BenchmarkConfig] = {
    # 2.4 s mono video (48 + 12 frames), 3 s audio video, novel views of 4 test frames, 64 prior images
    "smoke": BenchmarkConfig(),
    # 3 identities, 20 s train + 4 s test for both videos (the paper trains audio methods on 20 s)
    "default": BenchmarkConfig(resolution=64, identities=3, mono_train_frames=500, mono_test_frames=100,
                               audio_train_frames=500, audio_test_frames=100, val_frames=20, novel_every=4,
                               prior_images=2000),
    # optional large synthetic set; the paper's own path is real data (persona.data.formats)
    "paper": BenchmarkConfig(resolution=256, identities=5, mono_train_frames=1500, mono_test_frames=250,
                             audio_train_frames=1500, audio_test_frames=250, val_frames=50, novel_every=4,
                             prior_images=20000, render_batch=8),
}

BENCHMARK_VERSION = 1


def code_fingerprint() -> str:
    """sha256 (16 hex) of the sources that decide the benchmark's bytes: a complete build made by
    other code is rebuilt rather than reused."""
    import hashlib

    from persona.data import audio, formats

    h = hashlib.sha256()
    for module in (cameras, audio, formats):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def benchmark_dir(profile: str, base: str | Path = "data/synthetic") -> Path:
    """Where the benchmark of a profile lives by default: ``data/synthetic/<profile>``."""
    from persona.profiles import check_profile

    return Path(base) / check_profile(profile)


def benchmark_identity_seeds(n: int, seed: int = 0) -> list[int]:
    """Identity seeds of the benchmark: id00 wears glasses, id01 does not, the rest at random."""
    seeds, j = [], seed * 10_000
    wants = [True, False]
    while len(seeds) < n:
        ident = sample_identity(j)
        if len(seeds) >= len(wants) or ident.glasses == wants[len(seeds)]:
            seeds.append(j)
        j += 1
    return seeds


def _render_frames(identity: Identity, expressions: np.ndarray, cams: np.ndarray, resolution: int,
                   batch: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N,H,W,3] and coverage masks [N,H,W] of a frame sequence."""
    from tqdm import tqdm

    packed = _pack_identities([identity])
    imgs, masks = [], []
    for s in tqdm(range(0, len(expressions), batch), desc=desc, leave=False, disable=len(expressions) <= batch):
        e = torch.as_tensor(expressions[s:s + batch])
        c = torch.as_tensor(cams[s:s + batch])
        ident = {k: v.expand(e.shape[0], *v.shape[1:]) for k, v in packed.items()}
        img, mask = render_batch(ident, e, c, resolution, return_mask=True)
        imgs.append(((img.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
        masks.append(mask[:, 0].numpy())
    return np.concatenate(imgs), np.concatenate(masks)


def _bbox(mask: np.ndarray) -> list[float]:
    """NerFACE bbox [y0, y1, x0, x1] (fractions) of a coverage mask [H,W]."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        return [0.0, 1.0, 0.0, 1.0]
    return [ys.min() / h, (ys.max() + 1) / h, xs.min() / w, (xs.max() + 1) / w]


def _write_video(folder: Path, identity: Identity, video: Video, n_train: int, cfg: BenchmarkConfig, desc: str) -> None:
    from persona.data import audio, formats

    res = cfg.resolution
    folder.mkdir(parents=True)
    images, masks = _render_frames(identity, video.expressions, video.cameras, res, cfg.render_batch, desc)
    boxes = mouth_boxes([identity] * len(images), video.expressions, video.cameras).numpy()
    for i, img in enumerate(images):
        formats.write_image(folder / "images" / f"{i:05d}.png", img)
    v = (np.arange(res) + 0.5) / res
    bg = np.asarray(identity.background_top) * (1 - v[:, None]) + np.asarray(identity.background_bottom) * v[:, None]
    bg = np.repeat(bg[:, None, :], res, axis=1)
    formats.write_image(folder / "bg" / "background.png", (bg * 255).round().astype(np.uint8))
    frames = []
    for i in range(len(images)):
        pose, _ = cameras.label_to_nerface(video.cameras[i], res, res)
        frames.append({"file_path": f"images/{i:05d}", "transform_matrix": pose, "expression": video.expressions[i],
                       "bbox": _bbox(masks[i]), "mouth_box": boxes[i], "camera_label": video.cameras[i],
                       "frame_index": i})
    focal_px = cameras.FOCAL * res
    intr = [focal_px, focal_px, 0.5, 0.5]
    angle = 2 * math.atan(0.5 / cameras.FOCAL)
    meta = {"fps": video.fps, "w": res, "h": res, "background": "bg/background.png", "identity_seed": identity.seed,
            "num_frames": len(images)}
    test = frames[n_train:]
    formats.write_nerface(folder, "train", frames[:n_train], intr, angle, **meta)
    formats.write_nerface(folder, "val", test[:cfg.val_frames], intr, angle, **meta)
    formats.write_nerface(folder, "test", test, intr, angle, **meta)
    from persona.runs import atomic_write_bytes

    atomic_write_bytes(folder / "aud.wav", audio.wav_bytes(video.waveform))
    atomic_write_bytes(folder / "aud.npy", formats.npy_bytes(audio.audio_windows(video.waveform, len(images), video.fps)))
    # novel-view ground truth of every k-th test frame
    sources = list(range(n_train, len(images), cfg.novel_every))
    names = list(cameras.NOVEL_VIEWS)
    src = np.repeat(sources, len(names))
    views = names * len(sources)
    cams = np.stack([cameras.novel_view(video.cameras[s], *cameras.NOVEL_VIEWS[v]) for s, v in zip(src, views)])
    exprs = video.expressions[src]
    nov_imgs, _ = _render_frames(identity, exprs, cams, res, cfg.render_batch, desc + " novel")
    nov_boxes = mouth_boxes([identity] * len(src), exprs, cams).numpy()
    nov_frames = []
    for j, (s, view) in enumerate(zip(src, views)):
        name = f"{int(s):05d}_{view}"
        formats.write_image(folder / "novel" / "images" / f"{name}.png", nov_imgs[j])
        pose, _ = cameras.label_to_nerface(cams[j], res, res)
        nov_frames.append({"file_path": f"images/{name}", "transform_matrix": pose, "expression": exprs[j],
                           "camera_label": cams[j], "mouth_box": nov_boxes[j], "view": view,
                           "source_index": int(s), "frame_index": int(s)})
    formats.write_nerface(folder / "novel", "novel", nov_frames, intr, angle, **meta)


def _write_prior(folder: Path, cfg: BenchmarkConfig, seed: int) -> None:
    from tqdm import tqdm

    from persona.data import formats

    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    entries = []
    for s in tqdm(range(0, cfg.prior_images, cfg.render_batch), desc="prior corpus", leave=False):
        n = min(cfg.render_batch, cfg.prior_images - s)
        batch = sample_prior_batch(n, cfg.resolution, g)
        for k in range(n):
            name = f"images/img{s + k:08d}.png"
            formats.write_image(folder / name, batch["image"][k].numpy())
            entries.append((name, batch["camera"][k].numpy()))
    formats.write_eg3d_dataset(folder, entries)


def is_complete(root: str | Path) -> bool:
    """A benchmark folder counts as complete only when its ``benchmark.json`` exists (written
    last, inside the temporary folder, before the atomic rename)."""
    return (Path(root) / "benchmark.json").is_file()


# written first into every benchmark folder persona builds: persona replaces only folders carrying it
OWNER_MARKER = ".persona-benchmark"
_MARKER_TEXT = "persona synthetic benchmark: this folder is rebuilt by `python -m persona data build`\n"


def _persona_entry(name: str) -> bool:
    """Top-level names a benchmark build writes (an earlier build's leftovers are replaced, nothing else)."""
    import re

    return name in ("benchmark.json", OWNER_MARKER, "prior") or re.fullmatch(r"id\d+", name) is not None


def is_owned(root: str | Path) -> bool:
    """True when ``root`` is a benchmark persona wrote: it has the marker, or (builds older than the
    marker) a ``benchmark.json`` with persona's ``version`` and ``code`` fields."""
    import json

    root = Path(root)
    if (root / OWNER_MARKER).is_file():
        return True
    try:
        summary = json.loads((root / "benchmark.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"version", "code", "config"} <= set(summary)


def check_out_folder(root: str | Path) -> Path:
    """The absolute path of a benchmark output folder, after refusing one persona may not replace:
    a file, or a non-empty folder it did not write (persona never deletes the user's files)."""
    from persona.errors import PersonaInputError

    absolute = Path(os.path.abspath(root))
    if absolute.exists() and not absolute.is_dir():
        raise PersonaInputError(f"{root}: --out is a file; expected a new folder, an empty one or an earlier benchmark")
    if absolute.is_dir() and any(absolute.iterdir()) and not is_owned(absolute):
        raise PersonaInputError(f"{root}: folder is not empty and is not a persona benchmark (no {OWNER_MARKER}); "
                                f"refusing to overwrite it - expected a new or empty --out folder")
    if absolute.parent == absolute:
        raise PersonaInputError(f"{root}: --out is a filesystem root; expected a folder inside one")
    return absolute


def _install(tmp: Path, root: Path) -> None:
    """Move the finished build ``tmp`` to ``root``. A missing ``root`` is one atomic rename; an empty
    folder or an earlier build (e.g. ``--out .``) keeps its inode: the earlier build's entries are moved
    aside (``benchmark.json`` first, so it stops looking complete), the new ones moved in
    (``benchmark.json`` last) and the old ones deleted. Entries persona did not write stay."""
    import shutil

    if not root.exists():
        os.replace(tmp, root)
        return
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    old.mkdir()
    last_first = lambda names: sorted(names, key=lambda n: (n != "benchmark.json", n))  # noqa: E731
    for name in last_first(e.name for e in root.iterdir() if _persona_entry(e.name)):
        os.replace(root / name, old / name)
    for name in reversed(last_first(e.name for e in tmp.iterdir())):
        os.replace(tmp / name, root / name)
    tmp.rmdir()
    shutil.rmtree(old)


def build_benchmark(root: str | Path, profile: str, seed: int = 0, force: bool = False,
                    config: BenchmarkConfig | None = None) -> Path:
    """Write the synthetic benchmark of ``profile`` into the folder ``root`` (e.g.
    ``benchmark_dir(profile)``); returns ``root``.

    Layout: ``prior/`` (EG3D dataset.json + images), ``idNN/mono/`` and ``idNN/audio/`` (NerFACE
    layout + aud.npy + aud.wav + bg/ + novel/), ``benchmark.json``, ``.persona-benchmark`` (marker).
    Built in a temporary sibling folder and moved in at the end, so an interrupted build never looks
    complete. ``root`` must be new, empty or an earlier benchmark (:func:`check_out_folder`; a folder of
    other files raises :class:`persona.errors.PersonaInputError` before anything is built). Deterministic:
    the same profile and seed give byte-identical files. An existing complete build with the same
    sizes, seed and code (:func:`code_fingerprint`) is kept unless ``force``. ``config`` overrides the profile's sizes (tests).
    """
    import shutil

    from persona.data import formats
    from persona.profiles import check_profile
    from persona.runs import remove_stale_leftovers

    cfg = config if config is not None else BENCHMARK_PROFILES[check_profile(profile)]
    given, root = Path(root), check_out_folder(root)
    summary = {"profile": profile, "seed": int(seed), "version": BENCHMARK_VERSION, "code": code_fingerprint(),
               "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)}}
    if is_complete(root) and not force:
        try:
            old = formats.read_json(root / "benchmark.json")
            if all(old.get(k) == summary[k] for k in ("config", "seed", "version", "code")):
                return given
        except ValueError:
            pass
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(root.parent)  # .building-PID / .old-PID folders of killed builds (ours only)
    tmp = root.parent / f".{root.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        (tmp / OWNER_MARKER).write_text(_MARKER_TEXT)
        seeds = benchmark_identity_seeds(cfg.identities, seed)
        summary["identities"] = {}
        for k, ident_seed in enumerate(seeds):
            identity = sample_identity(ident_seed)
            name = f"id{k:02d}"
            summary["identities"][name] = {"seed": ident_seed, "glasses": identity.glasses}
            mono = make_video(cfg.mono_train_frames + cfg.mono_test_frames, cfg.fps, ident_seed * 10 + 1, True)
            _write_video(tmp / name / "mono", identity, mono, cfg.mono_train_frames, cfg, f"{name} mono")
            talk = make_video(cfg.audio_train_frames + cfg.audio_test_frames, cfg.fps, ident_seed * 10 + 2, False)
            _write_video(tmp / name / "audio", identity, talk, cfg.audio_train_frames, cfg, f"{name} audio")
        _write_prior(tmp / "prior", cfg, seed)
        formats.write_json(tmp / "benchmark.json", summary)
        _install(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return given
