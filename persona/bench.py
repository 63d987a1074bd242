"""``python -m persona bench methods``: training and rendering speed of every method.

For each method at a profile's sizes (default: the ``default`` profile): milliseconds per
training step, milliseconds per rendered test frame (64 px, batch 1), the FLOPs of each
(``torch.utils.flop_counter``: matmuls and convolutions; element-wise work, grid_sample and
searchsorted are not counted) and the share of the machine's plain fp32 matmul throughput
measured in the same run (:func:`persona.eg3d.bench.matmul_gflops`) that they reach.

Times are CPU time of this process (``time.process_time``): on a shared machine wall time
swings with the other processes' load, while the CPU time of a one-thread run is the time it
held a core (with more threads it is the sum over them; ``--wall`` reports wall time instead).

- training step: the method's own ``fit`` on the first video: (time of a ``--steps``-iteration
  fit - time of a 2-iteration fit) / (steps - 2), so setup and the first two (warm-up) steps
  cancel. Only the iteration count, logging and checkpoint spacing change; ours also starts its
  second stage (the generator trains) after one step, the stage most of a run spends in. With
  ``--train-repeats N``, the median of N such measurements. NHA's timed fits are at least 60 steps
  long (:attr:`Case.min_steps`): every fit tracks its mesh anew, and that setup's noise exceeds ten steps.
  FLOPs per step: a 2-step fit minus a 1-step fit under the flop counter.
- rendered frame: ``render`` of one test frame, median of ``--repeats``. PTI trains nothing
  and inverts each test frame: its frame time includes that inversion, and its "step" is one
  optimisation step of the inversion (frame time / steps; FLOPs: an inversion of 2+2+2 steps
  minus one of 1+1+1).
- matmul time %: the share of a training step's operator time (``torch.profiler``, self CPU time,
  a ``--steps`` fit minus a 2-step fit, as above) spent in matmul and convolution kernels
  (:data:`MATMUL_OPS`); everything else is element-wise, sampling, sorting and copying work, which
  no matmul peak measures. "train % peak if only matmuls" = train % peak / that share: the share of
  the peak the step would reach if every other operator took no time at all, an upper bound that
  tells whether a target share is within reach of faster matmuls alone (not PTI).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from persona.errors import PersonaInputError

# the column order of the Markdown table
COLUMNS = ("method", "train ms/step", "train GFLOP/step", "train % peak", "matmul time %", "train % peak if only matmuls",
           "render ms/frame", "render GFLOP/frame", "render % peak")
# the operators whose self time counts as matmul / convolution work (the kernels the flop counter counts)
MATMUL_OPS = frozenset({
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::mkldnn_convolution",
    "aten::convolution_backward", "aten::mkldnn_linear", "aten::_mkldnn_convolution", "aten::slow_conv2d_forward",
    "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward", "aten::slow_conv_transpose2d", "aten::_nnpack_spatial_convolution",
})


@dataclass(frozen=True)
class Case:
    """One row: a registered method, its config overrides, and which video it trains on."""

    label: str
    method: str
    cfg: dict[str, Any] = field(default_factory=dict)
    video: str = "mono"  # 'mono' or 'audio'
    min_steps: int = 0  # timed fits at least this long: a fit whose setup varies more than ``--steps`` steps take

    def timed_steps(self, steps: int) -> int:
        return max(steps, self.min_steps)


CASES: tuple[Case, ...] = (
    Case("ours (rgb)", "ours", {"modality": "rgb"}),
    Case("ours (3dmm)", "ours", {"modality": "3dmm"}),
    Case("ours (audio)", "ours", {"modality": "audio"}, video="audio"),
    Case("PTI", "pti"),
    Case("NerFACE", "nerface"),
    Case("AD-NeRF", "adnerf", video="audio"),
    Case("DFRF", "dfrf", {"pretrain_steps": 0}, video="audio"),  # a fine-tune step costs a step from scratch
    Case("FOMM", "fomm"),
    # its mesh is tracked anew by every fit: the setup's noise exceeds ten of its ~45-ms steps (10 timed steps read 0 ms)
    Case("NHA", "nha", min_steps=60),
)
NO_STEP_LOG = 10 ** 9  # checkpoint/sample spacing that no benchmark run reaches
CLOCK: list[Callable[[], float]] = [time.process_time]  # what the benchmark times with (--wall: perf_counter)


def case_names() -> list[str]:
    return [c.method if c.method != "ours" else f"ours-{c.cfg['modality']}" for c in CASES]


def _fit_cfg(case: Case, profile: str, steps: int) -> dict[str, Any]:
    """The case's config for a ``steps``-iteration fit logging every step (only counts change)."""
    cfg = {**case.cfg, "profile": profile, "iterations": steps, "log_every": NO_STEP_LOG, "checkpoint_every": NO_STEP_LOG}
    if case.method == "ours":
        cfg.update(frozen_iterations=min(1, steps), sample_every=NO_STEP_LOG)
    return cfg


