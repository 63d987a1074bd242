"""Videos a browser plays: H.264 (yuv420p, ``+faststart``) MP4 written by the ffmpeg binary of
the ``imageio-ffmpeg`` package, optionally with an audio track muxed in (AAC).

Small frames are enlarged by an integer factor (nearest neighbour) so the video is at least
:data:`MIN_HEIGHT` pixels high: the synthetic benchmark's 64-px renders are otherwise a stamp on
screen. :func:`probe` and :func:`read_frames` read a video back (codec, size, audio stream, frames)
without ffprobe, for tests and checks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Iterable

import numpy as np

from persona.errors import PersonaFileError
from persona.runs import atomic_write

MIN_HEIGHT = 256


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by ``imageio-ffmpeg``."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise PersonaFileError("imageio-ffmpeg is not installed (pip install -c constraints.txt imageio-ffmpeg): "
                               "it provides the ffmpeg that writes H.264 videos") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def side_by_side(*images: np.ndarray, gap: int = 2) -> np.ndarray:
    """[H,W,3] uint8 images of one height -> one [H, sum(W) + gaps, 3] image, white gaps between."""
    height = images[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, image in enumerate(images):
        parts += ([spacer] if i else []) + [image]
    return np.concatenate(parts, axis=1)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, audio: str | Path | None = None,
                audio_start: float = 0.0, crf: int = 18) -> Path:
    """Write ``frames`` ([H,W,3] uint8 RGB, all one size) as an H.264 MP4 at ``path`` (atomically).

    ``audio``: a sound file whose segment from ``audio_start`` seconds is muxed in as AAC, cut to
    the video's length. Returns ``path``."""
    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    if any(f.shape != frames[0].shape or f.ndim != 3 or f.shape[2] != 3 for f in frames):
        raise ValueError(f"{path}: frames must all be [{height},{width},3] uint8")
    scale = max(1, -(-MIN_HEIGHT // height))
    # nearest-neighbour enlargement, then pad to even sizes (yuv420p needs them)
    vf = f"scale=iw*{scale}:ih*{scale}:flags=neighbor,pad=ceil(iw/2)*2:ceil(ih/2)*2"
    path = Path(path)

    def write(tmp: str) -> None:
        cmd = [ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-"]
        if audio is not None:
            cmd += ["-ss", f"{audio_start:.3f}", "-i", str(audio)]
        cmd += ["-vf", vf, "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-movflags", "+faststart"]
        if audio is not None:
            cmd += ["-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k", "-shortest"]
        cmd += ["-f", "mp4", tmp]
        proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.decode(errors='replace').strip()[-500:]}")

    atomic_write(path, write)
    return path


def probe(path: str | Path) -> dict:
    """What ``ffmpeg -i`` says of a video or sound file: ``{"video": codec or None, "width", "height",
    "audio": codec or None, "duration": seconds or None}``."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True,
                          timeout=60)
    text = proc.stderr
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*?, (\d+)x(\d+)", text)
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+)", text)
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if video is None and audio is None:
        raise PersonaFileError(f"{path}: no video or audio stream ({text.strip().splitlines()[-1] if text.strip() else 'no output'})")
    return {"video": video.group(1) if video else None, "width": int(video.group(2)) if video else 0,
            "height": int(video.group(3)) if video else 0, "audio": audio.group(1) if audio else None,
            "duration": 3600 * int(duration.group(1)) + 60 * int(duration.group(2)) + float(duration.group(3)) if duration else None}


def read_frames(path: str | Path) -> np.ndarray:
    """Every frame of a video -> [T,H,W,3] uint8 RGB."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in reader]
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)
