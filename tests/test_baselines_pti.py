"""PTI baseline: inversion + pivotal tuning reduce the error, the per-frame cache, the run contract."""

from __future__ import annotations

import json

import pytest
import torch

from persona import cameras
from persona.baselines import pti
from persona.eg3d import load_generator
from persona.runs import RunDir

STEPS = {"w_avg_samples": 32, "w_steps": 10, "wplus_steps": 5, "tune_steps": 10, "use_lpips": False}
# the tiny preset shrunk further (32^2 output, 16^2 rays, 12+12 samples): seconds per inversion
SMALL = {"neural_rendering_resolution": 16, "sr_input_resolution": 16, "plane_resolution": 32,
         "depth_resolution": 12, "depth_resolution_importance": 12}


def tiny_generator() -> torch.nn.Module:
    """The real EG3D generator (tiny preset, shrunk), randomly initialised: tests must not depend
    on the shipped prior."""
    from persona.eg3d import build_generator

    torch.manual_seed(0)
    return build_generator("tiny", **SMALL).eval()


@pytest.fixture(scope="module")
def generator():
    return tiny_generator()


@pytest.fixture(scope="module")
def frame(generator):
    """A target the generator can reach: a random latent rendered from a frontal camera."""
    camera = torch.as_tensor(cameras.camera_label(0.0, 0.0), dtype=torch.float32)[None]
    torch.manual_seed(2)  # a latent whose render is far from the w_avg render
    with torch.no_grad():
        ws = generator.mapping(torch.randn(1, generator.z_dim), camera)
        image = generator.synthesis(ws, camera)["image"].clamp(-1, 1)
    return image, camera


def test_inversion_then_tuning_reduce_error(generator, frame):
    image, camera = frame
    method = pti.build_method(STEPS, generator=generator)
    before = [p.detach().clone() for p in generator.parameters()]
    result = method.invert(image, camera, index=0)
    s = result.stats
    assert s["mse_w"] < 0.5 * s["mse_w_avg"], s  # inversion beats the w_avg render
    assert s["mse_wplus"] <= s["mse_w"] * 1.05, s
    assert s["mse_tuned"] < s["mse_wplus"], s  # pivotal tuning improves further
    assert s["tune_steps"] == STEPS["tune_steps"]  # no LPIPS -> no early stop
    assert s["seconds"] > 0 and s["seconds"] == pytest.approx(s["inversion_seconds"] + s["tuning_seconds"])
    # the prior itself is untouched: tuning works on a copy
    assert result.generator is not generator
    assert all(torch.equal(a, b) for a, b in zip(before, generator.parameters()))


def test_cache_per_frame_and_input_camera(generator, frame, tmp_path):
    image, camera = frame
    method = pti.build_method(STEPS, generator=generator)

    class Train:
        root = tmp_path / "data"

    run = RunDir(tmp_path / "run")
    method.fit(Train(), run)
    config = json.loads((run.root / "config.json").read_text())
    assert config["method"] == "pti" and config["data"] == str(Train.root)
    assert pti.make_config(config["config"]) == method.config  # config.json restores the method

    cond = {"image": image, "camera": camera, "index": torch.tensor([7])}
    gt_view = method.render(cond, camera)
    novel_cam = torch.as_tensor(cameras.novel_view(camera[0].numpy(), 25.0, 0.0), dtype=torch.float32)[None]
    novel = method.render(cond, novel_cam)
    again = method.render(cond, camera)
    assert method.inversions_run == 1  # GT view + novel view + repeat: one inversion
    assert torch.allclose(gt_view, again, atol=1e-5)
    assert (novel - gt_view).abs().mean() > 1e-3  # the target camera is honoured
    assert gt_view.shape == image.shape and gt_view.abs().max() <= 1.0

    # another frame index -> a new inversion; another input camera -> another key
    method.render({**cond, "index": torch.tensor([8])}, camera)
    assert method.inversions_run == 2
    assert pti.cache_key(7, camera) != pti.cache_key(7, novel_cam)
    assert pti.cache_key(7, camera) == pti.cache_key(7, camera.clone() + 1e-7)

    rows = [r for r in run.metrics() if "seconds" in r]
    assert [r["frame"] for r in rows] == [7, 8]
    assert all(r["seconds"] > 0 and r["lpips_used"] is False for r in rows)
    assert method.seconds_per_frame() > 0


