"""``python -m persona bench renderer``: frames per second of the synthetic head renderer."""

from __future__ import annotations

import time

import torch

from persona.errors import flag_int, flag_number


def measure(resolution: int, batch: int, seconds: float = 2.0, prior: bool = True) -> dict[str, float]:
    """Frames/s of :func:`sample_prior_batch` (random identities, expressions, cameras) at one
    resolution: wall clock and process CPU time (the latter is robust to other processes)."""
    from persona.data import world as S

    g = torch.Generator().manual_seed(0)
    S.sample_prior_batch(min(batch, 4), resolution, g)  # warm-up (identity cache, allocator)
    frames, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        S.sample_prior_batch(batch, resolution, g)
        frames += batch
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    cpu = time.process_time() - cpu0
    return {"resolution": resolution, "batch": batch, "frames": frames, "fps_wall": frames / wall,
            "fps_cpu": frames / max(cpu, 1e-9), "threads": torch.get_num_threads()}


def main(argv: list[str]) -> int:
    from persona import cli

    p = cli.parser("bench renderer", __doc__)
    p.add_argument("--resolutions", type=flag_int(8, 4096), nargs="+", default=[64, 128, 256, 512], help="image sizes to time")
    p.add_argument("--seconds", type=flag_number(0, 3600, lo_open=True), default=2.0, help="timed seconds per size")
    p.add_argument("--threads", type=flag_int(1, 1024), default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"synthetic renderer, {args.threads} thread(s), batched sample_prior_batch (2x2 edge supersampling)")
    print(f"{'px':>5} {'batch':>6} {'frames/s (wall)':>16} {'frames/s (cpu)':>15}")
    for res in args.resolutions:
        batch = max(1, min(64, (64 * 64 * 64) // (res * res)))
        r = measure(res, batch, args.seconds)
        print(f"{res:>5} {batch:>6} {r['fps_wall']:>16.1f} {r['fps_cpu']:>15.1f}")
    return 0
