"""The ``train`` and ``render`` verbs of ``python -m persona`` for every method (ours and the baselines).

The shared argparse helpers are in :mod:`persona.cli`; ``eval`` is :func:`persona.evaluate.main`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from persona.data.formats import unit_to_uint8
from persona.errors import PersonaInputError, flag_int, flag_number
from persona.methods import provides
from persona.ours.basis import ORTHO_MODES
from persona.ours.model import MODALITIES
from persona.runs import RunDir

METHOD_NAME = "ours"


def main_train(argv: list[str]) -> int:
    """``python -m persona train --method ours --modality rgb --data DIR --out RUN [...]``."""
    from persona.methods import REGISTRY
    from persona.methods import build_method as build_registered

    from persona import cli
    from persona.errors import PersonaInputError
    from persona.ours.camera_correction import CAMERA_TERMS

    p = cli.parser("train", "fit a method (ours or a baseline) on one video; unset options take the profile's values")
    p.add_argument("--method", default=METHOD_NAME, choices=sorted(REGISTRY), help="ours or a baseline")
    p.add_argument("--modality", choices=MODALITIES, help="driving signal (ours only; None: rgb)")
    p.add_argument("--data", required=True, help="video folder (NerFACE layout: transforms_train.json, images/...)")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds checkpoints)")
    p.add_argument("--profile", default="default", choices=("smoke", "default", "paper"), help="sizes and steps")
    p.add_argument("--k", type=flag_int(1, 4096), help="number of basis vectors (ours only; None: the profile's, 50)")
    p.add_argument("--ortho", choices=ORTHO_MODES, help="orthogonality mode of the basis (ours only; None: qr)")
    p.add_argument("--generator", help="official EG3D .pkl or our .safetensors generator (None: the shipped prior)")
    cli.add_steps(p, "training steps (None: the profile's)", old="--iterations")
    cli.add_batch_size(p, "frames per step (ours only; None: the profile's)", old=None)
    p.add_argument("--lambda-lpips", type=flag_number(0), help="LPIPS weight of ours' loss (ours only; 0: L2 only, explicitly; None: the profile's)")
    p.add_argument("--seed", type=flag_int(0), help="seed of initialisation and batch order (None: the profile's, 0)")
    p.add_argument("--camera-correction", nargs="?", const="linear", default=None, choices=CAMERA_TERMS,
                   help="ours only: learn a per-video correction of the cameras with the avatar (for cameras estimated by "
                        "persona preprocess; persona/ours/camera_correction.py): linear (the flag alone) or quadratic")
    p.add_argument("--camera-lr", type=flag_number(0), metavar="LR",
                   help="with --camera-correction: the correction's Adam lr (None: 3e-3; README, Your own video)")
    p.add_argument("--expression-lasso", type=flag_number(0), metavar="S",
                   help="ours, --modality 3dmm only: group lasso on the encoder's expression inputs, lr x S a step (1: "
                        "+0.7 dB mouth PSNR on new speech over 15 synthetic runs, docs/REENACTMENT.md twelfth round; 0: off, as "
                        "the paper; None: the profile's, 1 on default and smoke, 0 on paper)")
    cli.add_runtime(p, device_help="torch device: cpu, cuda, cuda:1 ... (None: the profile's)")
    p.add_argument("--force", action="store_true",
                   help="start over in --out: delete what persona wrote there (config, metrics, checkpoints, renders)")
    args = p.parse_args(argv)
    if args.expression_lasso is not None and args.modality != "3dmm":
        raise PersonaInputError(f"--expression-lasso {args.expression_lasso}: applies to --method ours --modality 3dmm "
                                f"(the expression encoder), got --modality {args.modality or 'rgb (the default)'}")
    if args.camera_lr is not None and args.camera_correction is None:
        raise PersonaInputError(f"--camera-lr {args.camera_lr}: sets the lr of --camera-correction; add --camera-correction "
                                "[linear|quadratic]")
    cli.apply_runtime(args)
    from persona.data.dataset import FrameDataset

    flags = {"modality": "--modality", "k": "--k", "ortho": "--ortho", "generator": "--generator", "iterations": "--steps",
             "batch_size": "--batch-size", "seed": "--seed", "device": "--device", "lambda_lpips": "--lambda-lpips",
             "camera_correction": "--camera-correction", "camera_terms": "--camera-correction", "camera_lr": "--camera-lr",
             "expression_lasso": "--expression-lasso"}
    overrides = {"modality": args.modality, "k": args.k, "ortho": args.ortho, "generator": args.generator,
                 "iterations": args.steps, "batch_size": args.batch_size, "seed": args.seed, "device": args.device,
                 "lambda_lpips": args.lambda_lpips, "camera_correction": None if args.camera_correction is None else True,
                 "camera_terms": args.camera_correction, "camera_lr": args.camera_lr, "expression_lasso": args.expression_lasso}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = {f.name for f in fields(getattr(build_registered(args.method, {"profile": args.profile}), "config"))}
    foreign = list(dict.fromkeys(flags[k] for k in overrides if k not in settings))
    if foreign:
        raise PersonaInputError(f"{', '.join(foreign)}: not a setting of --method {args.method} "
                                f"({'they apply' if len(foreign) > 1 else 'it applies'} to other methods, e.g. ours)")
    cfg = {"profile": args.profile, **overrides}
    method = build_registered(args.method, cfg)
    train = FrameDataset(args.data, split="train", resolution=getattr(getattr(method, "config", None), "resolution", None))
    run = RunDir(args.out)
    if args.force:
        run.clear()
    method.fit(train, run)
    if not (run.root / "config.json").is_file():
        run.write_config({"method": args.method, "config": getattr(method, "config", cfg), "data": args.data})
    from persona.runlist import plot_metrics

    if run.finished_before():
        print(f"already complete: {run.root} ({run.latest_checkpoint()[0]} steps); use --force to retrain")
        return 0
    plot = plot_metrics(run.root)
    print(f"trained {args.method} -> {run.root}" + (f" (training curve: {plot})" if plot else ""))
    return 0


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [-1,1] -> HxWx3 uint8 BGR (for cv2)."""
    rgb = unit_to_uint8(image.permute(1, 2, 0))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def load_run(run_dir: str | Path, device: str | None = None) -> tuple[Any, dict[str, Any]]:
    """(method restored from a run directory, its config.json); ``device`` overrides the run's."""
    from persona.methods import build_method as build_registered

    run = RunDir(run_dir)
    cfg = run.read_config()
    for key, kind in (("method", str), ("config", dict)):
        if not isinstance(cfg.get(key), kind):
            raise PersonaInputError(f"{run.root / 'config.json'}: {key}: expected a {kind.__name__}, got {cfg.get(key)!r:.60}")
    if device:
        cfg["config"] = {**cfg["config"], "device": device}
    method = build_registered(cfg["method"], cfg["config"])
    method.load(run)
    return method, cfg


