"""FOMM baseline: it learns on a tiny video, follows the driving frame, refuses novel views,
checkpoints round-trip and resume."""

from __future__ import annotations

import json

import pytest
import torch

from persona.baselines import fomm
from persona.errors import PersonaError
from persona.runs import RunDir

R = 32
CFG = {"profile": "smoke", "iterations": 80, "checkpoint_every": 40, "log_every": 20, "lr": 1e-3}


def face(cx: float, cy: float) -> torch.Tensor:
    """A toy 'face' (ellipse with two eyes) at (cx, cy) over a gradient background: [3,R,R] in [-1,1]."""
    g = torch.linspace(-1, 1, R)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    x0, y0 = 0.3 * cx, 0.2 * cy
    image = torch.stack([0.3 * xx, 0.3 * yy, -0.2 + 0 * xx])
    head = (((xx - x0) / 0.5) ** 2 + ((yy - y0) / 0.6) ** 2 < 1).float()
    image = image * (1 - head) + head * torch.tensor([0.6, 0.2, 0.0])[:, None, None]
    eyes = sum((((xx - x0 - dx) ** 2 + (yy - y0 + 0.2) ** 2) < 0.01).float() for dx in (-0.2, 0.2))
    return image * (1 - eyes) + eyes * torch.tensor([-1.0, -1.0, 1.0])[:, None, None]


class Video:
    """A FrameDataset stand-in: the head wanders over the frames."""

    def __init__(self, times, root="/nonexistent/fomm-test"):
        self.times = list(times)
        self.root = root

    def __len__(self):
        return len(self.times)

    def __getitem__(self, i):
        t = torch.tensor(float(self.times[i]))
        return {"image": face(float(torch.sin(0.7 * t)), float(torch.cos(0.45 * t))), "camera": torch.zeros(25),
                "index": int(self.times[i])}


def batch(video, indices):
    samples = [video[i] for i in indices]
    return {"image": torch.stack([s["image"] for s in samples]), "camera": torch.stack([s["camera"] for s in samples]),
            "index": torch.tensor([s["index"] for s in samples])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train = Video(range(32))
    run = RunDir(tmp_path_factory.mktemp("fomm") / "run")
    untrained = fomm.build_method(CFG)
    untrained.source = train[0]["image"][None]
    method = fomm.build_method(CFG)
    method.fit(train, run)
    return method, untrained, train, run


def test_learns_and_follows_the_driving_frame(trained):
    method, untrained, train, _ = trained
    test = Video(range(32, 40))
    cond = batch(test, range(len(test)))
    for m in (method, untrained):
        m.set_driving_start(test[0]["image"])
    err = (method.render(cond, cond["camera"]) - cond["image"]).abs().mean()
    err0 = (untrained.render(cond, cond["camera"]) - cond["image"]).abs().mean()
    assert err < 0.5 * err0, (float(err), float(err0))

    # two different driving frames: two different outputs, each closer to its own driver
    a, c = batch(train, [5]), batch(train, [12])
    method.set_driving_start(train[0]["image"])  # the source frame itself: relative = absolute motion
    out_a, out_c = method.render(a, a["camera"]), method.render(c, c["camera"])
    dist = lambda x, y: float((x - y).abs().mean())  # noqa: E731
    assert dist(out_a, out_c) > 0.02
    assert dist(out_a, a["image"]) < dist(out_a, c["image"])
    assert dist(out_c, c["image"]) < dist(out_c, a["image"])


def test_training_loss_drops_and_is_logged(trained):
    _, _, _, run = trained
    rows = [r for r in run.metrics() if "loss" in r]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], (rows[0], rows[-1])
    assert {"reconstruction", "equivariance_value", "equivariance_jacobian"} <= set(rows[0])
    assert any("train_seconds" in r for r in run.metrics())


def test_refuses_novel_views(trained):
    method, _, train, _ = trained
    assert fomm.FOMM.supports_novel_views is False
    cond = batch(train, [3])
    with pytest.raises(NotImplementedError, match="does not support novel views"):
        method.render(cond, cond["camera"] + 0.1)
    with pytest.raises(NotImplementedError, match="does not support novel views"):  # a NovelViewDataset sample
        method.render({**cond, "view": ["yaw+25"]}, cond["camera"])


def test_config_profiles():
    assert fomm.make_config({"profile": "smoke"}).profile == "smoke"
    paper = fomm.make_config(None, "paper")
    assert (paper.num_kp, paper.temperature, paper.gen_num_bottleneck_blocks, paper.scales) == (10, 0.1, 6, (1.0, 0.5, 0.25, 0.125))
    with pytest.raises(ValueError, match="unknown field"):
        fomm.make_config({"steps": 3})


def test_checkpoint_round_trip_and_resume(trained, tmp_path):
    method, _, train, run = trained
    config = json.loads((run.root / "config.json").read_text())
    assert config["method"] == "fomm"
    restored = fomm.build_method(config["config"])
    restored.load(run)
    cond = batch(train, [4, 9])
    start = train[0]["image"]
    method.set_driving_start(start)
    restored.set_driving_start(start)
    assert torch.allclose(method.render(cond, cond["camera"]), restored.render(cond, cond["camera"]), atol=1e-6)

    # resume: a run that lost its last checkpoint continues from the one before; more steps are refused
    short = RunDir(tmp_path / "short")
    small = {**CFG, "iterations": 6, "checkpoint_every": 2, "log_every": 2}
    fomm.build_method(small).fit(Video(range(8)), short)
    for path in short.checkpoints.glob("step_00000006.*"):
        path.unlink()
    fomm.build_method(small).fit(Video(range(8)), short)
    steps = [r["step"] for r in short.metrics() if "loss" in r]
    assert steps == [2, 4, 6]
    assert short.latest_checkpoint()[0] == 6
    with pytest.raises(PersonaError, match=r"config.iterations 6 -> 8"):
        fomm.build_method({**small, "iterations": 8}).fit(Video(range(8)), short)
