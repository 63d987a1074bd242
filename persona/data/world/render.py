"""The synthetic world's renderer: procedural 3D heads with ground truth, rendered fast on a CPU.

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

Expressions: :mod:`persona.data.world.expression`; identities: :mod:`persona.data.world.identity`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from persona import cameras
from persona.data.world.expression import _C, EXPRESSION_DIM, expression_controls
from persona.data.world.identity import Identity, _pack_identities

# The head model is authored in "model space"; world = HEAD_SCALE * model (about the origin), a
# size at which the head fills an FFHQ-like crop at radius 2.7, focal 4.2647.
HEAD_SCALE = 1.12


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
