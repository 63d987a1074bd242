"""Camera-conditioned dual discriminator in the EG3D way (plain PyTorch, no custom ops).

Input: ``{'image': [B,3,R,R] in [-1,1], 'image_raw': [B,3,r,r] in [-1,1]}`` and the camera label
``[B,25]``. The raw (neural-rendering) image is resized to R with an antialiased bilinear filter
and concatenated with the final image ("dual discrimination", 6 channels), so the discriminator
judges the super-resolved image and its low-resolution source together and punishes a
super-resolution that invents what the volume rendering does not show.

Structure (StyleGAN2's "resnet" discriminator, scaled down by :class:`DiscriminatorConfig`):
``from_rgb 1x1 -> [conv3x3, conv3x3 + 2x downsample, 1x1 skip] per resolution down to 4x4 ->
minibatch-stddev -> conv3x3 -> fc -> fc to cmap_dim``; the camera label goes through a small
mapping network (embed, 2nd-moment normalisation, ``mapping_layers`` FC with lr multiplier 0.01)
into ``cmap`` and the logit is the projection ``<x, cmap> / sqrt(cmap_dim)``.
Layers use equalised learning rate (weights ~ N(0,1), scaled at run time), as in StyleGAN2.
Differences from the official code: downsampling is a 2x2 box filter instead of the [1,3,3,1]
FIR filter, no fp16, no conv clamping.

Losses (:func:`d_logistic_loss`, :func:`g_nonsaturating_loss`, :func:`r1_penalty`) are the
non-saturating logistic GAN loss and the R1 gradient penalty on real images (applied lazily by
the trainer every ``r1_every`` steps, scaled by that interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_LRELU_GAIN = math.sqrt(2.0)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of the dual discriminator; channels at resolution ``res`` = min(base // res, max)."""

    img_resolution: int = 64
    img_channels: int = 3          # per image; the network sees 2 * img_channels (dual)
    c_dim: int = 25
    channel_base: int = 4096
    channel_max: int = 128
    cmap_dim: int | None = None    # None = channels at 4x4
    mapping_layers: int = 2
    mbstd_group_size: int = 4
    c_noise: float = 0.0           # std of noise added to the camera label (x its batch std)

    def channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


DISCRIMINATOR_PRESETS: dict[str, DiscriminatorConfig] = {
    # for the generator preset of the same name
    "tiny": DiscriminatorConfig(img_resolution=64, channel_base=4096, channel_max=128, mapping_layers=2),
    "ffhq512": DiscriminatorConfig(img_resolution=512, channel_base=32768, channel_max=512, mapping_layers=8),
}


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate. ``[B,in] -> [B,out]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, lr_mul: float = 1.0,
                 activation: str | None = None, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        x = F.linear(x, self.weight * self.weight_gain, bias)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * _LRELU_GAIN
        return x


