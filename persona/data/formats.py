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
``ValueError``; :class:`~persona.errors.PersonaFileError` for a missing file) naming the file, the
field and what was expected. Sizes claimed by a file (``.npy`` headers, zip members) are checked
against the file before anything is allocated. Writers write atomically (temp file + rename).
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
from persona.errors import PersonaFileError, PersonaInputError, check_int, check_number
from persona.runs import atomic_write_bytes

EXPRESSION_DIM = 76  # the 3DMM expression vector (NerFACE's 76 coefficients): the one definition in persona


# ----------------------------------------------------------------------------- json + checks
def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PersonaInputError(f"{path}: not valid JSON ({exc})") from exc


def write_json(path: str | Path, obj: Any) -> None:
    """Deterministic, atomic JSON (sorted keys, 2-space indent)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def require(obj: dict, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise PersonaInputError(f"{where}: expected an object with field {key!r}, got {type(obj).__name__}")
    if key not in obj:
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
    dims = image_header_size(path)
    if dims is not None and (dims[0] * dims[1] > MAX_IMAGE_PIXELS or 0 in dims):
        raise PersonaInputError(f"{where}: image {path} claims {dims[1]}x{dims[0]} (WxH) pixels; expected a frame of "
                                f"at most {MAX_IMAGE_PIXELS} pixels (checked before decoding)")
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


MAX_IMAGE_PIXELS = 8192 * 8192  # a frame larger than this is refused before decoding (the paper's: 512x512)


def image_header_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) a PNG or JPEG file claims in its header, read without decoding (None for other
    formats or an unreadable header: the decoder then decides)."""
    import struct

    with open(path, "rb") as handle:
        head = handle.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        if head[:2] != b"\xff\xd8":
            return None
        handle.seek(2)
        for _ in range(10_000):  # JPEG segments up to the first start-of-frame marker
            marker = handle.read(4)
            if len(marker) < 4 or marker[0] != 0xFF:
                return None
            kind, length = marker[1], struct.unpack(">H", marker[2:4])[0]
            if kind in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                body = handle.read(5)
                return (struct.unpack(">H", body[1:3])[0], struct.unpack(">H", body[3:5])[0]) if len(body) == 5 else None
            handle.seek(length - 2, 1)
    return None


def unit_to_uint8(image: Any) -> np.ndarray:
    """Pixels in [-1,1] (numpy or torch, any shape) -> uint8 numpy of the same shape:
    ``round((clip(x, -1, 1) + 1) * 127.5)`` (round half to even). The one such conversion in persona."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    return ((np.clip(arr, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def png_bytes(image: np.ndarray, compression: int = 6) -> bytes:
    """PNG file contents of an RGB image: uint8 [H,W,3], or float [3,H,W] in [-1,1]
    (``compression`` 0-9: 1 is several times faster than the default 6, files ~30 % larger)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = unit_to_uint8(img)
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
        check_number(meta["camera_angle_x"], f"{where}: camera_angle_x", 0, math.pi, lo_open=True)
        intr = None  # the focal follows from the images' real width (NerfaceSplit.pixel_intrinsics)
    else:
        raise PersonaInputError(f"{where}: missing field 'intrinsics' (or 'camera_angle_x')")
    frames = []
    for i, f in enumerate(frames_in):
        fw = f"{where}: frames[{i}]"
        if not isinstance(f, dict):
            raise PersonaInputError(f"{fw}: expected an object with field 'file_path', 'transform_matrix', ..., got {type(f).__name__}")
        out = dict(f)
        out["file_path"] = str(require(f, "file_path", fw))
        if "frame_index" in f:
            out["frame_index"] = check_int(f["frame_index"], f"{fw}.frame_index", 0)
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
    angle = check_number(meta["camera_angle_x"], f"{where}: camera_angle_x") if "camera_angle_x" in meta else None
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
        raise PersonaInputError(f"{where}: field 'frames' must be a list")
    frames = []
    for i, f in enumerate(frames_in):
        fw = f"{where}: frames[{i}]"
        if not isinstance(f, dict):
            raise PersonaInputError(f"{fw}: expected an object with img_id, aud_id, transform_matrix, got {type(f).__name__}")
        out = dict(f)
        out["img_id"] = check_int(require(f, "img_id", fw), f"{fw}.img_id", 0)
        out["aud_id"] = check_int(require(f, "aud_id", fw), f"{fw}.aud_id", 0)
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
MAX_ARRAY_BYTES = 4 << 30  # the largest array persona reads from a user's .npy / .npz (FLAME: ~50 MB)


