"""The ffhq512 preset has exactly the parameter/buffer names and shapes of the released G_ema
(NVlabs/eg3d ffhq512-128.pkl), so official weights load by name."""

from __future__ import annotations

import pytest

from persona.eg3d import build_generator


def official_ffhq512_shapes() -> dict[str, tuple[int, ...]]:
    """Names/shapes of the release's TriPlaneGenerator state dict, written from reading
    training/triplane.py, networks_stylegan2.py and superresolution.py (cbase 32768, cmax 512,
    map 2, 3x32-channel planes at 256^2, OSGDecoder 32->64->33, SuperresolutionHybrid8XDC)."""
    shapes: dict[str, tuple[int, ...]] = {}
    w = 512

    def fc(prefix, n_in, n_out):
        shapes[f"{prefix}.weight"] = (n_out, n_in)
        shapes[f"{prefix}.bias"] = (n_out,)

    def layer(prefix, n_in, n_out, res):
        fc(f"{prefix}.affine", w, n_in)
        shapes[f"{prefix}.weight"] = (n_out, n_in, 3, 3)
        shapes[f"{prefix}.bias"] = (n_out,)
        shapes[f"{prefix}.noise_strength"] = ()
        shapes[f"{prefix}.noise_const"] = (res, res)
        shapes[f"{prefix}.resample_filter"] = (4, 4)

    def block(prefix, n_in, n_out, res, img_ch):
        shapes[f"{prefix}.resample_filter"] = (4, 4)
        if n_in == 0:
            shapes[f"{prefix}.const"] = (n_out, res, res)
        else:
            layer(f"{prefix}.conv0", n_in, n_out, res)
        layer(f"{prefix}.conv1", n_out, n_out, res)
        fc(f"{prefix}.torgb.affine", w, n_out)
        shapes[f"{prefix}.torgb.weight"] = (img_ch, n_out, 1, 1)
        shapes[f"{prefix}.torgb.bias"] = (img_ch,)

    fc("backbone.mapping.embed", 25, w)
    fc("backbone.mapping.fc0", 512 + w, w)
    fc("backbone.mapping.fc1", w, w)
    shapes["backbone.mapping.w_avg"] = (w,)
    channels = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}
    prev = 0
    for res, ch in channels.items():
        block(f"backbone.synthesis.b{res}", prev, ch, res, 96)
        prev = ch
    fc("decoder.net.0", 32, 64)
    fc("decoder.net.2", 64, 33)
    block("superresolution.block0", 32, 256, 256, 3)
    block("superresolution.block1", 256, 128, 512, 3)
    return shapes


@pytest.fixture(scope="module")
def ffhq512():
    return build_generator("ffhq512")


def test_state_dict_names_and_shapes_match_the_release(ffhq512):
    ours = {k: tuple(v.shape) for k, v in ffhq512.state_dict().items()}
    expected = official_ffhq512_shapes()
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    for name in ("backbone.mapping.fc0.weight", "backbone.synthesis.b64.conv0.affine.weight", "decoder.net.0.weight",
                 "superresolution.block0.conv0.weight"):
        assert name in ours


def test_preset_attributes(ffhq512):
    G = ffhq512
    assert (G.z_dim, G.w_dim, G.c_dim, G.num_ws, G.img_resolution, G.neural_rendering_resolution) == (512, 512, 25, 14, 512, 128)
    cfg = G.config
    assert (cfg.ray_start, cfg.ray_end, cfg.box_warp, cfg.depth_resolution, cfg.depth_resolution_importance) == (2.25, 3.3, 1.0, 48, 48)
    assert G.backbone.mapping.num_layers == 2

