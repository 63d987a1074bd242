"""``python -m persona bench generator``: generator speed, ms per image and GFLOP/s.

For each preset and batch size: forward (no grad) and forward+backward (gradient w.r.t. ws and the
weights), median over ``--repeats`` after one warm-up. FLOPs are counted by
``torch.utils.flop_counter`` (matmuls and convolutions; grid_sample and element-wise work are not
counted, so the rendering part is under-counted); the reference is a plain fp32 matmul measured in
the same run. Runs on the CPU and, when available, on the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from .presets import get_config
from .triplane import TriPlaneGenerator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    seconds = _timed(lambda: a @ b, device, repeats)
    return 2 * n ** 3 / seconds / 1e9


def _frontal_cameras(batch: int, device: torch.device) -> torch.Tensor:
    pose = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.9], [0, 0, 0, 1]])
    intr = torch.tensor([[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])
    return torch.cat([pose.flatten(), intr.flatten()]).expand(batch, 25).contiguous().to(device)


def _count_flops(fn, device: torch.device) -> tuple[float, float]:
    """(FLOPs of one call of ``fn``, seconds that counted call took)."""
    from torch.utils.flop_counter import FlopCounterMode

    _sync(device)
    start = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        fn()
    _sync(device)
    return float(counter.get_total_flops()), time.perf_counter() - start


def bench_preset(preset: str, batch: int, device: torch.device, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    G = TriPlaneGenerator(get_config(preset)).to(device)
    camera = _frontal_cameras(batch, device)
    ws = G.mapping(torch.randn(batch, G.z_dim, device=device), camera).detach()

    def forward():
        G.eval()
        with torch.no_grad():
            return G.synthesis(ws, camera)["image"]

    def forward_backward():
        G.train()
        w = ws.clone().requires_grad_(True)
        out = G.synthesis(w, camera)
        (out["image"].square().mean() + out["image_raw"].square().mean()).backward()
        G.zero_grad(set_to_none=True)

    flops_f, t_f = _count_flops(forward, device)
    flops_fb, t_fb = _count_flops(forward_backward, device)
    if repeats > 0:  # 0: the counted (first, cold) runs are the timing (slow presets on CPU)
        t_f = _timed(forward, device, repeats, warmup)
        t_fb = _timed(forward_backward, device, repeats, warmup)
    return {"preset": preset, "device": device.type, "batch": batch, "params_M": sum(p.numel() for p in G.parameters()) / 1e6,
            "fwd_ms_per_image": 1000 * t_f / batch, "fwd_bwd_ms_per_image": 1000 * t_fb / batch,
            "fwd_gflop_per_image": flops_f / batch / 1e9, "fwd_gflops": flops_f / t_f / 1e9, "fwd_bwd_gflops": flops_fb / t_fb / 1e9}


def main(argv: list[str] | None = None) -> int:
    from persona import cli

    parser = cli.parser("bench generator", __doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,ffhq512", help="comma-separated presets")
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median); ffhq512 on CPU: its single FLOP-counted run is timed")
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"], help="'all' = cpu, plus cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not devices:
        parser.error("--device cuda: no CUDA device available")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        ref = matmul_gflops(device, n=4096 if device.type == "cuda" else 1024)
        print(f"\n[{device.type}] {name}; plain fp32 matmul: {ref:.1f} GFLOP/s")
        print(f"{'preset':<9} {'batch':>5} {'params(M)':>9} {'fwd ms/img':>11} {'fwd+bwd ms/img':>15} {'GFLOP/img':>9} "
              f"{'fwd GFLOP/s':>11} {'f+b GFLOP/s':>11} {'% matmul':>8}")
        for preset in presets:
            for batch in batches:
                slow = device.type == "cpu" and preset == "ffhq512"
                r = bench_preset(preset, batch, device, repeats=0 if slow else args.repeats, warmup=1)
                print(f"{r['preset']:<9} {batch:>5} {r['params_M']:>9.2f} {r['fwd_ms_per_image']:>11.1f} {r['fwd_bwd_ms_per_image']:>15.1f} "
                      f"{r['fwd_gflop_per_image']:>9.2f} {r['fwd_gflops']:>11.1f} {r['fwd_bwd_gflops']:>11.1f} {100 * r['fwd_gflops'] / ref:>7.0f}%",
                      flush=True)
    return 0
