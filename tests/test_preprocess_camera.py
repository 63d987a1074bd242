"""The camera solver of persona preprocess on synthetic 2D projections of known shapes and poses
(no mediapipe, no video): structure from motion, the head frame, fit end to end, and the
accuracy tool's triangulation / PnP bound."""

import numpy as np
from scipy.spatial.transform import Rotation

from persona import cameras
from persona.preprocess import accuracy, camera


def _angle_deg(a, b):
    """Angles [N] between rotations a, b [N,3,3]."""
    return np.degrees(Rotation.from_matrix(np.einsum("nji,njk->nik", a, b)).magnitude())


def _sweep_rotations(n, yaw=30.0, pitch=20.0, roll=4.0):
    t = np.arange(n) / n
    angles = np.c_[pitch * np.sin(2 * np.pi * 1.6 * t + 0.5), yaw * np.sin(2 * np.pi * t), roll * np.sin(2 * np.pi * 0.7 * t)]
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


def test_structure_from_motion_recovers_the_depth_a_flattened_prior_lacks():
    """A rigid point cloud seen under a yaw/pitch sweep (scaled orthography, noise-free): started
    from the same cloud with its depth squashed to 60 % (the failure of a fixed canonical face),
    the alternation recovers the shape and the relative rotations."""
    rng = np.random.default_rng(0)
    shape = rng.normal(size=(80, 3)) * [1.0, 1.2, 0.6]
    shape -= shape.mean(0)
    rots = _sweep_rotations(40)
    scales = 1.0 + 0.05 * rng.normal(size=40)
    y = scales[:, None, None] * np.einsum("kj,nij->nki", shape, rots[:, :2])
    flat = shape * [1, 1, 0.6]
    r0, _ = camera._poses(y, flat)
    before = _angle_deg(r0 @ r0[:1].transpose(0, 2, 1), rots @ rots[:1].transpose(0, 2, 1)).mean()
    est, r, s, rms = camera.structure_from_motion(y, flat, iterations=30, reg=1e-4)
    rel_est, rel_true = r @ r[:1].transpose(0, 2, 1), rots @ rots[:1].transpose(0, 2, 1)
    assert before > 2.0  # the flattened prior alone gets the angles wrong
    assert _angle_deg(rel_est, rel_true).max() < 0.5 and rms.max() < 1e-3
    g, sc = camera._similarity(est, shape)  # the shape up to a similarity
    assert np.abs(sc * est @ g.T - shape).max() < 0.02 * np.abs(shape).max()


def _face(pitch_offset_deg):
    """478 points: a random cloud plus the landmarks head_frame reads, in the head frame (x the
    subject's left, y down, z away from the viewer), the mouth corners in front of the eyes by
    ``pitch_offset_deg`` as seen from the side."""
    rng = np.random.default_rng(1)
    pts = rng.normal(scale=0.5, size=(478, 3))
    for k, (r, l) in enumerate(camera.MIRROR_PAIRS):
        p = np.array([0.2 + 0.06 * k, -0.5 + 0.1 * k, 0.1 * np.sin(k)])
        pts[r], pts[l] = p * [-1, 1, 1], p
    eyes_y, mouth_y = -0.4, 0.6
    for idx, yy in ((camera.EYE_OUTER, eyes_y), ((61, 291), mouth_y)):
        for i, sign in zip(idx, (-1, 1)):
            pts[i] = [sign * 0.45, yy, 0.0]
    lean = (mouth_y - eyes_y) * np.tan(np.radians(pitch_offset_deg))
    pts[[61, 291], 2] = -lean  # nearer the viewer
    return pts


def test_head_frame_undoes_the_eye_mouth_lean_and_follows_a_rotation():
    face = _face(camera.PITCH_OFFSET_DEG)
    np.testing.assert_allclose(camera.head_frame(face), np.eye(3), atol=1e-9)
    rot = Rotation.from_euler("xyz", [10, -25, 5], degrees=True).as_matrix()
    np.testing.assert_allclose(camera.head_frame(face @ rot.T), rot, atol=1e-9)


def test_fit_recovers_known_cameras_from_projected_landmarks():
    """Landmarks = scaled-orthographic projections of a rigid face (crop coordinates). With their
    depth (mediapipe's z) squashed to 60 %, depth="motion" still finds the true cameras; with
    the true depth, so does the default (3D alignment of every frame's landmarks)."""
    face = _face(camera.PITCH_OFFSET_DEG) * 0.12
    rots = _sweep_rotations(48)
    cam_pts = np.einsum("kj,nij->nki", face, rots)
    truth = camera.labels_from_rotations(rots)
    for depth, z_scale in (("motion", 0.6), ("landmarks", 1.0)):
        crop_pts = np.concatenate([cam_pts[..., :2] + 0.5, z_scale * cam_pts[..., 2:]], -1)
        fit = camera.fit(crop_pts, smooth_sigma=0.0, depth=depth)
        assert _angle_deg(fit.rotations, rots).max() < 1.0, depth
        assert camera.rotation_error_deg(fit.labels, truth).max() < 1.0, depth
        # the fit's projection model puts the face's points where they are
        np.testing.assert_allclose(camera.project(fit, fit.shape[1]), crop_pts[:, 1, :2], atol=2e-3)


