"""persona.preprocess.expression without mediapipe: the eye-appearance dims on drawn eyes."""

import cv2
import numpy as np

from persona.preprocess import expression as E

SKIN = (200, 150, 120)


def _face(open_eyes: bool, roll_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A 128-px skin-coloured image with two eyes (open: white sclera and a dark iris; closed: a
    lid line) and landmarks [478,2] with only the eye corners set, rotated by ``roll_deg``."""
    img = np.full((128, 128, 3), SKIN, np.uint8)
    pts = np.zeros((478, 2))
    for (outer, inner), (x0, x1) in zip(E.EYE_CORNERS, ((30, 54), (98, 74))):
        cx = (x0 + x1) // 2
        if open_eyes:
            cv2.ellipse(img, (cx, 60), (12, 6), 0, 0, 360, (245, 245, 245), -1)
            cv2.circle(img, (cx, 60), 5, (40, 30, 20), -1)
        else:
            cv2.line(img, (x0 + 2, 60), (x1 - 2, 60), (120, 80, 60), 1)
        pts[outer], pts[inner] = (x0, 60), (x1, 60)
    rot = cv2.getRotationMatrix2D((64, 64), roll_deg, 1.0)
    img = cv2.warpAffine(img, rot, (128, 128), borderMode=cv2.BORDER_REPLICATE)
    return img, pts @ rot[:, :2].T + rot[:, 2]


def test_eye_appearance_sees_open_and_closed_eyes_whatever_the_roll():
    for roll in (0.0, 25.0):
        shown_open = E.eye_appearance(*_face(True, roll))
        shown_closed = E.eye_appearance(*_face(False, roll))
        assert shown_open.shape == (4,) and shown_open.dtype == np.float32
        assert shown_open[0] > 0.15 and shown_open[2] > 0.15, shown_open  # sclera + iris: a fifth of the patch
        assert shown_closed[0] < 0.05 and shown_closed[2] < 0.05, shown_closed
        assert shown_open[1] > 2 * shown_closed[1] and shown_open[3] > 2 * shown_closed[3]
    assert np.allclose(E.eye_appearance(*_face(True, 0.0)), E.eye_appearance(*_face(True, 25.0)), atol=0.04)


def test_codes_hold_the_eye_dims_after_the_named_distances():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(5, 478, 3))
    rots = np.repeat(np.eye(3)[None], 5, 0)
    eyes = np.arange(20, dtype=np.float32).reshape(5, 4)
    code = E.codes(pts, rots, eyes)
    assert code.shape == (5, E.CODE_DIM) == (5, 76)
    assert np.allclose(code[:, 12:16], eyes - np.median(eyes, 0))  # minus the video's median, like every dim
    assert np.allclose(E.codes(pts, rots)[:, 12:16], 0) and np.allclose(E.codes(pts, rots)[:, 16:], code[:, 16:])


def test_the_sclera_dims_ignore_a_dark_brow_in_the_patch():
    """A closed eye under a brow low enough to enter the patch: the "not skin" share rises with the
    brow, the sclera share (dims 1 and 3: whiter than the skin) stays at zero; open eyes show it."""
    assert E.EYE_NAMED[1] == "eye_sclera_left" and E.EYE_NAMED[3] == "eye_sclera_right"
    img, pts = _face(False)
    for x0, x1 in ((26, 58), (70, 102)):
        cv2.rectangle(img, (x0, 52), (x1, 55), (30, 20, 15), -1)  # a dark brow just above the lid line
    closed = E.eye_appearance(img, pts)
    open_ = E.eye_appearance(*_face(True))
    assert closed[0] > 0.05 and closed[2] > 0.05, closed  # the brow is not skin
    assert closed[1] == 0 and closed[3] == 0, closed
    assert open_[1] > 0.1 and open_[3] > 0.1, open_
