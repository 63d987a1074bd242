"""The evaluation protocol (issue #19): the same frames and the same audio windows for every
method, the static floor, and the expression-following score for any method."""

from __future__ import annotations

import math
import types

import pandas as pd
import pytest
import torch

from persona import evaluate
from persona.audio_nets import gather_neighbour_windows
from test_evaluate import TinyFrames


class AudioSpy:
    """An audio method stand-in that records the neighbouring windows it is given."""

    supports_novel_views = False

    def __init__(self, name):
        self.name, self.seen = name, {}

    def render(self, conditions, camera):
        for i, windows in zip(conditions["index"].tolist(), conditions["audio_neighbours"]):
            self.seen[int(i)] = windows.clone()
        return torch.zeros(len(camera), 3, 32, 32)


class Frames(TinyFrames):
    """TinyFrames with FrameDataset's ``indices`` (frame numbers 100, 101, ...)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.indices = [100 + i for i in range(len(self.images))]


class VoicedFrames(Frames):
    """Frames whose frames have distinct audio windows (frame i: all entries i+1)."""

    def __init__(self, *a, frames=12, **kw):
        super().__init__(*a, frames=frames, **kw)

    def __getitem__(self, i):
        return {**super().__getitem__(i), "audio": torch.full((16, 29), float(i + 1))}


def test_every_audio_method_gets_the_same_windows_from_the_whole_track():
    ds = VoicedFrames()
    spies = [AudioSpy("ours"), AudioSpy("adnerf"), AudioSpy("dfrf")]
    for spy in spies:
        evaluate.evaluate_method(spy, ds, max_frames=4, progress=False, batch_size=2)
    scored = sorted(spies[0].seen)
    assert scored == [100, 104, 107, 111]  # frame_positions(12, 4) = 0, 4, 7, 11
    track = {100 + i: torch.full((16, 29), float(i + 1)) for i in range(len(ds))}
    for index in scored:
        expected = gather_neighbour_windows(torch.tensor([index]), track[index][None], track)[0]
        for spy in spies:
            assert torch.equal(spy.seen[index], expected), (spy.name, index)
    # frame 104's neighbours 100..107 come from the whole track, not from the 2-frame batch
    assert [float(w[0, 0]) for w in spies[1].seen[104]] == [1, 2, 3, 4, 5, 6, 7, 8]
    # past the track's ends: zero windows, as in training
    assert float(spies[2].seen[100][0].abs().sum()) == 0.0


def test_frame_selection_is_one_function_and_a_table_uses_the_smallest_count():
    assert evaluate.frame_positions(25, None) == list(range(25))
    assert evaluate.frame_positions(25, 8) == [0, 3, 7, 10, 14, 17, 21, 24]
    assert evaluate.shared_frame_count(25, None, 8) == 8 and evaluate.shared_frame_count(None, None) is None
    with pytest.raises(evaluate.PersonaInputError, match="max_frames"):
        evaluate.frame_positions(10, 0)


def test_compare_scores_all_methods_on_the_same_frame_indices(monkeypatch, tmp_path):
    from persona import experiments as ex
    from persona import tables
    from persona.data import dataset

    monkeypatch.setattr(dataset, "FrameDataset", lambda video, split, **kw: VoicedFrames(root=video, split=split, frames=20))

    class Still(evaluate.StaticFrame):
        pass

    def fake_trained(name, cfg, train_ds, profile, label=None, force=False):
        method = Still(torch.zeros(3, 32, 32))
        return ex.TrainedRun(label, method, types.SimpleNamespace(root=tmp_path / label), 0.0, None)

    monkeypatch.setattr(ex, "trained", fake_trained)
    for label in ("pti-id00", "ours-id00"):
        (tmp_path / label).mkdir()
    rows = [tables.Row("PTI", "pti", {}, max_test_frames=8), tables.Row("Ours", "ours", {})]
    per_frame, _, _ = tables.compare(rows, [tmp_path / "id00"], "smoke", max_test_frames=25, novel=False)
    indices = {m: sorted(per_frame[per_frame["method"] == m]["index"]) for m in ("PTI", "Ours")}
    assert indices["PTI"] == indices["Ours"] and len(indices["Ours"]) == 8


def test_static_floor_is_scored_like_a_method_on_the_same_frames():
    train, test = Frames(frames=4), Frames(frames=6)
    floor = evaluate.static_floor(train, test, max_frames=3)
    assert set(floor["method"]) == {evaluate.STATIC_LABEL} and set(floor["view"]) == {"gt"}
    assert list(floor["index"]) == [100 + p for p in evaluate.frame_positions(6, 3)]
    mean = train.images.mean(0)
    expected = [10 * math.log10(4 / float(((mean - test.images[p]) ** 2).mean())) for p in evaluate.frame_positions(6, 3)]
    assert floor["psnr"].tolist() == pytest.approx(expected, abs=1e-3)
    assert floor[["psnr_mouth", "ssim_mouth", "ssim"]].notna().all().all()


def fake_clip(frames=12):
    """A FrontalClip stand-in: a dark square whose size follows the 'mouth' control."""
    opening = torch.tensor([0, 2, 4, 6, 3, 1, 5, 2, 0, 6, 4, 1][:frames], dtype=torch.float32)
    images = torch.zeros(frames, 3, 16, 16)
    for t, o in enumerate(opening.long().tolist()):
        images[t, :, 8:8 + o, 6:10] = -1.0
    conditions = {"image": images, "expression": opening[:, None].repeat(1, 76), "audio": torch.zeros(frames, 16, 29),
                  "index": torch.arange(frames) + 50, "camera": torch.zeros(frames, 25)}
    from persona.diagnostics import FrontalClip

    return FrontalClip(conditions, torch.tensor([0.25, 0.4, 0.75, 1.0]), opening)


class Copycat:
    """Renders the input image (a perfect follower)."""

    name = "copycat"

    def render(self, conditions, camera):
        assert "audio_neighbours" in conditions  # the same windows path as the image metrics
        return conditions["image"].clone()


def test_following_score_is_one_for_a_perfect_follower_and_zero_for_the_static_image():
    clip = fake_clip()
    perfect = evaluate.expression_following(Copycat(), clip=clip)
    assert perfect["following"] == pytest.approx(1.0) and perfect["opening_std_ratio"] == pytest.approx(1.0)
    assert perfect["following_frames"] == 12
    still = evaluate.expression_following(evaluate.StaticFrame(clip.truth[3]), clip=clip, max_frames=6)
    assert still["following"] == 0.0 and still["following_frames"] == 6
    with pytest.raises(evaluate.PersonaInputError, match=">= 3 scored frames"):
        evaluate.expression_following(Copycat(), clip=clip, max_frames=2)


class RelativeMover(Copycat):
    """A 2-D method in relative mode: it renders the driving frame's change since the driving start
    (issue #19: FOMM's start was the posed test split's first frame while the following clip drives it)."""

    name = "relative"

    def __init__(self, start):
        self.driving_start = start
        self.starts_seen = []

    def set_driving_start(self, image):
        self.driving_start = image[None] if image.ndim == 3 else image[:1]

    def render(self, conditions, camera):
        self.starts_seen.append(self.driving_start.clone())
        return conditions["image"] - self.driving_start + self.driving_start  # moves as the driving video does


def test_following_starts_a_relative_method_at_the_clips_first_frame_and_restores_its_own():
    clip = fake_clip()
    own = torch.full((1, 3, 16, 16), 0.5)
    method = RelativeMover(own)
    evaluate.expression_following(method, clip=clip, max_frames=6)
    assert method.starts_seen and all(torch.equal(s, clip.conditions["image"][:1]) for s in method.starts_seen)
    assert torch.equal(method.driving_start, own)  # the test split's start is back for the image metrics
