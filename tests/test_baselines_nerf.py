"""NerFACE, AD-NeRF and DFRF baselines and their shared NeRF core (persona.baselines).

The scene is a tiny stand-in for a FrameDataset: a shaded sphere (the head) at the pivot in
front of a grey background, whose lower front part (the mouth) changes colour with a scalar
``c`` carried by the expression (dims 0..3) and by the audio window (all features). It is
rendered with the same camera convention as the data (persona.cameras), at 16 x 16 px.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from persona import cameras
from persona.baselines import adnerf, dfrf, nerface
from persona.cameras import project_with_depth, rays
from persona.baselines.nerf_core import (ConditionedNeRF, composite, face_boxes, pixel_uv, positional_encoding,
                                         sample_pdf, sample_ray_pixels)
from persona.errors import PersonaError
from persona.methods import Method
from persona.runs import RunDir

RES = 16
RADIUS_HEAD = 0.35
torch.set_num_threads(1)


def _render_standin(camera: torch.Tensor, c: float, with_mouth_box: bool = False):
    """One frame [3,RES,RES] in [-1,1] of the stand-in scene at ``camera`` [25] (and its mouth box [4])."""
    pix = torch.arange(RES * RES).unsqueeze(0)
    o, d = rays(camera.unsqueeze(0).float(), pixel_uv(pix, RES))
    centre = torch.tensor(cameras.PIVOT)
    oc = o - centre
    b = (oc * d).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + RADIUS_HEAD ** 2
    hit = disc > 0
    t = -b - disc.clamp(min=0).sqrt()
    p = o + t.unsqueeze(-1) * d
    n = (p - centre) / RADIUS_HEAD
    shade = (0.4 + 0.6 * n[..., 2].clamp(min=0)).unsqueeze(-1)
    skin = torch.tensor([0.9, 0.7, 0.55]) * shade
    mouth = (n[..., 1] < -0.35) & (n[..., 2] > 0.5)
    lips = torch.tensor([0.2, 0.1, 0.1]) + c * torch.tensor([0.7, 0.0, 0.3])
    rgb = torch.where(mouth.unsqueeze(-1), lips.expand_as(skin), skin)
    rgb = torch.where(hit.unsqueeze(-1), rgb, torch.tensor([0.5, 0.5, 0.5]))
    image = rgb[0].T.reshape(3, RES, RES) * 2 - 1
    if not with_mouth_box:
        return image
    where = torch.nonzero((mouth & hit)[0].view(RES, RES))
    (y0, x0), (y1, x1) = where.min(0).values.tolist(), where.max(0).values.tolist()
    return image, torch.tensor([x0, y0, x1 + 1, y1 + 1]) / RES


class StandinFrames(torch.utils.data.Dataset):
    """Stand-in for persona.data.dataset.FrameDataset (same sample keys and attributes)."""

    def __init__(self, n: int = 8, seed: int = 0, first_index: int = 0):
        rng = np.random.default_rng(seed)
        self.root, self.split, self.fps, self.resolution = "standin", "train", 25.0, RES
        self.background = torch.full((3, RES, RES), 0.0)  # grey 0.5 in [-1,1]
        self.samples = []
        for i in range(n):
            # frames come in pairs at one camera with a low and a high ``c``: only the mouth tells them apart
            c = float(rng.uniform(0, 0.3) if i % 2 == 0 else rng.uniform(0.7, 1.0))
            if i % 2 == 0:
                cam = torch.as_tensor(cameras.camera_label(float(rng.uniform(-15, 15)), float(rng.uniform(-5, 5)))).float()
            expression = torch.zeros(76)
            expression[:4] = 3 * c
            audio = torch.full((16, 29), c)
            image, mouth_box = _render_standin(cam, c, with_mouth_box=True)
            self.samples.append({"image": image, "camera": cam, "expression": expression, "audio": audio,
                                 "index": first_index + i, "mouth_box": mouth_box, "c": c})

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return {k: v for k, v in self.samples[i].items() if k != "c"}


def _batch(samples):
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def _error(method, ds) -> float:
    batch = _batch([ds[i] for i in range(len(ds))])
    pred = method.render(batch, batch["camera"])
    return float((pred - batch["image"]).pow(2).mean())


SMOKE = dict(profile="smoke", rays_per_step=192, checkpoint_every=1000, log_every=10)
# DFRF's mechanics from scratch (its base model: tests/test_dfrf_base.py)
BUILDERS = {"nerface": nerface.build_method, "adnerf": adnerf.build_method,
            "dfrf": lambda cfg: dfrf.build_method({**cfg, "pretrain_steps": 0})}


# ---------------------------------------------------------------------------------------------
# the NeRF core
# ---------------------------------------------------------------------------------------------


def test_positional_encoding_known_values():
    x = torch.tensor([[0.5, -1.0, 0.0]])
    pe = positional_encoding(x, 2)
    assert pe.shape == (1, 3 * 5)
    assert torch.allclose(pe[0, :3], x[0])
    assert torch.allclose(pe[0, 3:6], torch.sin(x[0]))  # frequency 1
    assert torch.allclose(pe[0, 6:9], torch.cos(x[0]))
    assert torch.allclose(pe[0, 9:12], torch.sin(2 * x[0]))  # frequency 2


def test_rays_follow_eg3d_convention_and_project_back():
    cam = torch.as_tensor(cameras.camera_label(20.0, -10.0)).float().unsqueeze(0)
    uv = torch.rand(1, 50, 2)
    o, d = rays(cam, uv)
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 50), atol=1e-5)
    back, depth = project_with_depth(o + 2.5 * d, cam)
    assert torch.allclose(back, uv, atol=1e-4)
    # the image centre looks at the pivot; v grows downwards (world +y is up for a frontal camera)
    front = torch.as_tensor(cameras.camera_label(0.0, 0.0)).float().unsqueeze(0)
    o, d = rays(front, torch.tensor([[[0.5, 0.5], [0.5, 0.9]]]))
    to_pivot = torch.nn.functional.normalize(torch.tensor(cameras.PIVOT) - o[0, 0], dim=0)
    assert torch.allclose(d[0, 0], to_pivot, atol=1e-4)
    assert d[0, 1, 1] < d[0, 0, 1]


def test_composite_background_through_last_sample():
    depths = torch.linspace(2.0, 3.0, 8).expand(4, 8)
    rgb = torch.rand(4, 8, 3)
    bg = torch.rand(4, 3)
    empty = composite(rgb, torch.zeros(4, 8), depths, bg)
    assert torch.allclose(empty["rgb"], bg, atol=1e-5) and torch.allclose(empty["opacity"], torch.zeros(4))
    solid = composite(rgb, torch.full((4, 8), 1e4), depths, bg)
    assert torch.allclose(solid["rgb"], rgb[:, 0], atol=1e-4) and torch.allclose(solid["weights"].sum(-1), torch.ones(4))


def test_sample_pdf_concentrates_on_heavy_bin():
    bins = torch.linspace(0, 1, 11).expand(2, 11)
    weights = torch.zeros(2, 10)
    weights[:, 7] = 1.0
    z = sample_pdf(bins, weights, 64, deterministic=False, generator=torch.Generator().manual_seed(0))
    inside = ((z >= 0.7) & (z <= 0.8)).float().mean()
    assert inside > 0.9


def test_rays_mostly_inside_face_box():
    images = torch.full((2, 3, RES, RES), -1.0)
    images[:, :, 4:8, 6:12] = 1.0
    boxes = face_boxes(images, torch.full((3, RES, RES), -1.0), margin=0.0)
    assert torch.allclose(boxes[0], torch.tensor([6 / RES, 4 / RES, 12 / RES, 8 / RES]))
    pix = sample_ray_pixels(boxes, 400, 0.9, RES, torch.Generator().manual_seed(0))
    rows, cols = pix // RES, pix % RES
    inside = ((rows >= 4) & (rows < 8) & (cols >= 6) & (cols < 12)).float().mean()
    assert 0.88 <= inside <= 0.97


def test_conditioned_nerf_uses_condition_and_skip():
    net = ConditionedNeRF(cond_dim=5, width=16, depth=4, skip=2, dir_width=8, dir_depth=1, xyz_freqs=3, dir_freqs=2)
    x, d = torch.rand(2, 7, 3), torch.nn.functional.normalize(torch.rand(2, 7, 3), dim=-1)
    c1 = torch.zeros(2, 1, 5)
    rgb1, s1 = net(x, d, c1)
    rgb2, s2 = net(x, d, c1 + 1)
    assert rgb1.shape == (2, 7, 3) and s1.shape == (2, 7) and rgb1.min() >= 0 and rgb1.max() <= 1
    assert not torch.allclose(rgb1, rgb2) and not torch.allclose(s1, s2)


# ---------------------------------------------------------------------------------------------
# the three baselines
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return StandinFrames(8, seed=0), StandinFrames(3, seed=1, first_index=100)


CONDITION_KEY = {"nerface": "expression", "adnerf": "audio", "dfrf": "audio"}


@pytest.fixture(scope="module", params=["nerface", "adnerf", "dfrf"])
def trained(request, data, tmp_path_factory):
    """(name, untrained method, trained method, run) - one short training per baseline."""
    name = request.param
    train, _ = data
    root = tmp_path_factory.mktemp(name)
    untrained = BUILDERS[name](dict(SMOKE, iterations=0))
    untrained.fit(train, RunDir(root / "init"))
    # no audio smoothing here: the stand-in's frames are not a smooth video (tested separately)
    extra = {} if name == "nerface" else {"smooth_warmup": 10**6}
    if name == "dfrf":
        extra["rays_per_step"] = 128  # K=4 reference look-ups per sample: the slowest of the three
    method = BUILDERS[name](dict(SMOKE, iterations=100, **extra))
    run = RunDir(root / "run")
    method.fit(train, run)
    return name, untrained, method, run


def test_learns_and_renders_novel_views(trained, data):
    name, untrained, method, run = trained
    train, test = data
    assert isinstance(method, Method) and method.supports_novel_views and method.name == name
    err0, err1 = _error(untrained, train), _error(method, train)
    assert err1 < 0.5 * err0, (err0, err1)
    assert _error(method, test) < _error(untrained, test)
    cfg = run.read_config()
    assert cfg["method"] == name and cfg["data"] == "standin" and cfg["config"]["iterations"] == 100
    assert run.latest_checkpoint()[0] == 100
    # a novel camera renders a plausible frame: closer to the stand-in's ground truth than before training
    sample = test[0]
    novel = torch.as_tensor(cameras.novel_view(sample["camera"].numpy(), 25.0, 0.0)).float()
    truth = _render_standin(novel, test.samples[0]["c"])
    cond = _batch([sample])
    out = method.render(cond, novel.unsqueeze(0))
    assert out.shape == (1, 3, RES, RES) and out.min() >= -1 and out.max() <= 1
    before = untrained.render(cond, novel.unsqueeze(0))
    assert (out[0] - truth).pow(2).mean() < (before[0] - truth).pow(2).mean()
    # load() restores the same renders
    loaded = BUILDERS[name](cfg["config"])
    loaded.load(run)
    assert torch.allclose(loaded.render(cond, novel.unsqueeze(0)), out, atol=1e-5)


def test_respects_its_conditioning(trained, data):
    """Changing the expression (NerFACE) / the audio window (AD-NeRF, DFRF) changes the render.
    For NerFACE the change is also shown to sit in the mouth box; the audio paths (AudioNet's
    conv stack) do not localise within this test's 100 steps, so for them only the change is checked."""
    name, _, method, _ = trained
    train, _ = data
    key = CONDITION_KEY[name]
    ratios, changes = [], []
    for i in range(3):
        batch = _batch([train[i]])
        low, high = dict(batch), dict(batch)
        low[key] = torch.zeros_like(batch[key])
        high[key] = torch.zeros_like(batch[key])
        if key == "expression":
            high[key][:, :4] = 3.0
        else:
            high[key] += 1.0
        diff = (method.render(low, batch["camera"]) - method.render(high, batch["camera"])).abs().mean(1)[0]  # [H,W]
        x0, y0, x1, y1 = (batch["mouth_box"][0] * RES).round().long().tolist()
        mask = torch.zeros_like(diff, dtype=torch.bool)
        mask[y0:y1, x0:x1] = True
        changes.append(float(diff.mean()))
        ratios.append(float(diff[mask].mean() / diff[~mask].mean()))
    assert min(changes) > 1e-3, changes
    # the same render twice is identical (the change above is the condition's, not noise)
    batch = _batch([train[0]])
    assert torch.equal(method.render(batch, batch["camera"]), method.render(batch, batch["camera"]))
    if name == "nerface":
        assert np.mean(ratios) > 1.5, ratios


