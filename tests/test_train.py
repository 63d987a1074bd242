"""The two-stage trainer: stages, resume equivalence, learning, the Method wrapper (persona/train.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from persona.runs import RunDir, load_tensors
from persona.ours.method import OursMethod, build_method
from persona.ours.train import batch_indices, build_model, fit_prior, set_stage, stage_of, train_config

from test_prior import StandInGenerator

RES = 16


class StandInFrames:
    """A FrameDataset stand-in: frames rendered by a fixed teacher from a linear latent of the expression."""

    def __init__(self, n: int, seed: int, teacher: StandInGenerator, root: str = "stand-in"):
        g = torch.Generator().manual_seed(seed)
        self.expression = torch.randn(n, 76, generator=g)
        self.audio = torch.randn(n, 16, 29, generator=g)
        self.indices = list(range(seed * 1000, seed * 1000 + n))
        directions = torch.randn(4, teacher.num_ws * teacher.w_dim, generator=torch.Generator().manual_seed(99))
        ws = (self.expression[:, :4] @ directions).view(n, teacher.num_ws, teacher.w_dim) + teacher.backbone.mapping.w_avg
        self.camera = torch.zeros(n, 25)
        with torch.no_grad():
            self.image = teacher.synthesis(ws, self.camera)["image"]
        self.resolution, self.root, self.fps = RES, root, 25.0

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image[i], "camera": self.camera[i], "expression": self.expression[i], "audio": self.audio[i],
                "index": self.indices[i], "mouth_box": torch.tensor([0.3, 0.6, 0.7, 0.8])}


def tiny_cfg(**kw):
    base = dict(modality="3dmm", k=4, iterations=6, frozen_iterations=3, batch_size=2, resolution=RES, mlp_hidden=16,
                mlp_layers=1, log_every=1, checkpoint_every=2, sample_every=100, lambda_lpips=0.0, seed=3)
    return train_config("smoke", **{**base, **kw})


def make_model(cfg, teacher_seed=0):
    torch.manual_seed(teacher_seed)
    G = StandInGenerator(res=RES)
    torch.manual_seed(cfg.seed)
    return build_model(cfg, G), G


def final_tensors(run: RunDir) -> dict[str, torch.Tensor]:
    step, path = run.latest_checkpoint()
    tensors, _ = load_tensors(path)
    return {k: v for k, v in tensors.items() if not k.startswith("rng")}


@pytest.fixture(scope="module")
def frames():
    torch.manual_seed(0)
    return StandInFrames(12, seed=1, teacher=StandInGenerator(res=RES))


def test_profiles_and_batch_order():
    assert train_config("paper").iterations == 200_000 and train_config("paper").frozen_iterations == 50_000
    p = train_config("paper")
    assert (p.lr, tuple(p.betas), p.batch_size, p.lambda_lpips, p.k) == (3e-4, (0.9, 0.999), 2, 5.0, 50)
    with pytest.raises(ValueError, match="modality"):
        train_config("smoke", modality="video")
    # the data order is a function of (seed, step) and visits every frame once per epoch
    assert torch.equal(batch_indices(0, 5, 10, 2), batch_indices(0, 5, 10, 2))
    epoch = torch.cat([batch_indices(0, s, 10, 2) for s in range(1, 6)])
    assert sorted(epoch.tolist()) == list(range(10))
    other_seed = torch.cat([batch_indices(1, s, 10, 2) for s in range(1, 6)])
    assert not torch.equal(epoch, other_seed)


def test_stage_one_freezes_generator_and_stage_two_trains_it(frames):
    cfg = tiny_cfg()
    model, G = make_model(cfg)
    batch = {"expression": frames.expression[:2]}
    assert stage_of(3, cfg) == 1 and stage_of(4, cfg) == 2
    for stage in (1, 2):
        model.zero_grad(set_to_none=True)
        set_stage(model, stage)
        model(batch, frames.camera[:2])["image"].square().mean().backward()
        g_grads = [p.grad for p in G.parameters()]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.personal_parameters())
        if stage == 1:
            assert all(g is None for g in g_grads)
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in g_grads)


def test_generator_unchanged_in_stage_one_and_changed_in_stage_two(frames, tmp_path):
    cfg = tiny_cfg(iterations=3, frozen_iterations=3)
    model, G = make_model(cfg)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    basis_before = model.basis.basis.detach().clone()
    fit_prior(model, frames, RunDir(tmp_path / "a"), cfg)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert not torch.equal(basis_before, model.basis.basis)
    cfg2 = tiny_cfg(iterations=5, frozen_iterations=3)
    model2, G2 = make_model(cfg2)
    fit_prior(model2, frames, RunDir(tmp_path / "b"), cfg2)
    assert not torch.equal(before["decode.weight"], G2.state_dict()["decode.weight"])


@pytest.mark.parametrize("modality,basis_init,noise", [("3dmm", "randn", 0.0), ("audio", "randn", 0.0), ("3dmm", "grad_pca", 0.0),
                                                      ("3dmm", "randn", 0.3)])
def test_resume_is_bit_identical(frames, tmp_path, modality, basis_init, noise):
    cfg = tiny_cfg(modality=modality, audio_smooth_after=3, ortho="loss", basis_init=basis_init, expression_noise=noise)
    full = RunDir(tmp_path / "full")
    fit_prior(make_model(cfg)[0], frames, full, cfg)

    # killed after step 5: the newest checkpoint is step 4, the work of step 5 is lost
    killed = RunDir(tmp_path / "killed")
    fit_prior(make_model(cfg)[0], frames, killed, cfg, stop_after=5)
    assert killed.latest_checkpoint()[0] == 4
    fit_prior(make_model(cfg)[0], frames, killed, cfg)

    # killed during a checkpoint write: a stray temp file, and the newest checkpoint never completed
    torn = RunDir(tmp_path / "torn")
    fit_prior(make_model(cfg)[0], frames, torn, cfg, stop_after=5)
    step, newest = torn.latest_checkpoint()
    newest.unlink()
    (torn.checkpoints / f".{newest.name}.abc123.tmp").write_bytes(b"half a checkpoint")
    assert torn.latest_checkpoint()[0] == 2
    fit_prior(make_model(cfg)[0], frames, torn, cfg)

    expected = final_tensors(full)
    for run in (killed, torn):
        got = final_tensors(run)
        assert sorted(got) == sorted(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected), run.root
        assert [r["step"] for r in run.metrics()] == list(range(1, 7))  # rows after the checkpoint were dropped
    assert any(k.startswith("optimizer.") for k in expected)  # the key every trainer writes (runs.training_state)


def test_training_reduces_test_error(tmp_path):
    torch.manual_seed(0)
    teacher = StandInGenerator(res=RES)
    train, test = StandInFrames(96, seed=1, teacher=teacher), StandInFrames(8, seed=2, teacher=teacher)
    cfg = tiny_cfg(iterations=300, frozen_iterations=200, lr=3e-3, k=6, mlp_hidden=32, log_every=10, checkpoint_every=300)
    model, _ = make_model(cfg)

    def test_mse():
        with torch.no_grad():
            return float((model({"expression": test.expression}, test.camera)["image"] - test.image).square().mean())

    before = test_mse()
    run = RunDir(tmp_path / "run")
    fit_prior(model, train, run, cfg)
    after = test_mse()
    assert after < 0.5 * before, (before, after)
    rows = run.metrics()
    assert rows[-1]["l2"] < rows[0]["l2"] and rows[-1]["psnr"] > rows[0]["psnr"]
    assert {"loss", "l2", "psnr", "stage"} <= set(rows[0])
    assert list((run.root / "renders").glob("sample_*.png"))


def test_method_fit_load_render_roundtrip(frames, tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr("persona.ours.method.load_generator", lambda *a, **k: (StandInGenerator(res=RES), "stand-in"))
    method = build_method({"profile": "smoke", "modality": "rgb", "k": 4, "iterations": 4, "frozen_iterations": 2,
                           "rgb_base_channels": 4, "rgb_max_channels": 8, "rgb_feature_dim": 8, "rgb_head_layers": 1})
    assert isinstance(method, OursMethod) and method.name == "ours" and method.supports_novel_views
    run = RunDir(tmp_path / "run")
    method.fit(frames, run)
    cfg = json.loads((run.root / "config.json").read_text())
    assert cfg["method"] == "ours" and cfg["data"] == "stand-in" and cfg["config"]["modality"] == "rgb"
    assert cfg["config"]["resolution"] == RES and "L2" in cfg["config"]["loss_used"]
    batch = {k: torch.stack([torch.as_tensor(frames[i][k]) for i in range(3)]) for k in ("image", "camera", "index")}
    images = method.render(batch, batch["camera"])
    assert images.shape == (3, 3, RES, RES) and images.abs().max() <= 1

    from persona.methods import build_method as build_registered

    restored = build_registered(cfg["method"], cfg["config"])
    restored.load(run)
    assert torch.equal(restored.render(batch, batch["camera"]), images)
    assert restored.alphas(batch).shape == (3, 4)


def test_real_tiny_generator_two_stages(tmp_path):
    """With the real tiny EG3D generator: stage 1 leaves it untouched, stage 2 changes it, renders at 64 px."""
    eg3d = pytest.importorskip("persona.eg3d")
    torch.manual_seed(0)
    G = eg3d.build_generator("tiny")
    cfg = train_config("smoke", modality="3dmm", k=4, iterations=3, frozen_iterations=2, resolution=32, lambda_lpips=0.0,
                       mlp_hidden=16, mlp_layers=1, checkpoint_every=3, sample_every=3)
    model = build_model(cfg, G)
    assert model.basis.num_ws == G.num_ws and model.basis.w_dim == G.w_dim
    assert torch.allclose(model.basis(torch.zeros(1, 4))[0, -1], G.backbone.mapping.w_avg)  # w_avg offset
    teacher = StandInGenerator(num_ws=G.num_ws, w_dim=G.w_dim, res=32)
    frames = StandInFrames(4, seed=1, teacher=teacher)
    from persona.cameras import camera_label
    frames.camera = torch.as_tensor(camera_label(0.0, 0.0), dtype=torch.float32).repeat(4, 1)

    before = {k: v.clone() for k, v in G.state_dict().items()}
    fit_prior(model, frames, RunDir(tmp_path / "s1"), replace(cfg, iterations=2))
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    fit_prior(model, frames, RunDir(tmp_path / "s1"), cfg)  # resumes at step 2, runs stage-2 step 3
    changed = [k for k, v in G.state_dict().items() if not torch.equal(before[k], v)]
    assert changed
    out = model({"expression": frames.expression[:1]}, frames.camera[:1])["image"]
    assert out.shape == (1, 3, 32, 32)


def test_cli_train_then_render(tmp_path, monkeypatch):
    """`python -m persona train` then `render` (test frames, novel views, orbit mp4, alphas) on stand-ins."""
    import sys
    import types

    import numpy as np

    torch.manual_seed(0)
    teacher = StandInGenerator(res=RES)
    splits = {"train": StandInFrames(8, seed=1, teacher=teacher), "test": StandInFrames(5, seed=2, teacher=teacher)}

    def frame_dataset(root, split="train", resolution=None, max_seconds=None):
        ds = splits[split]
        ds.root = str(root)
        return ds

    class NovelViews:
        def __init__(self, root, resolution=None):
            self.test = splits["test"]

        def __len__(self):
            return 2 * len(self.test)

        def __getitem__(self, i):
            sample = dict(self.test[i // 2])
            return {**sample, "view": ("yaw-25", "yaw+25")[i % 2], "source_index": sample["index"]}

    fake = types.ModuleType("persona.data.dataset")
    fake.FrameDataset, fake.NovelViewDataset = frame_dataset, NovelViews
    monkeypatch.setitem(sys.modules, "persona.data.dataset", fake)
    monkeypatch.setattr("persona.ours.method.load_generator", lambda *a, **k: (StandInGenerator(res=RES), "stand-in"))
    from persona.verbs import main_render, main_train

    run = tmp_path / "run"
    assert main_train(["--modality", "audio", "--data", str(tmp_path / "video"), "--out", str(run), "--profile", "smoke",
                       "--k", "5", "--iterations", "5"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["k"] == 5 and cfg["config"]["modality"] == "audio" and cfg["data"] == str(tmp_path / "video")
    assert main_render([str(run), "--novel", "--orbit", "3", "--alphas"]) == 0
    renders = run / "renders"
    assert len(list((renders / "test").glob("*.png"))) == 5
    assert {p.name for p in (renders / "novel").iterdir()} == {"yaw-25", "yaw+25"}
    assert (renders / "orbit.mp4").stat().st_size > 0
    alphas = np.load(renders / "alphas_test.npy")
    assert alphas.shape == (5, 5) and np.isfinite(alphas).all()
    # the test-sequence video: H.264, ground truth | render side by side; no aud.wav here, so no audio
    from persona import video

    info = video.probe(renders / "test.mp4")
    assert info["video"] == "h264" and info["audio"] is None and info["width"] > info["height"]
    assert len(video.read_frames(renders / "test.mp4")) == 5
    assert video.probe(renders / "orbit.mp4")["video"] == "h264"
    # an audio-driven run's video carries the video's sound track
    (tmp_path / "video").mkdir()
    from test_video import tone

    tone(tmp_path / "video" / "aud.wav", seconds=81.0)  # the stand-in's test frames start at 80 s
    assert main_render([str(run), "--batch", "2"]) == 0  # the old spelling still works
    assert video.probe(renders / "test.mp4")["audio"] == "aac"


@pytest.mark.parametrize("field,value", [("modality", "video"), ("ortho", "gram"), ("basis_rows", "big"), ("offset_init", "zero"),
                                         ("rgb_encoder", "resnet"), ("audio_init", "xavier"), ("audio_att_init", "flat"),
                                         ("precision", "fp16")])
def test_train_config_refuses_values_outside_a_fields_choices(field, value):
    from persona.errors import PersonaInputError
    from persona.ours.train import train_config

    with pytest.raises(PersonaInputError, match=rf"TrainConfig\.{field}={value!r}; expected one of"):
        train_config("smoke", **{field: value})


def test_w_pca_basis_rows_are_the_generators_principal_w_directions_in_every_layer():
    from persona.eg3d.checkpoint import load_generator
    from persona.ours.basis import PersonalizedBasis, w_principal_directions

    G, _ = load_generator("random-tiny", seed=0)
    k, num_ws, w_dim = 6, int(G.num_ws), int(G.w_dim)
    rows = w_principal_directions(G, k, samples=512)
    assert rows.shape == (k, num_ws * w_dim)
    assert torch.allclose(rows @ rows.t(), torch.eye(k), atol=1e-5)  # orthonormal
    per_layer = rows.view(k, num_ws, w_dim)
    assert torch.allclose(per_layer, per_layer[:, :1].expand_as(per_layer))  # the same W axis in every layer
    basis = PersonalizedBasis(k, num_ws, w_dim, offset_init="basis_mean", init_directions=rows, scale=2.0)
    eff = basis.effective_basis()
    assert torch.allclose(eff.norm(dim=1), torch.full((k,), 2.0), atol=1e-5)  # scale = row length
    assert torch.allclose((eff / 2) @ rows.t() @ rows, eff / 2, atol=1e-4)  # the span of the W directions


def test_gradient_principal_directions_finds_the_axis_the_frames_differ_along():
    from persona.ours.basis import gradient_principal_directions

    gen = torch.Generator().manual_seed(0)
    axes = torch.linalg.qr(torch.randn(40, 3, generator=gen))[0].t()  # [3,40] orthonormal
    spread = torch.randn(30, 3, generator=gen) * torch.tensor([5.0, 2.0, 0.5])
    gradients = 7.0 * axes[2] + spread @ axes  # a common pull plus frame-specific ones
    rows = gradient_principal_directions(gradients, k=10)
    assert rows.shape == (10, 40) and torch.allclose(rows.norm(dim=1), torch.ones(10), atol=1e-5)
    assert abs(float(rows[0] @ axes[0])) > 0.98 and abs(float(rows[1] @ axes[1])) > 0.95
    assert gradient_principal_directions(gradients[:4], k=10).shape == (3, 40)  # at most N - 1 directions
    with pytest.raises(ValueError, match="at least 2 frames"):
        gradient_principal_directions(gradients[:1], k=10)


def test_grad_pca_starts_the_basis_on_the_principal_directions_of_the_frames_w_gradients(frames, tmp_path):
    """basis_init='grad_pca': before step 1 the basis rows are the principal directions of each
    sampled frame's W+ gradient (image L2 + mouth L2) at the offset, computed here frame by frame."""
    import torch.nn.functional as F

    from persona.ours.basis import gradient_principal_directions
    from persona.ours.train import mouth_l2

    cfg = tiny_cfg(basis_init="grad_pca")
    model, G = make_model(cfg)
    G.requires_grad_(False)
    start = model.basis.offset.detach().view(1, model.basis.num_ws, model.basis.w_dim)
    gradients = []
    for i in torch.linspace(0, len(frames) - 1, 2 * cfg.k).round().long().unique().tolist():
        sample = frames[i]
        ws = start.clone().requires_grad_(True)
        pred, target = model.synthesize(ws, sample["camera"][None]), sample["image"][None]
        loss = F.mse_loss(pred, target) + cfg.mouth_weight * mouth_l2(pred, target, sample["mouth_box"][None])
        gradients.append(torch.autograd.grad(loss, ws)[0].reshape(-1))
    expected = gradient_principal_directions(torch.stack(gradients), cfg.k)
    before = model.basis.basis.detach().clone()
    fit_prior(model, frames, RunDir(tmp_path / "run"), cfg, stop_after=0)
    rows = F.normalize(model.basis.basis.detach(), dim=1)
    assert torch.allclose((rows * expected).sum(1).abs(), torch.ones(cfg.k), atol=1e-4)
    assert torch.allclose(model.basis.basis.norm(dim=1), before.norm(dim=1))  # the lengths randn rows had


