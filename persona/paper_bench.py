"""``python -m persona bench paper``: a dry run of the paper profile's training at paper size,
timed per method, and the projected compute of the whole paper profile on this machine.

What it does, on data the synthetic world writes in the REAL layouts (a NerFACE folder at 512 px,
an AD-NeRF folder at 450 px with aud.npy, see :mod:`persona.data.real_layouts`) and a
random-weight ffhq512 generator in the official pickle format (:mod:`persona.eg3d.release_format`):
every method is built with the paper profile's config (sizes, batch, rendering samples) and
trained for 1 and for 1 + ``--steps`` iterations in fresh run directories; its seconds per step
are the trainer's own clock over the steps after the first where the trainer logs one (ours),
else the difference of the two wall times over ``--steps`` (setup, data loading and checkpoint
writing cancel out). Nothing here changes a size of the paper profile except, when asked, the
generator's neural-rendering resolution and depth samples (``--nr``, ``--depth``; stored in the
pickle's rendering options, as a user's pickle would), so that a CPU can afford a step.

The projection multiplies each method's s/step by its paper-profile step count and the number of
runs the notebooks train (:data:`PAPER_RUNS`), plus the runs trained once for all identities
(:data:`SHARED_RUNS`: DFRF's base model, its pretrain_steps at DFRF's step cost; the dry run
pre-trains it for one step on one identity), and spreads the runs over N devices (longest job
first). It is a projection from measured steps, not a measurement of the paper profile. A method
that fails is reported and left out of the projection; the others still run (exit status 1).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

# (label, registered method, config overrides, data kind); one row per trained configuration
PAPER_METHODS: list[tuple[str, str, dict[str, Any], str]] = [
    ("ours rgb", "ours", {"modality": "rgb"}, "nerface"),
    ("ours 3dmm", "ours", {"modality": "3dmm"}, "nerface"),
    ("ours audio", "ours", {"modality": "audio"}, "adnerf"),
    ("NerFACE", "nerface", {}, "nerface"),
    ("AD-NeRF", "adnerf", {}, "adnerf"),
    ("DFRF", "dfrf", {}, "adnerf"),
    ("FOMM", "fomm", {}, "nerface"),
    ("NHA", "nha", {}, "nerface"),
]
# runs per identity the paper-profile notebooks train, by label (Tables 1-4; notebook 05 reuses them):
# ours rgb: Table 1 (k 50) + Table 4 (k 5, 10, 20, w/o ortho, ortho loss; k 50 is Table 1's run)
PAPER_RUNS = {"ours rgb": 6, "ours 3dmm": 1, "ours audio": 1, "NerFACE": 1, "AD-NeRF": 1, "DFRF": 1, "FOMM": 1, "NHA": 1}
# runs trained once for all identities: DFRF's base model, pre-trained on other identities' clips
# (persona.baselines.dfrf_base) at DFRF's step cost, for its config's pretrain_steps
SHARED_RUNS = {"DFRF base": "DFRF"}
PAPER_IDENTITIES = 3


def paper_steps(method: str, cfg: dict[str, Any]) -> int:
    """The paper profile's iteration count of a method config."""
    from persona.methods import build_method

    config = build_method(method, {**cfg, "profile": "paper", "device": "cpu"}).config  # only the config is read (FOMM builds its model at once)
    return int(getattr(config, "iterations", getattr(config, "steps", 0)))


def _fit_seconds(method: str, cfg: dict[str, Any], train: Any, run_dir: Path, iterations: int) -> float:
    from persona.methods import build_method
    from persona.runs import RunDir

    overrides = {**cfg, "profile": "paper", "iterations": iterations}
    m = build_method(method, overrides)
    start = time.perf_counter()
    m.fit(train, RunDir(run_dir))
    return time.perf_counter() - start


