"""The one place that imports torchvision (and so lpips) robustly.

The torchvision wheel on our package registry is a CUDA build. Next to a CPU-only torch its
compiled ops library cannot load, and ``import torchvision`` then dies in
``torchvision/_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist`` (it registers a fake kernel for an
operator whose schema was never defined). ``lpips`` imports torchvision, so it dies too.

:func:`import_torchvision` imports torchvision normally. Only when exactly that failure happens
does it define the two missing operator schemas (``nms`` and ``qnms``; no kernels, so calling
them still fails loudly) and import again. A user whose torchvision matches their torch never
reaches the fallback.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_MISSING_OP_MESSAGE = "torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fallback_library: torch.library.Library | None = None  # kept alive for the process


def used_fallback() -> bool:
    """True when torchvision could only be imported after defining the missing op schemas."""
    return _fallback_library is not None


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """Import and return ``torchvision``, working around a CUDA torchvision next to CPU torch."""
    global _fallback_library
    try:
        import torchvision
        return torchvision
    except RuntimeError as err:
        if _MISSING_OP_MESSAGE not in str(err):
            raise
    _forget_partial_import()
    _fallback_library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _fallback_library.define(schema)
    import torchvision
    return torchvision


def import_lpips() -> ModuleType:
    """Import and return the ``lpips`` package (which needs torchvision)."""
    import_torchvision()
    import lpips
    return lpips
