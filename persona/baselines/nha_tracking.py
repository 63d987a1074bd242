"""NHA's mesh tracked from the training video (what a real-data user has: frames + cameras).

The real NHA tracks FLAME from the video (landmarks + a photometric fit). FLAME cannot be
downloaded here, and the synthetic world's own morphable head is the very function the frames
were rendered with (an oracle). This module builds a morphable head mesh from the frames and
cameras only:

1. **Landmarks**: mediapipe's 478-point face mesh (:mod:`persona.preprocess.landmarks`, offline)
   on every training frame, upsampled to ``size`` px (mediapipe needs ~>= 128 px faces).
2. **Lifting**: each landmark (pixel u, v; mediapipe's relative depth z, in x's pixel unit, origin
   near the head centre) goes to world coordinates along its camera ray, at depth
   ``D + delta + z * D / (fx * size)``, with ``D`` the camera's distance to the look-at point
   (``persona.cameras.PIVOT``, the same for every frame) and ``delta`` one depth offset for the
   whole video, chosen so that the rigid landmarks (forehead, nose bridge, eye corners) move least
   in the world frame (head motion is camera motion in our datasets; a fixed camera leaves
   ``delta`` at 0).
3. **Expression blendshapes**: a ridge regression of the lifted landmarks on the frame's
   expression vector: ``landmarks(e) = mean + e @ A`` ([478,3] + [76,478*3]). At test time the
   mesh follows the test expression through ``A`` (the real NHA follows FLAME's tracked codes).
4. **Generic head template**: a lat-long ellipsoid (not the world's head), sized from the face's
   width and placed behind it; the template vertices near the face are pulled onto the tracked
   face by Gaussian (Shepard) interpolation of the landmarks' displacements, and carry their
   blendshapes the same way; the back of the head and the hair region stay ellipsoidal for NHA's
   offsets and texture to refine.

Nothing here imports the synthetic world; the tests check that the tracked path never calls it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from persona.cameras import PIVOT
from persona.errors import PersonaInputError

EXPRESSION_DIM = 76
# landmarks that move least with expressions: forehead, nose bridge and tip, inner/outer eye corners, cheeks
RIGID = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 127, 356)
CHEEKS = (234, 454)  # the face's widest landmarks (left/right contour)
CHIN, FOREHEAD = 152, 10


@dataclass
class TrackedLandmarks:
    """``world`` [N,478,3] lifted landmarks in the cameras' world frame, ``found`` [N] bool,
    ``depth_offset`` (world units), ``seconds_per_frame`` of the landmark tracker."""

    world: np.ndarray
    found: np.ndarray
    depth_offset: float
    seconds_per_frame: float


def track_frames(images: torch.Tensor, size: int = 256) -> tuple[np.ndarray, np.ndarray, float]:
    """Frames [N,3,H,W] in [-1,1] -> (landmarks [N,478,3] pixels at ``size`` (NaN-free: missing
    frames interpolated), found [N] bool, seconds per frame)."""
    from persona.preprocess.landmarks import FaceMesh, NUM_LANDMARKS, fill_missing

    up = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False)
    frames = ((up.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    mesh = FaceMesh(max_faces=1, video=True)
    points, found = [], []
    tic = time.perf_counter()
    try:
        for rgb in frames:
            p, _ = mesh(rgb)
            found.append(p is not None)
            points.append(p if p is not None else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
    finally:
        mesh.close()
    seconds = (time.perf_counter() - tic) / max(len(frames), 1)
    found_arr = np.array(found, bool)
    if not found_arr.any():
        raise PersonaInputError(f"nha mesh 'tracked': mediapipe found no face in any of the {len(frames)} training frames "
                                f"(upsampled to {size} px); use mesh 'oracle' or a FLAME model (flame_path)")
    return fill_missing(np.stack(points), found_arr), found_arr, seconds


def _pivot_distance(cam2world: np.ndarray) -> np.ndarray:
    """[N,4,4] -> [N]: the look-at point's depth along each camera's optical axis."""
    return np.einsum("nk,nk->n", np.asarray(PIVOT)[None] - cam2world[:, :3, 3], cam2world[:, :3, 2])


def lift(points: np.ndarray, cameras: np.ndarray, size: int, depth_offset: float = 0.0) -> np.ndarray:
    """Landmarks [N,K,3] (pixels at ``size``; z relative depth in x's pixel unit) and EG3D cameras
    [N,25] -> world points [N,K,3] (see the module docstring, step 2)."""
    cam = np.asarray(cameras, np.float64)
    cam2world, intr = cam[:, :16].reshape(-1, 4, 4), cam[:, 16:].reshape(-1, 3, 3)
    base = _pivot_distance(cam2world) + depth_offset  # [N]
    fx, fy, cx, cy = intr[:, 0, 0], intr[:, 1, 1], intr[:, 0, 2], intr[:, 1, 2]
    p = np.asarray(points, np.float64)
    depth = base[:, None] + p[..., 2] * base[:, None] / (fx[:, None] * size)
    x = (p[..., 0] / size - cx[:, None]) / fx[:, None] * depth
    y = (p[..., 1] / size - cy[:, None]) / fy[:, None] * depth
    local = np.stack([x, y, depth], -1)  # OpenCV camera coordinates
    return np.einsum("nij,nkj->nki", cam2world[:, :3, :3], local) + cam2world[:, None, :3, 3]


def fit_depth_offset(points: np.ndarray, cameras: np.ndarray, size: int, search: float = 0.4, steps: int = 41,
                     min_turn_deg: float = 2.0) -> float:
    """The one depth offset (world units) under which the rigid landmarks move least across frames
    (their spread relative to their size, so that moving everything closer does not win). Cameras
    that turn less than ``min_turn_deg`` cannot tell depth: 0."""
    axes = np.asarray(cameras, np.float64)[:, :16].reshape(-1, 4, 4)[:, :3, 2]
    turn = np.degrees(np.arccos(np.clip(axes @ axes.mean(0) / np.linalg.norm(axes.mean(0)), -1.0, 1.0))).max()
    if turn < min_turn_deg:
        return 0.0
    offsets = np.linspace(-search, search, steps)
    rigid = points[:, list(RIGID)]

    def spread(offset: float) -> float:
        world = lift(rigid, cameras, size, offset)
        size2 = ((world - world.mean(1, keepdims=True)) ** 2).sum(-1).mean()
        return float(world.var(axis=0).sum(-1).mean() / max(size2, 1e-12))

    return float(offsets[int(np.argmin([spread(d) for d in offsets]))])


def track_landmarks(images: torch.Tensor, cameras: torch.Tensor, size: int = 256) -> TrackedLandmarks:
    """Frames [N,3,H,W] in [-1,1] and their cameras [N,25] -> lifted landmarks (steps 1-2)."""
    points, found, seconds = track_frames(images, size)
    cams = torch.as_tensor(cameras).double().numpy()
    offset = fit_depth_offset(points, cams, size)
    return TrackedLandmarks(lift(points, cams, size, offset).astype(np.float32), found, offset, seconds)


def fit_blendshapes(world: np.ndarray, expressions: np.ndarray, ridge: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Lifted landmarks [N,K,3], expressions [N,E] -> (mean [K,3] at e = 0, blendshapes [E,K,3]):
    ridge least squares of ``world ≈ mean + e @ A`` (``ridge`` relative to the expressions' scale)."""
    n, k, _ = world.shape
    e = np.asarray(expressions, np.float64)
    design = np.concatenate([np.ones((n, 1)), e], 1)
    penalty = ridge * max(float((e ** 2).sum(0).mean()), 1e-9) * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ world.reshape(n, -1).astype(np.float64))
    return coef[0].reshape(k, 3).astype(np.float32), coef[1:].reshape(e.shape[1], k, 3).astype(np.float32)


