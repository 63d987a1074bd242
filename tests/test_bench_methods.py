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
    result = bench.bench_case(case, "smoke", StandinFrames(6), StandinFrames(4, seed=1, first_index=100), steps=4, repeats=1,
                              work=tmp_path)
    assert set(result) == {"train_s", "train_flops", "render_s", "render_flops"}
    assert result["train_flops"] > 0 and result["render_flops"] > 0 and result["render_s"] > 0 and result["train_s"] >= 0
    table = bench.markdown_table([{"label": case.label, **result}], peak_gflops=50.0)
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(bench.COLUMNS) + " |" and lines[2].startswith(f"| {case.label} |")
    assert len(lines[2].split("|")) == len(bench.COLUMNS) + 2


def test_bench_rejects_unknown_methods_and_too_few_steps():
    from persona.errors import PersonaInputError

    with pytest.raises(PersonaInputError, match="--methods nosuch"):
        bench.main(["--methods", "nosuch", "--data", "/nonexistent"])
    with pytest.raises(PersonaInputError, match="--steps 2"):
        bench.bench_case(bench.CASES[4], "smoke", StandinFrames(4), StandinFrames(2), steps=2)
