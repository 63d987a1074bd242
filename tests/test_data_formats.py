"""NerFACE / AD-NeRF / EG3D layouts: round trips, conversions to EG3D labels, bad input."""

import json

import numpy as np
import pytest

from persona import cameras as C
from persona.data import formats as F


def _frames(n, res=16, rng=None):
    rng = rng or np.random.default_rng(0)
    out = []
    for i in range(n):
        lab = C.camera_label(float(rng.uniform(-20, 20)), float(rng.uniform(-10, 10)))
        pose, _ = C.label_to_nerface(lab, res, res)
        out.append({"file_path": f"images/{i:05d}", "transform_matrix": pose,
                    "expression": rng.normal(size=76).astype(np.float32), "bbox": [0.1, 0.9, 0.2, 0.8],
                    "label": lab})
    return out


def _write_images(root, n, res=16):
    for i in range(n):
        F.write_image(root / "images" / f"{i:05d}.png", np.full((res, res, 3), 10 * i, np.uint8))


def test_nerface_round_trip_and_labels(tmp_path):
    frames = _frames(3)
    intr = [C.FOCAL * 16, C.FOCAL * 16, 0.5, 0.5]
    F.write_nerface(tmp_path, "train", [{k: v for k, v in f.items() if k != "label"} for f in frames], intr,
                    camera_angle_x=0.2334, fps=25)
    s = F.read_nerface(tmp_path, "train")
    assert len(s.frames) == 3 and s.meta["fps"] == 25 and s.camera_angle_x == pytest.approx(0.2334)
    np.testing.assert_allclose(s.intrinsics, intr, rtol=1e-6)
    for f, g in zip(frames, s.frames):
        np.testing.assert_allclose(g["transform_matrix"], f["transform_matrix"], atol=1e-6)
        np.testing.assert_allclose(g["expression"], f["expression"], atol=1e-6)
    np.testing.assert_allclose(s.labels(16, 16), np.stack([f["label"] for f in frames]), atol=1e-5)
    assert s.image_path(1) == tmp_path / "images" / "00001.png"


def test_frontal_nerface_and_adnerf_poses_give_the_frontal_eg3d_camera():
    # an OpenGL camera 2.7 in front of the head looking back at it: identity rotation
    pose = np.eye(4)
    pose[:3, 3] = [0, 0, 2.7]
    lab = C.nerface_to_label(pose, [4.2647 * 512, 4.2647 * 512, 0.5, 0.5], 512, 512, offset=C.PIVOT)
    c2w, k = C.split_label(lab)
    np.testing.assert_allclose(c2w[:3, :3], np.diag([1, -1, -1]), atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 3], [0, 0, 2.9], atol=1e-6)
    np.testing.assert_allclose(k, C.intrinsics(), atol=1e-5)
    lab2 = C.adnerf_to_label(pose, 1200.0, 225.0, 225.0, 450, 450, offset=C.PIVOT)
    c2w2, k2 = C.split_label(lab2)
    np.testing.assert_allclose(c2w2[:3, :3], np.diag([1, -1, -1]), atol=1e-6)
    assert k2[0, 0] == pytest.approx(1200 / 450) and k2[0, 2] == pytest.approx(0.5)


def test_adnerf_round_trip(tmp_path):
    frames = [{"img_id": i, "aud_id": i, "transform_matrix": C.label_to_adnerf(C.camera_label(i, 0), 32, 32)[0],
               "face_rect": [4, 4, 20, 24]} for i in range(4)]
    F.write_adnerf(tmp_path, "train", frames, 135.0, 16.0, 16.0)
    F.write_adnerf(tmp_path, "val", frames[:2], 135.0, 16.0, 16.0)
    assert F.is_adnerf(tmp_path)
    s = F.read_adnerf(tmp_path, "train")
    assert [f["img_id"] for f in s.frames] == [0, 1, 2, 3] and s.focal_len == 135.0
    np.testing.assert_allclose(s.frames[2]["face_rect"], [4, 4, 20, 24])
    assert len(F.read_adnerf(tmp_path, "test").frames) == 2  # test reads transforms_val.json
    labels = s.labels(32, 32)
    c2w, k = C.split_label(labels[0])
    np.testing.assert_allclose(c2w, C.look_at(0, 0), atol=1e-5)
    assert k[0, 0] == pytest.approx(135 / 32)
    out = F.adnerf_to_eg3d(tmp_path, "train", tmp_path / "eg3d", 32, 32)
    entries = F.read_eg3d_dataset(out.parent)
    assert entries[1][0] == "head_imgs/1.jpg"
    np.testing.assert_allclose(entries[1][1], labels[1], atol=1e-6)


