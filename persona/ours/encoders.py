"""The encoders of our method: a driving signal (RGB frame, 3DMM expression, audio window) -> alpha [B,k]."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from persona.audio_nets import AUDIO_DIM, AudioAttNet, AudioNet
from persona.data.formats import EXPRESSION_DIM

RGB_ENCODERS = ("persona", "release")  # persona.ours.encoders.RGBEncoder | persona.release_encoder.ReleaseRGBEncoder
AUDIO_INITS = ("he", "torch")  # ours' AudioNet init: variance-preserving (persona) | PyTorch's default (AD-NeRF, the release)
AUDIO_ATT_INITS = ("centre", "torch")  # ours' AudioAttNet init: on the frame's own window (persona) | PyTorch's default
EXPRESSION_INITS = ("torch", "he")  # ours' 3DMM encoder init: PyTorch's default (the release) | variance-preserving hidden layers (an option, issue #20)
RGB_INITS = ("torch", "he")  # persona's RGBEncoder trunk init: PyTorch's default | variance-preserving (an option, issue #20)


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` hidden linear layers of width ``hidden`` (LeakyReLU 0.2), then a linear head."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.LeakyReLU(0.2, inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


class ResDown(nn.Module):
    """Residual block that halves the resolution: conv3x3 -> conv3x3 + avg-pool, 1x1 skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), 0.2), 2)
        return (h + F.avg_pool2d(self.skip(x), 2)) / 2**0.5


