"""The evaluation protocol of issue #19 in the tables: the static row, the mouth and following
columns, verdicts with intervals, Table 3's lip-sync reference rows and short-clip note, and
the caches that keep them from being recomputed on every notebook run."""

from __future__ import annotations

import types

import pandas as pd
import pytest
import torch

from persona import evaluate
from persona import experiments as ex
from persona import notebooks as nbr
from persona import report, tables
from test_evaluation_protocol import VoicedFrames, fake_clip


@pytest.mark.parametrize("profile", ["smoke", "default"])
@pytest.mark.parametrize("spec", list(tables.TABLES.values()), ids=list(tables.TABLES))
def test_each_table_has_the_static_row_mouth_and_following_columns(spec, profile):
    p = nbr.load_params(profile, spec.notebook)
    labels, metrics = spec.labels(p), spec.metrics(p)
    assert {"psnr_mouth", "ssim_mouth"} <= set(metrics)  # Tables 1-4
    if spec.name == "table4_ablation":
        assert tables.STATIC_LABEL not in labels and "following" not in metrics  # ours only, RGB-driven
        assert any("only orthogonality differs" in note for note in spec.notes(p))
        return
    assert labels[len(spec.leading_rows) + len(spec.rows(p))] == tables.STATIC_LABEL  # right after the methods
    assert ("following" in metrics) == (spec.name != "table1_reconstruction") == spec.following
    for metric in metrics:
        assert metric in report.METRIC_LABELS and metric in report.METRIC_DIGITS, metric


def test_table3_has_the_lip_sync_reference_rows_and_their_columns_and_the_ground_truth_once():
    p = nbr.load_params("smoke", tables.T3.notebook)
    labels = tables.T3.labels(p)
    assert labels[-3:] == ["frozen frame (reference)", "audio from another clip (reference)", "black video (reference)"]
    assert labels[0] == "Ground Truth" and "ground truth (reference)" not in labels  # the ceiling row, shown once
    assert tables.T3.metrics(p)[3:6] == ["sync", "sync_lse_d", "sync_offset_accuracy"]
    assert tables.T3.compare_kwargs(p)["sync_references"] is True
    official = {**p, "syncnet_model": "syncnet_v2.model"}
    assert tables.T3.metrics(official)[3:6] == ["syncnet_c", "syncnet_d", "sync_offset_accuracy"]
    notes = tables.protocol_notes(tables.T3, "smoke")
    assert any("offset accuracy chance = 1/31" in n for n in notes) and any(n.startswith("following:") for n in notes)
    assert "n/a on real videos" in tables.protocol_notes(tables.T3, "paper")[2]


def test_a_short_clip_says_why_lip_sync_reads_na():
    per_frame = pd.DataFrame([{"method": "A", "view": "gt", "sync_note": "clip: lip-sync clip of 15 frames; expected >= 36"},
                              {"method": "B", "view": "gt", "sync_note": "clip: lip-sync clip of 15 frames; expected >= 36"},
                              {"method": "B", "view": "yaw+25", "sync_note": None}])
    assert tables.sync_notes(per_frame) == ["Lip-sync columns n/a (reference rows too): clip: lip-sync clip of 15 frames; "
                                            "expected >= 36."]
    assert tables.sync_notes(per_frame.drop(columns="sync_note")) == []
    inside = pd.DataFrame([{"sync_note": f"{nbr.REPO_ROOT}/data/synthetic/smoke/id00/audio/aud.wav (test split): too short"}])
    assert tables.sync_notes(inside) == ["Lip-sync columns n/a (reference rows too): data/synthetic/smoke/id00/audio/aud.wav "
                                         "(test split): too short."]  # no absolute path in a committed table


class Still(evaluate.StaticFrame):
    pass


