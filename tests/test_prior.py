"""The personalized basis, its orthogonality modes, and the encoders (persona/ours/, persona/audio_nets.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from persona.audio_nets import AudioAttNet, AudioNet, gather_neighbour_windows
from persona.ours.basis import PersonalizedBasis, generator_w_avg
from persona.ours.encoders import AudioEncoder, ExpressionEncoder, RGBEncoder
from persona.ours.model import PersonalizedPrior


class StandInGenerator(nn.Module):
    """A few-parameter stand-in with the generator contract: synthesis(ws, camera) -> {'image', ...}."""

    def __init__(self, num_ws: int = 3, w_dim: int = 8, res: int = 16):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.img_resolution = w_dim, 25, w_dim, num_ws, res
        self.neural_rendering_resolution = res
        self.backbone = nn.Module()
        self.backbone.mapping = nn.Module()
        self.backbone.mapping.register_buffer("w_avg", torch.linspace(-0.5, 0.5, w_dim))
        self.decode = nn.Linear(num_ws * w_dim + 25, 3 * res * res)

    def synthesis(self, ws, camera, neural_rendering_resolution=None):
        x = torch.cat([ws.flatten(1), camera], dim=1)
        image = torch.tanh(self.decode(x)).view(-1, 3, self.img_resolution, self.img_resolution)
        return {"image": image, "image_raw": image, "image_depth": image[:, :1]}


def test_audio_nets_shapes_and_attention_is_a_weighted_mean():
    torch.manual_seed(0)
    assert AudioNet()(torch.randn(5, 16, 29)).shape == (5, 64)
    att = AudioAttNet()
    x = torch.randn(5, 8, 64)
    assert att(x).shape == (5, 64)
    w = att.attention(x)
    assert torch.allclose(w.sum(1), torch.ones(5))
    same = torch.randn(2, 1, 64).expand(2, 8, 64)  # 8 identical frames -> that frame
    assert torch.allclose(att(same), same[:, 0], atol=1e-6)
    assert att(x[0]).shape == (64,)  # AD-NeRF's unbatched form


def test_qr_basis_is_orthonormal_and_shapes():
    torch.manual_seed(0)
    basis = PersonalizedBasis(k=6, num_ws=3, w_dim=8, ortho="qr", offset_init="w_avg", w_avg=torch.arange(8.0))
    b = basis.effective_basis()
    assert b.shape == (6, 24)
    assert torch.allclose(b @ b.t(), torch.eye(6), atol=1e-5)
    ws = basis(torch.zeros(2, 6))
    assert ws.shape == (2, 3, 8)
    assert torch.equal(ws[0, 2], torch.arange(8.0))  # alpha = 0 -> the offset = w_avg on every layer
    alpha = torch.randn(4, 6)
    assert torch.allclose(basis(alpha).flatten(1) - basis.offset, alpha @ b, atol=1e-5)


def test_basis_mean_offset_and_none_mode():
    torch.manual_seed(0)
    basis = PersonalizedBasis(k=4, num_ws=2, w_dim=5, ortho="none", offset_init="basis_mean", rows="raw")
    assert torch.allclose(basis.offset, basis.basis.mean(0))
    assert torch.equal(basis.effective_basis(), basis.basis)


def test_orthogonality_ablation_is_at_equal_scale_by_default():
    """Issue #19: with qr the rows are unit-length; none/loss keep randn rows of length ~sqrt(d)
    unless rows='unit' (the default), so the ablation compares orthogonality, not the scale."""
    torch.manual_seed(0)
    num_ws, w_dim, k = 4, 64, 6
    alpha = torch.randn(3, k)
    shifts = {}
    for ortho in ("qr", "none", "loss"):
        basis = PersonalizedBasis(k=k, num_ws=num_ws, w_dim=w_dim, ortho=ortho, offset_init="basis_mean")
        rows = basis.effective_basis()
        assert torch.allclose(rows.norm(dim=1), torch.ones(k), atol=1e-5), ortho
        shifts[ortho] = (basis(alpha).flatten(1) - basis.offset).norm(dim=1)
    # no constraint: random unit rows are nearly but not exactly orthogonal, so |w - offset| ~ |alpha|
    assert torch.allclose(shifts["none"], alpha.norm(dim=1), rtol=0.35) and torch.allclose(shifts["qr"], alpha.norm(dim=1), rtol=1e-4)
    raw = PersonalizedBasis(k=k, num_ws=num_ws, w_dim=w_dim, ortho="none", offset_init="basis_mean", rows="raw")
    assert raw.effective_basis().norm(dim=1).mean() > 10  # ~sqrt(256) = 16: the old, unequal scale
    with pytest.raises(ValueError, match="rows="):
        PersonalizedBasis(k=k, num_ws=num_ws, w_dim=w_dim, rows="big", offset_init="basis_mean")


def test_loss_mode_penalty_zero_for_orthogonal_rows_positive_otherwise():
    basis = PersonalizedBasis(k=3, num_ws=2, w_dim=4, ortho="loss", offset_init="basis_mean")
    with torch.no_grad():
        basis.basis.copy_(torch.eye(8)[:3] * torch.tensor([[2.0], [0.5], [3.0]]))  # orthogonal, any row length
    assert float(basis.ortho_penalty().detach()) < 1e-10
    with torch.no_grad():
        basis.basis[1] += basis.basis[0]
    assert float(basis.ortho_penalty().detach()) > 0.1
    basis.ortho_penalty().backward()
    assert basis.basis.grad.abs().sum() > 0


def test_encoders_map_to_k_and_depend_on_their_input():
    torch.manual_seed(0)
    rgb = RGBEncoder(k=7, resolution=32, base_channels=4, max_channels=16, feature_dim=16, head_layers=1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a = rgb(x)
    assert a.shape == (2, 7)
    assert not torch.allclose(a[0], a[1])
    assert rgb(torch.rand(1, 3, 64, 64)).shape == (1, 7)  # resized to the encoder's resolution
    tdmm = ExpressionEncoder(k=7, hidden=16, layers=2)
    e = torch.randn(2, 76)
    assert tdmm(e).shape == (2, 7) and not torch.allclose(tdmm(e)[0], tdmm(e)[1])
    aud = AudioEncoder(k=7, hidden=16, layers=2)
    w = torch.randn(3, 16, 29)
    assert aud(w).shape == (3, 7)
    aud.smoothing.fill_(True)
    neighbours = torch.randn(3, 8, 16, 29)
    assert aud(w, neighbours).shape == (3, 7)
    changed = neighbours.clone()
    changed[:, 0] += 1.0  # a neighbouring frame's audio changes the smoothed coefficients
    assert not torch.allclose(aud(w, neighbours), aud(w, changed))


def test_neighbour_windows_are_ordered_and_zero_padded():
    track = {i: torch.full((16, 29), float(i)) for i in range(10)}
    index = torch.tensor([0, 5])
    win = gather_neighbour_windows(index, torch.stack([track[0], track[5]]), track)
    assert win.shape == (2, 8, 16, 29)
    assert win[1, :, 0, 0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # 4 before, the frame, 3 after
    assert win[0, :, 0, 0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3]  # frames -4..-1 are zero windows
    own = gather_neighbour_windows(index, torch.stack([track[0], track[5]]))  # no track: the batch itself
    assert own[1, 4, 0, 0] == 5 and own[1, 0].abs().sum() == 0


def test_neighbour_windows_own_padding_repeats_the_frame():
    """AD-NeRF's rendering without a track: a neighbour missing from the batch is the frame's own window."""
    audio = torch.stack([torch.full((16, 29), 3.0), torch.full((16, 29), 4.0), torch.full((16, 29), 9.0)])
    win = gather_neighbour_windows(torch.tensor([3, 4, 9]), audio, pad="own")
    assert win[0, :, 0, 0].tolist() == [3, 3, 3, 3, 3, 4, 3, 3]  # frame 4 is in the batch, the rest repeat frame 3
    assert win[2, :, 0, 0].tolist() == [9] * 8  # a lone frame: exactly its own window
    with pytest.raises(ValueError, match="pad"):
        gather_neighbour_windows(torch.tensor([3]), audio[:1], pad="edge")


def test_prior_renders_and_condition_changes_output():
    torch.manual_seed(0)
    G = StandInGenerator()
    assert torch.equal(generator_w_avg(G), G.backbone.mapping.w_avg)
    model = PersonalizedPrior(G, "3dmm", k=5, resolution=8, mlp_hidden=16, mlp_layers=1)
    cond = {"expression": torch.randn(2, 76)}
    out = model(cond, torch.zeros(2, 25))
    assert out["image"].shape == (2, 3, 8, 8) and out["alpha"].shape == (2, 5) and out["ws"].shape == (2, 3, 8)
    other = model({"expression": cond["expression"] + 1}, torch.zeros(2, 25))["image"]
    assert not torch.allclose(out["image"], other)
