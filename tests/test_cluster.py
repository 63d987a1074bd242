"""Runs spread over a cluster: planning writes one job spec per missing run, submitit's local
executor trains them in separate processes, and the notebooks' tables collected from the cache
equal the single-machine ones. The run lock holds without flock (shared filesystems)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from persona import cluster, report, tables
from persona import experiments as ex

pytest.importorskip("submitit")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from persona.data.real_layouts import write_real_layouts

    nerface, _ = write_real_layouts(tmp_path_factory.mktemp("data"), 1, train_frames=2, test_frames=2,
                                    nerface_resolution=32, adnerf_resolution=16)
    return nerface[0]


SHORT = {"iterations": 2, "frozen_iterations": 1, "checkpoint_every": 2, "sample_every": 2}
ROWS = [tables.Row("Ours 3DMM", "ours", {"modality": "3dmm", **SHORT}), tables.Row("Ours RGB", "ours", {"modality": "rgb", **SHORT})]


def _table(per_frame):
    return report.results_table(per_frame, ["psnr", "ssim"], [r.label for r in ROWS], novel=False)


def _submitit_local(specs, tmp_path):
    return cluster.submit_and_wait(specs, cluster.make_executor("local", tmp_path / "submitit", timeout_min=10, cpus_per_job=1),
                                   progress=False)


def _pool_of_two(specs, tmp_path):  # notebooks' --jobs 2 trains ahead this way
    return cluster.train_pool(specs, 2, progress=False)


@pytest.mark.slow  # two job processes (torch import each) and four short trainings
@pytest.mark.parametrize("launch", [_submitit_local, _pool_of_two], ids=["submitit-local", "train-pool"])
def test_local_jobs_give_the_single_machine_tables(video, tmp_path, monkeypatch, launch):
    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / "cluster-runs" / profile)
    plan = tmp_path / "plan"
    monkeypatch.setenv(ex.PLAN_ENV, str(plan))
    with pytest.raises(ex.RunsDeferred) as deferred:
        tables.compare(ROWS, [video], "smoke", novel=False)
    specs = cluster.read_specs(plan)
    assert len(deferred.value.runs) == 2 and sorted(s["run"].rsplit("/", 1)[1] for s in specs) == sorted(deferred.value.runs)
    assert not list((tmp_path / "cluster-runs").glob("smoke/*/done.json"))  # planning trains nothing

    monkeypatch.delenv(ex.PLAN_ENV)
    results = launch(specs, tmp_path)
    assert len({r["pid"] for r in results}) == 2 and os.getpid() not in {r["pid"] for r in results}
    done = {r["run"]: json.loads((tmp_path / "cluster-runs" / "smoke" / r["run"].rsplit("/", 1)[1] / "done.json").read_text())
            for r in results}
    assert len(done) == 2

    collected, timings, _ = tables.compare(ROWS, [video], "smoke", novel=False)  # loads from the cache, trains nothing
    assert sorted(timings["train_seconds"]) == sorted(d["train_seconds"] for d in done.values())

    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / "single-runs" / profile)
    single, _, _ = tables.compare(ROWS, [video], "smoke", novel=False)
    assert _table(collected).equals(_table(single))
    metrics = ["psnr", "ssim", "lpips"]
    a = collected.sort_values(["method", "index"] if "index" in collected else ["method"])[metrics].to_numpy()
    b = single.sort_values(["method", "index"] if "index" in single else ["method"])[metrics].to_numpy()
    assert (a == b)[~(a != a)].all()  # identical to the last bit (NaN LPIPS aside)


def test_the_pool_takes_the_longest_runs_first(video):
    spec = {"method": "ours", "data": str(video), "split": "train", "profile": "smoke", "run": "r", "threads": 1}
    short, long = ({**spec, "cfg": {"modality": "3dmm", "profile": "smoke", "iterations": n, "frozen_iterations": 1}} for n in (2, 20))
    assert cluster.estimated_seconds(short) > 0
    assert cluster.estimated_seconds(long) == pytest.approx(10 * cluster.estimated_seconds(short))
    assert cluster.estimated_seconds({**spec, "method": "nonesuch", "cfg": {}}) == 0.0


def test_a_job_refuses_a_spec_that_names_another_run(video, tmp_path, monkeypatch):
    from persona.errors import PersonaInputError

    monkeypatch.setattr(ex, "runs_root", lambda profile: tmp_path / profile)
    spec = {"method": "ours", "cfg": {"modality": "3dmm", "profile": "smoke"}, "data": str(video), "split": "train",
            "profile": "smoke", "run": str(tmp_path / "smoke" / "ours-id00-000000000000"), "threads": 1}
    with pytest.raises(PersonaInputError, match="expected the same name"):
        cluster.run_job(spec)
    with pytest.raises(PersonaInputError, match="--slurm-partition: missing"):
        cluster.make_executor("slurm", tmp_path / "submitit")


def _write_lock(path, host, pid, age_s=0.0):
    path.write_text(json.dumps({"host": host, "pid": pid}))
    if age_s:
        old = time.time() - age_s
        os.utime(path, (old, old))


def test_run_lock_is_a_lock_file_with_a_stale_rule(tmp_path):
    run = tmp_path / "ours-id00-abc"
    lock = tmp_path / "ours-id00-abc.excl-lock"
    with ex.run_lock(run):
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert not lock.exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    _write_lock(lock, socket.gethostname(), int(dead))  # a dead holder on this host: stale at once
    with ex.run_lock(run, poll=0.01):
        pass
    _write_lock(lock, "another-node", 1, age_s=1000)  # another host, not refreshed for long: stale
    with ex.run_lock(run, poll=0.01, stale_after=600):
        pass

    _write_lock(lock, "another-node", 1)  # another host, fresh: wait for it
    got = threading.Event()

    def take():
        with ex.run_lock(run, poll=0.01, stale_after=600):
            got.set()

    waiter = threading.Thread(target=take)
    waiter.start()
    time.sleep(0.3)
    assert not got.is_set()
    lock.unlink()  # the other holder releases
    waiter.join(5)
    assert got.is_set() and not lock.exists()


def test_reproduce_sh_refuses_bad_launcher_flags():
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "reproduce.sh"
    for args, message in ((["--launcher", "pbs"], "unknown launcher 'pbs' (expected slurm or local)"),
                          (["--slurm-partition", "P"], "--slurm-partition needs --launcher slurm (or local)")):
        out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1


def test_train_ahead_trains_each_round_once_and_keeps_notebooks_complete_while_planning(tmp_path, monkeypatch):
    """Round 1: 01 and 02 lack runs a and b (02 asks for a too); round 2: 02's next table lacks c, 01
    completes; round 3: 02 completes. Each run is trained once; complete notebooks are moved where a
    normal run puts them and not planned again."""
    from persona import notebooks as nbr

    monkeypatch.setattr(cluster, "plan_dir", lambda profile: tmp_path / "runs" / profile / ".plan")
    monkeypatch.setattr(nbr, "executed_dir", lambda profile, name, extra=None: tmp_path / "executed" / profile)
    rounds = iter([({"01": ["a"], "02": ["a", "b"]}, []), ({"02": ["c"]}, ["01"]), ({}, ["02"])])
    planned, trained = [], []

    def fake_plan(names, profile, jobs, folder, extra=None):
        missing, complete = next(rounds)
        planned.append(list(names))
        finished = []
        for name in complete:
            (folder / "notebooks").mkdir(parents=True, exist_ok=True)
            (folder / "notebooks" / f"{name}.ipynb").write_text("{}")
            finished.append(nbr.NotebookResult(name, 1.0, folder / "notebooks" / f"{name}.ipynb"))
        runs = sorted({r for n in names for r in missing.get(n, [])})
        return [{"run": str(tmp_path / "runs" / r), "method": "ours", "cfg": {}, "profile": profile} for r in runs], finished

    def fake_pool(specs, workers, progress=True):
        trained.extend(Path(s["run"]).name for s in specs)
        return []

    from pathlib import Path

    monkeypatch.setattr(cluster, "plan_side_by_side", fake_plan)
    monkeypatch.setattr(cluster, "train_pool", fake_pool)
    count, completed = cluster.train_ahead(["01", "02"], "smoke", 2, progress=False)
    assert trained == ["a", "b", "c"] and count == 3
    assert planned == [["01", "02"], ["01", "02"], ["02"]]
    assert [r.name for r in completed] == ["01", "02"]
    assert all(r.output.parent == tmp_path / "executed" / "smoke" and r.output.is_file() for r in completed)


def test_one_notebook_with_jobs_2_still_trains_its_runs_two_at_a_time(monkeypatch):
    """`persona notebooks --only 02 --jobs 2` (a rerun such as -p train_seeds=[0,1,2]) trains ahead as a
    whole run does; without --jobs one notebook runs in this process, as before."""
    from pathlib import Path

    from persona import notebooks as nbr

    calls = []
    monkeypatch.setattr(cluster, "train_ahead", lambda names, profile, jobs, extra=None: (calls.append(("ahead", list(names), jobs)), (0, []))[1])
    monkeypatch.setattr(nbr, "run_parallel", lambda names, profile, jobs, extra=None: (calls.append(("parallel", list(names), jobs)), ([], []))[1])
    monkeypatch.setattr(nbr, "run_notebook", lambda name, profile, extra=None, progress=False: (
        calls.append(("alone", [name], 1)), nbr.NotebookResult(name, 1.0, Path("x.ipynb")))[1])

    assert nbr.main(["--profile", "smoke", "--only", "02", "--jobs", "2", "-p", "train_seeds=[0,1]"]) == 0
    assert calls == [("ahead", ["02_3dmm_reenactment"], 2), ("parallel", ["02_3dmm_reenactment"], 2)]
    calls.clear()
    assert nbr.main(["--profile", "smoke", "--only", "02"]) == 0
    assert calls == [("alone", ["02_3dmm_reenactment"], 1)]
