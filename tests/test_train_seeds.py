"""Optimiser seeds as a second axis of the tables (notebook parameter ``train_seeds``)."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from persona import params, tables, verdicts
from persona import experiments as ex
from persona.errors import PersonaInputError
from persona.methods import build_method
from persona.runs import RunDir


def fake_compare_world(monkeypatch, tmp_path):
    """compare's training and evaluation replaced: a run's PSNR is 20 + its seed + 10 x the identity's number."""
    from persona.data import dataset

    monkeypatch.setattr(dataset, "FrameDataset", lambda video, split, **kw: types.SimpleNamespace(root=video, split=split, resolution=64))
    monkeypatch.setattr(dataset, "NovelViewDataset", lambda *a, **k: None)
    asked = []

    def fake_trained(name, cfg, train_ds, profile, label=None, force=False):
        asked.append((name, label, dict(cfg)))
        method = build_method(name, cfg)
        run = RunDir(tmp_path / label)
        run.log(method.config.iterations, train_seconds=7.0)
        run.psnr = 20.0 + method.config.seed + 10 * int(str(train_ds.root).split("id")[1][:2])
        return ex.TrainedRun(label, method, run, 8.0, 1)

    monkeypatch.setattr(ex, "trained", fake_trained)
    monkeypatch.setattr(ex, "evaluated", lambda tr, *a, **k: pd.DataFrame([{"view": "gt", "psnr": tr.run.psnr}] * 2))
    return asked


def test_every_row_trains_once_per_seed_and_an_identity_scores_the_mean_over_its_seeds(monkeypatch, tmp_path):
    asked = fake_compare_world(monkeypatch, tmp_path)
    rows = [tables.Row("NerFACE", "nerface", {}), tables.Row("FOMM", "fomm", {})]
    videos = [tmp_path / "id00" / "mono", tmp_path / "id01" / "mono"]
    per_frame, timings, runs = tables.compare(rows, videos, "smoke", novel=False, train_seeds=[0, 3])
    assert len(asked) == 2 * 2 * 2  # rows x videos x seeds
    seed0 = [cfg for name, label, cfg in asked if not label.endswith("-seed3")]
    seed3 = [cfg for name, label, cfg in asked if label.endswith("-seed3")]
    assert len(seed0) == len(seed3) == 4
    assert all("seed" not in cfg for cfg in seed0)  # seed 0: the row's config as given (its cache key unchanged)
    assert all(cfg["seed"] == 3 for cfg in seed3)
    assert sorted(timings["seed"].unique()) == [0, 3] and len(timings) == 8
    assert runs[("NerFACE", "id00")].name == "NerFACE" and not runs[("NerFACE", "id00")].run.root.name.endswith("seed3")
    means = per_frame.groupby(["method", "identity"])["psnr"].mean()
    assert means[("NerFACE", "id00")] == pytest.approx(21.5) and means[("FOMM", "id01")] == pytest.approx(31.5)
    # the verdict's units stay the identities: a paired difference over 2 identities, not 4 (identity, seed) pairs
    checked = verdicts.claims_table(per_frame, [("FOMM", "psnr", "NerFACE")], view="gt")
    assert checked.iloc[0]["identities"] == 2


def test_one_seed_is_the_default_and_changes_nothing(monkeypatch, tmp_path):
    asked = fake_compare_world(monkeypatch, tmp_path)
    rows = [tables.Row("NerFACE", "nerface", {})]
    _, timings, _ = tables.compare(rows, [tmp_path / "id00" / "mono"], "smoke", novel=False)
    assert [label for _, label, _ in asked] == ["nerface-id00"] and "seed" not in asked[0][2]
    for profile in ("smoke", "default", "paper", "paper-dry"):
        for notebook in params.TABLE_NOTEBOOKS:
            assert params.resolve(notebook, {"profile": profile}).values["train_seeds"] == [0]


def test_train_seeds_are_checked_in_one_line():
    assert params.check("train_seeds", "[0, 1, 2]") == [0, 1, 2]
    with pytest.raises(PersonaInputError, match="train_seeds: expected a non-empty list without repeats"):
        params.check("train_seeds", "[1, 1]")
    with pytest.raises(PersonaInputError, match="train_seeds: expected a list of integers"):
        params.check("train_seeds", "[-1]")
    assert "train_seeds" not in params.names_for("07_cross_identity")


def test_a_resumed_runs_done_json_counts_every_session_of_its_training(tmp_path):
    """done.json's train_seconds (the pool's printout, the timings' train_seconds) is the trainer's logged
    total when a resumed run's earlier sessions make it larger than this session's wall time."""
    import json
    import time

    class Stub:
        def __init__(self, logged):
            self.logged = logged

        def fit(self, train_ds, run):
            time.sleep(0.01)
            run.log(10, train_seconds=self.logged)

    ex.train_or_load(Stub(500.0), {"torch_threads": 1}, tmp_path / "resumed", None)
    assert json.loads((tmp_path / "resumed" / "done.json").read_text())["train_seconds"] == 500.0
    ex.train_or_load(Stub(0.001), {"torch_threads": 1}, tmp_path / "fresh", None)
    assert 0.01 <= json.loads((tmp_path / "fresh" / "done.json").read_text())["train_seconds"] < 5