def _fake_runs(monkeypatch, tmp_path, frames):
    from persona.data import dataset

    monkeypatch.setattr(dataset, "FrameDataset", lambda video, split, **kw: VoicedFrames(root=video, split=split, frames=frames))
    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / "runs")
    monkeypatch.setattr(ex, "frontal_clip", lambda video, split="test": fake_clip(12))

    def fake_trained(name, cfg, train_ds, profile, label=None, force=False):
        (tmp_path / label).mkdir(exist_ok=True)
        return ex.TrainedRun(label, Still(torch.zeros(3, 32, 32)), types.SimpleNamespace(root=tmp_path / label), 0.0, None)

    monkeypatch.setattr(ex, "trained", fake_trained)


def test_compare_adds_the_static_row_and_the_following_score_on_the_same_frames_and_caches_them(monkeypatch, tmp_path):
    _fake_runs(monkeypatch, tmp_path, frames=12)
    rows = [tables.Row("PTI", "pti", {}, max_test_frames=6), tables.Row("Ours", "ours", {})]
    per_frame, _, _ = tables.compare(rows, [tmp_path / "id00" / "mono"], "smoke", novel=False, static=True, following=True)
    indices = {m: sorted(per_frame[per_frame["method"] == m]["index"]) for m in ("PTI", "Ours", tables.STATIC_LABEL)}
    assert indices["PTI"] == indices["Ours"] == indices[tables.STATIC_LABEL] and len(indices["Ours"]) == 6
    assert (per_frame["following"] == 0.0).all()  # still images do not follow
    assert per_frame[["psnr_mouth", "ssim_mouth"]].notna().all().all()
    cached = sorted(p.name for p in (tmp_path / "ours-id00").iterdir())
    assert len(cached) == 1 and cached[0].startswith("eval-")
    assert len(list((tmp_path / "runs").glob("static-id00-*.csv"))) == 1

    def fail(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(evaluate, "evaluate_method", fail)
    monkeypatch.setattr(evaluate, "expression_following", fail)
    monkeypatch.setattr(evaluate, "static_floor", fail)
    again, _, _ = tables.compare(rows, [tmp_path / "id00" / "mono"], "smoke", novel=False, static=True, following=True)
    columns = ["method", "index", "psnr", "psnr_mouth", "ssim_mouth", "following"]
    pd.testing.assert_frame_equal(again[columns], per_frame[columns], check_dtype=False)


def test_the_following_score_is_part_of_the_evaluation_cache_key(monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "frontal_clip", lambda video, split="test": fake_clip(12))
    run = ex.TrainedRun("copy", Still(torch.zeros(3, 32, 32)), types.SimpleNamespace(root=tmp_path), 0.0, None)
    test = VoicedFrames(root=tmp_path / "video", split="test", frames=12)
    plain = ex.evaluated(run, test, max_frames=6)
    followed = ex.evaluated(run, test, max_frames=6, following=True)
    assert "following" not in plain and followed["following"].tolist() == [0.0] * 6
    assert len(list(tmp_path.glob("eval-*.csv"))) == 2


def test_compare_appends_the_sync_reference_rows_once_for_all_identities(monkeypatch, tmp_path):
    _fake_runs(monkeypatch, tmp_path, frames=12)
    seen = []

    def reference_rows(test_sets, scorer=None, lse_c_column="sync"):
        seen.append(sorted(test_sets))
        return pd.DataFrame([{"method": "black video (reference)", "identity": i, "view": "gt", lse_c_column: 1.0,
                              "sync_lse_d": 9.0, "sync_offset_accuracy": 1 / 31} for i in test_sets])

    monkeypatch.setattr(evaluate, "sync_reference_rows", reference_rows)
    rows = [tables.Row("Ours", "ours", {})]
    per_frame, _, _ = tables.compare(rows, [tmp_path / "id00" / "audio", tmp_path / "id01" / "audio"], "smoke", novel=False, sync_references=True)
    floor = per_frame[per_frame["method"] == "black video (reference)"]
    assert seen == [["id00", "id01"]] and sorted(floor["identity"]) == ["id00", "id01"]
    tables.compare(rows, [tmp_path / "id00" / "audio", tmp_path / "id01" / "audio"], "smoke", novel=False, sync_references=True)
    assert len(seen) == 1  # cached under the profile's runs



def test_the_lip_sync_floor_goes_in_the_official_syncnet_columns(monkeypatch, tmp_path):
    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / "runs")
    monkeypatch.setattr(ex, "sync_scorer", lambda model: ("official scorer", "digest"))
    asked = []

    def reference_rows(test_sets, scorer=None, lse_c_column="sync"):
        asked.append((scorer, lse_c_column))
        return pd.DataFrame([{"method": "black video (reference)", "identity": "id00", "view": "gt", lse_c_column: 0.3,
                              "sync_lse_d": 12.5, "sync_offset_accuracy": 0.03}])

    monkeypatch.setattr(evaluate, "sync_reference_rows", reference_rows)
    test = VoicedFrames(root=tmp_path / "id00" / "audio", split="test", frames=40)
    (tmp_path / "syncnet_v2.model").write_bytes(b"weights")  # the cache key holds its digest
    rows = ex.sync_references({"id00": test}, "smoke", syncnet_model=str(tmp_path / "syncnet_v2.model"))
    assert asked == [("official scorer", "syncnet_c")]
    assert rows.iloc[0][["syncnet_c", "syncnet_d", "sync_offset_accuracy"]].tolist() == [0.3, 12.5, 0.03]


