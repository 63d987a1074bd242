"""A run folder over its life: rerun with other settings (refused), --force, already complete,
leftovers of killed processes, reading a missing run, file modes, Ctrl-C, thread count records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from persona import runs
from persona.__main__ import main
from persona.runs import RunDir, atomic_write_bytes, remove_stale_leftovers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import killresume  # noqa: E402
from test_resume_kill import bench  # noqa: E402,F401  (the tiny benchmark fixture)


def _train(bench, out, *extra):
    return main(["train", "--method", "nerface", "--profile", "smoke", "--data", str(bench / "id00" / "mono"),
                 "--out", str(out), "--steps", "2", *extra])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- rerunning train on an existing run folder


def test_other_settings_are_refused_and_config_json_is_kept(bench, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(bench, out) == 0
    before = (out / "config.json").read_bytes()
    capsys.readouterr()
    assert _train(bench, out, "--seed", "3") == 2
    err = capsys.readouterr().err.split("\r")[-1].strip()  # after any progress bar
    assert len(err.splitlines()) == 1 and "config.seed 0 -> 3" in err and "--force" in err and "config.json" in err
    assert (out / "config.json").read_bytes() == before
    assert main(["train", "--method", "nerface", "--profile", "smoke", "--data", str(bench / "id00" / "mono"),
                 "--out", str(out), "--steps", "3"]) == 2
    assert "config.iterations 2 -> 3" in capsys.readouterr().err
    assert (out / "config.json").read_bytes() == before


def test_rerun_of_a_finished_run_says_already_complete(bench, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(bench, out) == 0
    capsys.readouterr()
    checkpoint = RunDir(out).latest_checkpoint()[1]
    mtime = checkpoint.stat().st_mtime_ns
    assert _train(bench, out) == 0
    text = capsys.readouterr()
    assert f"already complete: {out} (2 steps); use --force to retrain" in text.out
    assert "resuming" not in text.err and "trained" not in text.out
    assert checkpoint.stat().st_mtime_ns == mtime  # nothing retrained
    assert [r["step"] for r in RunDir(out).metrics()] == [2]


def test_force_starts_over_and_deletes_only_what_persona_wrote(bench, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(bench, out) == 0
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints" / "keep.bin").write_bytes(b"mine")
    old = RunDir(out).latest_checkpoint()[1].stat().st_mtime_ns
    assert _train(bench, out, "--seed", "3", "--force") == 0
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 3
    assert (out / "notes.txt").read_text() == "mine" and (out / "checkpoints" / "keep.bin").read_bytes() == b"mine"
    assert RunDir(out).latest_checkpoint()[1].stat().st_mtime_ns != old
    assert [r["step"] for r in RunDir(out).metrics()] == [2]


def test_clear_keeps_foreign_files_and_removes_emptied_folders(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config({"method": "x", "config": {}})
    run.save_checkpoint(1, {"w": torch.zeros(1)})
    run.log(1, loss=1.0)
    (run.renders / "test").mkdir()
    (run.renders / "test" / "00001.png").write_bytes(b"png")
    (run.renders / "holiday.jpg").write_bytes(b"mine")
    run.clear()
    assert sorted(p.relative_to(run.root).as_posix() for p in run.root.rglob("*")) == ["renders", "renders/holiday.jpg"]


def test_force_refuses_a_folder_whose_config_json_is_not_a_run(bench, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"my": "settings"}')
    (tmp_path / "mine" / "metrics.jsonl").write_text("my numbers\n")
    assert _train(bench, tmp_path / "mine", "--force") == 2
    assert "not a persona run" in capsys.readouterr().err
    assert (tmp_path / "mine" / "metrics.jsonl").read_text() == "my numbers\n"


# ---- leftovers, missing runs, modes


def test_stale_temp_files_and_build_folders_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    ours_dead = [tmp_path / f".step_00000003.safetensors.{dead}.abc_12.tmp", tmp_path / f".data.building-{dead}"]
    kept = [tmp_path / f".step_00000003.safetensors.{alive}.xyz.tmp", tmp_path / f".data.building-{alive}",
            tmp_path / "notes.tmp", tmp_path / f"report.{dead}.x.tmp", tmp_path / ".old-style.tmp"]
    for path in ours_dead + kept:
        if "building" in path.name:
            path.mkdir()
            (path / "file").write_text("x")
        else:
            path.write_text("x")
    assert sorted(remove_stale_leftovers(tmp_path)) == sorted(ours_dead)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in ours_dead)


def test_training_start_cleans_checkpoint_temp_files(bench, tmp_path):
    stale = tmp_path / "run" / "checkpoints" / f".step_00000002.safetensors.{_dead_pid()}.q1w2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    assert _train(bench, tmp_path / "run") == 0
    assert not stale.exists()


@pytest.mark.parametrize("verb", ["eval", "render"])
def test_eval_or_render_of_a_missing_run_creates_nothing(verb, tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main([verb, str(missing)]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert not missing.exists()


def test_atomic_files_get_the_mode_the_umask_allows(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    atomic_write_bytes(tmp_path / "b.json", b"{}")
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~old


def test_kill_before_the_first_checkpoint_logs_each_step_once(bench, tmp_path):
    spec = {"method": "nerface", "data": str(bench / "id00" / "mono"), "out": str(tmp_path / "run"),
            "config": {"iterations": 3, "checkpoint_every": 3, "log_every": 1}, "threads": torch.get_num_threads(),
            "kill_after_step": 2}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(HERE / "killresume.py"), str(tmp_path / "spec.json")], cwd=HERE.parent,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and RunDir(tmp_path / "run").latest_checkpoint() is None
    killresume.train({**spec, "kill_after_step": None})
    assert [r["step"] for r in RunDir(tmp_path / "run").metrics()] == [1, 2, 3]


# ---- Ctrl-C


def test_ctrl_c_during_train_says_where_the_checkpoint_is_and_how_to_resume(bench, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--method", "nerface", "--profile", "smoke", "--data", str(bench / "id00" / "mono"), "--out", str(out),
            "--steps", "100000"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    # SIGINT as a terminal's Ctrl-C finds it: a suite run as a background job of a non-interactive shell (nohup ... &)
    # starts with SIGINT ignored, and a child inherits that (Python then installs no KeyboardInterrupt handler)
    proc = subprocess.Popen([sys.executable, "-m", "persona", *argv], cwd=HERE.parent, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while RunDir(out).latest_checkpoint() is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    latest = RunDir(out).latest_checkpoint()
    assert f"last checkpoint: {latest[1]}" in err
    assert "resume with: python -m persona " + " ".join(argv) in err


def test_ctrl_c_message_of_prior_train_adds_resume_and_drops_force():
    text = __import__("persona.__main__", fromlist=["x"]).interrupted_message(["prior", "train", "--force", "--out", "a b"])
    assert text.splitlines()[-1] == "resume with: python -m persona prior train --out 'a b' --resume"
    text = __import__("persona.__main__", fromlist=["x"]).interrupted_message(
        ["notebooks", "--profile", "smoke", "-p", "force=true", "-p", "ks=[5]"])
    assert text.splitlines()[-1] == "resume with: python -m persona notebooks --profile smoke -p 'ks=[5]'"


# ---- thread counts


def test_thread_count_is_recorded_in_config_key_and_provenance(bench, tmp_path, monkeypatch):
    from persona import experiments, profiles, report
    from persona.data.dataset import FrameDataset

    assert _train(bench, tmp_path / "run") == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["torch_threads"] == torch.get_num_threads()
    assert report.provenance("smoke", [0], "g", False)["torch_threads"] == profiles.TORCH_THREADS["smoke"] == 1

    monkeypatch.setattr(experiments, "runs_root", lambda profile: tmp_path / "runs")
    seen = []
    monkeypatch.setattr("persona.baselines.nerf_core.NeRFBaseline.fit",
                        lambda self, train, run: seen.append(torch.get_num_threads()) or run.begin({"m": 1}))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tr = experiments.trained("nerface", {"iterations": 2}, FrameDataset(bench / "id00" / "mono", "train"), "smoke")
        assert seen == [1] and tr.threads == 1 and torch.get_num_threads() == 2  # trained with 1, restored after
    finally:
        torch.set_num_threads(before)
    done = json.loads((tr.run.root / "done.json").read_text())
    assert done["key"]["torch_threads"] == 1


def test_data_build_removes_building_folders_of_killed_builds(tmp_path):
    from persona.data import world as S
    from test_resume_kill import TINY

    stale, live = tmp_path / f".tiny.building-{_dead_pid()}", tmp_path / f".tiny.building-{os.getpid()}x"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "half.png").write_bytes(b"x")
    S.build_benchmark(tmp_path / "tiny", "smoke", seed=0, config=TINY)
    assert not stale.exists() and live.exists()  # the second does not match our pattern: kept


def test_config_for_is_the_one_builder():
    """profiles.config_for: the profile's row, overrides checked, unknown profile/field an error."""
    from persona.baselines import fomm, nerface
    from persona.errors import PersonaInputError
    from persona.profiles import config_for

    assert config_for(nerface.PROFILES, "smoke", {"iterations": 3, "lr": None}) == replace(nerface.PROFILES["smoke"], iterations=3)
    assert config_for(nerface.PROFILES, "default", {"profile": "smoke"}).profile == "smoke"  # overrides pick the profile
    assert config_for(fomm.PROFILES, "smoke", {"scales": [1.0, 0.5]}).scales == (1.0, 0.5)  # JSON lists -> tuples
    with pytest.raises(PersonaInputError, match="unknown profile"):
        config_for(nerface.PROFILES, "tiny")
    with pytest.raises(PersonaInputError, match="unknown profile"):
        nerface.build_method({"profile": "fast"})  # no silent fallback to "default"
    with pytest.raises(PersonaInputError, match=r"NerfaceConfig: unknown field\(s\) \['stepz'\]"):
        config_for(nerface.PROFILES, "smoke", {"stepz": 3})
    with pytest.raises(PersonaInputError, match="iterations"):
        config_for(nerface.PROFILES, "smoke", {"iterations": -1})