@pytest.mark.parametrize("name", ["nerface", "adnerf", "dfrf"])
def test_resume_continues_from_checkpoint(name, data, tmp_path):
    train, _ = data
    run = RunDir(tmp_path / "run")
    cfg = dict(SMOKE, iterations=6, checkpoint_every=3, log_every=1)
    BUILDERS[name](cfg).fit(train, run)
    for path in run.checkpoints.glob("step_00000006.*"):  # as if killed after step 3's checkpoint
        path.unlink()
    second = BUILDERS[name](cfg)
    second.fit(train, run)
    assert second.resumed_from == 3 and second.step == 6
    steps = [row["step"] for row in run.metrics()]
    assert steps == list(range(1, 7))
    with pytest.raises(PersonaError, match=r"config.iterations 6 -> 9.*--force"):  # other settings: refused
        BUILDERS[name](dict(cfg, iterations=9)).fit(train, run)
    assert json.loads((run.root / "config.json").read_text())["config"]["iterations"] == 6


def test_adnerf_smoothing_after_warmup_uses_neighbours(data, tmp_path):
    train, _ = data
    method = adnerf.build_method(dict(SMOKE, iterations=4, smooth_warmup=2))
    method.fit(train, RunDir(tmp_path / "run"))
    # the attention net trained only after the warm-up, and it changes the code when neighbours are given
    att_grad_seen = any(p.abs().sum() > 0 for p in method.net.audio_att.parameters())
    assert att_grad_seen
    batch = _batch([train[3]])
    with torch.no_grad():
        plain = method.net.audio_net(batch["audio"])
        lone = method.audio_code(batch, None, step=method.step)  # no neighbour in the batch: own window x 8
        assert torch.allclose(plain, lone, atol=1e-5)
        batch["audio_neighbours"] = torch.stack([train[i]["audio"] for i in range(8)]).unsqueeze(0)
        smooth = method.audio_code(batch, None, step=method.step)
        assert not torch.allclose(plain, smooth)
        sequence = _batch([train[i] for i in range(8)])  # neighbours found within a sequential batch
        assert not torch.allclose(method.audio_code(sequence, None, step=method.step)[3:4], plain)


