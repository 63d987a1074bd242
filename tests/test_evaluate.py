"""evaluate_method / summarise / main_eval with stand-in methods on a tiny in-memory dataset."""

from __future__ import annotations

import json
import math
import sys
import types

import pandas as pd
import torch

from persona import evaluate, metrics
from persona.methods import Method

SIZE = 32
NOVEL = ("yaw-25", "yaw+25")


class TinyFrames(torch.utils.data.Dataset):
    """Stand-in with the FrameDataset sample contract (6 frames, 32x32)."""

    def __init__(self, root=None, split="test", resolution=None, frames=6):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(frames, 3, SIZE, SIZE, generator=g) * 2 - 1
        self.root, self.split, self.fps, self.resolution, self.background = root, split, 25, SIZE, None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "camera": torch.full((25,), float(i)), "expression": torch.zeros(76),
                "audio": torch.zeros(16, 29), "index": 100 + i, "mouth_box": torch.tensor([0.25, 0.5, 0.75, 0.9])}


class TinyNovel(TinyFrames):
    def __init__(self, root=None, resolution=None):
        super().__init__(root, "novel", resolution, frames=2 * len(NOVEL))

    def __getitem__(self, i):
        sample = super().__getitem__(i)
        sample.update(view=NOVEL[i % len(NOVEL)], source_index=100 + i // len(NOVEL))
        return sample


class Oracle(Method):
    """Returns the ground truth it is shown: PSNR inf, SSIM 1."""

    name, supports_novel_views = "oracle", True

    def __init__(self, cfg=None, noise=0.0):
        self.noise = float((cfg or {}).get("noise", noise))
        self.loaded_from = None

    def fit(self, train, run):
        pass

    def load(self, run):
        self.loaded_from = run.root

    def render(self, conditions, camera):
        image = conditions["image"]
        checker = (torch.arange(image.shape[-1])[:, None] + torch.arange(image.shape[-1])[None, :]) % 2 * 2 - 1
        return image + self.noise * checker  # per-frame pattern: independent of the batch split


class FrontalOnly(Oracle):
    name, supports_novel_views = "frontal", False


def test_oracle_scores_perfectly_on_every_view():
    frame = evaluate.evaluate_method(Oracle(), TinyFrames(), TinyNovel(), batch_size=4, progress=False)
    assert list(frame.columns) == list(evaluate.COLUMNS)
    assert len(frame) == 6 + 4 and set(frame["view"]) == {"gt", *NOVEL}
    assert list(frame[frame.view == "gt"]["index"]) == list(range(100, 106))
    assert (frame["psnr"] == math.inf).all() and (frame["psnr_mouth"] == math.inf).all()
    assert torch.allclose(torch.tensor(frame["ssim"].to_numpy()), torch.ones(len(frame), dtype=torch.float64))
    if not metrics.lpips_available():
        assert frame["lpips"].isna().all() and "alexnet" in frame.attrs["lpips_note"].lower()


def test_known_error_level_and_batch_size_invariance():
    # noise +-0.2 in [-1,1] = +-0.1 in [0,1] -> 20 dB wherever the clamp at +-1 does not bite
    data = TinyFrames()
    data.images = data.images.clamp(-0.7, 0.7)
    a = evaluate.evaluate_method(Oracle(noise=0.2), data, batch_size=4, progress=False)
    b = evaluate.evaluate_method(Oracle(noise=0.2), data, batch_size=1, progress=False)
    assert ((a["psnr"] - 20.0).abs() < 1e-4).all()
    pd.testing.assert_frame_equal(a.drop(columns=["lpips"]), b.drop(columns=["lpips"]))


def test_methods_without_novel_views_get_nan_rows_with_a_note():
    frame = evaluate.evaluate_method(FrontalOnly(), TinyFrames(), TinyNovel(), progress=False)
    novel = frame[frame.view != "gt"]
    assert len(novel) == 4 and novel[["psnr", "ssim", "lpips"]].isna().all().all()
    assert (novel["note"] == evaluate.NO_NOVEL_VIEWS).all()
    summary = evaluate.summarise(frame)
    assert list(summary["view"]) == ["gt", *NOVEL]
    assert summary.set_index("view").loc["yaw+25", "note"] == evaluate.NO_NOVEL_VIEWS
    assert summary.set_index("view").loc["gt", "frames"] == 6


def test_summarise_mean_and_std():
    frame = pd.DataFrame({"method": "m", "view": "gt", "index": [0, 1, 2], "psnr": [10.0, 20.0, 30.0],
                          "ssim": [0.5, 0.5, 0.5], "lpips": [math.nan] * 3, "psnr_mouth": [1.0, 2.0, 3.0],
                          "ssim_mouth": [0.1, 0.2, 0.3], "note": ""})
    row = evaluate.summarise(frame).iloc[0]
    assert row["psnr_mean"] == 20.0 and row["psnr_std"] == 10.0 and row["ssim_std"] == 0.0
    assert math.isnan(row["lpips_mean"])
    assert "n/a*" in evaluate.format_summary(evaluate.summarise(frame), "LPIPS unavailable: reason")


def use_oracle(monkeypatch, frames=TinyFrames):
    """`eval` sees ``frames`` as its dataset and the registered method 'oracle'."""
    fake = types.ModuleType("persona.data.dataset")
    fake.FrameDataset, fake.NovelViewDataset = frames, TinyNovel
    monkeypatch.setitem(sys.modules, "persona.data.dataset", fake)
    monkeypatch.setattr(sys.modules[__name__], "build_method", lambda cfg=None, **kw: Oracle(cfg), raising=False)
    from persona import methods

    monkeypatch.setitem(methods.REGISTRY, "oracle", f"{__name__}:build_method")


def test_main_eval_reads_run_config_and_writes_csv(tmp_path, monkeypatch):
    use_oracle(monkeypatch)
    data = tmp_path / "data"
    (data / "novel").mkdir(parents=True)
    (data / "novel" / "transforms_novel.json").write_text("{}")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "oracle", "config": {"noise": 0.0}, "data": str(data)}))
    assert evaluate.main_eval([str(run), "--no-sync"]) == 0
    frame = pd.read_csv(run / "metrics_test.csv")
    assert len(frame) == 10 and set(frame["view"]) == {"gt", *NOVEL}
    assert (run / "metrics_test_summary.csv").is_file()
    assert evaluate.main_eval([str(run), "--no-novel", "--no-sync", "--out", str(tmp_path / "x.csv")]) == 0
    assert set(pd.read_csv(tmp_path / "x.csv")["view"]) == {"gt"}


