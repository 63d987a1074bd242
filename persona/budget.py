"""Training budgets: what every table row trained with, and equal budgets from one calibration.

- **Recorded budget** of a trained run (:func:`run_budget`): its training steps, the training
  seconds its trainer logged (``metrics.jsonl``: ``train_seconds``, the NeRFs' ``seconds``; the
  run's ``done.json`` when neither is there) and the supervised pixels, steps x pixels per step:
  full frames x H x W for ours, NHA and FOMM, rays per step for the NeRFs (NerFACE, AD-NeRF,
  DFRF). PTI trains nothing: its budget is per test frame (the inversion + pivotal tuning of one
  frame: steps run, mean seconds per frame from its log, one frame x H x W per step). DFRF's base
  model, pre-trained once on other identities and cached, is stated separately
  (:func:`dfrf_base_budget`).
- **Calibration** (``python -m persona bench budget``, :func:`main`): CPU seconds per training
  step of every method at a profile's sizes, measured by :mod:`persona.bench` on the reference
  machine, kept in :data:`CALIBRATION` (committed).
- **Equal budgets** (:func:`equal_budget_cfg`, the notebooks' ``budget_seconds``): each method
  trains ``round(budget_seconds / its calibrated seconds per step)`` steps, its stage boundaries
  scaled in proportion, so runs stay deterministic (a step count, not a wall-clock stop).
  ``budget_seconds = None`` returns the config unchanged: each method's own steps.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from persona.errors import PersonaFileError, PersonaInputError

CALIBRATION = Path(__file__).resolve().parent / "assets" / "budget_calibration.json"

# method -> (the fields that count its training steps, fields that mark a stage in steps: scaled with them).
# Learning-rate schedules stay as they are (ours: none; NeRFs: lr_decay_steps is a decay rate; FOMM and
# NHA give their milestones as fractions of the steps already).
SCHEDULE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ours": (("iterations",), ("frozen_iterations", "audio_smooth_after")),
    "pti": (("w_steps", "wplus_steps", "tune_steps"), ()),  # per test frame; the three split in proportion
    "nerface": (("iterations",), ()),
    "adnerf": (("iterations",), ("smooth_warmup",)),
    "dfrf": (("iterations",), ("smooth_warmup",)),  # the fine-tune; the cached base keeps pretrain_steps
    "fomm": (("iterations",), ()),
    "nha": (("steps",), ()),
}
RAY_METHODS = ("nerface", "adnerf", "dfrf")


# ----------------------------------------------------------------------------------------- calibration
def calibration_key(method: str, config: Any) -> str:
    """The calibration entry of a method config: ``ours-<modality>`` for ours (the encoders differ),
    else the registry name (the names of ``bench methods --methods``)."""
    return f"ours-{config.modality}" if method == "ours" else method


def load_calibration(path: Path = CALIBRATION) -> dict[str, Any]:
    """The calibration file (see :func:`main`); a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: budget calibration missing; run `python -m persona bench budget`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PersonaFileError(f"{path}: not valid JSON ({err}); rerun `python -m persona bench budget`") from None
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise PersonaFileError(f"{path}: profiles: expected a mapping profile -> {{method: ms per step}}")
    return data


def seconds_per_step(key: str, profile: str, calibration: Mapping[str, Any] | None = None,
                     path: Path = CALIBRATION) -> float:
    """Calibrated seconds per training step of ``key`` (:func:`calibration_key`) at ``profile``."""
    data = calibration if calibration is not None else load_calibration(path)
    table = data["profiles"].get(profile)
    if not isinstance(table, dict):
        raise PersonaInputError(f"{path}: profiles.{profile}: no calibration for profile {profile!r} "
                                f"(has {sorted(data['profiles'])}); run `python -m persona bench budget --profile {profile}`")
    ms = table.get(key)
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not ms > 0:
        raise PersonaInputError(f"{path}: profiles.{profile}.{key}: expected a positive ms per step, got {ms!r}")
    return float(ms) / 1000.0


