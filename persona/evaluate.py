"""Evaluate a trained method on a test split: per-frame image metrics per view, and lip-sync.

``evaluate_method`` renders every test frame at its ground-truth camera (view ``gt``) and, given
a :class:`persona.data.dataset.NovelViewDataset`, at every novel camera (views such as
``yaw+25``), and returns one row per frame per view. ``summarise`` turns that into the mean/std
table. ``python -m persona eval RUN`` does both for a run directory and writes the CSV there.

Columns: ``method, view, index`` (frame number in the video; for novel views the test frame it
re-renders), ``psnr, ssim, lpips`` (full image), ``psnr_mouth, ssim_mouth`` (the dataset's mouth
box, see :mod:`persona.metrics` for region semantics), ``note``. LPIPS is NaN when the AlexNet
weights are absent (``df.attrs['lpips_note']`` says why and how to enable it). Methods that do
not render novel views get NaN rows with a note, so tables keep their shape.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from persona import metrics
from persona.errors import PersonaInputError

METRIC_COLUMNS = ("psnr", "ssim", "lpips", "psnr_mouth", "ssim_mouth")
COLUMNS = ("method", "view", "index", *METRIC_COLUMNS, "note")
NO_NOVEL_VIEWS = "method does not render novel views"


def _batches(dataset: Any, batch_size: int) -> Iterator[dict[str, Any]]:
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)


def method_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """What a method may see of a (batch of) sample(s).

    A novel-view sample's ``image`` is the ground truth at the novel camera: the method instead
    gets the video frame (``source_image``) and its camera (``source_camera``) as ``image`` and
    ``camera``, exactly what it would have at test time. Other samples pass through unchanged.
    """
    conditions = {k: v for k, v in batch.items() if k not in ("source_image", "source_camera")}
    if "source_image" in batch:
        conditions["image"] = batch["source_image"]
        conditions["camera"] = batch["source_camera"]
    return conditions


def with_audio_neighbours(conditions: dict[str, Any], track: dict[int, torch.Tensor] | None) -> dict[str, Any]:
    """``conditions`` plus ``audio_neighbours`` [B,8,16,29]: the windows of frames index-4 ..
    index+3 (``source_index`` for novel-view samples) from ``track`` (frame number -> window
    [16,29], the whole test split's audio, see :func:`persona.audio_nets.audio_track`), zeros past the
    track's ends. The one path by which every audio method (ours, AD-NeRF, DFRF) gets its
    neighbouring windows at evaluation. Unchanged when ``track`` is None or there is no audio."""
    from persona.audio_nets import gather_neighbour_windows

    if track is None or "audio" not in conditions or "audio_neighbours" in conditions:
        return conditions
    index = conditions.get("source_index", conditions.get("index"))
    if index is None:
        return conditions
    audio = torch.as_tensor(conditions["audio"]).float()
    return {**conditions, "audio_neighbours": gather_neighbour_windows(torch.as_tensor(index).view(-1), audio, track)}


def split_audio_track(test_ds: Any) -> dict[int, torch.Tensor] | None:
    """The whole split's audio track (frame number -> window) when its samples carry audio, else None."""
    from persona.audio_nets import audio_track

    if len(test_ds) == 0 or "audio" not in test_ds[0]:
        return None
    return audio_track(test_ds)


@torch.no_grad()
def render_batch(method: Any, batch: dict[str, Any], track: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """The method's frames for one batch at the batch's cameras -> [B,3,H,W] in [-1,1] (shape-checked).

    For novel-view batches the method sees only :func:`method_inputs` (never the target image);
    ``track``: the test split's audio track, for the neighbouring windows (:func:`with_audio_neighbours`)."""
    pred = method.render(with_audio_neighbours(method_inputs(batch), track), batch["camera"])
    target = batch["image"]
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"{getattr(method, 'name', method)}.render returned {tuple(pred.shape)}; expected {tuple(target.shape)} like the dataset's images")
    return pred.detach().float().cpu()


def _metric_rows(name: str, views: list[str], indices: list[int], pred: torch.Tensor, target: torch.Tensor,
                 mouth_boxes: torch.Tensor | None, lpips_metric: metrics.LPIPS) -> list[dict[str, Any]]:
    full = metrics.image_metrics(pred, target, None, lpips_metric)
    mouth = {"psnr": [math.nan] * len(views), "ssim": [math.nan] * len(views)}
    if mouth_boxes is not None:
        mouth = {"psnr": metrics.psnr(pred, target, mouth_boxes), "ssim": metrics.ssim(pred, target, mouth_boxes)}
    return [
        {"method": name, "view": views[i], "index": indices[i], "psnr": float(full["psnr"][i]), "ssim": float(full["ssim"][i]),
         "lpips": float(full["lpips"][i]), "psnr_mouth": float(mouth["psnr"][i]), "ssim_mouth": float(mouth["ssim"][i]), "note": ""}
        for i in range(len(views))
    ]


def frame_positions(n: int, max_frames: int | None) -> list[int]:
    """Positions (0 .. n-1) of the ``max_frames`` evenly spaced test frames that are scored (all
    when None or >= n): the one frame selection of every method (see :func:`shared_frame_count`)."""
    if max_frames is None or max_frames >= n:
        return list(range(n))
    if max_frames < 1:
        raise PersonaInputError(f"max_frames: expected None or a positive number of test frames, got {max_frames}")
    return np.unique(np.linspace(0, n - 1, max_frames).round().astype(int)).tolist()


def shared_frame_count(*counts: int | None) -> int | None:
    """The number of test frames every method of one table is scored on: the smallest of the
    given per-method counts (None = every frame), so that all methods are scored on the same
    frame indices (:func:`frame_positions` of that count). Returns None when all are None."""
    given = [int(c) for c in counts if c is not None]
    return min(given) if given else None


def frame_subset(test_ds: Any, novel_ds: Any | None, max_frames: int | None) -> tuple[Any, Any | None]:
    """``max_frames`` evenly spaced test frames (all when None) and the novel-view samples of
    exactly those frames: for methods whose per-frame cost (e.g. PTI's optimisation) rules out
    scoring every frame. Returns (test subset, novel subset or None)."""
    from torch.utils.data import Subset

    if max_frames is None or max_frames >= len(test_ds):
        return test_ds, novel_ds
    positions = frame_positions(len(test_ds), max_frames)
    chosen = {int(test_ds.indices[p]) for p in positions}
    test_sub = Subset(test_ds, positions)
    if novel_ds is None:
        return test_sub, None
    novel_positions = [i for i, src in enumerate(novel_ds.source_indices) if int(src) in chosen]
    return test_sub, Subset(novel_ds, novel_positions)


EVAL_SEED = 0  # renders draw random depth samples (EG3D's stratified jitter): evaluation starts from this seed


def seeded_evaluation(function):
    """Run ``function`` from torch seed :data:`EVAL_SEED`, restoring the caller's RNG state after,
    so scores do not depend on what ran before (a freshly trained run and the same run loaded
    from the cache, in another process or on another node, score the same)."""
    import functools

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.random.fork_rng():
            torch.manual_seed(EVAL_SEED)
            return function(*args, **kwargs)

    return wrapper


@seeded_evaluation
def evaluate_method(method: Any, test_ds: Any, novel_ds: Any | None = None, batch_size: int = 8,
                    lpips_metric: metrics.LPIPS | None = None, progress: bool = True,
                    max_frames: int | None = None, rendered: dict[int, torch.Tensor] | None = None) -> pd.DataFrame:
    """Per-frame metrics of ``method`` on ``test_ds`` (view ``gt``) and ``novel_ds`` (its views).

    method: a :class:`persona.methods.Method` ready to render; test_ds: a FrameDataset; novel_ds:
    a NovelViewDataset or None; max_frames: score only that many evenly spaced test frames (and
    their novel views; see :func:`frame_subset`); rendered: frames already rendered at the
    ground-truth cameras ({frame index: [3,H,W] in [-1,1]}, e.g. what ``render`` wrote), used
    instead of rendering those again. Returns a DataFrame with :data:`COLUMNS`, one row per frame
    per view.
    """
    from tqdm import tqdm

    lpips_metric = lpips_metric or metrics.LPIPS()
    name = getattr(method, "name", type(method).__name__)
    track = split_audio_track(test_ds)  # neighbouring audio windows come from the whole test track, for every method
    test_ds, novel_ds = frame_subset(test_ds, novel_ds, max_frames)
    rows: list[dict[str, Any]] = []
    for batch in tqdm(_batches(test_ds, batch_size), desc=f"eval {name} test", total=math.ceil(len(test_ds) / batch_size), disable=not progress):
        indices = [int(i) for i in batch["index"]]
        if rendered is not None and all(i in rendered and rendered[i].shape == batch["image"].shape[1:] for i in indices):
            pred = torch.stack([rendered[i] for i in indices])
        else:
            pred = render_batch(method, batch, track)
        rows += _metric_rows(name, ["gt"] * len(indices), indices, pred, batch["image"], batch.get("mouth_box"), lpips_metric)
    if novel_ds is not None:
        supports = bool(method.supports_novel_views)
        for batch in tqdm(_batches(novel_ds, batch_size), desc=f"eval {name} novel", total=math.ceil(len(novel_ds) / batch_size), disable=not progress):
            views, indices = list(batch["view"]), [int(i) for i in batch["source_index"]]
            if not supports:
                rows += [{"method": name, "view": v, "index": i, **{c: math.nan for c in METRIC_COLUMNS}, "note": NO_NOVEL_VIEWS}
                         for v, i in zip(views, indices)]
                continue
            pred = render_batch(method, batch, track)
            rows += _metric_rows(name, views, indices, pred, batch["image"], batch.get("mouth_box"), lpips_metric)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["lpips_label"] = lpips_metric.label if lpips_metric.model is not None else metrics.LPIPS_LABEL
    frame.attrs["lpips_note"] = None if lpips_metric.available else (lpips_metric.reason or metrics.NOT_LPIPS_LABEL)
    return frame


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (method, view): mean and std of every metric column over frames (NaN ignored), and frame count."""
    present = [c for c in METRIC_COLUMNS if c in frame.columns]
    grouped = frame.groupby(["method", "view"], sort=False)
    table = grouped[present].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table["frames"] = grouped.size()
    notes = grouped["note"].agg(lambda s: "; ".join(sorted({n for n in s if isinstance(n, str) and n})))
    table["note"] = notes
    return table.reset_index()


def format_summary(summary: pd.DataFrame, lpips_note: str | None = None) -> str:
    """A plain-text table of :func:`summarise` (mean +- std) with the LPIPS footnote."""
    lines = [f"{'method':<10} {'view':<10} {'PSNR':>14} {'SSIM':>16} {'LPIPS':>16} {'PSNR mouth':>14}  frames"]
    for _, row in summary.iterrows():
        def cell(metric: str, digits: int) -> str:
            mean, std = row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_std", math.nan)
            return "n/a" if not np.isfinite(mean) and not np.isinf(mean) else f"{mean:.{digits}f}±{0 if not np.isfinite(std) else std:.{digits}f}"
        lpips_cell = cell("lpips", 4) + ("*" if lpips_note and not np.isfinite(row.get("lpips_mean", math.nan)) else "")
        lines.append(f"{row['method']:<10} {row['view']:<10} {cell('psnr', 2):>14} {cell('ssim', 4):>16} {lpips_cell:>16} "
                     f"{cell('psnr_mouth', 2):>14}  {int(row['frames'])}" + (f"  ({row['note']})" if row.get("note") else ""))
    if lpips_note:
        lines.append(f"* {lpips_note}")
    return "\n".join(lines)


@torch.no_grad()
def render_split(method: Any, dataset: Any, batch_size: int = 8) -> torch.Tensor:
    """All frames of a split, in order, as the method renders them -> [T,3,H,W] (audio
    neighbours from the split's own track, as :func:`evaluate_method`)."""
    track = split_audio_track(dataset)
    return torch.cat([render_batch(method, batch, track) for batch in _batches(dataset, batch_size)])


@seeded_evaluation
def evaluate_sync(method: Any, test_ds: Any, scorer: Any | None = None, batch_size: int = 8,
                  frames: torch.Tensor | None = None) -> pd.DataFrame:
    """Lip-sync of a method on the test clip and of the ground truth (the paper's Table 3 rows).

    ``frames``: the method's test frames [T,3,H,W] when already rendered. Rows: ``method`` (the
    method's name or ``ground truth``), ``scorer``, ``lse_c``, ``lse_d``, ``offset``,
    ``offset_accuracy``, ``windows``. A clip shorter than :data:`persona.syncnet.MIN_CLIP_FRAMES`
    is not scored: both rows are NaN and an extra column ``note`` says why."""
    from persona import syncnet

    name = getattr(method, "name", type(method).__name__)
    try:
        syncnet.check_clip_length(len(test_ds), syncnet.clip_name(test_ds), float(getattr(test_ds, "fps", 25) or 25))
    except syncnet.SyncClipTooShort as short:
        return pd.DataFrame([{"method": who, "scorer": getattr(scorer, "name", syncnet.SYNTHETIC_NAME), "lse_c": math.nan,
                              "lse_d": math.nan, "offset": math.nan, "offset_accuracy": math.nan, "windows": 0, "note": str(short)}
                             for who in (name, "ground truth")])
    scorer = scorer or syncnet.load_synthetic_expert()
    frames = frames if frames is not None else render_split(method, test_ds, batch_size)
    rendered = syncnet.score_frames(scorer, frames, test_ds)
    truth = syncnet.ground_truth_scores(test_ds, scorer)
    return pd.DataFrame([{"method": name, **rendered.as_row()}, {"method": "ground truth", **truth.as_row()}])


# --------------------------------------------------------------------------------------------
# expression fidelity: the static floor and the following score, for every method
# --------------------------------------------------------------------------------------------

STATIC_LABEL = "Static (mean training frame)"
FOLLOWING_COLUMNS = ("following", "opening_std_ratio")


class StaticFrame:
    """A stand-in method that shows one image for every frame (no expression, no pose): the
    floor a method that reenacts must beat, above all in the mouth box. ``image`` [3,H,W] in [-1,1]."""

    name, supports_novel_views = STATIC_LABEL, False

    def __init__(self, image: torch.Tensor) -> None:
        self.image = torch.as_tensor(image).float()

    def render(self, conditions: dict[str, Any], camera: torch.Tensor) -> torch.Tensor:
        return self.image[None].expand(torch.as_tensor(camera).reshape(-1, 25).shape[0], -1, -1, -1).clone()


def static_floor(train_ds: Any, test_ds: Any, max_frames: int | None = None, lpips_metric: metrics.LPIPS | None = None,
                 progress: bool = False) -> pd.DataFrame:
    """The identity's mean training frame scored like a method (:func:`evaluate_method`, view
    ``gt``, method :data:`STATIC_LABEL`) on the same ``max_frames`` test frames: every metric
    column, ``psnr_mouth`` / ``ssim_mouth`` included. One row per scored frame."""
    from persona.diagnostics import mean_frame

    return evaluate_method(StaticFrame(mean_frame(train_ds)), test_ds, None, lpips_metric=lpips_metric,
                           progress=progress, max_frames=max_frames)


@contextmanager
def driving_start(method: Any, image: torch.Tensor) -> Iterator[None]:
    """While inside: a 2-D method's relative motion starts at ``image`` [3,H,W] (the driving
    video's first frame, ``set_driving_start``); the method's own start is restored after.
    Methods without the hook (or with the no-op default) are untouched."""
    from persona.methods import provides

    if not provides(method, "set_driving_start"):
        yield
        return
    previous = getattr(method, "driving_start", None)
    method.set_driving_start(image)
    try:
        yield
    finally:
        method.driving_start = previous


@seeded_evaluation
def expression_following(method: Any, video: str | Path | None = None, max_frames: int | None = None, split: str = "test",
                         clip: Any | None = None, batch_size: int = 8, truth: torch.Tensor | None = None) -> dict[str, float]:
    """How well a method's mouth follows the ground truth's over a clip.

    The clip is the split re-rendered by the synthetic world at one fixed frontal camera
    (:func:`persona.diagnostics.frontal_clip` of ``video``, or ``clip`` when given), restricted
    to the same scored frames as the image metrics (:func:`frame_positions` of ``max_frames``).
    Every method gets the clip's conditions at that camera: expression, audio (neighbouring
    windows from the whole split, :func:`with_audio_neighbours`), frame index, and as ``image``
    the ground truth at the frontal camera - what an image-driven method (FOMM, PTI, ours RGB)
    animates or inverts; FOMM and PTI render that input camera, which is the clip's camera.
    Returns ``following`` (Pearson correlation of the method's and the ground truth's mouth
    opening in the camera-only box, :func:`persona.diagnostics.following_score`; 0 for a static
    image), ``opening_std_ratio`` (< 1: a muted mouth), ``following_frames``, ``following_control`` (the
    method's opening against the world's mouth-opening control) and ``validity`` (the ground truth's
    image opening against that control: how well the image measure reads the world). ``truth``
    [T,3,H,W]: the ground truth when the clip's input ``image`` is not it (cross-identity:
    identity B's frames drive, A's re-rendered frames are the truth, :mod:`persona.cross_identity`);
    None: the clip's ``image``."""
    from persona import diagnostics as D

    if clip is None:
        if video is None:
            raise ValueError("expression_following: give the synthetic video folder or a FrontalClip")
        clip = D.frontal_clip(video, split)
    positions = frame_positions(len(clip), max_frames)
    if len(positions) < 3:
        raise PersonaInputError(f"{video or 'clip'}: {split} split: the following score needs >= 3 scored frames, "
                                f"got {len(positions)} (max_frames={max_frames}, {len(clip)} frames)")
    c = clip.conditions
    track = {int(i): a.float() for i, a in zip(c["index"].tolist(), c["audio"])}
    picked = {k: v[positions] for k, v in c.items()}
    out = []
    with driving_start(method, c["image"][0]):  # a 2-D method's relative motion starts at this clip's first frame
        for s in range(0, len(positions), batch_size):
            batch = {k: v[s:s + batch_size] for k, v in picked.items()}
            out.append(torch.as_tensor(method.render(with_audio_neighbours(batch, track), batch["camera"])).float().cpu())
    target = picked["image"] if truth is None else torch.as_tensor(truth)[positions]
    mine, truth = D.mouth_opening(torch.cat(out), clip.box), D.mouth_opening(target, clip.box)
    control = clip.mouth_open[positions]
    return {"following": D.following_score(mine, truth), "opening_std_ratio": float(mine.std() / truth.std().clamp_min(1e-12)),
            "following_frames": len(positions), "following_control": D.following_score(mine, control),
            "validity": D.following_score(truth, control)}


# lip-sync columns of a results table beyond LSE-C: per-frame column -> field of the sync rows
SYNC_DETAIL_COLUMNS = {"sync_lse_d": "lse_d", "sync_offset_accuracy": "offset_accuracy"}
SYNC_REFERENCE_SUFFIX = " (reference)"


def sync_reference_rows(test_sets: dict[str, Any], scorer: Any | None = None, lse_c_column: str = "sync") -> pd.DataFrame:
    """Table 3's floor: :func:`persona.syncnet.reference_scores` of every identity's test clip as
    rows in the per-frame format of :func:`persona.experiments.compare` (``method`` = the
    reference's name + :data:`SYNC_REFERENCE_SUFFIX`, ``identity``, ``view`` 'gt', ``lse_c_column``
    and :data:`SYNC_DETAIL_COLUMNS`). ``test_sets``: identity -> test FrameDataset; the "audio
    from another clip" of an identity is the next identity's test clip at least as long (in the
    given order, cyclic; no such row when there is none). Short clips: no rows (see
    :data:`persona.syncnet.MIN_CLIP_FRAMES`)."""
    from persona import syncnet

    names = list(test_sets)
    rows = []
    for k, identity in enumerate(names):
        ds = test_sets[identity]
        if len(ds) < syncnet.MIN_CLIP_FRAMES:
            continue
        longer = [test_sets[n] for n in names[k + 1:] + names[:k] if len(test_sets[n]) >= len(ds)]
        other = longer[0] if longer else None
        scores = syncnet.reference_scores(ds, other, scorer)
        for _, r in scores.iterrows():
            rows.append({"method": r["method"] + SYNC_REFERENCE_SUFFIX, "identity": identity, "view": "gt",
                         lse_c_column: float(r["lse_c"]), **{c: float(r[f]) for c, f in SYNC_DETAIL_COLUMNS.items()}})
    return pd.DataFrame(rows, columns=["method", "identity", "view", lse_c_column, *SYNC_DETAIL_COLUMNS])


def reusable_renders(run: Any, data: Path, split: str, resolution: int | None, indices: list[int]) -> dict[int, torch.Tensor] | None:
    """The frames ``python -m persona render`` wrote for ``split`` ({index: [3,H,W] in [-1,1]}, from
    8-bit PNGs) when they come from the run's current checkpoint, the same data and resolution and
    cover ``indices``; else None."""
    import cv2

    from persona.verbs import render_stamp

    stamp_path = run.renders / f"{split}.json"
    if not stamp_path.is_file():
        return None
    stamp = json.loads(stamp_path.read_text())
    if {k: stamp.get(k) for k in ("checkpoint", "data", "split", "resolution")} != render_stamp(run, data, split, resolution) \
            or not set(indices) <= set(stamp.get("indices", [])):
        return None
    frames = {}
    for index in indices:
        image = cv2.imread(str(run.renders / split / f"{index:05d}.png"), cv2.IMREAD_COLOR)
        if image is None:
            return None
        frames[index] = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float() / 127.5 - 1.0
    return frames


def main_eval(argv: list[str]) -> int:
    """``python -m persona eval RUN [--data DIR] [--split test] [--novel/--no-novel] [--out CSV]``."""
    from persona import cli

    parser = cli.parser("eval", "metrics of a trained run on a split (reuses the frames `render` wrote at the same checkpoint)")
    parser.add_argument("run", help="run directory (holds config.json with method, config, data)")
    parser.add_argument("--data", help="dataset folder (None: the run's config.json 'data')")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="frames to score")
    parser.add_argument("--novel", action=argparse.BooleanOptionalAction, default=True, help="also score novel views when the dataset has them")
    parser.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True, help="lip-sync scores when the dataset has aud.wav")
    parser.add_argument("--reuse-renders", action=argparse.BooleanOptionalAction, default=True,
                        help="score the frames `python -m persona render` wrote when they come from the same checkpoint")
    parser.add_argument("--out", help="CSV of per-frame metrics (None: RUN/metrics_<split>.csv)")
    cli.add_batch_size(parser, "frames per forward pass", default=8, old=None)
    cli.add_runtime(parser, device_help="torch device: cpu, cuda, cuda:1 ... (None: the run's)")
    args = parser.parse_args(argv)
    cli.apply_runtime(args)

    from persona.data.dataset import FrameDataset, NovelViewDataset
    from persona.methods import build_method
    from persona.runs import RunDir, atomic_write_bytes

    run = RunDir(args.run)
    config = run.read_config()
    for key in ("method", "config", "data"):
        if key not in config and not (key == "data" and args.data):
            print(f"{run.root / 'config.json'}: missing field {key!r}; expected {{'method', 'config', 'data'}}", file=sys.stderr)
            return 2
    if (not isinstance(config["method"], str) or not isinstance(config.get("config"), (dict, type(None)))
            or not (args.data or isinstance(config["data"], str))):
        raise PersonaInputError(f"{run.root / 'config.json'}: method/config/data: expected a method name, a config object "
                                f"and a folder path, got {type(config['method']).__name__}, {type(config.get('config')).__name__} "
                                f"and {type(config.get('data')).__name__}")
    data = Path(args.data or config["data"])
    method_config = dict(config.get("config") or {})
    if args.device:
        method_config["device"] = args.device
    method = build_method(config["method"], method_config)
    method.load(run)
    test_ds = FrameDataset(data, split=args.split)
    novel_ds = None
    if args.novel and args.split == "test" and (data / "novel" / "transforms_novel.json").is_file():
        novel_ds = NovelViewDataset(data, resolution=test_ds.resolution)
    rendered = None
    if args.reuse_renders and getattr(test_ds, "indices", None) is not None:
        rendered = reusable_renders(run, data, args.split, method_config.get("resolution"), [int(i) for i in test_ds.indices])
        if rendered is not None:
            print(f"scoring the frames in {run.renders / args.split} (written by `render` at this checkpoint; 8-bit PNGs)")
    frame = evaluate_method(method, test_ds, novel_ds, batch_size=args.batch_size, rendered=rendered)
    out = Path(args.out) if args.out else run.root / f"metrics_{args.split}.csv"
    atomic_write_bytes(out, frame.to_csv(index=False).encode())
    summary = summarise(frame)
    atomic_write_bytes(out.with_name(out.stem + "_summary.csv"), summary.to_csv(index=False).encode())
    print(format_summary(summary, frame.attrs.get("lpips_note")))
    print(f"wrote {out}")
    if args.sync and (data / "aud.wav").is_file():
        from persona import syncnet

        if syncnet.ASSET.is_file():
            frames = torch.stack([rendered[int(i)] for i in test_ds.indices]) if rendered is not None else None
            sync = evaluate_sync(method, test_ds, syncnet.load_synthetic_expert(), args.batch_size, frames=frames)
            sync_path = out.with_name(f"sync_{args.split}.csv")
            atomic_write_bytes(sync_path, sync.to_csv(index=False).encode())
            print(f"lip-sync not scored: {sync['note'].iloc[0]}" if "note" in sync else sync.to_string(index=False))
            print(f"wrote {sync_path} (LSE-C = {syncnet.SYNTHETIC_NAME}; not comparable with published SyncNet numbers)")
        else:
            print(f"lip-sync skipped: {syncnet.ASSET} missing (python -m persona syncnet train)")
    return 0
