"""FOMM baseline (First Order Motion Model, Siarohin et al. NeurIPS 2019): 2-D face reenactment.

Table 2 row "FOMM". A 2-D image animation method: it warps one SOURCE frame of the person so that
it follows the motion of a DRIVING frame, described by K self-supervised keypoints with local
2x2 Jacobians (first-order Taylor expansion of the motion around each keypoint).

Parts, as in the original (``modules/keypoint_detector.py``, ``dense_motion.py``,
``generator.py`` of AliaksandrSiarohin/first-order-model, config ``vox-256.yaml``):

- :class:`KeypointDetector`: anti-aliased downscale, hourglass, a 7x7 conv to K heatmaps,
  softmax with temperature 0.1, soft-argmax -> keypoints [B,K,2] in [-1,1] (x, y); a second
  7x7 conv (initialised to the identity) gives 4 Jacobian maps per keypoint, pooled under the
  heatmap -> Jacobians [B,K,2,2].
- :class:`DenseMotionNetwork`: K local affine warps (plus the identity for the background)
  ``z -> kp_s + J_s J_d^-1 (z - kp_d)``; the source warped by each; with Gaussian heatmap
  differences into an hourglass that predicts K+1 softmax masks (the dense warp is the
  mask-weighted sum of the local warps) and a sigmoid occlusion map.
- :class:`OcclusionAwareGenerator`: encoder (same block + down blocks), features warped by the
  dense motion and multiplied by the occlusion map, residual bottleneck, decoder.
- Losses: multi-scale reconstruction over an image pyramid (scales 1, 1/2, 1/4, 1/8) and the
  equivariance losses of keypoints and Jacobians under a random affine + TPS warp (weights 10).

Deviations from the original, all because of what is available offline on a CPU:
- The original's perceptual loss is VGG-19 features over the pyramid. VGG weights are not
  available here, so the pyramid loss is L1 on the pyramid images themselves (weight 10 per
  scale). No GAN loss (the original's vox config has ``generator_gan: 0`` too).
- No data augmentation (the original flips and colour-jitters VoxCeleb clips).
- The keypoint head pads its 7x7 conv (the original uses ``pad=0``), so tiny heatmaps keep
  their size. Output activation is ``2*sigmoid-1`` so images live in [-1,1] as ours do.

Protocol (ours; the paper does not detail its FOMM setup): trained on pairs of frames (source,
driving) drawn at random from the person's TRAINING video. At test time the SOURCE is the first
training frame (``train_ds[0]``, stored in the checkpoint), the driving frames are the
ground-truth test frames, in the original's relative mode (``animate.normalize_kp`` with
``use_relative_movement`` and ``use_relative_jacobian``): keypoint displacements and Jacobian
changes are taken w.r.t. the "driving video start", the FIRST TEST FRAME (split 'test', sample 0,
read from the run's data root; :meth:`FOMM.set_driving_start` overrides it). FOMM renders only
the driving frame's own view: it does not support novel views.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from persona.errors import PersonaFileError, PersonaInputError
from persona.methods import Method
from persona.profiles import config_for, torch_device, with_dry_run
from persona.runs import RunDir, prefixed, restore_training_state, run_record, training_state, unprefixed

NAME = "fomm"


# ----------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class FOMMConfig:
    """Sizes and training schedule. ``resolution``: the square size FOMM works at (frames are
    resized to it; renders are resized back to the driving frame's size)."""

    profile: str = "default"
    resolution: int = 64
    num_kp: int = 10
    temperature: float = 0.1
    kp_variance: float = 0.01
    # keypoint detector hourglass
    kp_block_expansion: int = 16
    kp_max_features: int = 128
    kp_num_blocks: int = 3
    kp_scale_factor: float = 0.5
    # generator
    gen_block_expansion: int = 16
    gen_max_features: int = 128
    gen_num_down_blocks: int = 2
    gen_num_bottleneck_blocks: int = 2
    # dense motion hourglass
    dm_block_expansion: int = 16
    dm_max_features: int = 128
    dm_num_blocks: int = 3
    dm_scale_factor: float = 0.5
    # training
    iterations: int = 600
    batch_size: int = 8
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_milestones: tuple[float, float] = (0.6, 0.9)  # fractions of iterations; x0.1 at each
    scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125)
    reconstruction_weight: float = 10.0  # per pyramid scale
    equivariance_value_weight: float = 10.0
    equivariance_jacobian_weight: float = 10.0
    sigma_affine: float = 0.05
    sigma_tps: float = 0.005
    points_tps: int = 5
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    device: str = "cpu"
    num_workers: int = 0  # DataLoader worker processes decoding the training frames (paper: 8; 0: in this process)


