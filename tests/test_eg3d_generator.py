"""The tri-plane generator: contract shapes, truncation, conditioning, modulated convs, rendering
conventions, and our safetensors checkpoints."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from persona import cameras
from persona.eg3d import build_generator, read_generator, load_prior, save_generator
from persona.eg3d.networks import conv2d_up2, fir_filter, modulated_conv2d, upfirdn2d, upsample2d
from persona.eg3d.rendering import ray_bundle, ray_march, sample_pdf, sample_planes


def _cams(*yaws: float) -> torch.Tensor:
    return torch.stack([torch.as_tensor(cameras.camera_label(y, 0.0), dtype=torch.float32) for y in yaws])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_generator("tiny").eval()


def test_tiny_contract_shapes_and_budget(tiny):
    G = tiny
    assert (G.c_dim, G.img_resolution, G.neural_rendering_resolution) == (25, 64, 32)
    assert G.backbone.mapping.w_avg.shape == (G.w_dim,)
    n_params = sum(p.numel() for p in G.parameters())
    assert n_params <= 5_000_000, n_params
    z = torch.randn(2, G.z_dim)
    c = _cams(0.0, 20.0)
    ws = G.mapping(z, c)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    torch.manual_seed(1)
    out = G.synthesis(ws, c)
    assert out["image"].shape == (2, 3, 64, 64)
    assert out["image_raw"].shape == (2, 3, 32, 32)
    assert out["image_depth"].shape == (2, 1, 32, 32)
    # depth lies in the sampled range, raw rgb in [-1,1] (midpoint compositing of sigmoid colours)
    assert out["image_depth"].min() >= G.config.ray_start - 1e-4
    assert out["image_raw"].abs().max() <= 1.01
    # the neural rendering resolution is settable per call; the SR input is resized to its own
    out16 = G.synthesis(ws, c, neural_rendering_resolution=16)
    assert out16["image_raw"].shape == (2, 3, 16, 16) and out16["image"].shape == (2, 3, 64, 64)


def test_truncation_moves_towards_w_avg(tiny):
    G = tiny
    G.backbone.mapping.w_avg.copy_(torch.randn(G.w_dim))
    z, c = torch.randn(3, G.z_dim), _cams(0.0, 10.0, -10.0)
    ws = G.mapping(z, c)
    assert torch.allclose(G.mapping(z, c, truncation_psi=0.0), G.backbone.mapping.w_avg.expand_as(ws), atol=1e-6)
    half = G.mapping(z, c, truncation_psi=0.5)
    assert torch.allclose(half, 0.5 * (ws + G.backbone.mapping.w_avg), atol=1e-5)
    # ws are broadcast: every layer gets the same w without truncation
    assert torch.allclose(ws[:, 0], ws[:, -1])


def test_condition_and_latent_change_the_output(tiny):
    G = tiny
    z = torch.randn(1, G.z_dim)
    c0, c1 = _cams(0.0), _cams(30.0)
    assert not torch.allclose(G.mapping(z, c0), G.mapping(z, c1))  # camera-conditioned mapping
    ws = G.mapping(z, c0)
    torch.manual_seed(3)
    a = G.synthesis(ws, c0)["image_raw"]
    torch.manual_seed(3)
    b = G.synthesis(ws, c1)["image_raw"]
    torch.manual_seed(3)
    a2 = G.synthesis(ws, c0)["image_raw"]
    assert torch.equal(a, a2)  # deterministic given the RNG state ('const' noise)
    assert (a - b).abs().mean() > 1e-3
    ws2 = G.mapping(torch.randn(1, G.z_dim), c0)
    torch.manual_seed(3)
    assert (G.synthesis(ws2, c0)["image_raw"] - a).abs().mean() > 1e-3


def test_gradients_reach_ws_and_parameters(tiny):
    G = tiny.train()
    try:
        ws = G.mapping(torch.randn(2, G.z_dim), _cams(0.0, 5.0)).detach().requires_grad_(True)
        out = G.synthesis(ws, _cams(0.0, 5.0), neural_rendering_resolution=16)
        (out["image"].square().mean() + out["image_raw"].mean()).backward()
        assert ws.grad is not None and ws.grad.abs().sum() > 0
        assert G.decoder.net[0].weight.grad.abs().sum() > 0
        assert G.backbone.synthesis.b4.const.grad.abs().sum() > 0
        assert G.superresolution.block0.conv0.weight.grad.abs().sum() > 0
    finally:
        G.zero_grad(set_to_none=True)
        G.eval()


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modconv_agree(up):
    torch.manual_seed(0)
    x, w, s = torch.randn(3, 5, 6, 6), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    f = fir_filter()
    a = modulated_conv2d(x, w, s, up=up, resample_filter=f, fused=True)
    b = modulated_conv2d(x, w, s, up=up, resample_filter=f, fused=False)
    assert a.shape == (3, 7, 6 * up, 6 * up)
    assert torch.allclose(a, b, atol=1e-4)
    # demodulation: unit-variance inputs give ~unit-variance outputs whatever the style scale
    big = modulated_conv2d(torch.randn(64, 5, 8, 8), w, 100 * torch.rand(64, 5) + 0.1, fused=False)
    assert 0.5 < big.std() < 2.0


def test_modconv_form_follows_device_and_batch_and_eval_renders_are_unchanged(monkeypatch):
    """'inference_only' (the release's setting): on the CPU the shared (unfused) conv for every batch of
    more than one sample, in train and eval mode alike (faster there, issue #16); elsewhere the release's
    rule (grouped at inference, shared in training); one sample: the plain conv with the modulated weight.
    Batch-2 planes in eval mode on the CPU equal the same two latents' planes made one at a time."""
    from persona.eg3d import networks

    layer = torch.nn.Linear(1, 1)
    for training in (True, False):
        layer.train(training)
        assert networks._use_fused("inference_only", layer, 2, "cpu") is False
        assert networks._use_fused("inference_only", layer, 1, "cpu") is True
        assert networks._use_fused("inference_only", layer, 2, "cuda") is (not training)
    assert networks._use_fused(True, layer, 2, "cpu") is True  # an explicit choice is kept
    calls = []
    real = networks.modulated_conv2d
    monkeypatch.setattr(networks, "modulated_conv2d", lambda *a, **k: calls.append((a[0].shape[0], k["fused"])) or real(*a, **k))
    G = build_generator("tiny").eval()
    ws = torch.randn(2, G.num_ws, G.w_dim)
    cam = torch.from_numpy(np.stack([cameras.camera_label(10.0, 5.0), cameras.camera_label(-20.0, 0.0)])).float()
    with torch.no_grad():
        both = G.synthesis(ws, cam)["image"]  # backbone and super-resolution at batch 2, eval mode
        singles = [G.planes(ws[i:i + 1]) for i in range(2)]  # the planes: no depth jitter to compare through
        pair = G.planes(ws)
    assert {fused for b, fused in calls if b == 2} == {False} and {fused for b, fused in calls if b == 1} == {True}
    assert both.shape == (2, 3, G.img_resolution, G.img_resolution)
    assert torch.allclose(pair, torch.cat(singles), atol=1e-4)


def test_upsampling_conv_matches_zero_insertion_reference():
    """conv2d_up2 (transposed conv + FIR) equals upsample-by-zero-insertion, FIR, then 3x3 convolution."""
    torch.manual_seed(0)
    x, w, f = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), fir_filter()
    fast = conv2d_up2(x, w, f)
    ref = F.conv2d(upfirdn2d(x, f, up=2, pad=(3, 2, 3, 2), gain=4.0), w.flip([2, 3]))
    assert fast.shape == ref.shape == (2, 6, 10, 10)
    assert torch.allclose(fast, ref, atol=1e-5)
    # the FIR upsampler keeps a constant image constant (DC gain 1) away from the border
    up = upsample2d(torch.full((1, 1, 6, 6), 2.0), f)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 2.0))


