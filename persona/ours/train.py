"""The two-stage trainer of our method (its Method wrapper: :mod:`persona.ours.method`).

Training (paper Sec. 3.2; the official release):
- stage 1 (``frozen_iterations``): encoder + basis + offset, generator frozen;
- stage 2 (until ``iterations``): the generator is fine-tuned too (PTI-style);
- loss ``L2 + lambda_lpips * LPIPS`` (LPIPS only when its AlexNet weights are present; the run's
  config records the loss used; the paper profile refuses to run without them unless
  ``lambda_lpips = 0`` is asked for explicitly) ``+ ortho_weight * ||B^B^^T - I||^2`` in ``ortho='loss'`` mode;
- where the paper's text is silent, the paper profile takes the release's choices: the LIA-style
  RGB encoder at 256 px (``rgb_encoder='release'``), AudioAttNet scoring from the first 32 audio
  features (``audio_att_dims=32``) and the loss at 256 px (``loss_resolution=256``); the CPU
  profiles keep persona's own (see :class:`TrainConfig`);
- one Adam (lr 3e-4, betas (0.9, 0.999)) over every parameter; frozen ones get no gradient and
  so no update and no Adam state.

Reproducible and resumable: the batch of step ``s`` is a function of ``(seed, s)`` only (an
epoch-wise permutation), the torch RNG state is saved with every checkpoint, and a run directory
that holds checkpoints resumes from the newest complete one. On CPU with a fixed seed an
interrupted-and-resumed run ends with the same weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bars: a notebook saves them as text (a closed widget bar reopens as "model not found")

from persona.audio_nets import audio_track, gather_neighbour_windows
from persona.data.dataset import stack_samples
from persona.data.formats import unit_to_uint8
from persona.errors import PersonaInputError
from persona.ours.basis import BASIS_INITS, BASIS_ROWS, OFFSET_INITS, ORTHO_MODES
from persona.ours.camera_correction import CAMERA_TERMS
from persona.ours.encoders import AUDIO_ATT_INITS, AUDIO_INITS, EXPRESSION_INITS, RGB_ENCODERS, RGB_INITS
from persona.ours.model import MODALITIES, PersonalizedPrior
from persona.precision import PRECISIONS, autocast, tf32_flags
from persona.profiles import choices, config_for, torch_device, with_dry_run
from persona.runs import RunDir, isolated_rng, load_tensors, prefixed, restore_training_state, training_state, unprefixed

FRAME_CACHE_BYTES = 2 * 1024**3  # preload a training split into memory when it is smaller than this
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one run of our method (written to the run's config.json).

    Note on ``basis_lr``, ``encoder_lr`` and ``mouth_weight`` (issue #20). The paper and the
    release train every parameter at lr 3e-4 with L2 + LPIPS for 200k iterations; the ``paper``
    profile keeps exactly that (``basis_lr = encoder_lr = None``, ``mouth_weight = 0``). Our CPU
    profiles train 400 iterations (0.2 % of that) without LPIPS (its weights are absent
    offline), and measured there (``python -m persona diagnose``; id00 3DMM) the release's
    settings learn no expression at all: the randomly initialised basis keeps 99.9 % of its
    subspace (its entries are ~N(0,1), Adam moves them ~3e-4 a step), the offset moves 0.7 in
    W+ while a W+ inversion of the identity lies 12.9 from ``w_avg``, and the rendered mouth stays
    still (opening-following correlation 0.0, mouth PSNR +0.9 dB over a static frame). The dataclass defaults are
    therefore a documented deviation for short budgets: the subspace (B and offset) at
    ``basis_lr`` = 0.03 and the encoder at ``encoder_lr`` = 3e-3 (the generator keeps ``lr``),
    and an extra L2 over the dataset's mouth box weighted ``mouth_weight`` (see
    :func:`mouth_l2`: a stand-in for the perceptual loss, which would give the mouth its say;
    whole-image L2 gives its ~3 % of the pixels almost none).

    ``generator_lr`` and ``grad_clip`` (issue #20, second round; off by default). ``generator_lr``
    gives the generator its own lr in stage 2 (None = ``lr``); ``grad_clip`` clips the global
    gradient norm before each Adam step (0 = off) and every logged step records ``grad_norm``
    (before clipping) and ``alpha_rms``. Measured (default data, 400 steps, 25 test frames): Ours
    RGB (k = 50, qr) with the recipe above diverged in stage 2 because a gradient spike
    (0.08 -> 3 -> 84 -> 6e5 between steps 140 and 170 on id00) turns, under Adam's small second
    moment, into steps of up to ~3x lr on every encoder weight, and the coefficients run away
    (rms 0.5 -> 1.5e6); with ``grad_clip`` = 0.2, ``generator_lr`` = 1e-3 and 50 frozen steps it
    trained stably on id00 (L2 never above 0.02) but its coefficients hardly vary. For Ours 3DMM
    the same settings gave +1.5 / +2.6 / +0.4 dB mouth PSNR over the static floor and following
    0.68 / 0.61 / 0.64 (id00/01/02) against +1.3 / +1.5 / +0.8 dB and 0.76 / 0.66 / 0.67 with
    the defaults: no clear gain, so they are not the default, and RGB runs keep the paper's
    optimiser (:data:`RGB_RECIPE`) until a recipe is shown stable on every identity.

    Note on the budget, ``basis_scale`` and ``basis_init`` (issue #20, third round; id00/id01 3DMM,
    ``python -m persona diagnose``, 25 test frames). The muted mouth at 400 steps is a budget
    effect: the rendered mouth opening varies 0.12-0.29x as much as the truth's (train and test
    frames alike: under-fitting, not over-fitting) while a frozen-generator W+ inversion of the
    same test frames reaches mouth PSNR 31.1 dB (static floor 23.3): the prior can express the
    mouths. Trained longer with the same recipe, ours follows: id00 mouth PSNR / following 24.3 /
    0.71 at step 400, 25.7 / 0.87 at 600, 26.0 / 0.95 at 800 (floor 23.0); id01 24.1 / 0.69 ->
    24.5 / 0.74 (floor 22.5). The coefficients' spread grows with it (the top directions' std
    0.15-0.25 at 400, ~1 at 800, moving up to 16 % of the mouth box's pixels by up to 31/255 at
    ±2σ). Levers that did not help at 400 steps (id00, mouth PSNR / following): ``basis_scale`` 4
    and 10 (24.0 / 0.35, 24.9 / 0.69: a W+ inversion moves ~13 per unit of mouth opening, unit
    rows need large coefficients, but the scale only renames them), ``basis_init = 'w_pca'`` (the
    generator's own principal W directions, :func:`persona.ours.basis.w_principal_directions`;
    24.5 / 0.58, with scale 8 24.9 / 0.63) and, at 800 steps on id01, ``mouth_weight`` 3 (24.1 /
    0.85 vs 24.5 / 0.74). They stay options at their neutral defaults (1.0, ``randn``: the
    release's computation exactly); the default profile gives ours the steps instead, through the
    equal training budget of Tables 2, 3 and 5 (``budget_seconds``: 150 calibrated s, ~1290 steps since session 20).
    Ours RGB does not follow at 800 steps either (following -0.1, coefficients almost constant
    with ``grad_clip`` 0.2 and the recipe above): its encoder collapses, a separate problem.

    Note on ``audio_init`` and ``audio_att_init`` (issue #20, audio). Our stand-in audio features
    (:mod:`persona.data.audio`: log mel energies, std 0.24-0.62 around levels 0.4-1.0) are far
    smaller than DeepSpeech's logits, and under PyTorch's default init (AD-NeRF, the release) each
    of AudioNet's layers shrinks their variance ~3x: measured on default id00 audio, the trained
    encoder's coefficients varied over the test clip by 1e-4 (3DMM's encoder: ~0.3), the rendered
    mouth not at all (following -0.07), although a ridge regression from the same 16x29 windows
    predicts the world's mouth opening at r = 0.90 on test frames. ``audio_init = 'he'``
    (:func:`persona.ours.encoders.he_init_` on AudioNet) makes the coefficients follow the audio
    (following 0.54 / 0.71 / 0.63 on id00/01/02, from -0.07 / 0.55 / 0.05); ``audio_att_init =
    'centre'`` starts AudioAttNet on the frame's own window (:func:`persona.ours.encoders.centre_attention_`),
    so switching smoothing on does not blur what stage 1 learned (same final scores on id00 as the
    default init). The ``paper`` profile keeps ``torch`` for both; ``--set audio_init=torch --set
    audio_att_init=torch`` restores them.

    Note on the audio path and ``rgb_init`` (issue #20, fourth round; default data, the equal
    budget's schedule: 831 steps, 208 frozen, smoothing after 623; ``python -m persona diagnose``).
    Audio: the signal is there and test audio is from the training distribution (a ridge regression
    from the 16x29 windows predicts the world's mouth opening at r = 0.90 / 0.84 / 0.87 on test
    frames of id00/01/02's audio videos; feature mean / std 0.59 / 0.43 train, 0.60 / 0.43 test),
    and ours does not over-fit it (id01: following 0.52 on training frames, 0.66 on test). What
    limits Ours Audio: (1) the coefficients carry the mouth less well than the raw windows (linear
    probe alpha -> opening r = 0.71 on id01's test frames); the encoder alone, trained straight on
    the opening (batch 2, 800 steps), reaches test r 0.90 / 0.51 / 0.87 at ``encoder_lr`` 3e-3 and
    0.89 / 0.81 / 0.89 at 1e-3 (medians of 3 seeds), and in the pipeline on id01 ``encoder_lr`` 1e-3
    gave mouth PSNR +0.3 dB over the static floor and following 0.72, against -0.3 dB and 0.67 at
    3e-3 (id00 / id02, same schedule: following -0.09 -> 0.57, -0.08 -> 0.80, mouth PSNR over the
    floor -1.19 -> -0.51, +0.71 -> +0.14 dB): the audio modality's default since session 7
    (:data:`AUDIO_ENCODER_LR`; Table 3 retrained with it);
    (2) the mouth is muted (its opening varies 0.2x the truth's): under L2 a predictor that is
    unsure of the mouth renders the mean; (3) the +4 dB target is beyond the audio's information on
    this benchmark: averaging the 20 training frames nearest in audio (the window's 4 central
    feature frames; :func:`persona.diagnostics.retrieval_ceiling`, no generator) scores +1.1 / +1.7 / +1.0 dB over the floor, the 5 frames of nearest true
    mouth opening +4.1 / +3.4 / +2.3 dB; and ours' whole-image PSNR on the frontal audio videos stays
    below the mean frame's (id01: 28.9 against 32.9), the tiny prior's fidelity at this budget.
    ``rgb_init = 'he'`` (:class:`persona.ours.encoders.RGBEncoder`) starts persona's RGB encoder
    seeing the frames (at PyTorch's default init its coefficients vary over frames by 0.1 % of their
    size); trained (id00, this recipe + ``grad_clip`` 0.2), its coefficients still do not follow the
    mouth: 99 % of their variance over training frames is explained linearly by the camera pose,
    4-5 % by the mouth opening (steps 416 and 725); on the frontal test clip they vary by 4e-4 (the
    mouth is in that variation, probe r 0.76-0.94, at a scale that moves nothing: following -0.15,
    opening amplitude 0.02x at step 725 of 725, as with PyTorch's init). The encoder spends itself on
    the head pose, which the camera already gives the generator. An option, off by default.

    Note on ``ema_decay`` (issue #20, seventh round; :class:`WeightAverage`). At batch 2 one run's
    mouth score swings by 1-2 dB between checkpoints and by up to 2.8 dB between optimiser seeds; the
    run's weights can instead be an exponential moving average of the trained ones (as StyleGAN's
    and EG3D's G_ema; the paper and the release keep the last weights: 0, the ``paper`` profile's;
    0.99 on ``default`` and ``smoke`` for the 3DMM and audio modalities since session 14; RGB runs
    keep 0 unless given, as their optimiser, because it was not measured there). Its decay
    warms up as ``(1 + n) / (10 + n)``, which stays below 0.99 for the first ~900 updates: at the
    default profile's budget (875 steps then, ~1000 since session 16) the average covers roughly the last tenth of the run
    whatever the decay (0.99 and 0.995 trained identical runs). Measured at Table 2's schedule on 5
    identities x 3 seeds (``docs/REENACTMENT.md``, seventh round): mouth PSNR over the static floor
    +1.86 -> +2.13 dB (paired +0.27 dB, 95 % interval [+0.05, +0.48], 13 of 15 runs higher),
    following unchanged (0.73); 0.65 ms a step (one ``_foreach_lerp_`` over 1.28 M parameters).
    A documented deviation from the paper and the release; ``--set ema_decay=0`` trains as they do
    (and finds the runs cached before it was the default: 0 is left out of the cache key).

    Note on ``basis_init = 'grad_pca'`` (issue #20, ninth round; :func:`init_basis_from_gradients`,
    off by default). ``python -m persona reach`` found the learned subspace holding only 27-43 % of
    the W+ step that opens the mouth, 4-7 dB below a free inversion. Starting B on the principal
    directions of 100 training frames' W+ gradients at the offset (~8 s of one thread, counted in the
    run's training seconds; a ``budget_seconds`` run does not shorten its steps for it) gives a better subspace (seed 0, id00-id04: its best point +0.8 dB, 5 of
    5 higher; 46 % of the step in its span against 34 %) but not a better avatar: at Table 2's
    schedule, paired with the default's runs over 5 identities x 3 seeds, mouth PSNR +0.07 dB [95 %
    bootstrap -0.14, +0.27], following +0.00. The encoder is what falls short: its closed -> open step
    stays 3-8x shorter than the inversion's, and trained alone for 800 more steps (generator and basis
    frozen) it moves ours' open mouth from 18.9 to 21.3 dB towards the subspace's best 24.4 (id01).

    Note on ``mlp_hidden`` / ``mlp_layers`` and the budget (issue #20, tenth round). The CPU profiles' 3DMM and
    audio encoders are 128 x 3 (the paper's 512 x 6 on ``paper``). At this recipe (``encoder_lr`` 3e-3) the
    paper's size diverged in stage 2 on both identities tried (coefficients' rms -> 1e7, PSNR 6 dB) and 512 x 3
    on one of four, no better on the other three. 14 % more steps (998 instead of 875, what session 16's faster
    step buys at the equal budget) moved the mouth PSNR by -0.02 dB [-0.26, +0.18] and the whole-image PSNR by
    +0.13 dB [+0.08, +0.18] over 5 identities x 3 seeds.

    Note on ``expression_lasso`` (issue #20, twelfth round; 1 on ``default`` and ``smoke`` for the 3DMM modality
    since session 19, 0 = off on ``paper`` and for RGB and audio, as the paper and the release). Ours
    memorises stretches of its training clip through the expression's many small, slowly drifting dimensions (a
    time code: 68 slow signals tell every second of a 20-s clip apart); zeroing them raised the following score on
    new speech from 0.74 to 0.89. The group lasso on the encoder's input columns (:func:`shrink_input_columns_`)
    keeps a dimension's weights only while the loss pushes them out faster than lr x S a step: at S = 1, seed 0,
    id00-id04 with two 2-s stretches withheld, the test clip's mouth gain +0.83 dB [+0.30, +1.38], following
    0.74 -> 0.89, the trained frames' gain -0.49 dB; on the full clip, 5 identities x 3 seeds: +0.70 dB
    [+0.52, +0.86], 15 of 15 higher, following 0.73 -> 0.86 (docs/REENACTMENT.md). A documented deviation from the
    paper and the release; ``--set expression_lasso=0`` trains as they do (and finds the runs cached before it was
    the default: 0 is left out of the cache key). Retrained tables (thirteenth round): Table 2's mouth gain +2.36 ->
    +3.32 dB, following 0.81 -> 0.90. ``expression_lasso_taper`` (off) spares long columns (a minimax concave
    penalty): -0.17 dB [-0.55, +0.18] over 5 identities; what is left is the opening's amplitude (0.3-0.7x the
    truth's on 4 of 5 identities, with or without the lasso), not its timing.
    Note on ``generator_lr`` (issue #20, thirteenth round; 1e-3 on ``default`` and ``smoke`` for the 3DMM and audio
    modalities since session 20; None = ``lr`` on ``paper`` and for RGB, as the paper and the release): the generator's
    stage-2 fine-tune at 1e-3 instead of 3e-4 gave Ours 3DMM +0.22 dB [+0.11, +0.36] mouth PSNR and +0.73 dB whole-image
    over 10 paired runs (id00-id04, seeds 0 and 1; 9 of 10 higher), Ours Audio -0.01 dB [-0.10, +0.09] mouth and +0.86 dB
    whole-image over 5 (docs/REENACTMENT.md, thirteenth round). ``--set generator_lr=0.0003`` (the paper's ``lr``) trains as the paper does.
    """

    profile: str = "default"
    modality: str = field(default="rgb", metadata=choices(*MODALITIES))  # rgb | 3dmm | audio
    k: int = 50  # number of basis vectors
    ortho: str = field(default="qr", metadata=choices(*ORTHO_MODES))  # qr (release) | loss (paper text) | none (ablation)
    ortho_weight: float = 1.0  # weight of the penalty in ortho='loss' mode (not given by the paper)
    basis_init: str = field(default="randn", metadata=choices(*BASIS_INITS))  # randn (release) | w_pca (the generator's principal W directions) | grad_pca (the training frames' W+ gradients at the start: init_basis_from_gradients)
    basis_scale: float = 1.0  # length of the effective basis rows (1: unit rows, the release's QR). See the note above.
    basis_rows: str = field(default="unit", metadata=choices(*BASIS_ROWS))  # unit: basis rows at unit length in every ortho mode (equal-scale ablation) | raw: randn rows in loss/none
    offset_init: str = field(default="w_avg", metadata=choices(*OFFSET_INITS))  # w_avg (ours, see PersonalizedBasis) | basis_mean (release)
    iterations: int = 400  # total iterations
    frozen_iterations: int = 100  # stage 1 length (generator frozen)
    lr: float = 3e-4
    basis_lr: float | None = 0.03  # lr of the subspace (basis rows B, offset); None = lr (paper, release). See the note above.
    encoder_lr: float | None = 3e-3  # lr of the encoder (audio: AUDIO_ENCODER_LR); None = lr (paper, release). See the note above.
    generator_lr: float | None = 1e-3  # lr of the generator in stage 2 (3DMM, audio; RGB: None, see train_config); None = lr (paper, release). See the note above.
    grad_clip: float = 0.0  # clip the gradients' global norm to this before each step; 0 = off (paper, release)
    lr_schedule: str = field(default="constant", metadata=choices(*LR_SCHEDULES))  # constant (paper, release) | cosine: every group's lr x lr_factor(step)
    ema_decay: float = 0.99  # > 0: the run's weights are an exponential moving average of the trained ones (WeightAverage; persona's default, not for RGB: see train_config); 0 = off (paper, release)
    camera_correction: bool = False  # learn a per-video correction of the cameras with the avatar (persona.ours.camera_correction; estimated cameras, issue #15); off: the cameras as given (paper, release)
    camera_lr: float = 3e-3  # lr of that correction (Adam: its parameters move up to ~lr a step)
    camera_terms: str = field(default="linear", metadata=choices(*CAMERA_TERMS))  # that correction's map: linear (12 numbers) | quadratic (+ 9: yaw/pitch squares and product)
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 2
    precision: str = field(default="fp32", metadata=choices(*PRECISIONS))  # fp32 (paper, release) | tf32 (TF32 matmuls/convs on NVIDIA GPUs) | bf16 (autocast over forward + loss); persona.precision
    lambda_lpips: float = 5.0  # the paper's text; the release uses 1.0
    mouth_weight: float = 1.0  # weight of an extra L2 over the mouth box; 0 = off (paper, release). See the note above.
    encoder_weight_decay: float = 0.0  # L2 weight decay of the encoder's parameters (Adam's, coupled); 0 = off (paper, release). 1e-4..1e-1 lowered the mouth gain on every split (docs/REENACTMENT.md, eleventh round)
    expression_lasso: float = 1.0  # 3DMM only (0 for RGB and audio: train_config): after each step shrink every expression dimension's input column of the encoder's first layer by lr x this (group lasso, proximal; shrink_input_columns_; persona's default); 0 = off (paper, release)
    expression_lasso_taper: float = 0.0  # > 0: that lasso spares columns as they near this norm (shrink x max(0, 1 - norm / taper): a minimax concave penalty); 0 = the plain group lasso
    expression_standardise: bool = False  # 3DMM only: the encoder's input centred and scaled per dimension by the training frames' mean and std (ExpressionEncoder); off: raw (paper, release). Mouth +0.15 dB [-0.08, +0.32] over 10 paired runs: not adopted (docs/REENACTMENT.md, sixteenth round)
    expression_noise: float = 0.0  # 3DMM only: Gaussian noise added to the training expressions, in units of each dimension's std over the training frames; 0 = off (paper, release)
    audio_smooth_after: int = 300  # iterations before AudioAttNet smoothing starts (audio only)
    audio_att_dims: int | None = None  # features AudioAttNet scores from: None = all 64 (persona) | 32 (the release)
    audio_init: str = field(default="he", metadata=choices(*AUDIO_INITS))  # AudioNet init: he (variance-preserving, persona) | torch (PyTorch's default: AD-NeRF, the release). See the note above.
    audio_att_init: str = field(default="centre", metadata=choices(*AUDIO_ATT_INITS))  # AudioAttNet init: centre (on the frame's own window, persona) | torch (AD-NeRF, the release)
    resolution: int | None = None  # training/render resolution; None = the dataset's
    loss_resolution: int | None = None  # None: loss at the training resolution (persona) | 256: area-pooled to 256 (the release)
    rgb_encoder: str = field(default="persona", metadata=choices(*RGB_ENCODERS))  # persona (prior.RGBEncoder, at `resolution`) | release (LIA EncoderApp at 256 px)
    expression_init: str = field(default="torch", metadata=choices(*EXPRESSION_INITS))  # 3DMM encoder init: torch (PyTorch's default: the release) | he (variance-preserving hidden layers; no gain, docs/REENACTMENT.md round six)
    rgb_init: str = field(default="torch", metadata=choices(*RGB_INITS))  # persona's RGBEncoder trunk init: torch (PyTorch's default) | he (variance-preserving). See the note above.
    rgb_base_channels: int = 16
    rgb_max_channels: int = 128
    rgb_feature_dim: int = 128
    rgb_head_layers: int = 2
    mlp_hidden: int = 128
    mlp_layers: int = 3
    log_every: int = 10
    checkpoint_every: int = 100
    sample_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    generator: str | None = None  # None: the shipped tiny prior; a .pkl (official EG3D) or .safetensors path
    device: str = "cpu"
    num_workers: int = 0  # DataLoader worker processes decoding the training frames (preloaded, or streamed ahead of each step) (paper: 8; 0: in this process)
    # filled in by fit (recorded in config.json, informational):
    generator_source: str = ""
    loss_used: str = ""


