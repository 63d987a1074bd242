"""The compiled tri-plane sampler (persona/eg3d/triplane_kernel.c): PyTorch's values, deterministic,
and PyTorch's path whenever it cannot or must not run."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from persona.eg3d import triplane_kernel as tk
from persona.eg3d.rendering import render_planes, sample_planes

needs_kernel = pytest.mark.skipif(tk.library() is None, reason="no C compiler here: PyTorch's path only")


def planes_and_points(seed: int = 0, batch: int = 2, channels: int = 5, size: int = 9, points: int = 700):
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(batch, 3, channels, size, size + 2, generator=g)  # H != W: the axes must not be swapped
    pts = torch.rand(batch, points, 3, generator=g) * 2.6 - 1.3  # some outside the box: zero padding
    pts[0, :4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]])
    return planes, pts


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_equals_grid_sample_and_the_plane_mean_forward_and_backward(threads):
    planes, pts = planes_and_points()
    box_warp = 1.7
    scaled = pts * (2.0 / box_warp)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = planes.clone().requires_grad_(True)
        got = tk.sample_planes_mean(a, scaled)
        grad_out = torch.randn_like(got)
        (got_grad,) = torch.autograd.grad(got, a, grad_out)
    finally:
        torch.set_num_threads(before)
    b = planes.clone().requires_grad_(True)
    want = sample_planes(b, pts, box_warp).mean(1)
    (want_grad,) = torch.autograd.grad(want, b, grad_out)
    finite = ~torch.isnan(pts).any(-1)  # grid_sample's NaN handling is its own; ours: no corner, zero
    assert torch.allclose(got[finite], want[finite], atol=2e-6)
    assert torch.equal(got[~finite], torch.zeros_like(got[~finite]))
    assert got.shape == (2, 700, 5) and got_grad.shape == planes.shape
    assert torch.allclose(got_grad, want_grad.nan_to_num(), atol=2e-6)


@needs_kernel
def test_kernel_results_do_not_depend_on_the_thread_count():
    planes, pts = planes_and_points(seed=1, points=5000)
    out = []
    for threads in (1, 2, 3):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            a = planes.clone().requires_grad_(True)
            y = tk.sample_planes_mean(a, pts)
            (grad,) = torch.autograd.grad(y, a, torch.ones_like(y))
        finally:
            torch.set_num_threads(before)
        out.append((y, grad))
    assert all(torch.equal(y, out[0][0]) and torch.equal(g, out[0][1]) for y, g in out)


@needs_kernel
def test_render_planes_uses_the_kernel_where_it_applies_and_pytorch_elsewhere(monkeypatch):
    """The rendered rays agree with PyTorch's path; a learned camera (points needing a gradient),
    float64 and PERSONA_NATIVE=0 take PyTorch's path."""
    from persona.eg3d.triplane import OSGDecoder

    torch.manual_seed(0)
    decoder = OSGDecoder(6, hidden=8, output_dim=4)
    planes = torch.randn(1, 3, 6, 16, 16)
    origins = torch.tensor([[[0.0, 0.0, 2.7]]]).expand(1, 20, 3)
    directions = torch.nn.functional.normalize(torch.randn(1, 20, 3) * 0.1 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    kw = dict(ray_start=2.2, ray_end=3.3, depth_resolution=6, depth_resolution_importance=6, box_warp=1.0)
    calls = []
    real = tk.sample_planes_mean
    monkeypatch.setattr("persona.eg3d.rendering.sample_planes_mean", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(1)
    fast = render_planes(planes, decoder, origins, directions, **kw)
    assert calls
    monkeypatch.setenv(tk.OPT_OUT, "0")
    tk.library.cache_clear()
    try:
        calls.clear()
        torch.manual_seed(1)
        slow = render_planes(planes, decoder, origins, directions, **kw)
        assert not calls
    finally:
        monkeypatch.delenv(tk.OPT_OUT)
        tk.library.cache_clear()
    for x, y in zip(fast, slow):
        assert torch.allclose(x, y, atol=1e-5)
    assert not tk.kernel_applies(planes, origins.clone().requires_grad_(True))
    assert not tk.kernel_applies(planes.double(), origins.double())
    assert tk.kernel_applies(planes, origins)


def test_without_a_compiler_it_says_so_once_and_samples_with_pytorch(tmp_path):
    """CC pointing at nothing: one line on stderr naming the reason, and rendering still works."""
    code = ("import torch; from persona.eg3d import triplane_kernel as tk; from persona.eg3d.rendering import sample_planes;"
            "assert tk.library() is None and tk.library() is None;"
            "p = torch.randn(1, 3, 2, 4, 4); x = torch.rand(1, 5, 3);"
            "assert not tk.kernel_applies(p, x); print(sample_planes(p, x, 1.0).shape)")
    env = {"PATH": "/usr/bin:/bin", "CC": "no-such-compiler-xyz", "PERSONA_CACHE": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "tri-plane kernel" in line]
    assert len(lines) == 1 and "no-such-compiler-xyz" in lines[0] and "grid_sample" in lines[0]
    assert "torch.Size([1, 3, 5, 2])" in result.stdout
    assert not any((tmp_path / "kernels").glob("*.so"))


@needs_kernel
def test_build_is_cached_and_never_leaves_a_partial_library(tmp_path):
    first = tk.build(directory=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert tk.build(directory=tmp_path) == first and first.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left beside it
    broken = tmp_path / "cc-that-fails"
    broken.write_text("#!/bin/sh\necho 'error: the compiler broke' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(RuntimeError, match="the compiler broke"):
        tk.build(compiler=str(broken), directory=tmp_path / "other")
    assert not any((tmp_path / "other").iterdir())


@needs_kernel
def test_a_forked_child_does_not_inherit_the_parents_thread_pool():
    """A forked child (e.g. a DataLoader worker) has none of the parent's pool threads: the pool cache is
    cleared in the child, so its first sampling makes a new pool instead of waiting on dead threads."""
    import os

    planes, pts = planes_and_points(points=3000)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tk.sample_planes_mean(planes, pts)  # the parent's pool now exists
    finally:
        torch.set_num_threads(before)
    assert tk._pool.cache_info().currsize >= 1
    pid = os.fork()
    if pid == 0:  # the child: no torch work here (torch's own thread pools are not fork-safe)
        os._exit(0 if tk._pool.cache_info().currsize == 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tk._pool.cache_info().currsize >= 1  # the parent keeps its own
