"""python -m persona bench methods: every method case runs, and the table reports what it measured."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from persona import bench

sys.path.insert(0, str(Path(__file__).parent))
from test_baselines_nerf import StandinFrames  # noqa: E402  (a 16 px FrameDataset stand-in)


def test_cases_cover_every_registered_method():
    from persona.methods import REGISTRY

    assert {c.method for c in bench.CASES} == set(REGISTRY)
    assert len(set(bench.case_names())) == len(bench.CASES)


@pytest.mark.parametrize("name", ["nerface", "dfrf"])
def test_bench_case_measures_a_nerf_baseline(name, tmp_path):
    case = next(c for c in bench.CASES if c.method == name)
    torch.manual_seed(0)
    result = bench.bench_case(case, "smoke", StandinFrames(6), StandinFrames(4, seed=1, first_index=100), steps=8, repeats=1,
                              work=tmp_path)
    assert set(result) == {"train_s", "train_flops", "matmul_share", "render_s", "render_flops"}
    assert result["train_flops"] > 0 and result["render_flops"] > 0 and result["render_s"] > 0 and result["train_s"] >= 0
    assert 0 < result["matmul_share"] < 1  # a NeRF step also samples, sorts and composites
    table = bench.markdown_table([{"label": case.label, **result}], peak_gflops=50.0)
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(bench.COLUMNS) + " |" and lines[2].startswith(f"| {case.label} |")
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert len(cells) == len(bench.COLUMNS)
    row = dict(zip(bench.COLUMNS, cells))
    # the matmul-only bound is the step's share of the peak divided by its matmul time share
    assert float(row["matmul time %"]) == pytest.approx(100 * result["matmul_share"], abs=0.5)
    if result["train_s"] > 0:
        assert float(row["train % peak if only matmuls"]) == pytest.approx(float(row["train % peak"]) / result["matmul_share"], rel=0.05, abs=0.1)


def test_the_matmul_time_share_counts_only_matmul_kernels():
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def work():
        for _ in range(3):
            a @ b  # matmul
        torch.sort(torch.randn(200_000))  # not a matmul

    total, matmul = bench._operator_seconds(work)
    assert 0 < matmul < total
    total_mm, matmul_mm = bench._operator_seconds(lambda: a @ b)
    assert matmul_mm == pytest.approx(total_mm, rel=0.2)  # a bare matmul is almost all matmul kernel time


def test_a_preempted_profile_pair_is_measured_again_in_fresh_folders(tmp_path, monkeypatch):
    """A short fit slowed on a shared machine can leave the pair's non-matmul difference <= 0 (a
    share of 1.0, seen in CI): that pair is measured again, and none valid gives nan, not 1.0."""
    folders = []
    monkeypatch.setattr(bench, "_fit", lambda case, cfg, train, root: folders.append(root.name))
    readings = iter([(0.5, 0.01), (0.55, 0.10),  # preempted short fit: non-matmul difference < 0
                     (0.1, 0.02), (0.5, 0.12)])  # a valid pair: 0.10 of 0.40
    monkeypatch.setattr(bench, "_operator_seconds", lambda fn: (fn(), next(readings))[1])
    case = next(c for c in bench.CASES if c.method == "dfrf")
    assert bench.matmul_time_share(case, "smoke", None, 8, tmp_path) == pytest.approx(0.25)
    assert folders == ["profile-warm", "profile-short-0", "profile-full-0", "profile-short-1", "profile-full-1"]
    readings = iter([(0.5, 0.01), (0.55, 0.10)] * 2)
    assert bench.math.isnan(bench.matmul_time_share(case, "smoke", None, 8, tmp_path, attempts=2))


def test_the_table_says_n_a_where_no_matmul_share_was_measured():
    row = {"label": "PTI", "train_s": 0.1, "train_flops": 1e9, "matmul_share": float("nan"), "render_s": 1.0, "render_flops": 1e9}
    cells = [c.strip() for c in bench.markdown_table([row], peak_gflops=50.0).splitlines()[2].split("|")[1:-1]]
    row_cells = dict(zip(bench.COLUMNS, cells))
    assert row_cells["matmul time %"] == "n/a" and row_cells["train % peak if only matmuls"] == "n/a"
    assert row_cells["train % peak"] == "20.0"


def test_bench_rejects_unknown_methods_and_too_few_steps():
    from persona.errors import PersonaInputError

    with pytest.raises(PersonaInputError, match="--methods nosuch"):
        bench.main(["--methods", "nosuch", "--data", "/nonexistent"])
    with pytest.raises(PersonaInputError, match="--steps 2"):
        bench.bench_case(bench.CASES[4], "smoke", StandinFrames(4), StandinFrames(2), steps=2)


def test_train_repeats_time_separate_fits_and_take_the_median(tmp_path, monkeypatch):
    """--train-repeats N: N timed fits, each in a folder of its own (a shared one would resume the
    finished run and time nothing), and the median of their step times."""
    calls = []

    def fake(case, profile, train, steps, work):
        calls.append(work)
        return [0.3, 0.1, 0.2][len(calls) - 1], object()

    monkeypatch.setattr(bench, "timed_train_step", fake)
    monkeypatch.setattr(bench, "_prepare_render", lambda *a: None)
    monkeypatch.setattr(bench, "_render_once", lambda *a: None)
    monkeypatch.setattr(bench, "_timed_renders", lambda *a: 0.01)
    monkeypatch.setattr(bench, "_one_frame", lambda test: {})
    case = next(c for c in bench.CASES if c.method == "nerface")
    result = bench.time_case(case, "smoke", StandinFrames(6), StandinFrames(4), steps=4, repeats=1, work=tmp_path, train_repeats=3)
    assert len(calls) == 3 and len(set(calls)) == 3
    assert result == {"train_s": pytest.approx(0.2), "render_s": 0.01}


def test_every_case_is_timed_before_any_is_profiled(tmp_path, monkeypatch):
    """bench methods times all cases first, then profiles and counts them: torch.profiler leaves
    threads whose CPU time the process clock would add to the cases timed after it."""
    events = []
    monkeypatch.setattr(bench, "_datasets", lambda data, video: (None, None))
    monkeypatch.setattr(bench, "time_case", lambda case, *a, **k: events.append(("time", case.label)) or {"train_s": 0.1, "render_s": 0.1})
    monkeypatch.setattr(bench, "count_case", lambda case, *a, **k: events.append(("count", case.label)) or
                        {"train_flops": 1e9, "matmul_share": 0.5, "render_flops": 1e8})
    import persona.eg3d.bench as eg3d_bench
    monkeypatch.setattr(eg3d_bench, "matmul_gflops", lambda *a, **k: events.append(("peak", "")) or 100.0)
    assert bench.main(["--methods", "ours-3dmm,ours-audio", "--data", str(tmp_path), "--steps", "4"]) == 0
    kinds = [kind for kind, _ in events]
    assert kinds == ["peak", "time", "time", "peak", "count", "count"], events


def test_a_case_with_a_noisy_setup_times_at_least_its_min_steps(monkeypatch, tmp_path):
    """NHA tracks its mesh in every fit; ten timed steps drown in that setup's noise (they read 0 ms),
    so its timed fit is at least Case.min_steps long and the step time divides by that count."""
    case = next(c for c in bench.CASES if c.method == "nha")
    assert case.min_steps >= 50
    fits = []
    monkeypatch.setattr(bench, "_fit", lambda c, cfg, train, work: fits.append(cfg["iterations"]) or (object(), None))
    clock = iter([0.0, 1.0, 1.0, 2.0 + 0.05 * (case.min_steps - 2)])  # short fit 1 s, the full one 1 s + its steps
    monkeypatch.setattr(bench, "CLOCK", [lambda: next(clock)])
    seconds, _ = bench.timed_train_step(case, "smoke", None, 10, tmp_path)
    assert fits == [2, 2, case.min_steps] and seconds == pytest.approx(0.05)
