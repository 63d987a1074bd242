"""persona.budget: recorded budgets in every table row, equal budgets from the committed calibration."""

from __future__ import annotations

import types

import pandas as pd
import pytest
import torch

from persona import bench, budget, params, report, tables
from persona import experiments as ex
from persona.errors import PersonaInputError
from persona.methods import build_method
from persona.runs import RunDir

MS = {"ours-rgb": 250.0, "ours-3dmm": 200.0, "ours-audio": 125.0, "pti": 100.0, "nerface": 50.0, "adnerf": 40.0,
      "dfrf": 80.0, "fomm": 500.0, "nha": 64.0}
CALIBRATION = {"profiles": {"default": MS, "smoke": MS}, "date": "2026-12-02", "command": "python -m persona bench budget"}


def table_rows(profile: str = "default") -> list[tuple[str, tables.Row]]:
    """Every method row of Tables 1-4 with the profile's own parameters."""
    out = []
    for spec in tables.TABLES.values():
        p = params.resolve(spec.notebook, {"profile": profile}).values
        out += [(spec.name, row) for row in spec.rows(p)]
    return out


def stand_in_video(tmp_path):
    return types.SimpleNamespace(root=str(tmp_path / "id00" / "mono"), split="train", max_seconds=None)


def test_null_budget_changes_no_config_and_no_run_cache_key(tmp_path):
    video = stand_in_video(tmp_path)
    for _, row in table_rows():
        cfg = {**row.cfg, "profile": "default"}
        same = budget.equal_budget_cfg(row.method, cfg, None)
        assert same == cfg
        assert ex.run_identity(row.method, same, video, "default")[1:] == ex.run_identity(row.method, cfg, video, "default")[1:]
    assert params.resolve("01_reconstruction_vs_pti", {"profile": "smoke"}).values["budget_seconds"] is None


@pytest.mark.parametrize("profile", ["smoke", "default", "paper"])
def test_notebooks_that_share_runs_share_the_budget(profile):
    """Table 5 (07) and the explorer (05) load Tables 2 and 3's runs: their budgets must agree, or
    they would train other runs."""
    budgets = {nb: params.resolve(nb, {"profile": profile}).values["budget_seconds"]
               for nb in ("02_3dmm_reenactment", "03_audio_reenactment", "05_explore_basis", "07_cross_identity")}
    assert len(set(budgets.values())) == 1, budgets


@pytest.mark.parametrize("profile", ["default", "smoke"])
def test_budget_seconds_gives_every_method_the_steps_its_calibration_implies(profile):
    seconds = 50.0
    seen = set()
    for _, row in table_rows(profile):
        own = budget.resolved_config(row.method, {**row.cfg, "profile": profile})
        cfg = budget.equal_budget_cfg(row.method, {**row.cfg, "profile": profile}, seconds, CALIBRATION)
        config = build_method(row.method, cfg).config
        key = budget.calibration_key(row.method, config)
        expected = round(seconds / (MS[key] / 1000))
        counts, stages = budget.SCHEDULE[row.method]
        assert sum(getattr(config, name) for name in counts) == expected, (row.label, key)
        for name in stages:  # stage boundaries scale with the steps
            assert getattr(config, name) == min(expected, round(getattr(own, name) * expected / sum(getattr(own, c) for c in counts)))
        seen.add(key)
    assert seen == set(MS)  # Tables 1-4 hold every calibrated method
    ours = build_method("ours", budget.equal_budget_cfg("ours", {"profile": "default", "modality": "rgb"}, 50.0, CALIBRATION)).config
    assert (ours.iterations, ours.frozen_iterations) == (200, 50)  # 400 / 100 at the default profile: the split kept
    pti = build_method("pti", budget.equal_budget_cfg("pti", {"profile": "default"}, 50.0, CALIBRATION)).config
    assert (pti.w_steps, pti.wplus_steps, pti.tune_steps) == (200, 100, 200)  # 500 per test frame, 80:40:80