TRAIN_PROFILES: dict[str, TrainConfig] = with_dry_run({
    "smoke": TrainConfig(profile="smoke", k=8, iterations=6, frozen_iterations=3, audio_smooth_after=4, rgb_base_channels=8,
                         rgb_max_channels=32, rgb_feature_dim=32, rgb_head_layers=1, mlp_hidden=32, mlp_layers=2,
                         log_every=1, checkpoint_every=3, sample_every=6),
    "default": TrainConfig(profile="default"),
    "paper": TrainConfig(profile="paper", k=50, iterations=200_000, frozen_iterations=50_000, audio_smooth_after=150_000,
                         rgb_base_channels=32, rgb_max_channels=512, rgb_feature_dim=512, rgb_head_layers=4, mlp_hidden=512,
                         mlp_layers=6, log_every=100, checkpoint_every=5000, sample_every=5000, device="cuda", num_workers=8,
                         basis_lr=None, encoder_lr=None, generator_lr=None, grad_clip=0.0, mouth_weight=0.0, ema_decay=0.0,
                         expression_lasso=0.0,  # the paper's optimiser and loss
                         # the release's choices where the paper's text is silent (persona.release_encoder, prior.AudioAttNet)
                         rgb_encoder="release", audio_att_dims=32, loss_resolution=256,
                         audio_init="torch", audio_att_init="torch"),  # AD-NeRF's / the release's init of the audio nets
})


