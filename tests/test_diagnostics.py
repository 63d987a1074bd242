"""Expression-fidelity diagnostics (persona/diagnostics.py) and the trainer's mouth/subspace options."""

from __future__ import annotations

import math

import pytest
import torch

from persona import diagnostics as D
from persona.data import world as S
from persona.errors import PersonaInputError
from persona.ours.train import mouth_l2, parameter_groups, train_config


class Frames:
    """A minimal FrameDataset stand-in: images, a fixed mouth box, indices, a camera."""

    def __init__(self, images: torch.Tensor, box=(0.25, 0.5, 0.75, 0.75)):
        self.images, self.box = images, torch.tensor(box)
        self.indices = list(range(len(images)))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": self.indices[i], "mouth_box": self.box, "camera": torch.zeros(25)}


@pytest.fixture(scope="module")
def world_clip():
    """id-like synthetic clip at the frontal camera: jaw from closed to open and back (16 frames)."""
    seed = 1
    jaw = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.8, 1.0, 0.7, 0.4, 0.2, 0.0, 0.6, 0.9, 0.15, 0.45, 0.05, 0.75])
    e = torch.zeros(len(jaw), S.EXPRESSION_DIM)
    e[:, S.JAW_OPEN] = jaw
    e[:, S.SMILE] = torch.linspace(-0.2, 0.6, len(jaw)).flip(0)  # an unrelated expression moving too
    from persona import cameras

    cam = torch.as_tensor(cameras.camera_label(0.0, 0.0), dtype=torch.float32)[None].repeat(len(jaw), 1)
    images, _ = S.render_frames(S.sample_identity(seed), e.numpy(), cam.numpy(), 64, 16, "test")
    truth = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return truth, D.opening_box(seed, cam[:1])[0], D.mouth_open_control(e), cam


def test_following_score_known_cases():
    truth = torch.tensor([0.0, 1.0, 3.0, 2.0, 5.0])
    assert D.following_score(truth, truth) == pytest.approx(1.0)
    assert D.following_score(-truth, truth) == pytest.approx(-1.0)
    assert D.following_score(torch.full((5,), 2.0), truth) == 0.0  # a frozen face
    with pytest.raises(ValueError, match="equal length"):
        D.following_score(truth[:4], truth)


def test_mouth_opening_reads_only_the_box():
    flat = torch.zeros(2, 3, 16, 16)
    box = torch.tensor([0.25, 0.25, 0.75, 0.75])  # pixels 4..11
    assert torch.equal(D.mouth_opening(flat, box), torch.zeros(2, dtype=torch.float64))
    dark = flat.clone()
    dark[1, :, 6:8, 6:10] = -1.0  # an 8-pixel black hole inside the box
    dark[:, :, 0:2, 0:2] = 1.0  # outside the box: ignored
    opening = D.mouth_opening(dark, box)
    assert opening[0] == 0.0 and opening[1] == pytest.approx(8 * 0.5)  # median 0.5 luminance, hole at 0


def test_opening_measure_reads_the_worlds_mouth_and_a_frozen_frame_scores_zero(world_clip):
    truth, box, control, cam = world_clip
    measured = D.mouth_opening(truth, box)
    validity = D.following_score(measured, control)
    assert validity > 0.8, validity  # the image measure follows the world's jaw control
    assert D.following_score(measured, measured) == pytest.approx(1.0)
    frozen = truth[5:6].expand_as(truth)  # one open-mouthed frame held for the whole clip
    assert D.following_score(D.mouth_opening(frozen, box), measured) == 0.0
    # the box depends on the camera only: the same for every expression
    assert torch.equal(D.opening_box(1, cam[:3]), D.opening_box(1, cam[:1]).expand(3, 4))


def test_static_floor_scores_the_mean_training_frame():
    train = Frames(torch.stack([torch.full((3, 16, 16), -0.2), torch.full((3, 16, 16), 0.2)]))  # mean frame 0
    test = Frames(torch.full((3, 3, 16, 16), 0.1))  # error 0.1 in [-1,1] = 0.05 in [0,1]
    floor = D.static_floor(train, test)
    expected = 10 * math.log10(1 / 0.05**2)
    assert list(floor["index"]) == [0, 1, 2]
    assert floor["psnr"].tolist() == pytest.approx([expected] * 3)
    assert floor["psnr_mouth"].tolist() == pytest.approx([expected] * 3)
    assert torch.allclose(D.mean_frame(train), torch.zeros(3, 16, 16))