def _logged_seconds_per_step(run_dir: Path) -> float | None:
    """Seconds per step after the first from the trainer's own clock (ours logs ``train_seconds``
    every step): steadier than wall-time differences on a busy machine; None when not logged."""
    import json as _json

    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [_json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for key in ("train_seconds", "seconds"):  # ours logs train_seconds every step; the baselines, seconds
        clock = {int(r["step"]): float(r[key]) for r in rows if key in r}
        if 1 in clock and len(clock) >= 2:
            last = max(clock)
            return (clock[last] - clock[1]) / (last - 1)
    return None


def method_overrides(method: str, device: str, pkl: Path, work: Path) -> dict[str, Any]:
    """Per-method fields the dry run sets: the device, a log row every step (the per-step clock),
    the generator pickle (ours), no LPIPS weights needed; DFRF's base model pre-trained for one step
    on one identity's first frames, cached under ``work`` (the paper's corpus, 8 identities x 1500
    frames at 450 px, takes hours to render on a CPU; its steps are projected at DFRF's step cost)."""
    out: dict[str, Any] = {"device": device, "log_every": 1}
    if method == "ours":
        out.update(generator=str(pkl), frozen_iterations=1, lambda_lpips=0.0)
    if method == "dfrf":
        from persona.baselines.dfrf import PROFILES

        out.update(pretrain_steps=1, pretrain_identities=1, pretrain_frames=PROFILES["paper"].num_references,
                   base_dir=str(work / "dfrf-base"))
    return out


def project(seconds_per_step: dict[str, float], steps: dict[str, int], devices: int, identities: int = PAPER_IDENTITIES) -> dict[str, float]:
    """{label: hours of all its runs}, plus 'total' (one device) and 'wall' (``devices`` devices,
    longest job first onto the least loaded device)."""
    jobs = []
    hours = {}
    for label, sps in seconds_per_step.items():
        one = sps * steps[label] / 3600
        count = 1 if label in SHARED_RUNS else PAPER_RUNS.get(label, 1) * identities
        hours[label] = one * count
        jobs += [one] * count
    loads = [0.0] * max(1, devices)
    for job in sorted(jobs, reverse=True):
        loads[loads.index(min(loads))] += job
    hours["total"] = sum(jobs)
    hours["wall"] = max(loads)
    return hours


def main(argv: list[str] | None = None) -> int:
    import torch

    from persona.data.dataset import FrameDataset
    from persona.data.real_layouts import write_real_layouts
    from persona.eg3d import build_generator
    from persona.eg3d.release_format import write_release_pickle

    from persona import cli

    p = cli.parser("bench paper", "paper-size dry run: seconds per training step of every method at the paper profile's "
                   "sizes on this machine, and the projected hours of the whole paper profile")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device of every method")
    p.add_argument("--methods", nargs="*", help="labels to time (default: all): " + ", ".join(m[0] for m in PAPER_METHODS))
    p.add_argument("--steps", type=int, default=1, help="timed steps per method (after one untimed)")
    p.add_argument("--frames", type=int, default=4, help="training frames per video")
    p.add_argument("--nr", type=int, help="neural-rendering resolution stored in the pickle (default: the release's 128)")
    p.add_argument("--depth", type=int, help="coarse and fine depth samples stored in the pickle (default: 48 + 48)")
    p.add_argument("--gpus", type=int, nargs="*", default=[1, 4, 8], help="device counts to project the paper profile onto")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--workdir", help="keep data, pickle and runs here (default: a temporary folder, removed at the end)")
    args = p.parse_args(argv)

    chosen = [m for m in PAPER_METHODS if not args.methods or m[0] in args.methods]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="persona-paper-dry-"))
    try:
        t0 = time.perf_counter()
        nerface, adnerf = write_real_layouts(work / "data", 1, train_frames=args.frames, test_frames=2)
        data = {"nerface": FrameDataset(nerface[0], "train"), "adnerf": FrameDataset(adnerf[0], "train")}
        torch.manual_seed(0)
        rendering = {}
        if args.depth:
            rendering.update(depth_resolution=args.depth, depth_resolution_importance=args.depth)
        pkl = write_release_pickle(build_generator("ffhq512"), work / "ffhq512-random.pkl", neural_rendering_resolution=args.nr, **rendering)
        print(f"data + pickle: {time.perf_counter() - t0:.0f} s ({work})", flush=True)

        results: dict[str, Any] = {"device": args.device, "nr": args.nr or 128, "depth": args.depth or 48, "frames": args.frames,
                                   "threads": torch.get_num_threads(), "methods": {}, "failed": {}}
        failed: dict[str, str] = results["failed"]
        for label, method, cfg, kind in chosen:
            full = {**cfg, **method_overrides(method, args.device, pkl, work)}
            try:
                base = _fit_seconds(method, full, data[kind], work / "runs" / f"{label}-1", 1)
                more = _fit_seconds(method, full, data[kind], work / "runs" / f"{label}-{1 + args.steps}", 1 + args.steps)
            except Exception as error:  # the other methods still run; the projection leaves this one out and says so
                failed[label] = f"{type(error).__name__}: {error}"
                print(f"{label:<11} FAILED: {failed[label]}", flush=True)
                traceback.print_exc()
                _write(args.out, results)
                continue
            sps = _logged_seconds_per_step(work / "runs" / f"{label}-{1 + args.steps}")
            sps = sps if sps is not None else max(more - base, 0.0) / args.steps
            steps = paper_steps(method, cfg)
            # the 1-step run: setup + one step (for ours a generator-frozen step, cheaper than the timed ones)
            results["methods"][label] = {"seconds_per_step": sps, "one_step_run_seconds": base, "paper_steps": steps}
            _write(args.out, results)
            print(f"{label:<11} {1000 * sps:10.0f} ms/step  (a 1-step run with setup: {base:.0f} s; paper profile: {steps} steps = "
                  f"{sps * steps / 3600:.1f} h per run on this device)", flush=True)
        for shared, of in SHARED_RUNS.items():
            if of in results["methods"]:
                from persona.baselines.dfrf import PROFILES

                results["methods"][shared] = {"seconds_per_step": results["methods"][of]["seconds_per_step"], "one_step_run_seconds": None,
                                              "paper_steps": PROFILES["paper"].pretrain_steps, "projected_from": of}
        sps = {k: v["seconds_per_step"] for k, v in results["methods"].items()}
        steps = {k: v["paper_steps"] for k, v in results["methods"].items()}
        results["projection_hours"] = {str(n): project(sps, steps, n) for n in args.gpus}
        if failed:
            print(f"not in the projection (failed): {', '.join(failed)}", flush=True)
        for n, hours in results["projection_hours"].items():
            print(f"PROJECTION, {n} device(s) like this one: {hours['wall']:.0f} h wall ({hours['total']:.0f} device-hours; "
                  f"{PAPER_IDENTITIES} identities, runs per identity {PAPER_RUNS}, once: {', '.join(SHARED_RUNS)}; "
                  "PTI's per-frame optimisation not included)")
        results["wall_seconds"] = time.perf_counter() - t0
        _write(args.out, results)
        return 1 if failed else 0
    finally:  # a temporary folder of our own (data, a 120-MB pickle, runs) does not outlive the command
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def _write(path: str | None, results: dict[str, Any]) -> None:
    """The results so far as JSON at ``path`` (atomic), after every method: a run stopped at a time
    limit keeps what it measured."""
    if path:
        from persona.runs import atomic_write_json

        atomic_write_json(path, results)
