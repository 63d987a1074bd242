"""Quick-look figure of a preprocessed folder: for a few frames the crop with its landmarks, mouth
box and camera axes (the head frame's x / y / z projected from the pivot), and the estimated
yaw / pitch over the clip, for the user to check by eye."""

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