def test_mouth_l2_is_the_mse_inside_the_box():
    pred, target = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
    boxes = torch.tensor([[0.0, 0.5, 0.5, 1.0]]).repeat(2, 1)  # bottom-left quarter
    pred[:, :, :4, :] = 1.0  # errors outside the box only
    assert float(mouth_l2(pred, target, boxes)) == 0.0
    pred[0, :, 4:, :4] = 0.5
    assert float(mouth_l2(pred, target, boxes)) == pytest.approx(0.25 / 2)


def test_subspace_learning_rate_is_a_second_group():
    from test_train import make_model, tiny_cfg

    cfg = tiny_cfg()
    model, _ = make_model(cfg)
    assert train_config("paper").basis_lr is None and train_config("paper").mouth_weight == 0.0
    groups = parameter_groups(model, train_config("paper"))  # the paper's optimiser: one group at lr
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(model.parameters()))
    groups = parameter_groups(model, train_config("paper", basis_lr=0.01))
    assert len(groups) == 2 and groups[1]["lr"] == 0.01
    assert {id(p) for p in groups[1]["params"]} == {id(model.basis.basis), id(model.basis.offset)}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    defaults = train_config("default", modality="3dmm")
    assert (defaults.basis_lr, defaults.encoder_lr, defaults.mouth_weight) == (0.03, 3e-3, 1.0)
    rgb = train_config("default")  # RGB keeps the paper's optimiser unless a recipe field is given
    assert (rgb.basis_lr, rgb.encoder_lr, rgb.mouth_weight) == (None, None, 0.0)
    assert train_config("default", basis_lr=0.01).basis_lr == 0.01
    groups = parameter_groups(model, train_config("smoke", basis_lr=0.01, encoder_lr=0.002))
    assert [g.get("lr") for g in groups] == [None, 0.01, 0.002]
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.generator.parameters()}


def test_diagnose_cli_rejects_bad_overrides(tmp_path):
    with pytest.raises(PersonaInputError, match="FIELD=JSON"):
        D.main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "basis_lr"])


def test_default_recipe_moves_the_subspace_where_release_settings_leave_it_random(tmp_path):
    """The diagnosis of issue #20 on a tiny run: at a short budget, every lr at 3e-4 leaves the
    random basis where it started; the default recipe (subspace lr 0.03) turns it, and its renders
    follow the expression better."""
    from test_prior import StandInGenerator
    from test_train import RES, StandInFrames, make_model, tiny_cfg

    from persona.runs import RunDir
    from persona.ours.train import fit_prior

    torch.manual_seed(0)
    frames = StandInFrames(12, seed=1, teacher=StandInGenerator(res=RES))
    overlap, error = {}, {}
    for name, over in (("release", dict(basis_lr=3e-4, encoder_lr=3e-4, mouth_weight=0.0)), ("default", {})):
        cfg = tiny_cfg(iterations=20, frozen_iterations=20, checkpoint_every=20, **over)
        model, _ = make_model(cfg)
        start = model.basis.effective_basis().detach().clone()
        fit_prior(model, frames, RunDir(tmp_path / name), cfg)
        end = model.basis.effective_basis().detach()
        overlap[name] = float((torch.linalg.svdvals(start @ end.t()) ** 2).mean())  # 1 = same subspace
        with torch.no_grad():
            batch = {"expression": frames.expression, "camera": frames.camera}
            error[name] = float(((model(batch, frames.camera)["image"] - frames.image) ** 2).mean())
    assert overlap["release"] > 0.99 and overlap["default"] < 0.95, overlap
    assert error["default"] < error["release"], error