def test_ray_bundle_follows_the_eg3d_camera_convention():
    c = _cams(0.0)  # frontal: camera on +z looking at the pivot, OpenCV axes
    origins, dirs = ray_bundle(c, 5)
    assert torch.allclose(origins[0, 0], c[0, [3, 7, 11]])
    centre = dirs[0, 2 * 5 + 2]
    assert torch.allclose(centre, torch.tensor([0.0, 0.0, -1.0]), atol=1e-4)
    right, below = dirs[0, 2 * 5 + 3], dirs[0, 3 * 5 + 2]
    assert right[0] > 0.01 and below[1] < -0.01  # image x -> world +x, image y (down) -> world -y
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(1, 25), atol=1e-5)


def test_triplane_axis_order_is_xy_xz_zx():
    """Plane k holds a ramp along its width axis; the sampled value reveals which coordinate indexes it."""
    res = 64
    ramp = torch.linspace(-1 + 1 / res, 1 - 1 / res, res)  # texel centres, align_corners=False
    planes = ramp.reshape(1, 1, 1, 1, res).expand(1, 3, 1, res, res).contiguous()
    points = torch.tensor([[[0.1, -0.2, 0.3]]])
    got = sample_planes(planes, points, box_warp=1.0)[0, :, 0, 0]  # [3]: width coordinate of each plane
    assert torch.allclose(got, torch.tensor([0.2, 0.2, 0.6]), atol=1e-4)  # x, x, z (scaled by 2/box_warp)


