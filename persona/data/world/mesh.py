"""The world's generic morphable head mesh (NHA's stand-in for FLAME), built from the renderer's primitives."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from persona.data.world.expression import expression_controls
from persona.data.world.render import (_E_CRANIUM, _E_EAR_L, _E_EAR_R, _E_FACE, _E_JAW, _E_NECK, _E_NOSE, HEAD_SCALE,
                                       _scene)

SHAPE_DIM = 12  # shape coefficients of morphable_mesh (standardised identity shape parameters)


_SHAPE_FIELDS = ("head_width", "head_height", "head_depth", "face_width", "jaw_width", "chin_length",
                 "nose_length", "nose_width", "nose_protrusion", "ear_size", "ear_protrusion", "eye_spacing")
_SHAPE_MEAN = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0225, 1.05, 1.05, 1.025, 0.5, 1.0])
_SHAPE_STD = torch.tensor([0.058, 0.04, 0.046, 0.07, 0.127, 0.115, 0.13, 0.173, 0.173, 0.13, 0.289, 0.046])


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


def shape_coefficients(identity: Any) -> np.ndarray:
    """Standardised shape parameters [SHAPE_DIM] of an identity (the input ``shape`` of
    :func:`morphable_mesh`): the ground truth the tests check NHA's tracked mesh against."""
    values = torch.tensor([getattr(identity, f) for f in _SHAPE_FIELDS])
    return ((values - _SHAPE_MEAN) / _SHAPE_STD).numpy().astype(np.float32)


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