PROFILES: dict[str, FOMMConfig] = with_dry_run({
    "smoke": FOMMConfig(profile="smoke", resolution=32, num_kp=10, kp_block_expansion=8, kp_max_features=32, kp_num_blocks=2,
                        gen_block_expansion=8, gen_max_features=32, gen_num_bottleneck_blocks=1,
                        dm_block_expansion=8, dm_max_features=32, dm_num_blocks=2,
                        iterations=40, batch_size=4, lr=1e-3, scales=(1.0, 0.5, 0.25), checkpoint_every=20, log_every=5),
    "default": FOMMConfig(profile="default", iterations=400, checkpoint_every=100),
    # vox-256.yaml sizes and loss weights. Iterations are our choice: the original trains 100
    # epochs over VoxCeleb (thousands of identities), not one person's video.
    "paper": FOMMConfig(profile="paper", resolution=256, kp_block_expansion=32, kp_max_features=1024, kp_num_blocks=5,
                        kp_scale_factor=0.25, gen_block_expansion=64, gen_max_features=512,
                        gen_num_bottleneck_blocks=6, dm_block_expansion=64, dm_max_features=1024,
                        dm_num_blocks=5, dm_scale_factor=0.25, iterations=30000, batch_size=40,
                        lr=2e-4, checkpoint_every=1000, log_every=100, device="cuda", num_workers=8),
    # paper-dry: batch 4 of 40 (one step at 256 px costs ~37 s of one CPU core per pair of frames,
    # measured: 40 pairs are ~25 min a step on a CPU; the network and its 256 px are the paper's)
}, batch_size=4)


def make_config(cfg: dict | None = None, profile: str = "default") -> FOMMConfig:
    """``PROFILES[profile]`` with ``cfg`` entries overriding fields (``cfg['profile']`` picks the
    profile; unknown keys are an error)."""
    return config_for(PROFILES, profile, cfg, "FOMM config")


# ----------------------------------------------------------------------------------------------
# geometry helpers


def coordinate_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[H,W,2] (x, y) in [-1,1], corner pixels at exactly -1 and 1 (grid_sample align_corners=True)."""
    x = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    y = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def sample(image: torch.Tensor, grid: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """image [B,C,H,W] sampled at grid [B,h,w,2] (x, y in [-1,1]) -> [B,C,h,w]."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def keypoint_gaussians(kp: torch.Tensor, height: int, width: int, variance: float) -> torch.Tensor:
    """kp [B,K,2] -> Gaussian blobs [B,K,H,W] with the given variance (in [-1,1] units)."""
    grid = coordinate_grid(height, width, kp.device, kp.dtype)  # [H,W,2]
    diff = grid[None, None] - kp[:, :, None, None, :]
    return torch.exp(-0.5 * diff.square().sum(-1) / variance)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (sigma = (1/scale - 1)/2) then nearest resize by ``scale``: [B,C,H,W] -> [B,C,sH,sW]."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.channels = channels
        if self.scale == 1.0:
            self.register_buffer("kernel", torch.ones(1, 1, 1, 1), persistent=False)
            self.pad = (0, 0, 0, 0)
            return
        sigma = (1.0 / scale - 1.0) / 2.0
        size = 2 * round(sigma * 4) + 1
        half = size // 2
        self.pad = (half, half, half, half)
        axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-axis.square() / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = (kernel / kernel.sum()).expand(channels, 1, size, size).clone()
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        x = F.conv2d(F.pad(x, self.pad), self.kernel, groups=self.channels)
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


# ----------------------------------------------------------------------------------------------
# building blocks (conv + BatchNorm + ReLU, as the original)


class SameBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU())


class DownBlock(nn.Sequential):
    """[B,cin,H,W] -> [B,cout,H/2,W/2]."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.AvgPool2d(2))


class UpBlock(nn.Module):
    """[B,cin,H,W] -> [B,cout,2H,2W] (nearest upsample, conv, BN, ReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """Pre-activation residual block, [B,C,H,W] -> [B,C,H,W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Hourglass(nn.Module):
    """U-Net: ``num_blocks`` down blocks, as many up blocks with skip concatenation.

    [B,cin,H,W] -> [B,out_channels,H,W] with ``out_channels = block_expansion + cin``.
    H and W must be divisible by 2**num_blocks.
    """

    def __init__(self, cin: int, block_expansion: int, num_blocks: int, max_features: int):
        super().__init__()
        width = [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down = nn.ModuleList(DownBlock(cin if i == 0 else width[i - 1], width[i]) for i in range(num_blocks))
        up = []
        for i in reversed(range(num_blocks)):
            c_in = width[i] * (1 if i == num_blocks - 1 else 2)
            up.append(UpBlock(c_in, min(max_features, block_expansion * 2**i)))
        self.up = nn.ModuleList(up)
        self.num_blocks = num_blocks
        self.out_channels = block_expansion + cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2**self.num_blocks or w % 2**self.num_blocks:
            raise ValueError(f"Hourglass input {h}x{w}: expected sides divisible by {2**self.num_blocks}")
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.up:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out


# ----------------------------------------------------------------------------------------------
# networks


class KeypointDetector(nn.Module):
    """image [B,3,H,W] in [-1,1] -> {'value': [B,K,2] (x, y) in [-1,1], 'jacobian': [B,K,2,2],
    'heatmap': [B,K,h,w] (softmax, sums to 1)}."""

    def __init__(self, cfg: FOMMConfig):
        super().__init__()
        self.down = AntiAliasDownsample(3, cfg.kp_scale_factor)
        self.hourglass = Hourglass(3, cfg.kp_block_expansion, cfg.kp_num_blocks, cfg.kp_max_features)
        self.heatmap = nn.Conv2d(self.hourglass.out_channels, cfg.num_kp, 7, padding=3)
        self.jacobian = nn.Conv2d(self.hourglass.out_channels, 4 * cfg.num_kp, 7, padding=3)
        nn.init.zeros_(self.jacobian.weight)
        with torch.no_grad():  # every Jacobian starts as the identity
            self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(cfg.num_kp))
        self.temperature = cfg.temperature
        self.num_kp = cfg.num_kp

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.hourglass(self.down(image))
        logits = self.heatmap(features)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        grid = coordinate_grid(h, w, image.device, image.dtype)
        value = (heatmap[..., None] * grid).sum(dim=(2, 3))  # soft-argmax [B,K,2]
        jac_maps = self.jacobian(features).view(b, k, 4, h, w)
        jacobian = (heatmap[:, :, None] * jac_maps).sum(dim=(3, 4)).view(b, k, 2, 2)
        return {"value": value, "jacobian": jacobian, "heatmap": heatmap}


class DenseMotionNetwork(nn.Module):
    """(source [B,3,H,W], kp_driving, kp_source) -> {'deformation': [B,h,w,2] sampling grid into the
    source, 'mask': [B,K+1,h,w], 'occlusion': [B,1,h,w] in (0,1)} at the downscaled size h = H*scale."""

    def __init__(self, cfg: FOMMConfig):
        super().__init__()
        self.num_kp = cfg.num_kp
        self.kp_variance = cfg.kp_variance
        self.down = AntiAliasDownsample(3, cfg.dm_scale_factor)
        self.hourglass = Hourglass((cfg.num_kp + 1) * 4, cfg.dm_block_expansion, cfg.dm_num_blocks, cfg.dm_max_features)
        self.mask = nn.Conv2d(self.hourglass.out_channels, cfg.num_kp + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_channels, 1, 7, padding=3)

    def sparse_motions(self, b: int, h: int, w: int, kp_driving: dict, kp_source: dict) -> torch.Tensor:
        """K+1 warps [B,K+1,h,w,2]: identity (background) then z -> kp_s + J_s J_d^-1 (z - kp_d)."""
        grid = coordinate_grid(h, w, kp_source["value"].device, kp_source["value"].dtype)
        rel = grid[None, None] - kp_driving["value"][:, :, None, None, :]  # [B,K,h,w,2]
        affine = kp_source["jacobian"] @ torch.inverse(kp_driving["jacobian"])  # [B,K,2,2]
        local = torch.einsum("bkij,bkhwj->bkhwi", affine, rel) + kp_source["value"][:, :, None, None, :]
        return torch.cat([grid[None, None].expand(b, 1, h, w, 2), local], dim=1)

    def forward(self, source: torch.Tensor, kp_driving: dict, kp_source: dict) -> dict[str, torch.Tensor]:
        source = self.down(source)
        b, c, h, w = source.shape
        k1 = self.num_kp + 1
        heat = keypoint_gaussians(kp_driving["value"], h, w, self.kp_variance) - \
            keypoint_gaussians(kp_source["value"], h, w, self.kp_variance)
        heat = torch.cat([heat.new_zeros(b, 1, h, w), heat], dim=1)  # [B,K+1,h,w]
        motions = self.sparse_motions(b, h, w, kp_driving, kp_source)  # [B,K+1,h,w,2]
        warped = sample(source.repeat_interleave(k1, dim=0), motions.reshape(b * k1, h, w, 2)).view(b, k1, c, h, w)
        features = self.hourglass(torch.cat([heat[:, :, None], warped], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(features), dim=1)  # [B,K+1,h,w]
        deformation = (mask[..., None] * motions).sum(dim=1)  # [B,h,w,2]
        return {"deformation": deformation, "mask": mask, "occlusion": torch.sigmoid(self.occlusion(features)),
                "sparse_deformed": warped}


class OcclusionAwareGenerator(nn.Module):
    """(source [B,3,H,W] in [-1,1], kp_driving, kp_source) -> {'prediction': [B,3,H,W] in [-1,1], ...}."""

    def __init__(self, cfg: FOMMConfig):
        super().__init__()
        be, mf, nd = cfg.gen_block_expansion, cfg.gen_max_features, cfg.gen_num_down_blocks
        self.dense_motion = DenseMotionNetwork(cfg)
        self.first = SameBlock(3, be, kernel=7)
        self.down = nn.Sequential(*[DownBlock(min(mf, be * 2**i), min(mf, be * 2 ** (i + 1))) for i in range(nd)])
        bottleneck = min(mf, be * 2**nd)
        self.bottleneck = nn.Sequential(*[ResBlock(bottleneck) for _ in range(cfg.gen_num_bottleneck_blocks)])
        self.up = nn.Sequential(*[UpBlock(min(mf, be * 2 ** (nd - i)), min(mf, be * 2 ** (nd - i - 1))) for i in range(nd)])
        self.final = nn.Conv2d(be, 3, 7, padding=3)

    @staticmethod
    def _resize_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(grid.shape[1:3]) == tuple(size):
            return grid
        return F.interpolate(grid.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)

    def forward(self, source: torch.Tensor, kp_driving: dict, kp_source: dict) -> dict[str, torch.Tensor]:
        features = self.down(self.first(source))
        motion = self.dense_motion(source, kp_driving, kp_source)
        size = features.shape[-2:]
        features = sample(features, self._resize_grid(motion["deformation"], size))
        occlusion = motion["occlusion"]
        if occlusion.shape[-2:] != size:
            occlusion = F.interpolate(occlusion, size=size, mode="bilinear", align_corners=False)
        out = self.final(self.up(self.bottleneck(features * occlusion)))
        return {"prediction": 2.0 * torch.sigmoid(out) - 1.0, "occlusion": motion["occlusion"], "mask": motion["mask"],
                "deformed": sample(source, self._resize_grid(motion["deformation"], source.shape[-2:]))}


# ----------------------------------------------------------------------------------------------
# losses


class RandomWarp:
    """Random affine + thin-plate-spline warp of [-1,1] coordinates (the equivariance transform).

    theta = I + N(0, sigma_affine) [B,2,3]; TPS over a points x points control grid with
    N(0, sigma_tps) weights and the kernel r^2 log r (r = L1 distance), as the original.
    """

    def __init__(self, batch: int, cfg: FOMMConfig, generator: torch.Generator | None = None):
        self.theta = torch.eye(2, 3)[None] + cfg.sigma_affine * torch.randn(batch, 2, 3, generator=generator)
        self.control = coordinate_grid(cfg.points_tps, cfg.points_tps).view(1, -1, 2)
        self.params = cfg.sigma_tps * torch.randn(batch, 1, cfg.points_tps**2, generator=generator)
        self.batch = batch

    def warp_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """coords [B,N,2] -> [B,N,2]."""
        theta = self.theta.to(coords)
        out = torch.einsum("bij,bnj->bni", theta[:, :, :2], coords) + theta[:, None, :, 2]
        dist = (coords[:, :, None, :] - self.control.to(coords)[:, None]).abs().sum(-1)  # [B,N,P]
        out = out + (dist.square() * torch.log(dist + 1e-6) * self.params.to(coords)).sum(-1, keepdim=True)
        return out

    def warp_image(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,C,H,W] sampled at the warped grid (reflection padding)."""
        b, _, h, w = image.shape
        grid = coordinate_grid(h, w, image.device, image.dtype).view(1, -1, 2).expand(b, -1, -1)
        return sample(image, self.warp_coordinates(grid).view(b, h, w, 2), padding_mode="reflection")

    def jacobian(self, coords: torch.Tensor) -> torch.Tensor:
        """d warp / d coords at coords [B,N,2] -> [B,N,2,2] (differentiable)."""
        if not coords.requires_grad:
            coords = coords.detach().requires_grad_(True)
        warped = self.warp_coordinates(coords)
        gx = torch.autograd.grad(warped[..., 0].sum(), coords, create_graph=True)[0]
        gy = torch.autograd.grad(warped[..., 1].sum(), coords, create_graph=True)[0]
        return torch.stack([gx, gy], dim=-2)


class ImagePyramid(nn.Module):
    """[B,3,H,W] -> list of anti-aliased downscales, one per scale."""

    def __init__(self, scales: tuple[float, ...]):
        super().__init__()
        self.levels = nn.ModuleList(AntiAliasDownsample(3, s) for s in scales)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [level(x) for level in self.levels]


class FOMMModel(nn.Module):
    """Keypoint detector + generator, and the training losses."""

    def __init__(self, cfg: FOMMConfig):
        super().__init__()
        self.cfg = cfg
        self.kp_detector = KeypointDetector(cfg)
        self.generator = OcclusionAwareGenerator(cfg)
        self.pyramid = ImagePyramid(cfg.scales)

    def losses(self, source: torch.Tensor, driving: torch.Tensor, rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """source, driving [B,3,H,W] in [-1,1] (frames of one video) -> named weighted losses."""
        cfg = self.cfg
        kp_source = self.kp_detector(source)
        kp_driving = self.kp_detector(driving)
        prediction = self.generator(source, kp_driving, kp_source)["prediction"]
        rec = sum(cfg.reconstruction_weight * (p - r).abs().mean()
                  for p, r in zip(self.pyramid(prediction), self.pyramid(driving)))
        warp = RandomWarp(driving.shape[0], cfg, rng)
        kp_warped = self.kp_detector(warp.warp_image(driving))
        eq_value = (kp_driving["value"] - warp.warp_coordinates(kp_warped["value"])).abs().mean()
        jac_warped = warp.jacobian(kp_warped["value"]) @ kp_warped["jacobian"]
        eye = torch.eye(2, device=source.device)
        eq_jac = (eye - torch.inverse(kp_driving["jacobian"]) @ jac_warped).abs().mean()
        return {"reconstruction": rec, "equivariance_value": cfg.equivariance_value_weight * eq_value,
                "equivariance_jacobian": cfg.equivariance_jacobian_weight * eq_jac}

    def animate(self, source: torch.Tensor, driving: torch.Tensor, driving_start: torch.Tensor) -> torch.Tensor:
        """Relative-mode animation (the original's ``normalize_kp`` with relative movement and
        Jacobian, no movement-scale adaptation).

        source [1|B,3,H,W], driving [B,3,H,W], driving_start [1|B,3,H,W] in [-1,1] -> [B,3,H,W].
        """
        b = driving.shape[0]
        source = source.expand(b, -1, -1, -1)
        kp_s = self.kp_detector(source)
        kp_d = self.kp_detector(driving)
        kp_0 = self.kp_detector(driving_start.expand(b, -1, -1, -1))
        kp_norm = {"value": kp_d["value"] - kp_0["value"] + kp_s["value"],
                   "jacobian": kp_d["jacobian"] @ torch.inverse(kp_0["jacobian"]) @ kp_s["jacobian"]}
        return self.generator(source, kp_norm, kp_s)["prediction"]


# ----------------------------------------------------------------------------------------------
# the method


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """[B,3,H,W] -> [B,3,size,size] (area when shrinking, bilinear when growing)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kwargs)


def _stack_frames(dataset: Any, resolution: int, num_workers: int = 0) -> torch.Tensor:
    """All frames of a dataset as [N,3,R,R] in [-1,1] (decoded by ``num_workers`` DataLoader workers)."""
    from persona.data.dataset import stack_samples

    images = stack_samples(dataset, ("image",), desc="", num_workers=num_workers).get("image").to(torch.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise PersonaInputError(f"FOMM: {getattr(dataset, 'root', 'dataset')}: 'image' has shape "
                                f"{tuple(images.shape[1:])}; expected [3,H,W]")
    return torch.cat([_resize(image[None], resolution) for image in images])


class FOMM(Method):
    """First Order Motion Model on our protocol (see module docstring)."""

    name = NAME
    supports_novel_views = False

    def __init__(self, config: FOMMConfig):
        self.config = config
        torch.manual_seed(config.seed)
        self.device = torch_device(config.device)
        self.model = FOMMModel(config).to(self.device)
        self.source: torch.Tensor | None = None  # [1,3,R,R], first training frame
        self.driving_start: torch.Tensor | None = None  # [1,3,R,R], first test frame
        self.data_root: str | None = None
        self.train_seconds: float | None = None
        self._meta: dict[str, Any] = {}
        self._rng = torch.Generator()  # training's pair/warp stream (seeded in fit)

    # -- training ---------------------------------------------------------------------------
    def fit(self, train: Any, run: RunDir) -> None:
        """Train on random (source, driving) pairs of the training video; resumes from ``run``."""
        cfg = self.config
        self.data_root = str(getattr(train, "root", ""))
        run.begin(run_record(NAME, asdict(cfg), train))
        frames = _stack_frames(train, cfg.resolution, cfg.num_workers).to(self.device)
        self.source = frames[:1].clone()
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=cfg.betas)
        self._rng = torch.Generator().manual_seed(cfg.seed * 1_000_003)  # pairs and warps; checkpointed
        start, latest = run.resume_point()
        if latest is not None:
            start = self._restore(latest, optimizer)
        milestones = [int(m * cfg.iterations) for m in cfg.lr_milestones]
        rng = self._rng
        self.model.train()
        seconds = float(self._meta.get("train_seconds", 0.0)) if latest is not None else 0.0
        tic = time.perf_counter()
        bar = tqdm(range(start, cfg.iterations), desc="fomm fit", initial=start, total=cfg.iterations, leave=False)
        for step in bar:
            lr = cfg.lr * 0.1 ** sum(step >= m for m in milestones)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pick = torch.randint(len(frames), (2, cfg.batch_size), generator=rng)
            losses = self.model.losses(frames[pick[0]], frames[pick[1]], rng)
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.iterations:
                elapsed = seconds + time.perf_counter() - tic
                run.log(done, loss=total.item(), lr=lr, seconds=elapsed, **{k: v.item() for k, v in losses.items()})
                bar.set_postfix(loss=f"{total.item():.3f}")
            if done % cfg.checkpoint_every == 0 or done == cfg.iterations:
                self._save(run, done, optimizer, seconds + time.perf_counter() - tic)
        self.train_seconds = seconds + time.perf_counter() - tic
        if start < cfg.iterations:
            run.log(cfg.iterations, train_seconds=self.train_seconds)
        self.model.eval()

    def _save(self, run: RunDir, step: int, optimizer: torch.optim.Optimizer, seconds: float) -> None:
        state, meta = training_state(optimizer, pairs=self._rng)
        tensors = {**prefixed("model", self.model.state_dict()), **state, "source": self.source}
        run.save_checkpoint(step, tensors, {**meta, "train_seconds": seconds})

    def _restore(self, path: Path, optimizer: torch.optim.Optimizer | None = None) -> int:
        from persona.runs import load_tensors

        tensors, meta = load_tensors(path)
        self.model.load_state_dict(unprefixed("model", tensors))
        self.source = tensors["source"].to(self.device)
        if optimizer is not None:
            restore_training_state(tensors, meta, optimizer, str(path), pairs=self._rng)
        self._meta = meta
        return int(meta["step"])

    def load(self, run: RunDir) -> None:
        """Restore the latest checkpoint of ``run`` for rendering."""
        latest = run.latest_checkpoint()
        if latest is None:
            raise PersonaFileError(f"{run.root}: FOMM run has no checkpoint under checkpoints/")
        self._restore(latest[1])
        self.train_seconds = float(self._meta.get("train_seconds", 0.0))
        self.data_root = run.read_config().get("data") or None
        self.model.eval()

    # -- test time ----------------------------------------------------------------------------
    def set_driving_start(self, image: torch.Tensor) -> None:
        """The first frame of the driving video, [3,H,W] or [1,3,H,W] in [-1,1]."""
        image = torch.as_tensor(image, dtype=torch.float32)
        image = image[None] if image.ndim == 3 else image[:1]
        self.driving_start = _resize(image, self.config.resolution).to(self.device)

    def _ensure_driving_start(self, fallback: torch.Tensor) -> None:
        if self.driving_start is not None:
            return
        if self.data_root:
            try:
                from persona.data.dataset import FrameDataset

                self.set_driving_start(FrameDataset(self.data_root, split="test")[0]["image"])
                return
            except (ImportError, FileNotFoundError, OSError, IndexError, ValueError):
                pass
        self.set_driving_start(fallback)  # no test split reachable: the first frame we are driven by

    @torch.no_grad()
    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """Animate the source frame with the driving frames ``conditions['image']`` [B,3,H,W].

        ``camera`` [B,25] must equal ``conditions['camera']``: FOMM is 2-D and cannot render
        another view. Returns [B,3,H,W] in [-1,1] at the driving frames' size.
        """
        if self.source is None:
            raise RuntimeError("FOMM.render: no trained model; call fit() or load(run) first")
        if "image" not in conditions:
            raise KeyError("FOMM.render: conditions has no 'image' (the driving frames [B,3,H,W])")
        if "view" in conditions or "source_index" in conditions:
            raise NotImplementedError("FOMM does not support novel views: got a novel-view sample (keys 'view'/"
                                      "'source_index'); FOMM renders only the driving frame's own camera")
        driving = torch.as_tensor(conditions["image"], dtype=torch.float32)
        if "camera" in conditions and camera is not None:
            own = torch.as_tensor(conditions["camera"], dtype=torch.float32)
            cam = torch.as_tensor(camera, dtype=torch.float32)
            if own.shape != cam.shape or not torch.allclose(own, cam, atol=1e-4):
                raise NotImplementedError("FOMM does not support novel views: it is a 2-D method that only renders "
                                          "the driving frame's own camera (conditions['camera']); got a different "
                                          "target camera")
        self._ensure_driving_start(driving[:1])
        self.model.eval()
        out = self.model.animate(self.source, _resize(driving, self.config.resolution).to(self.device), self.driving_start)
        out = out.to(driving.device)
        h, w = driving.shape[-2:]
        if (h, w) != tuple(out.shape[-2:]):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return out.clamp(-1.0, 1.0)


def build_method(cfg: dict | None = None, profile: str = "default", **kw: Any) -> FOMM:
    """FOMM from a profile and overrides: ``build_method({'profile': 'smoke', 'iterations': 100})``."""
    return FOMM(make_config({**(cfg or {}), **kw}, profile))