class EqualConv2d(nn.Module):
    """Conv layer with equalised learning rate, optional lrelu and 2x (box) downsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str | None = "lrelu", down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2
        self.activation = activation
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.down:
            x = F.avg_pool2d(x, 2)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * _LRELU_GAIN
        return x


class CameraMapping(nn.Module):
    """Camera label ``[B,c_dim]`` -> conditioning vector ``cmap [B,cmap_dim]``."""

    def __init__(self, c_dim: int, cmap_dim: int, num_layers: int):
        super().__init__()
        self.embed = EqualLinear(c_dim, cmap_dim)
        self.layers = nn.ModuleList(
            EqualLinear(cmap_dim, cmap_dim, lr_mul=0.01, activation="lrelu") for _ in range(num_layers))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = self.embed(c)
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.layers:
            x = layer(x)
        return x


class ResidualDownBlock(nn.Module):
    """``[B,cin,H,W] -> [B,cout,H/2,W/2]``: two 3x3 convs and a 1x1 skip, summed with gain 1/sqrt(2)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int):
        super().__init__()
        self.from_rgb = EqualConv2d(img_channels, tmp_channels, 1) if in_channels == 0 else None
        self.conv0 = EqualConv2d(tmp_channels, tmp_channels, 3)
        self.conv1 = EqualConv2d(tmp_channels, out_channels, 3, down=True)
        self.skip = EqualConv2d(tmp_channels, out_channels, 1, bias=False, activation=None, down=True)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.from_rgb is not None:
            x = self.from_rgb(img)
        y = self.skip(x) * math.sqrt(0.5)
        x = self.conv1(self.conv0(x)) * math.sqrt(0.5)
        return x + y


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one channel: the std of features across groups of the batch. ``[B,C,H,W] -> [B,C+1,H,W]``."""
    b, c, h, w = x.shape
    g = min(group_size, b)
    while b % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=[1, 2, 3])          # [B/g]
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)      # [B,1,H,W]
    return torch.cat([x, y], dim=1)


class DualDiscriminator(nn.Module):
    """EG3D's dual, camera-conditioned discriminator. ``(images dict, camera [B,25]) -> logits [B,1]``."""

    def __init__(self, config: DiscriminatorConfig | str = "tiny"):
        super().__init__()
        if isinstance(config, str):
            if config not in DISCRIMINATOR_PRESETS:
                raise ValueError(f"unknown discriminator preset {config!r}; expected one of {sorted(DISCRIMINATOR_PRESETS)}")
            config = DISCRIMINATOR_PRESETS[config]
        res_log2 = int(round(math.log2(config.img_resolution)))
        if 2 ** res_log2 != config.img_resolution or res_log2 < 3:
            raise ValueError(f"DiscriminatorConfig.img_resolution={config.img_resolution}: expected a power of two >= 8")
        self.config = config
        self.c_dim = config.c_dim
        self.img_resolution = config.img_resolution
        self.block_resolutions = [2 ** i for i in range(res_log2, 2, -1)]
        img_channels = 2 * config.img_channels
        blocks = {}
        for res in self.block_resolutions:
            in_ch = config.channels(res) if res < config.img_resolution else 0
            blocks[f"b{res}"] = ResidualDownBlock(in_ch, config.channels(res), config.channels(res // 2), img_channels)
        self.blocks = nn.ModuleDict(blocks)
        ch4 = config.channels(4)
        cmap_dim = config.cmap_dim or ch4
        self.cmap_dim = cmap_dim
        self.mapping = CameraMapping(config.c_dim, cmap_dim, config.mapping_layers)
        self.epilogue_conv = EqualConv2d(ch4 + 1, ch4, 3)
        self.epilogue_fc = EqualLinear(ch4 * 16, ch4, activation="lrelu")
        self.epilogue_out = EqualLinear(ch4, cmap_dim)

    def dual_input(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{'image' [B,3,R,R], 'image_raw' [B,3,r,r]}`` -> ``[B,6,R,R]`` (raw resized with antialiasing)."""
        image, raw = images["image"], images["image_raw"]
        if image.shape[-1] != self.img_resolution:
            raise ValueError(f"DualDiscriminator: image is {tuple(image.shape)}, expected resolution {self.img_resolution}")
        if raw.shape[-1] != image.shape[-1]:
            raw = F.interpolate(raw, size=image.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        return torch.cat([image, raw], dim=1)

    def forward(self, images: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        img = self.dual_input(images)
        x = None
        for res in self.block_resolutions:
            x = self.blocks[f"b{res}"](x, img)
        c = camera
        if self.config.c_noise > 0 and self.training:
            c = c + torch.randn_like(c) * c.std(dim=0) * self.config.c_noise
        cmap = self.mapping(c)
        x = minibatch_stddev(x, self.config.mbstd_group_size)
        x = self.epilogue_conv(x)
        x = self.epilogue_fc(x.flatten(1))
        x = self.epilogue_out(x)
        return (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)


# ---------------------------------------------------------------------------- losses

def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of D: softplus(-D(real)) + softplus(D(fake)), batch mean."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating loss of G: softplus(-D(G(z))), batch mean."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(discriminator: DualDiscriminator, real: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
    """R1: mean over the batch of |grad_x D(x)|^2 on real images (image and image_raw together).

    Multiply by ``gamma / 2`` (and by the lazy interval) in the trainer.
    """
    image = real["image"].detach().requires_grad_(True)
    raw = real["image_raw"].detach().requires_grad_(True)
    logits = discriminator({"image": image, "image_raw": raw}, camera)
    grad_image, grad_raw = torch.autograd.grad(logits.sum(), [image, raw], create_graph=True)
    return grad_image.square().sum(dim=[1, 2, 3]).mean() + grad_raw.square().sum(dim=[1, 2, 3]).mean()
