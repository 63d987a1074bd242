"""What a notebook calls: the benchmark for a profile, cached training and evaluation runs.

Results are cached per run by a hash of everything that decides them (method, its config, the
data folder, seed), under ``runs/<profile>/<method>-<hash>/``. A rerun reuses a finished run
(it holds ``done.json``) and resumes an interrupted one; ``force=True`` recomputes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from persona.notebooks import REPO_ROOT
from persona.profiles import check_profile
from persona.runs import RunDir, atomic_write_json, to_jsonable


def data_root(profile: str) -> Path:
    return REPO_ROOT / "data" / "synthetic" / check_profile(profile)


def runs_root(profile: str) -> Path:
    return REPO_ROOT / "runs" / check_profile(profile)


def outputs(profile: str) -> tuple[Path, Path]:
    """(tables dir, figures dir): ``tables/`` and ``figures/`` for default, a sub-folder otherwise."""
    check_profile(profile)
    sub = "" if profile == "default" else profile
    tables, figures = REPO_ROOT / "tables" / sub, REPO_ROOT / "figures" / sub
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    return tables, figures


def require_paper_inputs(profile: str, eg3d_pkl: str | None, dirs: Sequence[str], what: str) -> None:
    """The paper profile needs the official weights and real data: refuse clearly without them."""
    if profile != "paper":
        return
    missing = []
    if not eg3d_pkl or not Path(eg3d_pkl).is_file():
        missing.append(f"eg3d_pkl (official EG3D pickle, e.g. ffhqrebalanced512-128.pkl): got {eg3d_pkl!r}")
    if not dirs:
        missing.append(f"{what} (folders of real videos): none given")
    missing += [f"{what}: {d} is not a folder" for d in dirs if not Path(d).is_dir()]
    if missing:
        raise SystemExit("the paper profile needs real inputs; set them in notebooks/params/paper.yaml:\n  - "
                         + "\n  - ".join(missing))


def ensure_benchmark(profile: str, seed: int = 0, force: bool = False) -> Path:
    """Build the synthetic benchmark of ``profile`` unless it is already complete; return its root."""
    from persona.data.synthetic import build_benchmark

    root = data_root(profile)
    if force and root.exists():
        shutil.rmtree(root)
    if not root.exists():
        build_benchmark(root, profile, seed=seed)
    return root


def videos(root: Path, kind: str, identities: int) -> list[Path]:
    """The first ``identities`` videos of ``kind`` ('mono' or 'audio') under a benchmark root."""
    found = sorted(p / kind for p in root.glob("id*") if (p / kind).is_dir())
    if len(found) < identities:
        raise ValueError(f"{root}: {len(found)} {kind} videos, {identities} asked for")
    return found[:identities]


def config_hash(obj: Any) -> str:
    blob = json.dumps(to_jsonable(obj), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class TrainedRun:
    name: str
    method: Any
    run: RunDir
    train_seconds: float


def trained(name: str, cfg: dict[str, Any], train_ds: Any, profile: str, label: str | None = None,
            force: bool = False) -> TrainedRun:
    """Fit method ``name`` with ``cfg`` on ``train_ds`` (cached; see module docstring)."""
    from persona.methods import build_method

    key = {"method": name, "config": cfg, "data": str(Path(train_ds.root).resolve()),
           "split": getattr(train_ds, "split", None), "max_seconds": getattr(train_ds, "max_seconds", None)}
    run_path = runs_root(profile) / f"{label or name}-{config_hash(key)}"
    if force and run_path.exists():
        shutil.rmtree(run_path)
    run = RunDir(run_path)
    method = build_method(name, dict(cfg))
    done = run_path / "done.json"
    if done.is_file():
        method.load(run)
        seconds = json.loads(done.read_text())["train_seconds"]
    else:
        start = time.perf_counter()
        method.fit(train_ds, run)
        seconds = time.perf_counter() - start
        atomic_write_json(done, {"train_seconds": seconds, "key": key})
    return TrainedRun(label or name, method, run, seconds)


def evaluated(trained_run: TrainedRun, test_ds: Any, novel_ds: Any | None = None, force: bool = False) -> pd.DataFrame:
    """Per-frame metrics of a trained run (cached in the run dir as ``eval.csv``)."""
    from persona.evaluate import evaluate_method

    path = trained_run.run.root / f"eval-{config_hash([str(test_ds.root), test_ds.split, novel_ds is not None])}.csv"
    if path.is_file() and not force:
        return pd.read_csv(path)
    df = evaluate_method(trained_run.method, test_ds, novel_ds)
    df["method"] = trained_run.name
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return df


@dataclass
class Row:
    """One row of a results table: a display label, a registered method and its config."""

    label: str
    method: str
    cfg: dict[str, Any]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def compare(rows: Sequence[Row], video_dirs: Sequence[Path], profile: str, force: bool = False, novel: bool = True,
            train_max_seconds: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, str], TrainedRun]]:
    """Train and evaluate every row on every video.

    Returns (per-frame metrics with columns method, identity, view, ...; timings with one row per
    (method, identity): train_seconds, render_ms_per_frame; the trained runs by (label, identity)).
    """
    from persona.data.dataset import FrameDataset, NovelViewDataset

    frames, timings, runs = [], [], {}
    for video in video_dirs:
        identity = Path(video).parent.name if Path(video).name in ("mono", "audio") else Path(video).name
        train = FrameDataset(video, "train", max_seconds=train_max_seconds)
        test = FrameDataset(video, "test")
        novel_ds = NovelViewDataset(video) if novel and (Path(video) / "novel").is_dir() else None
        for row in rows:
            print(f"{identity}: {row.label} ...", flush=True)
            tr = trained(row.method, {**row.cfg, "profile": profile}, train, profile,
                         label=f"{slug(row.label)}-{identity}", force=force)
            tr.name = row.label
            start = time.perf_counter()
            df = evaluated(tr, test, novel_ds if getattr(tr.method, "supports_novel_views", False) else None, force=force)
            eval_seconds = time.perf_counter() - start
            df["identity"] = identity
            frames.append(df)
            timings.append({"method": row.label, "identity": identity, "train_seconds": tr.train_seconds,
                            "eval_seconds": eval_seconds})
            runs[(row.label, identity)] = tr
    return pd.concat(frames, ignore_index=True), pd.DataFrame(timings), runs
