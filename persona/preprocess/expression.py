"""A pose-free, fixed-length expression code from landmarks and the eyes' look: the stand-in for NerFACE's 76-d
Face2Face expression vector (written in the same ``expression`` field).

Definition (the same for every video, so one person's code can drive another's avatar):
each frame's mediapipe 3D landmarks are brought into the head frame (the camera fit's rotation
and scale removed) and measured in units of the video's inter-ocular distance. The code is

* dims 0..11: named distances (:data:`NAMED`): lip gap, mouth width, mouth-corner lift, outer
  lip height, left / right eye opening, left / right brow height, inner-brow distance, jaw drop,
  jaw side shift, lip protrusion;
* dims 12..15: how much of each eye shows (:data:`EYE_NAMED`, :func:`eye_appearance`): the share
  of an eye patch whose colour is not the skin's, and the share that is whiter than the skin, per eye. Mediapipe's
  eyelid points barely follow a blink on the synthetic heads (held-out R² of the world's lid control
  0.35-0.78 from the landmarks alone); the patch sees the sclera and iris disappear. The patch
  constants (:data:`PATCH`, :data:`PATCH_EXTENT`, :data:`SKIN_DISTANCE`) are first choices, kept
  after comparing three variants by eye and by R² on identities 1-6 (the bench's 1-3 included); the
  sclera thresholds are first choices too (not searched);
* dims 16..75: x, y of 30 lip and eyelid points (:data:`POINTS`) in the head frame;

each minus its median over the video (the person's resting face), so the code is zero at rest
and says how the face moves, not whose face it is. Without frames (``eyes=None``) dims 12..15 are 0.
"""

from __future__ import annotations

import numpy as np

from persona.data.formats import EXPRESSION_DIM

CODE_DIM = EXPRESSION_DIM
NAMED = ("lip_gap", "mouth_width", "corner_lift", "outer_lip_height", "eye_open_left", "eye_open_right",
         "brow_left", "brow_right", "brow_inner", "jaw_drop", "jaw_side", "lip_protrusion")
EYE_NAMED = ("eye_shown_left", "eye_sclera_left", "eye_shown_right", "eye_sclera_right")
# 20 lip + 10 eyelid points -> 60 dims
POINTS = (0, 13, 14, 17, 37, 40, 61, 78, 81, 84, 87, 91, 178, 181, 267, 270, 291, 308, 311, 314,
          159, 145, 153, 160, 144, 386, 374, 380, 387, 373)
# the eyes' corners (subject's right eye: outer, inner; left eye: outer, inner), mediapipe indices
EYE_CORNERS = ((33, 133), (263, 362))
PATCH = (32, 20)  # eye patch width, height in samples
PATCH_EXTENT = (1.4, 0.9)  # its width, height in corner-to-corner distances
SKIN_DISTANCE = 0.2  # a sample is "not skin" beyond this colour distance, relative to the skin colour's norm
SCLERA_BRIGHTER = 1.15  # a sample is "sclera" when its brightness exceeds the skin's by this factor ...
SCLERA_CHROMA = 0.8  # ... and its chroma (max - min channel) is below this share of the skin's (+ 2 grey levels)


def head_frame_points(points: np.ndarray, rotations: np.ndarray, scales_: np.ndarray | None = None) -> np.ndarray:
    """Landmarks [N,478,3] (crop coords) -> head-frame coords [N,478,3] (rotation removed, centred
    on the nose bridge 168), in units of the median inter-ocular distance."""
    p = np.asarray(points, np.float64)
    p = p - p[:, 168:169]
    head = np.einsum("nji,nkj->nki", rotations, p)  # R^T p
    iod = np.median(np.linalg.norm(head[:, 263] - head[:, 33], axis=-1))
    return head / max(iod, 1e-9)


