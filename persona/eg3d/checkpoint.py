"""Generator checkpoints: our own (safetensors + JSON config) and the official EG3D pickles.

Our format: ``<name>.safetensors`` (the state dict) + ``<name>.json`` ({"generator": config, ...}).

Official pickles (``ffhq512-128.pkl`` ...) store each network as
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, meta = {type, version, module_src,
class_name, state}; the official loader ``exec``s ``module_src``. :func:`read_official_pickle` uses
a restricted unpickler instead: only tensor/storage rebuild functions, plain containers, numpy
scalars/arrays and torch dtypes are allowed; persistent objects and ``training.*``, ``dnnlib.*``,
``torch_utils.*``, ``torch.nn.*`` classes become inert stand-ins that keep their pickled state and
run no code; any other global (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..runs import load_tensors, save_tensors
from .presets import GeneratorConfig, get_config
from .triplane import TriPlaneGenerator

PRIOR_PATH = Path(__file__).resolve().parent.parent / "assets" / "prior_tiny.safetensors"
PRIOR_COMMAND = "python -m persona prior train --profile default"


def save_generator(G: TriPlaneGenerator, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write G's state dict to ``path`` (.safetensors, atomic) and its config (+ ``meta``) to ``path``.json."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_generator: {path}: expected a .safetensors path")
    save_tensors(path, G.state_dict(), {"generator": G.config.to_dict(), **(meta or {})})
    return path


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TriPlaneGenerator:
    """Inverse of :func:`save_generator`: rebuild from the JSON config, load the tensors strictly."""
    path = Path(path)
    tensors, meta = load_tensors(path)
    if "generator" not in meta:
        raise ValueError(f"{path.with_suffix('.json')}: missing field 'generator' (the generator config); "
                         f"expected the sidecar written by persona.eg3d.save_generator")
    config = GeneratorConfig.from_dict(meta["generator"], where=str(path.with_suffix(".json")))
    G = TriPlaneGenerator(config)
    load_state_checked(G, tensors, source=str(path))
    return G.to(map_location).eval()


def load_prior(path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> TriPlaneGenerator:
    """The shipped tiny prior (default ``persona/assets/prior_tiny.safetensors`` + ``.json``)."""
    path = Path(path) if path is not None else PRIOR_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no generator prior there. Create it with `{PRIOR_COMMAND}` "
                                f"(trains the tiny EG3D prior on the synthetic corpus), or pass the path of one.")
    return load_generator(path, map_location=map_location)


def state_diff(expected: Mapping[str, torch.Tensor], got: Mapping[str, Any], limit: int = 20) -> list[str]:
    """Readable differences between two name->tensor maps: missing, unexpected, shape mismatches."""
    lines = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(expected[k].shape) != tuple(got[k].shape)]
    for title, keys, fmt in (
        ("missing", missing, lambda k: f"{k} {list(expected[k].shape)}"),
        ("unexpected", unexpected, lambda k: f"{k} {list(got[k].shape)}"),
        ("shape mismatch", shapes, lambda k: f"{k}: expected {list(expected[k].shape)}, got {list(got[k].shape)}"),
    ):
        if keys:
            lines.append(f"{len(keys)} {title}:")
            lines += [f"  {fmt(k)}" for k in keys[:limit]]
            if len(keys) > limit:
                lines.append(f"  ... and {len(keys) - limit} more")
    return lines


def load_state_checked(G: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Strict name-and-shape check, then load. Raises ValueError with a readable diff on mismatch."""
    expected = G.state_dict()
    diff = state_diff(expected, state)
    if diff:
        raise ValueError(f"{source}: tensors do not match the generator ({getattr(G, 'config', None) and G.config.name}):\n" + "\n".join(diff))
    G.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)


def load_official(pkl_path: str | os.PathLike, preset: "str | GeneratorConfig" = "ffhq512", network: str = "G_ema") -> TriPlaneGenerator:
    """An official EG3D pickle (e.g. ``ffhq512-128.pkl``) -> our generator, without executing its code.

    The pickle's ``rendering_kwargs`` and ``neural_rendering_resolution`` override the preset's
    rendering options. Raises ``persona.eg3d.checkpoint.UnsafePickleError`` on anything other
    than tensors, plain containers and the network classes of the release."""
    net = read_official_pickle(pkl_path, network=network)
    config = get_config(preset, **_config_overrides(net["rendering_kwargs"], get_config(preset)))
    G = TriPlaneGenerator(config)
    load_state_checked(G, net["state_dict"], source=f"{pkl_path} ({network})")
    if net["neural_rendering_resolution"] is not None:
        G.neural_rendering_resolution = int(net["neural_rendering_resolution"])
    return G.eval()


_RENDERING_FIELDS = {
    "depth_resolution": int, "depth_resolution_importance": int, "ray_start": float, "ray_end": float, "box_warp": float,
    "white_back": bool, "c_scale": float, "c_gen_conditioning_zero": bool, "sr_antialias": bool, "decoder_lr_mul": float,
    "avg_camera_radius": float,
}


