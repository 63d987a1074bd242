"""DFRF (Shen et al., ECCV 2022): few-shot audio-driven NeRF conditioned on reference frames.

What is kept from the official code (sstzal/DFRF, ``NeRFs/run_nerf_deform.py`` and
``run_nerf_helpers_deform.py``):
- K = 4 reference frames of the training video with their cameras. A small CNN (two 3x3 convs
  of 64 + a linear layer to 128 channels in the original) encodes each reference image (its
  positionally encoded colours, 5 frequencies, plus the encoded camera position);
- every query point is projected into each reference with that reference's camera; a
  deformation MLP (encoded point ++ audio code ++ the feature at the projection, both detached;
  128 -> 32 -> 2, initialised near zero, output clamped to +-10 px) predicts a 2-D offset per
  reference, penalised by its mean square (``L2loss_weight`` 5e-9);
- features are sampled bilinearly at the offset projections and fused across the references by
  attention; the fused feature and the audio code (AudioNet, AudioAttNet smoothing after
  ``nosmo_iters`` = 100k) condition the NeRF (8 x 256, input again after the 5th layer, separate
  coarse and fine networks sharing the CNN, the deformation and the fusion);
- references are drawn at random from the training frames at each step, and fixed at test time
  (here: K frames evenly spaced over the training video, stored in the checkpoint);
- 64 coarse + 128 fine samples, 850 rays per step, 95% in the face box, Adam lr 5e-4 decaying
  10x over 750k steps (``lrate_decay`` 500 x 1500), 600k steps.

- the base model: pre-trained on other identities' talking clips, then fine-tuned few-shot on the
  target clip (config ``pretrain_steps`` > 0, every profile; ``pretrain_steps = 0`` trains from
  scratch). The corpus is rendered by the synthetic world for identities outside the benchmark,
  and the base is cached as a run directory (:mod:`persona.baselines.dfrf_base`). ``iterations``
  is the fine-tune's budget. Measured (default profile, id00 audio, 300 fine-tune steps, 100 test
  frames): from scratch 33.49 ± 1.36 dB PSNR, Sync-C 2.31; base (300 steps on 4 x 100 frames,
  305 s on a loaded 2-core machine) + fine-tune 34.10 ± 1.74 dB, Sync-C 2.28.

Simplification: the original fuses with slot attention (2 slots of 128, 2 GRU iterations, fed
the feature, its pixel position and the encoded point); here one learned attention query over
the K references on the same inputs, which keeps "features fused across references by
attention" at a fraction of the cost. The torso is omitted as in :mod:`persona.baselines.adnerf`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from persona.baselines.adnerf import AudioConditioned
from persona.baselines.nerf_core import (ConditionedNeRF, NeRFConfig, encoded_dim, nerf_profiles, merge_samples, new_samples,
                                         positional_encoding)
from persona.cameras import PIVOT, RADIUS, centres, project_with_depth
from persona.profiles import config_for
from persona.errors import PersonaInputError
from persona.audio_nets import AUDIO_DIM


@dataclass
class DfrfConfig(NeRFConfig):
    """DFRF's sizes; see the module docstring for the paper values."""

    audio_dim: int = AUDIO_DIM
    smooth_warmup: int = 100_000
    attention_lr_scale: float = 5.0
    num_references: int = 4
    feature_dim: int = 128
    cnn_width: int = 64
    ref_rgb_freqs: int = 5
    ref_camera_freqs: int = 5
    fusion_dim: int = 128
    deform_hidden: tuple[int, int] = (128, 32)
    max_offset_px: float = 10.0
    offset_l2_weight: float = 5e-9
    # DFRF's base model (persona.baselines.dfrf_base): pre-trained for pretrain_steps (0: train from
    # scratch on the clip) on pretrain_identities other identities' talking clips of pretrain_frames
    # frames each, cached under base_dir (None: runs/dfrf-base of this checkout), then fine-tuned
    # on the clip for ``iterations`` steps
    pretrain_steps: int = 0
    pretrain_identities: int = 4
    pretrain_frames: int = 100
    base_dir: str | None = None


