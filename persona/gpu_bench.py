"""``python -m persona bench gpu``: ours' training step and the generator at paper size on one
device, in fp32 / tf32 / bf16, with peak memory, beside the official EG3D code on the same device.

Three parts, each row written to ``--out`` (JSON) as soon as it is measured, so a run stopped at
its time limit keeps what it measured:

- ``peaks``: the device's matmul throughput (8192^3 on a GPU, 1024^3 on a CPU) in fp32 (TF32 off),
  tf32 and bf16, TFLOP/s, median of 5.
- ``ours``: ours (3DMM modality, the ``--profile``'s sizes: paper = k 50, encoder 512 x 6, the
  generator from a random-weight official-format pickle) trained by the real trainer
  (:func:`persona.ours.train.fit_prior`) on ``--frames`` synthetic frames written in the NerFACE
  layout, for ``2 x (warm-up + steps + 1)`` iterations, the first half generator-frozen (stage 1), the
  second half fine-tuning it (stage 2). ms/step per stage is the median of the trainer's own step
  clock (it synchronises the GPU) over the steps after the stage's warm-up; peak memory is
  ``torch.cuda.max_memory_allocated`` over the run. Whether a precision's results hold: the loss of
  step 1 (same weights, same batch) and the mean loss of the run's last ``steps // 2`` steps, beside fp32's.
  LPIPS is off (its weights are not shipped), so the step is L2 only; the basis starts ``randn``.
- ``generator``: persona's generator and, with ``--official-dir``, the official ``TriPlaneGenerator``
  with the same random weights (``persona bench official``), camera and ws: forward frames per second
  at batch 1 (eval, no grad; ``noise_mode='const'``) and forward+backward of
  ``mean(image^2) + mean(image_raw^2)`` w.r.t. ws and the weights (training mode) at each batch,
  medians of ``--repeats`` after a warm-up, with peak memory, and the forward image's largest
  difference from persona's fp32 image, both at ours' neural-rendering resolution (128 for ffhq512).
  The official code runs as released: its CUDA plugins when they build within ``--build-timeout``
  seconds of the start (in a separate process, beside the other parts), else its
  reference ops (the row says which); its super-resolution runs its top 4 resolutions in fp16 on a
  GPU (``sr_num_fp16_res=4``), so its "fp32" is mixed there.

Never needed by the tests or the default profile; on a CPU it runs too (the tests use the tiny preset).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from persona.eg3d.bench import _timed
from persona.errors import PersonaInputError, flag_int
from persona.precision import PRECISIONS, autocast, tf32_flags


class Report:
    """The JSON report at ``path`` (None: kept in memory only), rewritten after every row."""

    def __init__(self, path: str | None, header: dict[str, Any]):
        self.path, self.data = (Path(path) if path else None), {**header, "peaks": {}, "ours": [], "generator": []}

    def add(self, part: str, row: dict[str, Any]) -> None:
        if isinstance(self.data[part], dict):
            self.data[part].update(row)
        else:
            self.data[part].append(row)
        if self.path is not None:
            from persona.runs import atomic_write_json

            atomic_write_json(self.path, self.data)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def matmul_tflops(device: torch.device, precision: str, n: int) -> float:
    """[n,n] @ [n,n] throughput in ``precision`` (bf16: bfloat16 operands), TFLOP/s, median of 5."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    with tf32_flags(precision):
        seconds = _timed(lambda: a @ b, device, repeats=5, warmup=2)
    return 2 * n ** 3 / seconds / 1e12