def test_precision_tf32_and_bf16_train_both_stages_close_to_fp32(frames, tmp_path):
    """``precision``: tf32 is fp32 off NVIDIA GPUs (the same losses); bf16 autocast trains both stages
    (the backbone's own autograd functions included) within bf16 rounding of fp32's losses; the
    process's TF32 flags are as before."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    losses = {}
    for precision in ("fp32", "tf32", "bf16"):
        cfg = tiny_cfg(precision=precision, iterations=4, frozen_iterations=2, checkpoint_every=4)
        model, _ = make_model(cfg)
        fit_prior(model, frames, RunDir(tmp_path / precision), cfg)
        rows = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
        losses[precision] = torch.tensor([r["loss"] for r in rows])
    assert torch.equal(losses["tf32"], losses["fp32"])
    assert not torch.equal(losses["bf16"], losses["fp32"])  # autocast did run in bf16
    assert torch.allclose(losses["bf16"], losses["fp32"], rtol=0.05)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags


def test_expression_noise_is_scaled_per_dimension_keyed_by_seed_and_step_and_changes_training(frames, tmp_path):
    """``expression_noise``: Gaussian noise of std scale x each dimension's spread over the training
    frames, the same for the same (seed, step) and another for the next step; a run with it trains on
    other inputs than one without (3DMM only)."""
    from persona.ours.train import noisy_expressions

    spread = torch.linspace(0.0, 2.0, 76)
    base = torch.zeros(4000, 76)
    a = noisy_expressions(base, spread, 0.5, seed=3, step=7)
    assert torch.equal(a, noisy_expressions(base, spread, 0.5, seed=3, step=7))
    assert not torch.equal(a, noisy_expressions(base, spread, 0.5, seed=3, step=8))
    assert not torch.equal(a, noisy_expressions(base, spread, 0.5, seed=4, step=7))
    assert torch.allclose(a.std(0), 0.5 * spread, atol=0.03)  # dimension 0 (spread 0) gets none

    losses = {}
    for noise in (0.0, 0.3):
        cfg = tiny_cfg(expression_noise=noise, iterations=3, frozen_iterations=1, checkpoint_every=3)
        model, _ = make_model(cfg)
        fit_prior(model, frames, RunDir(tmp_path / str(noise)), cfg)
        losses[noise] = [r["loss"] for r in RunDir(tmp_path / str(noise)).metrics()]
    assert losses[0.0][0] != losses[0.3][0]


def test_encoder_weight_decay_is_the_encoder_groups_alone():
    """``encoder_weight_decay``: Adam's weight decay on the encoder's group only (its own group at the
    base lr when the profile gives it none); off, the groups are as before (no weight_decay key)."""
    from persona.ours.train import parameter_groups

    model, _ = make_model(tiny_cfg())
    encoder = {id(p) for p in model.encoder.parameters()}
    off = parameter_groups(model, tiny_cfg())
    assert not any("weight_decay" in g for g in off)
    on = parameter_groups(model, tiny_cfg(encoder_weight_decay=0.1))
    decayed = [g for g in on if "weight_decay" in g]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == 0.1 and {id(p) for p in decayed[0]["params"]} == encoder
    paper = train_config("paper", encoder_weight_decay=0.1)  # encoder_lr None: its own group at lr
    model, _ = make_model(replace(paper, k=4, mlp_hidden=16, mlp_layers=1, modality="3dmm", resolution=RES))
    decayed = [g for g in parameter_groups(model, paper) if "weight_decay" in g]
    assert len(decayed) == 1 and decayed[0]["lr"] == paper.lr


def test_expression_lasso_shrinks_input_columns_and_zeroes_short_ones(frames, tmp_path):
    """``expression_lasso``: group lasso's proximal step on the 3DMM encoder's input columns: each
    column's norm drops by the amount, a shorter one becomes zero, directions are kept; in training the
    first layer's columns end shorter than without it, and the other layers are untouched by the step."""
    from persona.ours.train import shrink_input_columns_

    layer = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 0.1, 0.0], [4.0, 0.0, 0.2]]))
    norms = shrink_input_columns_(layer, 1.0)
    assert torch.allclose(norms, torch.tensor([4.0, 0.0, 0.0]))
    assert torch.allclose(layer.weight, torch.tensor([[2.4, 0.0, 0.0], [3.2, 0.0, 0.0]]))
    with torch.no_grad():  # taper: a column shrinks less as it nears that norm, not at all beyond it
        layer.weight.copy_(torch.tensor([[3.0, 0.1, 0.0], [4.0, 0.0, 0.2]]))
    norms = shrink_input_columns_(layer, 0.05, taper=1.0)
    assert torch.allclose(norms, torch.tensor([5.0, 0.1 - 0.05 * 0.9, 0.2 - 0.05 * 0.8]))
    assert torch.equal(layer.weight[:, 0], torch.tensor([3.0, 4.0]))

    weights = {}
    for lasso in (0.0, 50.0):
        cfg = tiny_cfg(expression_lasso=lasso, iterations=3, frozen_iterations=1, checkpoint_every=3)
        model, _ = make_model(cfg)
        fit_prior(model, frames, RunDir(tmp_path / str(lasso)), cfg)
        weights[lasso] = torch.linalg.vector_norm(model.encoder.net[0].weight.detach(), dim=0)
    assert (weights[50.0] < weights[0.0]).all()
    cfg = tiny_cfg(expression_lasso=50.0, expression_lasso_taper=1e-9, iterations=3, frozen_iterations=1, checkpoint_every=3)
    model, _ = make_model(cfg)  # a taper below every column's norm spares them all: the run trains as without the lasso
    fit_prior(model, frames, RunDir(tmp_path / "taper"), cfg)
    assert torch.allclose(torch.linalg.vector_norm(model.encoder.net[0].weight.detach(), dim=0), weights[0.0])
    from persona.errors import PersonaInputError

    for name in ("expression_lasso", "expression_lasso_taper", "expression_noise", "encoder_weight_decay"):  # negatives refused by name
        with pytest.raises(PersonaInputError, match=f"{name}: -1 is out of range"):
            train_config("default", modality="3dmm", **{name: -1})