def _config_overrides(rendering_kwargs: Mapping[str, Any], base: GeneratorConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, cast in _RENDERING_FIELDS.items():
        if key in rendering_kwargs and rendering_kwargs[key] is not None:
            value = rendering_kwargs[key]
            if key in ("ray_start", "ray_end") and value == "auto":
                raise ValueError("rendering_kwargs: ray_start/ray_end 'auto' (box-limited rays) is not supported; expected numbers")
            out[key] = cast(value)
    if "avg_camera_pivot" in rendering_kwargs:
        out["avg_camera_pivot"] = tuple(float(v) for v in rendering_kwargs["avg_camera_pivot"])
    if "superresolution_noise_mode" in rendering_kwargs:
        out["sr_noise_mode"] = str(rendering_kwargs["superresolution_noise_mode"])
    if rendering_kwargs.get("clamp_mode", "softplus") != "softplus":
        raise ValueError(f"rendering_kwargs: clamp_mode {rendering_kwargs['clamp_mode']!r}; expected 'softplus'")
    return out


# ----------------------------------------------------------------------------------------------
# Safe reading of official EG3D pickles


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than tensors, containers and inert network state."""


class InertObject(dict):
    """Stand-in for a class of the release (or torch.nn): keeps the pickled state, runs no code.

    dict-based so dict subclasses (``dnnlib.EasyDict``) keep their items; ``state`` holds what
    ``__setstate__``/BUILD received (for modules: their ``__dict__``)."""

    qualname = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class InertPersistent(InertObject):
    """What ``_reconstruct_persistent_obj(meta)`` becomes: class name + state; the source is dropped."""


_STAND_IN_PREFIXES = ("training.", "dnnlib", "torch_utils", "torch.nn.modules.", "torch.nn.parameter")
_stand_in_classes: dict[str, type] = {}


def _stand_in(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _stand_in_classes:
        _stand_in_classes[key] = type(name, (InertObject,), {"qualname": key})
    return _stand_in_classes[key]


def _reconstruct_persistent_inert(meta: Any) -> InertPersistent:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise UnsafePickleError(f"persistent object with unexpected meta {type(meta).__name__}; expected "
                                f"{{type: 'class', version, module_src, class_name, state}}")
    obj = InertPersistent()
    obj.qualname = str(meta["class_name"])
    obj.__setstate__(meta.get("state") or {})
    return obj


def _load_storage_from_bytes(data: bytes):
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("torch.storage._load_from_bytes: expected bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"tensor rebuild from {type(storage).__name__}; expected a torch storage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError(f"parameter rebuild from {type(data).__name__}; expected a tensor")
    return torch.nn.Parameter(data, requires_grad=bool(requires_grad))


def _copyreg_reconstructor(cls, base, state):
    if not (isinstance(cls, type) and issubclass(cls, InertObject)) or base not in (object, dict):
        raise UnsafePickleError(f"copyreg._reconstructor({getattr(cls, '__name__', cls)!r}, {getattr(base, '__name__', base)!r}) refused")
    obj = cls()
    if state is not None:
        obj.update(state) if base is dict else obj.__setstate__(state)
    return obj


def _numpy_scalar(dtype, data=None):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("numpy scalar: expected a plain dtype and bytes")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(cls, shape, typecode):
    import numpy as np

    if cls is not np.ndarray:
        raise UnsafePickleError(f"numpy array rebuild of {cls!r} refused; expected numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _allowed_global(module: str, name: str) -> Any:
    import numpy as np

    table: dict[tuple[str, str], Any] = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_inert,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("copyreg", "_reconstructor"): _copyreg_reconstructor,
        ("builtins", "object"): object, ("builtins", "dict"): dict, ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset, ("builtins", "list"): list, ("builtins", "tuple"): tuple,
        ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
        ("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray,
    }
    for np_core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(np_core, "scalar")] = _numpy_scalar
        table[(np_core, "_reconstruct")] = _numpy_reconstruct
    if (module, name) in table:
        return table[(module, name)]
    if module == "numpy" and name.endswith("DType") or module == "numpy.dtypes":
        return np.dtype  # numpy 2 pickles dtypes as numpy.dtypes.Float32DType(...)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    if module.startswith(_STAND_IN_PREFIXES):
        return _stand_in(module, name)
    raise UnsafePickleError(f"refused global {module}.{name}: an EG3D network pickle holds only tensors, plain containers "
                            f"and network state (training.*, dnnlib.*, torch_utils.*, torch.nn.*)")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _allowed_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not part of EG3D network pickles; refused")


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with the restricted unpickler (see module docstring)."""
    with open(path, "rb") as handle:
        try:
            return _RestrictedUnpickler(handle).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None


def _state_of(node: Any) -> dict[str, Any]:
    state = getattr(node, "state", None)
    return state if isinstance(state, dict) else {}


def module_state_dict(node: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk ``_parameters`` / ``_buffers`` / ``_modules`` of an inert module tree -> flat state dict."""
    state = _state_of(node)
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for key in ("_parameters", "_buffers"):
        for name, value in (state.get(key) or {}).items():
            if value is None or (key == "_buffers" and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{prefix}{name}: expected a tensor in {key}, got {type(value).__name__}")
            out[prefix + name] = value.detach().clone()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, prefix + name + "."))
    return out


def read_official_pickle(path: str | os.PathLike, network: str = "G_ema") -> dict[str, Any]:
    """-> {'state_dict', 'rendering_kwargs', 'neural_rendering_resolution', 'class_name'} of one network."""
    data = safe_unpickle(path)
    if not isinstance(data, dict) or network not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: no network {network!r} in the pickle (found {keys}); expected an EG3D snapshot")
    net = data[network]
    state = _state_of(net)
    if "_modules" not in state:
        raise ValueError(f"{path}: {network} has no module state; expected a pickled TriPlaneGenerator")
    rendering = state.get("rendering_kwargs") or {}
    return {
        "state_dict": module_state_dict(net),
        "rendering_kwargs": {str(k): v for k, v in dict(rendering).items()},
        "neural_rendering_resolution": state.get("neural_rendering_resolution"),
        "class_name": getattr(net, "qualname", "?"),
    }