def train_config(profile: str = "default", **overrides: Any) -> TrainConfig:
    """The profile's :class:`TrainConfig` with ``overrides`` (None values ignored); checks values."""
    cfg = config_for(TRAIN_PROFILES, profile, overrides, "TrainConfig")
    if not 0 <= cfg.frozen_iterations <= cfg.iterations:
        raise PersonaInputError(f"TrainConfig: frozen_iterations={cfg.frozen_iterations} must lie in [0, iterations={cfg.iterations}]")
    if not 0 <= cfg.ema_decay < 1:
        raise PersonaInputError(f"TrainConfig: ema_decay={cfg.ema_decay}; expected 0 (off) or a decay in (0, 1)")
    given = {k for k, v in overrides.items() if v is not None}
    if cfg.modality == "rgb":
        if not given & set(RGB_RECIPE):
            cfg = replace(cfg, **RGB_RECIPE)
        cfg = replace(cfg, **{k: v for k, v in RGB_KEEPS.items() if k not in given})
    if cfg.modality != "3dmm" and cfg.expression_lasso > 0:
        if "expression_lasso" in given:
            raise PersonaInputError(f"TrainConfig: expression_lasso={cfg.expression_lasso} applies to modality '3dmm' "
                                    f"(the expression encoder's inputs), got '{cfg.modality}'; expected 0")
        cfg = replace(cfg, expression_lasso=0.0)  # the profile's 3DMM default; RGB and audio have no expression input
    if cfg.modality == "audio" and "encoder_lr" not in given and cfg.encoder_lr is not None:
        cfg = replace(cfg, encoder_lr=AUDIO_ENCODER_LR)  # profiles with the short-budget deviation only (paper: None)
    return cfg


