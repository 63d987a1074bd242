"""Cameras in EG3D's convention, and the 25-d label EG3D consumes.

Convention (the one implementation used everywhere in ``persona``):

* world: y up, the face looks toward +z; the head sits near ``PIVOT = (0, 0, 0.2)``.
* ``cam2world`` is a 4x4 OpenCV camera-to-world matrix: camera x right, y down, z forward
  (looking along +z of the camera). Columns 0..2 of the rotation are those axes in world
  coordinates, column 3 the camera centre.
* intrinsics are normalised by the image size: ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` with
  ``f = FOCAL = 4.2647`` and ``cx = cy = 0.5`` (pixel = (x/z * f + cx) * W).
* label (25) = ``cam2world.flatten()`` (16, row major) ++ ``intrinsics.flatten()`` (9).
* ``look_at(yaw, pitch)``: the camera sits at ``PIVOT + RADIUS * (sin(yaw) cos(pitch),
  sin(pitch), cos(yaw) cos(pitch))`` and looks at the pivot, world +y up. yaw 0, pitch 0 is
  frontal: R = diag(1, -1, -1), t = (0, 0, 2.7) + PIVOT. Positive yaw moves the camera toward
  world +x (it sees the face's left cheek, the subject's left); positive pitch moves it up.

Every function accepts numpy arrays or torch tensors (torch in -> torch out, same dtype/device);
computations run in float64 numpy internally where that is simpler.

Conversions from NerFACE / AD-NeRF head poses (OpenGL cameras, pixel focal lengths) live here too
(:func:`nerface_to_label`, :func:`adnerf_to_label`, and their inverses); the file readers are in
:mod:`persona.data.formats`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from persona.errors import PersonaInputError

FOCAL = 4.2647
RADIUS = 2.7
PIVOT = (0.0, 0.0, 0.2)

# Off-axis cameras for novel-view ground truth: name -> (d_yaw_deg, d_pitch_deg).
NOVEL_VIEWS: dict[str, tuple[float, float]] = {
    "yaw-25": (-25.0, 0.0),
    "yaw+25": (25.0, 0.0),
    "pitch-15": (0.0, -15.0),
    "pitch+15": (0.0, 15.0),
}

# OpenGL (x right, y up, z backward) <-> OpenCV (x right, y down, z forward) camera axes.
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


# ----------------------------------------------------------------------------- array helpers
def _to_numpy(x: Any) -> tuple[np.ndarray, Any]:
    """``x`` as float64 numpy plus a restorer giving back the caller's type."""
    if isinstance(x, torch.Tensor):
        dtype = x.dtype if x.is_floating_point() else torch.float32
        device = x.device
        return x.detach().cpu().double().numpy(), lambda y: torch.as_tensor(np.asarray(y), dtype=dtype, device=device)
    arr = np.asarray(x, dtype=np.float64)
    return arr, lambda y: np.asarray(y, dtype=np.float32)


def _like(y: np.ndarray, *refs: Any):
    """Return ``y`` as torch if any ``ref`` is torch (matching its dtype/device), else float32 numpy."""
    for ref in refs:
        if isinstance(ref, torch.Tensor):
            dtype = ref.dtype if ref.is_floating_point() else torch.float32
            return torch.as_tensor(np.asarray(y), dtype=dtype, device=ref.device)
    return np.asarray(y, dtype=np.float32)


# ----------------------------------------------------------------------------- basics
def intrinsics(focal: float = FOCAL, cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """Normalised 3x3 intrinsics ``[[f,0,cx],[0,f,cy],[0,0,1]]`` (float32 numpy)."""
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=np.float32)