PROFILES: dict[str, DfrfConfig] = nerf_profiles(
    DfrfConfig,
    paper=dict(iterations=600_000, rays_per_step=850, lr_decay_steps=750_000, smooth_warmup=100_000, render_chunk=4096,
               pretrain_steps=300_000, pretrain_identities=8, pretrain_frames=1500),
    default=dict(iterations=300, rays_per_step=256, smooth_warmup=150, feature_dim=32, cnn_width=32, fusion_dim=32,
                 deform_hidden=(64, 16), pretrain_steps=300, pretrain_identities=4, pretrain_frames=100),
    smoke=dict(smooth_warmup=10, feature_dim=16, cnn_width=16, ref_rgb_freqs=2, ref_camera_freqs=2, fusion_dim=16,
               deform_hidden=(32, 16), pretrain_steps=10, pretrain_identities=2, pretrain_frames=8),
)


class ReferenceEncoder(nn.Module):
    """Reference images [K,3,H,W] in [0,1] + cameras [K,25] -> feature maps [K,F,H,W]."""

    def __init__(self, feature_dim: int, width: int, rgb_freqs: int, camera_freqs: int):
        super().__init__()
        self.rgb_freqs, self.camera_freqs = rgb_freqs, camera_freqs
        in_ch = encoded_dim(3, rgb_freqs) + encoded_dim(3, camera_freqs)
        self.convs = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, feature_dim, 1))

    def forward(self, images: torch.Tensor, cameras: torch.Tensor) -> torch.Tensor:
        k, _, h, w = images.shape
        rgb = positional_encoding(images.permute(0, 2, 3, 1), self.rgb_freqs)  # [K,H,W,C]
        position = (centres(cameras) - torch.tensor(PIVOT, device=cameras.device)) / RADIUS
        pose = positional_encoding(position, self.camera_freqs)[:, None, None, :].expand(k, h, w, -1)
        return self.convs(torch.cat([rgb, pose], -1).permute(0, 3, 1, 2))


class OffsetMLP(nn.Module):
    """DFRF's deformation: (encoded point, audio code, reference feature) -> 2-D offset in pixels."""

    def __init__(self, in_dim: int, hidden: tuple[int, int], max_offset_px: float):
        super().__init__()
        self.max_offset_px = max_offset_px
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
                                 nn.Linear(hidden[1], 2))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 1e-3)
                nn.init.zeros_(m.bias)

    def clamp(self, offsets: torch.Tensor) -> torch.Tensor:
        return offsets.clamp(-self.max_offset_px, self.max_offset_px)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clamp(self.mlp(x))


class ReferenceAttention(nn.Module):
    """Fuse per-reference features [K,P,D_in] into one [P,D] by softmax attention over K."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(in_dim, dim), nn.LeakyReLU(0.2))
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(self.value(x))

    def attend(self, h: torch.Tensor) -> torch.Tensor:
        """Values [K,...,D] -> their softmax-weighted sum over K [...,D]."""
        weights = torch.softmax(self.score(h), dim=0)  # [K,...,1]
        return (weights * h).sum(0)


def project_maps(maps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A linear map of every pixel's features: maps [K,F,H,W], weight [O,F] -> [K,O,H,W]."""
    return F.conv2d(maps, weight[:, :, None, None])


