"""StyleGAN2 building blocks of EG3D in plain PyTorch (no compiled CUDA plugin).

Parameter and buffer names follow the official release (NVlabs/eg3d ``training/networks_stylegan2.py``)
so its weights load by name: ``mapping.embed``, ``mapping.fc{i}``, ``mapping.w_avg``,
``synthesis.b{res}.{const,conv0,conv1,torgb}``, each layer with ``affine``, ``weight``, ``bias``,
``noise_const``, ``noise_strength``, ``resample_filter``.

Semantics reproduced (written from the paper and the public description, not copied):
- equalised learning rate: weights stored ~N(0,1)/lr_mul and scaled by ``lr_mul/sqrt(fan_in)`` at run time;
- leaky ReLU (0.2) with gain sqrt(2), optional clamp of activations (``conv_clamp``);
- modulated + demodulated 3x3 convolutions, either fused (grouped conv, one weight per sample) or
  unfused (scale activations before and after a shared convolution): same result;
- 2x upsampling by a transposed stride-2 convolution followed by the [1,3,3,1] FIR low-pass filter,
  image skips upsampled by the same filter (``upfirdn2d`` written as a depthwise convolution);
- per-layer noise (``random`` | ``const`` | ``none``) and the "skip" architecture (every block adds
  its ToRGB output to the upsampled running image).

CPU speed (issue #16; same values and gradients to float rounding, see tests/test_eg3d_generator.py):
activations are channels-last on the CPU (oneDNN's fastest layout); bias + lrelu + gain + clamp
run in place over the convolution's output (:func:`bias_lrelu_`); one sample's modulated conv is a
plain convolution with the modulated weight even in training; ToRGB is one batched matmul;
the FIR after the upsampling conv pads itself and the skip upsampling is a depthwise transposed
convolution (no padded copies); at inference the upsampling conv runs as four phase convolutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# FIR filtering (upfirdn2d) as plain convolutions


def fir_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable low-pass taps -> normalised 2-D filter [k,k] (sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1; negative crops), filter with ``f`` [k,k].

    x: [B,C,H,W] -> [B,C,H*up+y0+y1-k+1, W*up+x0+x1-k+1]. The filter is applied as a convolution
    (flipped), which is a no-op difference for the symmetric filters used here.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, kernel, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """[B,C,H,W] -> [B,C,2H,2W] with the FIR filter (DC gain preserved)."""
    k = f.shape[-1]
    p0, p1 = (k + up - 1) // 2, (k - up) // 2
    if up == 2 and k == 4:  # zero insertion + pad (2, 1) + filter = a depthwise transposed conv (no copies)
        c = x.shape[1]
        kernel = (f * (up * up)).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, k, k)
        return F.conv_transpose2d(x, _like_input(kernel, x), stride=2, padding=1, groups=c)
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def conv2d_up2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """3x3 (odd k) convolution of a 2x upsampled input, as EG3D computes it:
    transposed stride-2 convolution, then the FIR filter. x [B,I,H,W], weight [O,I/g,k,k] -> [B,O,2H,2W]."""
    out_ch, in_per_group, kh, kw = weight.shape
    fk = f.shape[-1]
    pad = kw // 2
    p0 = pad + (fk + 1) // 2 - (kw - 1)
    p1 = pad + (fk - 2) // 2 - (kw - 2)
    if groups == 1 and (kh, kw) == (3, 3) and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        x = _conv_transpose3x3_s2_phases(x, weight)  # inference: ~1.2x faster on the CPU, same values
    elif groups == 1:
        x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    else:
        w = weight.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        w = w.reshape(groups * in_per_group, out_ch // groups, kh, kw)
        x = F.conv_transpose2d(x, w, stride=2, groups=groups)
    if p0 == p1 >= 0:  # the 3x3 / 4-tap case: the FIR pads itself (no padded copy of the largest tensor)
        return _fir(x, f, gain=4.0, padding=p0)
    return upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=4.0)


def _conv_transpose3x3_s2_phases(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv_transpose2d(x, weight.transpose(0, 1), stride=2)`` for a 3x3 weight [O,I,3,3] as four
    ordinary convolutions, one per output phase (even/odd row x even/odd column: 2x2, 2x1, 1x2
    and 1x1 taps), written into the interleaved output: [B,I,H,W] -> [B,O,2H+1,2W+1]. Same
    multiply-adds as the transposed convolution, in oneDNN's faster forward kernels (used without
    autograd: its backward through the strided writes is slower)."""
    batch, _, h, w = x.shape
    k = _like_input(weight, x)
    ee = F.conv2d(x, _like_input(k[:, :, 0::2, 0::2].flip([2, 3]), x), padding=1)
    eo = F.conv2d(x, _like_input(k[:, :, 0::2, 1:2].flip([2]), x), padding=(1, 0))
    oe = F.conv2d(x, _like_input(k[:, :, 1:2, 0::2].flip([3]), x), padding=(0, 1))
    oo = F.conv2d(x, _like_input(k[:, :, 1:2, 1:2], x))
    fmt = torch.channels_last if _channels_last(ee) else torch.contiguous_format
    out = torch.empty(batch, ee.shape[1], 2 * h + 1, 2 * w + 1, dtype=ee.dtype, device=ee.device, memory_format=fmt)
    out[:, :, 0::2, 0::2] = ee
    out[:, :, 0::2, 1::2] = eo
    out[:, :, 1::2, 0::2] = oe
    out[:, :, 1::2, 1::2] = oo
    return out


