"""FFHQ-style framing from landmarks, smoothed over time, as an axis-aligned square crop.

FFHQ (and EG3D's in-the-wild preprocessing after it) frame a face from the eye centres and the
mouth corners: centre ``c = eye_avg + 0.1 * eye_to_mouth``, side
``2 * max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)``. Like EG3D's crop (and unlike FFHQ's quad)
the crop is not rotated: head roll stays in the image and goes into the camera. Boxes are
smoothed over time (Gaussian, ``sigma`` frames) so the framing does not jitter.

Box = (cx, cy, side) in source pixels. Mediapipe indices: iris centres 468 / 473, mouth corners
61 / 291.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

IRIS = (468, 473)
MOUTH_CORNERS = (61, 291)
MOUTH_RING = (0, 17, 37, 40, 61, 84, 91, 146, 181, 185, 267, 270, 291, 314, 321, 375, 405, 409)


def ffhq_boxes(points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Landmarks [N,478,>=2] pixels -> boxes [N,3] (cx, cy, side) in pixels."""
    p = np.asarray(points, np.float64)[..., :2]
    eye_l, eye_r = p[:, IRIS[0]], p[:, IRIS[1]]
    eye_avg = 0.5 * (eye_l + eye_r)
    mouth_avg = 0.5 * (p[:, MOUTH_CORNERS[0]] + p[:, MOUTH_CORNERS[1]])
    e2e = np.linalg.norm(eye_r - eye_l, axis=1)
    e2m_vec = mouth_avg - eye_avg
    e2m = np.linalg.norm(e2m_vec, axis=1)
    centre = eye_avg + 0.1 * e2m_vec
    side = 2.0 * np.maximum(2.0 * e2e, 1.8 * e2m) * scale
    return np.concatenate([centre, side[:, None]], 1)


def smooth_boxes(boxes: np.ndarray, sigma: float = 2.0, side_sigma: float = 6.0) -> np.ndarray:
    """Gaussian smoothing over time of boxes [N,3] (edges: nearest): the centre with ``sigma``
    frames, the side with ``side_sigma`` (it breathes with the mouth: 1.8 * eye-to-mouth)."""
    out = np.asarray(boxes, np.float64).copy()
    if len(out) < 2:
        return out
    if sigma > 0:
        out[:, :2] = gaussian_filter1d(out[:, :2], sigma, axis=0, mode="nearest")
    if side_sigma > 0:
        out[:, 2] = gaussian_filter1d(out[:, 2], side_sigma, mode="nearest")
    return out


def crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine map source pixels -> crop pixels of a ``size`` square."""
    cx, cy, side = (float(v) for v in box)
    s = size / side
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])


def crop(rgb: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop RGB uint8 [H,W,3] to the box as [size,size,3] (outside the frame: edge pixels)."""
    m = crop_matrix(box, size)
    if m[0, 0] < 0.8:  # shrinking: area-filter the frame first (warpAffine has no area filter)
        small = cv2.resize(rgb, None, fx=m[0, 0], fy=m[1, 1], interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / rgb.shape[1], small.shape[0] / rgb.shape[0]
        m = np.array([[m[0, 0] / sx, 0.0, m[0, 2]], [0.0, m[1, 1] / sy, m[1, 2]]])
        rgb = small
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_crop(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Landmarks [N,P,3] pixels -> normalised crop coords (x, y in [0,1] inside the crop; z in the
    same unit as x)."""
    p = np.asarray(points, np.float64)
    b = np.asarray(boxes, np.float64)
    out = np.empty_like(p)
    out[..., 0] = (p[..., 0] - b[:, None, 0]) / b[:, None, 2] + 0.5
    out[..., 1] = (p[..., 1] - b[:, None, 1]) / b[:, None, 2] + 0.5
    out[..., 2] = p[..., 2] / b[:, None, 2]
    return out


def mouth_boxes(crop_points: np.ndarray, margin: float = 0.25) -> np.ndarray:
    """Mouth boxes [N,4] (x0, y0, x1, y1 in [0,1]) around the lips in crop coords, with a margin."""
    lips = np.asarray(crop_points)[:, list(MOUTH_RING), :2]
    lo, hi = lips.min(1), lips.max(1)
    pad = margin * (hi - lo).max(1, keepdims=True)
    return np.concatenate([lo - pad, hi + pad], 1).clip(0, 1).astype(np.float32)


# The face points that anchor EG3D's framing in the head frame (outer eye corners, mouth corners;
# FFHQ's crop uses the same four) and the unit (outer-eye-corner distance).
FRAME_ANCHOR = (33, 263, 61, 291)
EYE_CORNERS = (33, 263)


def frame_anchor(shape: np.ndarray) -> tuple[np.ndarray, float]:
    """(anchor [3], iod) of a head-frame face shape [478,3]: the mean of :data:`FRAME_ANCHOR` and
    the outer-eye-corner distance, the origin and unit of :func:`framed_boxes`' framing."""
    iod = float(np.linalg.norm(shape[EYE_CORNERS[1]] - shape[EYE_CORNERS[0]]))
    return shape[list(FRAME_ANCHOR)].mean(0), iod


def framed_boxes(boxes: np.ndarray, fit, pivot_rel: np.ndarray, side_rel: float) -> np.ndarray:
    """3D-aware boxes [N,3] (source pixels), as EG3D's own preprocessing frames a face from its 3D
    fit: the box centre where the head's pivot projects and the side proportional to the head's
    projected size, whatever the pose (FFHQ's 2D box shrinks with yaw and pitch and drifts off the
    pivot). ``boxes`` [N,3]: the boxes the landmarks of ``fit`` (a :class:`camera.CameraFit`) are
    in; the pivot is ``anchor + iod * pivot_rel`` in the head frame and the side ``side_rel *
    iod`` (anchor: the mean of :data:`FRAME_ANCHOR`, iod: the outer-eye-corner distance of
    ``fit.shape``). Not smoothed."""
    from persona.preprocess.camera import project

    anchor, iod = frame_anchor(fit.shape)
    pivot = anchor + iod * np.asarray(pivot_rel, np.float64)
    b = np.asarray(boxes, np.float64)
    out = np.empty_like(b)
    out[:, :2] = b[:, :2] + (project(fit, pivot) - 0.5) * b[:, 2:3]
    out[:, 2] = b[:, 2] * side_rel * iod * fit.scales
    return out


FRAMINGS = ("world", "ffhq")
# The synthetic world's framing (its renders are EG3D's framing of the prior's world: cameras at
# radius 2.7 looking at the pivot, focal 4.2647) for framed_boxes: measured by
# persona.preprocess.accuracy.calibrate_framing on held-out clips (identities 4-6, a +-20 deg yaw /
# +-10 deg pitch sweep, 100 frames at 256 px), not on the +-30 / +-20 deg sweeps of identities
# 1-3 that `bench cameras` and the tests score.
WORLD_PIVOT_REL = np.array([0.0, -0.197, -0.217])  # x left, y down, z away from the viewer, in eye-corner distances
WORLD_SIDE_REL = 3.347  # crop side in eye-corner distances
