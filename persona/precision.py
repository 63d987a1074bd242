"""The numeric precision of a training step: ``fp32``, ``tf32`` or ``bf16``.

- ``fp32``: IEEE float32 throughout, TensorFloat-32 off for matmuls AND cuDNN convolutions
  (PyTorch's own default leaves it on for cuDNN convolutions, so "fp32" there is partly TF32).
- ``tf32``: float32 tensors, matmuls and convolutions on NVIDIA GPUs (Ampere and later) in
  TensorFloat-32 (10-bit mantissa products, float32 sums). Elsewhere the same as ``fp32``.
- ``bf16``: ``torch.autocast`` to bfloat16 over the forward pass and the loss (the ops autocast
  lists: matmuls, convolutions; reductions and losses stay float32); parameters, gradients and
  the optimizer stay float32, TF32 flags as ``fp32``. No loss scaling (bf16 has float32's range).

Only the TF32 flags of the older API (``allow_tf32``) are touched: PyTorch refuses a mix of the old
and the new (``fp32_precision``) API in one process.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def tf32_flags(precision: str) -> Iterator[None]:
    """TF32 on for matmuls and cuDNN convolutions inside the scope for ``tf32``, off for the
    others; the previous flags come back afterwards."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    on = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 on ``device`` for ``bf16``; a no-op scope otherwise. Wrap the
    forward pass and the loss, not the backward pass."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
