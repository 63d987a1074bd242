"""Does a method follow expressions? Scores that separate a talking face from a static one.

Whole-image PSNR on a 64-px head mostly measures identity, pose and background; these scores
look at the mouth:

- :func:`static_floor`: the identity's mean training frame (a static image, no expression at all)
  scored on the test frames, full image and mouth box. A method that reenacts must beat it in
  the mouth box.
- :func:`mouth_opening`: an image measure of how open a mouth is, the same for every method:
  the summed absolute luminance deviation from the box's median (teeth are brighter, the cavity
  darker than the lips and skin that fill a closed mouth's box), in a box that depends on the
  camera only (:func:`opening_box`), so that the box itself never carries the expression.
- :func:`retrieval_ceiling`: mouth PSNR of predicting each test frame by the mean of the training
  frames nearest in a key (audio windows, the true mouth opening): what a signal tells, no generator;
  :func:`mouth_oracles` scores three keys on a synthetic video (``diagnose --oracles``).
- :func:`following_score`: the Pearson correlation over a clip between a method's and the ground
  truth's mouth opening (1 for the ground truth itself, 0 for a frozen frame).
- :func:`frontal_clip`: the clip the following score runs on: a split's driving signals
  (expressions, audio) with the ground truth re-rendered by the synthetic world at a fixed
  frontal camera. At the video's own moving camera, the box moves with the head and a static
  image's "opening" follows the pose; at a fixed camera a frozen frame scores exactly 0.
- :func:`basis_pixel_change`: how many pixels (whole image and mouth box) move when one basis
  coefficient of our method goes to ±strength σ.
- :func:`training_curve`: mouth PSNR and the following score of one run's checkpoints against
  training steps, and :func:`curve_figure` to plot it.

``python -m persona diagnose`` trains one run of ours (checkpoints kept), scores every checkpoint
and writes ``curve.csv``, ``curve.png``, ``basis.png``, ``basis_change.csv`` and ``summary.json``.
Needs a synthetic video (the re-rendering uses the world's identity, ``identity_seed`` in
``transforms_*.json``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from persona import metrics
from persona.errors import PersonaFileError, PersonaInputError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights
OPENING_BOX_MARGIN = 0.1  # padding of the opening box, as a fraction of its size
FULL_OPEN = 1.2  # the world's largest mouth_open control: the opening box holds this mouth


# --------------------------------------------------------------------------------------------
# scores on images
# --------------------------------------------------------------------------------------------


def luminance(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] in [-1,1] -> luminance [B,1,H,W] in [0,1]."""
    rgb = (images.detach().float().clamp(-1, 1) + 1) / 2
    return (rgb * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def mouth_opening(images: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """How open each mouth looks: ``sum over the box of |L - median_box(L)|`` (L = luminance in [0,1]).

    images [B,3,H,W] in [-1,1]; box [4] or [B,4] (x0, y0, x1, y1 in [0,1], see
    :func:`persona.metrics.box_mask`). A closed mouth's box holds skin and lips; opening shows
    teeth (brighter) and the cavity (darker), both far from the median. Returns [B] (pixel units).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"mouth_opening: images [B,3,H,W] expected, got {list(images.shape)}")
    b, _, h, w = images.shape
    lum = luminance(images)
    mask = metrics.box_mask(box, b, h, w).to(lum.dtype) > 0
    out = torch.zeros(b, dtype=torch.float64)
    for i in range(b):
        values = lum[i, 0][mask[i, 0]]
        if values.numel():
            out[i] = float((values - values.median()).abs().sum())
    return out


def following_score(rendered: Sequence[float] | torch.Tensor, truth: Sequence[float] | torch.Tensor) -> float:
    """Pearson correlation of two opening series [T]; 0 when either is constant (a frozen face)."""
    a = np.asarray(torch.as_tensor(rendered, dtype=torch.float64))
    t = np.asarray(torch.as_tensor(truth, dtype=torch.float64))
    if a.shape != t.shape or a.ndim != 1 or len(a) < 3:
        raise ValueError(f"following_score: two series of equal length >= 3 expected, got {a.shape} and {t.shape}")
    if a.std() < 1e-9 * max(1.0, abs(a).max()) or t.std() < 1e-9 * max(1.0, abs(t).max()):
        return 0.0
    return float(np.corrcoef(a, t)[0, 1])


def mean_frame(dataset: Any, max_frames: int | None = None) -> torch.Tensor:
    """The mean image [3,H,W] of a split (``max_frames`` evenly spaced frames when given)."""
    n = len(dataset)
    picks = range(n) if max_frames is None or max_frames >= n else np.linspace(0, n - 1, max_frames).round().astype(int)
    total = None
    for count, i in enumerate(picks, start=1):
        image = torch.as_tensor(dataset[int(i)]["image"]).double()
        total = image if total is None else total + image
    return (total / count).float()


def static_floor(train_ds: Any, test_ds: Any, max_frames: int | None = None) -> pd.DataFrame:
    """The mean training frame scored on the test frames (:func:`persona.evaluate.static_floor`):
    one row per frame with ``index``, ``psnr`` (full image) and ``psnr_mouth`` (the dataset's mouth box)."""
    from persona.evaluate import static_floor as floor

    return floor(train_ds, test_ds, max_frames)[["index", "psnr", "psnr_mouth"]].reset_index(drop=True)


def retrieval_ceiling(train_images: torch.Tensor, train_keys: torch.Tensor, test_images: torch.Tensor, test_keys: torch.Tensor,
                      boxes: torch.Tensor, k: int = 20) -> float:
    """Mouth-box PSNR (dB, mean over test frames) of a retrieval oracle: each test frame predicted by
    the mean of the ``k`` training frames whose keys are nearest (Euclidean). No generator is
    involved, so it measures what a signal tells about the mouth: with audio windows as keys, a
    rough ceiling for an L2-trained audio-driven model (which renders the mean face given the
    audio); with the true mouth opening, one for a perfectly informed one. Compare with
    :func:`static_floor` (issue #20: on the default audio videos, audio keys k = 20 +1.0-1.7 dB over
    the floor, the world's mouth opening k = 5 +2.3-4.1 dB).

    train_images [N,3,H,W], test_images [T,3,H,W] in [-1,1]; train_keys [N,D], test_keys [T,D];
    boxes [T,4] (the test frames' mouth boxes)."""
    train_keys, test_keys = torch.as_tensor(train_keys).float().flatten(1), torch.as_tensor(test_keys).float().flatten(1)
    if len(train_keys) != len(train_images) or len(test_keys) != len(test_images) or train_keys.shape[1] != test_keys.shape[1]:
        raise PersonaInputError(f"retrieval_ceiling: keys [N,D]/[T,D] matching the images expected, got {list(train_keys.shape)} "
                                f"for {len(train_images)} and {list(test_keys.shape)} for {len(test_images)} frames")
    if not 1 <= k <= len(train_images):
        raise PersonaInputError(f"retrieval_ceiling: k={k}; expected 1 <= k <= {len(train_images)} training frames")
    nearest = torch.cdist(test_keys, train_keys).topk(k, largest=False).indices  # [T,k]
    pred = torch.as_tensor(train_images).float()[nearest].mean(1)
    return float(metrics.psnr(pred, torch.as_tensor(test_images).float(), boxes).mean())


# The synthetic world's face controls that shape the mouth (persona.data.world.expression_controls' columns).
MOUTH_CONTROLS = {"mouth_open": 0, "mouth_width": 1, "pucker": 2, "corner_up": 3, "jaw_x": 7, "lip_press": 11}


def ridge_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, penalty: float) -> torch.Tensor:
    """A ridge regression fit on (train_x [N,D], train_y [N,K]), both centred and x divided by its
    training spread, applied to test_x [T,D] -> [T,K] (float64 normal equations; D in the hundreds)."""
    x, t = train_x.double().flatten(1), test_x.double().flatten(1)
    mean, spread = x.mean(0), x.std(0) + 1e-6
    x, t = (x - mean) / spread, (t - mean) / spread
    y_mean = train_y.double().mean(0)
    w = torch.linalg.solve(x.T @ x + penalty * torch.eye(x.shape[1], dtype=x.dtype), x.T @ (train_y.double() - y_mean))
    return (t @ w + y_mean).float()


def mouth_oracles(video: str | Path, k: int = 5, penalty: float = 100.0) -> dict[str, float]:
    """Mouth PSNR over the static floor (dB, mean over the test clip, every frame) of predictors with
    no generator (:func:`retrieval_ceiling`, each test frame the mean of ``k`` training frames), on a
    synthetic video (issue #20: what the driving signal tells about the mouth):

    - ``audio``: nearest in the audio windows (their 4 central feature frames);
    - ``audio_ridge``: nearest in the world's mouth controls (:data:`MOUTH_CONTROLS`) as predicted from
      the whole 16x29 window by a ridge regression fit on the training frames (penalty ``penalty`` on
      standardised windows, fixed, not tuned on the test clip); ``audio_ridge_r2``: that prediction's
      R^2 for ``mouth_open`` on the test clip;
    - ``mouth_controls``: nearest in the true mouth controls: a perfectly informed driver.

    Plus ``floor`` (the static floor's mouth PSNR, dB). Retrieval mixes the training frames' cameras:
    read it on a fixed-camera video (the audio ones)."""
    from persona.data.dataset import FrameDataset, stack_samples
    from persona.data.world import expression_controls

    train_ds, test_ds = FrameDataset(video, "train"), FrameDataset(video, "test")
    if not 1 <= k <= len(train_ds):
        raise PersonaInputError(f"mouth_oracles: k={k}; expected 1 <= k <= {len(train_ds)} training frames of {video}")
    keys = ("image", "expression", "audio", "mouth_box")
    train, test = ({key: v.float() for key, v in stack_samples(ds, keys).items()} for ds in (train_ds, test_ds))
    columns = list(MOUTH_CONTROLS.values())
    controls = {name: expression_controls(part["expression"])[:, columns] for name, part in (("train", train), ("test", test))}
    floor = float(static_floor(train_ds, test_ds)["psnr_mouth"].mean())

    def gain(train_keys: torch.Tensor, test_keys: torch.Tensor) -> float:
        return retrieval_ceiling(train["image"], train_keys, test["image"], test_keys, test["mouth_box"], k) - floor

    centre = lambda a: a[:, 6:10].flatten(1)  # noqa: E731  (the window's 4 central feature frames)
    predicted = ridge_predict(train["audio"], controls["train"], test["audio"], penalty)
    truth = controls["test"][:, 0]
    r2 = 1 - float(((predicted[:, 0] - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum().clamp_min(1e-12))
    return {"floor": floor, "audio": gain(centre(train["audio"]), centre(test["audio"])),
            "audio_ridge": gain(controls["train"], predicted), "audio_ridge_r2": r2,
            "mouth_controls": gain(controls["train"], controls["test"])}


# --------------------------------------------------------------------------------------------
# the clip the following score runs on
# --------------------------------------------------------------------------------------------


@dataclass
class FrontalClip:
    """A split's driving signals and its ground truth re-rendered at one fixed frontal camera.

    ``conditions``: batch dict (``expression`` [T,76], ``audio`` [T,16,29], ``index`` [T],
    ``camera`` [T,25], ``image`` [T,3,H,W] = the ground truth at that camera); ``box`` [4]: the
    opening box (:func:`opening_box`); ``mouth_open`` [T]: the world's mouth-opening control.
    """

    conditions: dict[str, torch.Tensor]
    box: torch.Tensor
    mouth_open: torch.Tensor

    @property
    def truth(self) -> torch.Tensor:
        return self.conditions["image"]

    def __len__(self) -> int:
        return int(self.truth.shape[0])


def identity_seed(video: str | Path) -> int:
    """The synthetic identity of a video folder (``identity_seed`` in ``transforms_train.json``)."""
    from persona.data import formats

    path = Path(video) / "transforms_train.json"
    if not path.is_file():
        raise PersonaFileError(f"{path}: not found; expected a synthetic video folder (python -m persona data build)")
    meta = formats.read_json(path)
    if "identity_seed" not in meta:
        raise PersonaInputError(f"{path}: field 'identity_seed' missing; expected a video of the synthetic benchmark "
                                "(the following score re-renders the ground truth with the world's identity)")
    return int(meta["identity_seed"])


def opening_box(seed: int, cameras: torch.Tensor, margin: float = OPENING_BOX_MARGIN) -> torch.Tensor:
    """The box [B,4] around identity ``seed``'s mouth opened fully (control 1.2), nothing else
    moving, at each camera [B,25]: it depends on the camera only, never on the frame's expression."""
    from persona.data import world as S

    cameras = torch.as_tensor(cameras, dtype=torch.float32).reshape(-1, 25)
    expression = torch.zeros(len(cameras), S.EXPRESSION_DIM)
    expression[:, S.JAW_OPEN] = FULL_OPEN
    return S.mouth_boxes([S.sample_identity(seed)] * len(cameras), expression, cameras, margin=margin)


def mouth_open_control(expressions: torch.Tensor) -> torch.Tensor:
    """The world's ground-truth mouth opening [T] (control ``mouth_open``) of expressions [T,76]."""
    from persona.data.world.expression import _C, expression_controls

    return expression_controls(torch.as_tensor(expressions, dtype=torch.float32))[:, _C["mouth_open"]]


def world_render(seed: int, expressions: torch.Tensor, cameras: torch.Tensor, resolution: int,
                 desc: str = "world render") -> torch.Tensor:
    """Identity ``seed`` rendered by the synthetic world with expressions [T,76] at cameras [T,25],
    through the same 8-bit images the benchmark writes -> [T,3,R,R] in [-1,1]."""
    from persona.data import world as S

    images, _ = S.render_frames(S.sample_identity(int(seed)), np.asarray(expressions, np.float32),
                                np.asarray(cameras, np.float32), int(resolution), 32, desc)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def frontal_clip(video: str | Path, split: str = "test", yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> FrontalClip:
    """The ``split`` of a synthetic video, re-rendered by the world at one fixed camera (see
    :class:`FrontalClip`). For the audio videos (already frontal) this reproduces their frames."""
    from persona import cameras as cams
    from persona.data.dataset import FrameDataset

    ds = FrameDataset(video, split)
    seed = identity_seed(video)
    expressions = ds.expressions.float()
    camera = torch.as_tensor(cams.camera_label(yaw_deg, pitch_deg), dtype=torch.float32)
    camera = camera[None].repeat(len(ds), 1)
    truth = world_render(seed, expressions, camera, int(ds.resolution), "frontal clip")
    conditions = {"expression": expressions, "audio": ds.audio.float(), "index": torch.as_tensor(ds.indices),
                  "camera": camera, "image": truth}
    return FrontalClip(conditions, opening_box(seed, camera[:1])[0], mouth_open_control(expressions))


def expression_following(method: Any, clip: FrontalClip, audio_track_dataset: Any | None = None) -> dict[str, float]:
    """Following scores of a method on a whole clip (:func:`persona.evaluate.expression_following`):
    ``following`` (correlation with the ground truth's image opening), ``following_control`` (with
    the world's control), ``validity`` (the ground truth's image opening against the control: how
    well the image measure reads the world), ``opening_std_ratio`` (< 1 = muted mouth)."""
    from persona.evaluate import expression_following as follow

    if audio_track_dataset is not None:
        method.attach_audio(audio_track_dataset)
    scores = follow(method, clip=clip)
    return {k: scores[k] for k in ("following", "following_control", "validity", "opening_std_ratio")}


# --------------------------------------------------------------------------------------------
# the basis
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def basis_pixel_change(explorer: Any, camera: torch.Tensor, box: torch.Tensor, n_vectors: int = 6, strength: float = 2.0,
                       threshold: float = 8 / 255) -> pd.DataFrame:
    """Per top basis direction (largest coefficient spread first): renders at mean ± strength·σ
    and how much they differ. ``explorer``: a :class:`persona.explore.BasisExplorer`; camera [25];
    box [4]: the mouth region. Columns: ``vector``, ``std`` (σ of its coefficient), ``w_shift``
    (norm of the W+ move from -σ·strength to +σ·strength), ``changed_frac`` / ``mouth_changed_frac``
    (share of pixels, whole image / box, whose largest channel change exceeds ``threshold`` in
    [0,1] units), ``max_change`` (largest, in 0-255 units), ``mouth_opening_change`` (the
    :func:`mouth_opening` difference, + minus -)."""
    rows = []
    for i in explorer.order[:n_vectors]:
        images = {}
        for t in (-strength, strength):
            images[t] = explorer.render(_with(explorer.mean, i, explorer.mean[i] + t * explorer.std[i]), camera)[None]
        lo, hi = images[-strength], images[strength]
        diff = ((hi - lo).abs() / 2).amax(1, keepdim=True)  # [1,1,H,W] in [0,1] units
        changed = (diff > threshold).double()
        mask = metrics.box_mask(box, 1, diff.shape[-2], diff.shape[-1])
        model = explorer.method.model
        shift = model.basis(_with(explorer.mean, i, explorer.mean[i] + strength * explorer.std[i])[None]) - \
            model.basis(_with(explorer.mean, i, explorer.mean[i] - strength * explorer.std[i])[None])
        rows.append({"vector": int(i), "std": float(explorer.std[i]), "w_shift": float(shift.norm()),
                     "changed_frac": float(changed.mean()), "mouth_changed_frac": float((changed * mask).sum() / mask.sum().clamp_min(1)),
                     "max_change": float(diff.max() * 255),
                     "mouth_opening_change": float(mouth_opening(hi, box)[0] - mouth_opening(lo, box)[0])})
    return pd.DataFrame(rows)


def basis_change_report(explorer: Any, train_ds: Any, tables_dir: Path, figures_dir: Path, label: str = "Ours 3DMM",
                        n_vectors: int = 6, strength: float = 2.0, update_readme: bool = False) -> pd.DataFrame:
    """How far the top basis directions of a trained run move the face (issue #20), at a frontal
    camera: :func:`basis_pixel_change` with the mouth box of ``train_ds``'s mean training frame
    (any video, real or synthetic), written to ``tables_dir``/basis_change.{csv,md}; the
    directions rendered at -strength·σ, mean, +strength·σ in ``figures_dir``/fig_basis_3dmm.
    ``update_readme``: then rewrite the README's results (the default profile's own run, as the
    tables do; notebook 05 runs after them)."""
    from persona import cameras, figures, report
    from persona.runs import atomic_write, atomic_write_bytes

    camera = torch.as_tensor(cameras.camera_label(0.0, 0.0), dtype=torch.float32)
    box = torch.as_tensor(train_ds.mouth_boxes, dtype=torch.float32).reshape(-1, 4).mean(0)
    change = basis_pixel_change(explorer, camera, box, n_vectors=n_vectors, strength=strength)
    shown = pd.DataFrame({"direction": [f"b{v}" for v in change["vector"]], "coefficient σ": change["std"].round(3),
                          "‖Δw‖": change["w_shift"].round(2), "pixels changed (%)": (100 * change["changed_frac"]).round(1),
                          "mouth-box pixels changed (%)": (100 * change["mouth_changed_frac"]).round(1),
                          "largest change (/255)": change["max_change"].round(0).astype(int),
                          "mouth opening change": change["mouth_opening_change"].round(3)})
    name = Path(tables_dir) / report.BASIS_CHANGE_NAME  # atomic_write makes the folder
    atomic_write(name.with_suffix(".csv"), lambda tmp: change.to_csv(tmp, index=False))
    md = [f"**{label}: the top basis directions at ±{strength:g}σ** (frontal camera; largest coefficient spread "
          "over the training frames first)", "", shown.to_markdown(index=False), "",
          f"<sub>Each direction rendered at its coefficient's mean ± {strength:g}σ (the others at their means); a pixel "
          "counts as changed when its largest channel moves by more than 8/255 between the two renders; the mouth box is "
          "the training frames' mean box; mouth opening: the dark-pixel measure of the following score (+ minus −).</sub>"]
    atomic_write_bytes(name.with_suffix(".md"), ("\n".join(md) + "\n").encode())
    figures.basis_directions_figure({label: explorer}, camera, Path(figures_dir) / "fig_basis_3dmm", n_vectors=n_vectors,
                                    strength=strength, title=f"{label}: top basis directions at ±{strength:g}σ")
    if update_readme:
        report.update_readme()
    return change


def _with(alpha: torch.Tensor, i: int, value: torch.Tensor | float) -> torch.Tensor:
    """A copy of ``alpha`` [k] with entry ``i`` set to ``value``."""
    out = alpha.clone()
    out[i] = value
    return out


# --------------------------------------------------------------------------------------------
# scores against training steps
# --------------------------------------------------------------------------------------------


def checkpoint_method(run_dir: str | Path, step: int) -> Any:
    """Our method restored from checkpoint ``step`` of a run directory."""
    from persona.runs import RunDir
    from persona.ours.method import build_method
    from persona.ours.train import _load_checkpoint

    run = RunDir(run_dir)
    config = run.read_config()["config"]
    method = build_method(config)
    path = run.checkpoint_path(step)
    if not path.is_file():
        found = sorted(p.name for p in run.checkpoints.glob("*.safetensors"))
        raise PersonaFileError(f"{path}: checkpoint of step {step} not found; the run holds {found}")
    method.model = method._build()
    _load_checkpoint(path, method.model, None)
    method.model.eval()
    return method


def score_method(method: Any, test_ds: Any, clip: FrontalClip, max_frames: int | None = 25) -> dict[str, float]:
    """Mouth PSNR and full PSNR on ``max_frames`` test frames (as the tables) + the following scores."""
    from persona.evaluate import evaluate_method

    frame = evaluate_method(method, test_ds, None, max_frames=max_frames, progress=False)
    return {"psnr": float(frame["psnr"].mean()), "psnr_mouth": float(frame["psnr_mouth"].mean()),
            **expression_following(method, clip, test_ds)}


def training_curve(run_dir: str | Path, test_ds: Any, clip: FrontalClip, steps: Sequence[int],
                   max_frames: int | None = 25, gains: Callable[[Any], dict[str, float]] | None = None) -> pd.DataFrame:
    """Scores (:func:`score_method`) of a run's checkpoints at ``steps``: one row per step; with
    ``gains`` (a checkpoint's method -> {split: mouth gain}, :func:`split_gains`) also a
    ``gain_<split>`` column per split."""
    rows = []
    for step in steps:
        method = checkpoint_method(run_dir, int(step))
        extra = {} if gains is None else {f"gain_{k}": v for k, v in gains(method).items()}
        rows.append({"step": int(step), **score_method(method, test_ds, clip, max_frames), **extra})
    return pd.DataFrame(rows)


def gains_figure(curve: pd.DataFrame, path: Path, title: str | None = None) -> list[Path]:
    """Mouth PSNR over the static floor against training steps, one line per ``gain_<split>``
    column of ``curve`` (training frames, withheld stretches, the test clip): where the lines part
    is where ours starts learning its training frames rather than the expression-to-mouth map
    (docs/REENACTMENT.md, twelfth round). PNG + PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona.report import save_figure

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for column in [c for c in curve.columns if c.startswith("gain_")]:
        ax.plot(curve["step"], curve[column], marker="o", label=column[len("gain_"):].replace("_", " "))
    ax.axhline(4.0, color="grey", ls=":", label="target +4 dB")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlabel("training step"), ax.set_ylabel("mouth PSNR over the static floor (dB)"), ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def curve_figure(curve: pd.DataFrame, floor_mouth: float | None, path: Path, title: str | None = None) -> list[Path]:
    """Two panels against training steps: mouth PSNR (with the static floor and floor + 4 dB)
    and the following score (with the 0.8 target). ``curve`` may hold a ``label`` column (one
    line per label); ``floor_mouth`` None: each row's own ``floor_mouth`` column (several
    identities), and the left panel shows mouth PSNR over that floor, with each label's
    ``gain_train`` (``diagnose --train-gain``: the same on its training frames) dashed where present.
    PNG + PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona.report import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    groups = curve.groupby("label", sort=False) if "label" in curve.columns else [("ours", curve)]
    base = 0.0 if floor_mouth is None else float(floor_mouth)
    for label, part in groups:
        mouth = part["psnr_mouth"] - part["floor_mouth"] if floor_mouth is None else part["psnr_mouth"]
        line, = a.plot(part["step"], mouth, marker="o", label=str(label))
        if floor_mouth is None and "gain_train" in part.columns and part["gain_train"].notna().all():
            a.plot(part["step"], part["gain_train"], marker="s", ls="--", color=line.get_color(), label=f"{label}, training frames")
        b.plot(part["step"], part["following"], marker="o", label=str(label))
    a.axhline(base, color="grey", ls="--", label="static floor")
    a.axhline(base + 4, color="grey", ls=":", label="floor + 4 dB")
    b.axhline(0.8, color="grey", ls=":", label="target 0.8")
    b.axhline(0.0, color="black", lw=0.5)
    a.set_xlabel("training step"), a.legend(fontsize=7)
    a.set_ylabel("mouth PSNR (dB)" if floor_mouth is not None else "mouth PSNR over the static floor (dB)")
    b.set_xlabel("training step"), b.set_ylabel("expression following (corr.)"), b.legend(fontsize=7)
    b.set_ylim(-0.3, 1.0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, Path(path))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """``python -m persona diagnose --data VIDEO [--data VIDEO ...] --modality 3dmm --out DIR [--profile default] [--every 100]``."""
    from persona.ours.model import MODALITIES
    from persona.runs import atomic_write

    from persona import cli
    from persona.errors import flag_int

    p = cli.parser("diagnose", "train ours once and score its checkpoints: mouth PSNR vs the static floor and "
                   "expression following against training steps")
    p.add_argument("--data", required=True, action="append",
                   help="a synthetic video folder (e.g. data/synthetic/default/id00/mono); repeat it for several identities "
                        "(each in OUT/<identity>-<video>/, one figure of all in OUT/curve.png)")
    p.add_argument("--modality", default="3dmm", choices=MODALITIES, help="driving signal of ours")
    p.add_argument("--profile", default="default", choices=("smoke", "default", "paper"), help="sizes and steps")
    p.add_argument("--out", required=True, help="output folder (the run lives in OUT/run and resumes there)")
    p.add_argument("--every", type=flag_int(1), default=100, help="score a checkpoint every this many steps")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a TrainConfig field, e.g. --set basis_lr=0.003 --set mouth_weight=0 (repeatable)")
    p.add_argument("--test-frames", type=flag_int(1), default=25, help="test frames for the PSNR columns (as the tables)")
    p.add_argument("--hold-out", default=None, metavar="START:STOP[,...]",
                   help="withhold these training positions (e.g. 200:250,400:450) and score them: memorised stretches vs new speech")
    cli.add_runtime(p, device_help="torch device of the run (None: the profile's); --set device=... alike")
    p.add_argument("--oracles", action="store_true",
                   help="train nothing: score each video's retrieval oracles (mouth_oracles: audio, a ridge from audio to the "
                        "world's mouth controls, the true controls) and write OUT/oracles.csv")
    p.add_argument("--train-gain", action="store_true",
                   help="also score the mouth on 50 evenly spaced training frames at every checkpoint (gain_train, gain_test "
                        "columns and gains.png): under-fitting of the frames trained on vs failing to carry to new ones")
    args = p.parse_args(argv)
    cli.apply_runtime(args)  # --threads 1 beside another run: two processes at torch's default thread count oversubscribe the cores
    hold_out = parse_hold_out(args.hold_out)
    overrides: dict[str, Any] = {} if args.device is None else {"device": args.device}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            raise PersonaInputError(f"--set {item!r}: expected FIELD=JSON, e.g. basis_lr=0.003")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value
    if args.every < 1:
        raise PersonaInputError(f"--every {args.every}: expected a positive number of steps")
    out = Path(args.out)
    videos = [Path(v) for v in args.data]
    for video in videos:
        identity_seed(video)  # every folder checked before the first run trains
    names = [f"{v.parent.name}-{v.name}" for v in videos]
    if len(set(names)) < len(names):
        raise PersonaInputError(f"--data: two folders share the name {sorted(n for n in names if names.count(n) > 1)[0]} "
                                "(identity-video); give each identity once")
    if args.oracles and (args.hold_out or args.train_gain):
        raise PersonaInputError("--oracles trains nothing; --hold-out and --train-gain score a training run: give one or the other")
    if args.oracles:
        table = pd.DataFrame([{"video": name, **mouth_oracles(video)} for video, name in zip(videos, names)])
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "oracles.csv", lambda tmp: table.to_csv(tmp, index=False))
        print("mouth PSNR over the static floor (dB) of retrieval oracles, k = 5 nearest training frames:")
        print(table.round(2).to_string(index=False))
        print(f"wrote {out}/oracles.csv")
        return 0
    curves = []
    for video, name in zip(videos, names):
        curve, floor_mouth = diagnose_video(video, out if len(videos) == 1 else out / name, args.modality, args.profile,
                                            overrides, args.every, args.test_frames, hold_out, args.train_gain)
        curves.append(curve.assign(label=name, floor_mouth=floor_mouth))
    if len(videos) > 1:
        both = pd.concat(curves, ignore_index=True)
        atomic_write(out / "curve.csv", lambda tmp: both.to_csv(tmp, index=False))
        curve_figure(both, None, out / "curve", title=f"ours {args.modality}: {len(videos)} identities")
        print(f"wrote {out}/curve.csv, curve.png (every identity), and each identity's folder")
    return 0


def parse_hold_out(text: str | None) -> list[tuple[int, int]]:
    """``'200:250,400:450'`` -> [(200, 250), (400, 450)]: stretches of training positions [start, stop)."""
    if not text:
        return []
    ranges = []
    for part in text.split(","):
        start, sep, stop = part.strip().partition(":")
        try:
            a, b = int(start), int(stop)
        except ValueError:
            a = b = -1
        if not sep or not 0 <= a < b:
            raise PersonaInputError(f"--hold-out {text!r}: expected START:STOP[,START:STOP...] training positions, "
                                    "0 <= START < STOP, e.g. 200:250,400:450")
        ranges.append((a, b))
    return ranges


def hold_out_video(video: Path, ranges: Sequence[tuple[int, int]], dest: Path) -> Path:
    """A copy of the video folder ``video`` at ``dest`` whose training split lacks the training
    positions in ``ranges`` and whose test split is exactly those frames (images, audio and plates
    linked, not copied): trained on, it tells memorised stretches from new speech (docs/REENACTMENT.md,
    eleventh round). Returns ``dest``."""
    from persona.data import formats

    train = formats.read_json(video / "transforms_train.json")
    frames = train.get("frames")
    if not isinstance(frames, list):
        raise PersonaFileError(f"{video / 'transforms_train.json'}: field 'frames' missing; expected a NerFACE-layout video folder")
    inside = [any(a <= k < b for a, b in ranges) for k in range(len(frames))]
    if not any(inside) or all(inside):
        raise PersonaInputError(f"--hold-out {ranges}: withholds {sum(inside)} of the {len(frames)} training frames of {video}; "
                                "expected some but not all")
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(video.iterdir()):
        if not entry.name.startswith("transforms_") and not (dest / entry.name).exists():
            (dest / entry.name).symlink_to(entry.resolve())
    header = {k: v for k, v in train.items() if k != "frames"}
    keep = [f for f, held in zip(frames, inside) if not held]
    held = [f for f, held in zip(frames, inside) if held]
    from persona.runs import atomic_write_json

    atomic_write_json(dest / "transforms_train.json", {**header, "frames": keep})
    atomic_write_json(dest / "transforms_test.json", {**header, "frames": held})
    return dest


def split_floors(train_ds: Any, splits: dict[str, Any], max_frames: int = 50) -> dict[str, float]:
    """{split name: the static floor's mouth PSNR (the mean frame of ``train_ds``) on ``max_frames``
    evenly spaced frames of that split}: the same for every checkpoint, so computed once."""
    return {name: float(static_floor(train_ds, ds, max_frames)["psnr_mouth"].mean()) for name, ds in splits.items()}


def split_gains(method: Any, splits: dict[str, Any], floors: dict[str, float], max_frames: int = 50) -> dict[str, float]:
    """{split name: mouth PSNR of ``method`` minus ``floors``' (:func:`split_floors`), on the same
    ``max_frames`` evenly spaced frames of that split}."""
    from persona.evaluate import evaluate_method

    return {name: float(evaluate_method(method, ds, None, max_frames=max_frames, progress=False)["psnr_mouth"].mean()) - floors[name]
            for name, ds in splits.items()}


def diagnose_video(video: Path, out: Path, modality: str, profile: str, overrides: dict[str, Any], every: int,
                   test_frames: int, hold_out: Sequence[tuple[int, int]] = (), train_gain: bool = False
                   ) -> tuple[pd.DataFrame, float]:
    """One ``diagnose`` run: train ours on ``video`` into ``out``/run (resuming), score its
    checkpoints every ``every`` steps, measure the basis; writes curve.csv/png, basis.png,
    basis_change.csv and summary.json in ``out``. ``hold_out``: training positions [start, stop) withheld
    (:func:`hold_out_video`, in ``out``/data); the summary's ``mouth_gain`` then holds the final run's mouth
    PSNR over the floor on its training frames, the withheld ones and the test clip. ``train_gain``
    (without ``hold_out``): the same on the training frames and the test clip, at every checkpoint
    (does the mouth under-fit the frames it trains on, or fail to carry to new ones?). Returns
    (curve, the static floor's mouth PSNR)."""
    from dataclasses import asdict

    from persona import explore, figures
    from persona.data.dataset import FrameDataset
    from persona.runs import RunDir, atomic_write, atomic_write_json
    from persona.ours.method import build_method

    method = build_method({"profile": profile, "modality": modality, **overrides})
    steps = sorted(set(list(range(every, method.config.iterations + 1, every)) + [method.config.iterations]))
    method = build_method({"profile": profile, "modality": modality, **overrides,
                           "checkpoint_every": every, "keep_checkpoints": len(steps) + 1})
    original = video
    if hold_out:
        video = hold_out_video(original, hold_out, out / "data" / original.name)
    train, test = FrameDataset(video, "train"), FrameDataset(original, "test")
    clip = frontal_clip(original, "test")
    run = RunDir(out / "run")
    start = time.perf_counter()
    method.fit(train, run)
    seconds = time.perf_counter() - start
    floor = static_floor(train, test, test_frames)
    splits = ({"train": train, "held_out": FrameDataset(video, "test"), "test": test} if hold_out
              else {"train": train, "test": test} if train_gain else None)
    floors = None if splits is None else split_floors(train, splits)
    curve = training_curve(out / "run", test, clip, steps, test_frames,
                           gains=None if splits is None else (lambda m: split_gains(m, splits, floors)))
    atomic_write(out / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    floor_mouth = float(floor["psnr_mouth"].mean())
    curve_figure(curve, floor_mouth, out / "curve", title=f"{video.parent.name}/{video.name}: ours {modality}")
    explorer = explore.BasisExplorer.from_run(method, train)
    camera = clip.conditions["camera"][0]
    change = basis_pixel_change(explorer, camera, clip.box)
    atomic_write(out / "basis_change.csv", lambda tmp: change.to_csv(tmp, index=False))
    figures.basis_directions_figure({modality: explorer}, camera, out / "basis", title="top basis directions at ±2σ")
    summary = {"video": str(original), "modality": modality, "config": asdict(method.config), "train_seconds_wall": seconds,
               "floor_psnr": float(floor["psnr"].mean()), "floor_psnr_mouth": floor_mouth,
               "final": curve.iloc[-1].to_dict(), "basis_change": change.to_dict(orient="records")}
    if splits is not None:
        gains = {k: float(curve.iloc[-1][f"gain_{k}"]) for k in splits}
        summary.update(hold_out=[list(r) for r in hold_out], mouth_gain=gains, mouth_floors=floors)
        gains_figure(curve, out / "gains", title=f"{original.parent.name}/{original.name}: "
                     + (f"withheld {hold_out}" if hold_out else "training frames and test clip"))
        print("mouth PSNR over the static floor: " + ", ".join(f"{k} {v:+.2f} dB" for k, v in gains.items()))
    atomic_write_json(out / "summary.json", summary)
    print(curve.round(3).to_string(index=False))
    print(f"static floor: psnr {summary['floor_psnr']:.2f}  mouth {floor_mouth:.2f}; train {seconds:.0f} s")
    print(change.round(4).to_string(index=False))
    print(f"wrote {out}/curve.csv, curve.png, basis.png, basis_change.csv, summary.json" + (", gains.png" if splits is not None else ""))
    return curve, floor_mouth