def test_ray_march_known_values():
    depths = torch.linspace(2.0, 3.0, 11).reshape(1, 1, 11, 1)
    sigma = torch.full((1, 1, 11, 1), 3.0)
    colors = torch.full((1, 1, 11, 3), 0.75)
    rgb, depth, weights = ray_march(colors, sigma, depths)
    total = 1 - math.exp(-F.softplus(torch.tensor(2.0)).item() * 1.0)
    assert weights.sum().item() == pytest.approx(total, rel=1e-4)
    assert torch.allclose(rgb, torch.full((1, 1, 3), 2 * 0.75 * total - 1), atol=1e-4)
    assert 2.0 < depth.item() < 2.5  # an opaque medium puts the depth near the front


def test_importance_samples_concentrate_on_the_peak():
    torch.manual_seed(0)
    bins = torch.linspace(0, 1, 11).expand(200, 11)
    weights = torch.zeros(200, 10)
    weights[:, 7] = 1.0
    s = sample_pdf(bins, weights, 16)
    assert ((s >= 0.7) & (s <= 0.8)).float().mean() > 0.95


def test_cpu_sorting_and_bucketing_give_pytorch_s_indices():
    """depth_order (NumPy's argsort on the CPU) and bucket_index (a comparison count) return the indices of
    torch.sort and torch.searchsorted(right=True), including u on a bin edge, repeated cdf values and u = 0 / 1."""
    from persona.eg3d.rendering import bucket_index, depth_order

    torch.manual_seed(0)
    depths = torch.cat([torch.linspace(2.25, 3.3, 24).expand(2, 64, 24).unsqueeze(-1) + 0.01 * torch.rand(2, 64, 24, 1),
                        2.25 + 1.05 * torch.rand(2, 64, 24, 1)], -2)
    assert torch.equal(depth_order(depths), torch.sort(depths, dim=-2).indices)
    assert depth_order(depths).dtype == torch.int64
    pdf = torch.rand(300, 22)
    pdf[:50, 5:9] = 0  # repeated cdf values
    cdf = torch.cat([torch.zeros(300, 1), torch.cumsum(pdf / pdf.sum(-1, keepdim=True), -1)], -1)
    u = torch.rand(300, 24)
    u[:, 0], u[:, 1], u[:, 2], u[:, 3] = 0.0, 1.0, cdf[:, 7], cdf[:, 20]
    assert torch.equal(bucket_index(cdf, u), torch.searchsorted(cdf, u, right=True))


def test_save_load_round_trip(tiny, tmp_path):
    G = tiny
    path = save_generator(G, tmp_path / "g.safetensors", meta={"note": "test"})
    H = read_generator(path)
    assert H.config == G.config
    z, c = torch.randn(2, G.z_dim), _cams(0.0, 15.0)
    torch.manual_seed(5)
    a = G(z, c)["image"]
    torch.manual_seed(5)
    b = H(z, c)["image"]
    assert torch.equal(a, b)
    assert load_prior(path).config == G.config
    assert (tmp_path / "g.json").is_file()


def test_load_prior_missing_says_how_to_create_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="prior train --profile default"):
        load_prior(tmp_path / "nope.safetensors")