def test_budget_steps_split_and_calibration_errors(tmp_path):
    assert budget.split_steps(7, [80, 40, 80]) == [3, 1, 3] and sum(budget.split_steps(101, [1, 1, 1])) == 101
    assert budget.budget_steps(0.01, 0.5) == 1  # never zero steps
    with pytest.raises(PersonaInputError, match="profiles.paper"):
        budget.equal_budget_cfg("nerface", {"profile": "paper"}, 10.0, CALIBRATION)
    with pytest.raises(PersonaInputError, match="profiles.default.nha"):
        budget.seconds_per_step("nha", "default", {"profiles": {"default": {"nha": -1}}})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(Exception, match="bad.json: not valid JSON"):
        budget.load_calibration(tmp_path / "bad.json")


def test_the_committed_calibration_covers_every_method_at_both_profiles():
    data = budget.load_calibration()
    for profile in ("default", "smoke"):
        assert set(data["profiles"][profile]) == set(bench.case_names())
        assert all(ms > 0 for ms in data["profiles"][profile].values())
        assert "one torch thread" in data["measured"][profile]["timing"] and data["measured"][profile]["date"]
    assert data["command"].startswith("python -m persona bench budget")


def test_run_budget_reads_steps_seconds_and_pixels_of_each_kind_of_run(tmp_path):
    ours = build_method("ours", {"profile": "smoke", "modality": "rgb"}).config
    run = RunDir(tmp_path / "ours")
    run.log(3, loss=1.0, train_seconds=2.5)
    run.log(6, loss=0.5, train_seconds=5.0)
    b = budget.run_budget("ours", ours, run, resolution=64)
    assert (b.steps, b.seconds, b.pixels, b.per_test_frame) == (6, 5.0, 6 * ours.batch_size * 64 * 64, False)
    assert b.calibrated is None and b.as_record()["cal_s"] is None  # no profile asked
    b = budget.run_budget("ours", ours, run, resolution=64, profile="smoke")
    assert b.calibrated == pytest.approx(6 * budget.seconds_per_step("ours-rgb", "smoke"))
    assert budget.calibrated_seconds("ours", ours, 6, "paper") is None  # no calibration there: n/a, not an error
    nerface = build_method("nerface", {"profile": "smoke"}).config
    run = RunDir(tmp_path / "nerface")
    run.log(20, loss=0.1, seconds=1.5)  # the NeRFs log 'seconds'
    b = budget.run_budget("nerface", nerface, run, resolution=64)
    assert (b.steps, b.seconds, b.pixels) == (20, 1.5, 20 * nerface.rays_per_step * nerface.frames_per_step)
    empty = budget.run_budget("fomm", build_method("fomm", {"profile": "smoke"}).config, RunDir(tmp_path / "fomm"), 64, 9.0)
    assert empty.seconds == 9.0  # nothing logged: done.json's seconds
    pti = build_method("pti", {"profile": "smoke"}).config
    run = RunDir(tmp_path / "pti")
    run.log(0, img_resolution=32, generator="prior")
    run.log(1, frame=4, seconds=3.0, tune_steps=10)
    run.log(2, frame=9, seconds=5.0, tune_steps=6)  # stopped early
    b = budget.run_budget("pti", pti, run, resolution=64)
    assert b.per_test_frame and b.seconds == 4.0 and b.steps == pti.w_steps + pti.wplus_steps + 8 and b.pixels == b.steps * 32 * 32