# The RGB modality keeps the paper's optimiser and loss on every profile (unless a field is given):
# with the issue-#20 recipe (basis_lr 0.03, encoder_lr 3e-3, mouth_weight 1) the default-profile run
# of Ours RGB at k = 50 (qr) diverged in stage 2 on id00 and id02 (L2 -> 6.5e4, PSNR 5-6 dB) while
# k = 5/10/20 and the other orthogonality modes trained; until that is understood, RGB runs use this.
RGB_RECIPE = {"basis_lr": None, "encoder_lr": None, "mouth_weight": 0.0}

# Settings measured on 3DMM and audio only, each kept at the paper's / the release's value for RGB unless that
# field is given (one by one, unlike RGB_RECIPE): the last weights (no average) and the generator at ``lr``.
RGB_KEEPS = {"ema_decay": 0.0, "generator_lr": None}

# The audio modality's encoder lr where a profile deviates from the paper's optimiser (default,
# smoke; the paper profile keeps None = lr): at 3e-3 the audio mouth froze on id00 and id02
# (following -0.09 / -0.08, opening amplitude 0.03x the truth's), at 1e-3 it moved on every
# identity (following 0.57 / 0.72 / 0.80 on id00/01/02; the encoder alone, trained on the
# opening, test r 0.89 / 0.81 / 0.89 against 0.90 / 0.51 / 0.87, medians of 3 seeds). See the
# note on the audio path above; ``--set encoder_lr=0.003`` restores the earlier default.
AUDIO_ENCODER_LR = 1e-3


