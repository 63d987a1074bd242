"""Torch datasets of video frames with their conditions (one loader for synthetic and real data).

``FrameDataset(root, split)`` reads a NerFACE folder (our synthetic videos use that layout) or an
AD-NeRF folder (detected by ``focal_len`` in ``transforms_train.json``; its 'val' and 'test'
both read ``transforms_val.json``). A sample::

    image      [3,H,W] float32 in [-1,1]
    camera     [25]    EG3D label: the frame's ``camera_label`` (synthetic data), else converted
                       from the head pose (OpenGL -> OpenCV, pixel -> normalised intrinsics) with
                       the translation scaled so the median TRAIN camera sits at 2.7 * f / 4.2647
                       from the head origin (f: the folder's focal / width), where the head
                       shows at the size EG3D's cameras show it (``camera_scale``); NerFACE's
                       signed focals are honoured (persona.cameras.signed_focal_pose).
                       ``persona preprocess`` re-frames a folder to EG3D's own crop instead
    expression [76]    (zeros for AD-NeRF folders, which have none)
    audio      [16,29] window of aud.npy (zeros when the folder has no audio)
    index      int     frame number in the video (``frame_index``; NerFACE files without it are
                       numbered train, then val, then test)
    mouth_box  [4]     x0, y0, x1, y1 in [0,1] (``mouth_box``, else the lower-middle face box)

Audio: ``aud.npy`` [N,16,29] is used unchanged (ours or a real DeepSpeech one); without it,
``aud.wav`` is featurised (:mod:`persona.data.audio`), for NerFACE and AD-NeRF folders alike;
``has_audio`` is False when the folder has neither (audio-driven training then refuses to run). N may be one less than the number of video
frames (AD-NeRF's DeepSpeech count): the last window is then repeated for the last frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from persona.data import audio as audio_mod
from persona.data import formats
from persona.errors import PersonaFileError, PersonaInputError

_DEFAULT_MOUTH_BOX = np.array([0.3, 0.6, 0.7, 0.9], np.float32)


class _Stack:
    """collate_fn of :func:`stack_samples` / :func:`prefetched`: samples -> {key: [N,...]} for the
    keys the samples have (picklable for workers)."""

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in self.keys if k in samples[0]}


def _worker_samples(dataset: Any, picks: Any, num_workers: int) -> list[dict[str, Any]]:
    """``dataset[i]`` for every i of ``picks``, in that order, decoded by ``num_workers`` processes."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, sampler=list(picks), batch_size=None, num_workers=num_workers)
    return list(loader)


def prefetched(dataset: Any, batches: Any, keys: Any, num_workers: int) -> Any:
    """An iterator of stacked batches (as :func:`stack_samples` with ``optional``: keys the samples
    lack are left out), one per list of positions in
    ``batches`` (an iterable, read lazily), decoded ahead by ``num_workers`` worker processes:
    a trainer that streams its frames from an image folder (ours at the paper's sizes) reads them
    while it computes. ``num_workers`` must be at least 1 (0: call :func:`stack_samples` per batch)."""
    from torch.utils.data import DataLoader

    return iter(DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                           collate_fn=_Stack(tuple(keys)), persistent_workers=False))


def stack_samples(dataset: Any, keys: Any, desc: str = "load frames", positions: Any = None,
                  optional: bool = False, num_workers: int = 0) -> dict[str, torch.Tensor]:
    """Samples of a frame dataset stacked per key: ``{key: [N,...]}`` in the samples' own dtypes
    (callers cast), in dataset order (or that of ``positions``). The one place a trainer turns a
    dataset into tensors (ours, the NeRFs, FOMM, NHA); :class:`FrameDataset` caches the decoded
    images itself. ``optional``: keys the samples lack are left out instead of refused.
    ``num_workers`` > 0: the samples are decoded by that many DataLoader worker processes (the
    paper profile's configs; 0, the CPU profiles', reads them in this process). Raises
    :class:`persona.errors.PersonaInputError` naming the dataset for an empty one or a missing key."""
    from tqdm import tqdm

    where = getattr(dataset, "root", type(dataset).__name__)
    picks = range(len(dataset)) if positions is None else [int(i) for i in positions]
    if len(picks) == 0:
        raise PersonaInputError(f"{where}: the training split holds no frames")
    if num_workers > 0:
        samples = _worker_samples(dataset, picks, num_workers)
    else:
        samples = [dataset[i] for i in (tqdm(picks, desc=desc, leave=False) if desc else picks)]
    keys = tuple(keys)
    missing = [k for k in keys if k not in samples[0]]
    if missing and not optional:
        raise PersonaInputError(f"{where}: dataset samples lack {missing}; expected keys {list(keys)}")
    return _Stack(keys)(samples)


