"""``python -m persona preprocess INPUT --out DIR``: a talking-head source -> a training folder.

INPUT: a video file, a folder of frames, or a NerFACE / AD-NeRF folder (its frames in video
order, its ``aud.wav`` / ``aud.npy``). DIR gets what ``persona train --data DIR`` reads::

    transforms_{train,val,test}.json   NerFACE layout (+ fps, num_frames; per frame frame_index,
                                       camera_label (EG3D), mouth_box); ``expression`` = the
                                       landmark code of persona.preprocess.expression
    images/NNNNN.jpg                   crops at --size (NNNNN = frame number; JPEG quality 95, or
                                       lossless PNG with --png), framed as the prior's world frames
                                       a head (--framing world: the pivot at the centre, from the 3D
                                       fit) or by FFHQ's 2D box (--framing ffhq)
    aud.wav, aud.npy [N,16,29]         16 kHz mono audio and its 25 fps windows (if audio)
    bg/background.jpg                  background plate (selfie segmentation, median, inpainted)
    dataset.json                       EG3D labels of every written frame
    landmarks.npy [N,478,3]            mediapipe landmarks in crop coordinates
    boxes.npy [N,3]                    crop boxes (centre x, y, side) in source pixels
    quicklook.png                      landmarks, crop boxes, camera axes, pose trajectory
    quicklook.mp4                      every crop with that overlay (--quicklook-video)
    preprocess.json                    what was done (source, counts, dropped frames, versions)

The folder is built in a hidden sibling and renamed at the end: an interrupted run never leaves
a folder that passes for complete. An existing DIR is replaced only with ``--force`` and only if
``persona preprocess`` wrote it (it has ``preprocess.json``).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persona import cameras
from persona.data import audio as audio_mod
from persona.data import formats
from persona.errors import PersonaFileError, PersonaInputError
from persona.runs import staged_dir
from persona.preprocess import camera, crop, decode, expression, landmarks

MIN_FRAMES = 10  # fewer frames with a face than this is too short to train on
MARKER = "preprocess.json"


def warn(message: str) -> None:
    print(f"persona preprocess: warning: {message}", file=sys.stderr)


@dataclass
class Source:
    """A resolved input: ``info`` (frames), ``waveform`` 16 kHz or None, ``windows`` (a folder's
    own aud.npy) or None."""

    info: decode.SourceInfo
    waveform: np.ndarray | None
    windows: np.ndarray | None


def _folder_frames(root: Path) -> tuple[list[Path], np.ndarray | None, np.ndarray | None]:
    """Frames (video order), waveform and windows of a NerFACE / AD-NeRF folder, else ([], None, None)."""
    wave_ = windows = None
    if (root / "aud.wav").is_file():
        w, rate = audio_mod.read_wav(root / "aud.wav")
        if rate != decode.SAMPLE_RATE:
            from scipy.signal import resample_poly
            import math

            g = math.gcd(rate, decode.SAMPLE_RATE)
            w = resample_poly(w, decode.SAMPLE_RATE // g, rate // g).astype(np.float32)
        wave_ = w
    elif (root / "aud.npy").is_file():
        windows = formats.read_audio_windows(root / "aud.npy")
    if formats.is_adnerf(root):
        frames = {}
        for split in ("train", "val"):
            if (root / formats.adnerf_split_file(split)).is_file():
                s = formats.read_adnerf(root, split)
                kind = "com_imgs" if (root / "com_imgs").is_dir() else "head_imgs"
                frames.update({f["img_id"]: s.image_path(i, kind) for i, f in enumerate(s.frames)})
        return [frames[k] for k in sorted(frames)], wave_, windows
    if any((root / f"transforms_{s}.json").is_file() for s in ("train", "val", "test")):
        frames = {}
        for split in ("train", "val", "test"):
            if (root / f"transforms_{split}.json").is_file():
                s = formats.read_nerface(root, split)
                for k, f in enumerate(s.frames):
                    frames.setdefault(int(f.get("frame_index", len(frames))), s.image_path(k))
        return [frames[k] for k in sorted(frames)], wave_, windows
    return [], None, None


def resolve(path: str | Path) -> Source:
    path = Path(path)
    if path.is_dir():
        files, wave_, windows = _folder_frames(path)
        info = decode.probe(path, files or None)
        return Source(info, wave_, windows)
    info = decode.probe(path)
    return Source(info, decode.read_audio(info), None)


def _replaceable(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not force:
        raise PersonaFileError(f"{out}: already exists (use --force to replace a folder persona preprocess wrote)")
    if not (out / MARKER).is_file():
        raise PersonaFileError(f"{out}: exists and was not written by persona preprocess (no {MARKER}); not replacing it")


def _splits(n: int, test_fraction: float) -> dict[str, list[int]]:
    n_test = max(1, int(round(test_fraction * n)))
    train, test = list(range(n - n_test)), list(range(n - n_test, n))
    return {"train": train, "val": test[: max(1, len(test) // 2)], "test": test}


def encode_image(rgb: np.ndarray, image_format: str) -> bytes:
    """File contents of an RGB uint8 crop: 'jpg' (quality 95, ~2 ms at 512 px) or 'png' (lossless,
    compression 1, ~20x slower)."""
    if image_format == "png":
        return formats.png_bytes(rgb, compression=1)
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _tqdm(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return lambda it: tqdm(it, total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


def preprocess(input_path: str | Path, out: str | Path, size: int = 512, fps: float = 25.0,
               max_frames: int | None = None, missing: str = "drop", test_fraction: float = 0.1,
               force: bool = False, progress: bool = True, quicklook: bool = True, image_format: str = "jpg",
               quicklook_video: bool = False, framing: str = "world") -> Path:
    """Run the whole preprocessing (see the module doc); returns ``out``."""
    out = Path(out)
    if not 16 <= size <= 4096:
        raise PersonaInputError(f"--size {size}: expected 16..4096 pixels")
    stride = audio_mod.FEATURE_FPS / fps
    if fps <= 0 or abs(stride - round(stride)) > 1e-6:
        raise PersonaInputError(f"--fps {fps:g}: the audio features run at {audio_mod.FEATURE_FPS} fps, so the "
                                f"frame rate must divide it (25, 50, 10, ...); any source rate is resampled to it")
    if image_format not in ("jpg", "png"):
        raise PersonaInputError(f"image format {image_format!r}: expected 'jpg' or 'png'")
    if max_frames is not None and max_frames < 1:
        raise PersonaInputError(f"--max-frames {max_frames}: expected a positive number of frames")
    if not 0 < test_fraction < 1:
        raise PersonaInputError(f"--test-fraction {test_fraction}: expected a fraction in (0, 1)")
    if missing not in ("drop", "interpolate"):
        raise PersonaInputError(f"--missing {missing!r}: expected 'drop' or 'interpolate'")
    if framing not in crop.FRAMINGS:
        raise PersonaInputError(f"--framing {framing!r}: expected one of {', '.join(crop.FRAMINGS)}")
    _replaceable(out, force)
    src = resolve(input_path)
    info = src.info
    where = str(info.path)
    # frame count for the progress bar (None: unknown)
    counts = [int(info.duration * fps + 1) if info.duration else None, max_frames, len(info.frame_files) or None]
    total = min((c for c in counts if c is not None), default=None)

    # pass 1: landmarks
    tracks = landmarks.track(decode.iter_frames(info, fps, max_frames), info.size,
                             progress=_tqdm(total, "landmarks", progress))
    n_total = len(tracks.found)
    if n_total == 0:
        raise PersonaInputError(f"{where}: no frames decoded (an empty or unreadable video)")
    if not tracks.found.any():
        raise PersonaInputError(f"{where}: no face found in any of the {n_total} frames")
    if tracks.crowded:
        warn(f"{where}: several faces in {len(tracks.crowded)} frames (first: {tracks.crowded[:5]}); kept the largest")
    points = tracks.points
    keep = np.arange(n_total)
    if tracks.missing:
        listed = ", ".join(map(str, tracks.missing[:10])) + (" ..." if len(tracks.missing) > 10 else "")
        if missing == "drop":
            warn(f"{where}: no face in {len(tracks.missing)} of {n_total} frames ({listed}); dropped "
                 f"(--missing interpolate fills them instead)")
            keep = np.flatnonzero(tracks.found)
        else:
            warn(f"{where}: no face in {len(tracks.missing)} of {n_total} frames ({listed}); landmarks interpolated")
            points = landmarks.fill_missing(points, tracks.found)
    if len(keep) < MIN_FRAMES:
        raise PersonaInputError(f"{where}: {len(keep)} frames with a face; at least {MIN_FRAMES} are needed to train "
                                f"(a longer clip, or a larger --max-frames)")
    points = points[keep]

    # framing, cameras, expressions
    boxes = crop.smooth_boxes(crop.ffhq_boxes(points))
    fit = camera.fit(crop.to_crop(points, boxes))
    if framing == "world":  # re-framed from the 3D fit; the rotations hold (the fit is similarity-invariant in 2D)
        boxes = crop.smooth_boxes(crop.framed_boxes(boxes, fit, crop.WORLD_PIVOT_REL, crop.WORLD_SIDE_REL))
    crop_pts = crop.to_crop(points, boxes)
    mouths = crop.mouth_boxes(crop_pts)
    eyes = np.zeros((len(keep), len(expression.EYE_NAMED)), np.float32)  # filled on the second pass

    # write into a hidden sibling, rename at the end (an existing out was checked replaceable above)
    with staged_dir(out) as tmp:
        (tmp / "images").mkdir()
        names = [f"images/{int(i):05d}.{image_format}" for i in keep]
        pos = {int(i): k for k, i in enumerate(keep)}
        frames_iter = decode.iter_frames(info, fps, n_total)
        for i, rgb in enumerate(_tqdm(n_total, "crops", progress)(frames_iter)):
            if i in pos:
                k = pos[i]
                (tmp / names[k]).write_bytes(encode_image(crop.crop(rgb, boxes[k], size), image_format))
                eyes[k] = expression.eye_appearance(rgb, points[k])
        written = sum(1 for _ in (tmp / "images").iterdir())
        if written != len(keep):
            raise PersonaInputError(f"{where}: decoded {written} of {len(keep)} frames on the second pass")
        codes = expression.codes(crop_pts, fit.rotations, eyes)
        hole = _write_background(tmp, names)
        has_audio = _write_audio(tmp, src, n_total, fps, where)
        _write_splits(tmp, names, keep, fit.labels, codes, mouths, size, fps, n_total, test_fraction)
        formats.write_eg3d_dataset(tmp, list(zip(names, fit.labels)))
        np.save(tmp / "landmarks.npy", crop_pts.astype(np.float32), allow_pickle=False)
        np.save(tmp / "boxes.npy", boxes.astype(np.float32), allow_pickle=False)
        if quicklook:
            from persona.preprocess import quicklook as ql

            ql.save(tmp / "quicklook.png", tmp, names, crop_pts, fit.labels, boxes, info.size)
        if quicklook_video:
            from persona.preprocess import quicklook as ql

            ql.save_video(tmp / "quicklook.mp4", tmp, names, crop_pts, fit.labels, fps)
        formats.write_json(tmp / MARKER, {
            "source": str(info.path), "kind": info.kind, "source_size": list(info.size), "source_fps": info.fps,
            "fps": fps, "size": size, "framing": framing, "frames_decoded": n_total, "frames_written": len(keep),
            "dropped_no_face": [int(i) for i in tracks.missing] if missing == "drop" else [],
            "interpolated_no_face": [int(i) for i in tracks.missing] if missing == "interpolate" else [],
            "several_faces": tracks.crowded, "audio": has_audio, "background_inpainted_fraction": round(hole, 4),
            "camera": {"method": "per-video rigid fit (persona.preprocess.camera)", "rms_crop_units": float(fit.rms.mean())},
            "expression": "persona.preprocess.expression landmark + eye-appearance code (stands in for Face2Face's 76-d vector)",
        })
    return out


def _write_background(tmp: Path, names: list[str], max_frames: int = 24) -> float:
    """``bg/background.jpg`` from up to ``max_frames`` evenly spaced crops; returns the inpainted fraction."""
    from persona.preprocess import background

    pick = np.unique(np.linspace(0, len(names) - 1, min(max_frames, len(names))).round().astype(int))
    bg, hole = background.plate([formats.read_image(tmp / names[k]) for k in pick])
    (tmp / "bg").mkdir()
    (tmp / "bg" / "background.jpg").write_bytes(encode_image(bg, "jpg"))
    return hole


def _write_audio(tmp: Path, src: Source, n_total: int, fps: float, where: str) -> bool:
    if src.windows is not None:  # a folder's own aud.npy (e.g. real DeepSpeech), rows = frames
        formats.audio_index(n_total - 1, len(src.windows), n_total, f"{where}/aud.npy")
        (tmp / "aud.npy").write_bytes(formats.npy_bytes(src.windows))
        return True
    if src.waveform is None or len(src.waveform) == 0:
        warn(f"{where}: no audio track; aud.wav and aud.npy not written (audio-driven training needs them)")
        return False
    (tmp / "aud.wav").write_bytes(audio_mod.wav_bytes(src.waveform))
    (tmp / "aud.npy").write_bytes(formats.npy_bytes(audio_mod.audio_windows(src.waveform, n_total, fps)))
    return True


def _write_splits(tmp: Path, names: list[str], keep: np.ndarray, labels: np.ndarray, codes: np.ndarray,
                  mouths: np.ndarray, size: int, fps: float, n_total: int, test_fraction: float) -> None:
    for split, rows in _splits(len(names), test_fraction).items():
        frames = []
        for k in rows:
            pose, _ = cameras.label_to_nerface(labels[k], size, size)
            frames.append({"file_path": "./" + names[k], "transform_matrix": pose, "expression": codes[k],
                           "frame_index": int(keep[k]), "camera_label": labels[k], "mouth_box": mouths[k]})
        formats.write_nerface(tmp, split, frames, [cameras.FOCAL * size, cameras.FOCAL * size, 0.5, 0.5],
                              fps=fps, w=size, h=size, num_frames=n_total)


def main(argv: list[str]) -> int:
    """Preprocess a talking-head video (or frame folder, or NerFACE / AD-NeRF folder) for training."""
    from persona.cli import parser

    p = parser("preprocess", main.__doc__)
    p.add_argument("input", help="video file (mp4/mov/avi/mkv...), folder of frames, or NerFACE / AD-NeRF folder")
    p.add_argument("--out", required=True, help="output folder (what `persona train --data` reads)")
    p.add_argument("--size", type=int, default=512, help="crop size in pixels")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate to resample to (must divide 50)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--missing", default="drop", choices=("drop", "interpolate"),
                   help="frames without a face: drop them or interpolate their landmarks")
    p.add_argument("--framing", default="world", choices=crop.FRAMINGS,
                   help="crop framing: 'world' (default) the prior's own, from the 3D head fit (the pivot at the crop "
                        "centre, the head at the prior's size); 'ffhq' FFHQ's 2D box from eyes and mouth")
    p.add_argument("--test-fraction", type=float, default=0.1, help="last part of the clip kept for test")
    p.add_argument("--quicklook-video", action="store_true", help="also write quicklook.mp4: every crop with its landmarks and camera axes")
    p.add_argument("--png", action="store_true", help="write lossless PNG crops (default: JPEG quality 95, ~20x faster)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder written by preprocess")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = preprocess(args.input, args.out, args.size, args.fps, args.max_frames, args.missing, args.test_fraction,
                         args.force, progress=not args.no_progress, image_format="png" if args.png else "jpg",
                         quicklook_video=args.quicklook_video, framing=args.framing)
    n = len(formats.read_eg3d_dataset(out))
    print(f"wrote {out}: {n} frames at {args.size} px, {args.fps:g} fps; check {out / 'quicklook.png'}")
    return 0