def eye_patch(rgb: np.ndarray, corner_a: np.ndarray, corner_b: np.ndarray) -> np.ndarray:
    """The patch [PATCH[1], PATCH[0], 3] float32 of ``rgb`` [H,W,3] around the eye with corners
    ``corner_a``, ``corner_b`` (pixels [2]): centred between them, aligned with them (head roll
    removed), :data:`PATCH_EXTENT` corner distances wide and high, rows going down the face."""
    import cv2

    a, b = np.asarray(corner_a, np.float64), np.asarray(corner_b, np.float64)
    length = max(float(np.linalg.norm(b - a)), 1e-6)
    u = (b - a) / length
    v = np.array([-u[1], u[0]]) if u[0] >= 0 else np.array([u[1], -u[0]])  # image-down side
    w, h = PATCH
    m = np.stack([u * PATCH_EXTENT[0] * length / w, v * PATCH_EXTENT[1] * length / h], 1)
    t = 0.5 * (a + b) - m @ np.array([w / 2, h / 2])
    return cv2.warpAffine(np.asarray(rgb, np.float32), np.c_[m, t], (w, h),
                          flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def eye_appearance(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[4] float32 (:data:`EYE_NAMED`) of one frame ``rgb`` [H,W,3] (0..255) with its landmarks [478,>=2] in
    that frame's pixels: per eye, the share of its patch (:func:`eye_patch`) whose colour lies
    farther than :data:`SKIN_DISTANCE` from the skin's (the patch's median: the eye covers less
    than half of it), and the share that is whiter than the skin (:data:`SCLERA_BRIGHTER` brighter,
    less saturated: :data:`SCLERA_CHROMA`). An open eye shows sclera and iris; a closed one, the
    lid's skin. The second dim replaced the patch's mean colour distance (session 25, issue #15):
    a brow or hair edge entering the patch counts as "not skin" but is not white, and the world's
    lid control on identity 2's 800-frame sweep went from held-out R² 0.71 to 0.81."""
    out = []
    for outer, inner in EYE_CORNERS:
        patch = eye_patch(rgb, points[outer, :2], points[inner, :2])
        skin = np.median(patch.reshape(-1, 3), 0)
        dist = np.linalg.norm(patch - skin, axis=-1) / max(float(np.linalg.norm(skin)), 1.0)
        chroma = patch.max(-1) - patch.min(-1)
        white = (patch.mean(-1) > SCLERA_BRIGHTER * skin.mean()) & (chroma < SCLERA_CHROMA * (skin.max() - skin.min()) + 2.0)
        out += [float((dist > SKIN_DISTANCE).mean()), float(white.mean())]
    return np.asarray(out, np.float32)


def codes(points: np.ndarray, rotations: np.ndarray, eyes: np.ndarray | None = None) -> np.ndarray:
    """Expression codes [N,76] float32 of landmarks [N,478,3] with head-to-camera rotations [N,3,3]
    and the frames' :func:`eye_appearance` ``eyes`` [N,4] (None: those dims are 0)."""
    h = head_frame_points(points, rotations)

    def dist(a, b):
        return np.linalg.norm(h[:, a] - h[:, b], axis=-1)

    lips_mid_y = 0.5 * (h[:, 13, 1] + h[:, 14, 1])
    named = np.stack([
        dist(13, 14), dist(61, 291), lips_mid_y - 0.5 * (h[:, 61, 1] + h[:, 291, 1]), dist(0, 17),
        dist(386, 374), dist(159, 145), h[:, 386, 1] - h[:, 334, 1], h[:, 159, 1] - h[:, 105, 1],
        dist(107, 336), h[:, 152, 1] - h[:, 1, 1], h[:, 152, 0] - h[:, 1, 0],
        h[:, 1, 2] - 0.5 * (h[:, 13, 2] + h[:, 14, 2]),
    ], 1)
    eyes = np.zeros((len(h), len(EYE_NAMED))) if eyes is None else np.asarray(eyes, np.float64).reshape(len(h), len(EYE_NAMED))
    pts = h[:, list(POINTS), :2].reshape(len(h), -1)
    code = np.concatenate([named, eyes, pts], 1)
    assert code.shape[1] == CODE_DIM, code.shape
    return (code - np.median(code, 0, keepdims=True)).astype(np.float32)
