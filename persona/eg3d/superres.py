"""EG3D's "hybrid" super-resolution: StyleGAN2 synthesis blocks (2x up each) conditioned on the last w.

One class for every factor: ``SuperresolutionHybrid(channels=(256, 128), input_resolution=128)`` is
the release's ``SuperresolutionHybrid8XDC`` for 512^2 output (names ``block0``, ``block1``); the
tiny preset uses one block (2x). Inputs whose resolution is not ``input_resolution`` are first
resized (bilinear, antialiased when downsampling), as the release does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .networks import SynthesisBlock


class SuperresolutionHybrid(nn.Module):
    """(rgb [B,3,r,r], features [B,F,r,r], ws [B,num_ws,w_dim]) -> image [B,3,R,R], R = input_resolution * 2**len(channels)."""

    def __init__(self, in_features: int, w_dim: int, input_resolution: int, channels: tuple[int, ...], conv_clamp: float | None = 256,
                 antialias: bool = True, noise_mode: str = "none"):
        super().__init__()
        self.input_resolution, self.antialias, self.noise_mode = input_resolution, antialias, noise_mode
        self.img_resolution = input_resolution * 2 ** len(channels)
        in_ch = in_features
        for idx, out_ch in enumerate(channels):
            setattr(self, f"block{idx}", SynthesisBlock(in_ch, out_ch, w_dim, input_resolution * 2 ** (idx + 1), img_channels=3, conv_clamp=conv_clamp))
            in_ch = out_ch
        self.num_blocks = len(channels)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, fused_modconv: bool | str = "inference_only") -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        if x.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        if x.device.type == "cpu":  # oneDNN convolves channels-last activations fastest
            x, rgb = x.contiguous(memory_format=torch.channels_last), rgb.contiguous(memory_format=torch.channels_last)
        for idx in range(self.num_blocks):
            x, rgb = getattr(self, f"block{idx}")(x, rgb, ws, noise_mode=self.noise_mode, fused_modconv=fused_modconv)
        return rgb.contiguous()
