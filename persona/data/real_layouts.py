"""Synthetic videos written in the REAL datasets' layouts, at their real sizes (paper-size dry runs).

The benchmark (:mod:`persona.data.world`) writes NerFACE folders with our extras (exact EG3D
``camera_label`` per frame, ``mouth_box``, novel views). Real data has none of those. The writers
here leave them out, so a folder they write goes through the same code paths as a real video:

- :func:`write_nerface_video`: NerFACE's layout (``transforms_{train,val,test}.json`` with
  ``camera_angle_x``, ``intrinsics``, per frame ``file_path`` ``./<split>/f_NNNN``,
  ``transform_matrix`` in tracker units (``scale``), 76-d ``expression``, ``bbox``), PNG frames
  of ``resolution`` px (512 in the paper), ``bg/00000.png``;
- :func:`write_adnerf_video`: AD-NeRF's layout (``transforms_{train,val}.json`` with
  ``focal_len``, ``cx``, ``cy``, frames with ``img_id``, ``aud_id``, ``transform_matrix``,
  ``face_rect``), ``head_imgs/<id>.jpg`` of ``resolution`` px (450 in AD-NeRF), ``bc.jpg``,
  ``aud.wav`` (16 kHz) and ``aud.npy`` [N,16,29].

``write_real_layouts(root, identities, ...)`` writes ``root/idNN/nerface`` and ``root/idNN/adnerf``
for each identity and returns the two lists of folders (the paper profile's ``nerface_dirs`` and
``adnerf_dirs``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from persona import cameras
from persona.data import audio, formats
from persona.data.world import Video, benchmark_identity_seeds, make_video, render_frames, sample_identity
from persona.data.world.benchmark import _bbox
from persona.runs import atomic_write_bytes

TRACKER_SCALE = 0.37  # real trackers' units are not EG3D's: readers rescale (formats.normalising_scale)


def _background(identity, res: int) -> np.ndarray:
    v = (np.arange(res) + 0.5) / res
    bg = np.asarray(identity.background_top) * (1 - v[:, None]) + np.asarray(identity.background_bottom) * v[:, None]
    return (np.repeat(bg[:, None, :], res, axis=1) * 255).round().astype(np.uint8)


def _jpeg_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError("cv2.imencode('.jpg') failed")
    return data.tobytes()


def write_nerface_video(folder: str | Path, identity, video: Video, n_train: int, resolution: int = 512,
                        val_frames: int = 2, batch: int = 4) -> Path:
    """One video in NerFACE's layout (see the module doc); frames ``[:n_train]`` train, the rest test."""
    folder = Path(folder)
    images, masks = render_frames(identity, video.expressions, video.cameras, resolution, batch, f"{folder.name} nerface")
    frames = []
    for i, img in enumerate(images):
        split = "train" if i < n_train else "test"
        name = f"f_{i if i < n_train else i - n_train:04d}"
        formats.write_image(folder / split / f"{name}.png", img)
        pose, _ = cameras.label_to_nerface(video.cameras[i], resolution, resolution, scale=TRACKER_SCALE)
        frames.append({"file_path": f"./{split}/{name}", "transform_matrix": pose, "expression": video.expressions[i],
                       "bbox": _bbox(masks[i])})
    formats.write_image(folder / "bg" / "00000.png", _background(identity, resolution))
    focal = cameras.FOCAL * resolution
    intr = [focal, focal, 0.5, 0.5]
    angle = 2 * math.atan(0.5 / cameras.FOCAL)
    test = frames[n_train:]
    formats.write_nerface(folder, "train", frames[:n_train], intr, angle)
    formats.write_nerface(folder, "val", test[:val_frames], intr, angle)
    formats.write_nerface(folder, "test", test, intr, angle)
    return folder


def write_adnerf_video(folder: str | Path, identity, video: Video, n_train: int, resolution: int = 450, batch: int = 4) -> Path:
    """One video in AD-NeRF's layout (see the module doc); frames ``[:n_train]`` train, the rest val."""
    folder = Path(folder)
    images, masks = render_frames(identity, video.expressions, video.cameras, resolution, batch, f"{folder.name} adnerf")
    frames = []
    focal = cx = cy = 0.0
    for i, img in enumerate(images):
        atomic_write_bytes(folder / "head_imgs" / f"{i}.jpg", _jpeg_bytes(img))
        pose, focal, cx, cy = cameras.label_to_adnerf(video.cameras[i], resolution, resolution, scale=TRACKER_SCALE)
        y0, y1, x0, x1 = _bbox(masks[i])
        rect = [x0 * resolution, y0 * resolution, (x1 - x0) * resolution, (y1 - y0) * resolution]
        frames.append({"img_id": i, "aud_id": i, "transform_matrix": pose, "face_rect": rect})
    atomic_write_bytes(folder / "bc.jpg", _jpeg_bytes(_background(identity, resolution)))
    formats.write_adnerf(folder, "train", frames[:n_train], focal, cx, cy)
    formats.write_adnerf(folder, "val", frames[n_train:], focal, cx, cy)
    atomic_write_bytes(folder / "aud.wav", audio.wav_bytes(video.waveform))
    atomic_write_bytes(folder / "aud.npy", formats.npy_bytes(audio.audio_windows(video.waveform, len(images), video.fps)))
    return folder


def write_real_layouts(root: str | Path, identities: int = 1, train_frames: int = 8, test_frames: int = 4,
                       nerface_resolution: int = 512, adnerf_resolution: int = 450, seed: int = 0, fps: int = 25,
                       by_kind: bool = False) -> tuple[list[Path], list[Path]]:
    """``root/idNN/nerface`` (moving head) and ``root/idNN/adnerf`` (talking, fixed camera) for
    ``identities`` synthetic people -> (nerface_dirs, adnerf_dirs). ``by_kind``: ``root/nerface/idNN``
    and ``root/adnerf/idNN`` instead, so each folder's own name is the identity's (as real videos'
    folders are named by person; the tables name an identity by its folder)."""
    root = Path(root)
    nerface_dirs, adnerf_dirs = [], []
    n = train_frames + test_frames
    for k, ident_seed in enumerate(benchmark_identity_seeds(identities, seed)):
        identity = sample_identity(ident_seed)
        mono = make_video(n, fps, ident_seed * 10 + 1, True)
        where = {kind: root / kind / f"id{k:02d}" if by_kind else root / f"id{k:02d}" / kind for kind in ("nerface", "adnerf")}
        nerface_dirs.append(write_nerface_video(where["nerface"], identity, mono, train_frames, nerface_resolution))
        talk = make_video(n, fps, ident_seed * 10 + 2, False)
        adnerf_dirs.append(write_adnerf_video(where["adnerf"], identity, talk, train_frames, adnerf_resolution))
    return nerface_dirs, adnerf_dirs
