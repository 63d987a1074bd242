"""The synthetic benchmark on disk and the torch datasets reading it (and AD-NeRF folders)."""

import hashlib
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from persona import cameras as C
from persona.data import formats as F
from persona.data import world as S
from persona.data.dataset import FrameDataset, NovelViewDataset

TINY = S.BenchmarkConfig(resolution=16, identities=1, mono_train_frames=6, mono_test_frames=4,
                         audio_train_frames=6, audio_test_frames=4, val_frames=2, novel_every=2,
                         prior_images=4, render_batch=8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "tiny"
    S.build_benchmark(root, "smoke", seed=0, config=TINY)
    return root


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(bench):
    assert S.is_complete(bench)
    for sub in ("prior/dataset.json", "id00/mono/transforms_train.json", "id00/mono/transforms_val.json",
                "id00/mono/transforms_test.json", "id00/mono/aud.npy", "id00/mono/aud.wav",
                "id00/mono/bg/background.png", "id00/mono/novel/transforms_novel.json", "id00/audio/aud.npy",
                "id00/mono/images/00009.png"):
        assert (bench / sub).is_file(), sub
    assert len(F.read_eg3d_dataset(bench / "prior")) == 4
    assert F.read_audio_windows(bench / "id00/mono/aud.npy").shape == (10, 16, 29)
    summary = json.loads((bench / "benchmark.json").read_text())
    assert summary["identities"]["id00"]["glasses"] is True


def test_build_is_deterministic_and_skips_complete_builds(bench, tmp_path):
    other = tmp_path / "again"
    S.build_benchmark(other, "smoke", seed=0, config=TINY)
    assert _digest(other) == _digest(bench)
    stamp = (other / "benchmark.json").stat().st_mtime_ns
    S.build_benchmark(other, "smoke", seed=0, config=TINY)  # complete: kept as is
    assert (other / "benchmark.json").stat().st_mtime_ns == stamp


def test_asking_for_more_identities_extends_a_build_in_place(bench, tmp_path, monkeypatch):
    """#19's reviewer runs ask for more identities than the profile builds: the build grows by the
    missing ones (id00 untouched, the whole equal to a fresh build of that size); asking for fewer keeps it;
    an extension killed midway leaves the old build complete and is redone by the next call."""
    grown = tmp_path / "grown"
    shutil.copytree(bench, grown)
    before = {p: p.stat().st_mtime_ns for p in (grown / "id00").rglob("*") if p.is_file()}
    calls = []
    real = S.benchmark._write_identity
    monkeypatch.setattr(S.benchmark, "_write_identity", lambda *a: calls.append(a[1]) or real(*a))

    def killed(*a):
        (a[0] / "id02").mkdir(parents=True)  # a half-written identity...
        raise KeyboardInterrupt

    monkeypatch.setattr(S.benchmark, "_write_identity", killed)
    with pytest.raises(KeyboardInterrupt):
        S.build_benchmark(grown, "smoke", seed=0, config=TINY, identities=3)
    assert json.loads((grown / "benchmark.json").read_text())["config"]["identities"] == 1  # still the old, complete build
    assert sorted(p.name for p in grown.iterdir() if p.name.startswith("id")) == ["id00"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # ...gone with its temporary folder
    monkeypatch.setattr(S.benchmark, "_write_identity", lambda *a: calls.append(a[1]) or real(*a))
    S.build_benchmark(grown, "smoke", seed=0, config=TINY, identities=3)
    assert calls == [1, 2]  # only the missing identities were rendered
    assert {p: p.stat().st_mtime_ns for p in (grown / "id00").rglob("*") if p.is_file()} == before
    fresh = tmp_path / "fresh"
    S.build_benchmark(fresh, "smoke", seed=0, config=replace(TINY, identities=3))
    digest = _digest(grown)
    assert digest == _digest(fresh)
    calls.clear()
    S.build_benchmark(grown, "smoke", seed=0, config=TINY, identities=2)  # fewer: kept, nothing rendered
    S.build_benchmark(grown, "smoke", seed=0, config=TINY)
    assert calls == [] and _digest(grown) == digest


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("persona.data.world.benchmark._write_prior", boom)
    with pytest.raises(KeyboardInterrupt):
        S.build_benchmark(tmp_path / "cut", "smoke", config=TINY)
    assert not (tmp_path / "cut").exists()
    assert list(tmp_path.iterdir()) == []


def test_frame_dataset_samples_match_the_ground_truth(bench):
    ds = FrameDataset(bench / "id00/mono", "train")
    assert len(ds) == 6 and ds.fps == 25 and ds.resolution == 16 and ds.background.shape == (3, 16, 16)
    s = ds[3]
    assert s["image"].shape == (3, 16, 16) and s["image"].min() >= -1 and s["image"].max() <= 1
    assert s["camera"].shape == (25,) and s["expression"].shape == (76,) and s["audio"].shape == (16, 29)
    assert s["index"] == 3 and s["mouth_box"].shape == (4,)
    # the stored image is the render of the stored identity, expression and camera
    summary = json.loads((bench / "benchmark.json").read_text())
    ident = S.sample_identity(summary["identities"]["id00"]["seed"])
    again = S.render(ident, s["expression"].numpy(), s["camera"].numpy(), 16)
    assert np.abs(again - s["image"].numpy()).max() <= 1.5 / 127.5
    # audio window of frame 3 = row 3 of aud.npy
    np.testing.assert_array_equal(s["audio"].numpy(), F.read_audio_windows(bench / "id00/mono/aud.npy")[3])
    test = FrameDataset(bench / "id00/mono", "test")
    assert [test[i]["index"] for i in range(len(test))] == [6, 7, 8, 9]  # after train, no overlap
    assert len(FrameDataset(bench / "id00/mono", "val")) == 2
    assert len(FrameDataset(bench / "id00/mono", "train", max_seconds=0.1)) == 3  # 0.1 s at 25 fps
    # the cut is part of a run's cache key: a run on the first 0.1 s is not the run on the whole clip
    from persona import experiments as ex

    cut, whole = FrameDataset(bench / "id00/mono", "train", max_seconds=0.1), FrameDataset(bench / "id00/mono", "train")
    assert (cut.max_seconds, whole.max_seconds) == (0.1, None)
    assert ex.run_identity("ours", {"profile": "smoke"}, cut, "smoke")[2] != ex.run_identity("ours", {"profile": "smoke"}, whole, "smoke")[2]
    assert FrameDataset(bench / "id00/mono", "train", resolution=8)[0]["image"].shape == (3, 8, 8)
    assert ds.indices == list(range(6)) and ds.audio.shape == (6, 16, 29) and ds.cameras.shape == (6, 25)
    assert torch.equal(ds.expressions[3], s["expression"]) and torch.equal(ds.mouth_boxes[3], s["mouth_box"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["index"].tolist() == [0, 1, 2, 3]


def test_audio_video_has_a_fixed_camera_and_mono_a_moving_one(bench):
    audio = FrameDataset(bench / "id00/audio", "train")
    cams = torch.stack([audio[i]["camera"] for i in range(len(audio))])
    assert torch.allclose(cams, cams[:1].expand_as(cams))
    mono = FrameDataset(bench / "id00/mono", "train")
    mcams = torch.stack([mono[i]["camera"] for i in range(len(mono))])
    assert (mcams - mcams[:1]).abs().max() > 1e-3


def test_novel_view_dataset(bench):
    nv = NovelViewDataset(bench / "id00/mono")
    test = FrameDataset(bench / "id00/mono", "test")
    assert len(nv) == 2 * len(C.NOVEL_VIEWS)  # test frames 6 and 8
    s = nv[1]
    assert s["view"] in C.NOVEL_VIEWS and s["source_index"] in (6, 8)
    src = [test[i] for i in range(len(test)) if test[i]["index"] == s["source_index"]][0]
    np.testing.assert_allclose(s["camera"].numpy(), C.novel_view(src["camera"].numpy(), *C.NOVEL_VIEWS[s["view"]]),
                               atol=1e-5)
    assert torch.equal(s["expression"], src["expression"]) and torch.equal(s["audio"], src["audio"])


def test_dataset_errors_name_the_problem(bench, tmp_path):
    root = tmp_path / "video"
    shutil.copytree(bench / "id00/mono", root)
    (root / "images/00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"frames\[2\].file_path -> image not found"):
        FrameDataset(root, "train")
    F.write_image(root / "images/00002.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="8x8.*expected 16x16"):
        FrameDataset(root, "train")
    shutil.copy(bench / "id00/mono/images/00002.png", root / "images/00002.png")
    np.save(root / "aud.npy", np.zeros((5, 16, 29), np.float32))
    with pytest.raises(ValueError, match="5 audio windows for 10 video frames"):
        FrameDataset(root, "train")
    np.save(root / "aud.npy", np.zeros((9, 16, 29), np.float32))  # frames - 1: accepted
    ds = FrameDataset(root, "test")
    assert ds[3]["index"] == 9 and ds[3]["audio"].shape == (16, 29)
    with pytest.raises(ValueError, match="split"):
        FrameDataset(root, "holdout")


def test_adnerf_folder_with_one_audio_window_less(tmp_path):
    n, res = 5, 16
    frames = []
    for i in range(n):
        F.write_image(tmp_path / "com_imgs" / f"{i}.jpg", np.full((res, res, 3), 20 * i, np.uint8))
        pose = C.label_to_adnerf(C.camera_label(0, 0, pivot=(0, 0, 0)), res, res, scale=2.0)[0]  # tracker units
        frames.append({"img_id": i, "aud_id": i, "transform_matrix": pose,
                       "face_rect": [2, 2, 12, 12]})
    F.write_adnerf(tmp_path, "train", frames[:4], C.FOCAL * res, res / 2, res / 2)
    F.write_adnerf(tmp_path, "val", frames[4:], C.FOCAL * res, res / 2, res / 2)
    aud = np.random.default_rng(0).normal(size=(n - 1, 16, 29)).astype(np.float32)
    np.save(tmp_path / "aud.npy", aud)
    train = FrameDataset(tmp_path, "train")
    assert len(train) == 4
    np.testing.assert_allclose(train[0]["camera"].numpy(), C.camera_label(0, 0, pivot=(0, 0, 0)), atol=1e-5)
    np.testing.assert_array_equal(train[2]["audio"].numpy(), aud[2])  # real DeepSpeech windows unchanged
    val = FrameDataset(tmp_path, "val")
    np.testing.assert_array_equal(val[0]["audio"].numpy(), aud[-1])  # last window repeated
    assert torch.all(val[0]["expression"] == 0)


def test_real_nerface_folder_without_labels_is_normalised_to_eg3d_radius(tmp_path):
    res = 16
    frames = []
    for i, yaw in enumerate([-10.0, 0.0, 10.0, 20.0]):
        lab = C.camera_label(yaw, 0.0, pivot=(0, 0, 0))  # a tracker frame: cameras around the origin
        pose, _ = C.label_to_nerface(lab, res, res, scale=2.7 / 1.3)  # tracker units: distance 1.3
        F.write_image(tmp_path / "images" / f"f_{i:04d}.png", np.full((res, res, 3), 30 * i, np.uint8))
        frames.append({"file_path": f"./images/f_{i:04d}", "transform_matrix": pose, "expression": np.zeros(76)})
    intr = [-C.FOCAL * res, C.FOCAL * res, 0.5, 0.5]  # NerFACE's tracker stores a negative fx
    F.write_nerface(tmp_path, "train", frames[:3], intr, camera_angle_x=0.23)
    F.write_nerface(tmp_path, "test", frames[3:], intr, camera_angle_x=0.23)
    train, test = FrameDataset(tmp_path, "train"), FrameDataset(tmp_path, "test")
    assert train.camera_scale == pytest.approx(2.7 / 1.3, rel=1e-5) and test.camera_scale == train.camera_scale
    np.testing.assert_allclose(train[1]["camera"].numpy(), C.camera_label(0, 0, pivot=(0, 0, 0)), atol=1e-5)
    # NerFACE divides by the signed fx: its rays are those of the x-mirrored head, i.e. yaw -20
    np.testing.assert_allclose(test[0]["camera"].numpy(), C.camera_label(-20, 0, pivot=(0, 0, 0)), atol=1e-5)
    assert not train.has_audio and torch.all(train[0]["audio"] == 0)


def test_novel_view_samples_carry_the_video_frame_as_input(bench):
    nv = NovelViewDataset(bench / "id00/mono")
    test = FrameDataset(bench / "id00/mono", "test")
    s = nv[1]
    src = [test[i] for i in range(len(test)) if test[i]["index"] == s["source_index"]][0]
    assert torch.equal(s["source_image"], src["image"]) and torch.equal(s["source_camera"], src["camera"])
    assert not torch.equal(s["image"], s["source_image"])  # the target is the novel view
    assert nv.source_indices == [int(nv[i]["source_index"]) for i in range(len(nv))]


def test_evaluation_inputs_and_frame_subset(bench):
    from persona.evaluate import frame_subset, method_inputs

    nv = NovelViewDataset(bench / "id00/mono")
    test = FrameDataset(bench / "id00/mono", "test")
    batch = torch.utils.data.default_collate([{k: v for k, v in nv[0].items() if k != "view"}])
    cond = method_inputs(batch)
    assert torch.equal(cond["image"], batch["source_image"]) and torch.equal(cond["camera"], batch["source_camera"])
    assert "source_image" not in cond  # the novel-view ground truth never reaches a method
    sub_test, sub_novel = frame_subset(test, nv, 2)
    chosen = {int(sub_test[i]["index"]) for i in range(len(sub_test))}
    assert len(sub_test) == 2
    assert {int(sub_novel[i]["source_index"]) for i in range(len(sub_novel))} <= chosen
    assert frame_subset(test, nv, None) == (test, nv)


def test_every_trainer_stacks_its_frames_through_the_one_stacker():
    """stack_samples is the one dataset -> tensors path (issue #14): ours' FrameSource, the NeRFs'
    load_frames, NHA and FOMM give what stacking the samples by hand gives."""
    import torch

    from persona.baselines import fomm, nerf_core, nha
    from persona.data.dataset import stack_samples
    from persona.errors import PersonaInputError
    from persona.ours.train import FrameSource

    class Frames:
        root = "memory:frames"

        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.samples = [{"image": torch.rand(3, 8, 8, generator=g) * 2 - 1, "camera": torch.rand(25, generator=g),
                             "expression": torch.rand(76, generator=g), "audio": torch.rand(16, 29, generator=g),
                             "index": torch.tensor(n - 1 - i), "mouth_box": torch.rand(4, generator=g)} for i in range(n)]

        def __len__(self):
            return len(self.samples)

        def __getitem__(self, i):
            return self.samples[i]

    ds = Frames(5)
    by_hand = {k: torch.stack([s[k] for s in ds.samples]) for k in ds.samples[0]}
    assert all(torch.equal(stack_samples(ds, by_hand)[k], v) for k, v in by_hand.items())
    order = torch.argsort(by_hand["index"])
    loaded = nerf_core.load_frames(ds)
    assert torch.equal(loaded["image"], by_hand["image"][order]) and loaded["index"].dtype == torch.long
    assert torch.equal(nha._stack_dataset(ds)["expression"], by_hand["expression"])
    assert torch.equal(fomm._stack_frames(ds, 8), by_hand["image"])
    source = FrameSource(ds, preload=False)
    assert torch.equal(source.batch(torch.tensor([3, 1]))["camera"], by_hand["camera"][[3, 1]])
    assert torch.equal(FrameSource(ds, preload=True).batch(torch.tensor([3, 1]))["camera"], by_hand["camera"][[3, 1]])
    with pytest.raises(PersonaInputError, match="memory:frames.*lack"):
        stack_samples(ds, ("image", "nothing"))
    with pytest.raises(PersonaInputError, match="no frames"):
        stack_samples(Frames(0), ("image",))