def check_npy_header(handle: Any, where: str, n_bytes: int, kinds: str = "fiu") -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the ``.npy`` stream ``handle`` (``n_bytes`` long), read from its header and
    checked BEFORE any array is allocated: the dtype is a plain number of one of ``kinds`` (numpy
    dtype kinds: no objects, no complex unless asked), and the header's shape times the item size
    is exactly the data that follows (a 1 KB file claiming 1.7 TB is refused, not allocated)."""
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = npf.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = npf.read_array_header_2_0(handle)
        else:
            raise ValueError(f"format version {version}; expected 1.0 or 2.0")
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise PersonaInputError(f"{where}: not a plain numpy .npy array ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    if dtype.hasobject or dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise PersonaInputError(f"{where}: dtype {dtype}; expected real numbers ({', '.join(_KIND_NAMES[k] for k in kinds)})")
    count = int(np.prod(shape, dtype=object))
    data = n_bytes - handle.tell()
    if count * dtype.itemsize != data or count * dtype.itemsize > MAX_ARRAY_BYTES:
        raise PersonaInputError(f"{where}: header claims shape {list(shape)} of {dtype} ({count * dtype.itemsize} bytes) "
                                f"but {data} bytes of data follow; expected a complete array of at most {MAX_ARRAY_BYTES} bytes")
    return tuple(shape), dtype


_KIND_NAMES = {"f": "float", "i": "int", "u": "unsigned int", "b": "bool", "c": "complex"}


def check_npz(path: str | Path, kinds: str = "fiu") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape, dtype)} of every array of a ``.npz`` file, checked before loading: the
    uncompressed sizes the zip declares add up to at most :data:`MAX_ARRAY_BYTES` (a zip bomb is
    refused unopened) and every member's ``.npy`` header agrees with its size (:func:`check_npy_header`)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_ARRAY_BYTES or len(members) > 10_000:
                raise PersonaInputError(f"{path}: the archive unpacks to {total} bytes in {len(members)} members; "
                                        f"expected at most {MAX_ARRAY_BYTES} bytes (a zip bomb?)")
            out = {}
            for m in members:
                if not m.filename.endswith(".npy"):
                    raise PersonaInputError(f"{path}: member {m.filename!r} is not a .npy array; expected a numpy .npz")
                with archive.open(m) as handle:
                    out[m.filename[:-4]] = check_npy_header(handle, f"{path}: {m.filename}", m.file_size, kinds)
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise PersonaInputError(f"{path}: not a readable .npz archive ({exc})") from None


def read_audio_windows(path: str | Path) -> np.ndarray:
    """AD-NeRF's ``aud.npy`` [N,16,29] float32 (real DeepSpeech or ours), validated, unchanged.

    The header is checked first (:func:`check_npy_header`: shape, real float dtype - a complex file
    is refused, not stripped of its imaginary part - and size against the file); then it is loaded
    with ``allow_pickle=False``: object arrays are refused, nothing is unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: audio features not found")
    with open(path, "rb") as handle:
        shape, _ = check_npy_header(handle, str(path), path.stat().st_size, kinds="f")
    if len(shape) != 3 or shape[1:] != (16, 29):
        raise PersonaInputError(f"{path}: expected shape [N,16,29] (AD-NeRF DeepSpeech windows), got {list(shape)}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise PersonaInputError(f"{path}: not a plain numpy array file ({exc})") from exc
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise PersonaInputError(f"{path}: contains NaN or Inf (or values beyond float32)")
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
    index = check_int(frame_index, f"{where}: frame index", 0)  # a negative index would wrap to the end
    if index > n_windows:
        raise PersonaInputError(f"{where}: frame index {index} is beyond the {n_windows} audio windows; "
                                f"expected at most {n_windows} (the last window repeated once)")
    return min(index, n_windows - 1)


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
def adnerf_to_eg3d(root: str | Path, split: str, out_root: str | Path, width: int = 450, height: int = 450,
                   scale: float = 1.0, offset: Sequence[float] = (0, 0, 0)) -> Path:
    s = read_adnerf(root, split)
    labels = s.labels(width, height, scale, offset)
    names = [f"head_imgs/{f['img_id']}.jpg" for f in s.frames]
    return write_eg3d_dataset(out_root, list(zip(names, labels)))