def test_table_columns_hold_the_mean_budget_and_leave_reference_rows_empty():
    table = pd.DataFrame({"PSNR ↑": ["1", "2", "3"]}, index=pd.Index(["PTI", "Ours RGB", tables.STATIC_LABEL], name="method"))
    numeric = pd.DataFrame({"method": ["PTI", "Ours RGB", tables.STATIC_LABEL], "view_group": "gt"})
    timings = pd.DataFrame([
        {"method": "PTI", "identity": "id00", "steps": 200, "train_s": 20.0, "mpx": 0.8, "budget_per": "test frame"},
        {"method": "Ours RGB", "identity": "id00", "steps": 400, "cal_s": 60.0, "train_s": 100.0, "mpx": 3.0, "budget_per": "identity"},
        {"method": "Ours RGB", "identity": "id01", "steps": 400, "cal_s": 60.0, "train_s": 120.0, "mpx": 3.0, "budget_per": "identity"}])
    shown, csv = report.with_budget(table, numeric, timings)
    assert shown.loc["Ours RGB", ["steps", "calibrated s", "train s", "Mpx"]].tolist() == ["400", "60.0", "110.0", "3"]
    assert shown.loc["PTI", "calibrated s"] == "n/a"  # no calibration in its timings row
    assert shown.loc["PTI", "Mpx"] == "0.8/frame"  # 3 significant digits: the NeRFs' 0.00256 Mpx stays visible
    assert shown.loc["PTI", "steps"] == "200/frame" and shown.loc[tables.STATIC_LABEL, "steps"] == ""
    assert csv.set_index("method").loc["Ours RGB", "train_s"] == 110.0 and pd.isna(csv.set_index("method").loc[tables.STATIC_LABEL, "steps"])
    notes = budget.budget_notes(None, {"DFRF": budget.Budget(300, 40.0, 76800)})
    assert any("budget_seconds = null" in n for n in notes) and any("DFRF's base model" in n and "300 steps, 40 s, 0.0768 Mpx" in n for n in notes)
    assert any("budget_seconds = 30" in n for n in budget.budget_notes(30.0, calibration=CALIBRATION))
    assert budget.table_notes(None, pd.DataFrame({"method": ["NHA"], "eval_seconds": [1.0]}), "smoke") == []  # trains nothing (Table 5)
    assert budget.table_notes(None, timings, "smoke")[0] == budget.PIXELS_NOTE
    measured = {**CALIBRATION, "measured": {"smoke": {"date": "2026-01-01", "command": "python -m persona bench budget --profile smoke"}}}
    assert any("2026-01-01: `python -m persona bench budget --profile smoke`" in n
               for n in budget.budget_notes(30.0, calibration=measured, profile="smoke"))
    scaled = {**CALIBRATION, "measured": {"smoke": {"date": "2026-01-01", "scaled": {"date": "2026-02-02", "methods": {
        "ours-3dmm": [100.0, 0.75], "ours-audio": [110.0, 0.8]}}}}}
    rule = budget.budget_notes(30.0, calibration=scaled, profile="smoke")[1]
    assert "Scaled entries (2026-02-02): ours-3dmm x 0.75, ours-audio x 0.8" in rule  # a table says which entries were not from runs
    assert "Scaled entries" not in budget.budget_notes(30.0, calibration=measured, profile="smoke")[1]


def test_compare_trains_with_the_equal_budget_and_records_it(monkeypatch, tmp_path):
    from persona.data import dataset

    monkeypatch.setattr(dataset, "FrameDataset", lambda video, split, **kw: types.SimpleNamespace(root=video, split=split, resolution=64))
    monkeypatch.setattr(dataset, "NovelViewDataset", lambda *a, **k: None)
    monkeypatch.setattr(budget, "load_calibration", lambda path=budget.CALIBRATION: CALIBRATION)
    asked = {}

    def fake_trained(name, cfg, train_ds, profile, label=None, force=False):
        asked[name] = cfg
        method = build_method(name, cfg)
        run = RunDir(tmp_path / label)
        run.log(method.config.iterations, train_seconds=7.0)
        return ex.TrainedRun(label, method, run, 8.0, 1)

    monkeypatch.setattr(ex, "trained", fake_trained)
    monkeypatch.setattr(ex, "evaluated", lambda run, *a, **k: pd.DataFrame([{"view": "gt", "psnr": 20.0}]))
    rows = [tables.Row("NerFACE", "nerface", {}), tables.Row("FOMM", "fomm", {})]
    _, timings, _ = tables.compare(rows, [tmp_path / "id00" / "mono"], "smoke", novel=False, budget_seconds=10.0)
    assert asked["nerface"]["iterations"] == 200 and asked["fomm"]["iterations"] == 20  # 10 s / 50 ms, 10 s / 500 ms
    assert timings.set_index("method").loc["NerFACE", ["steps", "train_s"]].tolist() == [200, 7.0]
    # equal budgets are equal in calibrated seconds, whatever the day's logged seconds
    assert timings.set_index("method")["cal_s"].tolist() == pytest.approx([10.0, 10.0])
    _, timings, _ = tables.compare(rows, [tmp_path / "id00" / "mono"], "smoke", novel=False)
    assert "iterations" not in asked["nerface"]  # null: the row's own config