def build_model(cfg: TrainConfig, G: torch.nn.Module) -> PersonalizedPrior:
    resolution = cfg.resolution or int(G.img_resolution)
    return PersonalizedPrior(G, cfg.modality, k=cfg.k, ortho=cfg.ortho, offset_init=cfg.offset_init, resolution=resolution,
                             rgb_base_channels=cfg.rgb_base_channels, rgb_max_channels=cfg.rgb_max_channels,
                             rgb_feature_dim=cfg.rgb_feature_dim, rgb_head_layers=cfg.rgb_head_layers,
                             mlp_hidden=cfg.mlp_hidden, mlp_layers=cfg.mlp_layers, rgb_encoder=cfg.rgb_encoder,
                             audio_att_dims=cfg.audio_att_dims, basis_rows=cfg.basis_rows, audio_init=cfg.audio_init,
                             audio_att_init=cfg.audio_att_init, basis_scale=cfg.basis_scale,
                             basis_init=cfg.basis_init, rgb_init=cfg.rgb_init, camera_correction=cfg.camera_correction,
                             expression_init=cfg.expression_init, camera_terms=cfg.camera_terms,
                             expression_standardise=cfg.expression_standardise)


def loss_images(pred: torch.Tensor, target: torch.Tensor, loss_resolution: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) [B,3,R,R] as the loss sees them: area-pooled to ``loss_resolution`` when
    that is smaller than R (the release: 256), else unchanged (persona)."""
    if loss_resolution and pred.shape[-1] > loss_resolution:
        return F.adaptive_avg_pool2d(pred, loss_resolution), F.adaptive_avg_pool2d(target, loss_resolution)
    return pred, target


def set_stage(model: PersonalizedPrior, stage: int) -> None:
    """Stage 1: generator frozen (no gradients); stage 2: generator trainable."""
    model.generator.requires_grad_(stage == 2)


def train_mode(model: PersonalizedPrior) -> None:
    """Encoder and basis in training mode; the generator always in eval mode (its stages only
    switch gradients on or off, never its forward behaviour)."""
    model.train()
    model.generator.eval()


def stage_of(step: int, cfg: TrainConfig) -> int:
    """Stage of 1-based iteration ``step``."""
    return 1 if step <= cfg.frozen_iterations else 2


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

CONDITION_KEYS = ("image", "camera", "expression", "audio", "index", "mouth_box")


def batch_indices(seed: int, step: int, num_frames: int, batch_size: int) -> torch.Tensor:
    """The dataset positions of iteration ``step`` (1-based): a function of (seed, step) only.

    Positions run through a fresh random permutation of the frames every epoch, so every frame
    is seen once per epoch and a resumed run draws exactly the batches it would have drawn.
    """
    out = []
    for j in range(batch_size):
        flat = (step - 1) * batch_size + j
        epoch, pos = divmod(flat, num_frames)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        out.append(int(torch.randperm(num_frames, generator=gen)[pos]))
    return torch.tensor(out, dtype=torch.long)


class FrameSource:
    """Random access to a dataset's frames as batch dicts; preloads small datasets into memory."""

    def __init__(self, dataset: Any, preload: bool | None = None, num_workers: int = 0):
        self.dataset = dataset
        self.num_workers = num_workers
        self.cache: dict[str, torch.Tensor] | None = None
        first = dataset[0]
        size = len(dataset) * sum(torch.as_tensor(first[k]).numel() * 4 for k in CONDITION_KEYS if k in first)
        if preload if preload is not None else size < FRAME_CACHE_BYTES:
            self.cache = stack_samples(dataset, CONDITION_KEYS, desc="loading frames", optional=True, num_workers=num_workers)

    def stream(self, batches: Iterable[torch.Tensor]) -> Iterator[dict[str, torch.Tensor]] | None:
        """The batches of ``batches`` (positions [B] each, read lazily), decoded ahead by the
        ``num_workers`` worker processes; None when the frames are preloaded or there are no workers
        (then :meth:`batch` reads each one)."""
        if self.cache is not None or self.num_workers <= 0:
            return None
        from persona.data.dataset import prefetched

        return prefetched(self.dataset, ([int(i) for i in b] for b in batches), CONDITION_KEYS, self.num_workers)

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cache is not None:
            return {k: v[positions] for k, v in self.cache.items()}
        return stack_samples(self.dataset, CONDITION_KEYS, desc="", positions=positions, optional=True)

    def audio_track(self) -> dict[int, torch.Tensor]:
        if self.cache is not None and "audio" in self.cache:
            return {int(i): a.float() for i, a in zip(self.cache["index"].tolist(), self.cache["audio"])}
        return audio_track(self.dataset)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# the trainer
# --------------------------------------------------------------------------------------------


def _psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    from persona.metrics import psnr

    return float(psnr(pred.detach().float().cpu(), target.detach().float().cpu()).mean())