AUDIO_METHODS = ("adnerf", "dfrf")  # baselines driven by audio (ours: modality 'audio')


def render_stamp(run: RunDir, data: str | Path, split: str, resolution: int | None) -> dict[str, Any]:
    """What decides a run's renders of a split: its newest checkpoint (name and digest), the data
    folder, the split and resolution. ``render`` writes it beside the frames; ``eval`` reuses the
    frames when its own stamp is the same."""
    from persona.experiments import file_digest

    latest = run.latest_checkpoint()
    checkpoint = f"{latest[1].name}:{file_digest(latest[1])}" if latest else None
    return {"checkpoint": checkpoint, "data": str(Path(data).resolve()), "split": split, "resolution": resolution}


def main_render(argv: list[str]) -> int:
    """``python -m persona render RUN [--data DIR] [--split test] [--novel] [--orbit N] [--alphas]``."""
    from persona import cli

    p = cli.parser("render", "render a trained run into RUN/renders/<split>/ (and videos: see --video, --orbit)")
    p.add_argument("run", help="run directory written by `python -m persona train`")
    p.add_argument("--data", help="video folder (None: the one the run was trained on)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="frames to render")
    p.add_argument("--novel", action="store_true", help="also render the novel-view cameras of the test frames")
    p.add_argument("--orbit", type=flag_int(0, 100000), default=0, help="frames of an orbit video around the first frame (0: none)")
    p.add_argument("--orbit-yaw", type=flag_number(0, 180), default=30.0, help="orbit yaw range in degrees")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=True,
                   help="write RUN/renders/<split>.mp4 (H.264): ground truth | render, with the audio track for audio runs")
    p.add_argument("--alphas", action="store_true", help="write the basis coefficients per frame (ours only)")
    cli.add_batch_size(p, "frames per forward pass", default=8)
    cli.add_runtime(p, device_help="torch device: cpu, cuda, cuda:1 ... (None: the run's)")
    args = p.parse_args(argv)
    cli.apply_runtime(args)
    import cv2
    from torch.utils.data import DataLoader

    from persona import video
    from persona.cameras import orbit
    from persona.report import to_uint8
    from persona.runs import atomic_write_json
    from persona.data.dataset import FrameDataset, NovelViewDataset

    method, cfg = load_run(args.run, device=args.device)
    with_alphas = args.alphas and provides(method, "alphas")
    if args.alphas and not with_alphas:
        print(f"persona render: warning: --alphas ignored: method {cfg['method']!r} has no basis coefficients", file=sys.stderr)
    data = args.data or cfg.get("data")
    if not data:
        raise PersonaInputError(f"{args.run}/config.json: no 'data' path; pass --data DIR")
    resolution = cfg["config"].get("resolution")
    ds = FrameDataset(data, split=args.split, resolution=resolution)
    method.attach_audio(ds)
    run = RunDir(args.run)
    out = run.renders / args.split
    out.mkdir(parents=True, exist_ok=True)
    alphas, indices, side_by_side = [], [], []
    t0 = time.perf_counter()
    for batch in tqdm(DataLoader(ds, batch_size=args.batch_size), desc=f"render {args.split}"):
        images = method.render(batch, batch["camera"])
        for idx, img, truth in zip(batch["index"].tolist(), images, batch["image"]):
            cv2.imwrite(str(out / f"{idx:05d}.png"), _to_uint8(img))
            if args.video:
                side_by_side.append(video.side_by_side(to_uint8(truth), to_uint8(img)))
        indices.append(batch["index"].numpy())
        if with_alphas:
            alphas.append(method.alphas(batch).numpy())
    print(f"rendered {len(ds)} frames in {time.perf_counter() - t0:.1f} s -> {out}")
    # what eval needs to reuse these frames instead of rendering again (same checkpoint, data, split)
    atomic_write_json(run.renders / f"{args.split}.json", render_stamp(run, data, args.split, resolution)
                      | {"indices": np.concatenate(indices).tolist()})
    if side_by_side:
        audio_driven = cfg["config"].get("modality") == "audio" or cfg["method"] in AUDIO_METHODS
        wav = Path(data) / "aud.wav"
        track = wav if audio_driven and wav.is_file() else None
        fps = float(getattr(ds, "fps", 25) or 25)
        start = int(indices[0][0]) / fps
        if track is not None and (video.probe(track)["duration"] or 0.0) <= start:
            print(f"persona render: warning: {track} ends before frame {int(indices[0][0])} ({start:.2f} s): video without sound",
                  file=sys.stderr)
            track = None
        path = video.write_video(run.renders / f"{args.split}.mp4", side_by_side, fps, audio=track, audio_start=start)
        print(f"video (ground truth | render{', with audio' if track else ''}, H.264) -> {path}")
    if alphas:
        np.save(out.parent / f"alphas_{args.split}.npy", np.concatenate(alphas))
        np.save(out.parent / f"alphas_{args.split}_index.npy", np.concatenate(indices))
    if args.novel:
        novel = NovelViewDataset(data, resolution=resolution)
        for batch in tqdm(DataLoader(novel, batch_size=args.batch_size), desc="render novel views"):
            images = method.render(batch, batch["camera"])
            for view, src, img in zip(batch["view"], batch["source_index"].tolist(), images):
                folder = out.parent / "novel" / str(view)
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{src:05d}.png"), _to_uint8(img))
    if args.orbit > 0:
        first = next(iter(DataLoader(ds, batch_size=1)))
        cams = torch.as_tensor(orbit(args.orbit, args.orbit_yaw), dtype=torch.float32)
        path = video.write_video(out.parent / "orbit.mp4", [to_uint8(method.render(first, cam[None])[0]) for cam in cams],
                                 float(getattr(ds, "fps", 25) or 25))
        print(f"orbit video ({args.orbit} frames) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:]))
