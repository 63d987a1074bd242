"""The paper profile's 512-px paths on CPU: an official-format ffhq512 pickle (random weights)
loads and renders a 512^2 frame, one training step of ours runs at the paper preset, and the
NerFACE (512 px) and AD-NeRF (450 px) readers take folders in the real layouts.

Cheap only where the paper profile allows it: the pickle's own rendering options (neural
rendering at 32^2, 4+4 depth samples) keep a 512 frame to seconds on one core; every network
keeps the release's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from persona import cameras
from persona.eg3d import build_generator, load_official
from persona.eg3d.release_format import write_release_pickle

CHEAP = dict(neural_rendering_resolution=32, depth_resolution=4, depth_resolution_importance=4)


@pytest.fixture(scope="module")
def ffhq512_pickle(tmp_path_factory):
    """(path, G): a random-weight ffhq512 generator in the release's pickle format; its module_src
    would leave a marker file if anything executed it."""
    torch.manual_seed(0)
    G = build_generator("ffhq512").eval()
    with torch.no_grad():
        G.backbone.mapping.w_avg.normal_()
    folder = tmp_path_factory.mktemp("ffhq512")
    marker = folder / "executed.txt"
    src = f"open({str(marker)!r}, 'w').write('executed')\nraise RuntimeError('module_src was executed')\n"
    path = write_release_pickle(G, folder / "ffhq512-random.pkl", module_src=src, **CHEAP)
    return path, G, marker


@pytest.mark.slow  # ~8 s on a quiet core: one 512^2 frame of the full-size networks
def test_official_ffhq512_pickle_loads_and_renders_a_512_frame(ffhq512_pickle):
    path, G, marker = ffhq512_pickle
    H = load_official(path)  # preset ffhq512
    assert not marker.exists()
    assert H.config.name == "ffhq512" and H.neural_rendering_resolution == 32 and H.config.depth_resolution == 4
    ours, theirs = G.state_dict(), H.state_dict()
    assert ours.keys() == theirs.keys()
    for name in ("backbone.mapping.w_avg", "backbone.synthesis.b256.torgb.weight", "superresolution.block1.conv1.weight"):
        assert torch.equal(ours[name], theirs[name])
    c = torch.as_tensor(cameras.camera_label(10.0, 0.0), dtype=torch.float32)[None]
    with torch.no_grad():
        out = H(torch.randn(1, H.z_dim), c)
    assert tuple(out["image"].shape) == (1, 3, 512, 512)
    assert tuple(out["image_raw"].shape) == (1, 3, 32, 32)
    assert torch.isfinite(out["image"]).all() and out["image"].std() > 0


@pytest.mark.slow  # ~30 s on a quiet core: forward + backward through the 512^2 generator
def test_one_training_step_of_ours_at_the_paper_preset(ffhq512_pickle, tmp_path):
    from persona.data.dataset import FrameDataset
    from persona.data.real_layouts import write_real_layouts
    from persona.runs import RunDir
    from persona.ours.method import build_method

    path, _, marker = ffhq512_pickle
    nerface, _ = write_real_layouts(tmp_path / "data", 1, train_frames=1, test_frames=1, adnerf_resolution=16)
    train = FrameDataset(nerface[0], "train")
    assert train.resolution == 512
    # the paper profile's TrainConfig (k 50, 6 x 512 MLP ...), one sample per batch, on CPU, no LPIPS weights here
    method = build_method({"profile": "paper", "modality": "3dmm", "generator": str(path), "device": "cpu",
                           "batch_size": 1, "iterations": 2, "frozen_iterations": 2, "log_every": 1,
                           "lambda_lpips": 0.0})
    run = RunDir(tmp_path / "run")
    method.fit(train, run, stop_after=1)
    assert not marker.exists()
    assert method.config.k == 50 and method.config.resolution == 512 and method.model.resolution == 512
    assert method.config.generator_source.startswith("official EG3D pickle")
    (line,) = run.metrics()
    assert line["step"] == 1 and line["stage"] == 1 and np.isfinite(line["loss"]) and line["lpips"] == 0.0


def test_nerface_and_adnerf_readers_at_512_and_450(tmp_path):
    from persona.data.dataset import FrameDataset
    from persona.data.formats import is_adnerf, read_adnerf, read_nerface
    from persona.data.real_layouts import write_real_layouts
    from persona.data.world import benchmark_identity_seeds, make_video

    nerface, adnerf = write_real_layouts(tmp_path, 1, train_frames=2, test_frames=1)
    (nf,), (ad,) = nerface, adnerf
    assert not is_adnerf(nf) and is_adnerf(ad)
    assert "camera_label" not in read_nerface(nf, "train").frames[0]  # the real layout: no synthetic extras
    assert read_adnerf(ad, "train").cx == pytest.approx(225.0)
    seed = benchmark_identity_seeds(1)[0]
    truth = {"nerface": make_video(3, 25, seed * 10 + 1, True).cameras, "adnerf": make_video(3, 25, seed * 10 + 2, False).cameras}
    for root, kind, size in ((nf, "nerface", 512), (ad, "adnerf", 450)):
        for split, first in (("train", 0), ("test", 2)):
            ds = FrameDataset(root, split)
            s = ds[0]
            assert ds.resolution == size and tuple(s["image"].shape) == (3, size, size)
            assert torch.isfinite(s["image"]).all() and -1 <= float(s["image"].min()) < float(s["image"].max()) <= 1
            assert tuple(s["audio"].shape) == (16, 29)
            # rotation and intrinsics come back exactly; tracker units are rescaled so that the
            # cameras lie at EG3D's radius from the tracker's origin (real data has no pivot)
            got, want = cameras.split_label(np.asarray(s["camera"])), cameras.split_label(truth[kind][first])
            np.testing.assert_allclose(got[0][:3, :3], want[0][:3, :3], atol=1e-4)
            np.testing.assert_allclose(got[1], want[1], atol=1e-4)
            direction = want[0][:3, 3] / np.linalg.norm(want[0][:3, 3])
            np.testing.assert_allclose(got[0][:3, 3], cameras.RADIUS * direction, atol=0.02)
        assert ds.background is not None and tuple(ds.background.shape) == (3, size, size)


def test_the_release_choices_of_the_paper_profile():
    from persona.audio_nets import AudioAttNet
    from persona.ours.encoders import RGBEncoder
    from persona.ours.model import PersonalizedPrior
    from persona.release_encoder import ReleaseRGBEncoder
    from persona.ours.train import loss_images, train_config

    cfg = train_config("paper")
    assert (cfg.rgb_encoder, cfg.audio_att_dims, cfg.loss_resolution) == ("release", 32, 256)
    assert (train_config("default").rgb_encoder, train_config("default").audio_att_dims) == ("persona", None)
    with pytest.raises(ValueError, match="rgb_encoder"):
        train_config("smoke", rgb_encoder="lia")

    torch.manual_seed(0)
    enc = ReleaseRGBEncoder(k=50)  # LIA's EncoderApp at 256 px + 5 linear layers
    names = dict(enc.named_parameters())
    assert tuple(names["trunk.0.weight"].shape) == (64, 3, 1, 1)  # 256 px: 64 channels
    assert tuple(names["trunk.8.weight"].shape) == (512, 512, 4, 4)  # 6 down-blocks 256 -> 4, then the 4x4 conv
    assert [tuple(m.weight.shape) for m in enc.head] == [(512, 512)] * 4 + [(50, 512)]
    x = torch.rand(2, 3, 512, 512) * 2 - 1
    assert tuple(enc(x).shape) == (2, 50)  # any input size, resized to 256
    a, b, zero = torch.randn(3, 512), torch.randn(3, 512), torch.zeros(3, 512)
    with torch.no_grad():  # no activations in the head: it is affine
        torch.testing.assert_close(enc.head(a + b) - enc.head(zero), enc.head(a) - enc.head(zero) + enc.head(b) - enc.head(zero),
                                   atol=1e-4, rtol=1e-4)
    assert not isinstance(torch.nn.Module(), RGBEncoder) and "NOT the release's" in RGBEncoder.__doc__

    att = AudioAttNet(64, score_dims=32)
    feats = torch.randn(2, 8, 64)
    other = feats.clone()
    other[..., 32:] = torch.randn(2, 8, 32)
    torch.testing.assert_close(att.attention(feats), att.attention(other))  # scores read the first 32 only
    assert not torch.allclose(att(feats), att(other))  # the weighted sum covers all 64
    assert att.scores[0].in_channels == 32 and AudioAttNet(64).scores[0].in_channels == 64  # persona: scores from all 64

    pred, target = torch.rand(1, 3, 512, 512), torch.rand(1, 3, 512, 512)
    p256, t256 = loss_images(pred, target, 256)
    assert tuple(p256.shape) == tuple(t256.shape) == (1, 3, 256, 256)
    assert loss_images(pred, target, None)[0] is pred

    G = build_generator("tiny")
    model = PersonalizedPrior(G, "rgb", k=8, resolution=64, rgb_encoder="release", rgb_encoder_resolution=32, rgb_feature_dim=64)
    assert isinstance(model.encoder, ReleaseRGBEncoder) and model.encoder.resolution == 32


def test_paper_bench_projection_counts_runs_and_spreads_them_over_devices():
    from persona.paper_bench import PAPER_RUNS, paper_steps, project

    assert paper_steps("ours", {"modality": "rgb"}) == 200_000 and paper_steps("nerface", {}) == 1_000_000
    assert paper_steps("nha", {}) == 30_000
    hours = project({"ours rgb": 0.36, "NHA": 3.6}, {"ours rgb": 10_000, "NHA": 1_000}, devices=1, identities=3)
    assert PAPER_RUNS["ours rgb"] == 6
    assert hours["ours rgb"] == pytest.approx(18 * 1.0) and hours["NHA"] == pytest.approx(3 * 1.0)
    assert hours["total"] == pytest.approx(21.0) and hours["wall"] == pytest.approx(21.0)
    assert project({"ours rgb": 0.36, "NHA": 3.6}, {"ours rgb": 10_000, "NHA": 1_000}, devices=7, identities=3)["wall"] == pytest.approx(3.0)
    # DFRF's base model is trained once for all identities
    shared = project({"DFRF": 0.36, "DFRF base": 0.36}, {"DFRF": 10_000, "DFRF base": 10_000}, devices=1, identities=3)
    assert shared["DFRF"] == pytest.approx(3.0) and shared["DFRF base"] == pytest.approx(1.0)


def test_paper_bench_dry_run_keeps_dfrfs_base_model_small_and_out_of_the_repository(tmp_path):
    from persona.baselines.dfrf import PROFILES
    from persona.paper_bench import method_overrides

    got = method_overrides("dfrf", "cuda", tmp_path / "g.pkl", tmp_path)
    assert got["pretrain_steps"] == 1 and got["pretrain_identities"] == 1
    assert got["pretrain_frames"] == PROFILES["paper"].num_references and got["base_dir"] == str(tmp_path / "dfrf-base")
    assert got["log_every"] == 1 and got["device"] == "cuda"
    assert method_overrides("ours", "cpu", tmp_path / "g.pkl", tmp_path)["generator"] == str(tmp_path / "g.pkl")


def test_paper_bench_reads_the_trainers_own_clock(tmp_path):
    import json

    from persona.paper_bench import _logged_seconds_per_step

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train_seconds": t}) + "\n"
                                                     for s, t in ((1, 100.0), (2, 130.0), (3, 150.0))))
    assert _logged_seconds_per_step(tmp_path) == pytest.approx(25.0)  # the first step (warm-up) left out
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 2, "seconds": 9.0}) + "\n")
    assert _logged_seconds_per_step(tmp_path) is None and _logged_seconds_per_step(tmp_path / "none") is None
    # the baselines log ``seconds`` (their cumulative clock) when they log every step
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0, "seconds": t}) + "\n"
                                                     for s, t in ((1, 5.0), (2, 5.5), (3, 6.0))))
    assert _logged_seconds_per_step(tmp_path) == pytest.approx(0.5)
