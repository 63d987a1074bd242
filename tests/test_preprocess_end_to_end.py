"""The ground-truth folder of `bench end2end` (persona.preprocess.end_to_end): what training reads
from it is the synthetic clip's own frames, true cameras and true expressions."""

import numpy as np
import pytest

pytest.importorskip("mediapipe")  # the background plate (selfie segmentation)

from persona.data import formats  # noqa: E402
from persona.data.dataset import FrameDataset  # noqa: E402
from persona.errors import PersonaInputError  # noqa: E402
from persona.preprocess import end_to_end, synthetic_clip  # noqa: E402


def test_truth_folder_holds_the_clips_true_cameras_and_expressions(tmp_path):
    truth = synthetic_clip.write_clip(tmp_path / "c.mp4", n_frames=12, resolution=48, audio=False)
    out = end_to_end.write_truth_folder(tmp_path / "c.mp4", truth, tmp_path / "gt", size=32, identity_seed=1)
    train, test = FrameDataset(out, "train"), FrameDataset(out, "test")
    assert len(train) + len(test) == 12 and train.resolution == 32
    idx = np.array(train.indices + test.indices)
    cams = np.concatenate([train.cameras.numpy(), test.cameras.numpy()])
    np.testing.assert_allclose(cams, truth.cameras[idx], atol=1e-5)
    sample = test[0]
    np.testing.assert_allclose(sample["expression"].numpy(), truth.expressions[test.indices[0]], atol=1e-5)
    assert sample["image"].shape == (3, 32, 32) and train.background is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_end2end_passes_the_camera_lr_to_training_and_names_its_runs(tmp_path, monkeypatch, capsys):
    """``bench end2end --camera-correction --camera-lr LR``: the corrected run trains with ``--camera-lr``, in a
    folder of its own (the default lr's runs keep their names); the clip and folders already there are reused."""
    work = tmp_path / "work"
    for folder in ("pre_world", "gt"):
        (work / folder).mkdir(parents=True)
    (work / "clip.mp4").write_bytes(b"")
    calls = []
    monkeypatch.setattr(end_to_end, "train_and_score", lambda data, run, modality, steps, seed, extra=(): calls.append((run.name, extra)) or 25.0)
    truth = synthetic_clip.clip_truth(n_frames=150, seed=0)
    monkeypatch.setattr(end_to_end, "corrected_cameras", lambda data, run: (truth.cameras, truth.cameras))
    formats.write_nerface(work / "pre_world", "test", [{"file_path": f"images/{i:05d}", "transform_matrix": np.eye(4),
                                                        "expression": np.zeros(76), "frame_index": i} for i in range(135, 150)],
                          [4.26, 4.26, 0.5, 0.5])
    assert end_to_end.main(["--work", str(work), "--modalities", "rgb", "--steps", "1290", "--camera-correction",
                            "--camera-terms", "quadratic", "--camera-lr", "0.01", "--figure", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig_rgb.png").is_file() and (tmp_path / "fig_rgb.pdf").is_file()
    assert calls[2] == ("run_pre_world_rgb_1290_camera_correction_quadratic_lr0.01",
                        ("--camera-correction", "quadratic", "--camera-lr", "0.01"))
    assert [name for name, _ in calls[:2]] == ["run_pre_world_rgb_1290", "run_gt_rgb_1290"]
    # the floor: the same corrected training on the ground-truth folder
    assert calls[3] == ("run_gt_rgb_1290_camera_correction_quadratic_lr0.01",
                        ("--camera-correction", "quadratic", "--camera-lr", "0.01"))
    calls.clear()
    assert end_to_end.main(["--work", str(work), "--modalities", "rgb", "--steps", "1290", "--camera-correction"]) == 0
    assert calls[2] == ("run_pre_world_rgb_1290_camera_correction", ("--camera-correction", "linear"))
    assert calls[3] == ("run_gt_rgb_1290_camera_correction", ("--camera-correction", "linear"))
    out = capsys.readouterr().out
    assert "deg corrected (issue #15 target: 3 / 8; the best quadratic map, fitted to the truth: 0.00 / 0.02)" in out
    assert "the correction moves the true cameras by 0.01 / 0.03 deg" in out
    assert "on the test frames (scored) 0.01 -> 0.01 deg" in out  # float32 labels of the same cameras


def test_end2end_prior_fit_alone_trains_nothing(tmp_path, monkeypatch, capsys):
    """``--prior-fit STEPS --no-train``: the fit to the prior on both folders (with the chosen terms and seed), no
    training; without ``--no-train`` the trainings follow."""
    work = tmp_path / "work"
    for folder in ("pre_world", "gt"):
        (work / folder).mkdir(parents=True)
    (work / "clip.mp4").write_bytes(b"")
    calls, fits = [], []
    monkeypatch.setattr(end_to_end, "train_and_score", lambda data, run, modality, steps, seed, extra=(): calls.append(run.name) or 25.0)
    monkeypatch.setattr(end_to_end, "prior_fit", lambda pre, gt, truth, terms, steps, seed: fits.append(
        (pre.name, gt.name, truth.shape, terms, steps, seed)) or "  prior fit line")
    args = ["--work", str(work), "--modalities", "rgb", "--prior-fit", "300", "--camera-terms", "quadratic", "--seed", "1"]
    assert end_to_end.main(args + ["--no-train"]) == 0
    assert fits == [("pre_world", "gt", (150, 25), "quadratic", 300, 1)] and calls == []
    assert "  prior fit line" in capsys.readouterr().out
    assert end_to_end.main(args) == 0
    assert calls == ["run_pre_world_rgb_150_s1", "run_gt_rgb_150_s1"]
    with pytest.raises(PersonaInputError, match="--figure .* add --camera-correction"):
        end_to_end.main(["--work", str(tmp_path / "none"), "--figure", str(tmp_path / "f")])
    with pytest.raises(PersonaInputError, match="--no-train: .* without --prior-fit"):
        end_to_end.main(["--work", str(tmp_path / "none"), "--no-train"])
    assert not (tmp_path / "none").exists()  # refused before anything is written


def test_folder_frames_reads_every_frame_in_dataset_order(tmp_path):
    truth = synthetic_clip.write_clip(tmp_path / "c.mp4", n_frames=6, resolution=48, audio=False)
    out = end_to_end.write_truth_folder(tmp_path / "c.mp4", truth, tmp_path / "gt", size=32, identity_seed=1)
    images, labels = end_to_end.folder_frames(out, 16)
    assert images.shape == (6, 3, 16, 16) and -1 <= images.min() and images.max() <= 1
    np.testing.assert_allclose(labels.numpy(), truth.cameras, atol=1e-6)