def test_accuracy_tool_triangulates_and_recovers_exact_cameras():
    """The measuring tool itself: exact perspective projections triangulate to the points and
    PnP gives back the cameras; yaw/pitch/roll read back as set."""
    angles = [(-20.0, 10.0, 3.0), (0.0, -15.0, -2.0), (25.0, 5.0, 0.0), (10.0, 18.0, 1.0)]
    labels = np.stack([cameras.camera_with_roll(*a) for a in angles]).astype(np.float64)
    np.testing.assert_allclose(accuracy.yaw_pitch_roll_deg(labels), angles, atol=1e-3)
    world = np.random.default_rng(2).normal(scale=0.1, size=(30, 3)) + cameras.PIVOT
    c2w = labels[:, :16].reshape(-1, 4, 4)
    cam = np.einsum("nji,npj->npi", c2w[:, :3, :3], world[None] - c2w[:, None, :3, 3])
    uv = cameras.FOCAL * cam[..., :2] / cam[..., 2:] + 0.5
    tri, dist = accuracy.triangulate(uv, labels)
    np.testing.assert_allclose(tri, world, atol=1e-6)
    assert dist.max() < 1e-8
    s = accuracy.summarise(accuracy.pnp_labels(world, uv), labels)
    assert s["max"] < 0.01


def test_framed_boxes_centre_the_pivot_at_one_size_whatever_the_pose():
    """The world framing from the 3D fit: a head-frame pivot projects to the crop centre and the
    crop side follows the head's scale, under yaw/pitch/roll (where FFHQ's 2D box shrinks with
    the eye and mouth distances and drifts off the pivot)."""
    from persona.preprocess import crop

    face = _face(camera.PITCH_OFFSET_DEG) * 0.12
    rots = _sweep_rotations(48)
    scale = 1.0 + 0.1 * np.sin(np.linspace(0, 3, 48))  # the head nears and recedes
    cam_pts = scale[:, None, None] * np.einsum("kj,nij->nki", face, rots)
    src = np.concatenate([cam_pts[..., :2] * 400 + [200, 180], cam_pts[..., 2:] * 400], -1)  # source pixels
    boxes = crop.smooth_boxes(crop.ffhq_boxes(src))
    fit = camera.fit(crop.to_crop(src, boxes), smooth_sigma=0.0)
    shape = fit.shape
    iod = np.linalg.norm(shape[263] - shape[33])
    pivot_rel = np.array([0.0, -0.2, -0.18])
    framed = crop.framed_boxes(boxes, fit, pivot_rel, 3.3)
    # the true pivot, in the face's own frame: the same point relative to anchor and eye distance
    anchor_true = face[list(crop.FRAME_ANCHOR)].mean(0)
    iod_true = np.linalg.norm(face[263] - face[33])
    pivot_true = anchor_true + iod_true * pivot_rel
    proj = scale[:, None] * np.einsum("j,nij->ni", pivot_true, rots)[:, :2] * 400 + [200, 180]
    side = framed[:, 2] / (3.3 * iod_true * 400 * scale)
    assert np.abs(framed[:, :2] - proj).max() < 0.01 * framed[:, 2].min()
    assert np.abs(side - 1).max() < 0.01
    assert iod > 0 and np.ptp(boxes[:, 2] / scale) / np.median(boxes[:, 2] / scale) > 0.05  # FFHQ's box breathes


def test_calibrate_framing_recovers_the_pivot_and_side_of_a_known_framing():
    """Clips whose frames are framed by a known pivot and side (the pivot at the frame centre,
    the frame side = side_rel x eye distance): the calibration gives them back, and
    framing_error reads the framed boxes as the whole frame."""
    from persona.preprocess import crop

    face = _face(camera.PITCH_OFFSET_DEG)
    pivot_rel, side_rel, res = np.array([0.0, -0.2, -0.22]), 3.35, 256
    iod = np.linalg.norm(face[263] - face[33])
    pivot = face[list(crop.FRAME_ANCHOR)].mean(0) + iod * pivot_rel
    rots = _sweep_rotations(40)
    k = res / (side_rel * iod)  # pixels per face unit
    cam = np.einsum("kj,nij->nki", face - pivot, rots) * k
    src = np.concatenate([cam[..., :2] + res / 2, cam[..., 2:]], -1)
    got_pivot, got_side = accuracy.calibrate_framing([(src, res)])
    np.testing.assert_allclose(got_pivot, pivot_rel, atol=0.01)
    assert abs(got_side - side_rel) < 0.02
    boxes = crop.smooth_boxes(crop.ffhq_boxes(src))
    fit = camera.fit(crop.to_crop(src, boxes))
    fr = accuracy.framing_error(crop.framed_boxes(boxes, fit, got_pivot, got_side), res)
    assert abs(fr["size"][0] - 1) < 0.01 and fr["offset"][1] < 0.01


def test_the_best_map_undoes_a_per_video_bias_of_the_angles():
    """``accuracy.best_map_labels``: cameras whose yaw reads 1.15x and pitch 0.7x + 2 deg of a sweep's (the
    landmarks' kind of bias) mapped back to within a fraction of a degree, camera distance kept."""
    from persona import cameras as C
    from persona.preprocess.accuracy import best_map_labels, yaw_pitch_roll_deg
    from persona.preprocess.camera import rotation_error_deg
    from persona.preprocess.synthetic_clip import sweep_cameras

    truth = sweep_cameras(60)
    est = np.stack([C.camera_with_roll(1.15 * y, 0.7 * p + 2, r) for y, p, r in yaw_pitch_roll_deg(truth)])
    assert rotation_error_deg(est, truth).mean() > 4
    fixed = best_map_labels(est, truth)
    assert rotation_error_deg(fixed, truth).mean() < 0.3
    centres = fixed[:, :16].reshape(-1, 4, 4)[:, :3, 3]
    assert np.allclose(np.linalg.norm(centres - np.array(C.PIVOT), axis=1), C.RADIUS, atol=1e-5)
