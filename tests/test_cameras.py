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


def _nerface_rays(pose, intr, w, h, pix):
    """NerFACE's ray generator: direction ((u - W cx) / fx, -(v - H cy) / fy, -1), SIGNED focals."""
    fx, fy, cx, cy = intr
    d = np.stack([(pix[:, 0] - w * cx) / fx, -(pix[:, 1] - h * cy) / fy, -np.ones(len(pix))], 1)
    return pose[:3, 3], d @ pose[:3, :3].T


def _label_rays(lab, w, h, pix):
    c2w, k = C.split_label(np.asarray(lab, np.float64))
    d = np.stack([(pix[:, 0] / w - k[0, 2]) / k[0, 0], (pix[:, 1] / h - k[1, 2]) / k[1, 1], np.ones(len(pix))], 1)
    return c2w[:3, 3], d @ c2w[:3, :3].T


@pytest.mark.parametrize("sx,sy", [(1, 1), (-1, 1), (1, -1), (-1, -1)])
def test_nerface_signed_focals_cast_the_rays_nerface_casts(sx, sy):
    pose, intr = C.label_to_nerface(C.camera_label(17, -8), 64, 64)
    intr = [sx * intr[0], sy * intr[1], 0.5, 0.5]
    lab = C.nerface_to_label(pose, intr, 64, 64)
    C.check_rigid(C.split_label(lab)[0])
    pix = np.array([[5.0, 9.0], [60.0, 3.0], [32.0, 40.0]])
    origin_n, dirs_n = _nerface_rays(pose, intr, 64, 64, pix)
    origin, dirs = _label_rays(lab, 64, 64, pix)
    # both negative = a 180 deg roll, the same rays; one negative = a mirror: the head frame is mirrored with it
    mirror = np.diag([float(sx), float(sy), 1.0]) if sx * sy < 0 else np.eye(3)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(unit(dirs), unit(dirs_n @ mirror.T), atol=1e-5)
    np.testing.assert_allclose(origin, mirror @ origin_n, atol=1e-5)


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


def test_centres_rays_and_projection_agree():
    """centres() is cam2world's column 3; a point along a ray projects back to the ray's pixel."""
    lab = torch.from_numpy(np.stack([C.camera_label(20, -10), C.camera_label(-35, 5)]))
    eye = torch.from_numpy(np.stack([C.look_at(20, -10)[:3, 3], C.look_at(-35, 5)[:3, 3]]))
    assert torch.equal(C.centres(lab), eye)
    uv = torch.tensor([[[0.3, 0.7], [0.5, 0.5]]]).expand(2, -1, -1)
    origins, dirs = C.rays(lab, uv)
    assert torch.equal(origins[:, 0], eye)
    back, depth = C.project_with_depth(origins + 2.0 * dirs, lab)
    torch.testing.assert_close(back, uv, atol=1e-5, rtol=0)
    local = C.world_to_camera(origins + 2.0 * dirs, lab)
    torch.testing.assert_close(local.norm(dim=-1), torch.full((2, 2), 2.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(local[..., 2], depth)


def test_labels_from_angles_and_roll_match_look_at():
    batch = C.labels_from_angles(torch.tensor([10.0, -30.0]), torch.tensor([-5.0, 12.0])).numpy()
    np.testing.assert_allclose(batch, np.stack([C.camera_label(10, -5), C.camera_label(-30, 12)]), atol=1e-6)
    np.testing.assert_allclose(C.camera_with_roll(10, -5, 0.0), C.camera_label(10, -5), atol=1e-6)
