"""Cross-identity reenactment (Table 5, beyond the paper): identity A's avatar driven by identity B.

The paper names it as future work; only the synthetic world can score it, since it can render A
with B's expressions - the ground truth no real video has. For a pair (A, B) of synthetic videos
of the same kind (``mono`` for the expression-driven and 2-D methods, ``audio`` for the
audio-driven ones), :func:`driving_clip` makes the clip:

- the driving signals are B's test split: its expressions [T,76], its audio windows [T,16,29]
  (and the whole split's track, for the neighbouring windows), its frame numbers;
- the cameras are A's test cameras, so every method renders A's head motion;
- the driving VIDEO of a 2-D method (FOMM) is B re-rendered by the world with B's expressions at
  A's cameras (B "performing" A's head motion: the driving pose and the target pose agree);
- the ground truth is A rendered by the world with B's expressions at A's cameras (for audio:
  the expressions B's audio timeline produced - the world's speech drives the mouth), as the
  benchmark would have written it (8-bit), with A's mouth boxes there;
- the following clip (:func:`following_clip`) is the same at one frontal camera.

:func:`score_run` renders one method on a clip and scores it: PSNR / SSIM / LPIPS and mouth PSNR /
SSIM against the ground truth on the scored frames, the expression-following score, and, for
audio-driven methods, lip-sync against B's audio (Sync-C of the whole clip). :func:`cross_compare`
does it for every row of a table and every pair; :data:`persona.tables.T5` is the table.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch

from persona.diagnostics import world_render  # noqa: F401 (part of this module's API: the pair's renders)
from persona.errors import PersonaInputError

SPLIT = "test"
PAIR_ARROW = "←"  # pair label "id00 ← id01": id00's avatar driven by id01
CACHE_VERSION = 1  # bump when what a cached score means changes


@dataclass
class DrivingClip:
    """Identity A's test frames driven by identity B's signals (see the module docstring).

    ``conditions``: a batch dict as a dataset yields, T frames: ``expression`` [T,76] and
    ``audio`` [T,16,29] (B's), ``index`` [T] (B's frame numbers, the keys of ``track``),
    ``camera`` [T,25] (A's cameras, or the frontal camera of :func:`following_clip`), ``image``
    [T,3,H,W] (B re-rendered at those cameras: the driving video of a 2-D method).
    ``truth`` [T,3,H,W] in [-1,1]: A rendered with B's expressions at those cameras;
    ``mouth_box`` [T,4]: A's mouth boxes there; ``track``: B's frame number -> audio window;
    ``target`` / ``driver``: the two video folders; ``indices``: A's frame numbers (rows' ``index``)."""

    target: Path
    driver: Path
    conditions: dict[str, torch.Tensor]
    truth: torch.Tensor
    mouth_box: torch.Tensor
    track: dict[int, torch.Tensor]
    indices: list[int]

    def __len__(self) -> int:
        return int(self.truth.shape[0])

    @property
    def label(self) -> str:
        return pair_label(self.target, self.driver)


def identity_name(video: str | Path) -> str:
    """``id00`` of ``.../id00/mono``."""
    video = Path(video)
    return video.parent.name if video.name in ("mono", "audio") else video.name


def pair_label(target: str | Path, driver: str | Path) -> str:
    """``id00 ← id01``: identity id00's avatar driven by id01."""
    return f"{identity_name(target)} {PAIR_ARROW} {identity_name(driver)}"


