"""What real NerFACE / AD-NeRF folders need (issue #15): signed focals, EG3D framing of a foreign
focal, camera_angle_x with the real width, format detection, id validation, frame numbering
across splits, aud.wav featurised, audio-driven training refused without audio."""

import math

import numpy as np
import pytest

from persona import cameras as C
from persona.data import audio as A
from persona.data import formats as F
from persona.data.dataset import FrameDataset
from persona.errors import PersonaError


def _nerface(root, splits, res=16, intr=None, angle=None, index=False, **meta):
    k = 0
    for split, n in splits.items():
        frames = []
        for _ in range(n):
            pose, _ = C.label_to_nerface(C.camera_label(5.0 * k - 10, 0.0, pivot=(0, 0, 0)), res, res, scale=0.8)
            F.write_image(root / "images" / f"{k:04d}.png", np.full((res, res, 3), 10 * k, np.uint8))
            f = {"file_path": f"./images/{k:04d}", "transform_matrix": pose, "expression": np.zeros(76)}
            if index:
                f["frame_index"] = k
            frames.append(f)
            k += 1
        F.write_nerface(root, split, frames, intr if intr is not None else [], camera_angle_x=angle, **meta)
    return k


def _adnerf(root, n=5, res=32, focal=None, splits=("train", "val")):
    frames = []
    for i in range(n):
        F.write_image(root / "head_imgs" / f"{i}.jpg", np.full((res, res, 3), 20 * i, np.uint8))
        pose = C.label_to_adnerf(C.camera_label(0, 0, pivot=(0, 0, 0)), res, res, scale=2.0)[0]
        frames.append({"img_id": i, "aud_id": i, "transform_matrix": pose})
    focal = focal if focal is not None else C.FOCAL * res
    if "train" in splits:
        F.write_adnerf(root, "train", frames[:3], focal, res / 2, res / 2)
    if "val" in splits:
        F.write_adnerf(root, "val", frames[3:], focal, res / 2, res / 2)


def test_camera_angle_x_gives_the_focal_of_the_real_width(tmp_path):
    angle = 0.5
    _nerface(tmp_path, {"train": 3, "test": 1}, res=32, angle=angle, index=True)
    cam = FrameDataset(tmp_path, "train")[0]["camera"].numpy()
    assert cam[16] == pytest.approx(0.5 / math.tan(angle / 2), rel=1e-5)  # normalised focal, any width


def test_adnerf_focal_is_reframed_to_eg3d_head_size(tmp_path):
    """AD-NeRF's Obama: focal 1100 at 450 px (2.44 normalised): the camera moves to 2.7 * 2.44 / 4.2647
    so that the head shows at EG3D's size (focal / distance as EG3D's 4.2647 / 2.7)."""
    res = 32
    _adnerf(tmp_path, res=res, focal=1100 / 450 * res)
    cam = FrameDataset(tmp_path, "train")[0]["camera"].numpy()
    c2w, k = C.split_label(cam)
    dist = np.linalg.norm(c2w[:3, 3])
    assert k[0, 0] / dist == pytest.approx(C.FOCAL / C.RADIUS, rel=1e-4)


def test_format_detection_names_the_missing_file(tmp_path):
    _adnerf(tmp_path / "ad", splits=("val",))
    with pytest.raises(PersonaError, match=r"transforms_train\.json: not found \(an AD-NeRF folder"):
        FrameDataset(tmp_path / "ad", "train")
    _nerface(tmp_path / "nf", {"train": 2}, intr=[C.FOCAL * 16, C.FOCAL * 16, 0.5, 0.5])
    with pytest.raises(PersonaError, match=r"transforms_test\.json: not found.*transforms_train\.json"):
        FrameDataset(tmp_path / "nf", "test")


@pytest.mark.parametrize("frames,message", [
    ({"0": {}}, "'frames' must be a list"),
    ([{"img_id": "abc", "aud_id": 0, "transform_matrix": np.eye(4).tolist()}], r"frames\[0\]\.img_id.*'abc'"),
    ([{"img_id": 7278.7, "aud_id": 0, "transform_matrix": np.eye(4).tolist()}], r"frames\[0\]\.img_id.*7278\.7"),
    ([{"img_id": 3, "aud_id": -1, "transform_matrix": np.eye(4).tolist()}], r"frames\[0\]\.aud_id"),
])
def test_read_adnerf_names_file_and_field(tmp_path, frames, message):
    F.write_json(tmp_path / "transforms_train.json", {"focal_len": 1100.0, "cx": 225.0, "cy": 225.0, "frames": frames})
    with pytest.raises(PersonaError, match=message) as err:
        F.read_adnerf(tmp_path, "train")
    assert "transforms_train.json" in str(err.value)


def test_nerface_frames_are_numbered_across_splits_for_audio(tmp_path):
    n = _nerface(tmp_path, {"train": 3, "val": 1, "test": 2}, intr=[C.FOCAL * 16, C.FOCAL * 16, 0.5, 0.5])
    aud = np.random.default_rng(0).normal(size=(n, 16, 29)).astype(np.float32)
    np.save(tmp_path / "aud.npy", aud)
    test = FrameDataset(tmp_path, "test")
    assert test.indices == [4, 5]
    np.testing.assert_array_equal(test[0]["audio"].numpy(), aud[4])


def test_adnerf_folder_with_only_aud_wav_is_featurised(tmp_path):
    _adnerf(tmp_path)
    wave_ = A.synthesize(A.speech_track(0.4, seed=1), seed=1)
    (tmp_path / "aud.wav").write_bytes(A.wav_bytes(wave_))
    ds = FrameDataset(tmp_path, "train")
    assert ds.has_audio
    np.testing.assert_allclose(ds[1]["audio"].numpy(), A.audio_windows(*A.read_wav(tmp_path / "aud.wav")[:1], 5)[1],
                               atol=1e-6)


def test_wav_at_a_frame_rate_that_does_not_divide_50_names_the_file(tmp_path):
    _nerface(tmp_path, {"train": 2}, intr=[C.FOCAL * 16, C.FOCAL * 16, 0.5, 0.5], fps=30)
    (tmp_path / "aud.wav").write_bytes(A.wav_bytes(np.zeros(1600, np.float32)))
    with pytest.raises(PersonaError, match=r"aud\.wav: video fps 30 must divide"):
        FrameDataset(tmp_path, "train")


def test_audio_driven_training_without_audio_is_refused_naming_the_folder(tmp_path):
    from persona.ours.train import TrainConfig, fit_prior

    _nerface(tmp_path, {"train": 2}, intr=[C.FOCAL * 16, C.FOCAL * 16, 0.5, 0.5])
    ds = FrameDataset(tmp_path, "train")
    with pytest.raises(PersonaError, match=f"{tmp_path}: audio-driven training needs audio"):
        fit_prior(None, ds, None, TrainConfig(modality="audio"))
