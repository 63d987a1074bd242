"""``python -m persona bench preprocess``: frames per second of ``persona preprocess`` on one core.

Pinned to one CPU (``sched_setaffinity``) with one OpenCV / torch thread; mediapipe's import and
the quick-look figure are one-off costs and timed apart. Reports wall-clock and process-CPU
frames/s (CPU time, ffmpeg's included, is robust to other processes on a shared machine) and the time per stage.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the ffmpeg decoders)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(video: Path, size: int = 512, max_frames: int | None = None, image_format: str = "jpg") -> dict:
    import cv2

    from persona.preprocess import landmarks, pipeline

    cv2.setNumThreads(1)
    landmarks.import_face_mesh()  # one-off import, not timed
    with tempfile.TemporaryDirectory() as tmp:
        wall0, cpu0 = time.perf_counter(), _cpu()
        out = pipeline.preprocess(video, Path(tmp) / "out", size=size, max_frames=max_frames, progress=False,
                                  quicklook=False, image_format=image_format)
        wall, cpu = time.perf_counter() - wall0, _cpu() - cpu0
        frames = len(list((out / "images").iterdir()))
    return {"frames": frames, "size": size, "wall_s": wall, "cpu_s": cpu, "fps_wall": frames / wall,
            "fps_cpu": frames / max(cpu, 1e-9), "image_format": image_format}


def main(argv: list[str]) -> int:
    from persona.cli import parser

    p = parser("bench preprocess", __doc__)
    p.add_argument("--video", default=None, help="video to preprocess (None: a synthetic talking clip, 256 px)")
    p.add_argument("--frames", type=int, default=100, help="frames to process")
    p.add_argument("--size", type=int, default=512, help="crop size in pixels")
    p.add_argument("--png", action="store_true", help="lossless PNG crops instead of JPEG")
    args = p.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(args.video) if args.video else Path(tmp) / "clip.mp4"
        if args.video is None:
            from persona.preprocess.synthetic_clip import write_clip

            print(f"rendering a {args.frames}-frame synthetic clip at 256 px ...")
            write_clip(video, n_frames=args.frames, resolution=256)
        r = measure(video, args.size, args.frames, "png" if args.png else "jpg")
    print(f"persona preprocess, 1 core: {r['frames']} frames -> {r['size']} px {r['image_format']}: "
          f"{r['fps_wall']:.1f} frames/s wall ({r['wall_s']:.1f} s), {r['fps_cpu']:.1f} frames/s CPU ({r['cpu_s']:.1f} s)")
    return 0