def driver_of(video: str | Path, table: Sequence[str | Path] | None = None) -> Path:
    """Identity B of the pair whose A is ``video``: the next identity, cyclic, among ``table`` (the
    identities a table runs on: any of their videos, e.g. its ``mono`` ones; B is taken with
    ``video``'s kind) when it holds two or more, else among every ``id*`` folder of the benchmark
    holding that kind of video (a one-identity table, e.g. the smoke profile's, is driven by the
    benchmark's next identity). A table passes its own: a benchmark folder can hold more identities
    than the table (an earlier run's larger profile), and its last pair must not depend on them.
    Refuses fewer than two identities."""
    video = Path(video)
    kind, root = video.name, video.parent.parent
    if table is not None and len(table) >= 2:
        found = sorted(Path(v).parent / kind for v in table)
        if video not in found:
            raise PersonaInputError(f"{video}: not one of the table's identities ({', '.join(p.parent.name for p in found)})")
    else:
        found = sorted(p / kind for p in root.glob("id*") if (p / kind).is_dir())
        if video not in found:
            raise PersonaInputError(f"{video}: not an identity video of the benchmark {root} (expected {root}/idNN/{kind})")
    if len(found) < 2:
        raise PersonaInputError(f"{root}: {len(found)} identity with a {kind} video; cross-identity reenactment needs >= 2 "
                                "(the benchmark's identities, see persona.data.world.BENCHMARK_PROFILES)")
    return found[(found.index(video) + 1) % len(found)]


def _clip(target: Path, driver: Path, cameras: torch.Tensor | None) -> DrivingClip:
    from persona.audio_nets import audio_track
    from persona.data import world as S
    from persona.data.dataset import FrameDataset
    from persona.diagnostics import identity_seed

    a, b = FrameDataset(target, SPLIT), FrameDataset(driver, SPLIT)
    n = min(len(a), len(b))
    if a.resolution != b.resolution:
        raise PersonaInputError(f"{driver}: {b.resolution} px; expected {a.resolution} px like {target} (same benchmark)")
    seed_a, seed_b = identity_seed(target), identity_seed(driver)
    expressions = b.expressions[:n].float()
    cams = a.cameras[:n].float() if cameras is None else torch.as_tensor(cameras, dtype=torch.float32).reshape(1, 25).repeat(n, 1)
    truth = world_render(seed_a, expressions, cams, a.resolution, "cross-identity ground truth")
    driving = world_render(seed_b, expressions, cams, a.resolution, "cross-identity driver")
    boxes = S.mouth_boxes([S.sample_identity(seed_a)] * n, expressions, cams).float()
    conditions = {"expression": expressions, "audio": b.audio[:n].float(), "index": torch.as_tensor(b.indices[:n]),
                  "camera": cams, "image": driving}
    return DrivingClip(Path(target), Path(driver), conditions, truth, boxes, audio_track(b), [int(i) for i in a.indices[:n]])


@lru_cache(maxsize=8)
def driving_clip(target: str | Path, driver: str | Path) -> DrivingClip:
    """A's test split driven by B's (see :class:`DrivingClip`), at A's test cameras: T = the
    shorter of the two test splits. Both must be synthetic videos (``identity_seed`` in their
    ``transforms_train.json``). Cached per pair (one world render per table)."""
    return _clip(Path(target), Path(driver), None)


@lru_cache(maxsize=8)
def following_clip(target: str | Path, driver: str | Path) -> DrivingClip:
    """:func:`driving_clip` at one fixed frontal camera (the following score's clip, as
    :func:`persona.diagnostics.frontal_clip`: at a fixed camera a frozen face scores 0)."""
    from persona import cameras

    return _clip(Path(target), Path(driver), torch.as_tensor(cameras.camera_label(0.0, 0.0), dtype=torch.float32))


def as_frontal_clip(clip: DrivingClip) -> Any:
    """``clip`` as a :class:`persona.diagnostics.FrontalClip` (conditions, A's opening box at the
    clip's camera, the world's mouth-opening control of B's expressions) for
    :func:`persona.evaluate.expression_following`; the truth is passed there separately."""
    from persona.diagnostics import FrontalClip, identity_seed, mouth_open_control, opening_box

    box = opening_box(identity_seed(clip.target), clip.conditions["camera"][:1])[0]
    return FrontalClip(clip.conditions, box, mouth_open_control(clip.conditions["expression"]))