def _fir(x: torch.Tensor, f: torch.Tensor, gain: float, padding: int) -> torch.Tensor:
    """Depthwise [k,k] filter with symmetric zero padding: [B,C,H,W] -> [B,C,H+2p-k+1,W+2p-k+1]."""
    c = x.shape[1]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, _like_input(kernel, x), padding=padding, groups=c)


# ----------------------------------------------------------------------------------------------
# Layers


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    """x + bias (broadcast on dim 1), activation, gain, optional clamp to [-clamp, clamp]."""
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"bias_act: unknown activation {activation!r}; expected 'linear' or 'lrelu'")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class _BiasLreluInplace(torch.autograd.Function):
    """``clamp(lrelu(x + bias) * gain)`` written over ``x`` (one buffer, no temporaries); the
    backward needs only the output: lrelu's slope is read from its sign (gain > 0 keeps it) and
    the clamp's mask from ``|y| >= clamp``, applied only when the forward clipped something."""

    @staticmethod
    def forward(ctx, x, bias, gain, clamp):
        ctx.clipped = _bias_lrelu_raw_(x, bias, gain, clamp)
        ctx.gain, ctx.clamp = gain, clamp
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        gx = torch.ops.aten.leaky_relu_backward(grad, y, LRELU_SLOPE, True)
        if ctx.gain != 1:
            gx.mul_(ctx.gain)
        if ctx.clipped:
            gx.masked_fill_(y.abs() >= ctx.clamp, 0)
        gb = gx.sum([d for d in range(gx.ndim) if d != 1]) if ctx.needs_input_grad[1] else None
        return gx, gb, None, None


def _flat_view(x: torch.Tensor) -> torch.Tensor:
    """All elements of a contiguous or channels-last tensor as a 1-D view (no copy), in memory order."""
    if _channels_last(x):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


def _bias_lrelu_raw_(x: torch.Tensor, bias: torch.Tensor | None, gain: float, clamp: float | None) -> bool:
    """The in-place forward of :func:`bias_lrelu_`; True when the clamp clipped something (on the
    CPU, where asking costs nothing but a read; elsewhere assumed)."""
    with torch.no_grad():
        if bias is not None:
            x.add_(bias.reshape([1, -1] + [1] * (x.ndim - 2)))
        F.leaky_relu_(x, LRELU_SLOPE)
        if gain != 1:
            x.mul_(gain)
        if clamp is None:
            return False
        if x.device.type == "cpu":
            lo, hi = torch.aminmax(_flat_view(x))
            if lo.item() >= -clamp and hi.item() <= clamp:
                return False
        x.clamp_(-clamp, clamp)
        return True