def test_retrieval_ceiling_rewards_an_informative_key():
    # frames whose mouth box brightness is the key: retrieving by the key beats retrieving by noise
    g = torch.Generator().manual_seed(0)
    level = torch.rand(40, generator=g)
    images = torch.zeros(40, 3, 8, 8)
    images[:, :, 4:6, 2:6] = level.view(-1, 1, 1, 1) * 2 - 1
    boxes = torch.tensor([0.25, 0.5, 0.75, 0.75]).expand(10, 4)
    good = D.retrieval_ceiling(images[:30], level[:30, None], images[30:], level[30:, None], boxes, k=1)
    noise = torch.rand(40, 1, generator=g)
    bad = D.retrieval_ceiling(images[:30], noise[:30], images[30:], noise[30:], boxes, k=1)
    assert good > bad + 10, (good, bad)
    with pytest.raises(PersonaInputError, match="k="):
        D.retrieval_ceiling(images[:30], level[:30, None], images[30:], level[30:, None], boxes, k=31)


def test_diagnose_on_several_identities_writes_each_and_one_figure_of_all(tmp_path):
    import pandas as pd

    tiny = S.BenchmarkConfig(resolution=16, identities=2, mono_train_frames=4, mono_test_frames=3, audio_train_frames=4,
                             audio_test_frames=3, val_frames=1, novel_every=5, prior_images=2, render_batch=8)
    bench = S.build_benchmark(tmp_path / "bench", "smoke", seed=0, config=tiny)
    out = tmp_path / "diag"
    videos = [str(bench / i / "mono") for i in ("id00", "id01")]
    with pytest.raises(PersonaInputError, match="share the name"):
        D.main(["--data", videos[0], "--data", videos[0], "--out", str(out), "--profile", "smoke"])
    assert not out.exists()  # refused before anything trained
    assert D.main(["--data", videos[0], "--data", videos[1], "--out", str(out), "--profile", "smoke", "--every", "3",
                   "--test-frames", "2"]) == 0
    both = pd.read_csv(out / "curve.csv")
    assert sorted(set(both["label"])) == ["id00-mono", "id01-mono"] and list(both["step"][:2]) == [3, 6]
    assert both["floor_mouth"].notna().all() and (out / "curve.png").is_file()
    for name in ("id00-mono", "id01-mono"):
        assert (out / name / "summary.json").is_file() and (out / name / "basis_change.csv").is_file()


