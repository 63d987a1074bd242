"""The synthetic head world: rendering, identities, expressions, prior batches, morphable mesh."""

import numpy as np
import pytest
import torch

from persona import cameras as C
from persona.data import world as S

RES = 48


def _expr(**dims):
    e = np.zeros(S.EXPRESSION_DIM, np.float32)
    for name, value in dims.items():
        e[getattr(S, name)] = value
    return e


def _box_mask(box, res):
    x0, y0, x1, y1 = (np.asarray(box) * res).round().astype(int)
    m = np.zeros((res, res), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_render_shape_range_and_batch_agrees():
    ident = S.sample_identity(1)
    img = S.render(ident, _expr(), C.camera_label(0, 0), RES)
    assert img.shape == (3, RES, RES) and img.dtype == np.float32
    assert img.min() >= -1 and img.max() <= 1
    batch = S.render_batch([ident, ident], np.stack([_expr(), _expr(JAW_OPEN=1)]),
                           np.stack([C.camera_label(0, 0)] * 2), RES)
    assert batch.shape == (2, 3, RES, RES)
    np.testing.assert_allclose(batch[0].numpy(), img, atol=1e-5)


def test_head_is_centred_and_fills_the_frame():
    _, mask = S.render_batch([S.sample_identity(0)], _expr()[None], C.camera_label(0, 0)[None], 64, return_mask=True)
    m = mask[0, 0].numpy() > 0.5
    cols = np.nonzero(m.any(0))[0]
    coverage = m.mean()
    assert 0.3 < coverage < 0.8
    assert abs((cols.min() + cols.max()) / 2 - 31.5) < 4  # horizontally centred
    assert cols.max() - cols.min() > 30  # wide like an FFHQ crop


def test_identities_are_deterministic_and_different():
    assert S.sample_identity(5) == S.sample_identity(5)
    a, b = S.sample_identity(5), S.sample_identity(6)
    assert a != b
    cam = C.camera_label(0, 0)
    diff = np.abs(S.render(a, _expr(), cam, RES) - S.render(b, _expr(), cam, RES)).mean()
    assert diff > 0.05
    glasses = [S.sample_identity(i).glasses for i in range(40)]
    assert 0 < sum(glasses) < 40


def test_jaw_open_changes_the_mouth_region_most():
    ident = S.sample_identity(2)
    cam = C.camera_label(0, 0)
    res = 64
    closed = S.render(ident, _expr(), cam, res)
    opened = S.render(ident, _expr(JAW_OPEN=1.0), cam, res)
    change = np.abs(opened - closed).mean(0)
    box = S.mouth_boxes([ident], _expr(JAW_OPEN=1.0)[None], cam[None])[0].numpy()
    inside = _box_mask(box, res)
    assert change[inside].mean() > 5 * change[~inside].mean()
    assert change[inside].mean() > 0.05
    # the open mouth is darker (cavity) inside the box
    assert opened.mean(0)[inside].mean() < closed.mean(0)[inside].mean()


def test_blink_and_smile_change_the_image():
    ident = S.sample_identity(3)
    cam = C.camera_label(0, 0)
    neutral = S.render(ident, _expr(), cam, 64)
    for dims in ({"BLINK": 1.0}, {"SMILE": 1.0}, {"BROW_RAISE": 1.0}, {"LIP_STRETCH": 1.0}):
        change = float(np.abs(S.render(ident, _expr(**dims), cam, 64) - neutral).max())
        assert change > 0.1, (dims, change)
    small = _expr()
    small[40] = 1.0
    d_small = np.abs(S.render(ident, small, cam, 64) - neutral).mean()
    d_large = np.abs(S.render(ident, _expr(JAW_OPEN=1.0), cam, 64) - neutral).mean()
    assert d_small < d_large


def test_camera_yaw_changes_the_view_symmetrically():
    ident = S.sample_identity(4)
    ident = S.Identity(**{**ident.__dict__, "glasses": False})
    left = S.render(ident, _expr(), C.camera_label(-25, 0), RES)
    right = S.render(ident, _expr(), C.camera_label(25, 0), RES)
    assert np.abs(left - right).mean() > 0.02
    # the head is left-right symmetric up to lighting and hair texture: mirrored views are close
    assert np.abs(left[:, :, ::-1] - right).mean() < 0.5 * np.abs(left - right).mean()


def test_prior_batches_follow_the_generator():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = S.sample_prior_batch(4, 32, g1), S.sample_prior_batch(4, 32, g2)
    assert a["image"].shape == (4, 3, 32, 32) and a["camera"].shape == (4, 25)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["camera"], b["camera"])
    c = S.sample_prior_batch(4, 32, g1)
    assert not torch.equal(a["image"], c["image"])
    np.testing.assert_allclose(C.labels_from_angles(torch.tensor([10.0]), torch.tensor([-5.0]))[0].numpy(),
                               C.camera_label(10, -5), atol=1e-5)


def test_bad_render_inputs():
    ident = S.sample_identity(0)
    with pytest.raises(ValueError, match="76"):
        S.render_batch([ident], np.zeros((1, 10)), C.camera_label(0, 0)[None], 16)
    with pytest.raises(ValueError, match="NaN"):
        S.render_batch([ident], np.full((1, 76), np.nan), C.camera_label(0, 0)[None], 16)
    with pytest.raises(ValueError, match="batch sizes"):
        S.render_batch([ident, ident], np.zeros((1, 76)), C.camera_label(0, 0)[None], 16)


def test_morphable_mesh_is_a_closed_head_that_moves_with_the_jaw():
    e = torch.zeros(2, 76)
    e[1, S.JAW_OPEN] = 1.0
    v, f = S.morphable_mesh(e)
    assert v.shape[0] == 2 and 1000 <= v.shape[1] <= 3000 and f.dtype == torch.long
    assert int(f.min()) == 0 and int(f.max()) == v.shape[1] - 1
    # outward orientation: positive signed volume
    tri = v[0][f]
    volume = (tri[:, 0] * torch.linalg.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume > 0
    # the chin goes down when the mouth opens, the top of the head does not move
    assert v[1, :, 1].min() < v[0, :, 1].min() - 0.01 or (v[1] - v[0]).abs().max() > 0.02
    assert torch.allclose(v[1, 0], v[0, 0])
    # the mesh matches the rendered silhouette size: the face front is near the pivot
    assert 0.15 < float(v[0, :, 2].max()) < 0.3
    wide = S.morphable_mesh(torch.zeros(1, 76), shape=torch.eye(S.SHAPE_DIM)[:1] * 2)[0]
    assert float(wide[0, :, 0].max()) > float(v[0, :, 0].max())


def test_morphable_mesh_has_finite_gradients_wrt_shape():
    shape = torch.zeros(2, S.SHAPE_DIM, requires_grad=True)
    v, _ = S.morphable_mesh(torch.zeros(2, 76), shape=shape)
    v.sum().backward()
    assert torch.isfinite(shape.grad).all() and shape.grad.abs().sum() > 0
