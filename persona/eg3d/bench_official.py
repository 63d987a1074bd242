"""``python -m persona bench official --official-dir DIR``: our ffhq512 generator against the
official EG3D code on this machine, the same random weights in both.

``DIR`` is the user's own checkout of NVlabs/eg3d (its ``eg3d`` folder, the one holding
``training/``); it is imported only by this command, never by the tests (without ``DIR`` the
command stops with a one-line message). The official code runs with its reference ops (no CUDA
plugin: on the CPU it picks them itself). Both generators get our random ffhq512 weights (copied
by name), the same camera and ws, ``noise_mode='const'``; timings alternate A/B in one process
(median of ``--repeats`` after one warm-up each): forward (no grad, eval mode) and
forward+backward of ``mean(image^2) + mean(image_raw^2)`` w.r.t. ws and the weights (training
mode). ``--check`` first compares the renders and ws-gradients at the same seed (the depth
jitter draws the same numbers in both), next to the spread between two seeds of the official code.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from persona.errors import PersonaInputError, flag_int


def _official_generator(official_dir: Path, depth: int, importance: int):
    if not (official_dir / "training" / "triplane.py").is_file():
        raise PersonaInputError(f"--official-dir {official_dir}: no training/triplane.py; expected the eg3d folder of a "
                                "checkout of https://github.com/NVlabs/eg3d")
    sys.path.insert(0, str(official_dir))
    from training.triplane import TriPlaneGenerator  # noqa: the user's official checkout

    rendering = {"image_resolution": 512, "disparity_space_sampling": False, "clamp_mode": "softplus",
                 "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC", "c_gen_conditioning_zero": False,
                 "gpc_reg_prob": 0.5, "c_scale": 1.0, "superresolution_noise_mode": "none", "density_reg": 0.25,
                 "density_reg_p_dist": 0.004, "reg_type": "l1", "decoder_lr_mul": 1.0, "sr_antialias": True,
                 "depth_resolution": depth, "depth_resolution_importance": importance, "ray_start": 2.25, "ray_end": 3.3,
                 "box_warp": 1, "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2]}
    return TriPlaneGenerator(z_dim=512, c_dim=25, w_dim=512, img_resolution=512, img_channels=3, sr_num_fp16_res=4,
                             mapping_kwargs={"num_layers": 2}, rendering_kwargs=rendering,
                             sr_kwargs=dict(channel_base=32768, channel_max=512, fused_modconv_default="inference_only"),
                             channel_base=32768, channel_max=512, fused_modconv_default="inference_only", num_fp16_res=0,
                             conv_clamp=None)


def main(argv: list[str] | None = None) -> int:
    from persona import cli

    from .bench import _frontal_cameras
    from .triplane import build_generator

    parser = cli.parser("bench official", __doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", default=None, help="the eg3d folder of your NVlabs/eg3d checkout (holds training/)")
    parser.add_argument("--nrr", type=flag_int(8, 512), default=128, help="neural rendering resolution (both codes)")
    parser.add_argument("--depth", type=flag_int(2, 256), default=48, help="stratified samples per ray (both codes)")
    parser.add_argument("--importance", type=flag_int(0, 256), default=48, help="importance samples per ray (both codes)")
    parser.add_argument("--repeats", type=flag_int(1, 100), default=3, help="timed runs per code and mode (median)")
    parser.add_argument("--threads", type=flag_int(1, 1024), default=None, help="torch CPU threads (None: torch's choice)")
    parser.add_argument("--check", action="store_true", help="first compare renders and ws-gradients at the same seed")
    args = parser.parse_args(argv)
    if args.official_dir is None:
        print("bench official: skipped, no --official-dir (point it at the eg3d folder of a NVlabs/eg3d checkout)")
        return 0
    if not (Path(args.official_dir) / "training" / "triplane.py").is_file():
        raise PersonaInputError(f"--official-dir {args.official_dir}: no training/triplane.py; expected the eg3d folder of a "
                                "checkout of https://github.com/NVlabs/eg3d")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = build_generator("ffhq512", depth_resolution=args.depth, depth_resolution_importance=args.importance)
    official = _official_generator(Path(args.official_dir), args.depth, args.importance)
    official.load_state_dict(ours.state_dict(), strict=True)
    camera = _frontal_cameras(1, torch.device("cpu"))
    ws = ours.mapping(torch.randn(1, 512), camera).detach()

    def run(G, train: bool):
        G.train(train)
        w = ws.clone().requires_grad_(train)
        if not train:
            with torch.no_grad():
                return G.synthesis(w, camera, neural_rendering_resolution=args.nrr, noise_mode="const"), None
        out = G.synthesis(w, camera, neural_rendering_resolution=args.nrr, noise_mode="const")
        (out["image"].square().mean() + out["image_raw"].square().mean()).backward()
        G.zero_grad(set_to_none=True)
        return out, w.grad

    print(f"CPU, {torch.get_num_threads()} threads; ffhq512, neural rendering {args.nrr}^2, {args.depth}+{args.importance} samples", flush=True)
    if args.check:
        got = {}
        for name, G, seed in (("persona", ours, 1), ("official", official, 1), ("official seed 2", official, 2)):
            torch.manual_seed(seed)
            out, _ = run(G, False)
            torch.manual_seed(seed)
            _, grad = run(G, True)
            got[name] = ({k: v.detach() for k, v in out.items()}, grad)
        for key in ("image", "image_raw", "image_depth"):
            ref = got["official"][0][key]
            print(f"  {key}: max |persona - official| {(got['persona'][0][key] - ref).abs().max():.3g}; "
                  f"official seed 1 vs 2 {(got['official seed 2'][0][key] - ref).abs().max():.3g}")
        ref = got["official"][1]
        print(f"  grad ws: relative |persona - official| {(got['persona'][1] - ref).norm() / ref.norm():.3g}; "
              f"official seed 1 vs 2 {(got['official seed 2'][1] - ref).norm() / ref.norm():.3g}", flush=True)
    for mode, train in (("forward", False), ("forward+backward", True)):
        times: dict[str, list[float]] = {"persona": [], "official": []}
        run(ours, train), run(official, train)  # warm-up
        for i in range(args.repeats):
            order = (("persona", ours), ("official", official)) if i % 2 == 0 else (("official", official), ("persona", ours))
            for name, G in order:
                start = time.perf_counter()
                run(G, train)
                times[name].append(time.perf_counter() - start)
        p, o = statistics.median(times["persona"]), statistics.median(times["official"])
        print(f"{mode}: persona {p:.2f} s, official {o:.2f} s (medians of {args.repeats}, wall): persona {o / p:.2f}x faster", flush=True)
    return 0
