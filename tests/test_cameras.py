"""Camera conventions: EG3D's OpenCV cam2world, the 25-d label, novel views, NerFACE/AD-NeRF."""

import numpy as np
import pytest
import torch

from persona import cameras as C


def test_frontal_camera_convention():
    c2w, k = C.split_label(C.camera_label(0, 0))
    np.testing.assert_allclose(c2w[:3, :3], np.diag([1, -1, -1]), atol=1e-6)
    np.testing.assert_allclose(c2w[:3, 3], np.array([0, 0, 2.7]) + np.array(C.PIVOT), atol=1e-6)
    np.testing.assert_allclose(k, [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], atol=1e-6)


def test_label_round_trip_numpy_and_torch():
    lab = C.camera_label(12.0, -7.0)
    c2w, k = C.split_label(lab)
    np.testing.assert_array_equal(C.label(c2w, k), lab)
    t = torch.tensor(np.stack([lab, lab]))
    c2w_t, k_t = C.split_label(t)
    assert isinstance(c2w_t, torch.Tensor) and c2w_t.shape == (2, 4, 4) and k_t.shape == (2, 3, 3)
    assert torch.equal(C.label(c2w_t, k_t), t)


def test_look_at_points_at_pivot_and_moves_as_documented():
    for yaw, pitch in [(0, 0), (25, 0), (-40, 10), (5, -20)]:
        c2w = C.look_at(yaw, pitch)
        eye = c2w[:3, 3]
        assert np.linalg.norm(eye - np.array(C.PIVOT)) == pytest.approx(2.7, abs=1e-5)
        forward = c2w[:3, 2]
        to_pivot = (np.array(C.PIVOT) - eye) / np.linalg.norm(np.array(C.PIVOT) - eye)
        np.testing.assert_allclose(forward, to_pivot, atol=1e-6)
        np.testing.assert_allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-6)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0, abs=1e-6)
    assert C.look_at(30, 0)[0, 3] > 0  # positive yaw: camera toward +x
    assert C.look_at(0, 20)[1, 3] > 0  # positive pitch: camera above


def test_projection_orientation():
    lab = C.camera_label(0, 0)
    uv = C.project(np.array([C.PIVOT, [0.1, 0.0, 0.2], [0.0, 0.1, 0.2]]), lab)
    np.testing.assert_allclose(uv[0], [0.5, 0.5], atol=1e-6)
    assert uv[1, 0] > 0.5  # world +x appears on the right
    assert uv[2, 1] < 0.5  # world +y (up) appears near the top (v grows downward)
    expected = 0.5 + 4.2647 * 0.1 / 2.7
    assert uv[1, 0] == pytest.approx(expected, abs=1e-5)


def test_novel_view_matches_look_at():
    np.testing.assert_allclose(C.novel_view(C.camera_label(0, 0), 25, 0), C.camera_label(25, 0), atol=1e-5)
    np.testing.assert_allclose(C.novel_view(C.camera_label(10, 0), 0, 15), C.camera_label(10, 15), atol=1e-5)
    out = C.novel_view(torch.tensor(C.camera_label(0, 0)), -25, 0)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), C.camera_label(-25, 0), atol=1e-5)
    assert set(C.NOVEL_VIEWS) >= {"yaw-25", "yaw+25", "pitch-15", "pitch+15"}


def test_orbit_shapes_and_range():
    o = C.orbit(5, 30.0)
    assert o.shape == (5, 25)
    np.testing.assert_allclose(o[0], C.camera_label(-30, 0), atol=1e-6)
    np.testing.assert_allclose(o[2], C.camera_label(0, 0), atol=1e-6)


def test_nerface_and_adnerf_round_trips():
    lab = C.camera_label(17, -8)
    pose, intr = C.label_to_nerface(lab, 64, 64)
    # the frontal OpenGL camera looks down -z with y up: its rotation is the identity
    pose0, _ = C.label_to_nerface(C.camera_label(0, 0), 64, 64)
    np.testing.assert_allclose(pose0[:3, :3], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(C.nerface_to_label(pose, intr, 64, 64), lab, atol=1e-5)
    pose2, f, cx, cy = C.label_to_adnerf(lab, 450, 450, scale=0.5, offset=(0, 0, 0.1))
    assert f == pytest.approx(4.2647 * 450, rel=1e-5) and cx == pytest.approx(225)
    np.testing.assert_allclose(C.adnerf_to_label(pose2, f, cx, cy, 450, 450, scale=0.5, offset=(0, 0, 0.1)), lab, atol=1e-5)
    # NerFACE's tracker may store a negative fx: the magnitude is used
    np.testing.assert_allclose(C.nerface_to_label(pose, [-intr[0], intr[1], intr[2], intr[3]], 64, 64), lab, atol=1e-5)


def test_check_rigid_rejects_bad_matrices():
    good = C.look_at(10, 5)
    C.check_rigid(good)
    bad = good.copy()
    bad[:3, :3] *= 2
    with pytest.raises(ValueError, match="scaled"):
        C.check_rigid(bad, "frames[3].transform_matrix")
    shear = good.copy()
    shear[0, 1] += 0.3
    with pytest.raises(ValueError, match="not a rotation"):
        C.check_rigid(shear)
    nan = good.copy()
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        C.check_rigid(nan)
    with pytest.raises(ValueError, match="4x4"):
        C.check_rigid(np.eye(3))