def _look_at_np(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """OpenCV cam2world [...,4,4] of cameras at ``eye`` [...,3] looking at ``target``."""
    eye, target = np.broadcast_arrays(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    forward = target - eye
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    up = np.broadcast_to(np.asarray(up, np.float64), forward.shape)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    out = np.zeros(forward.shape[:-1] + (4, 4))
    out[..., :3, 0], out[..., :3, 1], out[..., :3, 2], out[..., :3, 3] = right, down, forward, eye
    out[..., 3, 3] = 1.0
    return out


def look_at(yaw_deg: float, pitch_deg: float, radius: float = RADIUS, pivot: Sequence[float] = PIVOT) -> np.ndarray:
    """cam2world [4,4] (float32) of a camera on the sphere around ``pivot`` (see module doc)."""
    yaw, pitch = math.radians(float(yaw_deg)), math.radians(float(pitch_deg))
    direction = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    pivot = np.asarray(pivot, np.float64)
    return _look_at_np(pivot + radius * direction, pivot).astype(np.float32)


def label(cam2world: Any, intrinsics_: Any) -> Any:
    """EG3D label [...,25] = cam2world [...,4,4] flattened ++ intrinsics [...,3,3] flattened."""
    if isinstance(cam2world, torch.Tensor) or isinstance(intrinsics_, torch.Tensor):
        ref = cam2world if isinstance(cam2world, torch.Tensor) else intrinsics_
        c = torch.as_tensor(cam2world, dtype=ref.dtype, device=ref.device)
        k = torch.as_tensor(intrinsics_, dtype=ref.dtype, device=ref.device)
        batch = torch.broadcast_shapes(c.shape[:-2], k.shape[:-2])
        c, k = c.expand(*batch, 4, 4), k.expand(*batch, 3, 3)
        return torch.cat([c.reshape(*batch, 16), k.reshape(*batch, 9)], dim=-1)
    c, k = np.asarray(cam2world, np.float32), np.asarray(intrinsics_, np.float32)
    batch = np.broadcast_shapes(c.shape[:-2], k.shape[:-2])
    c, k = np.broadcast_to(c, batch + (4, 4)), np.broadcast_to(k, batch + (3, 3))
    return np.concatenate([c.reshape(batch + (16,)), k.reshape(batch + (9,))], axis=-1)


def split_label(label_: Any) -> tuple[Any, Any]:
    """Inverse of :func:`label`: [...,25] -> (cam2world [...,4,4], intrinsics [...,3,3])."""
    if label_.shape[-1] != 25:
        raise ValueError(f"camera label must have 25 values in its last dimension, got shape {tuple(label_.shape)}")
    batch = tuple(label_.shape[:-1])
    return label_[..., :16].reshape(batch + (4, 4)), label_[..., 16:].reshape(batch + (3, 3))


def camera_label(yaw_deg: float, pitch_deg: float, radius: float = RADIUS, pivot: Sequence[float] = PIVOT,
                 focal: float = FOCAL) -> np.ndarray:
    """25-d label (float32) of :func:`look_at` with :func:`intrinsics`."""
    return label(look_at(yaw_deg, pitch_deg, radius, pivot), intrinsics(focal))


def orbit(n: int, yaw_range_deg: float = 30.0, pitch_deg: float = 0.0, **kw: Any) -> np.ndarray:
    """[n,25] labels sweeping yaw linearly over ``[-yaw_range_deg, +yaw_range_deg]``."""
    yaws = np.linspace(-yaw_range_deg, yaw_range_deg, n) if n > 1 else np.zeros(1)
    return np.stack([camera_label(float(y), pitch_deg, **kw) for y in yaws])


def labels_from_angles(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor, radius: float = RADIUS,
                       focal: float = FOCAL) -> torch.Tensor:
    """Batched :func:`camera_label` in torch (float64 inside): [B] angles -> [B,25] float32."""
    yaw, pitch = torch.deg2rad(yaw_deg.double()), torch.deg2rad(pitch_deg.double())
    pivot = torch.tensor(PIVOT, dtype=torch.float64)
    eye = pivot + radius * torch.stack([torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch),
                                        torch.cos(yaw) * torch.cos(pitch)], -1)
    forward = pivot - eye
    forward = forward / forward.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(forward)
    right = torch.linalg.cross(forward, up)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)
    c2w = torch.zeros(yaw.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, down, forward, eye
    c2w[:, 3, 3] = 1
    k = torch.tensor(intrinsics(focal), dtype=torch.float64).expand(yaw.shape[0], 3, 3)
    return label(c2w, k).float()


def camera_with_roll(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Label [25] (float32) of :func:`look_at` rolled by ``roll_deg`` about its optical axis."""
    c2w = look_at(yaw_deg, pitch_deg).astype(np.float64)
    r = math.radians(roll_deg)
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    c2w[:3, :3] = c2w[:3, :3] @ rz
    return label(c2w, intrinsics())


# ----------------------------------------------------------------------------- rays and projection (torch)
def centres(label_: Any) -> Any:
    """Camera centres [...,3] in world coordinates of labels [...,25] (cam2world's column 3)."""
    return split_label(label_)[0][..., :3, 3]


def world_to_camera(points: torch.Tensor, label_: torch.Tensor) -> torch.Tensor:
    """World points [B,N,3] -> OpenCV camera coordinates [B,N,3] (z forward) of cameras [B,25]: R^T (p - t)."""
    cam2world, _ = split_label(label_)
    rotation, centre = cam2world[:, :3, :3], cam2world[:, :3, 3]
    return torch.einsum("bnj,bjk->bnk", points - centre[:, None, :], rotation)


def rays(label_: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of cameras [B,25] through image points ``uv`` [B or 1,R,2] in [0,1] (u right, v down)
    -> (origins [B,R,3] (a broadcast view of the centres), unit directions [B,R,3]), world coordinates.

    The pinhole of :data:`persona.eg3d.rendering.ray_bundle` without its skew term (skew is 0 in
    every persona label); EG3D's own sampler keeps the release's float order, which the shipped
    prior was trained with.
    """
    if label_.dim() != 2 or label_.shape[-1] != 25:
        raise ValueError(f"rays: camera labels [B,25] expected, got {list(label_.shape)}")
    cam2world, intr = split_label(label_.to(torch.float32))
    fx, fy = intr[:, 0, 0, None], intr[:, 1, 1, None]
    cx, cy = intr[:, 0, 2, None], intr[:, 1, 2, None]
    x = (uv[..., 0] - cx) / fx
    y = (uv[..., 1] - cy) / fy
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [B,R,3], z forward
    dirs = torch.nn.functional.normalize(d_cam @ cam2world[:, :3, :3].transpose(1, 2), dim=-1)
    return cam2world[:, None, :3, 3].expand_as(dirs), dirs


def project_with_depth(points: torch.Tensor, label_: torch.Tensor, min_depth: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [K,P,3] into cameras [K,25] -> (uv [K,P,2] in [0,1] image coords, depth [K,P]
    clamped at ``min_depth``): the differentiable torch projection of the NeRF baselines (DFRF's
    reference features). :func:`project` is the numpy/torch one for landmarks and tests."""
    cam2world, intr = split_label(label_.to(torch.float32))
    rot, trans = cam2world[:, :3, :3], cam2world[:, :3, 3]
    local = (points - trans[:, None]) @ rot  # R^T (x - t), as row vectors
    depth = local[..., 2].clamp(min=min_depth)
    u = intr[:, None, 0, 0] * local[..., 0] / depth + intr[:, None, 0, 2]
    v = intr[:, None, 1, 1] * local[..., 1] / depth + intr[:, None, 1, 2]
    return torch.stack([u, v], dim=-1), depth


# ----------------------------------------------------------------------------- rotations
def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix [3,3] (float64)."""
    axis = np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def rotation_about_pivot(cam2world: np.ndarray, d_yaw_deg: float, d_pitch_deg: float,
                         pivot: Sequence[float] = PIVOT) -> np.ndarray:
    """Rotate a camera [4,4] about ``pivot``: first ``d_pitch`` about the camera's own right
    axis (positive = up), then ``d_yaw`` about world +y (positive = toward +x)."""
    c2w = np.asarray(cam2world, np.float64)
    right = c2w[:3, 0]
    # Raising the camera = rotating it about its right axis by -pitch (right x down = forward).
    r_pitch = _axis_angle(right, -math.radians(d_pitch_deg))
    r_yaw = _axis_angle(np.array([0.0, 1.0, 0.0]), math.radians(d_yaw_deg))
    rot = r_yaw @ r_pitch
    pivot = np.asarray(pivot, np.float64)
    out = np.eye(4)
    out[:3, :3] = rot @ c2w[:3, :3]
    out[:3, 3] = rot @ (c2w[:3, 3] - pivot) + pivot
    return out


def novel_view(label_: Any, d_yaw_deg: float, d_pitch_deg: float, pivot: Sequence[float] = PIVOT) -> Any:
    """Label [25] (or [...,25]) of the same camera rotated about the pivot (intrinsics kept)."""
    arr, back = _to_numpy(label_)
    flat = arr.reshape(-1, 25)
    out = flat.copy()
    for i, row in enumerate(flat):
        c2w, k = split_label(row)
        out[i] = label(rotation_about_pivot(c2w, d_yaw_deg, d_pitch_deg, pivot), k)
    return back(out.reshape(arr.shape))


# ----------------------------------------------------------------------------- validation
def check_rigid(matrix: Any, where: str = "transform_matrix", tol: float = 1e-3) -> np.ndarray:
    """Validate a 4x4 rigid transform (finite, orthonormal rotation with det +1, last row 0001).

    Returns it as float64 numpy; raises ``ValueError`` naming ``where`` otherwise.
    """
    m, _ = _to_numpy(matrix)
    if m.shape != (4, 4):
        raise PersonaInputError(f"{where}: expected a 4x4 matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise PersonaInputError(f"{where}: contains NaN or Inf")
    r = m[:3, :3]
    scale = np.cbrt(abs(np.linalg.det(r))) if abs(np.linalg.det(r)) > 1e-12 else 0.0
    if scale == 0.0 or np.abs(r.T @ r / scale**2 - np.eye(3)).max() > tol or np.linalg.det(r) < 0:
        raise PersonaInputError(f"{where}: the 3x3 block is not a rotation (expected R^T R = I, det R = +1)")
    if abs(scale - 1.0) > tol:
        raise PersonaInputError(f"{where}: the rotation is scaled by {scale:.4f} (expected a rigid transform, scale 1)")
    if np.abs(m[3] - np.array([0, 0, 0, 1.0])).max() > tol:
        raise PersonaInputError(f"{where}: last row is {m[3].tolist()}, expected [0, 0, 0, 1]")
    return m


# ----------------------------------------------------------------------------- NerFACE / AD-NeRF
def _opengl_pose_to_label(transform_matrix: Any, fx_px: float, fy_px: float, cx_px: float, cy_px: float,
                          width: int, height: int, scale: float, offset: Sequence[float]) -> np.ndarray:
    m = np.asarray(transform_matrix, np.float64)
    c2w = m @ GL_TO_CV
    c2w[:3, 3] = scale * c2w[:3, 3] + np.asarray(offset, np.float64)
    k = np.array([[abs(fx_px) / width, 0.0, cx_px / width], [0.0, abs(fy_px) / height, cy_px / height], [0, 0, 1.0]])
    return label(c2w, k).astype(np.float32)


def _label_to_opengl_pose(label_: Any, scale: float, offset: Sequence[float]) -> np.ndarray:
    arr, _ = _to_numpy(label_)
    c2w, _ = split_label(arr)
    c2w = np.array(c2w, np.float64)
    c2w[:3, 3] = (c2w[:3, 3] - np.asarray(offset, np.float64)) / scale
    return c2w @ GL_TO_CV  # GL_TO_CV is its own inverse


def nerface_to_label(transform_matrix: Any, intrinsics_px: Sequence[float], width: int, height: int,
                     scale: float = 1.0, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
    """NerFACE frame -> EG3D label [25].

    NerFACE stores, per frame, ``transform_matrix``: the camera-to-world pose in the tracked
    head's frame with NeRF/OpenGL axes (x right, y up, z backward), and per file
    ``intrinsics = [fx, fy, cx, cy]`` with fx, fy in pixels and cx, cy as fractions of the image
    size (NerFACE's ray generator uses ``W * cx`` and divides by the SIGNED fx, fy; its tracker
    writes a negative fx: see :func:`signed_focal_pose`). The head frame maps to EG3D's world by
    ``x_eg3d = scale * x_head + offset`` (defaults: identity, as in the synthetic world).
    """
    fx, fy, cx, cy = (float(v) for v in intrinsics_px)
    pose = signed_focal_pose(transform_matrix, fx, fy)
    out = _opengl_pose_to_label(pose, fx, fy, cx * width, cy * height, width, height, scale, offset)
    return _like(out, transform_matrix)


def signed_focal_pose(transform_matrix: Any, fx: float, fy: float) -> np.ndarray:
    """The pose [4,4] that, with |fx|, |fy|, casts NerFACE's rays for signed ``fx``, ``fy``.

    NerFACE's ray generator divides by the signed focal lengths: a negative fx mirrors the
    pixel-to-ray map in x (fy in y). Both negative is a 180 deg roll of the camera (kept as
    such). One negative is a mirror, which no rotation reproduces: the head frame is mirrored
    with it (x or y of the world negated), so the camera stays a rotation and yaw / roll keep the
    sign NerFACE renders with.
    """
    m = np.array(_to_numpy(transform_matrix)[0], np.float64)
    d = np.diag([-1.0 if fx < 0 else 1.0, -1.0 if fy < 0 else 1.0, 1.0])
    m[:3, :3] = m[:3, :3] @ d
    if np.linalg.det(d) < 0:
        m[:3, :3] = d @ m[:3, :3]
        m[:3, 3] = d @ m[:3, 3]
    return m


def label_to_nerface(label_: Any, width: int, height: int, scale: float = 1.0,
                     offset: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, list[float]]:
    """Inverse of :func:`nerface_to_label`: (transform_matrix [4,4], intrinsics [fx, fy, cx, cy])."""
    arr, _ = _to_numpy(label_)
    _, k = split_label(arr)
    return _label_to_opengl_pose(arr, scale, offset), [float(k[0, 0] * width), float(k[1, 1] * height),
                                                         float(k[0, 2]), float(k[1, 2])]


def adnerf_to_label(transform_matrix: Any, focal_len: float, cx: float, cy: float, width: int, height: int,
                    scale: float = 1.0, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> Any:
    """AD-NeRF frame -> EG3D label [25].

    AD-NeRF's ``transforms_*.json`` hold ``focal_len``, ``cx``, ``cy`` in pixels and per frame a
    ``transform_matrix``: the inverse of the tracked head pose, i.e. the camera-to-world pose of
    the fixed camera in the head's frame, NeRF/OpenGL axes. ``x_eg3d = scale * x_head + offset``.
    """
    out = _opengl_pose_to_label(transform_matrix, float(focal_len), float(focal_len), float(cx), float(cy),
                                width, height, scale, offset)
    return _like(out, transform_matrix)


def label_to_adnerf(label_: Any, width: int, height: int, scale: float = 1.0,
                    offset: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[np.ndarray, float, float, float]:
    """Inverse of :func:`adnerf_to_label`: (transform_matrix [4,4], focal_len, cx, cy) in pixels."""
    arr, _ = _to_numpy(label_)
    _, k = split_label(arr)
    return _label_to_opengl_pose(arr, scale, offset), float(k[0, 0] * width), float(k[0, 2] * width), float(k[1, 2] * height)


def project(points: Any, label_: Any) -> Any:
    """Project world points [...,P,3] with cameras [...,25] to normalised image coords [...,P,2]
    (u right, v down, in [0,1] inside the image)."""
    if isinstance(points, torch.Tensor) or isinstance(label_, torch.Tensor):
        pts = torch.as_tensor(points, dtype=torch.float32)
        lab = torch.as_tensor(label_, dtype=torch.float32)
        c2w, k = split_label(lab)
        rel = pts - c2w[..., None, :3, 3]
        cam = torch.einsum("...ji,...pj->...pi", c2w[..., :3, :3], rel)
        uv = cam[..., :2] / cam[..., 2:3]
        return torch.stack([uv[..., 0] * k[..., None, 0, 0] + k[..., None, 0, 2],
                            uv[..., 1] * k[..., None, 1, 1] + k[..., None, 1, 2]], -1)
    pts, lab = np.asarray(points, np.float64), np.asarray(label_, np.float64)
    c2w, k = split_label(lab)
    rel = pts - c2w[..., None, :3, 3]
    cam = np.einsum("...ji,...pj->...pi", c2w[..., :3, :3], rel)
    uv = cam[..., :2] / cam[..., 2:3]
    return np.stack([uv[..., 0] * k[..., None, 0, 0] + k[..., None, 0, 2],
                     uv[..., 1] * k[..., None, 1, 1] + k[..., None, 1, 2]], -1).astype(np.float32)