def test_novel_view_sample_inverts_the_test_frame_not_the_novel_ground_truth(generator, frame):
    """A NovelViewDataset batch (as evaluate_method passes it) holds the novel-view ground truth in
    'image': PTI must invert the TEST frame named by 'source_index' instead, reusing the cache."""
    image, camera = frame
    method = pti.build_method(STEPS, generator=generator)

    class TestSplit:
        root = "/nonexistent/test-split"

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": image[0], "camera": camera[0], "index": 3}

    method.set_test_frames(TestSplit())
    gt_view = method.render({"image": image, "camera": camera, "index": torch.tensor([3])}, camera)
    novel_cam = torch.as_tensor(cameras.novel_view(camera[0].numpy(), -25.0, 0.0), dtype=torch.float32)[None]
    leak = torch.ones_like(image)  # what a cheating method would copy
    sample = {"image": leak, "camera": novel_cam, "index": torch.tensor([3]), "source_index": torch.tensor([3]),
              "view": ["yaw-25"]}
    novel = method.render(sample, novel_cam)
    assert method.inversions_run == 1  # the GT view's inversion is reused
    assert (novel - leak).abs().mean() > 0.3 and (novel - gt_view).abs().mean() > 1e-3
    with_source = method.render({**sample, "source_image": image, "source_camera": camera}, novel_cam)
    assert method.inversions_run == 1 and torch.allclose(with_source, novel, atol=1e-5)
    with pytest.raises(KeyError, match="not in the test split"):
        method.render({**sample, "source_index": torch.tensor([99])}, novel_cam)


def test_config_profiles_and_errors():
    paper = pti.make_config(None, "paper")
    assert (paper.w_steps, paper.tune_steps, paper.tune_lr, paper.lpips_threshold) == (450, 350, 3e-4, 0.06)
    assert pti.make_config({"tune_steps": 3}, "smoke").tune_steps == 3
    assert pti.make_config({"profile": "smoke"}).profile == "smoke"
    with pytest.raises(ValueError, match="unknown field"):
        pti.make_config({"steps": 3})
    with pytest.raises(ValueError, match="does not train"):
        pti.make_config({"iterations": 3})
    with pytest.raises(FileNotFoundError, match="generator"):
        load_generator("/nonexistent/G.pkl", field="PTI config field 'generator'")


def test_disk_cache_survives_a_new_process(generator, frame, tmp_path):
    """A generator given by file: each frame's pivot + tuned generator go to RUN/pti_cache/, so a
    method restored from the run (e.g. `persona eval` after `persona train`) does not re-invert."""
    from persona.eg3d import save_generator

    image, camera = frame
    path = save_generator(generator, tmp_path / "G.safetensors")
    cfg = {**STEPS, "generator": str(path)}

    class Train:
        root = tmp_path / "data"

    run = RunDir(tmp_path / "run")
    first = pti.build_method(cfg)
    first.fit(Train(), run)
    cond = {"image": image, "camera": camera, "index": torch.tensor([5])}
    out = first.render(cond, camera)
    assert first.inversions_run == 1 and len(list((run.root / "pti_cache").glob("frame_5_*.safetensors"))) == 1

    second = pti.build_method(run.read_config()["config"])
    second.load(run)
    again = second.render(cond, camera)
    assert second.inversions_run == 0
    assert torch.allclose(out, again, atol=1e-5)
    # a different input image under the same index is not served from the stale file
    assert second._disk_path(pti.cache_key(5, camera), image) != second._disk_path(pti.cache_key(5, camera), -image)


def test_a_frame_inverts_to_the_same_tensors_whatever_ran_before(generator, frame):
    """PTI's "checkpoints" are its per-frame results: an evaluation killed after some frames
    resumes by inverting the remaining ones in a new process, so a frame's result must not depend
    on the frames (or any random draws) before it."""
    image, camera = frame
    few = {**STEPS, "w_avg_samples": 8, "w_steps": 2, "wplus_steps": 2, "tune_steps": 2}
    alone = pti.build_method(few, generator=generator).invert(image, camera, index=1)
    after = pti.build_method(few, generator=generator)
    after.invert(-image, camera, index=0)
    torch.rand(7)
    again = after.invert(image, camera, index=1)
    assert torch.equal(alone.ws, again.ws)
    tuned = again.generator.state_dict()
    assert all(torch.equal(v, tuned[k]) for k, v in alone.generator.state_dict().items())
