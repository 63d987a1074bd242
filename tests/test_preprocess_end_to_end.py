"""The ground-truth folder of `bench end2end` (persona.preprocess.end_to_end): what training reads
from it is the synthetic clip's own frames, true cameras and true expressions."""

import numpy as np
import pytest

pytest.importorskip("mediapipe")  # the background plate (selfie segmentation)

from persona.data.dataset import FrameDataset  # noqa: E402
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