class RGBEncoder(nn.Module):
    """Frame -> alpha: persona's own encoder (``TrainConfig.rgb_encoder = 'persona'``), NOT the release's.

    The same outline as the release's LIA-style encoder (1x1 conv from RGB, one residual
    down-block per octave down to 4x4, a 4x4 conv to ``feature_dim``, a head) but: plain
    ``nn.Conv2d`` with LeakyReLU(0.2) and average pooling (no equalised learning rate, no blur),
    at the data/training resolution ``resolution`` (the release: 256 px), channels
    ``min(max_channels, base_channels * resolution / res)`` (narrow on the CPU profiles), and an
    MLP head WITH activations (:func:`mlp`; the release's linear layers have none). The release's
    encoder is :class:`persona.release_encoder.ReleaseRGBEncoder` (``rgb_encoder = 'release'``).
    ``init``: ``he`` (:func:`he_init_` on the convolutional trunk, slope 0.2; the head keeps
    PyTorch's default, as :class:`AudioEncoder`'s MLP does) or ``torch`` (PyTorch's default
    everywhere). Under PyTorch's default the ~10 layers before the head shrink the frames'
    differences to nothing: measured on default id00 frames at init (k = 50, the default profile's
    sizes), the coefficients vary over frames by 0.1 % of their size (5e-5 against 0.06), the
    encoder starts blind; with ``he`` by 15-27 % (3DMM's encoder: ~22 %). Not the default: trained
    (default id00, the 3DMM/audio recipe + ``grad_clip`` 0.2), the ``he`` encoder's coefficients
    follow the head pose instead (R² 0.99 from the camera, 0.05 from the mouth opening over training
    frames) and on the frontal test clip vary by 4e-4, the rendered mouth still (following -0.15 at
    725 steps, the budget's schedule; -0.11 with PyTorch's init at 800).
    ``x`` [B,3,H,W] in [-1,1] (resized to R x R) -> [B,k].
    """

    def __init__(self, k: int, resolution: int, base_channels: int = 32, max_channels: int = 512, feature_dim: int = 512, head_layers: int = 4,
                 init: str = "torch"):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"RGBEncoder: resolution={resolution}; expected a power of two >= 4")
        if init not in RGB_INITS:
            raise ValueError(f"RGBEncoder: init={init!r}; expected one of {RGB_INITS}")
        self.resolution = resolution

        def channels(res: int) -> int:
            return min(max_channels, base_channels * resolution // res)

        blocks: list[nn.Module] = [nn.Conv2d(3, channels(resolution), 1), nn.LeakyReLU(0.2, inplace=True)]
        res = resolution
        while res > 4:
            blocks.append(ResDown(channels(res), channels(res // 2)))
            res //= 2
        blocks.append(nn.Conv2d(channels(4), feature_dim, 4))
        self.trunk = nn.Sequential(*blocks)
        if init == "he":
            he_init_(self.trunk, slope=0.2)
        self.head = mlp(feature_dim, feature_dim, k, head_layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(encoder_input(image, self.resolution, "RGBEncoder")).flatten(1))


def encoder_input(image: torch.Tensor, resolution: int, who: str) -> torch.Tensor:
    """image [B,3,H,W] checked and resized (bilinear, antialiased) to [B,3,resolution,resolution]."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{who}: images [B,3,H,W] expected, got {list(image.shape)}")
    if image.shape[-1] != resolution or image.shape[-2] != resolution:
        image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return image


class ExpressionEncoder(nn.Module):
    """3DMM expression [B,76] -> alpha [B,k]: MLP 76 -> 512 -> ... -> k (release: 6 x 512).

    The release stacks its linear layers without activations; we put LeakyReLU between them
    (an MLP as the paper describes the encoder). ``init``: ``torch`` (PyTorch's default, the
    release) or ``he`` (:func:`he_init_` on the hidden layers, slope 0.2; the head keeps PyTorch's
    default, so the coefficients still start small). ``standardise`` (persona's option, issue #20;
    off: the release): the input is centred and scaled per dimension by the training frames'
    statistics (buffers ``input_mean``, ``input_scale`` [in_dim], set by :meth:`set_input_statistics`
    before training and stored with the weights), so a dimension with a small spread (the jaw's)
    moves the first layer's output as much per Adam step as a wide one.
    """

    def __init__(self, k: int, in_dim: int = EXPRESSION_DIM, hidden: int = 512, layers: int = 6, init: str = "torch",
                 standardise: bool = False):
        super().__init__()
        if init not in EXPRESSION_INITS:
            raise ValueError(f"ExpressionEncoder: init={init!r}; expected one of {EXPRESSION_INITS}")
        self.in_dim = in_dim
        self.net = mlp(in_dim, hidden, k, layers)
        if init == "he":
            he_init_(self.net[:-1], slope=0.2)
        self.standardise = bool(standardise)
        if self.standardise:  # only then: the state dicts of the other runs keep their keys
            self.register_buffer("input_mean", torch.zeros(in_dim))
            self.register_buffer("input_scale", torch.ones(in_dim))

    @torch.no_grad()
    def set_input_statistics(self, expressions: torch.Tensor) -> None:
        """``standardise``: each dimension is centred on its mean over ``expressions`` [N,in_dim] (the
        training frames) and divided by its standard deviation there (a constant dimension keeps scale 1)."""
        if not self.standardise:
            raise RuntimeError("ExpressionEncoder: set_input_statistics needs standardise=True")
        expressions = expressions.float()
        std = expressions.std(0) if len(expressions) > 1 else torch.zeros(self.in_dim)
        self.input_mean.copy_(expressions.mean(0))
        self.input_scale.copy_(torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.ones_like(std)))

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        if expression.dim() != 2 or expression.shape[1] != self.in_dim:
            raise ValueError(f"ExpressionEncoder: expressions [B,{self.in_dim}] expected, got {list(expression.shape)}")
        if self.standardise:
            expression = (expression - self.input_mean) * self.input_scale
        return self.net(expression)


def he_init_(module: nn.Module, slope: float = 0.02) -> nn.Module:
    """Variance-preserving (He / Kaiming-normal) init of every Conv1d/Conv2d/Linear in ``module``
    for LeakyReLU(``slope``), zero biases; returns ``module``. (:class:`RGBEncoder`'s trunk uses it
    too, with slope 0.2.)

    Why ours' AudioNet needs it (issue #20): under PyTorch's default init each layer shrinks the
    signal's variance about 3x, and AudioNet is 6 layers deep before the MLP; DeepSpeech's logits
    (tens of units) survive that, our 29-d stand-in features (std 0.24-0.62 around a common level
    0.4-1.0) do not: measured on id00 audio at init, the coefficients' spread over frames is 0.1 %
    of their size (the 3DMM encoder's: 27 %), so training starts from an encoder that ignores the audio.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def centre_attention_(att: AudioAttNet, centre_weight: float = 0.9) -> AudioAttNet:
    """Start AudioAttNet on the frame's own window: the linear layer over the scores gets zero
    weights and biases whose softmax puts ``centre_weight`` on window ``seq_len // 2`` (the frame
    itself, see :func:`persona.audio_nets.gather_neighbour_windows`) and the rest evenly on its
    neighbours. Switching smoothing on then leaves the encoder's output almost unchanged, and the
    attention learns from there how far to spread; PyTorch's default init averages the 8 windows
    (320 ms) almost evenly. Returns ``att``."""
    n = att.seq_len
    if not 0 < centre_weight < 1 or n < 2:
        raise ValueError(f"centre_attention_: centre_weight={centre_weight} must lie in (0,1) with seq_len >= 2")
    with torch.no_grad():
        att.weights.weight.zero_()
        bias = torch.full((n,), math.log((1 - centre_weight) / (n - 1)))
        bias[n // 2] = math.log(centre_weight)
        att.weights.bias.copy_(bias)
    return att


class AudioEncoder(nn.Module):
    """Audio window(s) -> alpha [B,k]: AudioNet (-> 64) then the MLP (-> k).

    Without smoothing: ``audio`` [B,16,29] -> AudioNet -> MLP. With smoothing (switched on by
    the trainer after ``audio_smooth_after`` iterations, then kept): the 8 neighbouring windows
    ``neighbours`` [B,8,16,29] -> AudioNet each -> AudioAttNet -> MLP (AD-NeRF / the release).
    ``att_score_dims``: features the attention scores read (None: all 64, persona; 32: the release).
    ``audio_init``: ``he`` (:func:`he_init_` on AudioNet) or ``torch`` (PyTorch's default, as
    AD-NeRF and the release); ``att_init``: ``centre`` (:func:`centre_attention_`) or ``torch``.
    """

    def __init__(self, k: int, hidden: int = 512, layers: int = 6, audio_dim: int = AUDIO_DIM, att_score_dims: int | None = None,
                 audio_init: str = "he", att_init: str = "centre"):
        super().__init__()
        if audio_init not in AUDIO_INITS:
            raise ValueError(f"AudioEncoder: audio_init={audio_init!r}; expected one of {AUDIO_INITS}")
        if att_init not in AUDIO_ATT_INITS:
            raise ValueError(f"AudioEncoder: att_init={att_init!r}; expected one of {AUDIO_ATT_INITS}")
        self.audio_net = AudioNet(audio_dim)
        if audio_init == "he":
            he_init_(self.audio_net)
        self.att_net = AudioAttNet(audio_dim, score_dims=att_score_dims)
        if att_init == "centre":
            centre_attention_(self.att_net)
        self.net = mlp(audio_dim, hidden, k, layers)
        self.register_buffer("smoothing", torch.zeros((), dtype=torch.bool))

    def forward(self, audio: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        if bool(self.smoothing):
            if neighbours is None:
                raise ValueError("AudioEncoder: smoothing is on; neighbours [B,8,16,29] are needed")
            b, s = neighbours.shape[:2]
            feats = self.audio_net(neighbours.reshape(b * s, *neighbours.shape[2:])).view(b, s, -1)
            return self.net(self.att_net(feats))
        return self.net(self.audio_net(audio))