def _stage_step_ms(metrics: Path, frozen: int, warmup: int) -> tuple[float, float, float, float]:
    """(stage-1 ms/step, stage-2 ms/step, loss at step 1, mean loss of the last steps) from a run's
    metrics.jsonl logged every step: medians of the step clock's increments after each stage's warm-up."""
    rows = sorted((json.loads(line) for line in metrics.read_text().splitlines() if line.strip()), key=lambda r: r["step"])
    clock = {int(r["step"]): float(r["train_seconds"]) for r in rows}
    last = max(clock)
    one = [1000 * (clock[s] - clock[s - 1]) for s in range(warmup + 2, frozen + 1)]
    two = [1000 * (clock[s] - clock[s - 1]) for s in range(frozen + warmup + 2, last + 1)]
    tail = [float(r["loss"]) for r in rows if int(r["step"]) > last - max(1, (last - frozen - warmup) // 2)]
    return (statistics.median(one) if one else float("nan"), statistics.median(two) if two else float("nan"),
            float(rows[0]["loss"]), statistics.fmean(tail))


def _generator_file(preset: str, work: Path) -> Path:
    """A random-weight generator of ``preset``: the official pickle format for ffhq512 (the path a
    user's download takes), our safetensors otherwise."""
    from persona.eg3d import build_generator, save_generator
    from persona.eg3d.release_format import write_release_pickle

    torch.manual_seed(0)
    G = build_generator(preset)
    if preset == "ffhq512":
        return write_release_pickle(G, work / "ffhq512-random.pkl")
    return save_generator(G, work / f"{preset}-random.safetensors")


def bench_ours(report: Report, device: torch.device, preset: str, profile: str, batches: list[int], precisions: list[str],
               warmup: int, steps: int, frames: int, work: Path, deadline: float) -> None:
    from persona.data.dataset import FrameDataset
    from persona.data.real_layouts import write_real_layouts
    from persona.methods import build_method
    from persona.runs import RunDir

    from persona.eg3d.presets import get_config

    resolution = int(get_config(preset).img_resolution)
    nerface, _ = write_real_layouts(work / "data", 1, train_frames=max(frames, *batches), test_frames=1,
                                    nerface_resolution=resolution, adnerf_resolution=32)
    train = FrameDataset(nerface[0], "train")
    generator = _generator_file(preset, work)
    frozen = warmup + steps + 1
    for batch in batches:
        for precision in precisions:
            row: dict[str, Any] = {"batch": batch, "precision": precision}
            if time.perf_counter() > deadline:
                report.add("ours", {**row, "skipped": "time budget"})
                continue
            run = work / "runs" / f"ours-b{batch}-{precision}"
            overrides = {"profile": profile, "modality": "3dmm", "generator": str(generator), "device": str(device),
                         "batch_size": batch, "precision": precision, "iterations": 2 * frozen, "frozen_iterations": frozen,
                         "lambda_lpips": 0.0, "basis_init": "randn", "log_every": 1, "checkpoint_every": 10 ** 6,
                         "sample_every": 10 ** 6, "num_workers": 0, "seed": 0}
            try:
                _reset_peak(device)
                start = time.perf_counter()
                build_method("ours", overrides).fit(train, RunDir(run))
                s1, s2, first, tail = _stage_step_ms(run / "metrics.jsonl", frozen, warmup)
                row.update(stage1_ms=s1, stage2_ms=s2, peak_gib=_peak_gib(device), loss_step1=first, loss_last=tail,
                           run_seconds=time.perf_counter() - start)
            except Exception as error:  # one failing cell must not lose the others
                row.update(error=f"{type(error).__name__}: {error}", trace=traceback.format_exc(limit=-4))
            report.add("ours", row)
            print("ours", json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)


def register_built_extensions() -> None:
    """Make ``torch.utils.cpp_extension.load`` also put the module it builds into ``sys.modules``.
    The official ``custom_ops.get_plugin`` imports the plugin by name after ``load``; PyTorch 2.x's
    ``load`` no longer registers it (an H200 run: the build succeeded, then "No module named
    'bias_act_plugin'"). The official code itself is left as it is."""
    import torch.utils.cpp_extension as extension

    if getattr(extension.load, "_registers", False):
        return
    original = extension.load

    def load(name, *args, **kwargs):
        module = original(name, *args, **kwargs)
        sys.modules.setdefault(name, module)
        return module

    load._registers = True
    extension.load = load


def start_official_build(official_dir: Path, device: torch.device) -> subprocess.Popen | None:
    """Start building the official code's CUDA plugins (bias_act, upfirdn2d) in a separate process
    (into ``TORCH_EXTENSIONS_DIR``, from where this process loads them later); None off a GPU."""
    if device.type != "cuda":
        return None
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from persona.gpu_bench import register_built_extensions; "
            "register_built_extensions(); from torch_utils.ops import bias_act, upfirdn2d; "
            "bias_act._init(); upfirdn2d._init(); print('built')")
    return subprocess.Popen([sys.executable, "-c", code, str(official_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_official_build(build: subprocess.Popen | None, official_dir: Path, timeout: float) -> str:
    """'plugins' when the build started by :func:`start_official_build` succeeds within ``timeout``
    more seconds; else 'reference ops (why)', after making the official code use its reference ops."""
    why = "not a GPU"
    if build is not None:
        try:
            out, err = build.communicate(timeout=max(timeout, 1.0))
            if build.returncode == 0 and "built" in out:
                register_built_extensions()  # this process loads them from the build's cache
                return "plugins"
            why = "build failed: " + (err.strip().splitlines() or ["no message"])[-1][:300]
        except subprocess.TimeoutExpired:
            build.kill()
            why = "build not done in time"
    sys.path.insert(0, str(official_dir))
    from torch_utils.ops import bias_act, upfirdn2d  # noqa: the user's official checkout

    bias_act._init = upfirdn2d._init = lambda: False
    return f"reference ops ({why})"


def bench_generators(report: Report, device: torch.device, preset: str, batches: list[int], precisions: list[str],
                     repeats: int, official_dir: Path | None, build: subprocess.Popen | None, build_timeout: float,
                     deadline: float) -> None:
    from persona.eg3d import build_generator
    from persona.eg3d.bench import _frontal_cameras

    torch.manual_seed(0)
    generators: dict[str, torch.nn.Module] = {"persona": build_generator(preset).to(device)}
    if official_dir is not None:
        if preset != "ffhq512":
            raise PersonaInputError(f"bench gpu: --official-dir needs --preset ffhq512 (the official code's configuration); got {preset}")
        ops = finish_official_build(build, official_dir, build_timeout)
        try:
            from persona.eg3d.bench_official import _official_generator

            official = _official_generator(official_dir, 48, 48)
            official.load_state_dict(generators["persona"].state_dict(), strict=True)
            generators[f"official, {ops}"] = official.to(device)
        except Exception as error:  # persona's rows still come
            report.add("generator", {"code": f"official, {ops}", "error": f"{type(error).__name__}: {error}",
                                     "trace": traceback.format_exc(limit=-4)})
    camera1 = _frontal_cameras(1, device)
    nrr = int(generators["persona"].neural_rendering_resolution)  # both codes at ours' (the official's own default is 64)
    with torch.no_grad():
        ws1 = generators["persona"].mapping(torch.randn(1, generators["persona"].z_dim, device=device), camera1)
    reference = None
    for name, G in generators.items():
        for precision in precisions:
            for mode, batch in [("forward", 1)] + [("forward+backward", b) for b in batches]:
                row: dict[str, Any] = {"code": name, "precision": precision, "mode": mode, "batch": batch}
                if time.perf_counter() > deadline:
                    report.add("generator", {**row, "skipped": "time budget"})
                    continue
                camera, ws = camera1.expand(batch, -1).contiguous(), ws1.expand(batch, -1, -1).contiguous()

                def forward():
                    G.eval()
                    with torch.no_grad(), tf32_flags(precision), autocast(precision, device):
                        torch.manual_seed(1)
                        return G.synthesis(ws, camera, neural_rendering_resolution=nrr, noise_mode="const")["image"].float()

                def forward_backward():
                    G.train()
                    w = ws.clone().requires_grad_(True)
                    with tf32_flags(precision):
                        with autocast(precision, device):
                            out = G.synthesis(w, camera, neural_rendering_resolution=nrr, noise_mode="const")
                            loss = out["image"].float().square().mean() + out["image_raw"].float().square().mean()
                        loss.backward()
                    G.zero_grad(set_to_none=True)

                try:
                    _reset_peak(device)
                    seconds = _timed(forward if mode == "forward" else forward_backward, device, repeats)
                    row.update(ms=1000 * seconds, per_second=batch / seconds, peak_gib=_peak_gib(device))
                    if mode == "forward":
                        image = forward()
                        if reference is None and name == "persona" and precision == "fp32":
                            reference = image
                        if reference is not None:
                            row["max_abs_diff_vs_persona_fp32"] = float((image - reference).abs().max())
                except Exception as error:
                    row.update(error=f"{type(error).__name__}: {error}", trace=traceback.format_exc(limit=-4))
                report.add("generator", row)
                print("generator", json.dumps({k: v for k, v in row.items() if k != "trace"}), flush=True)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise PersonaInputError(f"bench gpu: {text!r}; expected comma-separated positive integers, e.g. 2,8")
    return values


def main(argv: list[str] | None = None) -> int:
    from persona import cli

    parser = cli.parser("bench gpu", __doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--preset", default="ffhq512", choices=["ffhq512", "tiny"], help="generator preset")
    parser.add_argument("--profile", default="paper", help="ours' TrainConfig profile (sizes of the encoder and the basis)")
    parser.add_argument("--batches", default="2,8", help="comma-separated batch sizes")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma-separated subset of {','.join(PRECISIONS)}")
    parser.add_argument("--parts", default="peaks,ours,generator", help="comma-separated subset of peaks,ours,generator")
    parser.add_argument("--warmup", type=flag_int(0, 100), default=3, help="untimed steps at the start of each stage")
    parser.add_argument("--steps", type=flag_int(1, 1000), default=8, help="timed steps per stage")
    parser.add_argument("--frames", type=flag_int(1, 1000), default=8, help="training frames (at least the largest batch)")
    parser.add_argument("--repeats", type=flag_int(1, 1000), default=5, help="timed calls per generator cell (median)")
    parser.add_argument("--official-dir", default=None, help="the eg3d folder of your NVlabs/eg3d checkout (holds training/)")
    parser.add_argument("--build-timeout", type=flag_int(0, 3600), default=180, help="seconds from the start for the official plugins' build (it runs beside the other parts)")
    parser.add_argument("--budget-s", type=flag_int(1, 10 ** 6), default=10 ** 6, help="start no new cell after this many seconds")
    parser.add_argument("--out", default=None, help="write the results as JSON here (rewritten after every row)")
    parser.add_argument("--workdir", default=None, help="data, generator file and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget_s
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PersonaInputError("bench gpu: --device cuda, but torch sees no CUDA device")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in precisions if p not in PRECISIONS] + [p for p in parts if p not in ("peaks", "ours", "generator")]
    if bad:
        raise PersonaInputError(f"bench gpu: {', '.join(bad)} unknown; --precisions takes {','.join(PRECISIONS)}, "
                                "--parts peaks,ours,generator")
    batches = _ints(args.batches)
    official_dir = Path(args.official_dir) if args.official_dir else None
    if official_dir is not None and not (official_dir / "training" / "triplane.py").is_file():
        raise PersonaInputError(f"--official-dir {official_dir}: no training/triplane.py; expected the eg3d folder of a "
                                "checkout of https://github.com/NVlabs/eg3d")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    report = Report(args.out, {"device": name, "torch": torch.__version__, "preset": args.preset, "profile": args.profile,
                               "batches": batches, "precisions": precisions, "warmup": args.warmup, "steps": args.steps})
    print(f"bench gpu: {name}, torch {torch.__version__}", flush=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="persona-bench-gpu-"))
    build = start_official_build(official_dir, device) if official_dir is not None and "generator" in parts else None
    if "peaks" in parts:
        n = 8192 if device.type == "cuda" else 1024
        for precision in precisions:
            report.add("peaks", {f"{precision}_tflops": matmul_tflops(device, precision, n)})
        print("peaks", json.dumps(report.data["peaks"]), flush=True)
    if "ours" in parts:
        bench_ours(report, device, args.preset, args.profile, batches, precisions, args.warmup, args.steps, args.frames, work, deadline)
    if "generator" in parts:
        bench_generators(report, device, args.preset, batches, precisions, args.repeats, official_dir, build,
                         args.build_timeout - (time.perf_counter() - start), deadline)
    report.data["wall_seconds"] = time.perf_counter() - start
    report.add("peaks", {})
    return 0
