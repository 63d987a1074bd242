"""Quick-look of a preprocessed folder, for the user to check by eye: a figure (a few crops with
their landmarks, mouth box and camera axes - world x / y / z drawn from the pivot - and the
estimated yaw / pitch and crop box over the clip) and, on request, a video of every crop with the
same overlay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from persona import cameras
from persona.data import formats
from persona.runs import atomic_write_bytes


def axes_uv(label: np.ndarray, length: float = 0.25) -> np.ndarray:
    """[4,2] crop coords of the pivot and the tips of the world x, y, z axes."""
    pivot = np.asarray(cameras.PIVOT, np.float64)
    pts = np.stack([pivot, pivot + [length, 0, 0], pivot + [0, length, 0], pivot + [0, 0, length]])
    return np.asarray(cameras.project(pts, label), np.float64)


def figure(root: Path, names: list[str], crop_points: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
           source_size: tuple[int, int], n_show: int = 6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona.preprocess.camera import yaw_pitch_deg
    from persona.preprocess.crop import mouth_boxes

    n = len(names)
    show = np.unique(np.linspace(0, n - 1, min(n_show, n)).round().astype(int))
    fig = plt.figure(figsize=(2.2 * len(show), 4.6))
    mouths = mouth_boxes(crop_points[show])
    for j, k in enumerate(show):
        ax = fig.add_subplot(2, len(show), j + 1)
        img = formats.read_image(root / names[k])
        s = img.shape[0]
        ax.imshow(img)
        ax.scatter(crop_points[k, :, 0] * s, crop_points[k, :, 1] * s, s=0.3, c="lime")
        x0, y0, x1, y1 = mouths[j] * s
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], c="yellow", lw=0.8)
        uv = axes_uv(labels[k]) * s
        for tip, colour in zip(uv[1:], ("red", "green", "blue")):
            ax.plot([uv[0, 0], tip[0]], [uv[0, 1], tip[1]], c=colour, lw=1.5)
        ax.set_title(f"{Path(names[k]).stem}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(2, 2, 3)
    yp = yaw_pitch_deg(labels)
    ax.plot(yp[:, 0], label="yaw")
    ax.plot(yp[:, 1], label="pitch")
    ax.set_xlabel("frame")
    ax.set_ylabel("degrees")
    ax.legend(fontsize=7)
    ax.set_title("estimated camera", fontsize=8)
    ax = fig.add_subplot(2, 2, 4)
    w, h = source_size
    ax.plot(boxes[:, 0] / w, label="crop centre x / W")
    ax.plot(boxes[:, 1] / h, label="crop centre y / H")
    ax.plot(boxes[:, 2] / max(w, h), label="crop side / max(W,H)")
    ax.set_xlabel("frame")
    ax.legend(fontsize=7)
    ax.set_title("crop box in the source", fontsize=8)
    fig.tight_layout()
    return fig


def save(path: Path, root: Path, names: list[str], crop_points: np.ndarray, labels: np.ndarray,
         boxes: np.ndarray, source_size: tuple[int, int]) -> Path:
    import matplotlib.pyplot as plt

    fig = figure(root, names, crop_points, labels, boxes, source_size)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def overlay(rgb: np.ndarray, points: np.ndarray, label: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """A crop [S,S,3] uint8 with its landmarks [478,>=2] (crop coords), mouth box [4] and camera axes drawn."""
    import cv2

    img = np.ascontiguousarray(rgb.copy())
    s = img.shape[0]
    r = max(1, s // 256)
    for x, y in (points[:, :2] * s).astype(int):
        cv2.circle(img, (int(x), int(y)), r, (0, 255, 0), -1)
    x0, y0, x1, y1 = (mouth * s).astype(int)
    cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), (255, 255, 0), max(1, s // 256))
    uv = (axes_uv(label) * s).astype(int)
    for tip, colour in zip(uv[1:], ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
        cv2.line(img, tuple(int(v) for v in uv[0]), tuple(int(v) for v in tip), colour, max(1, s // 128))
    return img


def save_video(path: Path, root: Path, names: list[str], crop_points: np.ndarray, labels: np.ndarray,
               fps: float) -> Path:
    """``quicklook.mp4``: every crop with :func:`overlay` (H.264, atomic)."""
    from persona.preprocess.crop import mouth_boxes
    from persona.preprocess.decode import write_mp4

    mouths = mouth_boxes(crop_points)
    frames = [overlay(formats.read_image(root / n), crop_points[k], labels[k], mouths[k]) for k, n in enumerate(names)]
    s = frames[0].shape[0] - frames[0].shape[0] % 2
    return write_mp4(path, np.stack([f[:s, :s] for f in frames]), fps)
