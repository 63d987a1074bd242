"""``persona bench gpu`` and ``bench paper``'s bookkeeping, on the CPU (the GPU numbers come from a lent device)."""

from __future__ import annotations

import json

import pytest
import torch

from persona.errors import PersonaInputError
from persona.precision import autocast, tf32_flags


def test_tf32_flags_set_and_restore_and_bf16_autocast_runs_matmuls_in_bf16():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with tf32_flags("tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with tf32_flags("fp32"):  # PyTorch's default leaves cuDNN's TF32 on: fp32 means off
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    a = torch.randn(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("tf32", torch.device("cpu")):
        assert (a @ a).dtype == torch.float32
    with pytest.raises(ValueError, match="precision 'fp16'"):
        autocast("fp16", torch.device("cpu"))


def test_bench_gpu_on_the_cpu_writes_every_part(tmp_path):
    """The command end to end at the tiny preset: matmul peaks, ours' two stages per batch and
    precision timed by the trainer's clock with bf16's first loss beside fp32's, and the generator's
    forward and forward+backward rows."""
    from persona.gpu_bench import main

    out = tmp_path / "gpu.json"
    assert main(["--device", "cpu", "--preset", "tiny", "--profile", "smoke", "--batches", "2", "--precisions", "fp32,bf16",
                 "--warmup", "1", "--steps", "2", "--repeats", "1", "--out", str(out), "--workdir", str(tmp_path / "w")]) == 0
    report = json.loads(out.read_text())
    assert set(report["peaks"]) == {"fp32_tflops", "bf16_tflops"} and all(v > 0 for v in report["peaks"].values())
    ours = {r["precision"]: r for r in report["ours"]}
    assert set(ours) == {"fp32", "bf16"} and not any("error" in r for r in ours.values())
    assert all(r["stage1_ms"] > 0 and r["stage2_ms"] > 0 and r["peak_gib"] is None for r in ours.values())
    assert abs(ours["bf16"]["loss_step1"] - ours["fp32"]["loss_step1"]) < 0.05 * ours["fp32"]["loss_step1"]
    cells = {(r["code"], r["precision"], r["mode"], r["batch"]) for r in report["generator"] if "ms" in r}
    assert cells == {("persona", p, m, b) for p in ("fp32", "bf16") for m, b in (("forward", 1), ("forward+backward", 2))}
    fp32 = [r for r in report["generator"] if r["precision"] == "fp32" and r["mode"] == "forward"][0]
    assert fp32["max_abs_diff_vs_persona_fp32"] == 0.0
    assert report["wall_seconds"] > 0


def test_bench_gpu_refuses_bad_flags_in_one_line(tmp_path):
    from persona.gpu_bench import main

    with pytest.raises(PersonaInputError, match="fp16 unknown"):
        main(["--device", "cpu", "--precisions", "fp32,fp16"])
    with pytest.raises(PersonaInputError, match="expected comma-separated positive integers"):
        main(["--device", "cpu", "--batches", "2,x"])
    with pytest.raises(PersonaInputError, match="no training/triplane.py"):
        main(["--device", "cpu", "--official-dir", str(tmp_path)])


def test_stage_step_times_come_from_the_trainers_clock(tmp_path):
    from persona.gpu_bench import _stage_step_ms

    # steps 1-5 frozen at 10 ms a step after a slow first one, steps 6-10 at 30 ms
    clock, rows = 0.0, []
    for step in range(1, 11):
        clock += 1.0 if step in (1, 6) else (0.010 if step <= 5 else 0.030)
        rows.append({"step": step, "train_seconds": clock, "loss": float(11 - step)})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s1, s2, first, tail = _stage_step_ms(tmp_path / "metrics.jsonl", frozen=5, warmup=1)
    assert s1 == pytest.approx(10.0) and s2 == pytest.approx(30.0) and first == 10.0 and tail == pytest.approx(1.5)


def test_bench_paper_keeps_going_past_a_failing_method_and_writes_what_it_measured(tmp_path, monkeypatch, capsys):
    import persona.data.dataset
    import persona.data.real_layouts
    import persona.eg3d
    import persona.eg3d.release_format
    from persona import paper_bench

    monkeypatch.setattr(persona.data.real_layouts, "write_real_layouts", lambda *a, **k: ([tmp_path], [tmp_path]))
    monkeypatch.setattr(persona.data.dataset, "FrameDataset", lambda *a, **k: None)
    monkeypatch.setattr(persona.eg3d, "build_generator", lambda *a, **k: None)
    monkeypatch.setattr(persona.eg3d.release_format, "write_release_pickle", lambda G, path, **k: path)

    def fit_seconds(method, cfg, train, run_dir, iterations):
        if method == "nerface":
            raise RuntimeError("CUDA error: an illegal memory access")
        return float(iterations)

    monkeypatch.setattr(paper_bench, "_fit_seconds", fit_seconds)
    work = tmp_path / "work"
    monkeypatch.setattr(paper_bench.tempfile, "mkdtemp", lambda **k: str(work.mkdir() or work))
    out = tmp_path / "paper.json"
    assert paper_bench.main(["--device", "cpu", "--methods", "NerFACE", "FOMM", "--steps", "2", "--out", str(out)]) == 1
    assert not work.exists()  # its own temporary folder removed; --workdir is kept
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["FOMM"] and report["methods"]["FOMM"]["seconds_per_step"] == pytest.approx(1.0)
    assert "illegal memory access" in report["failed"]["NerFACE"]
    assert "not in the projection (failed): NerFACE" in capsys.readouterr().out


def test_built_extensions_are_registered_under_their_name_for_the_official_import(monkeypatch):
    """The official custom_ops imports a plugin by name after ``cpp_extension.load``, which PyTorch
    2.x no longer registers: the bench's shim does, once, whatever the call's spelling."""
    import sys
    import types

    import torch.utils.cpp_extension as extension

    from persona.gpu_bench import register_built_extensions

    made = types.ModuleType("fake_plugin")
    monkeypatch.setattr(extension, "load", lambda name, *a, **k: made)
    monkeypatch.delitem(sys.modules, "fake_plugin", raising=False)
    register_built_extensions()
    register_built_extensions()  # idempotent: wraps once
    assert extension.load(name="fake_plugin", sources=[]) is made
    assert sys.modules["fake_plugin"] is made
    monkeypatch.delitem(sys.modules, "fake_plugin")