def _build(case: Case, cfg: dict[str, Any]):
    from persona.methods import build_method

    return build_method(case.method, dict(cfg))


def _fit(case: Case, cfg: dict[str, Any], train: Any, root: Path):
    from persona.runs import RunDir

    method = _build(case, cfg)
    run = RunDir(root)
    method.fit(train, run)
    return method, run


def _flops(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _operator_seconds(fn: Callable[[], Any]) -> tuple[float, float]:
    """(self CPU seconds of every operator ``fn`` ran, of those in :data:`MATMUL_OPS`), by ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    total = matmul = 0.0
    for event in prof.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        total += seconds
        if event.key in MATMUL_OPS:
            matmul += seconds
    return total, matmul


def matmul_time_share(case: Case, profile: str, train: Any, steps: int, work: Path, attempts: int = 3) -> float:
    """The share of one training step's operator time spent in matmul / convolution kernels: a
    ``steps``-iteration fit minus a 2-iteration fit under the profiler (setup and warm-up cancel).

    An unprofiled 2-iteration fit runs first, so one-off first-call costs fall in neither; a pair
    whose difference is not positive in both parts (a fit preempted on a shared machine) is measured
    again, up to ``attempts`` times, and gives nan if none is."""
    short_cfg, full_cfg = _fit_cfg(case, profile, 2), _fit_cfg(case, profile, case.timed_steps(steps))
    _fit(case, short_cfg, train, work / "profile-warm")
    for attempt in range(max(1, attempts)):  # a fresh run folder each time: a fit resumes from its checkpoint
        short = _operator_seconds(lambda: _fit(case, short_cfg, train, work / f"profile-short-{attempt}"))
        full = _operator_seconds(lambda: _fit(case, full_cfg, train, work / f"profile-full-{attempt}"))
        total, matmul = full[0] - short[0], full[1] - short[1]
        if matmul > 0 and total - matmul > 0:
            return matmul / total
    return float("nan")


def _timed(fn: Callable[[], Any]) -> float:
    start = CLOCK[0]()
    fn()
    return CLOCK[0]() - start


def _one_frame(test: Any) -> dict[str, Any]:
    from torch.utils.data import default_collate

    return default_collate([test[len(test) // 2]])


def _render_once(method: Any, batch: dict[str, Any]) -> torch.Tensor:
    from persona.evaluate import render_batch

    if hasattr(method, "cache"):  # PTI: every render is a fresh inversion
        method.cache.clear()
    return render_batch(method, batch)


def _timed_renders(method: Any, batch: dict[str, Any], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        times.append(_timed(lambda: _render_once(method, batch)))
    return statistics.median(times)


def _prepare_render(method: Any, test: Any) -> None:
    method.attach_audio(test)
    method.set_test_frames(test)


def bench_pti(case: Case, profile: str, train: Any, test: Any, repeats: int, work: Path) -> dict[str, float]:
    """PTI: the inversion is its training; one render = one inversion + one synthesis."""
    cfg = {**case.cfg, "profile": profile, "disk_cache": False}
    batch = _one_frame(test)
    method, _ = _fit(case, cfg, train, work / "pti")
    _prepare_render(method, test)
    _render_once(method, batch)  # warm-up
    frame_s = _timed_renders(method, batch, min(repeats, 2))
    c = method.config
    step_s = frame_s / max(1, c.w_steps + c.wplus_steps + c.tune_steps)  # the synthesis is one forward more

    def inversion_flops(n: int) -> float:
        small, _ = _fit(case, {**cfg, "w_steps": n, "wplus_steps": n, "tune_steps": n}, train, work / f"pti-{n}")
        _prepare_render(small, test)
        return _flops(lambda: _render_once(small, batch))

    one, two = inversion_flops(1), inversion_flops(2)
    render_flops = one + (two - one) / 3 * (c.w_steps + c.wplus_steps + c.tune_steps - 3)
    return {"train_s": step_s, "train_flops": (two - one) / 3, "render_s": frame_s, "render_flops": render_flops}


def timed_train_step(case: Case, profile: str, train: Any, steps: int, work: Path) -> tuple[float, Any]:
    """(seconds of one training step of ``case``, the method fitted for ``steps`` steps): the time
    of a ``steps``-iteration fit minus that of a 2-iteration fit, over ``steps - 2`` (after a
    warm-up fit), so setup and the first two steps cancel. Not PTI (see :func:`pti_step_seconds`)."""
    steps = case.timed_steps(steps)
    _fit(case, _fit_cfg(case, profile, 2), train, work / "warm")  # imports, caches
    short = _timed(lambda: _fit(case, _fit_cfg(case, profile, 2), train, work / "short"))
    trained: list[Any] = []
    full = _timed(lambda: trained.append(_fit(case, _fit_cfg(case, profile, steps), train, work / "timed")))
    return max(0.0, full - short) / (steps - 2), trained[0][0]


def pti_step_seconds(case: Case, profile: str, train: Any, test: Any, work: Path, fraction: float = 0.25) -> float:
    """Seconds of one PTI optimisation step at ``profile``: the inversion of one test frame with
    ``fraction`` of the profile's three step counts (W, W+, tuning; their mix kept) minus one with
    1 step each, over the difference in steps (after a warm-up inversion), so the per-frame setup
    (w_avg sampling, copies of the generator) cancels."""
    from persona.baselines.pti import make_config

    cfg = {**case.cfg, "profile": profile, "disk_cache": False}
    own = make_config(cfg)
    counts = [max(1, round(fraction * n)) for n in (own.w_steps, own.wplus_steps, own.tune_steps)]
    batch = _one_frame(test)

    def inversion(n: list[int], tag: str) -> float:
        method, _ = _fit(case, {**cfg, "w_steps": n[0], "wplus_steps": n[1], "tune_steps": n[2]}, train, work / tag)
        _prepare_render(method, test)
        return _timed(lambda: _render_once(method, batch))

    inversion([1, 1, 1], "pti-warm")
    small, large = inversion([1, 1, 1], "pti-small"), inversion(counts, "pti-large")
    return max(0.0, large - small) / max(1, sum(counts) - 3)


def time_case(case: Case, profile: str, train: Any, test: Any, steps: int = 8, repeats: int = 3,
              work: Path | None = None, train_repeats: int = 1) -> dict[str, float]:
    """Seconds of one training step and of one rendered test frame of ``case``: {train_s, render_s}
    (PTI: also its FLOPs, :func:`bench_pti`). ``train_repeats``: train_s is the median of that many
    timed fits (the machine's noise is ~5 % a fit). Run every case's timing before any profiling
    (:func:`count_case`): ``torch.profiler`` leaves threads behind whose CPU time the process clock
    counts, which made every case after the first ~5-10 % slower in CPU time (not in wall time)."""
    if steps < 4:
        raise PersonaInputError(f"bench methods: --steps {steps}; expected at least 4 (two warm-up steps, two timed)")
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        work = Path(work or tmp)
        if case.method == "pti":
            return {**bench_pti(case, profile, train, test, repeats, work), "matmul_share": float("nan")}
        timed = [timed_train_step(case, profile, train, steps, work / f"train-{r}") for r in range(max(1, train_repeats))]
        method = timed[-1][1]
        batch = _one_frame(test)
        _prepare_render(method, test)
        _render_once(method, batch)  # warm-up
        return {"train_s": statistics.median(t for t, _ in timed), "render_s": _timed_renders(method, batch, repeats)}


def count_case(case: Case, profile: str, train: Any, test: Any, steps: int = 8, work: Path | None = None) -> dict[str, float]:
    """FLOPs of one training step and of one rendered test frame of ``case``, and the share of the
    step's operator time in matmul kernels (``torch.profiler``): {train_flops, matmul_share,
    render_flops}; PTI: {} (its FLOPs come with its timing)."""
    if case.method == "pti":
        return {}
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        work = Path(work or tmp)
        matmul_share = matmul_time_share(case, profile, train, steps, work)
        flops_1 = _flops(lambda: _fit(case, _fit_cfg(case, profile, 1), train, work / "count-1"))
        fitted: list[Any] = []
        flops_2 = _flops(lambda: fitted.append(_fit(case, _fit_cfg(case, profile, 2), train, work / "count-2")))
        method, batch = fitted[0][0], _one_frame(test)
        _prepare_render(method, test)
        render_flops = _flops(lambda: _render_once(method, batch))
    return {"train_flops": max(0.0, flops_2 - flops_1), "matmul_share": matmul_share, "render_flops": render_flops}


def bench_case(case: Case, profile: str, train: Any, test: Any, steps: int = 8, repeats: int = 3,
               work: Path | None = None, train_repeats: int = 1) -> dict[str, float]:
    """Seconds and FLOPs of one training step and one rendered test frame of ``case``, and the
    share of the step's operator time in matmul kernels: {train_s, train_flops, matmul_share,
    render_s, render_flops} (PTI: matmul_share nan): :func:`time_case`, then :func:`count_case`.
    ``train``/``test``: FrameDatasets (or stand-ins)."""
    with tempfile.TemporaryDirectory(prefix="persona-bench-") as tmp:
        work = Path(work or tmp)
        timed = time_case(case, profile, train, test, steps, repeats, work / "time", train_repeats)
        return {**timed, **count_case(case, profile, train, test, steps, work / "count")}


def markdown_table(rows: list[dict[str, Any]], peak_gflops: float) -> str:
    """Rows of :func:`bench_case` results (plus ``label``) -> a Markdown table with :data:`COLUMNS`."""

    def share(flops: float, seconds: float) -> str:
        return f"{100 * flops / seconds / 1e9 / peak_gflops:.1f}" if seconds > 0 and peak_gflops > 0 else "n/a"

    def matmul_only(r: dict[str, Any]) -> tuple[str, str]:
        fraction = r.get("matmul_share", float("nan"))
        if math.isnan(fraction) or fraction <= 0:  # PTI, or no matmul time measured
            return "n/a", "n/a"
        return f"{100 * fraction:.0f}", share(r["train_flops"], r["train_s"] * fraction)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    for r in rows:
        cells = [r["label"], f"{1000 * r['train_s']:.1f}", f"{r['train_flops'] / 1e9:.3f}", share(r["train_flops"], r["train_s"]),
                 *matmul_only(r), f"{1000 * r['render_s']:.1f}", f"{r['render_flops'] / 1e9:.3f}", share(r["render_flops"], r["render_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _datasets(data: Path, video: str) -> tuple[Any, Any]:
    from persona.data.dataset import FrameDataset

    found = sorted(p / video for p in data.glob("id*") if (p / video).is_dir())
    if not found:
        raise PersonaInputError(f"bench methods: --data {data}: no id*/{video} video; expected a benchmark folder "
                                "(python -m persona data build)")
    return FrameDataset(found[0], "train"), FrameDataset(found[0], "test")


def main(argv: list[str] | None = None) -> int:
    from persona import cli
    from persona.errors import flag_int

    parser = cli.parser("bench methods", __doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", choices=["smoke", "default"], help="method sizes")
    parser.add_argument("--methods", default="all", help=f"comma-separated subset of {','.join(case_names())}")
    parser.add_argument("--steps", type=flag_int(3, 100000), default=10, help="training iterations per method; the first 2 are warm-up")
    parser.add_argument("--repeats", type=flag_int(1, 1000), default=3, help="timed renders per method, median (PTI at most 2)")
    parser.add_argument("--train-repeats", type=flag_int(1, 100), default=1, help="timed training fits per method, median (not PTI)")
    parser.add_argument("--data", default=None, help="benchmark folder (None: the smoke benchmark, 64 px, built if missing)")
    parser.add_argument("--threads", type=flag_int(1, 1024), default=None, help="torch CPU threads (None: torch's choice)")
    parser.add_argument("--wall", action="store_true", help="time wall-clock seconds instead of this process's CPU time")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    CLOCK[0] = time.perf_counter if args.wall else time.process_time
    names = case_names()
    wanted = names if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise PersonaInputError(f"bench methods: --methods {','.join(unknown)} unknown; expected some of {','.join(names)}")
    if args.data is None:
        from persona.experiments import ensure_benchmark

        data = ensure_benchmark("smoke")
    else:
        data = Path(args.data)
    from persona.eg3d.bench import matmul_gflops

    peak = matmul_gflops(torch.device("cpu"), clock=CLOCK[0])
    print(f"CPU, {torch.get_num_threads()} threads, {'wall' if args.wall else 'CPU'} time; plain fp32 matmul (1024^3): {peak:.1f} GFLOP/s; "
          f"profile {args.profile}; data {data}", flush=True)
    chosen = [case for case, name in zip(CASES, names) if name in wanted]
    rows = []
    for case in chosen:  # every timing first: the profiler's threads would add to the later cases' CPU time
        train, test = _datasets(data, case.video)
        torch.manual_seed(0)
        result = time_case(case, args.profile, train, test, steps=args.steps, repeats=args.repeats, train_repeats=args.train_repeats)
        rows.append({"label": case.label, **result})
        print(f"  {case.label}: {1000 * result['train_s']:.1f} ms/step, {1000 * result['render_s']:.1f} ms/frame", flush=True)
    peak_after = matmul_gflops(torch.device("cpu"), clock=CLOCK[0])  # before the profiler runs (see time_case)
    for case, row in zip(chosen, rows):
        train, test = _datasets(data, case.video)
        torch.manual_seed(0)
        row.update(count_case(case, args.profile, train, test, steps=args.steps))
        if not math.isnan(row["matmul_share"]):
            print(f"  {case.label}: {100 * row['matmul_share']:.0f} % of a step in matmul kernels", flush=True)
    table = markdown_table(rows, max(peak, peak_after))
    print(f"\nmatmul peak (best of before/after): {max(peak, peak_after):.1f} GFLOP/s\n\n{table}")
    if args.out:
        from persona.runs import atomic_write_bytes

        atomic_write_bytes(Path(args.out), (table + "\n").encode())
    return 0