def to_tensor_image(rgb: np.ndarray, resolution: int | None) -> torch.Tensor:
    """RGB uint8 [H,W,3] -> [3,R,R] float in [-1,1], resized (area) to ``resolution`` unless None."""
    if resolution is not None and rgb.shape[:2] != (resolution, resolution):
        rgb = cv2.resize(rgb, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0


class _FramesBase(Dataset):
    """Shared loading: image files, labels, expressions, audio windows, mouth boxes."""

    def _setup(self, root: Path, image_paths: list[Path], labels: np.ndarray, expressions: np.ndarray,
               indices: list[int], mouth_boxes: np.ndarray, fps: float, resolution: int | None,
               audio: np.ndarray | None, n_video_frames: int, where: str, background: Path | None) -> None:
        n = len(image_paths)
        for name, arr in (("camera labels", labels), ("expressions", expressions), ("mouth boxes", mouth_boxes)):
            if len(arr) != n:
                raise PersonaInputError(f"{where}: {len(arr)} {name} for {n} frames")
        self.root = root
        self.fps = float(fps)
        self._paths = image_paths
        first = formats.read_image(image_paths[0]) if n else np.zeros((1, 1, 3), np.uint8)
        if first.shape[0] != first.shape[1]:  # resizing would squash the face; cropping would guess
            raise PersonaInputError(f"{where}: frames are {first.shape[1]}x{first.shape[0]} (WxH, {image_paths[0].name}); "
                                    f"expected square frames - crop them to a square around the head first")
        self.native_size = first.shape[:2]
        self.resolution = int(resolution) if resolution is not None else int(first.shape[0])
        self._labels = torch.from_numpy(np.asarray(labels, np.float32))
        self._expressions = torch.from_numpy(np.asarray(expressions, np.float32))
        self._indices = [int(i) for i in indices]
        self._boxes = torch.from_numpy(np.asarray(mouth_boxes, np.float32))
        self.has_audio = audio is not None
        if audio is not None:
            rows = [formats.audio_index(i, len(audio), n_video_frames, where) for i in self._indices]
            self._audio = torch.from_numpy(audio[rows])
        else:
            self._audio = torch.zeros(n, audio_mod.WINDOW, audio_mod.FEATURE_DIM)
        self.background = None
        if background is not None and background.is_file():
            self.background = to_tensor_image(formats.read_image(background), self.resolution)
        # small sets are decoded once (and every image checked now); large ones lazily
        self._cache: list[torch.Tensor] | None = None
        if n * self.native_size[0] * self.native_size[1] <= 64e6:
            self._cache = [self._load(i) for i in range(n)]

    # per-frame conditions without decoding images (same order as the samples)
    @property
    def indices(self) -> list[int]:
        """Frame numbers in the video [N]."""
        return list(self._indices)

    @property
    def audio(self) -> torch.Tensor:
        """Audio windows [N,16,29] (zeros when the folder has no audio)."""
        return self._audio

    @property
    def expressions(self) -> torch.Tensor:
        """Expressions [N,76]."""
        return self._expressions

    @property
    def cameras(self) -> torch.Tensor:
        """EG3D labels [N,25]."""
        return self._labels

    @property
    def mouth_boxes(self) -> torch.Tensor:
        """Mouth boxes [N,4] (x0, y0, x1, y1 in [0,1])."""
        return self._boxes

    def _load(self, i: int) -> torch.Tensor:
        rgb = formats.read_image(self._paths[i], size=self.native_size, where=f"{self._where} frame {i}")
        return to_tensor_image(rgb, self.resolution)

    def __len__(self) -> int:
        return len(self._paths)

    def _sample(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames")
        image = self._cache[i] if self._cache is not None else self._load(i)
        return {"image": image, "camera": self._labels[i], "expression": self._expressions[i],
                "audio": self._audio[i], "index": self._indices[i], "mouth_box": self._boxes[i]}


def _load_audio(root: Path) -> np.ndarray | None:
    if (root / "aud.npy").is_file():
        return formats.read_audio_windows(root / "aud.npy")
    return None


def _wav_windows(root: Path, n_frames: int, fps: float) -> np.ndarray | None:
    if (root / "aud.wav").is_file():
        wave_, rate = audio_mod.read_wav(root / "aud.wav")
        try:
            return audio_mod.audio_windows(wave_, n_frames, fps, rate)
        except ValueError as exc:
            raise PersonaInputError(f"{root / 'aud.wav'}: {exc}; persona preprocess resamples a video to "
                                    f"25 fps") from exc
    return None


def _split_offset(root: Path, split: str) -> tuple[int, int]:
    """NerFACE frames without ``frame_index``: (first frame number of ``split``, frames in all
    splits), counting train, then val, then test, so val / test frames do not restart at 0 (their
    audio windows would come from the start of the wav)."""
    counts = {}
    for s in ("train", "val", "test"):
        path = root / f"transforms_{s}.json"
        counts[s] = len(formats.read_nerface(root, s).frames) if path.is_file() else 0
    order = ["train", "val", "test"]
    return sum(counts[s] for s in order[: order.index(split)]), sum(counts.values())


class FrameDataset(_FramesBase):
    """Frames of one split of a video folder (see the module doc for the sample layout).

    ``resolution``: resize to this square size (None = native). ``max_seconds``: keep only the
    first ``max_seconds`` of the split (by frame index). Attributes: ``fps``, ``resolution``,
    ``root``, ``split``, ``background`` [3,H,W] in [-1,1] or None, ``has_audio``.
    """

    def __init__(self, root: str | Path, split: str = "train", resolution: int | None = None,
                 max_seconds: float | None = None):
        root = Path(root)
        if split not in ("train", "val", "test"):
            raise PersonaInputError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if not root.is_dir():
            raise PersonaFileError(f"{root}: dataset folder not found")
        self.split = split
        self.max_seconds = None if max_seconds is None else float(max_seconds)  # part of a run's cache key
        if formats.detect_format(root, split) == "adnerf":
            self._init_adnerf(root, split, resolution, max_seconds)
        else:
            self._init_nerface(root, split, resolution, max_seconds)

    def _init_nerface(self, root: Path, split: str, resolution: int | None, max_seconds: float | None) -> None:
        s = formats.read_nerface(root, split)
        self._where = str(s.path)
        fps = float(s.meta.get("fps", 25.0))
        frames = s.frames
        has_index = all("frame_index" in f for f in frames)
        offset, n_all = (0, 0) if has_index else _split_offset(root, split)
        indices = [int(f["frame_index"]) if has_index else offset + k for k, f in enumerate(frames)]
        keep = list(range(len(frames)))
        if max_seconds is not None and frames:
            limit = indices[0] + max_seconds * fps
            keep = [k for k in keep if indices[k] < limit]
        paths = [s.image_path(k) for k in keep]
        for k, p in zip(keep, paths):
            if not p.is_file():
                raise PersonaFileError(f"{s.path}: frames[{k}].file_path -> image not found at {p}")
        if not paths:
            raise PersonaInputError(f"{s.path}: no frames")
        size = formats.read_image(paths[0]).shape[:2]
        self.camera_scale = 1.0
        if any("camera_label" not in f for f in frames):  # real data: tracker units -> EG3D's framing
            train = s if split == "train" else formats.read_nerface(root, "train")
            radius = formats.eg3d_radius(s.pixel_intrinsics(size[1])[0] / size[1])
            self.camera_scale = formats.normalising_scale([f["transform_matrix"] for f in train.frames], radius)
        labels_all = s.labels(size[1], size[0], scale=self.camera_scale)
        n_total = int(s.meta.get("num_frames", max(max(indices) + 1, n_all) if indices else 0))
        audio = _load_audio(root)
        if audio is None:
            audio = _wav_windows(root, n_total, fps)
        boxes = np.stack([np.asarray(frames[k].get("mouth_box", _DEFAULT_MOUTH_BOX), np.float32) for k in keep])
        bg = root / s.meta["background"] if "background" in s.meta else None
        if bg is None and (root / "bg").is_dir():
            files = sorted((root / "bg").glob("*.png")) + sorted((root / "bg").glob("*.jpg"))
            bg = files[0] if files else None
        self._setup(root, paths, labels_all[keep], np.stack([frames[k]["expression"] for k in keep]),
                    [indices[k] for k in keep], boxes, fps, resolution, audio, n_total, str(s.path), bg)

    def _init_adnerf(self, root: Path, split: str, resolution: int | None, max_seconds: float | None) -> None:
        s = formats.read_adnerf(root, split)
        self._where = str(s.path)
        fps = 25.0
        frames = s.frames
        keep = list(range(len(frames)))
        if max_seconds is not None and frames:
            limit = frames[0]["img_id"] + max_seconds * fps
            keep = [k for k in keep if frames[k]["img_id"] < limit]
        # AD-NeRF's head NeRF trains on head_imgs/ (head over the bc.jpg background); com_imgs/ as fallback
        kind = "head_imgs" if (root / "head_imgs").is_dir() else "com_imgs"
        paths = [s.image_path(k, kind) for k in keep]
        for k, p in zip(keep, paths):
            if not p.is_file():
                raise PersonaFileError(f"{s.path}: frames[{k}] (img_id {frames[k]['img_id']}) -> image not found at {p}")
        if not paths:
            raise PersonaInputError(f"{s.path}: no frames")
        h, w = formats.read_image(paths[0]).shape[:2]
        train = s if split == "train" else formats.read_adnerf(root, "train")
        self.camera_scale = formats.normalising_scale([f["transform_matrix"] for f in train.frames],
                                                      formats.eg3d_radius(s.focal_len / w))
        labels = s.labels(w, h, scale=self.camera_scale)[keep]
        n_total = 1 + max(max(f["aud_id"] for f in train.frames), max(f["aud_id"] for f in frames))
        audio = _load_audio(root)
        if audio is None:
            audio = _wav_windows(root, n_total, fps)
        boxes = []
        for k in keep:
            rect = frames[k]["face_rect"]
            if rect is None:
                boxes.append(_DEFAULT_MOUTH_BOX)
            else:  # lower-middle part of the face rectangle [x, y, w, h] in pixels
                x, y, rw, rh = rect
                boxes.append(np.array([(x + 0.2 * rw) / w, (y + 0.6 * rh) / h, (x + 0.8 * rw) / w, (y + rh) / h],
                                      np.float32).clip(0, 1))
        bg = root / "bc.jpg"
        self._setup(root, paths, labels, np.zeros((len(keep), formats.EXPRESSION_DIM), np.float32),
                    [frames[k]["aud_id"] for k in keep], np.stack(boxes), fps, resolution, audio, n_total,
                    str(s.path), bg if bg.is_file() else None)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._sample(i)


class NovelViewDataset(_FramesBase):
    """Novel-view ground truth of a synthetic video folder (``root/novel/transforms_novel.json``).

    Samples have the keys of :class:`FrameDataset` plus ``view`` (name in
    :data:`persona.cameras.NOVEL_VIEWS`) and ``source_index`` (the test frame); ``camera`` is the
    novel camera, ``expression`` and ``audio`` are those of the test frame. ``image`` is the
    novel-view ground truth (a target only); ``source_image`` [3,H,W] and ``source_camera`` [25]
    are the test frame as the video camera saw it (the input of RGB-driven methods).
    """

    def __init__(self, root: str | Path, resolution: int | None = None):
        root = Path(root)
        self._test = FrameDataset(root, "test", resolution=resolution)
        self._test_position = {int(idx): pos for pos, idx in enumerate(self._test.indices)}
        s = formats.read_nerface(root / "novel", "novel")
        self.split = "novel"
        self._where = str(s.path)
        frames = s.frames
        for k, f in enumerate(frames):
            for key in ("view", "source_index", "camera_label"):
                formats.require(f, key, f"{s.path}: frames[{k}]")
        paths = [s.image_path(k) for k in range(len(frames))]
        for k, p in enumerate(paths):
            if not p.is_file():
                raise PersonaFileError(f"{s.path}: frames[{k}].file_path -> image not found at {p}")
        if not paths:
            raise PersonaInputError(f"{s.path}: no frames")
        fps = float(s.meta.get("fps", 25.0))
        n_total = int(s.meta.get("num_frames", max(int(f["source_index"]) for f in frames) + 1))
        audio = _load_audio(root)
        if audio is None:
            audio = _wav_windows(root, n_total, fps)
        self._views = [str(f["view"]) for f in frames]
        self._sources = [int(f["source_index"]) for f in frames]
        boxes = np.stack([np.asarray(f.get("mouth_box", _DEFAULT_MOUTH_BOX), np.float32) for f in frames])
        bg = root / s.meta["background"] if "background" in s.meta else None
        self._setup(root, paths, np.stack([f["camera_label"] for f in frames]),
                    np.stack([f["expression"] for f in frames]), self._sources, boxes, fps, resolution, audio,
                    n_total, str(s.path), bg)

    @property
    def source_indices(self) -> list[int]:
        """The test frame (``source_index``) of every sample, in order."""
        return list(self._sources)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self._sample(i)
        i = i + len(self) if i < 0 else i
        sample["view"] = self._views[i]
        sample["source_index"] = self._sources[i]
        if self._sources[i] not in self._test_position:  # pragma: no cover - checked at build time
            raise PersonaInputError(f"{self._where}: frames[{i}].source_index = {self._sources[i]} is not a frame of the test split")
        source = self._test[self._test_position[self._sources[i]]]
        sample["source_image"], sample["source_camera"] = source["image"], source["camera"]
        return sample

