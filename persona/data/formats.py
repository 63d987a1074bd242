"""Read and write the dataset layouts of NerFACE, AD-NeRF and EG3D, with validation.

NerFACE (``transforms_{train,val,test}.json``, the one layout of our synthetic benchmark too)::

    {"camera_angle_x": float, "intrinsics": [fx, fy, cx, cy],   # fx, fy pixels; cx, cy fractions
     "frames": [{"file_path": "./train/f_0000",                  # + ".png", relative to the folder
                 "transform_matrix": 4x4,                         # OpenGL cam2world in the head frame
                 "expression": [76 floats],
                 "bbox": [y0, y1, x0, x1]}, ...]}                 # fractions of H (y) and W (x)

  Our synthetic files add top-level ``fps``, ``w``, ``h``, ``background`` and per frame
  ``frame_index``, ``camera_label`` (25, EG3D label; preferred over the conversion when present)
  and ``mouth_box`` [x0, y0, x1, y1] in [0,1].

AD-NeRF (``transforms_train.json`` / ``transforms_val.json`` + ``aud.npy`` + ``head_imgs/<img_id>.jpg``
(what its head NeRF trains on), ``com_imgs/``, ``bc.jpg`` background)::

    {"focal_len": float, "cx": float, "cy": float,               # pixels
     "frames": [{"img_id": int, "aud_id": int, "transform_matrix": 4x4, "face_rect": [x, y, w, h]}]}

  ``aud.npy`` is [N,16,29] DeepSpeech windows indexed by ``aud_id``; N may be one less than the
  number of frames (AD-NeRF clamps the index to N-1; so do we).

EG3D (``dataset.json``)::

    {"labels": [["img00000000.png", [25 floats]], ...]}

Every reader validates what it reads and raises :class:`persona.errors.PersonaInputError` (a
``ValueError``) or ``PersonaFileError`` (a ``FileNotFoundError``) naming the file, the field and
what was expected. Writers write atomically (temp file + rename).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from persona import cameras
from persona.errors import PersonaFileError, PersonaInputError
from persona.runs import atomic_write_bytes

EXPRESSION_DIM = 76


# ----------------------------------------------------------------------------- json + checks
def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PersonaInputError(f"{path}: not valid JSON ({exc})") from exc


def write_json(path: str | Path, obj: Any) -> None:
    """Deterministic, atomic JSON (sorted keys, 2-space indent)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def require(obj: dict, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise PersonaInputError(f"{where}: missing field {key!r}")
    return obj[key]


def finite_array(value: Any, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as float64 array; errors name ``where`` for a wrong shape or NaN/Inf."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PersonaInputError(f"{where}: expected numbers, got {str(value)[:60]!r}") from exc
    if shape is not None and arr.shape != shape:
        raise PersonaInputError(f"{where}: expected shape {list(shape)}, got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise PersonaInputError(f"{where}: contains NaN or Inf")
    return arr


# ----------------------------------------------------------------------------- images
def read_image(path: str | Path, size: tuple[int, int] | None = None, where: str | None = None) -> np.ndarray:
    """RGB uint8 [H,W,3] of an image file; ``size`` = expected (H, W) or None."""
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise PersonaFileError(f"{where}: image not found at {path}")
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise PersonaInputError(f"{where}: cannot read image {path} (not a PNG/JPEG cv2 can decode)")
    if data.dtype == np.uint16:
        data = (data / 257).round().astype(np.uint8)
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    if data.shape[2] == 4:  # composite RGBA over white, as NeRF loaders do
        alpha = data[..., 3:4].astype(np.float32) / 255
        data = (data[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    rgb = np.ascontiguousarray(data[..., :3][..., ::-1])
    if size is not None and rgb.shape[:2] != tuple(size):
        raise PersonaInputError(f"{where}: image {path} is {rgb.shape[1]}x{rgb.shape[0]} (WxH), expected "
                         f"{size[1]}x{size[0]} like the other frames")
    return rgb


def png_bytes(image: np.ndarray, compression: int = 6) -> bytes:
    """PNG file contents of an RGB image: uint8 [H,W,3], or float [3,H,W] in [-1,1]
    (``compression`` 0-9: 1 is several times faster than the default 6, files ~30 % larger)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = ((np.clip(img, -1, 1) + 1) * 127.5).round().astype(np.uint8)
        if img.shape[0] == 3 and img.ndim == 3:
            img = img.transpose(1, 2, 0)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise PersonaInputError("PNG encoding failed")
    return buf.tobytes()


def write_image(path: str | Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(image))


# ----------------------------------------------------------------------------- NerFACE
@dataclass
class NerfaceSplit:
    """One ``transforms_<split>.json`` of a NerFACE folder, validated.

    ``frames``: list of dicts with ``file_path`` (str), ``transform_matrix`` [4,4],
    ``expression`` [76], ``bbox`` [4] or None, and any extra fields kept as read.
    """

    root: Path
    split: str
    path: Path
    intrinsics: np.ndarray | None  # [fx, fy, cx, cy]: pixels, pixels, fractions; None: from camera_angle_x
    camera_angle_x: float | None
    frames: list[dict]
    meta: dict = field(default_factory=dict)  # other top-level fields (fps, w, h, background, ...)

    def image_path(self, i: int) -> Path:
        rel = self.frames[i]["file_path"]
        p = self.root / rel
        return p if p.suffix.lower() in (".png", ".jpg", ".jpeg") else p.with_name(p.name + ".png")

    def pixel_intrinsics(self, width: int) -> np.ndarray:
        """[fx, fy, cx, cy] for images ``width`` pixels wide (``camera_angle_x`` files: the focal
        follows from the real width)."""
        if self.intrinsics is not None:
            return self.intrinsics
        focal = 0.5 * float(width) / math.tan(0.5 * float(self.camera_angle_x))
        return np.array([focal, focal, 0.5, 0.5])

    def labels(self, width: int, height: int, scale: float = 1.0, offset: Sequence[float] = (0, 0, 0)) -> np.ndarray:
        """EG3D labels [N,25]: the frame's ``camera_label`` if present, else converted."""
        out = []
        intr = self.pixel_intrinsics(width)
        for f in self.frames:
            if "camera_label" in f:
                out.append(np.asarray(f["camera_label"], np.float32))
            else:
                out.append(cameras.nerface_to_label(f["transform_matrix"], intr, width, height, scale, offset))
        return np.stack(out) if out else np.zeros((0, 25), np.float32)


def read_nerface(root: str | Path, split: str) -> NerfaceSplit:
    """Read and validate ``root/transforms_<split>.json`` (NerFACE layout)."""
    root = Path(root)
    path = root / f"transforms_{split}.json"
    meta = read_json(path)
    where = str(path)
    frames_in = require(meta, "frames", where)
    if not isinstance(frames_in, list):
        raise PersonaInputError(f"{where}: field 'frames' must be a list")
    if "intrinsics" in meta and meta["intrinsics"]:
        intr = finite_array(meta["intrinsics"], f"{where}: intrinsics", (4,))
    elif "camera_angle_x" in meta:
        angle = float(finite_array(meta["camera_angle_x"], f"{where}: camera_angle_x", ()))
        if not 0 < angle < math.pi:
            raise PersonaInputError(f"{where}: camera_angle_x = {angle}: expected radians in (0, pi)")
        intr = None  # the focal follows from the images' real width (NerfaceSplit.pixel_intrinsics)
    else:
        raise PersonaInputError(f"{where}: missing field 'intrinsics' (or 'camera_angle_x')")
    frames = []
    for i, f in enumerate(frames_in):
        fw = f"{where}: frames[{i}]"
        out = dict(f)
        out["file_path"] = str(require(f, "file_path", fw))
        out["transform_matrix"] = cameras.check_rigid(
            finite_array(require(f, "transform_matrix", fw), f"{fw}.transform_matrix", (4, 4)), f"{fw}.transform_matrix")
        out["expression"] = finite_array(require(f, "expression", fw), f"{fw}.expression", (EXPRESSION_DIM,))
        out["bbox"] = finite_array(f["bbox"], f"{fw}.bbox", (4,)) if "bbox" in f else None
        if "camera_label" in f:
            lab = finite_array(f["camera_label"], f"{fw}.camera_label", (25,))
            cameras.check_rigid(lab[:16].reshape(4, 4), f"{fw}.camera_label (cam2world)")
            out["camera_label"] = lab
        if "mouth_box" in f:
            out["mouth_box"] = finite_array(f["mouth_box"], f"{fw}.mouth_box", (4,))
        frames.append(out)
    extra = {k: v for k, v in meta.items() if k not in ("frames", "intrinsics", "camera_angle_x")}
    angle = float(meta["camera_angle_x"]) if "camera_angle_x" in meta else None
    return NerfaceSplit(root, split, path, intr, angle, frames, extra)


def write_nerface(root: str | Path, split: str, frames: Sequence[dict], intrinsics: Sequence[float],
                  camera_angle_x: float | None = None, **meta: Any) -> Path:
    """Write ``root/transforms_<split>.json``. Frames: dicts with at least ``file_path``,
    ``transform_matrix`` [4,4] and ``expression`` [76] (arrays are converted to lists)."""
    def plain(v):
        if isinstance(v, np.ndarray):
            return [plain(x) for x in v.tolist()] if v.ndim else plain(v.item())
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (np.floating, float)):
            return round(float(v), 7)
        if isinstance(v, np.integer):
            return int(v)
        return v

    out = {"frames": [{k: plain(v) for k, v in f.items() if v is not None} for f in frames],
           "intrinsics": plain(list(intrinsics))}
    if camera_angle_x is not None:
        out["camera_angle_x"] = plain(camera_angle_x)
    out.update({k: plain(v) for k, v in meta.items()})
    path = Path(root) / f"transforms_{split}.json"
    write_json(path, out)
    return path


# ----------------------------------------------------------------------------- AD-NeRF
@dataclass
class AdnerfSplit:
    """One AD-NeRF ``transforms_<split>.json``: frames with ``img_id``, ``aud_id``,
    ``transform_matrix`` [4,4], ``face_rect`` [4] or None."""

    root: Path
    split: str
    path: Path
    focal_len: float
    cx: float
    cy: float
    frames: list[dict]

    def image_path(self, i: int, kind: str = "head_imgs") -> Path:
        return self.root / kind / f"{int(self.frames[i]['img_id'])}.jpg"

    def labels(self, width: int, height: int, scale: float = 1.0, offset: Sequence[float] = (0, 0, 0)) -> np.ndarray:
        return np.stack([cameras.adnerf_to_label(f["transform_matrix"], self.focal_len, self.cx, self.cy,
                                                 width, height, scale, offset) for f in self.frames])


def _whole_number(value: Any, where: str) -> int:
    """A non-negative integer id (7 or 7.0; not 7.3, "abc" or true)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < 0:
        raise PersonaInputError(f"{where}: expected a non-negative whole number, got {value!r}")
    return int(value)


def adnerf_split_file(split: str) -> str:
    """AD-NeRF has train and val files only; our 'val' and 'test' both read transforms_val.json."""
    return "transforms_train.json" if split == "train" else "transforms_val.json"


def read_adnerf(root: str | Path, split: str) -> AdnerfSplit:
    root = Path(root)
    path = root / adnerf_split_file(split)
    meta = read_json(path)
    where = str(path)
    focal = float(finite_array(require(meta, "focal_len", where), f"{where}: focal_len", ()))
    cx = float(finite_array(require(meta, "cx", where), f"{where}: cx", ()))
    cy = float(finite_array(require(meta, "cy", where), f"{where}: cy", ()))
    frames_in = require(meta, "frames", where)
    if not isinstance(frames_in, list):
        raise PersonaInputError(f"{where}: field 'frames' must be a list of frames, got {type(frames_in).__name__}")
    frames = []
    for i, f in enumerate(frames_in):
        fw = f"{where}: frames[{i}]"
        if not isinstance(f, dict):
            raise PersonaInputError(f"{fw}: expected an object with img_id, aud_id, transform_matrix")
        out = dict(f)
        out["img_id"] = _whole_number(require(f, "img_id", fw), f"{fw}.img_id")
        out["aud_id"] = _whole_number(require(f, "aud_id", fw), f"{fw}.aud_id")
        out["transform_matrix"] = cameras.check_rigid(
            finite_array(require(f, "transform_matrix", fw), f"{fw}.transform_matrix", (4, 4)), f"{fw}.transform_matrix")
        out["face_rect"] = finite_array(f["face_rect"], f"{fw}.face_rect", (4,)) if "face_rect" in f else None
        frames.append(out)
    return AdnerfSplit(root, split, path, focal, cx, cy, frames)


def write_adnerf(root: str | Path, split: str, frames: Sequence[dict], focal_len: float, cx: float, cy: float) -> Path:
    out = {"focal_len": float(focal_len), "cx": float(cx), "cy": float(cy),
           "frames": [{"img_id": int(f["img_id"]), "aud_id": int(f["aud_id"]),
                       "transform_matrix": np.asarray(f["transform_matrix"], np.float64).round(7).tolist(),
                       **({"face_rect": [int(v) for v in f["face_rect"]]} if f.get("face_rect") is not None else {})}
                      for f in frames]}
    path = Path(root) / adnerf_split_file(split)
    write_json(path, out)
    return path


def is_adnerf(root: str | Path) -> bool:
    """True when ``root`` holds an AD-NeRF folder (a transforms_train.json or transforms_val.json
    with ``focal_len``)."""
    for name in ("transforms_train.json", "transforms_val.json"):
        path = Path(root) / name
        if path.is_file():
            try:
                meta = read_json(path)
            except ValueError:
                continue
            if isinstance(meta, dict) and "focal_len" in meta:
                return True
    return False


def detect_format(root: str | Path, split: str) -> str:
    """'adnerf' or 'nerface' from the files in ``root``; a one-line error naming the missing
    file of the requested split (and the format it was detected as)."""
    root = Path(root)
    if not root.is_dir():
        raise PersonaFileError(f"{root}: dataset folder not found")
    if is_adnerf(root):
        path = root / adnerf_split_file(split)
        if not path.is_file():
            raise PersonaFileError(f"{path}: not found (an AD-NeRF folder: it has transforms_*.json with "
                                   f"focal_len; split {split!r} reads {path.name})")
        return "adnerf"
    path = root / f"transforms_{split}.json"
    if not path.is_file():
        present = sorted(p.name for p in root.glob("transforms_*.json"))
        raise PersonaFileError(f"{path}: not found (a NerFACE folder has transforms_train/val/test.json; "
                               f"found {present or 'no transforms_*.json'})")
    return "nerface"


def eg3d_radius(focal_normalised: float) -> float:
    """Camera distance at which a dataset's focal (normalised by the image width) shows the head
    at the size EG3D's cameras do (focal 4.2647 at radius 2.7): a real folder keeps its own focal
    (AD-NeRF's 1100 px at 450 px is 2.44) and moves the camera to ``2.7 * f / 4.2647``, so the head
    is neither at 57 % of its size (AD-NeRF) nor at 130 % (NerFACE-like). ``persona preprocess``
    re-crops to EG3D's own framing instead."""
    f = abs(float(focal_normalised))
    if not f > 0:
        raise PersonaInputError(f"focal length {focal_normalised}: expected a positive number")
    return cameras.RADIUS * f / cameras.FOCAL


def normalising_scale(poses: Sequence[Any], radius: float = cameras.RADIUS) -> float:
    """Scale that puts the median camera of head poses [N,4,4] at ``radius`` from the head origin.

    Real NerFACE / AD-NeRF trackers use their own units; EG3D's cameras sit 2.7 from the origin.
    Use the poses of the TRAIN split so that every split of a folder gets the same scale.
    """
    dist = np.median([np.linalg.norm(np.asarray(p, np.float64)[:3, 3]) for p in poses]) if len(poses) else 0.0
    if not dist > 1e-8:
        raise PersonaInputError("cannot normalise camera distances: the cameras sit at the head origin")
    return float(radius / dist)


# ----------------------------------------------------------------------------- aud.npy
def read_audio_windows(path: str | Path) -> np.ndarray:
    """AD-NeRF's ``aud.npy`` [N,16,29] float32 (real DeepSpeech or ours), validated, unchanged.

    Loaded with ``allow_pickle=False``: object arrays are refused, nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: audio features not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise PersonaInputError(f"{path}: not a plain numpy array file ({exc})") from exc
    if arr.ndim != 3 or arr.shape[1:] != (16, 29):
        raise PersonaInputError(f"{path}: expected shape [N,16,29] (AD-NeRF DeepSpeech windows), got {list(arr.shape)}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise PersonaInputError(f"{path}: contains NaN or Inf")
    return arr


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def audio_index(frame_index: int, n_windows: int, n_frames: int, where: str) -> int:
    """Window of a frame in ``aud.npy``. N = frames - 1 (AD-NeRF's DeepSpeech drops the last
    frame) is accepted: the last window is repeated. Anything shorter is an error."""
    if n_windows < n_frames - 1:
        raise PersonaInputError(f"{where}: {n_windows} audio windows for {n_frames} video frames; expected "
                         f"{n_frames} (or {n_frames - 1}, AD-NeRF's count)")
    return min(int(frame_index), n_windows - 1)


# ----------------------------------------------------------------------------- EG3D
def read_eg3d_dataset(root: str | Path) -> list[tuple[str, np.ndarray]]:
    """``root/dataset.json`` -> [(file name, label [25] float32)], validated."""
    path = Path(root) / "dataset.json"
    meta = read_json(path)
    labels = require(meta, "labels", str(path))
    if not isinstance(labels, list):
        raise PersonaInputError(f"{path}: field 'labels' must be a list of [filename, 25 floats]")
    out = []
    for i, entry in enumerate(labels):
        where = f"{path}: labels[{i}]"
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)):
            raise PersonaInputError(f"{where}: expected [filename, [25 floats]]")
        lab = finite_array(entry[1], where, (25,))
        cameras.check_rigid(lab[:16].reshape(4, 4), f"{where} (cam2world)")
        out.append((entry[0], lab.astype(np.float32)))
    return out


def write_eg3d_dataset(root: str | Path, entries: Sequence[tuple[str, Any]]) -> Path:
    labels = [[name, [round(float(v), 7) for v in np.asarray(lab, np.float64).reshape(25)]] for name, lab in entries]
    path = Path(root) / "dataset.json"
    write_json(path, {"labels": labels})
    return path


# ----------------------------------------------------------------------------- conversions
def nerface_to_eg3d(root: str | Path, split: str, out_root: str | Path, scale: float = 1.0,
                    offset: Sequence[float] = (0, 0, 0)) -> Path:
    """Write an EG3D ``dataset.json`` (labels only; file names point into the NerFACE folder)."""
    s = read_nerface(root, split)
    first = read_image(s.image_path(0))
    h, w = first.shape[:2]
    labels = s.labels(w, h, scale, offset)
    names = [str(s.image_path(i).relative_to(Path(root))) for i in range(len(s.frames))]
    return write_eg3d_dataset(out_root, list(zip(names, labels)))


def adnerf_to_eg3d(root: str | Path, split: str, out_root: str | Path, width: int = 450, height: int = 450,
                   scale: float = 1.0, offset: Sequence[float] = (0, 0, 0)) -> Path:
    s = read_adnerf(root, split)
    labels = s.labels(width, height, scale, offset)
    names = [f"head_imgs/{f['img_id']}.jpg" for f in s.frames]
    return write_eg3d_dataset(out_root, list(zip(names, labels)))
