"""A pose-free, fixed-length expression code from landmarks: the stand-in for NerFACE's 76-d
Face2Face expression vector (written in the same ``expression`` field).

Definition (the same for every video, so one person's code can drive another's avatar):
each frame's mediapipe 3D landmarks are brought into the head frame (the camera fit's rotation
and scale removed) and measured in units of the video's inter-ocular distance. The code is

* dims 0..11: named distances (:data:`NAMED`): lip gap, mouth width, mouth-corner lift, outer
  lip height, left / right eye opening, left / right brow height, inner-brow distance, jaw drop,
  jaw side shift, lip protrusion;
* dims 12..75: x, y of 32 lip and eyelid points (:data:`POINTS`) in the head frame;

each minus its median over the video (the person's resting face), so the code is zero at rest
and says how the face moves, not whose face it is.
"""

from __future__ import annotations

import numpy as np

from persona.data.formats import EXPRESSION_DIM

CODE_DIM = EXPRESSION_DIM
NAMED = ("lip_gap", "mouth_width", "corner_lift", "outer_lip_height", "eye_open_left", "eye_open_right",
         "brow_left", "brow_right", "brow_inner", "jaw_drop", "jaw_side", "lip_protrusion")
# 20 lip + 12 eyelid points -> 64 dims
POINTS = (0, 13, 14, 17, 37, 40, 61, 78, 81, 84, 87, 91, 178, 181, 267, 270, 291, 308, 311, 314,
          159, 145, 158, 153, 160, 144, 386, 374, 385, 380, 387, 373)


def head_frame_points(points: np.ndarray, rotations: np.ndarray, scales_: np.ndarray | None = None) -> np.ndarray:
    """Landmarks [N,478,3] (crop coords) -> head-frame coords [N,478,3] (rotation removed, centred
    on the nose bridge 168), in units of the median inter-ocular distance."""
    p = np.asarray(points, np.float64)
    p = p - p[:, 168:169]
    head = np.einsum("nji,nkj->nki", rotations, p)  # R^T p
    iod = np.median(np.linalg.norm(head[:, 263] - head[:, 33], axis=-1))
    return head / max(iod, 1e-9)


def codes(points: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Expression codes [N,76] float32 of landmarks [N,478,3] with head-to-camera rotations [N,3,3]."""
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
    pts = h[:, list(POINTS), :2].reshape(len(h), -1)
    code = np.concatenate([named, pts], 1)
    return (code - np.median(code, 0, keepdims=True)).astype(np.float32)