def split_steps(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` steps split in proportion to ``weights`` (largest remainder; the parts sum to ``total``)."""
    whole = sum(weights)
    if whole <= 0:
        return [total] + [0] * (len(weights) - 1)
    exact = [total * w / whole for w in weights]
    parts = [int(e) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: parts[i] - exact[i])[: total - sum(parts)]:
        parts[i] += 1
    return parts


def budget_steps(budget_seconds: float, step_seconds: float) -> int:
    """Steps of a ``budget_seconds`` budget at ``step_seconds`` per step (at least 1)."""
    return max(1, round(budget_seconds / step_seconds))


def resolved_config(method: str, cfg: Mapping[str, Any]) -> Any:
    """The method's resolved config dataclass for ``cfg`` (the profile's values filled in)."""
    from persona.methods import build_method

    return build_method(method, dict(cfg)).config


def equal_budget_cfg(method: str, cfg: Mapping[str, Any], budget_seconds: float | None,
                     calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cfg`` with the step counts of a ``budget_seconds`` budget (see module docstring); the very
    same dict when ``budget_seconds`` is None, so a run's cache key does not change.

    Steps = round(budget_seconds / calibrated seconds per step of the method at the config's
    profile); the fields of :data:`SCHEDULE` that mark a stage (ours' generator-frozen stage and
    audio smoothing, the NeRFs' smoothing warm-up) are scaled by steps / the profile's own steps.
    PTI: the budget is per test frame, its W / W+ / tuning counts split in the profile's proportion."""
    if budget_seconds is None:
        return dict(cfg)
    if method not in SCHEDULE:
        raise PersonaInputError(f"budget_seconds: method {method!r} has no step schedule; expected one of {sorted(SCHEDULE)}")
    config = resolved_config(method, cfg)
    profile = str(cfg.get("profile") or getattr(config, "profile", "default"))  # NHA's config has no profile field
    steps = budget_steps(budget_seconds, seconds_per_step(calibration_key(method, config), profile, calibration))
    return with_steps(method, cfg, config, steps)


def own_steps(method: str, config: Any) -> int:
    """The steps ``config`` trains (PTI: per test frame, W + W+ + tuning)."""
    return sum(int(getattr(config, name)) for name in SCHEDULE[method][0])


def with_steps(method: str, cfg: Mapping[str, Any], config: Any, steps: int) -> dict[str, Any]:
    """``cfg`` set to train ``steps`` steps: :data:`SCHEDULE`'s count fields (split in ``config``'s
    proportion) and its stage fields scaled by steps / ``config``'s own steps."""
    counts, stages = SCHEDULE[method]
    own = [int(getattr(config, name)) for name in counts]
    out = dict(cfg)
    out.update(zip(counts, split_steps(steps, own)))
    scale = steps / max(1, sum(own))
    for name in stages:
        out[name] = min(steps, round(int(getattr(config, name)) * scale))
    return out


def curve_cfg(method: str, cfg: Mapping[str, Any], fraction: float, budget_seconds: float | None,
              calibration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``cfg`` at ``fraction`` of its budget: of ``budget_seconds`` when set (:func:`equal_budget_cfg`),
    else of the method's own steps (``fraction`` 1: ``cfg`` itself, the table's cached run)."""
    if budget_seconds is not None:
        return equal_budget_cfg(method, cfg, budget_seconds * fraction, calibration)
    if fraction == 1:
        return dict(cfg)
    config = resolved_config(method, cfg)
    return with_steps(method, cfg, config, max(1, round(own_steps(method, config) * fraction)))


# ----------------------------------------------------------------------------------------- recorded budgets
@dataclass(frozen=True)
class Budget:
    """What one run trained with. PTI (``per_test_frame``): the mean over its inverted test frames."""

    steps: float
    seconds: float | None
    pixels: float
    per_test_frame: bool = False
    calibrated: float | None = None  # steps x the calibrated seconds per step (None: no calibration for the profile)

    def as_record(self) -> dict[str, Any]:
        """Columns of a timings row: ``steps``, ``cal_s`` (calibrated seconds), ``train_s``, ``mpx``
        (millions of supervised pixels), ``budget_per``."""
        return {"steps": self.steps, "cal_s": self.calibrated, "train_s": self.seconds, "mpx": self.pixels / 1e6,
                "budget_per": "test frame" if self.per_test_frame else "identity"}


def calibrated_seconds(method: str, config: Any, steps: float, profile: str,
                       calibration: Mapping[str, Any] | None = None) -> float | None:
    """``steps`` x the calibrated seconds per step of ``method``'s config at ``profile``
    (:func:`seconds_per_step`): the machine-independent size of a budget, what equal budgets make
    equal. None when the calibration has no entry for them (e.g. the paper profile)."""
    try:
        return float(steps) * seconds_per_step(calibration_key(method, config), profile, calibration)
    except (PersonaInputError, PersonaFileError):
        return None


def pixels_per_step(method: str, config: Any, resolution: int) -> int:
    """Supervised pixels of one training step: rays for the NeRFs, frames x H x W otherwise
    (``resolution``: the training frames' size, where the config leaves it to the data)."""
    if method in RAY_METHODS:
        return int(config.rays_per_step) * int(getattr(config, "frames_per_step", 1))
    side = int(getattr(config, "resolution", None) or resolution)
    if method == "ours" and getattr(config, "loss_resolution", None):
        side = min(side, int(config.loss_resolution))  # the loss is area-pooled to it
    frames = 1 if method == "pti" else int(config.batch_size)
    return frames * side * side


def logged_seconds(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The last ``train_seconds`` (ours, FOMM, NHA) or ``seconds`` (the NeRFs) a trainer logged: its training
    seconds so far, over every session of a resumed run."""
    for key in ("train_seconds", "seconds"):
        values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
        if values:
            return float(values[-1])
    return None


def run_budget(method: str, config: Any, run: Any, resolution: int, done_seconds: float | None = None,
               profile: str | None = None) -> Budget:
    """The recorded budget of a trained run (``run``: its :class:`persona.runs.RunDir`; ``config``
    the method's resolved config; ``done_seconds``: ``done.json``'s seconds, used when the log has none;
    ``profile``: the calibration's profile for :attr:`Budget.calibrated`, None: not computed)."""
    rows = run.metrics()
    if method == "pti":  # one logged row per inverted test frame
        frames = [row for row in rows if "frame" in row and isinstance(row.get("seconds"), (int, float))]
        side = next((int(row["img_resolution"]) for row in rows if "img_resolution" in row), resolution)
        planned = config.w_steps + config.wplus_steps + config.tune_steps
        steps = statistics.fmean(config.w_steps + config.wplus_steps + row.get("tune_steps", config.tune_steps)
                                 for row in frames) if frames else float(planned)
        seconds = statistics.fmean(row["seconds"] for row in frames) if frames else None
        calibrated = calibrated_seconds(method, config, steps, profile) if profile else None
        return Budget(steps, seconds, steps * side * side, per_test_frame=True, calibrated=calibrated)
    steps = own_steps(method, config)
    seconds = logged_seconds(rows)
    calibrated = calibrated_seconds(method, config, steps, profile) if profile else None
    return Budget(steps, seconds if seconds is not None else done_seconds, steps * pixels_per_step(method, config, resolution),
                  calibrated=calibrated)


def dfrf_base_budget(config: Any, resolution: int) -> Budget | None:
    """The budget of DFRF's cached base model (pre-trained once on other identities; not in its
    row), None when the config trains from scratch or the base is not trained yet."""
    if getattr(config, "pretrain_steps", 0) <= 0:
        return None
    from persona.baselines.dfrf_base import base_dir

    done = base_dir(config, resolution) / "done.json"
    if not done.is_file():
        return None
    record = json.loads(done.read_text())
    steps = int(config.pretrain_steps)
    return Budget(steps, record.get("train_seconds"), steps * pixels_per_step("dfrf", config, resolution))


def trained_budget(trained_run: Any, resolution: int, profile: str | None = None) -> Budget:
    """:func:`run_budget` of a :class:`persona.experiments.TrainedRun`."""
    method = trained_run.method
    return run_budget(method.name, method.config, trained_run.run, resolution, trained_run.train_seconds, profile)


def row_record(trained_run: Any, train: Any, profile: str | None = None) -> dict[str, Any]:
    """A table row's budget columns for one identity (:meth:`Budget.as_record`), plus ``base_steps``,
    ``base_train_s``, ``base_mpx`` of DFRF's cached base model when it starts from one."""
    method = trained_run.method
    if getattr(method, "name", None) not in SCHEDULE or not hasattr(trained_run.run, "metrics"):
        return {}  # not a registered method's run (a stand-in): nothing recorded
    resolution = int(getattr(train, "resolution", 0) or 0)
    record = trained_budget(trained_run, resolution, profile).as_record()
    if trained_run.method.name == "dfrf":
        base = dfrf_base_budget(trained_run.method.config, resolution)
        if base is not None:
            record.update({f"base_{k}": v for k, v in base.as_record().items() if k not in ("budget_per", "cal_s")})
    return record


def base_budgets(timings: Any) -> dict[str, Budget]:
    """{row label: its base model's budget} from the timings of :func:`persona.tables.compare` (the
    ``base_*`` columns of :func:`row_record`; one base serves every identity: the first is taken)."""
    if timings is None or "base_steps" not in getattr(timings, "columns", ()):
        return {}
    rows = timings.dropna(subset=["base_steps"]).drop_duplicates("method")
    return {r["method"]: Budget(r["base_steps"], None if pd.isna(r["base_train_s"]) else r["base_train_s"],
                                r["base_mpx"] * 1e6) for _, r in rows.iterrows()}


# ----------------------------------------------------------------------------------------- notes
PIXELS_NOTE = ("steps / calibrated s / train s / Mpx: each method's training steps, those steps at its calibrated "
               "seconds per step (the budget's size, the same on any machine), the training seconds its trainer logged (wall "
               "time of its training loop on the day it trained, mean over identities) and the supervised pixels in millions (steps x full "
               "frames x H x W for ours, NHA and FOMM; steps x rays for the NeRFs). PTI trains nothing: its budget is "
               "per test frame (the inversion and pivotal tuning of one frame). Empty for the reference rows.")


def budget_notes(budget_seconds: float | None, bases: Mapping[str, Budget] | None = None,
                 calibration: Mapping[str, Any] | None = None, profile: str = "default") -> list[str]:
    """Footnotes of a table's budget columns: the rule the steps follow (with the date and command
    of ``profile``'s calibration), and DFRF's base model."""
    if budget_seconds is None:
        rule = ("Budgets: each method trains its profile's own steps (budget_seconds = null), so budgets differ; "
                "the columns record them.")
    else:
        data = calibration if calibration is not None else load_calibration()
        measured = {**data, **data.get("measured", {}).get(profile, {})}
        rule = (f"Equal budgets: every method trains round(budget_seconds / its calibrated seconds per step, one thread) steps, "
                f"budget_seconds = {budget_seconds:g} (calibration {CALIBRATION.relative_to(CALIBRATION.parents[2])}, "
                f"{measured.get('date', '?')}: `{measured.get('command', 'python -m persona bench budget')}`); ours' generator-frozen "
                "stage and the audio smoothing warm-ups scaled in proportion; PTI gets the budget per test frame; "
                "DFRF's cached base pre-training is outside it.")
        scaled = measured.get("scaled")
        if isinstance(scaled, Mapping) and scaled.get("methods"):
            entries = ", ".join(f"{key} x {float(pair[1]):.3g}" for key, pair in sorted(scaled["methods"].items()))
            rule += (f" Scaled entries ({scaled.get('date', '?')}): {entries}, the side-by-side speed-up of a code change "
                     f"since that calibration (the file's measured.{profile}.scaled says how it was measured).")
    notes = [PIXELS_NOTE, rule]
    for label, base in (bases or {}).items():
        seconds = "n/a" if base.seconds is None else f"{base.seconds:.0f} s"
        notes.append(f"{label}'s base model (pre-trained once on other identities' clips, cached, shared by every "
                     f"identity; not in its row): {base.steps:g} steps, {seconds}, {base.pixels / 1e6:.3g} Mpx.")
    return notes


def table_notes(budget_seconds: float | None, timings: Any, profile: str) -> list[str]:
    """:func:`budget_notes` of a table whose timings (:func:`persona.tables.compare`) hold the budget
    columns; none for a table that trains nothing itself (Table 5 reuses other tables' runs)."""
    if timings is None or "steps" not in getattr(timings, "columns", ()):
        return []
    return budget_notes(budget_seconds, base_budgets(timings), profile=profile)


# ----------------------------------------------------------------------------------------- PSNR against seconds
CURVE_FRACTIONS = (0.25, 0.5, 1.0)


def budget_curve(result: Any, fractions: Sequence[float] = CURVE_FRACTIONS) -> list[Path]:
    """Does the budget decide the ordering? Every method row of a table's result
    (:class:`persona.tables.TableResult`) trained on its first video at ``fractions`` of its budget
    (:func:`curve_cfg`; the full budget is the table's own run), scored on the table's frames at the
    video camera; writes ``<table>_budget_curve.csv`` (method, fraction, steps, train_s, psnr) and the
    figure ``<table>_budget_curve`` (test PSNR against the training seconds each run logged; PTI:
    seconds per test frame). The notebooks' ``budget_curve`` parameter turns it on."""
    from persona import experiments as ex
    from persona import tables
    from persona.cross_identity import identity_name
    from persona.data.dataset import FrameDataset
    from persona.evaluate import shared_frame_count

    spec, p = result.spec, result.params
    profile, video = p["profile"], Path(result.videos[0])
    kwargs = spec.compare_kwargs(p)
    identity = identity_name(video)
    train = FrameDataset(video, "train", max_seconds=kwargs.get("train_max_seconds"))
    test = FrameDataset(video, "test")
    rows = spec.rows(p)
    shared = shared_frame_count(kwargs.get("max_test_frames"), *(r.max_test_frames for r in rows))
    points, deferred = [], []
    for row in rows:
        for fraction in fractions:
            cfg = curve_cfg(row.method, {**row.cfg, "profile": profile}, fraction, p.get("budget_seconds"))
            try:
                tr = ex.trained(row.method, cfg, train, profile, label=f"{tables.slug(row.label)}-{identity}-{fraction:g}",
                                force=p["force"])
            except ex.RunDeferred as run_name:
                deferred.append(str(run_name))
                continue
            scores = ex.evaluated(tr, test, None, force=p["force"], max_frames=shared)
            record = row_record(tr, train, profile)
            points.append({"method": row.label, "identity": identity, "fraction": fraction, "steps": record.get("steps"),
                           "train_s": record.get("train_s"), "budget_per": record.get("budget_per"),
                           "psnr": float(scores.loc[scores["view"] == "gt", "psnr"].mean())})
    if deferred:
        raise ex.RunsDeferred(deferred)
    curve = pd.DataFrame(points)
    result.tables_dir.mkdir(parents=True, exist_ok=True)
    curve.to_csv(result.tables_dir / f"{spec.name}_budget_curve.csv", index=False)
    return curve_figure(curve, result.figures_dir / f"{spec.name}_budget_curve",
                        f"{spec.caption.split(':')[0]}: test PSNR against training seconds ({identity})")


def curve_figure(curve: Any, path: Path, title: str) -> list[Path]:
    """One line per method: PSNR (y) against training seconds (x, log scale), points labelled by
    their fraction of the budget; a per-test-frame budget (PTI) is marked in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona.report import save_figure

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for method, points in curve.groupby("method", sort=False):
        points = points.sort_values("fraction")
        per_frame = (points["budget_per"] == "test frame").any()
        ax.plot(points["train_s"], points["psnr"], marker="o", label=method + (" (s per test frame)" if per_frame else ""))
        for _, point in points.iterrows():
            ax.annotate(f"{point['fraction']:g}", (point["train_s"], point["psnr"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    if (curve["train_s"] > 0).all():
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel("training seconds (logged)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------- bench budget
def calibrate(profile: str, names: Sequence[str], data: Path, steps: int, repeats: int) -> dict[str, float]:
    """{calibration key: median CPU ms per training step over ``repeats``} of the named
    :data:`persona.bench.CASES` at ``profile``'s sizes, on the first video of benchmark ``data``."""
    import tempfile

    import torch

    from persona import bench

    out = {}
    for case, name in zip(bench.CASES, bench.case_names()):
        if name not in names:
            continue
        train, test = bench._datasets(data, case.video)
        times = []
        for repeat in range(repeats):
            torch.manual_seed(0)
            with tempfile.TemporaryDirectory(prefix="persona-budget-") as tmp:
                if case.method == "pti":
                    times.append(bench.pti_step_seconds(case, profile, train, test, Path(tmp)))
                else:
                    times.append(bench.timed_train_step(case, profile, train, steps, Path(tmp))[0])
        out[name] = round(1000 * statistics.median(times), 2)
        print(f"  {name}: {out[name]:.1f} ms/step (median of {', '.join(f'{1000 * t:.1f}' for t in times)})", flush=True)
    return out


def calibrate_from_runs(runs: Path | Sequence[Path], threads: int = 1) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """({profile: {calibration key: median ms per training step}}, {profile: {key: runs counted}})
    of the finished runs under ``runs``
    (a run cache, e.g. ``runs/default`` after ``./reproduce.sh``, or several: the median is then over
    every folder's runs, e.g. regenerations on different days, steadier than one day's) trained with ``threads`` torch
    threads: each run's logged training seconds (:func:`run_budget`, what the tables' ``train s``
    column shows) over its steps. Unlike :func:`calibrate` it measures whole runs as the tables
    train them (ours' generator-frozen stage included; two one-thread runs side by side under
    ``--jobs 2``), so equal budgets come out equal in the seconds the tables report."""
    from persona.runs import RunDir

    folders = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    per: dict[str, dict[str, list[float]]] = {}
    for done in sorted(d for folder in folders for d in folder.glob("*/done.json")):
        try:
            record = json.loads(done.read_text())
            key = record["key"]
            method, cfg = key["method"], dict(key["config"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            print(f"  {done.parent.name}: skipped (done.json has no run key)")
            continue
        if method not in SCHEDULE or key.get("torch_threads") != threads:
            continue
        config = resolved_config(method, cfg)
        b = run_budget(method, config, RunDir(done.parent), 0, record.get("train_seconds"))
        if not b.seconds or not b.steps:
            continue
        profile = str(cfg.get("profile") or getattr(config, "profile", "default"))
        per.setdefault(profile, {}).setdefault(calibration_key(method, config), []).append(1000 * b.seconds / b.steps)
    if not per:
        raise PersonaInputError(f"bench budget: --from-runs {', '.join(map(str, folders))}: no finished run trained with {threads} torch "
                                "thread(s); expected a run cache such as runs/default after ./reproduce.sh")
    return {profile: {name: round(statistics.median(ms), 2) for name, ms in sorted(table.items())}
            for profile, table in per.items()}, {profile: {name: len(ms) for name, ms in table.items()}
                                                 for profile, table in per.items()}


def _write_from_runs(runs: Sequence[Path], profile: str, out: Path, argv: Sequence[str]) -> int:
    """``bench budget --from-runs DIR [--from-runs DIR ...]``: merge :func:`calibrate_from_runs`'s
    ``profile`` (medians over every folder's runs) into ``out``."""
    import datetime

    from persona.runs import atomic_write_json

    for folder in runs:
        if not folder.is_dir():
            raise PersonaInputError(f"bench budget: --from-runs {folder}: no such folder; expected a run cache such as runs/default")
    tables_, counts = calibrate_from_runs(runs)
    if profile not in tables_:
        raise PersonaInputError(f"bench budget: --from-runs {', '.join(map(str, runs))}: no finished run of profile {profile!r} "
                                f"(found {sorted(tables_)})")
    measured = tables_[profile]
    for name, ms in measured.items():
        print(f"  {name}: {ms:.1f} ms/step (median of {counts[profile][name]} runs)")
    record = load_calibration(out) if out.is_file() else {"profiles": {}}
    record["profiles"][profile] = {**record["profiles"].get(profile, {}), **measured}
    record.setdefault("measured", {})[profile] = {
        "date": datetime.date.today().isoformat(), "command": "python -m persona bench budget " + " ".join(argv),
        "machine_load": "the runs' own conditions (./reproduce.sh --jobs 2: two one-thread runs side by side)",
        "runs": {name: counts[profile][name] for name in measured}, "folders": len(runs),
        "timing": "one torch thread per run; median over the finished runs of (training seconds the trainer logged / its steps): "
                  "whole runs, ours' generator-frozen stage included, as the tables' train s column reports them"}
    record["date"], record["command"] = record["measured"][profile]["date"], record["measured"][profile]["command"]
    record["units"] = "milliseconds per training step (PTI: per optimisation step of one test frame)"
    atomic_write_json(out, record)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m persona bench budget``: write the calibration (:data:`CALIBRATION`)."""
    import datetime
    import platform
    import time

    import torch

    from persona import bench, cli
    from persona.errors import flag_int
    from persona.profiles import using_threads
    from persona.runs import atomic_write_json

    parser = cli.parser("bench budget", "CPU ms per training step of every method at a profile's sizes, one thread, "
                        "median of repeats: the calibration of equal budgets (budget_seconds)")
    parser.add_argument("--profile", default="default", choices=["smoke", "default"], help="method sizes")
    parser.add_argument("--methods", default="all", help=f"comma-separated subset of {','.join(bench.case_names())}")
    parser.add_argument("--steps", type=flag_int(4, 100000), default=10, help="training iterations per timing; the first 2 cancel")
    parser.add_argument("--repeats", type=flag_int(1, 100), default=3, help="timings per method (median)")
    parser.add_argument("--data", default=None, help="benchmark folder (None: the smoke benchmark, 64 px, built if missing)")
    parser.add_argument("--out", default=str(CALIBRATION), help="the calibration file (other profiles' entries are kept)")
    parser.add_argument("--from-runs", default=None, metavar="DIR", action="append",
                        help="instead of timing steps here, take each method's median logged seconds per step over "
                             "the finished one-thread runs in DIR (e.g. runs/default after ./reproduce.sh); repeat it "
                             "to pool several run caches (regenerations on different days) into one median")
    args = parser.parse_args(argv)
    if args.from_runs is not None:
        return _write_from_runs([Path(d) for d in args.from_runs], args.profile, Path(args.out), argv or [])
    names = bench.case_names() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(bench.case_names()))
    if unknown:
        raise PersonaInputError(f"bench budget: --methods {','.join(unknown)} unknown; expected some of {','.join(bench.case_names())}")
    bench.CLOCK[0] = time.process_time
    if args.data is None:
        from persona.experiments import ensure_benchmark

        data = ensure_benchmark("smoke")
    else:
        data = Path(args.data)
    out = Path(args.out)
    record = load_calibration(out) if out.is_file() else {"profiles": {}}
    print(f"bench budget: profile {args.profile}, one thread, CPU time, median of {args.repeats}; data {data}", flush=True)
    with using_threads(1):  # one torch thread, as the tables' runs (profiles.TORCH_THREADS)
        measured = calibrate(args.profile, names, data, args.steps, args.repeats)
    record["profiles"][args.profile] = {**record["profiles"].get(args.profile, {}), **measured}
    record.setdefault("measured", {})[args.profile] = {
        "date": datetime.date.today().isoformat(), "command": "python -m persona bench budget " + " ".join(argv or []),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", torch {torch.__version__}",
        "machine_load": "2 cores shared with other jobs while measured: one thread, CPU time and medians to resist the load",
        "timing": f"CPU time (time.process_time) of one torch thread, median of {args.repeats} repeats; each repeat "
                  f"(fit of {args.steps} steps - fit of 2 steps) / {args.steps - 2}; PTI: (inversion of 1/4 of the "
                  "profile's W/W+/tuning steps - one of 1+1+1) / the step difference; ours: the generator-training "
                  "stage (stage 2); DFRF: a fine-tune step (from scratch, same cost)"}
    record["date"], record["command"] = record["measured"][args.profile]["date"], record["measured"][args.profile]["command"]
    record["units"] = "milliseconds per training step (PTI: per optimisation step of one test frame)"
    atomic_write_json(out, record)
    print(f"wrote {out}")
    return 0
