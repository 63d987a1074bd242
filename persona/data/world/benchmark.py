"""The synthetic benchmark: writes identities' videos (NerFACE layout + audio + novel views) and the
prior corpus to a folder, atomically, and keeps a complete build made by the same code."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from persona import cameras
from persona.profiles import with_dry_run
from persona.data.formats import unit_to_uint8
from persona.data.world.corpus import sample_prior_batch
from persona.data.world.identity import Identity, _pack_identities, sample_identity
from persona.data.world.render import mouth_boxes, render_batch
from persona.data.world.video import Video, make_video

@dataclass(frozen=True)
class BenchmarkConfig:
    """Sizes of the synthetic benchmark (profiles change sizes only)."""

    resolution: int = 64
    identities: int = 1
    fps: int = 25
    mono_train_frames: int = 48
    mono_test_frames: int = 12
    audio_train_frames: int = 60
    audio_test_frames: int = 15
    val_frames: int = 4          # val = the first test frames (NerFACE wants a val split)
    novel_every: int = 3         # novel-view ground truth for every k-th test frame
    prior_images: int = 64
    render_batch: int = 32


BENCHMARK_PROFILES: dict[str, BenchmarkConfig] = with_dry_run({  # paper-dry: paper's (it runs on its own inputs, persona.dry_run)
    # 2 identities (Table 5 drives one with the other; the smoke tables use the first), 2.4 s mono video
    # (48 + 12 frames), 3 s audio video, novel views of 4 test frames, 64 prior images
    "smoke": BenchmarkConfig(identities=2),
    # 3 identities, 20 s train + 4 s test for both videos (the paper trains audio methods on 20 s)
    "default": BenchmarkConfig(resolution=64, identities=3, mono_train_frames=500, mono_test_frames=100,
                               audio_train_frames=500, audio_test_frames=100, val_frames=20, novel_every=4,
                               prior_images=2000),
    # optional large synthetic set; the paper's own path is real data (persona.data.formats)
    "paper": BenchmarkConfig(resolution=256, identities=5, mono_train_frames=1500, mono_test_frames=250,
                             audio_train_frames=1500, audio_test_frames=250, val_frames=50, novel_every=4,
                             prior_images=20000, render_batch=8),
})

BENCHMARK_VERSION = 1


def code_fingerprint() -> str:
    """sha256 (16 hex) of the sources that decide the benchmark's bytes: a complete build made by
    other code is rebuilt rather than reused."""
    import hashlib

    from persona.data import audio, formats

    h = hashlib.sha256()
    for module in (cameras, audio, formats):
        h.update(Path(module.__file__).read_bytes())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # the whole world package
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def benchmark_dir(profile: str, base: str | Path = "data/synthetic") -> Path:
    """Where the benchmark of a profile lives by default: ``data/synthetic/<profile>``."""
    from persona.profiles import check_profile

    return Path(base) / check_profile(profile)


def benchmark_identity_seeds(n: int, seed: int = 0) -> list[int]:
    """Identity seeds of the benchmark: id00 wears glasses, id01 does not, the rest at random."""
    seeds, j = [], seed * 10_000
    wants = [True, False]
    while len(seeds) < n:
        ident = sample_identity(j)
        if len(seeds) >= len(wants) or ident.glasses == wants[len(seeds)]:
            seeds.append(j)
        j += 1
    return seeds


def render_frames(identity: Identity, expressions: np.ndarray, cams: np.ndarray, resolution: int,
                   batch: int, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N,H,W,3] and coverage masks [N,H,W] of a frame sequence."""
    from tqdm import tqdm

    packed = _pack_identities([identity])
    imgs, masks = [], []
    for s in tqdm(range(0, len(expressions), batch), desc=desc, leave=False, disable=len(expressions) <= batch):
        e = torch.as_tensor(expressions[s:s + batch])
        c = torch.as_tensor(cams[s:s + batch])
        ident = {k: v.expand(e.shape[0], *v.shape[1:]) for k, v in packed.items()}
        img, mask = render_batch(ident, e, c, resolution, return_mask=True)
        imgs.append(unit_to_uint8(img.permute(0, 2, 3, 1)))
        masks.append(mask[:, 0].numpy())
    return np.concatenate(imgs), np.concatenate(masks)


