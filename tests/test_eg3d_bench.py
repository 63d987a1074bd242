"""``python -m persona bench generator`` prints one row per preset and batch with positive numbers."""

from __future__ import annotations

from persona.eg3d import bench


def test_bench_prints_a_row_per_batch(capsys):
    assert bench.main(["--presets", "tiny", "--batches", "1", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "plain fp32 matmul" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("tiny")]
    assert [int(r[1]) for r in rows] == [1]
    for row in rows:
        params_m, fwd_ms, fwd_bwd_ms, gflop_per_image = map(float, row[2:6])
        assert 0.1 < params_m < 5 and fwd_ms > 0 and fwd_bwd_ms > 0 and gflop_per_image > 0.1


def test_bench_official_without_a_checkout_skips_or_names_the_folder(capsys, tmp_path):
    """``bench official`` never needs the official code: without --official-dir it says so and
    stops; a folder without training/triplane.py is refused naming it."""
    import pytest

    from persona.eg3d import bench_official
    from persona.errors import PersonaInputError

    assert bench_official.main([]) == 0
    assert "skipped, no --official-dir" in capsys.readouterr().out
    with pytest.raises(PersonaInputError, match="no training/triplane.py"):
        bench_official.main(["--official-dir", str(tmp_path)])
