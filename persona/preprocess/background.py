"""A background plate (``bg/background.jpg``) from a person mask: mediapipe's selfie segmentation
(shipped in the same wheel) on up to ``max_frames`` evenly spaced crops; each pixel is the median of
the frames where it is background; pixels never uncovered are inpainted (OpenCV Telea). NerFACE,
AD-NeRF and DFRF composite their heads over such a plate."""

from __future__ import annotations

import os

import cv2
import numpy as np


def plate(frames: list[np.ndarray], threshold: float = 0.3) -> tuple[np.ndarray, float]:
    """RGB uint8 crops [H,W,3] -> (background [H,W,3] uint8, fraction of pixels inpainted)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    from mediapipe.python.solutions import selfie_segmentation

    from persona.preprocess.landmarks import native_logs_silenced

    with native_logs_silenced():
        seg = selfie_segmentation.SelfieSegmentation(model_selection=0)
        try:
            person = np.stack([seg.process(np.ascontiguousarray(f)).segmentation_mask for f in frames]) > threshold
        finally:
            seg.close()
    stack = np.stack(frames).astype(np.float32)
    # dilate the person a little: hair and shoulder edges are soft
    kernel = np.ones((5, 5), np.uint8)
    person = np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in person])
    masked = np.where(person[..., None], np.nan, stack)
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        bg = np.nanmedian(masked, axis=0)
    hole = np.isnan(bg[..., 0])
    bg = np.nan_to_num(bg).clip(0, 255).astype(np.uint8)
    if hole.any():
        bg = cv2.inpaint(bg, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return bg, float(hole.mean())