# --------------------------------------------------------------------------------------------
# rendering and scoring one method on one pair
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def render_clip(method: Any, clip: DrivingClip, positions: Sequence[int] | None = None, batch_size: int = 8) -> torch.Tensor:
    """The method's frames of ``clip`` (at ``positions``, all when None) -> [P,3,H,W] in [-1,1].
    Audio methods get their neighbouring windows from B's track
    (:func:`persona.evaluate.with_audio_neighbours`); a 2-D method's relative motion starts at
    the driving video's first frame (:func:`driving_start`)."""
    from persona.evaluate import driving_start, render_batch

    positions = list(range(len(clip))) if positions is None else list(positions)
    with driving_start(method, clip.conditions["image"][0]):
        return torch.cat([render_batch(method, {k: v[positions[s:s + batch_size]] for k, v in clip.conditions.items()}, clip.track)
                          for s in range(0, len(positions), batch_size)])


def _sync_columns(frames: torch.Tensor, clip: DrivingClip, scorer: Any | None) -> dict[str, Any]:
    """Lip-sync of A's rendered clip against B's audio: ``sync`` (LSE-C), ``sync_lse_d``,
    ``sync_offset_accuracy``; NaN and ``sync_note`` when the clip is too short."""
    from persona import syncnet

    driver = _driver_split(clip)
    try:
        _, _, wave, rate, fps = syncnet.dataset_clip(driver, len(clip))
        scores = (scorer or syncnet.load_synthetic_expert()).score(frames, wave, rate, fps, clip.mouth_box,
                                                                   where=syncnet.clip_name(driver))
    except syncnet.SyncClipTooShort as short:
        return {"sync": math.nan, "sync_lse_d": math.nan, "sync_offset_accuracy": math.nan, "sync_note": str(short)}
    return {"sync": scores.lse_c, "sync_lse_d": scores.lse_d, "sync_offset_accuracy": scores.offset_accuracy, "sync_note": ""}


def _driver_split(clip: DrivingClip) -> Any:
    from persona.data.dataset import FrameDataset

    return FrameDataset(clip.driver, SPLIT)


def score_method(method: Any, clip: DrivingClip, frontal: DrivingClip, max_frames: int | None = None, sync: bool = False,
                 scorer: Any | None = None, lpips_metric: Any | None = None) -> pd.DataFrame:
    """One row per scored frame (``max_frames`` evenly spaced, :func:`persona.evaluate.frame_positions`)
    of ``method`` on ``clip``: ``method, view`` ('gt'), ``index`` (A's frame), ``psnr, ssim,
    lpips, psnr_mouth, ssim_mouth`` against the re-rendered truth, ``following`` and
    ``opening_std_ratio`` on ``frontal`` (same frames), and with ``sync`` the lip-sync columns of
    the whole clip against B's audio (:func:`_sync_columns`)."""
    from persona import metrics
    from persona.evaluate import EVAL_SEED, _metric_rows, expression_following, frame_positions

    with torch.random.fork_rng():
        torch.manual_seed(EVAL_SEED)
        positions = frame_positions(len(clip), max_frames)
        frames = render_clip(method, clip) if sync else None
        pred = frames[positions] if frames is not None else render_clip(method, clip, positions)
        name = getattr(method, "name", type(method).__name__)
        rows = _metric_rows(name, ["gt"] * len(positions), [clip.indices[p] for p in positions], pred, clip.truth[positions],
                            clip.mouth_box[positions], lpips_metric or metrics.LPIPS())
        frame = pd.DataFrame(rows)
        follow = expression_following(method, max_frames=max_frames, clip=as_frontal_clip(frontal), truth=frontal.truth)
    frame["following"], frame["opening_std_ratio"] = follow["following"], follow["opening_std_ratio"]
    if sync:
        for column, value in _sync_columns(frames, clip, scorer).items():
            frame[column] = value
    return frame


# --------------------------------------------------------------------------------------------
# a table's rows on every pair (cached)
# --------------------------------------------------------------------------------------------


def cache_key(clip: DrivingClip, max_frames: int | None, sync: bool) -> list[Any]:
    """What decides one method's scores on a pair besides the run: the two videos, the scored
    frames, whether lip-sync is scored (and by which expert's weights)."""
    from persona.experiments import scorer_digest

    digest = scorer_digest() if sync else None
    return ["cross-identity", CACHE_VERSION, str(Path(clip.target).resolve()), str(Path(clip.driver).resolve()), SPLIT,
            max_frames, sync, digest]


