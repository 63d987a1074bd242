"""NerFACE (Gafni et al., CVPR 2021): a dynamic NeRF of the head conditioned on expressions.

What is kept from the official code (gafniguy/4D-Facial-Avatars, ``nerface_code``):
- the radiance field is an MLP on the positionally encoded point (10 frequencies; 4 for the
  view direction) concatenated with the 76-d expression (scaled by 1/3, as the official model
  does) and a learnable per-frame latent code (32-d, initialised at zero, L2 penalty
  ``0.005 * ||z||``); the paper model has 6 trunk layers of 256 with the input fed again at the
  4th, a 256-d feature and a 3 x 128 colour branch, separate coarse and fine networks;
- rigid head pose: rays are cast in the canonical head space - our cameras already express the
  head pose as a camera relative to a canonical head, so the camera *is* the rigid transform;
- 64 coarse + 64 fine samples, density noise std 0.1 in training, Adam lr 5e-4 decaying 10x
  over 250k steps, 2048 rays per step from one frame, 90% of them inside the face box;
- a static background image composited through the last sample (the training set's
  ``background``; learned from the mean training image when the dataset has none).

Test frames (unseen, so without a trained latent) are rendered with the latent code of the
first training frame (lowest frame index); training frames use their own codes.
``render`` looks the frame up by ``conditions['index']``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from persona.baselines.nerf_core import ConditionedNeRF, NeRFBaseline, NeRFConfig, nerf_profiles, per_image
from persona.data.formats import EXPRESSION_DIM
from persona.profiles import config_for



@dataclass
class NerfaceConfig(NeRFConfig):
    """NerFACE's sizes; see the module docstring for the paper values."""

    latent_dim: int = 32
    latent_reg: float = 0.005  # official: 0.0005 * ||z|| weighted by 10
    expression_scale: float = 1.0 / 3.0


PROFILES: dict[str, NerfaceConfig] = nerf_profiles(
    NerfaceConfig,
    paper=dict(iterations=1_000_000, n_fine=64, depth=6, skip=3, inside_box_fraction=0.9, density_noise_std=0.1),
    default=dict(inside_box_fraction=0.9, density_noise_std=0.1),
    smoke=dict(inside_box_fraction=0.9, density_noise_std=0.0),
)


class NerFACE(NeRFBaseline):
    """NerFACE on our data protocol (see module docstring)."""

    name = "nerface"

    def __init__(self, config: NerfaceConfig):
        super().__init__(config)

    def _build(self, num_frames: int, resolution: int) -> nn.Module:
        c = self.config
        cond = EXPRESSION_DIM + c.latent_dim

        def nerf() -> ConditionedNeRF:
            return ConditionedNeRF(cond, c.width, c.depth, c.skip, c.dir_width, c.dir_depth, c.xyz_freqs, c.dir_freqs)

        net = nn.Module()
        net.coarse, net.fine = nerf(), nerf()
        net.latents = nn.Parameter(torch.zeros(num_frames, c.latent_dim))
        return self._attach_common(net, num_frames, resolution)

    def latent_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Frame numbers [B] -> rows of the latent table [B]; unseen frames -> row 0 (the first training frame)."""
        train_index = self.net.train_index
        match = index.long().to(train_index.device).view(-1, 1) == train_index.view(1, -1)  # [B,N]
        rows = match.float().argmax(1)
        return torch.where(match.any(1), rows, torch.zeros_like(rows))

    def _context(self, conditions: dict[str, torch.Tensor], positions: torch.Tensor | None, step: int, training: bool) -> Any:
        expression = torch.as_tensor(conditions["expression"]).float()
        if expression.dim() != 2 or expression.shape[1] != EXPRESSION_DIM:
            raise ValueError(f"nerface: conditions['expression'] [B,{EXPRESSION_DIM}] expected, got {list(expression.shape)}")
        if positions is None:
            index = torch.as_tensor(conditions.get("index", torch.full((expression.shape[0],), -1))).view(-1)
            positions = self.latent_rows(index)
        latent = self.net.latents[positions]
        return {"cond": torch.cat([expression * self.config.expression_scale, latent], dim=1), "latent": latent}

    def _field(self, ctx: Any, level: str, points: torch.Tensor, dirs: torch.Tensor, order: torch.Tensor | None = None):
        rgb, sigma = getattr(self.net, level)(self._normalise(points), dirs, per_image(ctx["cond"]))
        return rgb, sigma, torch.zeros(())

    def _regulariser(self, ctx: Any) -> torch.Tensor:
        return self.config.latent_reg * ctx["latent"].norm(dim=1).mean()


def build_method(cfg: dict | None = None, **kw: Any) -> NerFACE:
    """NerFACE from ``PROFILES[profile]`` with ``cfg``/``kw`` overrides (``profile`` may be either)."""
    return NerFACE(config_for(PROFILES, "default", {**(cfg or {}), **kw}))