def sample_channels_first(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of maps [K,F,H,W] at uv [K,P,2] in [0,1] (border padding) -> [K,F,P]."""
    grid = (uv * 2 - 1).unsqueeze(1)  # [K,1,P,2], x = u, y = v
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def channels_first_mlp(layers: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """``layers`` (nn.Linear and activations) applied to channels-first features [K,C,P] -> [K,O,P]."""
    for layer in layers:
        h = _left_matmul(layer.weight, h) + layer.bias[:, None] if isinstance(layer, nn.Linear) else layer(h)
    return h


def _left_matmul(weight: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """weight [O,C] @ h [K,C,P] -> [K,O,P] (a batched matmul: torch.matmul would copy h transposed)."""
    return torch.bmm(weight.expand(h.shape[0], -1, -1), h)


def _flat_batch(x: torch.Tensor) -> torch.Tensor:
    """[B,C,N] -> [C,B*N] (image-major, as the points are flattened)."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


class DFRF(AudioConditioned):
    """DFRF on our data protocol (see module docstring)."""

    name = "dfrf"

    def _build(self, num_frames: int, resolution: int) -> nn.Module:
        c = self.config
        k = c.num_references
        xyz_dim = encoded_dim(3, c.xyz_freqs)

        def nerf() -> ConditionedNeRF:
            return ConditionedNeRF(c.audio_dim + c.fusion_dim, c.width, c.depth, c.skip, c.dir_width, c.dir_depth,
                                   c.xyz_freqs, c.dir_freqs)

        net = nn.Module()
        net.coarse, net.fine = nerf(), nerf()
        self._add_audio_nets(net)
        net.encoder = ReferenceEncoder(c.feature_dim, c.cnn_width, c.ref_rgb_freqs, c.ref_camera_freqs)
        net.offsets = OffsetMLP(xyz_dim + c.audio_dim + c.feature_dim, c.deform_hidden, c.max_offset_px)
        net.fusion = ReferenceAttention(c.feature_dim + 2 + xyz_dim, c.fusion_dim)
        net.register_buffer("ref_images", torch.zeros(k, 3, resolution, resolution))
        net.register_buffer("ref_cameras", torch.zeros(k, 25))
        return self._attach_common(net, num_frames, resolution)

    def _init_from_data(self, frames: dict[str, torch.Tensor]) -> None:
        super()._init_from_data(frames)
        n, k = len(frames["image"]), self.config.num_references
        if n < k:
            raise PersonaInputError(f"dfrf: {k} reference frames needed, the training split has {n}")
        self._train_images = frames["image"].add(1).div(2)
        self._train_cameras = frames["camera"]
        fixed = torch.linspace(0, n - 1, k).round().long()
        self.net.ref_images.copy_(self._train_images[fixed])
        self.net.ref_cameras.copy_(self._train_cameras[fixed])
        self._ref_generator = torch.Generator().manual_seed(self.config.seed + 17)
        self._generators["references"] = self._ref_generator
        if self.config.pretrain_steps > 0:  # DFRF as designed: start from the multi-identity base model
            from persona.baselines.dfrf_base import load_base_into, pretrained_base

            state, self.base_path = pretrained_base(self.config, self.resolution)
            load_base_into(self.net, state, str(self.base_path))

    def _pick_references(self, positions: torch.Tensor | None) -> torch.Tensor:
        """Indices of this step's K reference frames among the training frames (random)."""
        return torch.randperm(len(self._train_images), generator=self._ref_generator)[: self.config.num_references]

    def _context(self, conditions: dict[str, torch.Tensor], positions: torch.Tensor | None, step: int, training: bool) -> Any:
        if training:
            pick = self._pick_references(positions).to(self._train_images.device)
            images, cameras = self._train_images[pick], self._train_cameras[pick]
        else:
            images, cameras = self.net.ref_images, self.net.ref_cameras
        maps = self.net.encoder(images, cameras)  # [K,F,H,W]
        # the feature columns of the deformation's and the fusion's first layers, applied to the maps
        # before sampling (bilinear sampling with border padding commutes with a per-pixel linear map):
        # one 1x1 map per reference instead of one matmul per sample and reference
        f = self.config.feature_dim
        return {"audio": self.audio_code(conditions, positions, step), "maps": maps, "cameras": cameras,
                "deform_maps": project_maps(maps.detach(), self.net.offsets.mlp[0].weight[:, -f:]),
                "value_maps": project_maps(maps, self.net.fusion.value[0].weight[:, :f])}

    def reference_features(self, ctx: Any, points: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points [B,N,3] (N points of each of B images), audio codes [B,A] -> (fused features
        [B,N,fusion_dim], offset penalty scalar).

        The deformation MLP takes (encoded point ++ audio ++ feature at the projection) and the fusion
        (feature at the moved projection ++ moved position ++ encoded point); their first layers are
        applied part by part: the encoded point once for all K references, the audio code once per
        image, the features as maps projected in :meth:`_context` - nothing is copied per sample
        and reference."""
        cameras = ctx["cameras"]
        k, res = cameras.shape[0], ctx["maps"].shape[-1]
        b, n = points.shape[:2]
        e, a, f = encoded_dim(3, self.config.xyz_freqs), audio.shape[-1], self.config.feature_dim
        # channels first from here on ([K,C,B*N]): the sampled maps come that way from grid_sample
        pe = positional_encoding(self._normalise(points), self.config.xyz_freqs).transpose(1, 2)  # [B,E,N]
        uv, _ = project_with_depth(points.reshape(1, b * n, 3).expand(k, -1, -1), cameras)  # [K,B*N,2]
        deform = self.net.offsets.mlp
        w = deform[0].weight  # columns: encoded point | audio | feature
        base = torch.matmul(w[:, :e], pe) + (F.linear(audio.detach(), w[:, e:e + a], deform[0].bias)[:, :, None])  # [B,H,N]
        hidden = sample_channels_first(ctx["deform_maps"], uv) + _flat_batch(base)  # [K,H,B*N]
        offsets_px = self.net.offsets.clamp(channels_first_mlp(deform[1:], hidden).transpose(1, 2))  # [K,B*N,2]
        moved = (uv + offsets_px / res).clamp(0.0, 1.0)
        value, activation = self.net.fusion.value
        w = value.weight  # columns: feature | moved position | encoded point
        h = (sample_channels_first(ctx["value_maps"], moved) + _flat_batch(torch.matmul(w[:, f + 2:], pe))
             + _left_matmul(w[:, f:f + 2], (moved * 2 - 1).transpose(1, 2)) + value.bias[:, None])  # [K,D,B*N]
        h = activation(h)
        score = _left_matmul(self.net.fusion.score.weight, h) + self.net.fusion.score.bias[:, None]  # [K,1,B*N]
        fused = (torch.softmax(score, dim=0) * h).sum(0)  # [D,B*N]
        return fused.t().reshape(b, n, -1), offsets_px.pow(2).mean()

    def _field(self, ctx: Any, level: str, points: torch.Tensor, dirs: torch.Tensor, order: torch.Tensor | None = None):
        """The fine level reuses the reference features of the coarse samples (kept in ``ctx``)
        and computes them only for its new samples."""
        shape = points.shape[:-1]  # [B,R,S]
        coarse = ctx.pop("_coarse", None) if order is not None else None
        if coarse is None:
            fused, penalty = self.reference_features(ctx, points.reshape(shape[0], -1, 3), ctx["audio"])
            fused = fused.view(*shape, -1)
            if order is None:
                ctx["_coarse"] = (fused, penalty, fused.shape[-2])
        else:
            at_coarse, coarse_penalty, n_coarse = coarse
            fresh = new_samples(points, order, n_coarse)  # [B,R,S-Sc,3]
            at_new, new_penalty = self.reference_features(ctx, fresh.reshape(shape[0], -1, 3), ctx["audio"])
            fused = merge_samples(at_coarse, at_new.view(*fresh.shape[:-1], -1), order)
            penalty = (coarse_penalty * n_coarse + new_penalty * (shape[-1] - n_coarse)) / shape[-1]  # the mean over all samples
        cond = (ctx["audio"][:, None, None, :], fused)  # audio ++ fused, the audio once per image
        rgb, sigma = getattr(self.net, level)(self._normalise(points), dirs, cond)
        return rgb, sigma, self.config.offset_l2_weight * penalty


def build_method(cfg: dict | None = None, **kw: Any) -> DFRF:
    """DFRF from ``PROFILES[profile]`` with ``cfg``/``kw`` overrides (``profile`` may be either)."""
    return DFRF(config_for(PROFILES, "default", {**(cfg or {}), **kw}))