def test_main_eval_reuses_the_frames_render_wrote_at_the_same_checkpoint(tmp_path, monkeypatch):
    import cv2
    import numpy as np

    from persona.verbs import render_stamp
    from persona.runs import RunDir, atomic_write_json

    class Indexed(TinyFrames):
        def __init__(self, root=None, split="test", resolution=None, frames=6):
            super().__init__(root, split, resolution, frames)
            self.indices = [100 + i for i in range(frames)]

    use_oracle(monkeypatch, Indexed)
    data = tmp_path / "data"
    data.mkdir()
    run = RunDir(tmp_path / "run")
    run.write_config({"method": "oracle", "config": {}, "data": str(data)})
    # what `render` leaves: gray PNGs (not what the oracle renders) and the stamp of this checkpoint
    (run.renders / "test").mkdir()
    for i in range(6):
        cv2.imwrite(str(run.renders / "test" / f"{100 + i:05d}.png"), np.full((SIZE, SIZE, 3), 128, np.uint8))
    atomic_write_json(run.renders / "test.json", {**render_stamp(run, data, "test", None), "indices": list(range(100, 106))})
    assert evaluate.main_eval([str(run.root), "--no-sync"]) == 0
    reused = pd.read_csv(run.root / "metrics_test.csv")
    assert np.isfinite(reused["psnr"]).all()  # scored the PNGs, not a fresh (perfect) render
    # another checkpoint: the frames are stale and eval renders again
    atomic_write_json(run.renders / "test.json", {**render_stamp(run, data, "test", None), "checkpoint": "step_9:x",
                                                  "indices": list(range(100, 106))})
    assert evaluate.main_eval([str(run.root), "--no-sync"]) == 0
    assert np.isinf(pd.read_csv(run.root / "metrics_test.csv")["psnr"]).all()
