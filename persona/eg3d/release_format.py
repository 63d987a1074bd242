"""Write a generator as a pickle in the official EG3D release's persistence format (for tests and
the paper-size dry run; never for real checkpoints, which are safetensors).

Each network becomes ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with meta =
{type: 'class', version: 6, module_src, class_name, state}, exactly the shape that
:func:`persona.eg3d.load_official` reads with its restricted unpickler. ``module_src`` is never
run by that loader; tests pass source that would leave a marker file if it were.

``write_release_pickle(G, path)`` -> the snapshot {G, D, G_ema, augment_pipe, training_set_kwargs}.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from ..runs import atomic_write_bytes
from .presets import rendering_kwargs

INERT_SOURCE = "# written by persona.eg3d.release_format: random weights in the release's pickle format\n"


class _EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (a dict)."""


def _reconstruct_persistent_obj(meta: Any) -> Any:  # pragma: no cover - only its name is pickled
    raise RuntimeError("persona.eg3d.release_format: stand-in, never called")


@contextlib.contextmanager
def modules_registered(modules: Mapping[str, types.ModuleType]) -> Iterator[None]:
    """``modules`` (name -> module) importable by name for the duration; ``sys.modules`` restored after."""
    saved = {k: sys.modules.get(k) for k in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@contextlib.contextmanager
def _release_names() -> Iterator[None]:
    """Make ``torch_utils.persistence`` and ``dnnlib.util`` importable by name while pickling."""
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = _EasyDict
    names = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
             "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    olds = (_reconstruct_persistent_obj.__module__, _EasyDict.__module__, _EasyDict.__qualname__)
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _EasyDict.__module__, _EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    try:
        with modules_registered(names):
            yield
    finally:
        _reconstruct_persistent_obj.__module__ = olds[0]
        _EasyDict.__module__, _EasyDict.__qualname__ = olds[1], olds[2]


class _Persistent:
    """Pickles as the release does: ``_reconstruct_persistent_obj(dict(type, version, module_src, class_name, state))``."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


def _as_release(module: torch.nn.Module, module_src: str) -> Any:
    """Our module tree -> the release's pickled form (persistent objects; torch.nn classes as themselves)."""
    children = collections.OrderedDict((n, _as_release(m, module_src)) for n, m in module._modules.items())
    if type(module).__module__.startswith("torch.nn"):
        clone = type(module).__new__(type(module))
        clone.__dict__.update(module.__dict__)
        clone.__dict__["_modules"] = children
        return clone
    state = {"training": False, "_parameters": collections.OrderedDict(module._parameters),
             "_buffers": collections.OrderedDict(module._buffers), "_non_persistent_buffers_set": set(),
             "_modules": children, "_init_kwargs": _EasyDict(note="kept, never used")}
    return _Persistent(type(module).__name__, state, module_src)


def release_pickle_bytes(G: torch.nn.Module, module_src: str = INERT_SOURCE, neural_rendering_resolution: int | None = None,
                         **rendering_overrides: Any) -> bytes:
    """G (our TriPlaneGenerator) -> the bytes of a release snapshot pickle holding it as G and G_ema.

    ``rendering_overrides`` replace entries of the pickled ``rendering_kwargs`` (e.g.
    ``depth_resolution=4`` for a cheap CPU render); ``neural_rendering_resolution`` is stored on
    G_ema as the release does (default: G's own)."""
    kwargs = dict(rendering_kwargs(G.config), **rendering_overrides)
    g_ema = _as_release(G, module_src)
    state = g_ema.meta["state"]
    state["rendering_kwargs"] = _EasyDict(kwargs)
    state["neural_rendering_resolution"] = int(neural_rendering_resolution or G.neural_rendering_resolution)
    state["renderer"] = _Persistent("ImportanceRenderer", {"plane_axes": torch.eye(3)}, module_src)
    snapshot = {"G": g_ema, "D": _Persistent("DualDiscriminator", {"_modules": {}}, module_src), "G_ema": g_ema,
                "augment_pipe": None, "training_set_kwargs": None}
    buffer = io.BytesIO()
    with _release_names():
        snapshot["training_set_kwargs"] = _EasyDict(resolution=int(G.img_resolution), use_labels=True)
        pickle.dump(snapshot, buffer, protocol=4)
    return buffer.getvalue()


def write_release_pickle(G: torch.nn.Module, path: str | os.PathLike, module_src: str = INERT_SOURCE,
                         neural_rendering_resolution: int | None = None, **rendering_overrides: Any) -> Path:
    """Write :func:`release_pickle_bytes` to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_bytes(path, release_pickle_bytes(G, module_src, neural_rendering_resolution, **rendering_overrides))
    return path