def test_budget_curve_trains_fractions_of_the_budget_and_plots_psnr_against_seconds(monkeypatch, tmp_path):
    from persona.data import dataset

    monkeypatch.setattr(dataset, "FrameDataset", lambda video, split, **kw: types.SimpleNamespace(root=video, split=split, resolution=64))
    asked = []

    def fake_trained(name, cfg, train_ds, profile, label=None, force=False):
        asked.append((label, cfg))
        method = build_method(name, cfg)
        run = RunDir(tmp_path / "runs" / label)
        run.log(1, train_seconds=0.1 * budget.own_steps(name, method.config))
        return ex.TrainedRun(label, method, run, 1.0, 1)

    monkeypatch.setattr(ex, "trained", fake_trained)
    monkeypatch.setattr(ex, "evaluated", lambda run, *a, **k: pd.DataFrame(
        [{"view": "gt", "psnr": 10.0 + budget.own_steps(run.method.name, run.method.config) / 10}]))
    spec = tables.TableSpec(name="tableX", notebook="02_3dmm_reenactment", caption="Table X: test", video_kind="mono",
                            real_dirs="nerface_dirs", rows=lambda p: [tables.Row("NerFACE", "nerface", {}), tables.Row("FOMM", "fomm", {})],
                            claims=lambda p: [], notes=lambda p: [])
    result = types.SimpleNamespace(spec=spec, params={"profile": "smoke", "force": False, "test_frames": None, "budget_seconds": None},
                                   videos=[tmp_path / "id00" / "mono"], tables_dir=tmp_path / "tables", figures_dir=tmp_path / "figures")
    paths = budget.budget_curve(result)
    assert {path.name for path in paths} == {"tableX_budget_curve.png", "tableX_budget_curve.pdf"}
    curve = pd.read_csv(tmp_path / "tables" / "tableX_budget_curve.csv")
    own = budget.own_steps("nerface", build_method("nerface", {"profile": "smoke"}).config)
    nerface = curve[curve["method"] == "NerFACE"].sort_values("fraction")
    assert nerface["steps"].tolist() == [round(own / 4), round(own / 2), own] and nerface["train_s"].is_monotonic_increasing
    assert asked[2][1] == {"profile": "smoke"}  # the full budget is the table's own run (same config, same cache)
    assert len(curve) == 6 and curve["psnr"].notna().all()


def test_bench_budget_merges_a_profile_into_the_calibration_with_date_and_command(monkeypatch, tmp_path):
    out = tmp_path / "calibration.json"
    out.write_text('{"profiles": {"default": {"nha": 100.0}}, "measured": {}}')
    asked = []

    def fake_calibrate(profile, names, data, steps, repeats):
        asked.append((profile, list(names), steps, repeats))
        return {name: 10.0 for name in names}

    monkeypatch.setattr(budget, "calibrate", fake_calibrate)
    threads = torch.get_num_threads()
    assert budget.main(["--profile", "smoke", "--methods", "nerface,fomm", "--data", str(tmp_path), "--out", str(out)]) == 0
    data = budget.load_calibration(out)
    assert asked == [("smoke", ["nerface", "fomm"], 10, 3)] and torch.get_num_threads() == threads  # restored
    assert data["profiles"] == {"default": {"nha": 100.0}, "smoke": {"nerface": 10.0, "fomm": 10.0}}  # the other profile kept
    assert data["measured"]["smoke"]["command"].startswith("python -m persona bench budget --profile smoke")
    assert "median of 3" in data["measured"]["smoke"]["timing"] and data["date"] == data["measured"]["smoke"]["date"]
    with pytest.raises(PersonaInputError, match="--methods bogus unknown"):
        budget.main(["--methods", "bogus", "--out", str(out)])