def test_render_matches_stored_reference():
    """A seeded tiny generator renders (and back-propagates) what the code before the rendering
    speed-ups stored in tests/data/eg3d_reference.npz (tests/eg3d_reference.py)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import eg3d_reference

    stored = np.load(eg3d_reference.REFERENCE, allow_pickle=False)
    got = eg3d_reference.outputs()
    assert sorted(got) == sorted(stored.files)
    for key, value in got.items():
        scale = float(np.abs(stored[key]).max())
        np.testing.assert_allclose(value, stored[key], rtol=1e-4, atol=1e-5 * scale, err_msg=key)


def test_fast_paths_equal_the_plain_compositions():
    """The in-place bias+lrelu(+clamp) and the ToRGB matmul give bias_act's / modulated_conv2d's
    values and gradients, channels-last or not, with the clamp active."""
    from persona.eg3d.networks import bias_act, bias_lrelu_, modulated_conv1x1

    torch.manual_seed(0)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x0 = (torch.randn(2, 5, 6, 6) * 3).contiguous(memory_format=fmt)
        b0 = torch.randn(5)
        outs = []
        for fast in (False, True):
            x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
            y = bias_lrelu_(x * 1.0, b, clamp=2.0) if fast else bias_act(x, b, "lrelu", gain=2 ** 0.5, clamp=2.0)
            (y * torch.arange(y.numel()).reshape(y.shape).float().sin()).sum().backward()
            outs.append((y.detach(), x.grad, b.grad))
        for a, c in zip(*outs):
            assert torch.allclose(a, c, atol=1e-5)
        w, s = torch.randn(3, 5, 1, 1), torch.randn(2, 5)
        ref = modulated_conv2d(x0, w, s, demodulate=False, fused=False)
        assert torch.allclose(modulated_conv1x1(x0, w, s), ref, atol=1e-5)


def test_step_fast_paths_equal_the_release_compositions():
    """Issue #16's fast forms give the release's values and gradients: the equalised-lr linear layer
    as one addmm (vs F.linear with scaled copies), the demodulation coefficients as s^2 @ sum(w^2)
    (vs the [B,O,I,k,k] product), the decoder's head as one autograd function (vs sigmoid, slice,
    scale; either output alone too)."""
    from persona.eg3d.networks import FullyConnectedLayer
    from persona.eg3d.triplane import _DecoderHead

    torch.manual_seed(0)
    layer = FullyConnectedLayer(6, 4, lr_multiplier=0.3, bias_init=0.5)
    x = torch.randn(5, 6, requires_grad=True)
    grads = []
    for fast in (True, False):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        y = layer(x) if fast else F.linear(x, layer.weight * layer.weight_gain, layer.bias * layer.bias_gain)
        (y * torch.arange(y.numel()).reshape(y.shape).cos()).sum().backward()
        grads.append((y.detach(), x.grad, layer.weight.grad, layer.bias.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)

    w0, s0 = torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    w, s = w0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
    x = torch.randn(3, 5, 6, 6)
    y = modulated_conv2d(x, w, s, fused=False)
    (y * torch.arange(y.numel()).reshape(y.shape).sin()).sum().backward()
    wr, sr = w0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
    dco = ((wr.unsqueeze(0) * sr.reshape(3, 1, -1, 1, 1)).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    ref = F.conv2d(x * sr.reshape(3, -1, 1, 1), wr, padding=1) * dco.reshape(3, -1, 1, 1)
    (ref * torch.arange(ref.numel()).reshape(ref.shape).sin()).sum().backward()
    assert torch.allclose(y, ref, atol=1e-5)
    assert torch.allclose(w.grad, wr.grad, atol=1e-4) and torch.allclose(s.grad, sr.grad, atol=1e-4)

    for used in ("both", "rgb", "sigma"):
        outs = []
        for fast in (True, False):
            z = torch.randn(9, 5, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
            rgb, sigma = _DecoderHead.apply(z) if fast else (torch.sigmoid(z[:, 1:]) * 1.002 - 0.001, z[:, :1])
            loss = (rgb.square().sum() if used != "sigma" else 0) + (sigma.pow(3).sum() if used != "rgb" else 0)
            loss.backward()
            outs.append((rgb.detach(), sigma.detach(), z.grad))
        for a, b in zip(*outs):
            assert torch.allclose(a, b, atol=1e-6), used
