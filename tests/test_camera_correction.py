"""persona.ours.camera_correction: the per-video camera correction learned with the avatar (issue #15)."""

import numpy as np
import torch

from persona import cameras
from persona.ours.camera_correction import CameraCorrection, matrix_to_rotvec, rotvec_to_matrix
from persona.preprocess.camera import yaw_pitch_deg


def _labels(angles):
    return torch.from_numpy(np.stack([cameras.camera_with_roll(y, p, r) for y, p, r in angles]).astype(np.float32))


def test_rotvec_round_trip_and_rodrigues_at_zero():
    r = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.4, 0.2], [1e-5, 0.0, 0.0], [0.0, 1.2, 0.0]])
    m = rotvec_to_matrix(r)
    assert torch.allclose(m @ m.transpose(1, 2), torch.eye(3).expand(4, 3, 3), atol=1e-6)
    assert torch.allclose(matrix_to_rotvec(m), r, atol=1e-5)


def test_the_correction_starts_as_the_identity_and_rescales_yaw_about_the_pivot():
    labels = _labels([(0, 0, 0), (20, 0, 0), (-10, 15, 3), (25, -12, -4)])
    corr = CameraCorrection()
    assert torch.allclose(corr(labels), labels, atol=1e-5)
    with torch.no_grad():
        corr.linear[1, 1] = 0.5  # yaw (rotation about the world's y axis) x 1.5
        corr.offset[0] = np.radians(2.0)  # pitch (about x) + 2 deg
    out = corr(labels).detach().numpy()
    yp_in, yp_out = yaw_pitch_deg(labels.numpy()), yaw_pitch_deg(out)
    assert abs(yp_out[1, 0] - 30) < 0.05 and abs(yp_out[0, 0]) < 1e-3  # frontal keeps yaw 0, gets the pitch offset
    d_pitch = np.abs(yp_out[:, 1] - yp_in[:, 1])
    assert abs(d_pitch[0] - 2.0) < 1e-3 and np.all((d_pitch > 1.0) & (d_pitch < 2.1))  # 2 deg at yaw 0, less when turned
    centres = out[:, :16].reshape(-1, 4, 4)[:, :3, 3]
    assert np.allclose(np.linalg.norm(centres - np.array(cameras.PIVOT), axis=1), cameras.RADIUS, atol=1e-4)
    assert np.allclose(out[:, 16:], labels.numpy()[:, 16:])  # intrinsics kept


def test_the_correction_gets_a_gradient_from_a_camera_loss():
    labels = _labels([(20, 5, 0), (-15, -8, 2)])
    target = CameraCorrection()
    with torch.no_grad():
        target.linear[1, 1], target.offset[0] = -0.15, 0.03
    goal = target(labels).detach()
    corr = CameraCorrection()
    opt = torch.optim.Adam(corr.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        loss = (corr(labels)[:, :16] - goal[:, :16]).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * first


def test_ours_learns_the_correction_logs_it_resumes_it_and_keeps_old_run_keys(tmp_path):
    from test_prior import StandInGenerator
    from test_train import RES, StandInFrames, make_model, tiny_cfg

    from persona.experiments import key_config
    from persona.ours.train import fit_prior, parameter_groups, train_config
    from persona.runs import RunDir

    assert not train_config("default", modality="3dmm").camera_correction  # off: the cameras as given
    assert "camera_correction" not in key_config(train_config("default", modality="3dmm"))  # cached runs keep their keys
    frames = StandInFrames(4, seed=1, teacher=StandInGenerator(res=RES))
    cfg = tiny_cfg(iterations=4, frozen_iterations=1, checkpoint_every=2, camera_correction=True, camera_lr=0.01)
    model, _ = make_model(cfg)
    groups = parameter_groups(model, cfg)
    assert [g["lr"] for g in groups if g["params"][0] is model.camera_correction.linear] == [0.01]
    fit_prior(model, frames, RunDir(tmp_path / "full"), cfg)
    rows = [r for r in RunDir(tmp_path / "full").metrics() if "camera_linear" in r]
    assert rows and len(rows[-1]["camera_linear"]) == 9 and float(model.camera_correction.offset.abs().sum()) > 0
    killed, _ = make_model(cfg)
    fit_prior(killed, frames, RunDir(tmp_path / "killed"), cfg, stop_after=2)
    resumed, _ = make_model(cfg)
    fit_prior(resumed, frames, RunDir(tmp_path / "killed"), cfg)
    assert torch.equal(resumed.camera_correction.offset, model.camera_correction.offset)