def test_expression_lasso_is_the_3dmm_default_and_refused_where_there_is_no_expression_input():
    """Since session 19 the CPU profiles train the 3DMM modality with the lasso at 1 (issue #20, twelfth
    round); the paper's profile, RGB and audio keep 0; asking for it on RGB or audio is an error, not a no-op."""
    from persona.errors import PersonaInputError

    assert train_config("default", modality="3dmm").expression_lasso == 1.0
    assert train_config("smoke", modality="3dmm").expression_lasso == 1.0
    assert train_config("paper", modality="3dmm").expression_lasso == 0.0
    assert train_config("default", modality="3dmm", expression_lasso=0.0).expression_lasso == 0.0
    for modality in ("rgb", "audio"):
        assert train_config("default", modality=modality).expression_lasso == 0.0
        assert train_config("default", modality=modality, expression_lasso=0.0).expression_lasso == 0.0
        with pytest.raises(PersonaInputError, match=f"expression_lasso=1.0 applies to modality '3dmm'.*got '{modality}'"):
            train_config("default", modality=modality, expression_lasso=1.0)


def test_expression_standardise_centres_and_scales_by_the_training_frames_and_travels_with_the_weights(frames, tmp_path):
    """``expression_standardise``: before step 1 the 3DMM encoder's input buffers take the training
    frames' per-dimension mean and 1/std (a constant dimension keeps scale 1); the checkpoint carries
    them, a resumed run ends bit-identical, and a rendering load encodes as the trained model did. Off
    (the release), the encoder's state has no such keys."""
    from persona.ours.encoders import ExpressionEncoder
    from persona.ours.train import _load_checkpoint

    encoder = ExpressionEncoder(4, 76, 16, 1, standardise=True)
    expressions = torch.randn(50, 76) * torch.linspace(0.1, 3.0, 76) + 2.0
    expressions[:, 5] = 7.0  # constant
    encoder.set_input_statistics(expressions)
    seen = (expressions - encoder.input_mean) * encoder.input_scale
    assert torch.allclose(seen.mean(0), torch.zeros(76), atol=1e-5)
    assert torch.allclose(seen.std(0)[torch.arange(76) != 5], torch.ones(75), atol=1e-4)
    assert encoder.input_scale[5] == 1.0
    assert "input_mean" not in ExpressionEncoder(4, 76, 16, 1).state_dict()

    cfg = tiny_cfg(expression_standardise=True)
    full = RunDir(tmp_path / "full")
    model, _ = make_model(cfg)
    fit_prior(model, frames, full, cfg)
    tensors = final_tensors(full)
    assert torch.allclose(tensors["model.encoder.input_mean"], frames.expression.mean(0))
    assert torch.allclose(tensors["model.encoder.input_scale"], 1.0 / frames.expression.std(0))
    killed = RunDir(tmp_path / "killed")
    fit_prior(make_model(cfg)[0], frames, killed, cfg, stop_after=3)
    fit_prior(make_model(cfg)[0], frames, killed, cfg)
    got = final_tensors(killed)
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)

    loaded, _ = make_model(cfg)
    _load_checkpoint(full.latest_checkpoint()[1], loaded, None)
    assert torch.equal(loaded.encoder.input_scale, tensors["model.encoder.input_scale"])
    model.eval(), loaded.eval()
    batch = {"expression": frames.expression[:3]}
    assert torch.allclose(loaded.encode(batch), model.encode(batch), atol=1e-6)
