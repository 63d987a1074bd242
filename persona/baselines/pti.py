"""PTI baseline (Pivotal Tuning Inversion, Roich et al. 2022) with the EG3D generator: Table 1.

The generic-prior inversion baseline: for EACH TEST FRAME, independently,

1. **Latent inversion** (EG3D projector scripts, oneThousand1000/EG3D-projector ``w_projector`` then
   ``w_plus_projector``): on a copy of the generator, start from the mean latent w_avg (mean of
   ``w_avg_samples`` mapped z's, conditioned on the frame's camera), optimise one w shared by all
   layers (W space), then all ``num_ws`` layers separately (W+ space) starting from that result.
   Adam, lr 0.01 with the projector's cosine ramp-down / linear ramp-up, Gaussian noise on w
   decaying over the first 75 % of steps, and the backbone's constant noise maps optimised too with
   the projector's noise regularisation (weight 1e5, maps renormalised every step).
   Loss: the original uses VGG-16 LPIPS-style features (weights not available offline); here
   MSE + LPIPS(AlexNet) when LPIPS is available, else MSE alone (recorded per frame).
2. **Pivotal tuning** (PTI ``SingleIDCoach``, EG3D-projector's hyper-parameters): a fresh COPY of
   the prior generator is fine-tuned with the pivot w fixed: Adam lr 3e-4 on all its parameters,
   loss ``1 * MSE + 1 * LPIPS``, at most 350 steps, stopping early once LPIPS <= 0.06 (the
   EG3D-projector value; the original PTI uses 0.07). Without LPIPS: MSE only, no early stop.
   No locality regulariser (``use_locality_regularization = False`` in EG3D-projector).
3. The tuned generator renders the pivot at the requested camera (the frame's own view or a
   novel view).

The prior is the one our method starts from (``persona.eg3d.load_prior()``), or an official EG3D
pickle / a generator safetensors file named in the config. Results are cached per (frame index,
input camera), in memory (LRU) and in ``RUN/pti_cache/`` (pivot + tuned generator, safetensors),
so the ground-truth view and every novel view of one test frame invert once, across processes.
A novel-view sample is never inverted from its own ``image`` (the novel ground truth): PTI
inverts the test frame it names (``source_index``). LPIPS needs the AlexNet weights; without
them the losses are MSE only and tuning never stops early (recorded per frame as ``lpips_used``).
Seconds per frame (inversion + tuning) go to the run's ``metrics.jsonl``: the paper's point is that
its encoder is feed-forward while PTI optimises per frame.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from persona.eg3d.checkpoint import load_generator
from persona.errors import PersonaInputError
from persona.methods import Method
from persona.profiles import config_for, torch_device, with_dry_run
from persona.runs import RunDir, load_tensors, prefixed, run_record, save_tensors, unprefixed

NAME = "pti"


@dataclass(frozen=True)
class PTIConfig:
    """Where the prior comes from and the step counts of the two optimisations.

    ``generator``: 'prior' (the shipped tiny prior, ``persona.eg3d.load_prior()``), 'random-tiny'
    (a randomly initialised tiny generator, seeded by ``seed``: tests only), a path to an official
    EG3D ``.pkl`` (``persona.eg3d.load_official``) or to a generator ``.safetensors`` file
    (``persona.eg3d.load_prior(path)``).
    """

    profile: str = "default"
    generator: str = "prior"
    w_avg_samples: int = 600  # EG3D-projector calls the projector with 600
    w_steps: int = 450  # PTI's first_inv_steps
    wplus_steps: int = 450  # W+ refinement from the W result (w_plus_projector), same count
    inversion_lr: float = 0.01  # projector's initial_learning_rate
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    optimize_noise: bool = True
    tune_steps: int = 350  # max_pti_steps
    tune_lr: float = 3e-4  # pti_learning_rate
    l2_weight: float = 1.0  # pt_l2_lambda
    lpips_weight: float = 1.0  # pt_lpips_lambda
    lpips_threshold: float = 0.06  # LPIPS_value_threshold (EG3D-projector)
    use_lpips: bool = True  # use LPIPS when its weights are available
    cache_frames: int = 64  # tuned generators kept in memory (LRU)
    disk_cache: bool = True  # also keep each frame's pivot + tuned generator in RUN/pti_cache/
    seed: int = 0
    device: str = "cpu"


PROFILES: dict[str, PTIConfig] = with_dry_run({
    "smoke": PTIConfig(profile="smoke", w_avg_samples=64, w_steps=12, wplus_steps=6, tune_steps=10, cache_frames=8),
    "default": PTIConfig(profile="default", w_avg_samples=256, w_steps=80, wplus_steps=40, tune_steps=80, cache_frames=64),
    # the ffhq512 generator is ~120 MB per tuned copy: no disk cache; evaluate frame by frame
    "paper": PTIConfig(profile="paper", cache_frames=4, disk_cache=False, device="cuda"),
})


def make_config(cfg: dict | None = None, profile: str = "default") -> PTIConfig:
    """``PROFILES[profile]`` with ``cfg`` entries overriding fields (``cfg['profile']`` picks the
    profile; unknown keys are an error)."""
    if cfg and "iterations" in cfg:
        raise PersonaInputError("PTI config: 'iterations' does not apply (PTI does not train on the video); set the "
                                "per-frame step counts 'w_steps', 'wplus_steps' and 'tune_steps' instead")
    return config_for(PROFILES, profile, cfg, "PTI config")


# ----------------------------------------------------------------------------------------------
# the two optimisations


def _synth(G: nn.Module, ws: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """ws [1,num_ws,w_dim], camera [1,25] -> image [1,3,R,R] (backbone noise 'const' when supported)."""
    if _accepts(G.synthesis, "noise_mode"):
        return G.synthesis(ws, camera, noise_mode="const")["image"]
    return G.synthesis(ws, camera)["image"]


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _noise_buffers(G: nn.Module) -> list[torch.Tensor]:
    """The backbone's constant noise maps [H,W] (StyleGAN2 ``noise_const``), if it has any."""
    root = getattr(getattr(G, "backbone", None), "synthesis", G)
    return [buf for name, buf in root.named_buffers() if name.endswith("noise_const")]


