"""Decode a talking-head source into RGB frames at a fixed rate and 16 kHz mono audio.

Sources: a video file (any container ffmpeg reads: mp4, mov, avi, mkv, webm, ...), or a folder
of frames (``*.png`` / ``*.jpg``, in file-name order; their rate is ``--fps``). Video and audio
go through the ffmpeg binary that the ``imageio-ffmpeg`` pip package ships (no system ffmpeg).

* :func:`probe` -> :class:`SourceInfo` (size, native fps, duration, whether there is audio)
* :func:`iter_frames` -> RGB uint8 [H,W,3] frames resampled to ``fps`` (ffmpeg's ``fps`` filter:
  frame i is the source frame shown at time i / fps), at most ``max_frames``
* :func:`read_audio` -> float32 [T] at 16 kHz mono, or None when the file has no audio track
* :func:`write_mp4` encodes frames (+ an optional waveform) to an H.264 mp4 (atomic)
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from persona.errors import PersonaFileError, PersonaInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SAMPLE_RATE = 16000
_MAX_SIDE = 8192  # bound on frame sizes read from a file header before allocating


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by ``imageio-ffmpeg``."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise PersonaFileError("imageio-ffmpeg is not installed (pip install -c constraints.txt -e .)") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class SourceInfo:
    """What a source holds: ``kind`` 'video' | 'frames'; ``size`` (W, H); ``fps`` native rate
    (None for a frame folder); ``duration`` seconds (None if unknown); ``has_audio``;
    ``frame_files`` (a frame folder's files, in order)."""

    path: Path
    kind: str
    size: tuple[int, int]
    fps: float | None
    duration: float | None
    has_audio: bool
    frame_files: list[Path]


def frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def probe(path: str | Path, frames: list[Path] | None = None) -> SourceInfo:
    """Inspect a video file or a frame folder (``frames``: that folder's files in order, if the
    caller chose them). Raises a one-line error for a missing, empty or unreadable source."""
    path = Path(path)
    if not path.exists():
        raise PersonaFileError(f"{path}: input not found (expected a video file or a folder of frames)")
    if path.is_dir():
        files = frame_files(path) if frames is None else frames
        if not files:
            raise PersonaInputError(f"{path}: no frames (expected *.png or *.jpg files, or a NerFACE / AD-NeRF folder)")
        from persona.data.formats import read_image

        try:
            h, w = read_image(files[0]).shape[:2]
        except (ValueError, FileNotFoundError) as exc:
            raise PersonaInputError(str(exc)) from exc
        return SourceInfo(path, "frames", (w, h), None, None, False, list(files))
    if path.stat().st_size == 0:
        raise PersonaInputError(f"{path}: empty file (0 bytes); expected a video")
    import imageio_ffmpeg

    try:
        gen = imageio_ffmpeg.read_frames(str(path))
        meta = next(gen)
        gen.close()
    except (IOError, OSError, RuntimeError, StopIteration) as exc:
        first = str(exc).strip().splitlines()
        raise PersonaInputError(f"{path}: not a readable video (ffmpeg: {first[-1][:120] if first else 'no video stream'})") from exc
    w, h = (int(v) for v in meta.get("source_size") or meta["size"])
    if not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE):
        raise PersonaInputError(f"{path}: frame size {w}x{h} outside 1..{_MAX_SIDE}")
    fps = float(meta["fps"]) if meta.get("fps") else None
    dur = float(meta["duration"]) if meta.get("duration") else None
    return SourceInfo(path, "video", (w, h), fps, dur, bool(meta.get("audio_codec")), [])


def iter_frames(info: SourceInfo, fps: float = 25.0, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames [H,W,3] of the source at ``fps`` (a video is resampled by ffmpeg; a frame
    folder is taken as already at ``fps``)."""
    limit = max_frames if max_frames is not None else 1 << 62
    if info.kind == "frames":
        from persona.data.formats import read_image

        size = (info.size[1], info.size[0])
        for i, f in enumerate(info.frame_files[:limit]):
            try:
                yield read_image(f, size=size, where=f"{info.path} frame {i}")
            except (ValueError, FileNotFoundError) as exc:
                raise PersonaInputError(str(exc)) from exc
        return
    w, h = info.size
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(info.path), "-map", "0:v:0", "-vf", f"fps={fps:g}",
           "-f", "rawvideo", "-pix_fmt", "rgb24"]
    if max_frames is not None:
        cmd += ["-frames:v", str(int(max_frames))]
    proc = subprocess.Popen(cmd + ["-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    n_bytes = w * h * 3
    try:
        while True:
            buf = proc.stdout.read(n_bytes)
            if len(buf) < n_bytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:
        raise PersonaInputError(f"{info.path}: ffmpeg could not decode the video ({err.splitlines()[-1][:160] if err else rc})")


def read_audio(info: SourceInfo) -> np.ndarray | None:
    """The first audio track as float32 [T] in [-1,1], 16 kHz mono; None without an audio track."""
    if info.kind != "video" or not info.has_audio:
        return None
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(info.path), "-map", "0:a:0", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise PersonaInputError(f"{info.path}: ffmpeg could not decode the audio track ({err.splitlines()[-1][:160] if err else res.returncode})")
    return (np.frombuffer(res.stdout, "<i2").astype(np.float32) / 32768.0)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, waveform: np.ndarray | None = None,
              sample_rate: int = SAMPLE_RATE, crf: int = 18) -> Path:
    """Encode RGB uint8 frames [N,H,W,3] (H, W even) as H.264 mp4, with AAC audio of a mono
    ``waveform`` [T] in [-1,1] when given. Written to a temp file, then renamed."""
    from persona.data.audio import wav_bytes

    path = Path(path)
    frames = np.ascontiguousarray(frames, np.uint8)
    n, h, w, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-"]
        if waveform is not None:
            wav = Path(tmp) / "audio.wav"
            wav.write_bytes(wav_bytes(waveform, sample_rate))
            cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "128k"]
        out = Path(tmp) / ("video" + path.suffix)
        cmd += ["-c:v", "libx264", "-preset", "fast", "-crf", str(crf), "-pix_fmt", "yuv420p", str(out)]
        res = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
        if res.returncode != 0:
            raise RuntimeError(f"{path}: ffmpeg could not encode ({res.stderr.decode(errors='replace').strip()[-200:]})")
        os.replace(out, path)
    return path