class _PerFrame:
    """Renders frame i as the constant i/100 (no randomness), counting renders per frame index."""

    name, supports_novel_views = "nerf-like", False

    def __init__(self, frame_by_frame):
        self.renders_frame_by_frame = frame_by_frame
        self.rendered = []

    def render(self, conditions, camera):
        self.rendered += [int(i) for i in conditions["index"]]
        return torch.stack([torch.full((3, 32, 32), int(i) / 100 - 1) for i in conditions["index"]])


@pytest.mark.parametrize("frame_by_frame", [True, False])
def test_a_frame_by_frame_method_renders_table3s_clip_once_for_the_scores_and_the_lip_sync(monkeypatch, tmp_path,
                                                                                          frame_by_frame):
    from persona import syncnet

    monkeypatch.setattr(syncnet, "check_clip_length", lambda *a, **k: None)
    monkeypatch.setattr(syncnet, "load_synthetic_expert", lambda: "expert")
    scores = lambda value: types.SimpleNamespace(as_row=lambda: {"scorer": "fake", "lse_c": value, "lse_d": 1.0, "offset": 0,
                                                                 "offset_accuracy": 1.0, "windows": 1})
    seen = []
    monkeypatch.setattr(syncnet, "score_frames", lambda scorer, frames, ds: seen.append(frames.clone()) or scores(float(frames.mean())))
    monkeypatch.setattr(syncnet, "ground_truth_scores", lambda ds, scorer=None: scores(0.0))
    method = _PerFrame(frame_by_frame)
    run = ex.TrainedRun("AD-NeRF", method, types.SimpleNamespace(root=tmp_path), 0.0, None)
    test = VoicedFrames(root=tmp_path / "video", split="test", frames=12)
    split = ex.shared_split_frames(run, test)
    assert (split is not None) == frame_by_frame
    df = ex.evaluated(run, test, max_frames=4, split=split)
    rows = ex.synced(run, test, split=split)
    scored = [100, 104, 107, 111]  # frame_positions(12, 4)
    assert sorted(method.rendered) == sorted(list(range(100, 112)) + ([] if frame_by_frame else scored))
    assert sorted(df["index"]) == scored and len(seen) == 1 and seen[0].shape == (12, 3, 32, 32)
    expected = torch.stack([torch.full((3, 32, 32), i / 100 - 1) for i in range(100, 112)])
    assert torch.equal(seen[0], expected) and rows.iloc[0]["lse_c"] == pytest.approx(float(expected.mean()))
    assert ex.shared_split_frames(run, test) is None  # the lip-sync score is cached now: nothing to share