def _bbox(mask: np.ndarray) -> list[float]:
    """NerFACE bbox [y0, y1, x0, x1] (fractions) of a coverage mask [H,W]."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        return [0.0, 1.0, 0.0, 1.0]
    return [ys.min() / h, (ys.max() + 1) / h, xs.min() / w, (xs.max() + 1) / w]


def _write_video(folder: Path, identity: Identity, video: Video, n_train: int, cfg: BenchmarkConfig, desc: str) -> None:
    from persona.data import audio, formats

    res = cfg.resolution
    folder.mkdir(parents=True)
    images, masks = render_frames(identity, video.expressions, video.cameras, res, cfg.render_batch, desc)
    boxes = mouth_boxes([identity] * len(images), video.expressions, video.cameras).numpy()
    for i, img in enumerate(images):
        formats.write_image(folder / "images" / f"{i:05d}.png", img)
    v = (np.arange(res) + 0.5) / res
    bg = np.asarray(identity.background_top) * (1 - v[:, None]) + np.asarray(identity.background_bottom) * v[:, None]
    bg = np.repeat(bg[:, None, :], res, axis=1)
    formats.write_image(folder / "bg" / "background.png", (bg * 255).round().astype(np.uint8))
    frames = []
    for i in range(len(images)):
        pose, _ = cameras.label_to_nerface(video.cameras[i], res, res)
        frames.append({"file_path": f"images/{i:05d}", "transform_matrix": pose, "expression": video.expressions[i],
                       "bbox": _bbox(masks[i]), "mouth_box": boxes[i], "camera_label": video.cameras[i],
                       "frame_index": i})
    focal_px = cameras.FOCAL * res
    intr = [focal_px, focal_px, 0.5, 0.5]
    angle = 2 * math.atan(0.5 / cameras.FOCAL)
    meta = {"fps": video.fps, "w": res, "h": res, "background": "bg/background.png", "identity_seed": identity.seed,
            "num_frames": len(images)}
    test = frames[n_train:]
    formats.write_nerface(folder, "train", frames[:n_train], intr, angle, **meta)
    formats.write_nerface(folder, "val", test[:cfg.val_frames], intr, angle, **meta)
    formats.write_nerface(folder, "test", test, intr, angle, **meta)
    from persona.runs import atomic_write_bytes

    atomic_write_bytes(folder / "aud.wav", audio.wav_bytes(video.waveform))
    atomic_write_bytes(folder / "aud.npy", formats.npy_bytes(audio.audio_windows(video.waveform, len(images), video.fps)))
    # novel-view ground truth of every k-th test frame
    sources = list(range(n_train, len(images), cfg.novel_every))
    names = list(cameras.NOVEL_VIEWS)
    src = np.repeat(sources, len(names))
    views = names * len(sources)
    cams = np.stack([cameras.novel_view(video.cameras[s], *cameras.NOVEL_VIEWS[v]) for s, v in zip(src, views)])
    exprs = video.expressions[src]
    nov_imgs, _ = render_frames(identity, exprs, cams, res, cfg.render_batch, desc + " novel")
    nov_boxes = mouth_boxes([identity] * len(src), exprs, cams).numpy()
    nov_frames = []
    for j, (s, view) in enumerate(zip(src, views)):
        name = f"{int(s):05d}_{view}"
        formats.write_image(folder / "novel" / "images" / f"{name}.png", nov_imgs[j])
        pose, _ = cameras.label_to_nerface(cams[j], res, res)
        nov_frames.append({"file_path": f"images/{name}", "transform_matrix": pose, "expression": exprs[j],
                           "camera_label": cams[j], "mouth_box": nov_boxes[j], "view": view,
                           "source_index": int(s), "frame_index": int(s)})
    formats.write_nerface(folder / "novel", "novel", nov_frames, intr, angle, **meta)


def _write_prior(folder: Path, cfg: BenchmarkConfig, seed: int) -> None:
    from tqdm import tqdm

    from persona.data import formats

    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    entries = []
    for s in tqdm(range(0, cfg.prior_images, cfg.render_batch), desc="prior corpus", leave=False):
        n = min(cfg.render_batch, cfg.prior_images - s)
        batch = sample_prior_batch(n, cfg.resolution, g)
        for k in range(n):
            name = f"images/img{s + k:08d}.png"
            formats.write_image(folder / name, batch["image"][k].numpy())
            entries.append((name, batch["camera"][k].numpy()))
    formats.write_eg3d_dataset(folder, entries)


def is_complete(root: str | Path) -> bool:
    """A benchmark folder counts as complete only when its ``benchmark.json`` exists (written
    last, inside the temporary folder, before the atomic rename)."""
    return (Path(root) / "benchmark.json").is_file()


# written first into every benchmark folder persona builds: persona replaces only folders carrying it
OWNER_MARKER = ".persona-benchmark"
_MARKER_TEXT = "persona synthetic benchmark: this folder is rebuilt by `python -m persona data build`\n"


def _persona_entry(name: str) -> bool:
    """Top-level names a benchmark build writes (an earlier build's leftovers are replaced, nothing else)."""
    import re

    return name in ("benchmark.json", OWNER_MARKER, "prior") or re.fullmatch(r"id\d+", name) is not None


def is_owned(root: str | Path) -> bool:
    """True when ``root`` is a benchmark persona wrote: it has the marker, or (builds older than the
    marker) a ``benchmark.json`` with persona's ``version`` and ``code`` fields."""
    import json

    root = Path(root)
    if (root / OWNER_MARKER).is_file():
        return True
    try:
        summary = json.loads((root / "benchmark.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"version", "code", "config"} <= set(summary)


def check_out_folder(root: str | Path) -> Path:
    """The absolute path of a benchmark output folder, after refusing one persona may not replace:
    a file, or a non-empty folder it did not write (persona never deletes the user's files)."""
    from persona.errors import PersonaInputError

    absolute = Path(os.path.abspath(root))
    if absolute.exists() and not absolute.is_dir():
        raise PersonaInputError(f"{root}: --out is a file; expected a new folder, an empty one or an earlier benchmark")
    if absolute.is_dir() and any(absolute.iterdir()) and not is_owned(absolute):
        raise PersonaInputError(f"{root}: folder is not empty and is not a persona benchmark (no {OWNER_MARKER}); "
                                f"refusing to overwrite it - expected a new or empty --out folder")
    if absolute.parent == absolute:
        raise PersonaInputError(f"{root}: --out is a filesystem root; expected a folder inside one")
    return absolute


def _install(tmp: Path, root: Path) -> None:
    """Move the finished build ``tmp`` to ``root``. A missing ``root`` is one atomic rename; an empty
    folder or an earlier build (e.g. ``--out .``) keeps its inode: the earlier build's entries are moved
    aside (``benchmark.json`` first, so it stops looking complete), the new ones moved in
    (``benchmark.json`` last) and the old ones deleted. Entries persona did not write stay."""
    import shutil

    if not root.exists():
        os.replace(tmp, root)
        return
    old = root.parent / f".{root.name}.old-{os.getpid()}"
    old.mkdir()
    last_first = lambda names: sorted(names, key=lambda n: (n != "benchmark.json", n))  # noqa: E731
    for name in last_first(e.name for e in root.iterdir() if _persona_entry(e.name)):
        os.replace(root / name, old / name)
    for name in reversed(last_first(e.name for e in tmp.iterdir())):
        os.replace(tmp / name, root / name)
    tmp.rmdir()
    shutil.rmtree(old)


def _building_folder(root: Path) -> Path:
    """A new, empty temporary sibling of ``root`` for a build (``.NAME.building-PID``), after removing
    the ``.building-PID`` / ``.old-PID`` leftovers of killed builds (ours only)."""
    import shutil

    from persona.runs import remove_stale_leftovers

    remove_stale_leftovers(root.parent)
    tmp = root.parent / f".{root.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _write_identity(folder: Path, k: int, ident_seed: int, cfg: BenchmarkConfig) -> dict[str, dict]:
    """Write identity ``k`` (seed ``ident_seed``): ``folder/idNN/{mono,audio}``; -> its benchmark.json entry."""
    identity = sample_identity(ident_seed)
    name = f"id{k:02d}"
    mono = make_video(cfg.mono_train_frames + cfg.mono_test_frames, cfg.fps, ident_seed * 10 + 1, True)
    _write_video(folder / name / "mono", identity, mono, cfg.mono_train_frames, cfg, f"{name} mono")
    talk = make_video(cfg.audio_train_frames + cfg.audio_test_frames, cfg.fps, ident_seed * 10 + 2, False)
    _write_video(folder / name / "audio", identity, talk, cfg.audio_train_frames, cfg, f"{name} audio")
    return {name: {"seed": ident_seed, "glasses": identity.glasses}}


def _held_identities(old: object, summary: dict) -> int | None:
    """How many identities the complete build described by ``old`` (its benchmark.json) holds, when
    it matches ``summary`` in sizes (all but the identity count), seed, version and code; else None."""
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        return None
    if any(old.get(k) != summary[k] for k in ("seed", "version", "code")):
        return None
    others = lambda config: {k: v for k, v in config.items() if k != "identities"}  # noqa: E731
    held = old["config"].get("identities")
    entries = old.get("identities")
    if others(old["config"]) != others(summary["config"]) or not isinstance(held, int) or not isinstance(entries, dict) \
            or sorted(entries) != [f"id{k:02d}" for k in range(held)]:
        return None
    return held


def _extend(root: Path, old: dict, cfg: BenchmarkConfig, seed: int) -> None:
    """Add identities ``old``'s count .. ``cfg.identities - 1`` to the complete build at ``root``: written
    in a temporary sibling, each ``idNN`` moved in (replacing the leftover of an interrupted extension:
    a name benchmark.json does not list), then benchmark.json rewritten (atomically, last). Killed
    before that, the build still reads as the old count and the next call redoes the extension."""
    import shutil

    from persona.data import formats

    held = int(old["config"]["identities"])
    tmp = _building_folder(root)
    try:
        summary = {**old, "config": {**old["config"], "identities": cfg.identities}, "identities": dict(old["identities"])}
        seeds = benchmark_identity_seeds(cfg.identities, seed)
        for k in range(held, cfg.identities):
            summary["identities"].update(_write_identity(tmp, k, seeds[k], cfg))
        for name in sorted(summary["identities"])[held:]:
            if (root / name).exists():
                shutil.rmtree(root / name)
            os.replace(tmp / name, root / name)
        formats.write_json(root / "benchmark.json", summary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_benchmark(root: str | Path, profile: str, seed: int = 0, force: bool = False,
                    config: BenchmarkConfig | None = None, identities: int | None = None) -> Path:
    """Write the synthetic benchmark of ``profile`` into the folder ``root`` (e.g.
    ``benchmark_dir(profile)``); returns ``root``.

    Layout: ``prior/`` (EG3D dataset.json + images), ``idNN/mono/`` and ``idNN/audio/`` (NerFACE
    layout + aud.npy + aud.wav + bg/ + novel/), ``benchmark.json``, ``.persona-benchmark`` (marker).
    Built in a temporary sibling folder and moved in at the end, so an interrupted build never looks
    complete. ``root`` must be new, empty or an earlier benchmark (:func:`check_out_folder`; a folder of
    other files raises :class:`persona.errors.PersonaInputError` before anything is built). Deterministic:
    the same profile and seed give byte-identical files. An existing complete build with the same
    sizes, seed and code (:func:`code_fingerprint`) is kept unless ``force``. ``config`` overrides the profile's sizes (tests).

    ``identities``: build at least this many identities (default: the profile's count; a reviewer's
    run asks for more, issue #19). Identity k's videos depend only on its seed, so ``id00``.. are the
    same files whatever the count: a complete build that matches in everything but holds fewer
    identities is extended in place (:func:`_extend`: the new ``idNN`` written aside, moved in, then
    ``benchmark.json`` rewritten last), and one that holds more is kept as it is (tables read the first N).
    """
    import shutil

    from persona.data import formats
    from persona.profiles import check_profile

    cfg = config if config is not None else BENCHMARK_PROFILES[check_profile(profile)]
    if identities is not None and int(identities) > cfg.identities:
        cfg = replace(cfg, identities=int(identities))
    given, root = Path(root), check_out_folder(root)
    summary = {"profile": profile, "seed": int(seed), "version": BENCHMARK_VERSION, "code": code_fingerprint(),
               "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)}}
    if is_complete(root) and not force:
        try:
            old = formats.read_json(root / "benchmark.json")
        except ValueError:
            old = None
        held = _held_identities(old, summary)
        if held is not None and held >= cfg.identities:
            return given
        if held is not None:
            _extend(root, old, cfg, int(seed))
            return given
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = _building_folder(root)
    try:
        (tmp / OWNER_MARKER).write_text(_MARKER_TEXT)
        summary["identities"] = {}
        for k, ident_seed in enumerate(benchmark_identity_seeds(cfg.identities, seed)):
            summary["identities"].update(_write_identity(tmp, k, ident_seed, cfg))
        _write_prior(tmp / "prior", cfg, seed)
        formats.write_json(tmp / "benchmark.json", summary)
        _install(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return given