class WeightAverage:
    """An exponential moving average of a model's parameters (``ema_decay``; off in the paper and
    the release). After every optimiser step ``avg <- avg + (1 - d) (param - avg)`` with
    ``d = min(decay, (1 + n) / (10 + n))`` at the n-th update (the short warm-up lets a short run's
    average leave its random start). The averaged weights are the run's model: checkpoints store
    them beside the trained ones (``ema.*``), a rendering load takes them, a resumed run keeps both."""

    PREFIX = "ema"

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = float(decay), 0
        self.names = [name for name, _ in model.named_parameters()]
        self.average = [p.detach().clone() for _, p in model.named_parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_(self.average, list(model.parameters()), weight)  # no_grad: no detached views needed
        self.updates += 1

    def state(self) -> dict[str, torch.Tensor]:
        return {**prefixed(self.PREFIX, dict(zip(self.names, self.average))), f"{self.PREFIX}_updates": torch.tensor(self.updates)}

    @torch.no_grad()
    def restore(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        saved = unprefixed(self.PREFIX, tensors)
        if sorted(saved) != sorted(self.names):
            from persona.errors import PersonaFileError

            raise PersonaFileError(f"{where}: no weight average of this model's parameters to resume (ema_decay was set "
                                   f"after the checkpoint was written?); expected {len(self.names)} ema.* tensors, found {len(saved)}")
        for name, average in zip(self.names, self.average):
            average.copy_(saved[name])
        self.updates = int(tensors[f"{self.PREFIX}_updates"])

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for average, p in zip(self.average, model.parameters()):
            p.copy_(average)


def _save_checkpoint(run: RunDir, step: int, model: PersonalizedPrior, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                     train_seconds: float, average: WeightAverage | None = None) -> None:
    state, meta = training_state(optimizer)
    tensors = {**prefixed("model", {k: v.detach().clone() for k, v in model.state_dict().items()}), **state}
    if average is not None:
        tensors.update({k: v.detach().clone() for k, v in average.state().items()})
    run.save_checkpoint(step, tensors, {**meta, "stage": stage_of(step, cfg), "train_seconds": train_seconds},
                        keep=cfg.keep_checkpoints)


def rendering_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model state a rendering load takes from a checkpoint's tensors: the trained weights with
    the weight average's parameters over them (none when the run kept no average)."""
    return {**unprefixed("model", tensors), **unprefixed(WeightAverage.PREFIX, tensors)}


def _load_checkpoint(path: Path, model: PersonalizedPrior, optimizer: torch.optim.Optimizer | None,
                     average: WeightAverage | None = None) -> dict[str, Any]:
    """Load a checkpoint into ``model``. With ``optimizer`` (resuming training): the trained weights, the
    optimiser's state and ``average``'s. Without (rendering): the weight average when the run kept one
    (``ema_decay`` > 0, :class:`WeightAverage`), else the trained weights."""
    tensors, meta = load_tensors(path)
    model.load_state_dict(unprefixed("model", tensors) if optimizer is not None else rendering_state(tensors))
    if optimizer is not None:
        restore_training_state(tensors, meta, optimizer, str(path))
        if average is not None:
            average.restore(tensors, str(path))
    return meta


def _write_sample(run: RunDir, step: int, model: PersonalizedPrior, frames: dict[str, torch.Tensor], track: Any) -> None:
    """renders/sample_XXXXXXXX.png: ground truth (top row) and render (bottom row). Draws no
    training randomness (its own forked RNG), so samples never change the trained weights."""
    import cv2

    with torch.no_grad(), isolated_rng(next(model.parameters()).device):
        model.eval()
        pred = render_conditions(model, frames, frames["camera"], track)
        train_mode(model)
    rows = [torch.cat(list(x.clamp(-1, 1)), dim=2) for x in (frames["image"].float(), pred)]
    grid = unit_to_uint8(torch.cat(rows, dim=1).permute(1, 2, 0))
    cv2.imwrite(str(run.renders / f"sample_{step:08d}.png"), grid[:, :, ::-1])


def render_conditions(model: PersonalizedPrior, conditions: dict[str, torch.Tensor], camera: torch.Tensor,
                      track: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Render a batch with ``model``; audio neighbours come from ``track`` (else from the batch)."""
    return model(with_audio_neighbours(model, conditions, track), camera)["image"].clamp(-1, 1)


def with_audio_neighbours(model: PersonalizedPrior, conditions: dict[str, torch.Tensor],
                          track: dict[int, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A copy of ``conditions`` with ``audio_neighbours`` [B,8,16,29] added when the audio encoder
    smooths and they are missing: from ``track`` (else from the batch), by ``source_index`` or ``index``."""
    conditions = dict(conditions)
    if model.modality == "audio" and bool(model.encoder.smoothing) and "audio_neighbours" not in conditions:
        index = conditions.get("source_index", conditions.get("index"))
        conditions["audio_neighbours"] = gather_neighbour_windows(torch.as_tensor(index), torch.as_tensor(conditions["audio"]).float(), track)
    return conditions


def training_expressions(source: FrameSource) -> torch.Tensor:
    """The training frames' expressions [N,76]."""
    expressions = source.cache["expression"] if source.cache is not None else source.batch(torch.arange(len(source)))["expression"]
    return expressions.float()


def expression_spread(source: FrameSource) -> torch.Tensor:
    """Each expression dimension's standard deviation over the training frames [76]."""
    return training_expressions(source).std(0)


def shrink_input_columns_(linear: torch.nn.Linear, amount: float, taper: float = 0.0) -> torch.Tensor:
    """Group lasso's proximal step on ``linear``'s input columns, in place: each column (the weights
    one input dimension feeds the layer, [out]) shrinks by ``amount`` in L2 norm, to zero when it is
    shorter. After every Adam step at ``amount`` = lr x strength, an input dimension keeps weights only
    while the loss' gradient pushes them out faster than that; a dimension that only helps the encoder
    tell training frames apart (a time code: the world's 68 small, slowly varying expression dimensions,
    docs/REENACTMENT.md twelfth round) pays for every column it uses. Returns the columns' norms
    after the step [in]. ``taper`` > 0: a column of norm n shrinks by ``amount`` x max(0, 1 - n / taper)
    instead, none at all from ``taper`` on (the group minimax concave penalty's proximal step, to first
    order): the dimensions the loss keeps long are not pulled back towards zero, which the plain lasso
    does to every kept column."""
    with torch.no_grad():
        norms = torch.linalg.vector_norm(linear.weight, dim=0)
        if taper > 0:
            amount = amount * (1.0 - norms / taper).clamp_min(0.0)
        scale = (1.0 - amount / norms.clamp_min(1e-12)).clamp_min(0.0)
        linear.weight.mul_(scale)
        return norms * scale


def noisy_expressions(expression: torch.Tensor, spread: torch.Tensor, scale: float, seed: int, step: int) -> torch.Tensor:
    """``expression`` [B,76] plus Gaussian noise of std ``scale`` x ``spread`` [76] per dimension,
    drawn from a generator of its own keyed by (seed, step): the same noise when a run resumes, and
    none of the training's other random numbers move."""
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) * 7_919 + 17)
    noise = torch.randn(expression.shape, generator=generator) * (scale * spread)
    return expression + noise.to(expression.device, expression.dtype)


def parameter_groups(model: PersonalizedPrior, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam's parameter groups: every parameter at ``cfg.lr`` (paper, release), except the
    subspace (basis rows B and offset) at ``cfg.basis_lr``, the encoder at ``cfg.encoder_lr``,
    the generator at ``cfg.generator_lr`` when those are set, and the camera correction (when on)
    at ``cfg.camera_lr``. Parameters keep
    ``model.parameters()``' order within a group; empty groups are left out."""
    decay = float(cfg.encoder_weight_decay)
    encoder_lr = cfg.encoder_lr if cfg.encoder_lr is not None or decay <= 0 else cfg.lr  # its own group when it decays
    special = {"basis": (list(model.basis.parameters()), cfg.basis_lr), "encoder": (list(model.encoder.parameters()), encoder_lr),
               "generator": (list(model.generator.parameters()), cfg.generator_lr)}
    if model.camera_correction is not None:
        special["camera"] = (list(model.camera_correction.parameters()), cfg.camera_lr)
    taken = {id(p) for params, lr in special.values() if lr is not None for p in params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in taken]}]
    groups += [{"params": params, "lr": float(lr), **({"weight_decay": decay} if name == "encoder" and decay > 0 else {})}
               for name, (params, lr) in special.items() if lr is not None]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The multiplier of every parameter group's lr at 1-based iteration ``step``: 1 for
    ``lr_schedule = 'constant'`` (the paper, the release); for ``'cosine'`` half a cosine from 1
    at step 1 to 0 after the last step (a short budget's parameters settle instead of ending on
    a full-size Adam step)."""
    if cfg.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - 1) / max(cfg.iterations, 1)))


def clip_gradients(model: PersonalizedPrior, max_norm: float) -> float:
    """The global L2 norm of the parameters' gradients before clipping; when ``max_norm`` > 0 the
    gradients are scaled so that their global norm is at most that (``clip_grad_norm_``)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params])))