def bias_lrelu_(x: torch.Tensor, bias: torch.Tensor | None, gain: float = LRELU_GAIN, clamp: float | None = None) -> torch.Tensor:
    """:func:`bias_act` with 'lrelu' computed IN PLACE over ``x`` (which must be a fresh
    intermediate, e.g. a convolution's output): same values and gradients, without the four
    temporaries of the plain composition. x [B,C,...], bias [C] -> x."""
    if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
        return _BiasLreluInplace.apply(x, bias, gain, clamp)
    _bias_lrelu_raw_(x, bias, gain, clamp)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalised-lr linear layer: [B,in] -> [B,out]; ``activation`` 'linear' | 'lrelu' (gain sqrt 2)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear", lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "linear" and self.bias is not None and x.dim() == 2 and x.shape[0] * sum(self.weight.shape) < self.weight.numel():
            # few rows (the styles' affine layers): bias_gain * b + weight_gain * (x @ W^T) in one operator, the
            # release's F.linear(x, W * weight_gain, b * bias_gain) to float rounding without the two scaled copies
            # and their backward (issue #16); with many rows (the decoder) scaling the weight is the cheaper side
            return torch.addmm(self.bias, x, self.weight.t(), beta=self.bias_gain, alpha=self.weight_gain)
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear":
            return F.linear(x, w, b)
        x = x.matmul(w.t())
        return bias_act(x, b, self.activation, gain=LRELU_GAIN)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """(z [B,z_dim], c [B,c_dim]) -> ws [B,num_ws,w_dim].

    z and the embedded camera are each normalised to unit second moment and concatenated; then
    ``num_layers`` lrelu FC layers (lr multiplier 0.01). ``w_avg`` [w_dim] is the running mean of w
    (updated when ``update_emas``) used by truncation: w = w_avg + psi (w - w_avg).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01, w_avg_beta: float = 0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        features = [z_dim + embed_features] + [w_dim] * num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu", lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping: z has shape {tuple(z.shape)}; expected [B,{self.z_dim}]")
        x = normalize_2nd_moment(z.float())
        if self.c_dim > 0:
            if c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"mapping: camera has shape {tuple(c.shape)}; expected [B,{self.c_dim}]")
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.float()))], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi), x[:, truncation_cutoff:]], dim=1)
        return x


def _channels_last(x: torch.Tensor) -> bool:
    """True when ``x`` [B,C,H,W] is laid out channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _like_input(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The weight in the input's memory format (oneDNN convolves channels-last data fastest with
    channels-last weights)."""
    return w.contiguous(memory_format=torch.channels_last) if _channels_last(x) else w


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None, up: int = 1,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True, fused: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution. x [B,I,H,W], weight [O,I,k,k], styles [B,I] -> [B,O,H*up,W*up].

    fused: one grouped convolution with per-sample weights (for B = 1 a plain convolution with the
    modulated weight); unfused: scale x by the styles, shared convolution, scale by the
    demodulation coefficients (cheaper on CPU for B > 1; same result). The result is a fresh
    tensor (callers may overwrite it in place); channels-last inputs give channels-last outputs.
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if styles.shape != (batch, in_ch):
        raise ValueError(f"modulated_conv2d: styles {tuple(styles.shape)}; expected [{batch},{in_ch}]")
    if fused and batch == 1:
        if _like_input(weight, x) is weight:
            w = weight * styles.reshape(1, -1, 1, 1)
        else:  # modulate straight into the channels-last layout ([O,k,k,I] in memory): no reordering copy
            w = (weight.permute(0, 2, 3, 1) * styles.reshape(1, 1, 1, -1)).permute(0, 3, 1, 2)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        w = _like_input(w, x)
        x = conv2d_up2(x, w, resample_filter) if up == 2 else F.conv2d(x, w, padding=kw // 2)
        return x if noise is None else x.add_(noise)
    dcoefs = None
    if demodulate:
        # sum over (i, kh, kw) of (w[o,i] s[b,i])^2 = s^2 [B,I] @ (sum over kh, kw of w^2) [I,O]: the same
        # coefficients as the release's [B,O,I,k,k] product (to float rounding), without building it
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B,O]
    if not fused:
        x = x * styles.reshape(batch, -1, 1, 1)
        x = conv2d_up2(x, _like_input(weight, x), resample_filter) if up == 2 else F.conv2d(x, _like_input(weight, x), padding=kw // 2)
        if dcoefs is not None:
            x = x * dcoefs.reshape(batch, -1, 1, 1)
        return x if noise is None else x.add_(noise)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)
    if dcoefs is not None:
        w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    if up == 2:
        x = conv2d_up2(x, w, resample_filter, groups=batch)
    else:
        x = F.conv2d(x, w, padding=kw // 2, groups=batch)
    x = x.reshape(batch, -1, *x.shape[2:])
    return x if noise is None else x + noise


def modulated_conv1x1(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """Modulated 1x1 convolution without demodulation (ToRGB) as one batched matmul over the pixels:
    x [B,I,H,W], weight [O,I,1,1], styles [B,I] -> [B,O,H,W] (channels-last in, channels-last out).
    Equals :func:`modulated_conv2d` (``demodulate=False``) fused or not, to float rounding."""
    batch, in_ch, h, w = x.shape
    if styles.shape != (batch, in_ch) or weight.shape[1:] != (in_ch, 1, 1):
        raise ValueError(f"modulated_conv1x1: x {tuple(x.shape)}, weight {tuple(weight.shape)}, styles {tuple(styles.shape)}; "
                         "expected [B,I,H,W], [O,I,1,1], [B,I]")
    wmod = weight[:, :, 0, 0].unsqueeze(0) * styles.unsqueeze(1)  # [B,O,I]
    if _channels_last(x):
        y = torch.bmm(x.permute(0, 2, 3, 1).reshape(batch, h * w, in_ch), wmod.transpose(1, 2))  # [B,HW,O]
        return y.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
    return torch.bmm(wmod, x.reshape(batch, in_ch, h * w)).reshape(batch, -1, h, w)


def _use_fused(fused_modconv: bool | str, module: nn.Module, batch: int = 0, device_type: str = "cuda") -> bool:
    """'inference_only' (EG3D's setting): grouped conv at inference, shared conv in training
    (except for one sample, where the fused form is one plain convolution: fewer passes, same result).
    On the CPU the shared conv for every batch of more than one sample, in either mode: it is the
    faster form there (tiny preset, one thread, batch 2: backbone forward+backward w.r.t. ws 57 ->
    39 ms, forward 18-24 -> 15-18 ms; batch 8 forward 69-91 -> 47-55 ms; issue #16), and a generator kept
    in eval mode while it trains (ours, at batch 2) took the grouped one. Same values to float rounding."""
    if fused_modconv == "inference_only":
        if batch == 1:
            return True
        return False if device_type == "cpu" else not module.training
    return bool(fused_modconv)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+2x up), noise, bias, lrelu. x [B,I,r/up,r/up], w [B,w_dim] -> [B,O,r,r]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1, use_noise: bool = True,
                 conv_clamp: float | None = None, kernel_size: int = 3):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.register_buffer("resample_filter", fir_filter())
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | str = "inference_only") -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode {noise_mode!r}; expected 'random', 'const' or 'none'")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, resample_filter=self.resample_filter,
                             fused=_use_fused(fused_modconv, self, x.shape[0], x.device.type))
        return bias_lrelu_(x, self.bias, gain=LRELU_GAIN, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation: [B,I,r,r], w -> [B,img_channels,r,r]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.out_channels, self.conv_clamp = in_channels, out_channels, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool | str = "inference_only") -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv1x1(x, self.weight, styles)
        return bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the "skip" architecture.

    (x [B,in,r/2,r/2] | None, img [B,img_ch,r/2,r/2] | None, ws [B,num_conv+num_torgb,w_dim])
    -> (x [B,out,r,r], img [B,img_ch,r,r]). First block (in_channels=0) starts from a learned const.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = 256, use_noise: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.img_channels = resolution, img_channels
        self.register_buffer("resample_filter", fir_filter())
        self.num_conv, self.num_torgb = 0, 1
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp, use_noise=use_noise)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp, use_noise=use_noise)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | str = "inference_only"):
        if ws.shape[1] != self.num_conv + self.num_torgb:
            raise ValueError(f"block b{self.resolution}: got {ws.shape[1]} ws; expected {self.num_conv + self.num_torgb}")
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            if x.device.type == "cpu":  # oneDNN's fastest layout; every later activation follows it
                x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
        img = y if img is None else img + y
        return x, img


def channels_per_resolution(resolutions, channel_base: int, channel_max: int) -> dict[int, int]:
    return {res: min(channel_base // res, channel_max) for res in resolutions}


class SynthesisNetwork(nn.Module):
    """ws [B,num_ws,w_dim] -> img [B,img_channels,R,R] through blocks b4 ... bR ("skip")."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768, channel_max: int = 512,
                 conv_clamp: float | None = 256):
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f"synthesis: img_resolution {img_resolution} must be a power of two >= 4")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_ch, channels[res], w_dim, res, img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's ToRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | str = "inference_only") -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws has shape {tuple(ws.shape)}; expected [B,{self.num_ws},{self.w_dim}]")
        ws = ws.float()
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode=noise_mode, fused_modconv=fused_modconv)
            w_idx += block.num_conv
        return img.contiguous()


class StyleGAN2Backbone(nn.Module):
    """The tri-plane backbone: ``mapping`` + ``synthesis`` (names as in the release)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 mapping_layers: int, conv_clamp: float | None = 256, mapping_lr_multiplier: float = 0.01):
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers, lr_multiplier=mapping_lr_multiplier)