def test_reach_inverts_an_open_mouth_into_a_trained_run_and_refuses_other_runs(tmp_path):
    import pandas as pd

    from persona import subspace_reach as R
    from persona.data.dataset import FrameDataset
    from persona.ours.method import build_method
    from persona.runs import RunDir

    tiny = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=4, mono_test_frames=3, audio_train_frames=4,
                             audio_test_frames=3, val_frames=1, novel_every=5, prior_images=2, render_batch=8)
    video = S.build_benchmark(tmp_path / "bench", "smoke", seed=0, config=tiny) / "id00" / "mono"
    runs = {}
    for modality in ("3dmm", "rgb"):
        method = build_method({"profile": "smoke", "modality": modality})
        method.fit(FrameDataset(video, "train"), RunDir(tmp_path / modality))
        runs[modality] = tmp_path / modality
    out = tmp_path / "reach"
    assert R.main(["--run", str(runs["3dmm"]), "--data", str(video), "--out", str(out), "--steps", "15"]) == 0
    [row] = pd.read_csv(out / "reach.csv").to_dict(orient="records")
    assert row["label"] == "id00: 3dmm" and row["run"] == str(runs["3dmm"])
    assert set(f"psnr_mouth_{r}" for r in R.REACH_ROWS) <= set(row) and (out / "reach.png").is_file()
    assert row["psnr_mouth_wplus"] > row["psnr_mouth_closed"]  # the free inversion moves towards the open mouth
    assert 0.0 <= row["share_in_span"] <= 1.0 + 1e-5 and row["step_inversion"] > 0
    assert "psnr_mouth_ours_encoder" not in row
    # --encoder-steps: the encoder alone trains on; the generator and the basis stay as trained
    from persona.verbs import load_run

    method = load_run(runs["3dmm"])[0]
    frozen = {k: v.clone() for k, v in method.model.state_dict().items() if not k.startswith("encoder.")}
    encoder = {k: v.clone() for k, v in method.model.encoder.state_dict().items()}
    R.train_encoder_alone(method, video, steps=3)
    assert all(torch.equal(v, method.model.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, method.model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert R.main(["--run", str(runs["3dmm"]), "--data", str(video), "--out", str(out), "--steps", "2", "--encoder-steps", "2"]) == 0
    [row] = pd.read_csv(out / "reach.csv").to_dict(orient="records")
    assert row["step_ours_encoder"] > 0 and math.isfinite(row["psnr_mouth_ours_encoder"])

    table = R.reach_report(load_run(runs["3dmm"])[0], video, tmp_path / "tables", tmp_path / "figures", steps=3)
    assert len(table) == 1 and (tmp_path / "tables" / "subspace_reach.csv").is_file()
    assert (tmp_path / "figures" / "fig_subspace_reach_3dmm.png").is_file()
    with pytest.raises(PersonaInputError, match="3DMM run of ours"):
        R.main(["--run", str(runs["rgb"]), "--data", str(video), "--out", str(out)])
    with pytest.raises(PersonaInputError, match="one --data per --run"):
        R.main(["--run", str(runs["3dmm"]), "--run", str(runs["3dmm"]), "--data", str(video), "--out", str(out)])


def test_diagnose_hold_out_withholds_training_stretches_and_scores_them(tmp_path):
    """``--hold-out``: the run trains without the withheld training positions, which become a split of
    their own, scored beside the training frames and the test clip (memorised stretches vs new speech)."""
    import json

    tiny = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=8, mono_test_frames=3, audio_train_frames=4,
                             audio_test_frames=3, val_frames=1, novel_every=5, prior_images=2, render_batch=8)
    bench = S.build_benchmark(tmp_path / "bench", "smoke", seed=0, config=tiny)
    video = bench / "id00" / "mono"
    for bad in ("5:3", "x", "2-4"):
        with pytest.raises(PersonaInputError, match="--hold-out"):
            D.main(["--data", str(video), "--out", str(tmp_path / "bad"), "--profile", "smoke", "--hold-out", bad])
    with pytest.raises(PersonaInputError, match="some but not all"):
        D.hold_out_video(video, [(0, 100)], tmp_path / "all")
    out = tmp_path / "diag"
    assert D.main(["--data", str(video), "--out", str(out), "--profile", "smoke", "--every", "3", "--test-frames", "2",
                   "--hold-out", "2:4,6:7"]) == 0
    held = out / "data" / "mono"
    train = json.loads((held / "transforms_train.json").read_text())["frames"]
    withheld = json.loads((held / "transforms_test.json").read_text())["frames"]
    original = json.loads((video / "transforms_train.json").read_text())["frames"]
    assert [f["file_path"] for f in withheld] == [original[k]["file_path"] for k in (2, 3, 6)]
    assert len(train) == 5 and (held / "images").is_symlink()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hold_out"] == [[2, 4], [6, 7]] and summary["video"] == str(video)  # the test clip stays the video's own
    assert set(summary["mouth_gain"]) == {"train", "held_out", "test"}
    assert all(isinstance(v, float) and v == v for v in summary["mouth_gain"].values())
    import pandas as pd

    curve = pd.read_csv(out / "curve.csv")  # every scored checkpoint carries the three splits' gains
    assert {"gain_train", "gain_held_out", "gain_test"} <= set(curve.columns) and len(curve) >= 2
    assert curve.iloc[-1]["gain_held_out"] == pytest.approx(summary["mouth_gain"]["held_out"])
    assert (out / "gains.png").is_file()


def test_diagnose_train_gain_scores_the_training_frames_beside_the_test_clip(tmp_path):
    """``--train-gain``: every checkpoint's mouth gain over the static floor on the training frames and on
    the test clip (under-fitting vs not carrying over), each against the floor of its own frames."""
    import json

    import pandas as pd

    tiny = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=6, mono_test_frames=3, audio_train_frames=4,
                             audio_test_frames=3, val_frames=1, novel_every=5, prior_images=2, render_batch=8)
    video = S.build_benchmark(tmp_path / "bench", "smoke", seed=0, config=tiny) / "id00" / "mono"
    out = tmp_path / "diag"
    assert D.main(["--data", str(video), "--out", str(out), "--profile", "smoke", "--every", "3", "--test-frames", "2",
                   "--train-gain"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mouth_gain"]) == set(summary["mouth_floors"]) == {"train", "test"} and summary["hold_out"] == []
    curve = pd.read_csv(out / "curve.csv")
    assert {"gain_train", "gain_test"} <= set(curve.columns) and "gain_held_out" not in curve.columns and len(curve) >= 2
    from persona.data.dataset import FrameDataset

    train = FrameDataset(video, "train")
    floor = D.static_floor(train, train, 50)["psnr_mouth"].mean()  # the training frames' own floor
    assert summary["mouth_floors"]["train"] == pytest.approx(floor)
    assert (out / "gains.png").is_file() and not (out / "data").exists()  # nothing copied: the video's own splits


def test_ridge_predict_recovers_a_linear_map_and_shrinks_to_the_mean():
    torch.manual_seed(0)
    x, w = torch.randn(200, 12) * torch.linspace(0.1, 5, 12), torch.randn(12, 3)
    y = x @ w + 0.5
    t = torch.randn(20, 12)
    assert torch.allclose(D.ridge_predict(x, y, t, 1e-6), t @ w + 0.5, atol=1e-3)
    assert torch.allclose(D.ridge_predict(x, y, t, 1e12), y.mean(0).expand(20, 3), atol=1e-3)  # all penalty: the mean


def test_diagnose_oracles_scores_the_retrieval_oracles_and_trains_nothing(tmp_path):
    import pandas as pd

    tiny = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=6, mono_test_frames=3, audio_train_frames=8,
                             audio_test_frames=3, val_frames=1, novel_every=5, prior_images=2, render_batch=8)
    video = S.build_benchmark(tmp_path / "bench", "smoke", seed=0, config=tiny) / "id00" / "audio"
    out = tmp_path / "oracles"
    assert D.main(["--data", str(video), "--out", str(out), "--oracles"]) == 0
    table = pd.read_csv(out / "oracles.csv")
    assert list(table.columns) == ["video", "floor", "audio", "audio_ridge", "audio_ridge_r2", "mouth_controls"]
    assert table["video"].tolist() == ["id00-audio"] and table.drop(columns="video").notna().all(axis=None)
    assert not (out / "run").exists()  # nothing trained
    from persona.data.dataset import FrameDataset

    train, test = FrameDataset(video, "train"), FrameDataset(video, "test")
    assert table["floor"][0] == pytest.approx(D.static_floor(train, test)["psnr_mouth"].mean(), abs=1e-4)
    with pytest.raises(PersonaInputError, match="k=99"):
        D.mouth_oracles(video, k=99)
    with pytest.raises(PersonaInputError, match="--oracles trains nothing"):
        D.main(["--data", str(video), "--out", str(out), "--oracles", "--train-gain"])
    threads = torch.get_num_threads()
    try:  # --threads as the other verbs (two diagnose runs at torch's default count oversubscribe two cores)
        assert D.main(["--data", str(video), "--out", str(out), "--oracles", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(PersonaInputError, match="--device"):
        D.main(["--data", str(video), "--out", str(out), "--oracles", "--device", "tpu:9"])


def test_the_several_identities_figure_dashes_each_training_frames_gain(tmp_path, monkeypatch):
    import pandas as pd

    import persona.report

    drawn = []
    monkeypatch.setattr(persona.report, "save_figure", lambda fig, path: drawn.append(fig) or [path])
    rows = [{"step": s, "psnr_mouth": 27.0 + s / 1000, "floor_mouth": 25.0, "following": 0.9, "gain_train": 2.5 + s / 1000,
             "gain_test": 2.0 + s / 1000, "label": label} for label in ("id00-mono", "id01-mono") for s in (100, 200)]
    D.curve_figure(pd.DataFrame(rows), None, tmp_path / "curve")
    mouth_panel = drawn[0].axes[0]
    dashed = [line for line in mouth_panel.lines if line.get_linestyle() == "--" and line.get_label().endswith("training frames")]
    assert [line.get_label() for line in dashed] == ["id00-mono, training frames", "id01-mono, training frames"]
    assert list(dashed[1].get_ydata()) == [2.6, 2.7]
    D.curve_figure(pd.DataFrame(rows).drop(columns="gain_train"), None, tmp_path / "plain")  # no training split: no dashes
    assert not [line for line in drawn[1].axes[0].lines if line.get_label().endswith("training frames")]