def cross_compare(rows: Sequence[Any], video_dirs: Sequence[Path], profile: str, force: bool = False, static: bool = False,
                  following: bool = True, max_test_frames: int | None = None, train_max_seconds: float | None = None,
                  audio_rows: Sequence[str] = (), budget_seconds: float | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, str], Any]]:
    """Table 5's per-frame scores: every row on every pair (A = each of ``video_dirs``, the
    ``mono`` videos; B = :func:`driver_of` A among them). Rows whose label is in ``audio_rows`` are the
    audio-driven ones: trained on A's ``audio`` video (``train_max_seconds`` of it, as Table 3)
    and scored on the audio pair with lip-sync; the others on the mono pair. Runs come from the
    run cache (:func:`persona.experiments.trained`: Tables 2 and 3's, nothing new when those
    notebooks ran first). ``static``: the row :data:`persona.evaluate.STATIC_LABEL` (A's mean
    mono training frame) on the mono pair. Returns what :func:`persona.tables.compare` returns,
    with ``identity`` = the pair label (:func:`pair_label`). ``following`` is always scored.
    ``budget_seconds``: the equal training budget Tables 2 and 3 were run with (the same runs are
    looked up: :func:`persona.budget.equal_budget_cfg`)."""
    from persona import budget
    from persona import experiments as ex
    from persona.data.dataset import FrameDataset
    from persona.diagnostics import mean_frame
    from persona.evaluate import STATIC_LABEL, StaticFrame
    from persona.profiles import torch_threads, using_threads
    from persona.tables import slug

    frames, timings, runs, deferred = [], [], {}, []
    for mono in video_dirs:
        mono = Path(mono)
        identity = identity_name(mono)
        for row in rows:
            kind = "audio" if row.label in audio_rows else "mono"
            target = mono.parent / kind
            driver = driver_of(target, video_dirs)
            train = FrameDataset(target, "train", max_seconds=train_max_seconds if kind == "audio" else None)
            try:
                cfg = budget.equal_budget_cfg(row.method, {**row.cfg, "profile": profile}, budget_seconds)
                tr = ex.trained(row.method, cfg, train, profile,
                                label=f"{slug(row.label)}-{identity}", force=False)  # never retrains a finished run
            except ex.RunDeferred as run_name:
                deferred.append(str(run_name))
                continue
            tr.name = row.label
            clip, label = driving_clip(target, driver), pair_label(target, driver)
            print(f"{label}: {row.label} ...", flush=True)
            start = time.perf_counter()
            key = cache_key(clip, max_test_frames, kind == "audio")
            with using_threads(tr.threads):
                df = ex.cached_csv(tr.run.root / f"xid-{ex.config_hash(key)}.csv",
                             lambda: score_method(tr.method, clip, following_clip(target, driver), max_test_frames,
                                                  sync=kind == "audio"), force)
            df["method"], df["identity"] = row.label, label
            frames.append(df)
            timings.append({"method": row.label, "identity": label, "train_seconds": tr.train_seconds,
                            "eval_seconds": time.perf_counter() - start})
            runs[(row.label, label)] = tr
        if static:
            driver = driver_of(mono, video_dirs)
            clip, label = driving_clip(mono, driver), pair_label(mono, driver)
            key = cache_key(clip, max_test_frames, False) + [str(mono.resolve())]
            with using_threads(torch_threads(profile)):
                df = ex.cached_csv(ex.runs_root(profile) / f"static-xid-{identity}-{ex.config_hash(key)}.csv",
                             lambda: score_method(StaticFrame(mean_frame(FrameDataset(mono, "train"))), clip,
                                                  following_clip(mono, driver), max_test_frames), force)
            frames.append(df.assign(method=STATIC_LABEL, identity=label))
    if deferred:
        raise ex.RunsDeferred(deferred)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(timings), runs
