"""The official release's RGB encoder (bbaaii/HFA-GP ``code/networks/encoder3d.py``: LIA's
``EncoderApp`` and the linear head of its ``Encoder``), written here from its description.

``ReleaseRGBEncoder(k, resolution=256)``: frame [B,3,H,W] in [-1,1] -> alpha [B,k]:

- the frame is resized to ``resolution`` (the release trains at 256 px: its dataset resizes every
  frame to ``--size 256``);
- an equalised-learning-rate 1x1 conv from RGB to ``channels(resolution)`` with a biased,
  sqrt(2)-scaled LeakyReLU(0.2) (StyleGAN2's fused activation);
- one residual block per octave down to 4x4: 3x3 conv + activation, then blur ([1,3,3,1]) and a
  stride-2 3x3 conv + activation; the skip is blur + a stride-2 1x1 conv (no bias, no
  activation); the sum is divided by sqrt(2);
- a 4x4 equalised conv (no bias) to ``feature_dim`` (512);
- the head: four ``feature_dim -> feature_dim`` equalised linear layers and one to ``k``, with
  NO activations between them (the release's ``EqualLinear(activation=None)``).

Channels per resolution: 4..32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16 (LIA's table).
:class:`persona.ours.encoders.RGBEncoder` is persona's own encoder (plain convolutions at the data
resolution, an MLP head with activations); ``TrainConfig.rgb_encoder`` picks one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

RELEASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


class EqualConv2d(nn.Module):
    """Conv with weights ~N(0,1) scaled by 1/sqrt(fan_in) at run time (equalised learning rate)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.scale, self.stride, self.padding = 1 / math.sqrt(cin * kernel * kernel), stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with weights ~N(0,1) scaled by 1/sqrt(fan_in) at run time; no activation."""

    def __init__(self, din: int, dout: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din))
        self.bias = nn.Parameter(torch.zeros(dout))
        self.scale = 1 / math.sqrt(din)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class BiasedLeakyReLU(nn.Module):
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` (StyleGAN2's fused activation) -> same shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, 0.2) * math.sqrt(2)


class Blur(nn.Module):
    """Depthwise [1,3,3,1] x [1,3,3,1] low-pass (sums to 1) after padding ``(before, after)`` on both axes."""

    def __init__(self, pad: tuple[int, int]):
        super().__init__()
        taps = torch.tensor(BLUR_TAPS)
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", kernel / kernel.sum(), persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        x = F.pad(x, [self.pad[0], self.pad[1], self.pad[0], self.pad[1]])
        return F.conv2d(x, self.kernel[None, None].expand(channels, 1, 4, 4), groups=channels)


class DownBlock(nn.Module):
    """[B,cin,r,r] -> [B,cout,r/2,r/2]: (3x3 conv + act, blur + stride-2 3x3 conv + act) + blurred stride-2 1x1 skip, / sqrt(2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Sequential(EqualConv2d(cin, cin, 3, padding=1, bias=False), BiasedLeakyReLU(cin))
        self.conv2 = nn.Sequential(Blur((2, 2)), EqualConv2d(cin, cout, 3, stride=2, bias=False), BiasedLeakyReLU(cout))
        self.skip = nn.Sequential(Blur((1, 1)), EqualConv2d(cin, cout, 1, stride=2, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class ReleaseRGBEncoder(nn.Module):
    """The release's RGB encoder (see the module doc): frame [B,3,H,W] in [-1,1] -> alpha [B,k]."""

    def __init__(self, k: int, resolution: int = 256, feature_dim: int = 512, head_layers: int = 4):
        super().__init__()
        if resolution not in RELEASE_CHANNELS or resolution < 8:
            raise ValueError(f"ReleaseRGBEncoder: resolution={resolution}; expected one of {sorted(r for r in RELEASE_CHANNELS if r >= 8)}")
        self.resolution = resolution
        layers: list[nn.Module] = [EqualConv2d(3, RELEASE_CHANNELS[resolution], 1, bias=False), BiasedLeakyReLU(RELEASE_CHANNELS[resolution])]
        res = resolution
        while res > 4:
            layers.append(DownBlock(RELEASE_CHANNELS[res], RELEASE_CHANNELS[res // 2]))
            res //= 2
        layers.append(EqualConv2d(RELEASE_CHANNELS[4], feature_dim, 4, bias=False))
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(*[EqualLinear(feature_dim, feature_dim) for _ in range(head_layers)], EqualLinear(feature_dim, k))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from persona.ours.encoders import encoder_input

        return self.head(self.trunk(encoder_input(image, self.resolution, "ReleaseRGBEncoder")).flatten(1))
