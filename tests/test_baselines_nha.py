"""NHA baseline: the plain-PyTorch rasteriser and the avatar (learns, follows expression, novel views, resume)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from persona.baselines import raster
from persona.baselines.nha import FlameNpzMesh, build_method
from persona import cameras
from persona.cameras import camera_label
from persona.data import world
from persona.runs import RunDir

RES = 32


def frontal(batch: int = 1) -> torch.Tensor:
    return torch.as_tensor(camera_label(0.0, 0.0), dtype=torch.float32)[None].expand(batch, -1).clone()


def unproject(pixel_xy: np.ndarray, depth: np.ndarray, res: int) -> torch.Tensor:
    """Pixel coordinates [N,2] at camera depths [N] of the frontal camera -> world points [1,N,3]."""
    focal = 4.2647
    x = (pixel_xy[:, 0] / res - 0.5) * depth / focal
    y = (pixel_xy[:, 1] / res - 0.5) * depth / focal
    # frontal camera: centre (0, 0, 2.9), axes x -> world x, y -> world -y, z -> world -z
    return torch.tensor(np.stack([x, -y, 2.9 - depth], -1), dtype=torch.float32)[None]


def icosphere(subdivisions: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    t = (1 + 5 ** 0.5) / 2
    verts = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
             [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [list(map(float, v)) for v in verts]
    for _ in range(subdivisions):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                cache[key] = len(verts)
                verts.append([(verts[a][i] + verts[b][i]) / 2 for i in range(3)])
            return cache[key]

        faces = [f for a, b, c in faces for f in ((a, mid(a, b), mid(c, a)), (b, mid(b, c), mid(a, b)),
                                                  (c, mid(c, a), mid(b, c)), (mid(a, b), mid(b, c), mid(c, a)))]
    v = torch.tensor(verts)
    return v / v.norm(dim=-1, keepdim=True), torch.tensor(faces)


# ------------------------------------------------------------------------------------ rasteriser


def test_known_triangle_covers_the_pixels_whose_centres_are_inside():
    corners = np.array([[3.3, 4.1], [27.6, 7.2], [9.4, 26.8]])
    vertices = unproject(corners, np.array([2.5, 2.7, 2.9]), RES)  # tilted in depth
    frags = raster.rasterize(vertices, torch.tensor([[0, 1, 2]]), frontal(), RES)
    ys, xs = np.mgrid[0:RES, 0:RES] + 0.5

    def side(a, b):
        return (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])

    s = [side(corners[i], corners[(i + 1) % 3]) for i in range(3)]
    expected = ((s[0] >= 0) & (s[1] >= 0) & (s[2] >= 0)) | ((s[0] <= 0) & (s[1] <= 0) & (s[2] <= 0))
    got = frags.face_id[0].numpy() == 0
    assert expected.sum() > 150
    np.testing.assert_array_equal(got, expected)
    covered = frags.face_id >= 0
    assert torch.allclose(frags.bary.sum(-1)[covered], torch.ones(int(covered.sum())), atol=1e-5)
    assert torch.all(frags.bary.sum(-1)[~covered] == 0)
    # perspective-correct: the interpolated 3-D point projects back onto the pixel centre
    points = raster.interpolate(frags, torch.tensor([[0, 1, 2]]), vertices[0])  # [1,3,H,W]
    pixels, _ = raster.project(points[0].permute(1, 2, 0).reshape(1, -1, 3), frontal(), RES)
    centres = torch.tensor(np.stack([xs, ys], -1).reshape(-1, 2), dtype=torch.float32)
    mask = torch.from_numpy(got.reshape(-1))
    assert torch.allclose(pixels[0][mask], centres[mask], atol=1e-3)


def test_nearer_triangle_wins_and_batches_are_independent():
    corners = np.array([[2.0, 2.0], [30.0, 2.5], [16.0, 30.0]])
    near = unproject(corners, np.full(3, 2.4), RES)
    far = unproject(corners[:, ::-1].copy(), np.full(3, 2.8), RES)
    both = torch.cat([far, near], dim=1)  # face 0 far, face 1 near
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = raster.rasterize(torch.cat([both, both]), faces, torch.cat([frontal(), torch.as_tensor(camera_label(30.0, 0.0))[None]]), RES)
    overlap = (frags.face_id[0] >= 0)
    single = raster.rasterize(near, faces[:1], frontal(), RES)
    assert torch.equal(frags.face_id[0][single.face_id[0] == 0], torch.ones(int((single.face_id[0] == 0).sum()), dtype=torch.long))
    assert overlap.sum() > (single.face_id[0] == 0).sum()  # the far triangle shows where the near one is absent
    alone = raster.rasterize(both, faces, torch.as_tensor(camera_label(30.0, 0.0))[None], RES)
    assert torch.equal(alone.face_id[0], frags.face_id[1])


def test_gradients_reach_vertices_and_attributes():
    vertices, faces = icosphere(2)
    vertices = (vertices * 0.3 + torch.tensor([0.0, 0.0, 0.2]))[None].requires_grad_(True)
    colours = torch.rand(1, vertices.shape[1], 3, requires_grad=True)
    frags = raster.rasterize(vertices, faces, frontal(), RES, attributes=colours)
    (frags.attributes.square().mean() + frags.alpha.mean()).backward()
    assert colours.grad.abs().sum() > 0 and vertices.grad.abs().sum() > 0
    assert 0.0 < frags.alpha.min() + 1e-6 and frags.alpha.max() <= 1.0
    # the coverage grows when the sphere grows: d(sum alpha)/d(scale) > 0, checked both ways
    scale = torch.tensor(1.0, requires_grad=True)
    base, _ = icosphere(2)
    grown = (base * 0.3 * scale + torch.tensor([0.0, 0.0, 0.2]))[None]
    alpha = raster.rasterize(grown, faces, frontal(), RES).alpha.sum()
    alpha.backward()
    bigger = raster.rasterize((base * 0.3 * 1.05 + torch.tensor([0.0, 0.0, 0.2]))[None], faces, frontal(), RES).alpha.sum()
    assert scale.grad > 0 and bigger > alpha


def test_frontal_camera_sees_the_front_of_a_sphere():
    vertices, faces = icosphere(3)
    pivot = torch.tensor([0.0, 0.0, 0.2])
    world = (vertices * 0.3 + pivot)[None]
    frags = raster.rasterize(world, faces, frontal(), RES, attributes=vertices[None], soft=False)
    covered = frags.face_id[0] >= 0
    direction = frags.attributes[0].permute(1, 2, 0)[covered]  # unit-sphere position of the visible points
    assert covered.float().mean() > 0.2
    assert (direction[:, 2] > 0).all()  # +z hemisphere, towards the camera
    normals = raster.vertex_normals(world, faces)
    assert torch.allclose(normals[0], vertices, atol=0.05)  # outward normals of a sphere


# -------------------------------------------------------------------------------------- NHA


class TinyVideo(torch.utils.data.Dataset):
    """A few frames of one synthetic identity, head pose as camera wander, random expressions."""

    def __init__(self, n: int, seed: int, yaw_deg: float | None = None):
        g = torch.Generator().manual_seed(seed)
        identity = world.sample_identity(7)
        self.expression = world.sample_expressions(n, g)
        if yaw_deg is None:
            self.camera = world.sample_cameras(n, g, yaw_std_deg=10.0, pitch_std_deg=4.0)
        else:
            self.camera = cameras.labels_from_angles(torch.full((n,), yaw_deg), torch.zeros(n))
        self.image, self.mask = world.render_batch([identity] * n, self.expression, self.camera, RES, return_mask=True)
        self.root, self.resolution, self.background, self.fps = "memory:tiny", RES, None, 25

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image[i], "camera": self.camera[i], "expression": self.expression[i], "index": i}


def head_error(method, data: TinyVideo) -> float:
    pred = method.render({"expression": data.expression}, data.camera)
    return float(((pred - data.image).abs() * data.mask).sum() / data.mask.sum() / 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    train, test = TinyVideo(24, seed=1), TinyVideo(6, seed=2)
    # the avatar's mechanics on the world's own head (mesh: oracle); the tracked mesh: test_nha_tracking.py
    method = build_method({"profile": "smoke", "steps": 80, "batch_size": 4, "checkpoint_every": 40, "mesh": "oracle"})
    run = RunDir(tmp_path_factory.mktemp("nha"))
    untrained = build_method({"profile": "smoke", "mesh": "oracle"})
    untrained.model = untrained._build((RES, RES), None)
    before = head_error(untrained, test)
    method.fit(train, run)
    return method, run, test, before


def test_nha_learns_and_writes_a_loadable_run(trained):
    method, run, test, before = trained
    after = head_error(method, test)
    assert after < 0.6 * before, (before, after)
    config = run.read_config()
    assert config["method"] == "nha" and config["data"] == "memory:tiny" and config["config"]["steps"] == 80
    losses = [row["rgb"] for row in run.metrics() if "rgb" in row]
    assert losses[-1] < losses[0]
    again = build_method(config["config"])
    again.load(run)
    batch = {"expression": test.expression}
    assert torch.allclose(again.render(batch, test.camera), method.render(batch, test.camera), atol=1e-5)


def test_nha_follows_the_jaw_open_dimension(trained):
    method = trained[0]
    closed = torch.zeros(1, world.EXPRESSION_DIM)
    opened = closed.clone()
    opened[0, world.JAW_OPEN] = 2.5
    camera = frontal()
    diff = (method.render({"expression": opened}, camera) - method.render({"expression": closed}, camera)).abs().sum(1)[0]
    rows = torch.arange(RES)[:, None].expand(RES, RES)
    mouth_and_chin = diff[(rows >= RES * 0.55) & (rows < RES * 0.85)]
    upper_head = diff[rows < RES * 0.4]
    assert mouth_and_chin.mean() > 0.01
    assert mouth_and_chin.mean() > 2 * upper_head.mean()
    most_changed_row = int(diff.sum(1).argmax())
    assert RES * 0.55 <= most_changed_row < RES * 0.85


def test_nha_renders_novel_views(trained):
    method, _, _, _ = trained
    novel = TinyVideo(4, seed=3, yaw_deg=25.0)
    image = method.render({"expression": novel.expression}, novel.camera)
    assert image.shape == (4, 3, RES, RES) and image.min() >= -1 and image.max() <= 1
    frontal_view = method.render({"expression": novel.expression}, frontal(4))
    assert (image - frontal_view).abs().mean() > 0.02  # the view changes the image
    untrained = build_method({"profile": "smoke", "mesh": "oracle"})
    untrained.model = untrained._build((RES, RES), None)
    assert head_error(method, novel) < 0.7 * head_error(untrained, novel)
    assert method.supports_novel_views and method.name == "nha"


def test_nha_resume_continues_from_the_checkpoint(tmp_path):
    train = TinyVideo(8, seed=4)
    cfg = {"profile": "smoke", "steps": 6, "checkpoint_every": 3, "log_every": 3, "texture_only_fraction": 0.0, "mesh": "oracle"}
    straight = build_method(cfg)
    straight.fit(train, RunDir(tmp_path / "straight"))
    first = build_method(cfg)
    first.fit(train, RunDir(tmp_path / "resumed"))
    for path in RunDir(tmp_path / "resumed").checkpoints.glob("step_00000006.*"):  # as if killed after step 3
        path.unlink()
    second = build_method(cfg)
    second.fit(train, RunDir(tmp_path / "resumed"))
    steps = [row["step"] for row in RunDir(tmp_path / "resumed").metrics() if "rgb" in row]
    assert steps == [3, 6]
    assert RunDir(tmp_path / "resumed").latest_checkpoint()[0] == 6
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_flame_npz_is_loaded_and_pickles_are_refused(tmp_path):
    vertices, faces = icosphere(1)
    dirs = np.zeros((len(vertices), 3, 400), np.float32)
    dirs[:, 1, 300] = -0.1  # expression 0 moves everything down
    np.savez(tmp_path / "flame.npz", v_template=vertices.numpy(), f=faces.numpy(), shapedirs=dirs)
    mesh = FlameNpzMesh(tmp_path / "flame.npz", scale=0.2, translation=(0.0, 0.0, 0.2))
    expression = torch.zeros(2, world.EXPRESSION_DIM)
    expression[1, 0] = 1.0
    out = mesh(expression)
    assert out.shape == (2, len(vertices), 3)
    assert torch.allclose(out[1] - out[0], torch.tensor([0.0, -0.02, 0.0]).expand_as(out[0]), atol=1e-6)
    (tmp_path / "generic_model.pkl").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickles are not loaded"):
        FlameNpzMesh(tmp_path / "generic_model.pkl")
    method = build_method({"profile": "smoke", "flame_path": str(tmp_path / "flame.npz"), "flame_scale": 0.2,
                           "flame_translation": [0.0, 0.0, 0.2]})
    assert method.mesh_model.faces.shape == faces.shape
    with pytest.raises(ValueError, match="unknown field"):
        build_method({"profile": "smoke", "no_such_field": 1})


def test_nha_device_field_is_honoured_and_validated():
    from persona.errors import PersonaInputError

    for device in ("cpu", "auto"):
        method = build_method({"profile": "smoke", "mesh": "oracle", "device": device})
        method.model = method._build((RES, RES), None)
        expected = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
        assert {p.device.type for p in method.model.parameters()} == {expected}
        image = method.render({"expression": torch.zeros(1, world.EXPRESSION_DIM)}, frontal())
        assert image.device.type == "cpu" and image.shape == (1, 3, RES, RES)  # renders come back to the CPU
    with pytest.raises(PersonaInputError, match="device 'gpu0'"):
        build_method({"profile": "smoke", "device": "gpu0"})
    assert build_method({"profile": "paper"}).config.device == "auto"


def test_nha_micro_batches_give_the_whole_batch_step(tmp_path):
    """A batch split into micro-batches (max_pixels_per_pass) takes the same step as in one pass."""
    train = TinyVideo(6, seed=5)
    cfg = {"profile": "smoke", "steps": 2, "batch_size": 4, "texture_only_fraction": 0.0, "mesh": "oracle"}
    whole, split = build_method(cfg), build_method({**cfg, "max_pixels_per_pass": RES * RES})
    assert len(whole.micro_batches(4, RES * RES)) == 1 and len(split.micro_batches(4, RES * RES)) == 4
    whole.fit(train, RunDir(tmp_path / "whole"))
    split.fit(train, RunDir(tmp_path / "split"))
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), split.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    batch = {"expression": train.expression}
    assert torch.allclose(whole.render(batch, train.camera), split.render(batch, train.camera), atol=1e-4)