def test_dfrf_offsets_are_penalised_and_references_stored(data, tmp_path):
    train, _ = data
    method = BUILDERS["dfrf"](dict(SMOKE, iterations=2, offset_l2_weight=1.0))
    method.fit(train, RunDir(tmp_path / "run"))
    assert method.net.ref_images.shape == (4, 3, RES, RES) and method.net.ref_images.abs().sum() > 0
    ctx = method._context(_batch([train[0]]), None, 0, training=False)
    pts = torch.tensor(cameras.PIVOT).expand(1, 5, 2, 3) + 0.1 * torch.randn(1, 5, 2, 3)
    _, _, penalty = method._field(ctx, "coarse", pts, torch.nn.functional.normalize(torch.randn(1, 5, 2, 3), dim=-1))
    assert penalty > 0
    with torch.no_grad():
        method.net.offsets.mlp[-1].bias.fill_(3.0)
    _, _, bigger = method._field(ctx, "coarse", pts, torch.nn.functional.normalize(torch.randn(1, 5, 2, 3), dim=-1))
    assert bigger > penalty


def test_unknown_config_field_is_reported():
    with pytest.raises(ValueError, match=r"unknown field\(s\)"):
        nerface.build_method({"profile": "smoke", "not_a_field": 1})


# ---------------------------------------------------------------------------------------------
# the fast rendering paths render what the per-sample code rendered
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nerface", "adnerf", "dfrf"])
def test_renders_match_stored_reference(name):
    """Seeded random models (tests/nerf_reference.py) render the images, and trace the training-mode
    ray colours, that the code before the speed-ups stored in tests/data/nerf_reference.npz."""
    import nerf_reference

    stored = np.load(nerf_reference.REFERENCE, allow_pickle=False)
    got = nerf_reference.outputs(name)
    assert sorted(got) == sorted(k for k in stored.files if k.startswith(name + "/"))
    for key, value in got.items():
        np.testing.assert_allclose(value, stored[key], rtol=1e-4, atol=2e-5, err_msg=key)
