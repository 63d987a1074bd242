"""``python -m persona bench end2end``: the issue-#15 end-to-end check on the synthetic world.

A talking clip with known cameras and expressions (:func:`persona.preprocess.synthetic_clip.write_clip`)
goes two ways into the same training of ours (same steps, seed, modality):

* ``pre``: ``persona preprocess`` on the mp4 (landmarks, framing, cameras, landmark expression code);
* ``gt``: the ground-truth folder of the same clip (:func:`write_truth_folder`: the rendered
  frames, which are the world's framing, with the true cameras and the true 76-d expressions),

and reports the test PSNR of each (``persona eval``; each run scored on its own folder's test
frames) and the gap. ``--camera-correction`` also trains on ``pre`` with the avatar's per-video
camera correction (:mod:`persona.ours.camera_correction`) and reports the cameras' error against
the truth before and after it, and trains on ``gt`` with it too: the true cameras need no
correction, so how far the learned one moves them is the floor of learning it through the prior
(what the reconstruction loss cannot tell from a camera error). ``--prior-fit STEPS`` fits the same
correction to the shipped prior alone (one latent shared by every frame, no avatar; minutes) on both
folders: the prior's own floor without the avatar's freedoms. ``--figure PATH`` plots the per-frame
camera errors of the corrected runs (:func:`camera_error_figure`). Trainings run as
``python -m persona train`` subprocesses, one thread each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from persona.data import formats
from persona.preprocess import crop, decode, pipeline, synthetic_clip


def write_truth_folder(video: str | Path, truth: synthetic_clip.ClipTruth, out: str | Path, size: int,
                       identity_seed: int, test_fraction: float = 0.1) -> Path:
    """The ground-truth training folder of a clip written by :func:`synthetic_clip.write_clip`:
    its frames resized to ``size`` (the world's framing), true cameras [N,25], true expressions
    [N,76], the world's mouth boxes, the same splits and background plate as ``preprocess``."""
    import cv2

    from persona.data.world import sample_identity
    from persona.data.world.render import mouth_boxes
    from persona.runs import staged_dir

    out = Path(out)
    n = len(truth.cameras)
    with staged_dir(out) as tmp:
        (tmp / "images").mkdir()
        names = [f"images/{i:05d}.jpg" for i in range(n)]
        frames = decode.iter_frames(decode.probe(video), truth.fps, n)
        for name, rgb in zip(names, frames):
            small = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
            (tmp / name).write_bytes(pipeline.encode_image(small, "jpg"))
        pipeline._write_background(tmp, names)
        boxes = mouth_boxes([sample_identity(identity_seed)] * n, truth.expressions, truth.cameras).numpy()
        pipeline._write_splits(tmp, names, np.arange(n), truth.cameras, truth.expressions, boxes, size, truth.fps, n,
                               test_fraction)
        formats.write_eg3d_dataset(tmp, list(zip(names, truth.cameras)))
    return out


def train_and_score(data: Path, run: Path, modality: str, steps: int, seed: int = 0, extra: tuple[str, ...] = ()) -> float:
    """Mean test PSNR of ours trained ``steps`` steps on ``data`` (resumes/reuses ``run``);
    ``extra``: more ``persona train`` flags."""
    import pandas as pd

    py = [sys.executable, "-m", "persona"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not (run / "metrics_test.csv").is_file():
        subprocess.run(py + ["train", "--method", "ours", "--modality", modality, "--data", str(data), "--out", str(run),
                             "--steps", str(steps), "--seed", str(seed), "--threads", "1", *extra],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(py + ["eval", str(run), "--no-sync", "--no-novel", "--threads", "1"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    return float(pd.read_csv(run / "metrics_test.csv")["psnr"].mean())


def corrected_cameras(data: Path, run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cameras [N,25] that ``persona preprocess`` wrote to ``data``'s dataset.json, in frame order;
    the same after the camera correction of the run ``run`` (trained with ``--camera-correction``), as
    its newest checkpoint renders: the weight average's when the run kept one, else the trained one)."""
    import torch

    from persona.ours.camera_correction import CameraCorrection
    from persona.ours.train import rendering_state
    from persona.runs import RunDir, load_tensors, unprefixed

    labels = np.stack([lab for _, lab in formats.read_eg3d_dataset(data)]).astype(np.float32)
    newest = RunDir(run).latest_checkpoint()
    state = unprefixed("camera_correction", rendering_state(load_tensors(newest[1])[0]) if newest else {})
    if not state:
        raise ValueError(f"{run}: no camera correction in its checkpoints (trained without --camera-correction?)")
    corr = CameraCorrection("quadratic" if "quadratic" in state else "linear")
    corr.load_state_dict(state)
    with torch.no_grad():
        fixed = corr(torch.from_numpy(labels)).numpy()
    return labels, fixed


def folder_frames(data: Path, resolution: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Every frame of a training folder in its ``dataset.json`` order: (images [N,3,R,R] in [-1,1] at
    ``resolution``, cameras [N,25])."""
    import torch

    from persona.data.dataset import to_tensor_image

    entries = formats.read_eg3d_dataset(data)
    images = torch.stack([to_tensor_image(formats.read_image(data / name), resolution) for name, _ in entries])
    return images, torch.from_numpy(np.stack([lab for _, lab in entries]))


def prior_fit(pre: Path, gt: Path, truth: np.ndarray, terms: str, steps: int, seed: int) -> str:
    """The per-video correction fitted to the shipped prior alone (:func:`persona.ours.camera_correction.
    fit_to_generator`, one shared latent) on both folders: on ``gt`` (true cameras, [N,25] ``truth``) how far
    it moves them, on ``pre`` how close it brings the estimated ones. One line per folder."""
    import torch

    from persona.eg3d.checkpoint import load_prior
    from persona.ours.camera_correction import fit_to_generator
    from persona.preprocess.camera import rotation_error_deg

    generator = load_prior()
    lines = []
    for name, folder in (("ground-truth folder", gt), ("preprocessed folder", pre)):
        images, labels = folder_frames(folder, generator.img_resolution)
        corr = fit_to_generator(generator, images, labels, terms, steps=steps, seed=seed, progress=True)
        with torch.no_grad():
            fixed = corr(labels).numpy()
        e0, e1 = rotation_error_deg(labels.numpy(), truth), rotation_error_deg(fixed, truth)
        lines.append(f"  prior fit ({terms}, {steps} steps, one latent shared by every frame), {name}: camera error "
                     f"{e0.mean():.2f} / {e0.max():.2f} -> {e1.mean():.2f} / {e1.max():.2f} deg (mean / max)")
    return "\n".join(lines)


def camera_error_figure(curves: dict[str, np.ndarray], test: np.ndarray, path: Path, title: str) -> list[Path]:
    """Per-frame camera rotation error (degrees) against the frame number, one line per entry of ``curves``
    ({label: [N]}), the test frames (``test`` [N] bool) shaded, the issue's 3° dotted. PNG + PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona.report import save_figure

    fig, ax = plt.subplots(figsize=(8, 3.2))
    frames = np.arange(len(test))
    if test.any():
        ax.axvspan(frames[test].min() - 0.5, frames[test].max() + 0.5, color="0.9", label="test frames (scored)")
    for label, err in curves.items():
        ax.plot(frames, err, lw=1.2, label=f"{label}: mean {np.mean(err):.2f}°")
    ax.axhline(3.0, color="grey", ls=":", label="issue #15: mean 3°")
    ax.set_xlabel("frame"), ax.set_ylabel("rotation error (°)"), ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def main(argv: list[str]) -> int:
    """Test PSNR of ours trained on `persona preprocess` of a synthetic mp4 vs on its ground-truth folder."""
    from persona.cli import parser
    from persona.errors import PersonaInputError, flag_int, flag_number
    from persona.ours.camera_correction import CAMERA_TERMS

    p = parser("bench end2end", main.__doc__)
    p.add_argument("--work", required=True, help="folder for the clip, both training folders and the runs (reused)")
    p.add_argument("--frames", type=int, default=150, help="frames of the synthetic clip")
    p.add_argument("--resolution", type=int, default=192, help="rendered frame size in pixels")
    p.add_argument("--size", type=int, default=64, help="training crop size (the tiny prior renders 64 px)")
    p.add_argument("--steps", type=int, default=150, help="training steps (the same for both folders)")
    p.add_argument("--modalities", nargs="+", default=["rgb", "3dmm"], choices=("rgb", "3dmm"), help="driving signals")
    p.add_argument("--framing", default="world", choices=crop.FRAMINGS, help="preprocess --framing")
    p.add_argument("--identity", type=int, default=1, help="identity seed of the clip")
    p.add_argument("--camera-correction", action="store_true",
                   help="also train on the preprocessed folder with --camera-correction and report the camera error "
                        "against the truth before and after the learned correction")
    p.add_argument("--camera-terms", default="linear", choices=CAMERA_TERMS,
                   help="the learned correction's map (persona train --camera-correction TERMS)")
    p.add_argument("--camera-lr", type=flag_number(0), default=None, metavar="LR",
                   help="with --camera-correction: its lr (persona train --camera-lr; None: the default 3e-3)")
    p.add_argument("--seed", type=flag_int(0), default=0, help="training seed of every run (the clip is the same)")
    p.add_argument("--prior-fit", type=flag_int(1), default=None, metavar="STEPS",
                   help="also fit the camera correction (--camera-terms) to the shipped prior alone, one latent shared "
                        "by every frame, STEPS steps, on both folders: how far it moves the true cameras (the prior's "
                        "floor) and how close it brings the estimated ones; minutes, no training")
    p.add_argument("--no-train", action="store_true", help="skip the trainings (with --prior-fit: only the fit)")
    p.add_argument("--figure", default=None, metavar="PATH",
                   help="with --camera-correction: per-frame camera error of each modality's runs (as preprocessed, "
                        "corrected, the best map, the correction on the true cameras) to PATH_<modality>.png / .pdf")
    args = p.parse_args(argv)
    if args.camera_lr is not None and not args.camera_correction:
        raise PersonaInputError(f"--camera-lr {args.camera_lr}: sets the lr of --camera-correction; add --camera-correction")
    if args.figure and not args.camera_correction:
        raise PersonaInputError(f"--figure {args.figure}: plots the cameras of --camera-correction's runs; add --camera-correction")
    if args.no_train and not args.prior_fit:
        raise PersonaInputError("--no-train: skips the trainings, which leaves nothing to measure without --prior-fit STEPS")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clip = work / "clip.mp4"
    truth = synthetic_clip.clip_truth(n_frames=args.frames, seed=0)
    if not clip.is_file():
        synthetic_clip.write_clip(clip, n_frames=args.frames, resolution=args.resolution, seed=0,
                                  identity_seed=args.identity)
    pre, gt = work / f"pre_{args.framing}", work / "gt"
    if not pre.is_dir():
        pipeline.preprocess(clip, pre, size=args.size, progress=False, framing=args.framing)
    if not gt.is_dir():
        write_truth_folder(clip, truth, gt, args.size, args.identity)
    if args.prior_fit:
        print(prior_fit(pre, gt, truth.cameras, args.camera_terms, args.prior_fit, args.seed))
    for modality in () if args.no_train else args.modalities:
        seeded = "" if args.seed == 0 else f"_s{args.seed}"  # seed 0's runs keep the names they had
        a = train_and_score(pre, work / f"run_{pre.name}_{modality}_{args.steps}{seeded}", modality, args.steps, args.seed)
        b = train_and_score(gt, work / f"run_gt_{modality}_{args.steps}{seeded}", modality, args.steps, args.seed)
        print(f"ours {modality}, {args.steps} steps, seed {args.seed}: test PSNR {a:.2f} dB on the preprocessed folder, {b:.2f} dB on "
              f"the ground-truth folder: gap {b - a:.2f} dB (issue #15 target: <= 1)")
        if args.camera_correction:
            from persona.preprocess import camera
            from persona.preprocess.accuracy import best_map_labels

            suffix = ("" if args.camera_terms == "linear" else f"_{args.camera_terms}") + \
                ("" if args.camera_lr is None else f"_lr{args.camera_lr:g}")  # the default's runs keep their names
            run = work / f"run_{pre.name}_{modality}_{args.steps}_camera_correction{suffix}{seeded}"
            lr = () if args.camera_lr is None else ("--camera-lr", f"{args.camera_lr:g}")
            c = train_and_score(pre, run, modality, args.steps, args.seed, extra=("--camera-correction", args.camera_terms, *lr))
            before, after = corrected_cameras(pre, run)
            e0, e1 = camera.rotation_error_deg(before, truth.cameras), camera.rotation_error_deg(after, truth.cameras)
            best = camera.rotation_error_deg(best_map_labels(before, truth.cameras), truth.cameras)
            print(f"  with --camera-correction {args.camera_terms}: test PSNR {c:.2f} dB; camera error against the truth, mean / max: "
                  f"{e0.mean():.2f} / {e0.max():.2f} deg as preprocessed -> {e1.mean():.2f} / {e1.max():.2f} deg corrected "
                  f"(issue #15 target: 3 / 8; the best quadratic map, fitted to the truth: {best.mean():.2f} / {best.max():.2f})")
            test = np.isin(np.arange(len(before)), [f["frame_index"] for f in formats.read_nerface(pre, "test").frames])
            print(f"    mean on the training frames {e0[~test].mean():.2f} -> {e1[~test].mean():.2f} deg, on the test frames "
                  f"(scored) {e0[test].mean():.2f} -> {e1[test].mean():.2f} deg")
            # the same training on the ground-truth folder: cameras that need no correction; how far the learned
            # one moves them is what learning it through the prior cannot tell apart (its floor)
            run = work / f"run_{gt.name}_{modality}_{args.steps}_camera_correction{suffix}{seeded}"
            g = train_and_score(gt, run, modality, args.steps, args.seed, extra=("--camera-correction", args.camera_terms, *lr))
            true, moved = corrected_cameras(gt, run)
            e2 = camera.rotation_error_deg(moved, true)
            print(f"  the same on the ground-truth folder: test PSNR {g:.2f} dB; the correction moves the true cameras by "
                  f"{e2.mean():.2f} / {e2.max():.2f} deg (mean / max): the floor of learning it through the prior")
            if args.figure:
                out = Path(args.figure)
                written = camera_error_figure(
                    {"as preprocessed": e0, "corrected by the avatar": e1, "best quadratic map (fitted to the truth)": best,
                     "true cameras, corrected by the avatar": e2}, test, out.with_name(f"{out.stem}_{modality}"),
                    f"identity {args.identity}, {modality}, {args.steps} steps, seed {args.seed}, --camera-correction "
                    f"{args.camera_terms}")
                print(f"  figure: {written[0]}")
    return 0