def _noise_regularizer(noises: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2 projector's penalty on spatial autocorrelation of noise maps, over a pyramid."""
    total = torch.zeros((), device=noises[0].device if noises else None)
    for buf in noises:
        noise = buf[None, None]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


def _image_loss(pred: torch.Tensor, target: torch.Tensor, lpips_model: nn.Module | None, l2_weight: float,
                lpips_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """-> (weighted loss, mse, lpips or None); images [1,3,R,R] in [-1,1]."""
    mse = F.mse_loss(pred, target)
    if lpips_model is None:
        return l2_weight * mse, mse, None
    lp = lpips_model(pred, target).mean()
    return l2_weight * mse + lpips_weight * lp, mse, lp


def _w_statistics(G: nn.Module, camera: torch.Tensor, samples: int, seed: int = 123) -> tuple[torch.Tensor, float]:
    """Mean latent [1,1,w_dim] and its scalar std from ``samples`` z's mapped with ``camera`` [1,25]."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim)).float().to(camera.device)
    with torch.no_grad():
        w = G.mapping(z, camera.expand(samples, -1))[:, :1, :]  # [N,1,C]
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = float(((w - w_avg).square().sum() / samples) ** 0.5)
    return w_avg, w_std


def _projector_lr(step: int, steps: int, cfg: PTIConfig) -> float:
    t = step / max(steps, 1)
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
    ramp = ramp * min(1.0, t / cfg.lr_rampup_length)
    return cfg.inversion_lr * ramp


def invert_latent(G: nn.Module, target: torch.Tensor, camera: torch.Tensor, cfg: PTIConfig,
                  lpips_model: nn.Module | None = None, progress: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Project ``target`` [1,3,R,R] in [-1,1] seen from ``camera`` [1,25] into W, then W+.

    Works on a deep copy of G (its noise maps are optimised and thrown away, as in the original).
    Returns (ws [1,num_ws,w_dim], stats with 'mse_w_avg', 'mse_w', 'mse_wplus').
    """
    G = copy.deepcopy(G).eval().requires_grad_(False)
    num_ws = G.num_ws
    w_avg, w_std = _w_statistics(G, camera, cfg.w_avg_samples)
    noises = _noise_buffers(G) if cfg.optimize_noise else []
    for buf in noises:
        buf.copy_(torch.randn_like(buf))
        buf.requires_grad_(True)
    stats: dict[str, float] = {}
    with torch.no_grad():
        stats["mse_w_avg"] = float(F.mse_loss(_synth(G, w_avg.repeat(1, num_ws, 1), camera), target))

    def run_stage(w_start: torch.Tensor, steps: int, label: str) -> torch.Tensor:
        w_opt = w_start.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([w_opt] + noises, betas=(0.9, 0.999), lr=cfg.inversion_lr)
        for step in tqdm(range(steps), desc=f"pti {label}", leave=False, disable=not progress):
            t = step / steps
            for group in optimizer.param_groups:
                group["lr"] = _projector_lr(step, steps, cfg)
            w_noise_scale = w_std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2
            w = w_opt + torch.randn_like(w_opt) * w_noise_scale
            ws = w.repeat(1, num_ws // w.shape[1], 1)
            loss, _, _ = _image_loss(_synth(G, ws, camera), target, lpips_model, 1.0, 1.0)
            if noises:
                loss = loss + cfg.regularize_noise_weight * _noise_regularizer(noises)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for buf in noises:
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
        return w_opt.detach()

    w = run_stage(w_avg, cfg.w_steps, "W")
    ws = w.repeat(1, num_ws, 1)
    with torch.no_grad():
        stats["mse_w"] = float(F.mse_loss(_synth(G, ws, camera), target))
    if cfg.wplus_steps > 0:
        ws = run_stage(ws, cfg.wplus_steps, "W+")
    with torch.no_grad():
        stats["mse_wplus"] = float(F.mse_loss(_synth(G, ws, camera), target))
    return ws, stats


def pivotal_tuning(G: nn.Module, ws: torch.Tensor, target: torch.Tensor, camera: torch.Tensor, cfg: PTIConfig,
                   lpips_model: nn.Module | None = None, progress: bool = False) -> tuple[nn.Module, dict[str, float]]:
    """Fine-tune a copy of G so that the pivot ``ws`` [1,num_ws,w_dim] renders ``target`` [1,3,R,R]
    from ``camera`` [1,25]. Returns (tuned generator in eval mode, stats 'tune_steps', 'mse_tuned',
    'lpips_tuned' (None without LPIPS))."""
    tuned = copy.deepcopy(G).train().requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=cfg.tune_lr)
    steps_run = 0
    for _ in tqdm(range(cfg.tune_steps), desc="pti tune", leave=False, disable=not progress):
        loss, _, lp = _image_loss(_synth(tuned, ws, camera), target, lpips_model, cfg.l2_weight, cfg.lpips_weight)
        if lp is not None and float(lp) <= cfg.lpips_threshold:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps_run += 1
    tuned.eval().requires_grad_(False)
    with torch.no_grad():
        pred = _synth(tuned, ws, camera)
        _, mse, lp = _image_loss(pred, target, lpips_model, 1.0, 1.0)
    return tuned, {"tune_steps": steps_run, "mse_tuned": float(mse), "lpips_tuned": float(lp) if lp is not None else None}


# ----------------------------------------------------------------------------------------------
# the method


@dataclass
class FrameInversion:
    """One test frame's PTI result: the pivot [1,num_ws,w_dim], the tuned generator, and stats."""

    ws: torch.Tensor
    generator: nn.Module
    stats: dict[str, float] = field(default_factory=dict)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    if images.shape[-1] > size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def cache_key(index: int | None, camera: torch.Tensor, image: torch.Tensor | None = None) -> tuple:
    """(frame index, input camera rounded to 1e-4) — the identity of one inversion. Without an
    index the image's bytes stand in for it."""
    cam = np.round(torch.as_tensor(camera, dtype=torch.float32).reshape(-1).cpu().numpy().astype(np.float64), 4)
    if index is None:
        if image is None:
            raise ValueError("PTI cache_key: need a frame index or the image")
        ident: Any = "sha1:" + hashlib.sha1(image.detach().float().cpu().numpy().tobytes()).hexdigest()
    else:
        ident = int(index)
    return (ident, tuple(float(v) + 0.0 for v in cam))


class PTI(Method):
    """PTI on our protocol (see module docstring)."""

    name = NAME
    supports_novel_views = True

    def __init__(self, config: PTIConfig, generator: nn.Module | None = None):
        self.config = config
        self.device = torch_device(config.device)
        self._injected = generator is not None
        self._generator = generator.eval() if generator is not None else None
        self._lpips: nn.Module | None = None
        self._lpips_checked = False
        self.cache: OrderedDict[tuple, FrameInversion] = OrderedDict()
        self.inversions_run = 0  # how many (frame, camera) pairs were optimised (cache misses)
        self.frame_log: list[dict[str, Any]] = []
        self.run: RunDir | None = None
        self.data_root: str | None = None
        self._test_frames: Any = None  # the test split, to find the input frame of a novel-view sample
        self._test_positions: dict[int, int] | None = None

    @property
    def generator(self) -> nn.Module:
        if self._generator is None:
            self._generator, _ = load_generator(self.config.generator, seed=self.config.seed, field="PTI config field 'generator'")
        return self._generator.to(self.device)

    @property
    def lpips_model(self) -> nn.Module | None:
        if not self._lpips_checked:
            self._lpips_checked = True
            if self.config.use_lpips:
                from persona.metrics import lpips_loss_model

                self._lpips = lpips_loss_model()
                if self._lpips is not None:
                    self._lpips = self._lpips.to(self.device)
        return self._lpips

    def _generator_record(self) -> dict[str, Any]:
        G = self.generator
        return {"generator": ("injected:" + type(G).__name__) if self._injected else self.config.generator,
                "generator_parameters": sum(p.numel() for p in G.parameters()),
                "img_resolution": int(G.img_resolution), "num_ws": int(G.num_ws), "w_dim": int(G.w_dim),
                "loss": "mse+lpips" if self.lpips_model is not None else "mse (LPIPS weights unavailable)"}

    # -- Method protocol ----------------------------------------------------------------------
    def fit(self, train: Any, run: RunDir) -> None:
        """PTI does not train on the video: records the config and the generator used."""
        run.begin(run_record(NAME, asdict(self.config), train))
        run.log(0, **self._generator_record())
        self.run = run
        self.data_root = str(getattr(train, "root", "")) or None

    def load(self, run: RunDir) -> None:
        """Attach to a run (config read from it by the caller); per-frame timings are logged there."""
        self.data_root = run.read_config().get("data") or None
        self.run = run

    def set_test_frames(self, test: Any) -> None:
        """The test split (a FrameDataset) whose frames novel-view samples refer to by
        ``source_index``; by default the run's data root, split 'test'."""
        self._test_frames = test
        self._test_positions = {int(test[i]["index"]): i for i in range(len(test))}

    def _input_frame(self, source_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The test frame ``source_index`` (frame number): (image [1,3,H,W], camera [1,25])."""
        if self._test_frames is None:
            if not self.data_root:
                raise ValueError("PTI.render: a novel-view sample refers to test frame "
                                 f"{source_index}, but no test split is known; call fit()/load() or set_test_frames()")
            from persona.data.dataset import FrameDataset

            self.set_test_frames(FrameDataset(self.data_root, split="test"))
        if source_index not in self._test_positions:
            raise KeyError(f"PTI.render: novel-view sample refers to frame {source_index}, which is not in the test "
                           f"split of {getattr(self._test_frames, 'root', self.data_root)}")
        sample = self._test_frames[self._test_positions[source_index]]
        image = torch.as_tensor(sample["image"], dtype=torch.float32)[None]
        return image, torch.as_tensor(sample["camera"], dtype=torch.float32).reshape(1, 25)

    def invert(self, image: torch.Tensor, camera: torch.Tensor, index: int | None = None, progress: bool = False) -> FrameInversion:
        """Invert one frame: image [1,3,H,W] in [-1,1] seen from camera [1,25]; cached by (index, camera)."""
        key = cache_key(index, camera, image)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        disk = self._disk_path(key, image)
        if disk is not None and disk.is_file():
            return self._remember(key, self._read_disk(disk))
        G = self.generator
        target = _resize(image.float().to(self.device), int(G.img_resolution))
        camera = camera.float().reshape(1, 25).to(self.device)
        torch.manual_seed(self.config.seed)
        tic = time.perf_counter()
        ws, inv_stats = invert_latent(G, target, camera, self.config, self.lpips_model, progress)
        mid = time.perf_counter()
        tuned, tune_stats = pivotal_tuning(G, ws, target, camera, self.config, self.lpips_model, progress)
        toc = time.perf_counter()
        stats = {**inv_stats, **tune_stats, "inversion_seconds": mid - tic, "tuning_seconds": toc - mid,
                 "seconds": toc - tic}
        result = self._remember(key, FrameInversion(ws, tuned, stats))
        if disk is not None:
            save_tensors(disk, {"ws": ws, **prefixed("G", tuned.state_dict())}, {"key": list(key), "stats": stats})
        self.inversions_run += 1
        row = {"frame": -1 if index is None else int(index), "lpips_used": self.lpips_model is not None, **stats}
        self.frame_log.append(row)
        if self.run is not None:
            self.run.log(self.inversions_run, **row)
        return result

    def _remember(self, key: tuple, result: FrameInversion) -> FrameInversion:
        self.cache[key] = result
        while len(self.cache) > max(1, self.config.cache_frames):
            self.cache.popitem(last=False)
        return result

    def _disk_path(self, key: tuple, image: torch.Tensor) -> Path | None:
        """RUN/pti_cache/frame_<index>_<hash>.safetensors; the hash covers the config (less cache
        settings), the generator, the input camera and the input image's bytes. None when there is
        no run, the disk cache is off, or the generator was injected (no stable identity)."""
        if self.run is None or not self.config.disk_cache or self._injected:
            return None
        settings = {k: v for k, v in asdict(self.config).items() if k not in ("cache_frames", "disk_cache", "device")}
        digest = hashlib.sha1(json.dumps([settings, list(key[1])], sort_keys=True).encode())
        digest.update(image.detach().float().cpu().numpy().tobytes())
        label = key[0] if isinstance(key[0], int) else "noindex"
        return self.run.root / "pti_cache" / f"frame_{label}_{digest.hexdigest()[:16]}.safetensors"

    def _read_disk(self, path: Path) -> FrameInversion:
        tensors, meta = load_tensors(path)
        tuned = copy.deepcopy(self.generator)
        tuned.load_state_dict(unprefixed("G", tensors))
        tuned.eval().requires_grad_(False)
        return FrameInversion(tensors["ws"].to(self.device), tuned, dict(meta.get("stats", {})))

    @torch.no_grad()
    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """Invert each input frame ``conditions['image']`` [B,3,H,W] (seen from
        ``conditions['camera']`` [B,25]; cached by ``conditions['index']``) and render it at
        ``camera`` [B,25]. Returns [B,3,H,W] in [-1,1].

        A NovelViewDataset sample (key ``source_index``) may carry the novel-view ground truth in
        ``image``: PTI never uses ``image`` then; it inverts test frame ``source_index`` (given as
        ``source_image``/``source_camera``, else read from the test split, see
        :meth:`set_test_frames`) and renders that at ``camera``."""
        for key in ("image", "camera"):
            if key not in conditions:
                raise KeyError(f"PTI.render: conditions has no {key!r}; PTI inverts the input frame seen from its camera")
        novel = "source_index" in conditions
        images = torch.as_tensor(conditions["image"], dtype=torch.float32)
        in_cams = torch.as_tensor(conditions["camera"], dtype=torch.float32).reshape(-1, 25)
        out_cams = torch.as_tensor(camera, dtype=torch.float32).reshape(-1, 25)
        indices = conditions["source_index"] if novel else conditions.get("index")
        outputs = []
        for b in range(images.shape[0]):
            index = int(indices[b]) if indices is not None else None
            if novel and "source_image" in conditions:  # the raw sample carries its test frame
                image = torch.as_tensor(conditions["source_image"][b:b + 1], dtype=torch.float32)
                in_cam = torch.as_tensor(conditions["source_camera"][b:b + 1], dtype=torch.float32).reshape(1, 25)
            elif novel:
                image, in_cam = self._input_frame(index)
            else:
                image, in_cam = images[b:b + 1], in_cams[b:b + 1]
            with torch.enable_grad():
                frame = self.invert(image, in_cam, index)
            torch.manual_seed(self.config.seed)  # the renderer jitters ray depths
            pred = _synth(frame.generator, frame.ws, out_cams[b:b + 1].to(self.device)).to(images.device)
            outputs.append(_resize(pred, images.shape[-1]) if pred.shape[-2:] != images.shape[-2:] else pred)
        return torch.cat(outputs).clamp(-1.0, 1.0)

    def seconds_per_frame(self) -> float:
        """Mean optimisation time of the frames inverted so far (NaN if none)."""
        if not self.frame_log:
            return float("nan")
        return float(np.mean([row["seconds"] for row in self.frame_log]))


def build_method(cfg: dict | None = None, profile: str = "default", generator: nn.Module | None = None, **kw: Any) -> PTI:
    """PTI from a profile and overrides; ``generator`` injects a ready generator (tests)."""
    return PTI(make_config({**(cfg or {}), **kw}, profile), generator=generator)
