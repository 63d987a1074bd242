"""EG3D cameras from landmarks: a rigid fit to a per-video canonical face, smoothed.

Plain PnP against a fixed canonical face (e.g. mediapipe's) carries that face's depth errors
into the angles (measured: ~4-5 deg mean, pitch under- and yaw over-estimated). Here the face
shape is estimated per video, from the video, with its depth taken from one of two sources:

* ``depth="landmarks"`` (default): every frame's 3D landmarks (mediapipe's x, y and its depth z)
  are aligned (generalised Procrustes, all 478 points); their mean is the canonical face and
  each frame's rotation is its similarity to it.
* ``depth="motion"``: the depth from how the 2D points move. The least-moving points
  (forehead, nose, eye corners, cheeks) form the rigid set; structure from motion under scaled
  orthography (:func:`structure_from_motion`) re-estimates poses and the rigid shape
  alternately from the 2D landmarks only, the shape pulled weakly (``reg``) toward mediapipe's.
  From a prior with 60 % of the true depth it converges to the true poses on exact points.

Then:

1. The head frame is anatomical and the same for every video: x from the face's left-right
   mirror pairs (eyes, brows, mouth corners, cheeks), y down from the eyes to the mouth corners,
   z = x × y, then pitched by :data:`PITCH_OFFSET_DEG` (the eyes-mouth line leans forward at
   the mouth; the angle is mediapipe's canonical face's). Without it every camera sat 4-7 deg
   low in pitch on the synthetic sweep.
2. Camera = EG3D's convention (persona.cameras): looking at ``PIVOT`` from ``RADIUS``, fx = fy =
   4.2647, cx = cy = 0.5 (the crop provides the framing). Rotations are smoothed over time.

Accuracy (``python -m persona bench cameras``, the synthetic world's ±30° yaw / ±20° pitch
sweep, identities 1-3): mean error 5.5 / 6.8 / 5.5° with ``landmarks``, 7.1 / 7.6 / 6.7° with
``motion`` (the default was chosen on held-out clips, identities 4-6 at ±20° / ±10°: 5.0 / 3.1 /
4.1° vs 8.6 / 5.7 / 5.3°). The limit is the landmarks themselves: mediapipe's 2D points on the
synthetic heads move as if yaw were ~1.1-1.2x and pitch ~0.65x the truth, so even the pose fit
to the shape triangulated with the TRUE cameras errs 5-6° on average. The solvers recover known
poses from exact projections (tests/test_preprocess_camera.py). What remains is largely a per-video
bias of the angles: the best quadratic map of the estimated rotations to the true ones leaves
1.6-2.5° (``accuracy.best_map_labels``), which is what the avatar's correction
(:mod:`persona.ours.camera_correction`) tries to learn.

Landmark input: crop coordinates [N,478,3] (x, y in [0,1] inside the crop, z in x's unit,
larger = farther), i.e. OpenCV camera axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from persona import cameras

# (subject's right, subject's left) mirror pairs of mediapipe's face mesh
MIRROR_PAIRS = ((33, 263), (133, 362), (61, 291), (234, 454), (70, 300), (105, 334), (159, 386), (145, 374),
                (468, 473), (127, 356), (93, 323), (98, 327))
EYE_OUTER = (33, 263)
# Angle between the eyes-to-mouth-corners line and the vertical of a frontal face: the mouth
# corners sit in front of the outer eye corners. 9.0 deg in mediapipe's canonical face model
# (canonical_face_model.obj: landmarks 33/263 at y 2.66, z 3.17; 61/291 at y -4.34, z 4.28;
# atan(1.11 / 7.01)); a fact of that public model, not fitted to any data here.
PITCH_OFFSET_DEG = 9.0
# OpenCV camera axes <-> EG3D world axes for the frontal camera (cam2world rotation diag(1,-1,-1))
_G = np.diag([1.0, -1.0, -1.0])


@dataclass
class CameraFit:
    """``labels`` [N,25] EG3D labels; ``rotations`` [N,3,3] head-to-camera (OpenCV axes);
    ``scales`` [N]; ``shape`` [478,3] canonical face in the head frame (x right, y down, z away
    from the viewer of a frontal face; origin the rigid points' centroid, unit: their RMS radius
    times the shape's gauge, see :func:`project`); ``rigid`` indices used for the poses; ``rms``
    [N] 2D residual of the rigid points (crop units); ``centres`` [N,2] the rigid points' 2D
    centroid per frame (crop units)."""

    labels: np.ndarray
    rotations: np.ndarray
    scales: np.ndarray
    shape: np.ndarray
    rigid: np.ndarray
    rms: np.ndarray
    centres: np.ndarray


def project(fit: CameraFit, point: np.ndarray) -> np.ndarray:
    """Where a head-frame point [3] (the units of ``fit.shape``) projects in every frame: [N,2]
    crop coordinates (the fit's scaled orthography: centre + scale * (rotation @ point)[:2])."""
    return fit.centres + fit.scales[:, None] * (fit.rotations @ np.asarray(point, np.float64))[:, :2]


def _similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Rotation R [3,3] and scale s with s R a ≈ b for centred point sets [K,3]."""
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, 1, d]) @ vt
    s = (sig * [1, 1, d]).sum() / max((a * a).sum(), 1e-12)
    return r, float(s)


def _generalised_procrustes(x: np.ndarray, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Centred frames [N,K,3] -> (mean shape [K,3] of unit RMS, aligned frames [N,K,3])."""
    ref = x[len(x) // 2]
    ref = ref / np.sqrt((ref**2).mean())
    for _ in range(iterations):
        aligned = np.empty_like(x)
        for f in range(len(x)):
            r, s = _similarity(x[f], ref)
            aligned[f] = s * x[f] @ r.T
        ref = aligned.mean(0)
        ref = ref / np.sqrt((ref**2).mean())
    return ref, aligned


def _poses(y: np.ndarray, shape: np.ndarray, steps: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scaled-orthographic poses of centred 2D points y [N,K,2] given the centred shape [K,3]:
    (rotations [N,3,3], scales [N]). Affine fit projected to a scaled rotation, then a few
    Gauss-Newton steps on (rotation, scale), all frames at once (batched matmuls)."""
    a = (np.linalg.pinv(shape) @ y).transpose(0, 2, 1)  # [N,2,3] affine cameras
    u, sig, vt = np.linalg.svd(a, full_matrices=False)
    r2 = u @ vt
    rots = np.concatenate([r2, np.cross(r2[:, 0], r2[:, 1])[:, None]], 1)
    scales = sig.mean(1)
    for _ in range(steps):
        q = shape[None] @ rots.transpose(0, 2, 1)  # [N,K,3] rotated shape
        s = scales[:, None]
        res = y - s[..., None] * q[..., :2]
        # d(s * (w x q)_xy)/dw and d/ds, rows x then y: [N,K,2,4]
        jac = np.zeros(q.shape[:2] + (2, 4))
        jac[:, :, 0, 1], jac[:, :, 0, 2], jac[:, :, 0, 3] = s * q[..., 2], -s * q[..., 1], q[..., 0]
        jac[:, :, 1, 0], jac[:, :, 1, 2], jac[:, :, 1, 3] = -s * q[..., 2], s * q[..., 0], q[..., 1]
        jac = jac.reshape(len(y), -1, 4)
        jt = jac.transpose(0, 2, 1)
        step = np.linalg.solve(jt @ jac + 1e-9 * np.eye(4), jt @ res.reshape(len(y), -1, 1))[..., 0]
        rots = Rotation.from_rotvec(step[:, :3]).as_matrix() @ rots
        scales = scales + step[:, 3]
    return rots, scales


def _shape(y: np.ndarray, rots: np.ndarray, scales: np.ndarray, prior: np.ndarray, reg: float) -> np.ndarray:
    """Least-squares shape [K,3] from centred 2D points y [N,K,2] and poses, pulled to ``prior``."""
    lam = reg * float((scales**2).sum())
    r2 = rots[:, :2]
    m = lam * np.eye(3) + np.einsum("n,nci,ncj->ij", scales**2, r2, r2)
    rhs = lam * prior.T + np.einsum("n,nci,nkc->ik", scales, r2, y)
    return np.linalg.solve(m, rhs).T


def structure_from_motion(y: np.ndarray, prior: np.ndarray, iterations: int = 8,
                          reg: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rigid shape and scaled-orthographic poses from centred 2D tracks ``y`` [N,K,2], starting
    from (and weakly pulled to, ``reg``) the centred ``prior`` [K,3]: poses given the shape, then
    the shape given the poses, ``iterations`` times; the shape keeps the prior's gauge (rotation
    and scale). Returns (shape [K,3], rotations [N,3,3], scales [N], rms [N] 2D residual)."""
    shape = prior.copy()
    for _ in range(iterations):
        rots, scales = _poses(y, shape)
        new = _shape(y, rots, scales, prior, reg)
        new -= new.mean(0)
        r, s = _similarity(new, prior)
        shape = s * new @ r.T
    rots, scales = _poses(y, shape)
    rms = np.sqrt(((y - scales[:, None, None] * (shape[None] @ rots[:, :2].transpose(0, 2, 1))) ** 2).sum(-1).mean(1))
    return shape, rots, scales, rms


def head_frame(shape: np.ndarray, pitch_offset_deg: float = PITCH_OFFSET_DEG) -> np.ndarray:
    """Rotation Q [3,3] whose columns are the head's x (its left), y (down) and z (away from the
    viewer) axes in the shape's coordinates (see the module doc)."""
    x = np.mean([shape[l] - shape[r] for r, l in MIRROR_PAIRS], 0)
    x /= np.linalg.norm(x)
    down = 0.5 * (shape[61] + shape[291]) - 0.5 * (shape[EYE_OUTER[0]] + shape[EYE_OUTER[1]])
    y = down - x * (down @ x)
    y /= np.linalg.norm(y)
    q = np.stack([x, y, np.cross(x, y)], 1)
    return q @ Rotation.from_rotvec([np.radians(pitch_offset_deg), 0, 0]).as_matrix()


def smooth_rotations(rots: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time of rotations [N,3,3] (quaternions, sign-aligned)."""
    if sigma <= 0 or len(rots) < 2:
        return rots
    q = Rotation.from_matrix(rots).as_quat()
    for i in range(1, len(q)):
        if q[i] @ q[i - 1] < 0:
            q[i] = -q[i]
    q = gaussian_filter1d(q, sigma, axis=0, mode="nearest")
    return Rotation.from_quat(q / np.linalg.norm(q, axis=1, keepdims=True)).as_matrix()


def labels_from_rotations(head_to_camera: np.ndarray) -> np.ndarray:
    """EG3D labels [N,25] of cameras looking at the pivot from RADIUS with head-to-camera
    rotations [N,3,3] (head frame of :func:`head_frame`; frontal = identity)."""
    out = []
    for r in head_to_camera:
        c2w = np.eye(4)
        c2w[:3, :3] = _G @ r.T  # world -> head axes is _G; camera -> head is r.T
        c2w[:3, 3] = np.asarray(cameras.PIVOT) - cameras.RADIUS * c2w[:3, 2]
        out.append(cameras.label(c2w, cameras.intrinsics()))
    return np.stack(out).astype(np.float32)


DEPTHS = ("landmarks", "motion")


def fit(points: np.ndarray, iterations: int = 15, reg: float = 1e-3, rigid_fraction: float = 0.4,
        smooth_sigma: float = 1.0, pitch_offset_deg: float = PITCH_OFFSET_DEG, depth: str = "landmarks") -> CameraFit:
    """Cameras of every frame from crop-coordinate landmarks [N,478,3] (see the module doc).

    ``depth="landmarks"`` (default): every frame's 3D landmarks (mediapipe's depth included) are
    aligned by a similarity to their generalised-Procrustes mean, the canonical face.
    ``depth="motion"``: the face's depth from the 2D motion alone (:func:`structure_from_motion`
    on the least-moving landmarks, pulled weakly to mediapipe's depth)."""
    if depth not in DEPTHS:
        raise ValueError(f"camera.fit: depth {depth!r}; expected one of {DEPTHS}")
    pts = np.asarray(points, np.float64)
    n = len(pts)
    centred = pts - pts.mean(1, keepdims=True)
    mean3d, aligned = _generalised_procrustes(centred)
    if depth == "landmarks":
        rs = [_similarity(mean3d, c) for c in centred]
        rots, scales = np.stack([r for r, _ in rs]), np.array([s for _, s in rs])
        q = head_frame(mean3d, pitch_offset_deg)
        head_to_cam = smooth_rotations(rots @ q, smooth_sigma)
        pred = scales[:, None, None] * (mean3d[None] @ rots[:, :2].transpose(0, 2, 1))
        rms = np.sqrt(((centred[..., :2] - pred) ** 2).sum(-1).mean(1))
        return CameraFit(labels_from_rotations(head_to_cam), head_to_cam, scales, mean3d @ q, np.arange(pts.shape[1]),
                         rms, pts[:, :, :2].mean(1))
    spread = np.sqrt(((aligned - mean3d) ** 2).sum(-1).mean(0))
    rigid = np.sort(np.argsort(spread)[: max(24, int(rigid_fraction * pts.shape[1]))])
    # 3D prior shape (mediapipe's depth), centred on the rigid set
    sub = pts[:, rigid] - pts[:, rigid].mean(1, keepdims=True)
    prior_rigid, _ = _generalised_procrustes(sub)
    y = pts[:, rigid, :2] - pts[:, rigid, :2].mean(1, keepdims=True)
    shape, rots, scales, rms = structure_from_motion(y, prior_rigid, iterations if n >= 3 else 0, reg)
    # every point in the same frame: 2D least squares with the final poses, prior = mediapipe's
    r_all, s_all = _similarity(mean3d[rigid] - mean3d[rigid].mean(0), shape)
    prior_all = s_all * (mean3d - mean3d[rigid].mean(0)) @ r_all.T
    t2d = pts[:, rigid, :2].mean(1, keepdims=True)
    full = _shape(pts[:, :, :2] - t2d, rots, scales, prior_all, reg if n >= 3 else 1e6)
    q = head_frame(full, pitch_offset_deg)
    head_to_cam = smooth_rotations(rots @ q, smooth_sigma)
    canonical = (full - full[rigid].mean(0)) @ q
    return CameraFit(labels_from_rotations(head_to_cam), head_to_cam, scales, canonical, rigid, rms, t2d[:, 0])


def rotation_error_deg(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """Angle in degrees between the camera rotations of two label arrays [N,25] -> [N]."""
    ra = np.asarray(labels_a, np.float64)[:, :16].reshape(-1, 4, 4)[:, :3, :3]
    rb = np.asarray(labels_b, np.float64)[:, :16].reshape(-1, 4, 4)[:, :3, :3]
    rel = np.einsum("nji,njk->nik", ra, rb)
    cos = (np.trace(rel, axis1=1, axis2=2) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def yaw_pitch_deg(labels: np.ndarray) -> np.ndarray:
    """(yaw, pitch) [N,2] in degrees of cameras [N,25] about the pivot (persona.cameras.look_at's
    angles: the camera's direction from the pivot)."""
    c2w = np.asarray(labels, np.float64)[:, :16].reshape(-1, 4, 4)
    d = -c2w[:, :3, 2]  # from the pivot toward the camera
    return np.degrees(np.stack([np.arctan2(d[:, 0], d[:, 2]), np.arcsin(np.clip(d[:, 1], -1, 1))], 1))