def ellipsoid_grid(latitudes: int, longitudes: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere vertices [V,3] of a lat-long grid (y up, longitude 0 facing +z, both poles) and
    outward counter-clockwise triangles [F,3]."""
    theta = np.linspace(0.0, math.pi, latitudes)[1:-1]
    phi = np.arange(longitudes) * 2 * math.pi / longitudes
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(th) * np.sin(ph), np.cos(th), np.sin(th) * np.cos(ph)], -1).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 1.0, 0.0]], ring, [[0.0, -1.0, 0.0]]])
    rings, last = latitudes - 2, len(vertices) - 1
    idx = 1 + np.arange(rings)[:, None] * longitudes + np.arange(longitudes)[None]  # [R,L]
    nxt = np.roll(idx, -1, axis=1)
    faces = [np.stack([np.zeros(longitudes, int), idx[0], nxt[0]], 1)]
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    faces += [np.stack([a, c, d], -1).reshape(-1, 3), np.stack([a, d, b], -1).reshape(-1, 3)]
    faces.append(np.stack([np.full(longitudes, last), nxt[-1], idx[-1]], 1))
    return vertices.astype(np.float32), np.concatenate(faces).astype(np.int64)


def head_template(mean: np.ndarray, blend: np.ndarray, latitudes: int, longitudes: int,
                  sigma_fraction: float = 0.12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracked face (mean [K,3], blendshapes [E,K,3]) -> a whole-head mesh: (vertices at e = 0
    [V,3], blendshapes [E,V,3], faces [F,3]) (module docstring, step 4)."""
    half_width = 0.5 * float(np.linalg.norm(mean[CHEEKS[0]] - mean[CHEEKS[1]]))
    # adult head proportions relative to the cheek contour's width (~14 cm): breadth ~15.5 cm,
    # vertex-to-chin height ~23 cm, front-to-back length ~19.5 cm
    radii = np.array([1.1, 1.64, 1.39]) * half_width
    centre = np.array([mean[list(RIGID), 0].mean(), mean[CHIN, 1] + 0.85 * radii[1], mean[FOREHEAD, 2] - 0.95 * radii[2]])
    unit, faces = ellipsoid_grid(latitudes, longitudes)
    template = centre + unit * radii
    rel = (mean - centre) / radii  # landmarks projected radially onto the ellipsoid
    anchors = centre + rel / np.linalg.norm(rel, axis=1, keepdims=True) * radii
    sigma = sigma_fraction * half_width * 2
    dist2 = ((template[:, None] - anchors[None]) ** 2).sum(-1)  # [V,K]
    w = np.exp(-dist2 / (2 * sigma ** 2))
    # Shepard weights that fade to 0 away from the face (the floor is the weight at 2 sigma)
    w = w / (w.sum(1, keepdims=True) + math.exp(-2.0))
    vertices = template + w @ (mean - anchors)
    blend_v = np.einsum("vk,ekc->evc", w, blend)
    return vertices.astype(np.float32), blend_v.astype(np.float32), faces


class TrackedHeadMesh:
    """A morphable head built by :func:`build_tracked_mesh` (same interface as NHA's other mesh
    models): ``__call__(expression [B,76], shape=None) -> vertices [B,V,3]``; ``faces`` [F,3];
    ``shape_dim`` = 0 (the person's shape is already in the tracked mean)."""

    shape_dim = 0

    def __init__(self, vertices: torch.Tensor, blendshapes: torch.Tensor, faces: torch.Tensor):
        if vertices.dim() != 2 or vertices.shape[1] != 3 or blendshapes.shape[1:] != vertices.shape:
            raise PersonaInputError(f"tracked mesh: vertices {tuple(vertices.shape)}, blendshapes {tuple(blendshapes.shape)}; "
                                    f"expected [V,3] and [E,V,3]")
        self.vertices = vertices.float()
        self.blendshapes = blendshapes.float()
        self.faces = faces.long()

    def __call__(self, expression: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        e = expression.float()
        return self.vertices + torch.einsum("be,evc->bvc", e[:, :self.blendshapes.shape[0]], self.blendshapes)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The arrays to store in a checkpoint (see :meth:`from_tensors`)."""
        return {"vertices": self.vertices, "blendshapes": self.blendshapes, "faces": self.faces}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "TrackedHeadMesh":
        return cls(tensors["vertices"], tensors["blendshapes"], tensors["faces"])


def build_tracked_mesh(images: torch.Tensor, cameras: torch.Tensor, expressions: torch.Tensor, latitudes: int = 30,
                       longitudes: int = 42, size: int = 256) -> tuple[TrackedHeadMesh, TrackedLandmarks]:
    """Training frames [N,3,H,W] in [-1,1], cameras [N,25], expressions [N,76] -> (the tracked
    head mesh, the lifted landmarks it was fitted to)."""
    tracked = track_landmarks(images, cameras, size)
    keep = tracked.found
    mean, blend = fit_blendshapes(tracked.world[keep], torch.as_tensor(expressions).double().numpy()[keep])
    vertices, blend_v, faces = head_template(mean, blend, latitudes, longitudes)
    mesh = TrackedHeadMesh(torch.from_numpy(vertices), torch.from_numpy(blend_v), torch.from_numpy(faces))
    return mesh, tracked
