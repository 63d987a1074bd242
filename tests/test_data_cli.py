"""The data figure command and the renderer benchmark."""

import numpy as np

from persona.data import bench, cli
from persona.data import formats as F


def test_figure_writes_png_and_pdf(tmp_path):
    out = tmp_path / "figs" / "overview.png"
    assert cli.main_figure(["--out", str(out), "--identities", "2", "--resolution", "24"]) == 0
    assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    img = F.read_image(out)
    assert img.shape[0] > 100 and img.shape[1] > 300 and img.std() > 20  # a grid of faces, not blank


def test_renderer_benchmark_counts_frames():
    r = bench.measure(16, 4, seconds=0.05)
    assert r["frames"] >= 4 and r["fps_wall"] > 0 and r["fps_cpu"] > 0 and r["resolution"] == 16
    assert np.isfinite(r["fps_cpu"])