def _finished_run(root, name, method, cfg, steps, seconds, threads=1):
    """A finished run folder as experiments.trained leaves it: done.json's run key + the trainer's log."""
    import dataclasses
    import json

    config = build_method(method, cfg).config
    run = RunDir(root / name)
    key = {"method": method, "config": dataclasses.asdict(config), "torch_threads": threads}
    steps_field = budget.SCHEDULE[method][0][0]
    key["config"][steps_field] = steps
    run.log(steps, loss=0.1, **({"seconds": seconds} if method in budget.RAY_METHODS else {"train_seconds": seconds}))
    (root / name / "done.json").write_text(json.dumps({"key": key, "train_seconds": seconds + 1}))


def test_bench_budget_from_runs_takes_the_median_logged_seconds_per_step(tmp_path):
    """`bench budget --from-runs`: ms per step = the trainer's logged seconds / steps, median over the runs of
    a calibration key; runs of other thread counts and unfinished runs do not count."""
    runs = tmp_path / "runs"
    for i, seconds in enumerate((10.0, 30.0, 20.0)):
        _finished_run(runs, f"ours-{i}", "ours", {"profile": "default", "modality": "3dmm"}, 100, seconds)
    _finished_run(runs, "ours-rgb", "ours", {"profile": "default", "modality": "rgb"}, 400, 200.0)
    _finished_run(runs, "ours-2threads", "ours", {"profile": "default", "modality": "3dmm"}, 100, 1.0, threads=2)
    _finished_run(runs, "nerface", "nerface", {"profile": "default"}, 400, 20.0)
    (runs / "unfinished").mkdir()
    ms, counts = budget.calibrate_from_runs(runs)
    assert ms == {"default": {"ours-3dmm": 200.0, "ours-rgb": 500.0, "nerface": 50.0}}
    assert counts["default"]["ours-3dmm"] == 3
    out = tmp_path / "calibration.json"
    out.write_text('{"profiles": {"default": {"nha": 100.0}, "smoke": {"nha": 7.0}}}')
    assert budget.main(["--profile", "default", "--from-runs", str(runs), "--out", str(out)]) == 0
    data = budget.load_calibration(out)
    assert data["profiles"]["default"] == {"nha": 100.0, "ours-3dmm": 200.0, "ours-rgb": 500.0, "nerface": 50.0}
    assert data["profiles"]["smoke"] == {"nha": 7.0} and data["measured"]["default"]["runs"]["ours-3dmm"] == 3
    with pytest.raises(PersonaInputError, match="no finished run of profile 'smoke'"):
        budget.main(["--profile", "smoke", "--from-runs", str(runs), "--out", str(out)])
    with pytest.raises(PersonaInputError, match="no such folder"):
        budget.main(["--from-runs", str(tmp_path / "nope"), "--out", str(out)])
    # several run caches (days) pool into one median: 10, 30, 20 here and 60, 70 there -> 30 s / 100 steps
    other = tmp_path / "other-day"
    for i, seconds in enumerate((60.0, 70.0)):
        _finished_run(other, f"ours-{i}", "ours", {"profile": "default", "modality": "3dmm"}, 100, seconds)
    ms, counts = budget.calibrate_from_runs([runs, other])
    assert ms["default"]["ours-3dmm"] == 300.0 and counts["default"]["ours-3dmm"] == 5
    assert budget.main(["--profile", "default", "--from-runs", str(runs), "--from-runs", str(other), "--out", str(out)]) == 0
    data = budget.load_calibration(out)
    assert data["profiles"]["default"]["ours-3dmm"] == 300.0 and data["measured"]["default"]["folders"] == 2
    with pytest.raises(PersonaInputError, match="nope: no such folder"):
        budget.main(["--from-runs", str(runs), "--from-runs", str(tmp_path / "nope"), "--out", str(out)])
