"""Training the tiny EG3D prior (persona/eg3d/train.py) and its discriminator."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from persona import cameras
from persona.eg3d.discriminator import DiscriminatorConfig, DualDiscriminator, d_logistic_loss, r1_penalty
from persona.eg3d.train import (DEFAULT_ASSET, PRIOR_PROFILES, PriorTrainer, render_yaw_grid, train_prior)
from persona.runs import RunDir

# a generator much smaller than 'tiny' (32^2 output from 16^2 rendering) so a step takes ~0.1 s
MINI = (("plane_resolution", 32), ("channel_base", 256), ("channel_max", 32), ("plane_channels", 8),
        ("decoder_hidden", 16), ("decoder_output_dim", 8), ("neural_rendering_resolution", 16),
        ("sr_input_resolution", 16), ("sr_channels", (16,)), ("depth_resolution", 6),
        ("depth_resolution_importance", 6), ("z_dim", 32), ("w_dim", 32))


def mini_config(**kw):
    return replace(PRIOR_PROFILES["smoke"], generator_overrides=MINI, encoder_channels=8, **kw)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(batch=4, res=32, raw=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(batch, 3, res, res, generator=g) * 2 - 1,
            "image_raw": torch.rand(batch, 3, raw, raw, generator=g) * 2 - 1}


def test_discriminator_is_dual_and_camera_conditioned():
    torch.manual_seed(0)
    D = DualDiscriminator(DiscriminatorConfig(img_resolution=32, channel_base=256, channel_max=32))
    x = images()
    cam = torch.from_numpy(cameras.orbit(4, 30.0)).float()
    logits = D(x, cam)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    # the raw image matters (dual discrimination), and so does the camera (projection conditioning)
    assert not torch.allclose(D({"image": x["image"], "image_raw": -x["image_raw"]}, cam), logits)
    assert not torch.allclose(D(x, cam.flip(0)), logits)
    r1 = r1_penalty(D, x, cam)
    assert r1.item() > 0 and r1.requires_grad
    assert d_logistic_loss(torch.full((2, 1), 10.0), torch.full((2, 1), -10.0)).item() < 1e-3


def test_smoke_training_losses_move_sensibly(tmp_path):
    trainer = train_prior(mini_config(steps=10, checkpoint_every=10), tmp_path / "run", progress=False)
    rows = RunDir(tmp_path / "run").metrics()
    assert [r["step"] for r in rows] == list(range(1, 11))
    rec = [r["rec"] for r in rows]
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if isinstance(v, float))
    assert sum(rec[-3:]) / 3 < rec[0]                     # reconstruction improves
    assert all(r["latent"] > -1 for r in rows)            # the latent-direction term is logged
    assert "r1" in rows[0] and rows[0]["r1"] > 0          # lazy R1 runs on the first step
    # the EMA generator followed the trained one
    g0 = PriorTrainer(mini_config()).G_ema.state_dict()
    moved = [k for k, v in trainer.G_ema.state_dict().items() if v.is_floating_point() and not torch.equal(v, g0[k])]
    assert moved


def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path):
    config = mini_config(steps=3, checkpoint_every=2, log_every=1)
    train_prior(config, tmp_path / "a", progress=False)            # checkpoints at 2 and 3
    run = RunDir(tmp_path / "a")
    assert [s for s, _ in run.list_checkpoints()] == [2, 3]
    with pytest.raises(FileExistsError):
        train_prior(config, tmp_path / "a", progress=False)        # refuses to overwrite without resume
    resumed = train_prior(replace(config, steps=5), tmp_path / "a", resume=True, progress=False)
    assert resumed.step_index == 5 and resumed.images_seen == 5 * config.batch
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4, 5]
    straight = train_prior(replace(config, steps=5), tmp_path / "b", progress=False)
    for name, value in straight.G.state_dict().items():
        torch.testing.assert_close(resumed.G.state_dict()[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_sample_grid_shape_and_latent_changes_image():
    torch.manual_seed(0)
    G = PriorTrainer(mini_config()).G_ema
    z = torch.randn(2, G.z_dim)
    grid = render_yaw_grid(G, z)
    assert grid.shape == (2, 5, 3, 32, 32) and torch.isfinite(grid).all()
    assert (grid[0] - grid[1]).abs().mean() > 1e-4


@pytest.mark.skipif(not DEFAULT_ASSET.is_file(), reason="shipped prior not present (python -m persona prior train)")
def test_shipped_prior_loads_and_renders_distinct_finite_heads():
    from persona.eg3d import load_prior

    G = load_prior()
    assert G.config.name == "tiny"
    torch.manual_seed(0)
    z = torch.randn(2, G.z_dim)
    cam = torch.from_numpy(cameras.camera_label(0.0, 0.0)).float().expand(2, 25)
    with torch.no_grad():
        out = G.synthesis(G.mapping(z, cam), cam)
    assert out["image"].shape == (2, 3, G.img_resolution, G.img_resolution)
    assert out["image_raw"].shape == (2, 3, G.neural_rendering_resolution, G.neural_rendering_resolution)
    assert torch.isfinite(out["image"]).all() and out["image"].abs().max() < 3
    assert (out["image"][0] - out["image"][1]).abs().mean() > 1e-3  # different z, different head


def test_prefetched_batches_match_the_unprefetched_stream_and_resume_point(tmp_path):
    config = mini_config(steps=3, checkpoint_every=3, log_every=1)
    plain = train_prior(config, tmp_path / "plain", progress=False, prefetch=0)
    ahead = train_prior(config, tmp_path / "ahead", progress=False, prefetch=2)
    # the data generator stands where the last consumed batch left it, not where the thread got to
    assert torch.equal(plain.data_rng.get_state(), ahead.data_rng.get_state())
    for name, value in plain.G.state_dict().items():
        torch.testing.assert_close(ahead.G.state_dict()[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_regenerate_command_is_device_neutral():
    from persona.eg3d.train import regenerate_command

    argv = ["--profile", "default", "--batch", "16", "--device", "cuda", "--prefetch", "4", "--max-minutes", "8",
            "--export", "x.safetensors"]
    cmd = regenerate_command(mini_config(), argv, 1234)
    assert "--device" not in cmd and "--prefetch" not in cmd and "--max-minutes" not in cmd
    assert "--batch 16" in cmd and cmd.endswith("--seed 0 --steps 1234")
