"""Ours' optional stage-2 generator lr and gradient clipping (issue #20, second round;
persona/ours/train.py): off by default, selectable, logged."""

from __future__ import annotations

import pytest
import torch

from persona.ours.train import AUDIO_ENCODER_LR, RGB_RECIPE, clip_gradients, fit_prior, parameter_groups, train_config
from persona.runs import RunDir

from test_train import RES, StandInFrames, make_model, tiny_cfg
from test_prior import StandInGenerator


def test_second_round_settings_and_the_paper_keeps_its_optimiser():
    for m in ("rgb", "3dmm", "audio"):
        cfg = train_config("default", modality=m)
        assert (cfg.grad_clip, cfg.frozen_iterations) == (0.0, 100)
    paper = train_config("paper", modality="3dmm")
    assert (paper.basis_lr, paper.encoder_lr, paper.generator_lr, paper.mouth_weight, paper.grad_clip) == (None, None, None, 0.0, 0.0)
    rgb = train_config("default", modality="rgb")  # RGB keeps the paper's optimiser until a recipe is stable everywhere
    assert all(getattr(rgb, k) == v for k, v in RGB_RECIPE.items())


def test_audio_encoder_lr_is_its_own_where_the_profile_deviates_and_a_given_value_wins():
    assert train_config("default", modality="audio").encoder_lr == AUDIO_ENCODER_LR == 1e-3
    assert train_config("smoke", modality="audio").encoder_lr == AUDIO_ENCODER_LR
    assert train_config("default", modality="3dmm").encoder_lr == 3e-3  # 3DMM keeps the recipe's
    assert train_config("default", modality="audio", encoder_lr=3e-3).encoder_lr == 3e-3
    assert train_config("paper", modality="audio").encoder_lr is None  # the paper's optimiser: every parameter at lr


def test_generator_lr_is_the_3dmm_and_audio_default_rgb_and_the_paper_keep_lr():
    """Thirteenth round of issue #20: the stage-2 generator at 1e-3 (3DMM, audio on the CPU profiles)."""
    for profile in ("default", "smoke"):
        assert train_config(profile, modality="3dmm").generator_lr == train_config(profile, modality="audio").generator_lr == 1e-3
        assert train_config(profile, modality="rgb").generator_lr is None  # RGB keeps the paper's optimiser
    assert train_config("paper", modality="3dmm").generator_lr is None and train_config("paper", modality="audio").generator_lr is None
    assert train_config("default", modality="rgb", generator_lr=2e-3).generator_lr == 2e-3  # a given value wins
    assert train_config("default", modality="3dmm", generator_lr=3e-4).generator_lr == 3e-4
    # RGB's recipe still applies when only the generator lr is given
    assert train_config("default", modality="rgb", generator_lr=2e-3).basis_lr is None


def test_generator_trains_at_its_own_lr_when_set():
    cfg = tiny_cfg(generator_lr=0.002)
    model, G = make_model(cfg)
    groups = parameter_groups(model, cfg)
    gen = [g for g in groups if {id(p) for p in g["params"]} == {id(p) for p in G.parameters()}]
    assert len(gen) == 1 and gen[0]["lr"] == 0.002
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["params"] for g in groups)  # no empty group
    assert len(parameter_groups(model, train_config("paper"))) == 1  # the paper: every parameter at lr


def test_clip_gradients_returns_the_norm_and_bounds_it():
    model, _ = make_model(tiny_cfg())
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    total = float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
    assert clip_gradients(model, 0.0) == pytest.approx(total, rel=1e-5)  # off: measured, unchanged
    assert clip_gradients(model, 1.0) == pytest.approx(total, rel=1e-5)
    after = float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())
    assert after == pytest.approx(1.0, rel=1e-4)


def test_training_clips_before_the_step_and_logs_norm_and_coefficient_scale(tmp_path):
    """Adam ignores a constant gradient scale, so the clip shows in the loop only through Adam's
    eps: gradients clipped to 1e-12 leave the offset where it was; unclipped ones move it ~lr."""
    torch.manual_seed(0)
    frames = StandInFrames(4, seed=1, teacher=StandInGenerator(res=RES))
    moved = {}
    for clip in (0.0, 1e-12):
        cfg = tiny_cfg(iterations=2, frozen_iterations=1, checkpoint_every=2, grad_clip=clip, basis_lr=0.03)
        model, _ = make_model(cfg)
        start = model.basis.offset.detach().clone()
        fit_prior(model, frames, RunDir(tmp_path / str(clip)), cfg)
        moved[clip] = float((model.basis.offset.detach() - start).abs().max())
        rows = RunDir(tmp_path / str(clip)).metrics()
        assert all(r["grad_norm"] > 1e-6 and r["alpha_rms"] > 0 for r in rows)  # the norm before clipping
    assert moved[0.0] > 0.03 and moved[1e-12] < 1e-4, moved


def test_cosine_schedule_decays_every_group_and_constant_keeps_the_lr(tmp_path):
    from persona.experiments import key_config
    from persona.ours.train import lr_factor

    cfg = tiny_cfg(iterations=4, frozen_iterations=1, checkpoint_every=4, lr_schedule="cosine", basis_lr=0.03)
    assert [round(lr_factor(s, cfg), 4) for s in (1, 3, 5)] == [1.0, 0.5, 0.0]
    assert lr_factor(3, tiny_cfg(iterations=4)) == 1.0  # constant: the paper's and the release's
    assert "lr_schedule" not in key_config(train_config("default", modality="3dmm"))  # cached runs keep their keys
    assert key_config(train_config("default", modality="3dmm", lr_schedule="cosine"))["lr_schedule"] == "cosine"
    moved = {}
    for schedule in ("constant", "cosine"):
        torch.manual_seed(0)
        c = tiny_cfg(iterations=4, frozen_iterations=1, checkpoint_every=4, lr_schedule=schedule, basis_lr=0.03)
        model, _ = make_model(c)
        fit_prior(model, StandInFrames(4, seed=1, teacher=StandInGenerator(res=RES)), RunDir(tmp_path / schedule), c)
        moved[schedule] = model.basis.offset.detach().clone()
    assert not torch.equal(moved["constant"], moved["cosine"])
    with pytest.raises(Exception, match="lr_schedule"):
        train_config("default", lr_schedule="linear")