def mouth_l2(pred: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels inside each frame's mouth box (x0,y0,x1,y1 in [0,1]).

    pred, target [B,3,H,W]; boxes [B,4]. A stand-in, on the mouth, for the perceptual loss that
    the paper weights 5x and that cannot be computed offline (LPIPS' AlexNet weights absent):
    whole-image L2 gives the mouth, a few percent of the pixels, almost no say. Scalar."""
    from persona.metrics import box_mask

    b, _, h, w = pred.shape
    mask = box_mask(boxes.detach().cpu(), b, h, w).to(pred.device, pred.dtype)
    return ((pred - target) ** 2 * mask).sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor,
                        mouth_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ours' reconstruction loss on images as the loss sees them (:func:`loss_images`): (L2 +
    ``mouth_weight`` x :func:`mouth_l2`, the L2, the mouth term (0 when ``mouth_weight`` is 0)), scalars.
    pred, target [B,3,H,W]; boxes [B,4]. LPIPS and the orthogonality penalty are the trainer's to add."""
    l2 = F.mse_loss(pred, target)
    if mouth_weight <= 0:
        return l2, l2, torch.zeros(())
    mouth = mouth_l2(pred, target, boxes)
    return l2 + mouth_weight * mouth, l2, mouth


def init_basis_from_gradients(model: PersonalizedPrior, source: FrameSource, cfg: TrainConfig, device: torch.device,
                              batch_size: int = 8) -> None:
    """``basis_init = 'grad_pca'``: B's rows become the principal directions of the W+ gradients of
    the training loss (image L2 + ``mouth_weight`` x mouth L2, at the loss resolution) of up to 2k
    evenly spaced training frames, each taken at the start's latent (the offset, alpha = 0) through
    the frozen generator (:func:`persona.ours.basis.gradient_principal_directions`). Deterministic
    (no RNG drawn); one forward and backward pass per frame."""
    from persona.ours.basis import gradient_principal_directions

    count = min(len(source), 2 * cfg.k)
    positions = torch.linspace(0, len(source) - 1, count).round().long().unique()
    start = model.basis.offset.detach().view(1, model.basis.num_ws, model.basis.w_dim)
    gradients = []
    for chunk in positions.split(batch_size):
        batch = to_device(source.batch(chunk), device)
        ws = start.expand(len(chunk), -1, -1).clone().requires_grad_(True)
        pred, target = loss_images(model.synthesize(ws, batch["camera"]), batch["image"].float(), cfg.loss_resolution)
        loss = sum(reconstruction_loss(pred[i:i + 1], target[i:i + 1], batch["mouth_box"][i:i + 1], cfg.mouth_weight)[0]
                   for i in range(len(chunk)))  # a sum over frames: each frame's own gradient
        (grad,) = torch.autograd.grad(loss, ws)
        gradients.append(grad.reshape(len(chunk), -1).cpu())
    model.basis.set_directions(gradient_principal_directions(torch.cat(gradients), cfg.k))


def fit_prior(model: PersonalizedPrior, train: Any, run: RunDir, cfg: TrainConfig, stop_after: int | None = None) -> PersonalizedPrior:
    """Train ``model`` on the frames of ``train`` (a FrameDataset), resuming from ``run``'s checkpoints.

    ``stop_after``: return after that many iterations (counted from step 0) without finishing
    the run, leaving the checkpoints as a killed run would (used to test resume).
    """
    if cfg.modality == "audio" and not getattr(train, "has_audio", True):
        from persona.errors import PersonaInputError

        raise PersonaInputError(f"{getattr(train, 'root', 'the training data')}: audio-driven training needs audio "
                                f"(aud.npy or aud.wav in the folder); found neither")
    device = torch_device(cfg.device)
    model.to(device)
    source = FrameSource(train, num_workers=cfg.num_workers)
    track = source.audio_track() if cfg.modality == "audio" else None
    lpips_model = None
    if cfg.lambda_lpips > 0:
        from persona.metrics import lpips_loss_model

        lpips_model = lpips_loss_model()
        if lpips_model is not None:
            lpips_model.to(device)
        elif cfg.profile == "paper":  # never silently L2-only at the paper's settings
            from persona.metrics import require_lpips

            require_lpips(f"ours (profile paper, lambda_lpips = {cfg.lambda_lpips:g})")
    # fused: one kernel for the whole update (CPU, 1.28 M parameters: 0.9 against 4.8 ms; the same values to float rounding)
    optimizer = torch.optim.Adam(parameter_groups(model, cfg), lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    base_lrs = [group["lr"] for group in optimizer.param_groups]  # before a checkpoint restores scheduled ones

    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    train_seconds = 0.0
    start, path = run.resume_point()
    if path is not None:
        meta = _load_checkpoint(path, model, optimizer, average)
        train_seconds = float(meta.get("train_seconds", 0.0))
        if start < cfg.iterations:
            print(f"resuming {run.root} from step {start} ({path.name})", file=sys.stderr)
    if path is None and cfg.modality == "3dmm" and cfg.expression_standardise:
        model.encoder.set_input_statistics(training_expressions(source))
    if path is None and cfg.basis_init == "grad_pca":
        t0 = time.perf_counter()
        set_stage(model, 1)
        init_basis_from_gradients(model, source, cfg, device)
        train_seconds += time.perf_counter() - t0
    sample_frames = to_device(source.batch(torch.arange(min(4, len(source)))), device)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, stop_after)

    expression_std = expression_spread(source) if cfg.modality == "3dmm" and cfg.expression_noise > 0 else None
    lasso_layer, lasso_group = None, None  # the expression encoder's first layer and its optimiser group (its lr)
    if cfg.modality == "3dmm" and cfg.expression_lasso > 0:
        lasso_layer = model.encoder.net[0]
        lasso_group = next(g for g in optimizer.param_groups if any(p is lasso_layer.weight for p in g["params"]))
    train_mode(model)
    stream = source.stream(batch_indices(cfg.seed, s, len(source), cfg.batch_size) for s in range(start + 1, end + 1))
    stage = 0  # none yet: the first iteration sets its stage
    bar = tqdm(range(start + 1, end + 1), initial=start, total=cfg.iterations, desc=f"ours/{cfg.modality}", dynamic_ncols=True)
    for step in bar:
        t0 = time.perf_counter()
        previous, stage = stage, stage_of(step, cfg)
        if stage != previous:  # switch the generator's gradients only when the stage changes
            set_stage(model, stage)
        if cfg.modality == "audio" and step > cfg.audio_smooth_after:
            model.encoder.smoothing.fill_(True)
        batch = to_device(next(stream) if stream is not None else source.batch(batch_indices(cfg.seed, step, len(source), cfg.batch_size)), device)
        if cfg.modality == "audio" and bool(model.encoder.smoothing):
            batch["audio_neighbours"] = gather_neighbour_windows(batch["index"], batch["audio"].float(), track).to(device)
        if expression_std is not None:
            batch["expression"] = noisy_expressions(batch["expression"], expression_std, cfg.expression_noise, cfg.seed, step)
        target = batch["image"].float()
        with tf32_flags(cfg.precision):
            with autocast(cfg.precision, device):
                out = model(batch, batch["camera"])
                pred = out["image"]
                pred, target = loss_images(pred, target, cfg.loss_resolution)
                loss, l2, mouth = reconstruction_loss(pred, target, batch["mouth_box"], cfg.mouth_weight)
                lp = torch.zeros(())
                if lpips_model is not None:
                    lp = lpips_model(pred, target).mean()
                    loss = loss + cfg.lambda_lpips * lp
                ortho = model.basis.ortho_penalty() if cfg.ortho == "loss" else torch.zeros(())
                if cfg.ortho == "loss":
                    loss = loss + cfg.ortho_weight * ortho
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        logged = step % cfg.log_every == 0 or step == cfg.iterations
        # the global gradient norm: every step when clipping, else only for the log (Adam leaves the gradients as they are)
        grad_norm = clip_gradients(model, cfg.grad_clip) if cfg.grad_clip > 0 or logged else None
        if cfg.lr_schedule != "constant":
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step, cfg)
        optimizer.step()
        if lasso_layer is not None:
            shrink_input_columns_(lasso_layer, lasso_group["lr"] * cfg.expression_lasso, cfg.expression_lasso_taper)
        if average is not None:
            average.update(model)
        if device.type == "cuda":  # the step clock counts the GPU's work, not only its queueing
            torch.cuda.synchronize(device)
        train_seconds += time.perf_counter() - t0

        if logged:
            psnr_value = _psnr(pred, target)
            loss_value = loss.item()
            extra = {} if model.camera_correction is None else {
                "camera_linear": model.camera_correction.linear.detach().flatten().tolist(),
                "camera_offset": model.camera_correction.offset.detach().tolist(),
                **({"camera_quadratic": model.camera_correction.quadratic.detach().flatten().tolist()}
                   if model.camera_correction.terms == "quadratic" else {})}
            run.log(step, loss=loss_value, l2=l2.item(), lpips=lp.item(), ortho=ortho.item(), mouth_l2=mouth.item(),
                    psnr=psnr_value, stage=stage, train_seconds=train_seconds, grad_norm=grad_norm,
                    alpha_rms=float(out["alpha"].detach().pow(2).mean().sqrt()), **extra)
            bar.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{psnr_value:.2f}", stage=stage)
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            _save_checkpoint(run, step, model, optimizer, cfg, train_seconds, average)
        if step % cfg.sample_every == 0 or step == cfg.iterations:
            _write_sample(run, step, model, sample_frames, track)
    bar.close()
    if average is not None and end == cfg.iterations:
        average.copy_to(model)  # the finished run's model is the average (as a rendering load of its checkpoint)
    if model.camera_correction is not None:
        print(model.camera_correction.describe(), file=sys.stderr)
    model.eval()
    return model


def _describe_loss(cfg: TrainConfig) -> str:
    from persona.metrics import lpips_available, lpips_unavailable_reason

    if cfg.lambda_lpips > 0 and lpips_available():
        return f"L2 + {cfg.lambda_lpips:g} * LPIPS(alex)" + (" + ortho penalty" if cfg.ortho == "loss" else "")
    reason = "lambda_lpips = 0" if cfg.lambda_lpips <= 0 else f"LPIPS unavailable: {lpips_unavailable_reason()}"
    return "L2 only (" + reason + ")" + (" + ortho penalty" if cfg.ortho == "loss" else "")
