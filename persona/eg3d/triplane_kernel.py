"""The compiled tri-plane sampler (issue #16): ``triplane_kernel.c``, built on first use with the
system's C compiler and loaded with ctypes; PyTorch's ``grid_sample`` when it cannot be.

Why: on the CPU, ``grid_sample``'s backward and forward were the two largest non-matmul operators of ours'
training step (~20 % of the profiled operator time of a default-profile step, and the channels-last copies
feeding them another ~10 %), because PyTorch's kernel gathers and scatters one channel at a time. The C kernel walks the points once with each texel's
channels contiguous, fuses the mean over the three planes that the decoder takes next, and returns
the same values to float rounding (tests compare them). EG3D's release does the same for its CUDA
ops (``torch_utils/custom_ops.py``: built on first use, reference PyTorch ops when the build fails).

- :func:`sample_planes_mean`: planes [B,3,C,H,W], points [B,M,3] -> features [B,M,C], the mean over the
  planes of :func:`persona.eg3d.rendering.sample_planes`; differentiable w.r.t. the planes.
- :func:`kernel_applies`: whether it runs for these tensors (CPU, float32, the points need no
  gradient, the library built); else the caller samples with PyTorch.
- Built once per machine into ``$PERSONA_CACHE/kernels`` (default ``~/.cache/persona/kernels``),
  keyed by the source, the compiler and the flags; written to a temporary name and renamed, so a
  half-written library is never loaded. The compiler is ``$CC`` or ``cc``.
  ``PERSONA_NATIVE=0`` never builds or uses it (PyTorch's path, as before).
- Threads: ``torch.get_num_threads()`` Python threads run disjoint parts (ctypes releases the GIL);
  each part sums in a fixed order, so the results do not depend on the thread count.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("triplane_kernel.c")
OPT_OUT = "PERSONA_NATIVE"  # =0: PyTorch's grid_sample only
CACHE_ENV = "PERSONA_CACHE"
FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")


def cache_dir() -> Path:
    """Where built kernels live: ``$PERSONA_CACHE/kernels``, else ``$XDG_CACHE_HOME/persona/kernels``,
    else ``~/.cache/persona/kernels``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "persona")
    return Path(root) / "kernels"


def disabled() -> bool:
    return os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "off", "false", "no")


def build(compiler: str | None = None, directory: Path | None = None) -> Path:
    """Compile ``triplane_kernel.c`` (once; the cached library when it exists) -> the library's path.
    Raises RuntimeError with the compiler's message when it fails."""
    compiler = compiler or os.environ.get("CC") or "cc"
    path = shutil.which(compiler)
    if path is None:
        raise RuntimeError(f"no C compiler {compiler!r} on PATH (set CC)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, path.encode(), " ".join(FLAGS).encode(), platform.machine().encode(),
                                     sys.platform.encode()])).hexdigest()[:16]
    directory = directory or cache_dir()
    target = directory / f"triplane_kernel-{key}.so"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".triplane_kernel-", suffix=".so.tmp", dir=directory)
    os.close(fd)
    try:
        result = subprocess.run([path, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(f"{compiler} {SOURCE.name} failed: {message[0] if message else f'exit {result.returncode}'}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (``PERSONA_NATIVE=0``, or it could not be built: said once)."""
    if disabled():
        return None
    try:
        lib = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"persona: the tri-plane kernel is not available ({error}); sampling with PyTorch's grid_sample "
              f"(the same values, slower). {OPT_OUT}=0 silences this.", file=sys.stderr)
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.triplane_sample_mean.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64]
    lib.triplane_sample_mean.restype = None
    lib.triplane_sample_mean_backward.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, i64]
    lib.triplane_sample_mean_backward.restype = None
    return lib


def kernel_applies(planes: torch.Tensor, points: torch.Tensor) -> bool:
    """Whether :func:`sample_planes_mean` runs the kernel for these tensors: CPU float32, points that
    need no gradient (the camera is not being learned), and the library available."""
    return (planes.device.type == "cpu" and points.device.type == "cpu" and planes.dtype == torch.float32
            and points.dtype == torch.float32 and not points.requires_grad and library() is not None)


@functools.lru_cache(maxsize=8)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="persona-triplane")


if hasattr(os, "register_at_fork"):  # a forked child (e.g. a DataLoader worker) has none of the parent's threads
    os.register_at_fork(after_in_child=_pool.cache_clear)


def _run(tasks: list) -> None:
    threads = min(torch.get_num_threads(), len(tasks))
    if threads <= 1:
        for task in tasks:
            task()
    else:
        list(_pool(threads).map(lambda task: task(), tasks))


class _SampleMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        lib = library()
        batch, n_planes, channels, h, w = planes.shape
        texels = planes.detach().permute(0, 1, 3, 4, 2).contiguous()  # [B,3,H,W,C]
        points = points.detach().contiguous()
        n = points.shape[1]
        out = torch.empty(batch, n, channels, dtype=torch.float32)
        parts = max(1, torch.get_num_threads())
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        _run([functools.partial(lib.triplane_sample_mean, texels.data_ptr(), points.data_ptr(), out.data_ptr(), b, m0, m1, n, h, w,
                                channels) for b in range(batch) for m0, m1 in zip(bounds[:-1], bounds[1:]) if m1 > m0])
        ctx.save_for_backward(points)
        ctx.shape = (batch, n_planes, channels, h, w)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        lib = library()
        (points,) = ctx.saved_tensors
        batch, n_planes, channels, h, w = ctx.shape
        grad = grad.contiguous()  # float32: the forward's output dtype
        texels = torch.zeros(batch, n_planes, h, w, channels, dtype=torch.float32)
        _run([functools.partial(lib.triplane_sample_mean_backward, grad.data_ptr(), points.data_ptr(), texels.data_ptr(), b,
                                points.shape[1], h, w, channels) for b in range(batch)])
        return texels.permute(0, 1, 4, 2, 3), None


def sample_planes_mean(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """planes [B,3,C,H,W], points [B,M,3] already scaled by 2/box_warp -> the mean over the planes of
    the bilinear samples [B,M,C] (zero outside; grid_sample's align_corners=False). Call only where
    :func:`kernel_applies`."""
    if planes.dim() != 5 or planes.shape[1] != 3 or points.dim() != 3 or points.shape[-1] != 3 or points.shape[0] != planes.shape[0]:
        raise ValueError(f"sample_planes_mean: planes [B,3,C,H,W] and points [B,M,3] expected, got {list(planes.shape)} "
                         f"and {list(points.shape)}")
    return _SampleMean.apply(planes, points)
