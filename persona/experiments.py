"""The run cache: the benchmark of a profile, cached training, evaluation and lip-sync runs, their
locks, digests and paths. What a table trains and how it is written is :mod:`persona.tables`.

Results are cached per run by a hash of everything that decides them (method, its config, the
data folder, seed), under ``runs/<profile>/<method>-<hash>/``. A rerun reuses a finished run
(it holds ``done.json``) and resumes an interrupted one; ``force=True`` recomputes. Training and
evaluation use the profile's fixed torch thread count (``persona.profiles.TORCH_THREADS``, part of
the key), so results do not depend on ``--jobs`` or on the machine's cores.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from persona.budget import logged_seconds
from persona.notebooks import REPO_ROOT
from persona.profiles import check_profile, torch_threads, using_threads
from persona.runlist import plot_metrics
from persona.runs import RunDir, atomic_write, atomic_write_json, to_jsonable


def data_root(profile: str) -> Path:
    return REPO_ROOT / "data" / "synthetic" / check_profile(profile)


def runs_root(profile: str) -> Path:
    return REPO_ROOT / "runs" / check_profile(profile)


def outputs(profile: str, rerun: str | None = None) -> tuple[Path, Path]:
    """(tables dir, figures dir): ``tables/`` and ``figures/`` for default, a sub-folder otherwise;
    ``reruns/<rerun>`` for a rerun with changed parameters (:attr:`persona.params.NotebookParams.rerun`)."""
    check_profile(profile)
    sub = f"reruns/{rerun}" if rerun else "" if profile == "default" else profile
    tables, figures = REPO_ROOT / "tables" / sub, REPO_ROOT / "figures" / sub
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    return tables, figures


def cached_csv(path: Path, make: Any, force: bool = False) -> pd.DataFrame:
    """The table at ``path`` when it is there (and not ``force``), else ``make()`` written there
    atomically; empty note columns (``sync_note``, ``note``) read back as "" rather than NaN."""
    if path.is_file() and not force:
        return pd.read_csv(path, keep_default_na=True).fillna({"sync_note": "", "note": ""})
    df = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


def ensure_benchmark(profile: str, seed: int = 0, force: bool = False, identities: int | None = None) -> Path:
    """Build the synthetic benchmark of ``profile`` unless it is already complete; return its root.
    ``identities``: at least this many (default: the profile's; a smaller build is extended, see
    :func:`persona.data.world.build_benchmark`)."""
    from persona.data.world import build_benchmark

    # build_benchmark keeps a complete build made with the same sizes, seed and code; the lock keeps
    # notebooks started side by side from building it twice (the second would swap its copy in under
    # the first one's readers)
    root = data_root(profile)
    with run_lock(root):
        return build_benchmark(root, profile, seed=seed, force=force, identities=identities)


def config_hash(obj: Any) -> str:
    blob = json.dumps(to_jsonable(obj), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """First 12 hex digits of the sha256 of a file (cached by path, size and mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def generator_digest(config: Any) -> str | None:
    """Digest of the generator weights a method config starts from (the shipped prior unless its
    ``generator`` field names a file), so that a retrained prior invalidates cached runs; None for
    methods without a generator or a generator that is not a file (e.g. 'random-tiny')."""
    if not hasattr(config, "generator"):
        return None
    from persona.eg3d.checkpoint import PRIOR_PATH

    source = config.generator
    path = PRIOR_PATH if source in (None, "", "prior") else Path(source)
    return file_digest(path) if path.is_file() else None


LOCK_HEARTBEAT_S = 30.0  # a holder refreshes its lock file's mtime this often
LOCK_STALE_S = 600.0  # a lock file not refreshed for this long belongs to a dead holder (any host)


def _lock_is_stale(path: Path, stale_after: float) -> bool:
    """A lock file is stale when its holder is a dead process on this host, or when it has not
    been refreshed for ``stale_after`` seconds (a holder on another host that died)."""
    import os
    import socket

    try:
        age = time.time() - path.stat().st_mtime
        owner = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        owner = {}
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return age > stale_after


@contextmanager
def run_lock(run_path: Path, poll: float = 1.0, stale_after: float = LOCK_STALE_S):
    """Exclusive lock on a run (``<run>.excl-lock`` beside it): a second process asking for the
    same run waits until the first has trained it, then loads it instead of training it again.

    Holds on a shared filesystem (NFS, Lustre) where ``flock`` may not: the lock is a file
    created with ``O_CREAT | O_EXCL`` (atomic there too), holding the owner's host and pid, its
    mtime refreshed every :data:`LOCK_HEARTBEAT_S` while held, removed on release. A waiter
    removes a stale lock (see :func:`_lock_is_stale`) and tries again."""
    import os
    import socket
    import threading

    run_path.parent.mkdir(parents=True, exist_ok=True)
    path = run_path.with_name(run_path.name + ".excl-lock")
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(path, stale_after):
                stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
                try:
                    os.replace(path, stale)  # one waiter wins the removal
                    stale.unlink()
                except FileNotFoundError:
                    pass
                continue
            time.sleep(poll)
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(owner)
        break
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(LOCK_HEARTBEAT_S):
            try:
                os.utime(path)
            except OSError:
                return

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@dataclass
class TrainedRun:
    name: str
    method: Any
    run: RunDir
    train_seconds: float
    threads: int | None = None  # torch threads it was trained with (evaluation uses the same)


PLAN_ENV = "PERSONA_PLAN_DIR"  # set: trained() records runs that are not done instead of training them


class RunDeferred(Exception):
    """Planning mode (``$PERSONA_PLAN_DIR``): this run is not trained yet; its job spec was written."""


class RunsDeferred(RuntimeError):
    """Planning mode: the runs of a table that are not trained yet (their job specs were written)."""

    def __init__(self, runs: Sequence[str]):
        super().__init__(f"planning: {len(runs)} run(s) not trained yet, job specs written: {', '.join(runs)}")
        self.runs = list(runs)


# config fields added after runs were cached, with the value that does what the code did before they
# existed: at that value they are left out of a run's cache key, so adding them kept every cached run
# valid. How a run reads its frames (DataLoader workers) or splits a batch into passes (NHA) never
# changes what it learns (up to float rounding); ours' RGB encoder init 'torch' is the old init, its
# lr_schedule 'constant' the old constant lr.
KEY_NEUTRAL_DEFAULTS: dict[str, Any] = {"num_workers": 0, "max_pixels_per_pass": 1 << 20, "rgb_init": "torch", "lr_schedule": "constant",
                                         "camera_correction": False, "camera_lr": 3e-3, "camera_terms": "linear",
                                         "expression_init": "torch", "ema_decay": 0.0, "precision": "fp32", "expression_noise": 0.0,
                                         "expression_standardise": False,
                                         "encoder_weight_decay": 0.0, "expression_lasso": 0.0,
                                         "expression_lasso_taper": 0.0}


def key_config(config: Any) -> Any:
    """A method's resolved config as it enters a run's cache key: :data:`KEY_NEUTRAL_DEFAULTS`
    fields at those values left out (a config without them, e.g. a dict, is returned unchanged)."""
    from dataclasses import asdict, is_dataclass

    if not is_dataclass(config):
        return config
    values = asdict(config)
    return {k: v for k, v in values.items() if not (k in KEY_NEUTRAL_DEFAULTS and v == KEY_NEUTRAL_DEFAULTS[k])}


def run_identity(name: str, cfg: dict[str, Any], train_ds: Any, profile: str) -> tuple[Any, dict[str, Any], Path]:
    """(method, cache key, run directory) of fitting method ``name`` with ``cfg`` on ``train_ds``."""
    from persona.methods import build_method

    method = build_method(name, dict(cfg))
    # the key is the RESOLVED config, so rows that spell the same run differently share it
    config = getattr(method, "config", cfg)
    threads = torch_threads(profile)
    key = {"method": name, "config": key_config(config), "data": str(Path(train_ds.root).resolve()),
           "split": getattr(train_ds, "split", None), "max_seconds": getattr(train_ds, "max_seconds", None),
           "torch_threads": threads}
    digest = generator_digest(config)
    if digest is not None:
        key["generator_digest"] = digest
    run_path = runs_root(profile) / f"{name}-{Path(train_ds.root).parent.name}-{config_hash(key)}"
    return method, key, run_path


def train_or_load(method: Any, key: dict[str, Any], run_path: Path, train_ds: Any, force: bool = False) -> tuple[RunDir, float]:
    """Fit ``method`` into ``run_path`` unless a finished run is there (then load it); locked, and
    with the key's torch thread count (the count is part of the run's identity)."""
    # notebooks running side by side, or cluster jobs, may ask for the same run
    with run_lock(run_path), using_threads(key.get("torch_threads")):
        run = RunDir(run_path)
        if force:
            run.clear()
        done = run_path / "done.json"
        if done.is_file():
            method.load(run)
            seconds = json.loads(done.read_text())["train_seconds"]
        else:
            start = time.perf_counter()
            method.fit(train_ds, run)
            seconds = time.perf_counter() - start
            # a run resumed after a kill: this session's wall time misses the earlier sessions; its log has them all
            seconds = max(seconds, logged_seconds(run.metrics()) or 0.0)
            atomic_write_json(done, {"train_seconds": seconds, "key": key})
            plot_metrics(run_path)  # metrics.png: loss and PSNR against the step
    return run, seconds


def _plan(name: str, cfg: dict[str, Any], train_ds: Any, profile: str, label: str | None, run_path: Path, key: dict[str, Any],
          plan_dir: Path) -> None:
    """Write the job spec of a run that planning mode found not done (see :mod:`persona.cluster`)."""
    spec = {"method": name, "cfg": to_jsonable(cfg), "data": str(Path(train_ds.root).resolve()),
            "split": getattr(train_ds, "split", "train"), "max_seconds": getattr(train_ds, "max_seconds", None),
            "profile": profile, "label": label, "run": str(run_path.resolve()), "threads": key["torch_threads"]}
    atomic_write_json(Path(plan_dir) / f"{run_path.name}.json", spec)


def trained(name: str, cfg: dict[str, Any], train_ds: Any, profile: str, label: str | None = None,
            force: bool = False) -> TrainedRun:
    """Fit method ``name`` with ``cfg`` on ``train_ds`` (cached; see module docstring). In
    planning mode (``$PERSONA_PLAN_DIR`` set) a run that is not done is written there as a job
    spec and :class:`RunDeferred` is raised instead."""
    import os

    method, key, run_path = run_identity(name, cfg, train_ds, profile)
    plan_dir = os.environ.get(PLAN_ENV)
    if plan_dir and (force or not (run_path / "done.json").is_file()):
        _plan(name, cfg, train_ds, profile, label, run_path, key, Path(plan_dir))
        raise RunDeferred(run_path.name)
    run, seconds = train_or_load(method, key, run_path, train_ds, force=force)
    return TrainedRun(label or name, method, run, seconds, key["torch_threads"])


class SplitFrames:
    """A method's frames of one whole split, rendered once, on first use
    (:func:`persona.evaluate.render_split`): Table 3's lip-sync clip, from which the scored test
    frames are cut when the method renders frame by frame (``Method.renders_frame_by_frame``:
    the NeRF baselines, whose renders of a frame alone and inside the clip agree within float
    rounding, <= 1e-5) instead of rendering those frames a second time."""

    def __init__(self, method: Any, dataset: Any):
        self.method, self.dataset, self._frames = method, dataset, None

    def frames(self) -> torch.Tensor:
        """[T,3,H,W] in [-1,1], the split's frames in order."""
        if self._frames is None:
            from persona.evaluate import render_split

            self._frames = render_split(self.method, self.dataset)
        return self._frames

    def by_index(self) -> dict[int, torch.Tensor]:
        """{frame index: [3,H,W]}, as :func:`persona.evaluate.evaluate_method`'s ``rendered``."""
        return {int(i): frame for i, frame in zip(self.dataset.indices, self.frames())}


def shared_split_frames(trained_run: TrainedRun, test_ds: Any, syncnet_model: str | None = None,
                        force: bool = False) -> SplitFrames | None:
    """A :class:`SplitFrames` for :func:`evaluated` and :func:`synced` of one run when both would
    render (the lip-sync score is not cached yet, or ``force``) and the method renders frame by
    frame; else None."""
    if not getattr(trained_run.method, "renders_frame_by_frame", False):
        return None
    if not force and sync_cache_path(trained_run, test_ds, syncnet_model).is_file():
        return None
    return SplitFrames(trained_run.method, test_ds)


def evaluated(trained_run: TrainedRun, test_ds: Any, novel_ds: Any | None = None, force: bool = False,
              max_frames: int | None = None, following: bool = False, split: SplitFrames | None = None) -> pd.DataFrame:
    """Per-frame metrics of a trained run (cached in the run dir as ``eval-<hash>.csv``).
    ``following``: also the expression-following score on the same frames
    (:func:`persona.evaluate.expression_following` on the synthetic video ``test_ds.root``),
    as columns ``following``, ``opening_std_ratio`` of the ``gt`` rows (part of the cache key).
    ``split``: the run's frames of the whole ``test_ds`` (:func:`shared_split_frames`), from which
    the scored test frames are taken instead of rendering them."""
    from persona.evaluate import evaluate_method

    key = [str(test_ds.root), test_ds.split, novel_ds is not None, max_frames] + (["following"] if following else [])
    path = trained_run.run.root / f"eval-{config_hash(key)}.csv"
    if path.is_file() and not force:
        return pd.read_csv(path)
    with using_threads(trained_run.threads):
        df = evaluate_method(trained_run.method, test_ds, novel_ds, max_frames=max_frames,
                             rendered=split.by_index() if split is not None else None)
        if following:
            df = with_following(df, trained_run.method, test_ds, max_frames)
    df["method"] = trained_run.name
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


@lru_cache(maxsize=4)
def frontal_clip(video: str, split: str = "test") -> Any:
    """:func:`persona.diagnostics.frontal_clip`, kept for the rows of one table (one world render per video)."""
    from persona.diagnostics import frontal_clip as render

    return render(video, split)


def with_following(df: pd.DataFrame, method: Any, test_ds: Any, max_frames: int | None) -> pd.DataFrame:
    """``df`` (per-frame rows of :func:`persona.evaluate.evaluate_method`) with ``following`` and
    ``opening_std_ratio`` of ``method`` on the frontal clip of ``test_ds``'s synthetic video, on
    the same ``max_frames`` frames, set on its ``gt`` rows (NaN elsewhere)."""
    from persona.evaluate import FOLLOWING_COLUMNS, expression_following

    scores = expression_following(method, max_frames=max_frames, clip=frontal_clip(str(test_ds.root), test_ds.split))
    df = df.copy()
    for column in FOLLOWING_COLUMNS:
        df[column] = float("nan")
        df.loc[df["view"] == "gt", column] = scores[column]
    return df


def static_evaluated(train_ds: Any, test_ds: Any, profile: str, max_frames: int | None = None, following: bool = False,
                     force: bool = False) -> pd.DataFrame:
    """The static floor (:func:`persona.evaluate.static_floor`: the mean training frame scored on
    the same ``max_frames`` test frames, method ``STATIC_LABEL``), with the following score when
    ``following`` (0 by construction: a still image does not move), cached under the profile's
    runs as ``static-<identity>-<hash>.csv``."""
    from persona.diagnostics import mean_frame
    from persona.evaluate import StaticFrame, static_floor

    key = [str(Path(train_ds.root).resolve()), getattr(train_ds, "max_seconds", None), str(test_ds.root), test_ds.split,
           max_frames, following]
    path = runs_root(profile) / f"static-{Path(test_ds.root).parent.name}-{config_hash(key)}.csv"
    if path.is_file() and not force:
        return pd.read_csv(path)
    with using_threads(torch_threads(profile)):
        df = static_floor(train_ds, test_ds, max_frames)
        if following:
            df = with_following(df, StaticFrame(mean_frame(train_ds)), test_ds, max_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


def sync_references(test_sets: dict[str, Any], profile: str, syncnet_model: str | None = None,
                    force: bool = False) -> pd.DataFrame:
    """Table 3's lip-sync floor rows (:func:`persona.evaluate.sync_reference_rows`) of the given
    test clips (identity -> test FrameDataset), with columns ``sync`` or ``syncnet_c``/``syncnet_d``
    (official SyncNet), ``sync_lse_d``, ``sync_offset_accuracy``; cached under the profile's runs
    as ``sync-reference-<hash>.csv`` (key: the clips and the scorer's weights)."""
    from persona.evaluate import sync_reference_rows

    key = [[name, str(ds.root), ds.split, len(ds)] for name, ds in test_sets.items()] + [bool(syncnet_model),
                                                                                          scorer_digest(syncnet_model)]
    path = runs_root(profile) / f"sync-reference-{config_hash(key)}.csv"
    if path.is_file() and not force:
        return pd.read_csv(path)
    scorer = sync_scorer(syncnet_model)[0] if syncnet_model else None
    with using_threads(torch_threads(profile)):
        df = sync_reference_rows(test_sets, scorer, lse_c_column="syncnet_c" if syncnet_model else "sync")
    if syncnet_model:
        df["syncnet_d"] = df["sync_lse_d"]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


def scorer_digest(syncnet_model: str | None = None) -> str | None:
    """Digest of the lip-sync scorer's weights (part of every sync cache key): the official
    SyncNet file when ``syncnet_model`` names one (a missing file: :func:`sync_scorer`'s error),
    else the shipped synthetic expert's (None when it is absent)."""
    from persona import syncnet

    if syncnet_model:
        if not Path(syncnet_model).is_file():
            sync_scorer(syncnet_model)  # raises the one-line error
        return file_digest(syncnet_model)
    return file_digest(syncnet.ASSET) if syncnet.ASSET.is_file() else None


def sync_scorer(syncnet_model: str | None = None) -> tuple[Any, str | None]:
    """(scorer, digest of its weights file): the official SyncNet from ``syncnet_model`` (the
    ``syncnet_v2.model`` of joonson/syncnet_python) when given, else the shipped synthetic expert."""
    from persona import syncnet

    if syncnet_model:
        path = Path(syncnet_model)
        if not path.is_file():
            from persona.errors import PersonaFileError

            raise PersonaFileError(f"syncnet_model: {path}: file not found; expected the official syncnet_v2.model "
                                   "(joonson/syncnet_python, data/syncnet_v2.model) or null for the synthetic expert")
        return syncnet.load_official(path), file_digest(path)
    return syncnet.load_synthetic_expert(), scorer_digest()


def sync_cache_path(trained_run: TrainedRun, test_ds: Any, syncnet_model: str | None = None) -> Path:
    """Where :func:`synced` caches a run's lip-sync rows: ``sync-<hash>.csv`` in the run dir (key:
    the clip and the scorer's weights)."""
    key = [str(test_ds.root), test_ds.split] + (["official-syncnet"] if syncnet_model else []) + [scorer_digest(syncnet_model)]
    return trained_run.run.root / f"sync-{config_hash(key)}.csv"


def synced(trained_run: TrainedRun, test_ds: Any, force: bool = False, syncnet_model: str | None = None,
           split: SplitFrames | None = None) -> pd.DataFrame:
    """Lip-sync rows (the method and the ground truth) of a trained run, cached as ``sync-*.csv``;
    scored by the official SyncNet when ``syncnet_model`` names its weights, else by the synthetic
    expert. ``split``: the run's frames of ``test_ds`` when already rendered (:func:`shared_split_frames`)."""
    from persona.evaluate import evaluate_sync

    path = sync_cache_path(trained_run, test_ds, syncnet_model)
    if path.is_file() and not force:
        return pd.read_csv(path)
    scorer = sync_scorer(syncnet_model)[0] if syncnet_model else None  # the expert: loaded by evaluate_sync
    with using_threads(trained_run.threads):
        df = evaluate_sync(trained_run.method, test_ds, scorer=scorer, frames=split.frames() if split is not None else None)
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    return df


def load_generator(eg3d_pkl: str | None = None) -> tuple[Any, str]:
    """(generator, where it came from): the official EG3D pickle when given, else the shipped tiny prior."""
    from persona.eg3d.checkpoint import load_generator as load

    from persona.tables import generator_name

    return load(eg3d_pkl)[0], generator_name(eg3d_pkl)