def test_eg3d_round_trip_and_bytes_are_stable(tmp_path):
    entries = [(f"img{i:08d}.png", C.camera_label(5 * i, -i)) for i in range(3)]
    p = F.write_eg3d_dataset(tmp_path, entries)
    first = p.read_bytes()
    back = F.read_eg3d_dataset(tmp_path)
    assert [n for n, _ in back] == [n for n, _ in entries]
    for (_, a), (_, b) in zip(entries, back):
        np.testing.assert_allclose(a, b, atol=1e-6)
    F.write_eg3d_dataset(tmp_path, entries)
    assert p.read_bytes() == first
    assert json.loads(first)["labels"][0][0] == "img00000000.png"


def test_image_round_trip(tmp_path):
    img = (np.random.default_rng(0).uniform(-1, 1, (3, 8, 8))).astype(np.float32)
    F.write_image(tmp_path / "a.png", img)
    back = F.read_image(tmp_path / "a.png")
    assert back.shape == (8, 8, 3)
    np.testing.assert_allclose(back.transpose(2, 0, 1) / 127.5 - 1, img, atol=1 / 127.5)


# ----------------------------------------------------------------------------- bad input
def _write_raw(path, obj):
    path.write_text(json.dumps(obj))


def _valid_frame():
    pose, _ = C.label_to_nerface(C.camera_label(0, 0), 16, 16)
    return {"file_path": "images/00000", "transform_matrix": pose.tolist(), "expression": [0.0] * 76}


def test_missing_field_is_named(tmp_path):
    frame = _valid_frame()
    del frame["expression"]
    _write_raw(tmp_path / "transforms_train.json", {"intrinsics": [68, 68, 0.5, 0.5], "frames": [frame]})
    with pytest.raises(ValueError, match=r"transforms_train.json: frames\[0\]: missing field 'expression'"):
        F.read_nerface(tmp_path, "train")
    _write_raw(tmp_path / "transforms_train.json", {"frames": [_valid_frame()]})
    with pytest.raises(ValueError, match="intrinsics"):
        F.read_nerface(tmp_path, "train")
    _write_raw(tmp_path / "transforms_train.json", {"cx": 1, "cy": 1, "frames": []})
    with pytest.raises(ValueError, match="focal_len"):
        F.read_adnerf(tmp_path, "train")


def test_non_rigid_nan_and_wrong_length_are_rejected(tmp_path):
    frame = _valid_frame()
    frame["transform_matrix"][0][0] = 3.0
    _write_raw(tmp_path / "transforms_train.json", {"intrinsics": [68, 68, 0.5, 0.5], "frames": [frame]})
    with pytest.raises(ValueError, match=r"frames\[0\].transform_matrix.*(rotation|rigid|scaled)"):
        F.read_nerface(tmp_path, "train")
    frame = _valid_frame()
    frame["expression"][3] = float("nan")
    (tmp_path / "transforms_train.json").write_text(
        json.dumps({"intrinsics": [68, 68, 0.5, 0.5], "frames": [frame]}).replace("NaN", "NaN"))
    with pytest.raises(ValueError, match=r"frames\[0\].expression: contains NaN"):
        F.read_nerface(tmp_path, "train")
    frame = _valid_frame()
    frame["expression"] = [0.0] * 50
    _write_raw(tmp_path / "transforms_train.json", {"intrinsics": [68, 68, 0.5, 0.5], "frames": [frame]})
    with pytest.raises(ValueError, match=r"expression: expected shape \[76\], got \[50\]"):
        F.read_nerface(tmp_path, "train")
    _write_raw(tmp_path / "dataset.json", {"labels": [["a.png", [0.0] * 24]]})
    with pytest.raises(ValueError, match=r"labels\[0\]: expected shape \[25\]"):
        F.read_eg3d_dataset(tmp_path)


def test_bad_images_and_audio_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        F.read_image(tmp_path / "nothing.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read image"):
        F.read_image(tmp_path / "broken.png")
    F.write_image(tmp_path / "small.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="8x8.*expected 16x16"):
        F.read_image(tmp_path / "small.png", size=(16, 16))
    np.save(tmp_path / "aud.npy", np.zeros((5, 16, 28), np.float32))
    with pytest.raises(ValueError, match=r"aud.npy: expected shape \[N,16,29\]"):
        F.read_audio_windows(tmp_path / "aud.npy")
    np.save(tmp_path / "aud.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="aud.npy"):
        F.read_audio_windows(tmp_path / "aud.npy")
    assert F.audio_index(9, 9, 10, "x") == 8  # AD-NeRF: N = frames - 1, last window repeated
    with pytest.raises(ValueError, match="8 audio windows for 10 video frames"):
        F.audio_index(0, 8, 10, "aud.npy")


def test_unit_to_uint8_known_values():
    """The one [-1,1] -> uint8 conversion: clipped, round half to even, numpy or torch, shape kept."""
    import torch

    x = np.array([[-1.5, -1.0, 0.0, 1.0, 2.0, 3 / 127.5 - 1]], np.float32)
    assert F.unit_to_uint8(x).tolist() == [[0, 0, 128, 255, 255, 3]]
    assert F.unit_to_uint8(torch.from_numpy(x)).tolist() == F.unit_to_uint8(x).tolist()
