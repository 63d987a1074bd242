"""Ours' audio encoder keeps the audio (issue #20): AudioNet's init, AudioAttNet's start, the profiles."""

from __future__ import annotations

import pytest
import torch

from persona.data import audio
from persona.errors import PersonaInputError
from persona.audio_nets import AudioAttNet
from persona.ours.encoders import AudioEncoder, centre_attention_, he_init_
from persona.ours.train import train_config


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    """[75,16,29] windows of 3 s of the synthetic world's speech (the features every audio video carries)."""
    track = audio.speech_track(3.0, seed=5)
    return torch.as_tensor(audio.audio_windows(audio.synthesize(track, seed=5), 75, 25.0))


def spread_ratio(alpha: torch.Tensor) -> float:
    """How much the coefficients [T,k] vary over frames, relative to their size."""
    return float(alpha.std(0).mean() / alpha.mean(0).abs().mean())


@torch.no_grad()
def test_he_init_lets_the_audio_reach_the_coefficients(windows):
    # PyTorch's default init shrinks the features' variance ~3x a layer: the coefficients barely
    # change with the audio (0.1 % of their size on id00 audio); He init keeps it (~30 %, as 3DMM's)
    for seed in range(3):
        torch.manual_seed(seed)
        he = spread_ratio(AudioEncoder(k=8, hidden=32, layers=2, audio_init="he")(windows))
        torch.manual_seed(seed)
        plain = spread_ratio(AudioEncoder(k=8, hidden=32, layers=2, audio_init="torch")(windows))
        assert he > 0.05, (seed, he)
        assert plain < 0.02 and he > 10 * plain, (seed, he, plain)


@torch.no_grad()
def test_he_init_is_zero_bias_and_fan_in_scaled():
    torch.manual_seed(0)
    net = he_init_(torch.nn.Sequential(torch.nn.Linear(400, 300), torch.nn.Conv1d(29, 32, 3)))
    lin, conv = net[0], net[1]
    assert torch.count_nonzero(lin.bias) == 0 and torch.count_nonzero(conv.bias) == 0
    assert abs(float(lin.weight.std()) - (2 / 400) ** 0.5) < 0.005  # gain sqrt(2/(1+0.02^2)) / sqrt(fan_in)
    assert abs(float(conv.weight.std()) - (2 / 87) ** 0.5) < 0.02


@torch.no_grad()
def test_centre_attention_starts_on_the_frame_itself():
    torch.manual_seed(0)
    att = centre_attention_(AudioAttNet())
    w = att.attention(torch.randn(6, 8, 64) * 5)
    assert torch.allclose(w[:, 4], torch.full((6,), 0.9), atol=1e-5)  # window 4 = the frame (gather_neighbour_windows)
    assert torch.allclose(w.sum(1), torch.ones(6), atol=1e-6)
    plain = AudioAttNet().attention(torch.randn(6, 8, 64))
    assert float(plain.max()) < 0.5  # PyTorch's default: a near-even mean over 320 ms
    with pytest.raises(ValueError, match="centre_weight"):
        centre_attention_(AudioAttNet(), 1.0)


@torch.no_grad()
def test_switching_smoothing_on_keeps_the_encoder_output_close(windows):
    # the trainer switches AudioAttNet on late (audio_smooth_after); starting it on the frame's own
    # window keeps the coefficients close to what stage 1 learned instead of averaging 8 frames
    from persona.audio_nets import gather_neighbour_windows

    index = torch.arange(len(windows))
    track = {int(i): w for i, w in zip(index, windows)}
    neighbours = gather_neighbour_windows(index, windows, track)
    jumps = {}
    for att_init in ("centre", "torch"):
        torch.manual_seed(0)
        enc = AudioEncoder(k=8, hidden=32, layers=2, att_init=att_init)
        before = enc(windows)
        enc.smoothing.fill_(True)
        after = enc(windows, neighbours)
        jumps[att_init] = float((after - before).std(0).mean() / before.std(0).mean())
    assert jumps["centre"] < 0.5 * jumps["torch"], jumps


def test_profiles_pick_the_audio_inits_and_check_them():
    default, paper = train_config("default", modality="audio"), train_config("paper", modality="audio")
    assert (default.audio_init, default.audio_att_init) == ("he", "centre")
    assert (paper.audio_init, paper.audio_att_init) == ("torch", "torch")  # AD-NeRF's / the release's
    assert train_config("default", audio_init="torch").audio_init == "torch"
    with pytest.raises(PersonaInputError, match="audio_init"):
        train_config("default", audio_init="xavier")
    with pytest.raises(PersonaInputError, match="audio_att_init"):
        train_config("default", audio_att_init="left")
