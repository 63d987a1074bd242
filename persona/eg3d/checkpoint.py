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

from ..errors import PersonaFileError, PersonaInputError, check_int, show
from ..runs import load_tensors, load_torch_weights, save_tensors
from .presets import GeneratorConfig, get_config
from .triplane import TriPlaneGenerator

PRIOR_PATH = Path(__file__).resolve().parent.parent / "assets" / "prior_tiny.safetensors"
PRIOR_COMMAND = "python -m persona prior train --profile default"


def save_generator(G: TriPlaneGenerator, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write G's state dict to ``path`` (.safetensors, atomic) and its config (+ ``meta``) to ``path``.json."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PersonaInputError(f"save_generator: {path}: expected a .safetensors path")
    save_tensors(path, G.state_dict(), {"generator": G.config.to_dict(), **(meta or {})})
    return path


def read_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TriPlaneGenerator:
    """Inverse of :func:`save_generator`: rebuild from the JSON config, load the tensors strictly."""
    path = Path(path)
    tensors, meta = load_tensors(path)
    if "generator" not in meta:
        raise PersonaInputError(f"{path.with_suffix('.json')}: missing field 'generator' (the generator config); "
                                f"expected the sidecar written by persona.eg3d.save_generator")
    config = GeneratorConfig.from_dict(meta["generator"], where=str(path.with_suffix(".json")))
    G = TriPlaneGenerator(config)
    load_state_checked(G, tensors, source=str(path))
    return G.to(map_location).eval()


def load_prior(path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> TriPlaneGenerator:
    """The shipped tiny prior (default ``persona/assets/prior_tiny.safetensors`` + ``.json``)."""
    path = Path(path) if path is not None else PRIOR_PATH
    if not path.is_file():
        raise PersonaFileError(f"{path}: no generator prior there. Create it with `{PRIOR_COMMAND}` "
                               f"(trains the tiny EG3D prior on the synthetic corpus), or pass the path of one.")
    return read_generator(path, map_location=map_location)


RANDOM_GENERATOR = "random-init tiny generator (WARNING: prior asset missing; results are NOT those of a generative prior)"
SHIPPED_PRIOR = "shipped tiny prior (persona/assets/prior_tiny.safetensors)"


def load_generator(spec: "str | os.PathLike | None" = None, seed: int | None = None, field: str = "generator",
                   missing_prior: str = "raise") -> tuple[TriPlaneGenerator, str]:
    """(generator in eval mode, where it came from): the one loader every method and notebook uses.

    ``spec``: None, '' or 'prior' = the shipped tiny prior (:data:`PRIOR_PATH`); 'random-tiny' = a
    randomly initialised tiny generator (after ``torch.manual_seed(seed)`` when ``seed`` is given);
    a ``.pkl`` = an official EG3D pickle (:func:`load_official`, safe); a ``.safetensors`` = a
    generator written by :func:`save_generator`. ``field`` names the config field in errors.
    ``missing_prior='random'``: without the shipped prior asset, warn loudly and return a random
    tiny generator (ours: a run still trains, its config records :data:`RANDOM_GENERATOR`);
    'raise' (default): :class:`persona.errors.PersonaFileError`.
    """
    from .triplane import build_generator

    if spec in (None, "", "prior"):
        try:
            return load_prior().eval(), SHIPPED_PRIOR
        except FileNotFoundError as err:
            if missing_prior != "random":
                raise
            import sys

            warnings.warn(f"{err}\n*** {RANDOM_GENERATOR} ***", stacklevel=2)
            print(f"WARNING: {RANDOM_GENERATOR}", file=sys.stderr)
            return build_generator("tiny").eval(), RANDOM_GENERATOR
    if spec == "random-tiny":
        if seed is not None:
            torch.manual_seed(seed)
        return build_generator("tiny").eval(), RANDOM_GENERATOR
    path = Path(spec)
    if not path.is_file():
        raise PersonaFileError(f"{field}: {spec}: no such file (expected 'prior', 'random-tiny', an official EG3D .pkl "
                               f"or a .safetensors written by persona)")
    if path.suffix == ".pkl":
        return load_official(path).eval(), f"official EG3D pickle {path}"
    if path.suffix == ".safetensors":
        return load_prior(path).eval(), f"generator {path}"
    raise PersonaInputError(f"{field}: {spec}: expected a .pkl (official EG3D) or .safetensors file")


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
    """Strict name-and-shape check, then load. Raises :class:`PersonaInputError` (a ValueError) with a
    readable one-line diff on mismatch."""
    expected = G.state_dict()
    diff = state_diff(expected, state)
    if diff:
        raise PersonaInputError(f"{source}: tensors do not match the generator ({getattr(G, 'config', None) and G.config.name}): "
                                + "; ".join(line.strip() for line in diff).replace(":; ", ": "))
    G.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)


def load_official(pkl_path: str | os.PathLike, preset: "str | GeneratorConfig" = "ffhq512", network: str = "G_ema") -> TriPlaneGenerator:
    """An official EG3D pickle (e.g. ``ffhq512-128.pkl``) -> our generator, without executing its code.

    The pickle's ``rendering_kwargs`` and ``neural_rendering_resolution`` override the preset's
    rendering options. Raises ``persona.eg3d.checkpoint.UnsafePickleError`` on anything other
    than tensors, plain containers and the network classes of the release."""
    net = read_official_pickle(pkl_path, network=network)
    where = f"{pkl_path}: {network}.rendering_kwargs"
    config = get_config(preset, **_config_overrides(net["rendering_kwargs"], where)).check(where)
    G = TriPlaneGenerator(config)
    load_state_checked(G, net["state_dict"], source=f"{pkl_path} ({network})")
    if net["neural_rendering_resolution"] is not None:
        G.neural_rendering_resolution = check_int(net["neural_rendering_resolution"],
                                                  f"{pkl_path}: {network}.neural_rendering_resolution", 1, 1024)
    return G.eval()


_RENDERING_FIELDS = ("depth_resolution", "depth_resolution_importance", "ray_start", "ray_end", "box_warp", "white_back",
                     "c_scale", "c_gen_conditioning_zero", "sr_antialias", "decoder_lr_mul", "avg_camera_radius")


def _config_overrides(rendering_kwargs: Mapping[str, Any], where: str = "rendering_kwargs") -> dict[str, Any]:
    """The pickle's ``rendering_kwargs`` -> GeneratorConfig overrides, unconverted (types and ranges
    are checked by :meth:`GeneratorConfig.check`, so ``"48"`` or ``"false"`` is refused, not cast)."""
    out: dict[str, Any] = {key: rendering_kwargs[key] for key in _RENDERING_FIELDS if rendering_kwargs.get(key) is not None}
    for key in ("ray_start", "ray_end"):
        if out.get(key) == "auto":
            raise PersonaInputError(f"{where}: {key} 'auto' (box-limited rays) is not supported; expected a number")
    if "avg_camera_pivot" in rendering_kwargs:
        pivot = rendering_kwargs["avg_camera_pivot"]
        if not isinstance(pivot, (list, tuple)):
            raise PersonaInputError(f"{where}: avg_camera_pivot: expected 3 numbers, got {show(pivot)}")
        out["avg_camera_pivot"] = tuple(pivot)
    if "superresolution_noise_mode" in rendering_kwargs:
        out["sr_noise_mode"] = rendering_kwargs["superresolution_noise_mode"]
    if rendering_kwargs.get("clamp_mode", "softplus") != "softplus":
        raise PersonaInputError(f"{where}: clamp_mode {show(rendering_kwargs['clamp_mode'])}; expected 'softplus'")
    return out


# ----------------------------------------------------------------------------------------------
# Safe reading of official EG3D pickles


class BadPickleError(PersonaInputError):
    """The file is not a readable EG3D network pickle (truncated, malformed, too big or too deep);
    the message names the file."""


class UnsafePickleError(BadPickleError, pickle.UnpicklingError):
    """The pickle asked for something other than tensors, containers and inert network state."""


MAX_PICKLE_BYTES = 4 << 30   # the release's ffhq512-128.pkl is ~0.5 GB
MAX_MODULE_DEPTH = 64         # nesting of network modules (the release: < 10)
MAX_MODULES = 100_000         # network modules in one pickle (the release: a few hundred)


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
    try:
        storage = load_torch_weights(io.BytesIO(data), "embedded torch storage (torch.storage._load_from_bytes)")
    except PersonaInputError as err:
        raise UnsafePickleError(str(err)) from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage, torch.Tensor)):
        raise UnsafePickleError(f"embedded torch storage holds {type(storage).__name__}; expected a storage")
    return storage


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f"tensor rebuild from {type(storage).__name__}; expected a torch storage")
    _check_tensor_view(storage, storage_offset, size, stride)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _check_tensor_view(storage, offset, size, stride) -> None:
    """A tensor view must be non-negative ints that stay inside its storage (else torch would raise
    a bare RuntimeError, or worse)."""
    ok = (isinstance(offset, int) and offset >= 0 and isinstance(size, (tuple, list, torch.Size))
          and isinstance(stride, (tuple, list)) and len(size) == len(stride) <= 16
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*size, *stride)))
    if not ok:
        raise BadPickleError(f"tensor rebuild with offset {show(offset)}, size {show(size)}, stride {show(stride)}; "
                             f"expected non-negative integers of one length")
    itemsize = storage.element_size() if isinstance(storage, torch.TypedStorage) else 1
    available = storage.nbytes() // itemsize
    needed = 0 if 0 in size else offset + 1 + sum((n - 1) * st for n, st in zip(size, stride))
    if needed > available:
        raise BadPickleError(f"tensor of size {list(size)} at offset {offset} needs {needed} elements; "
                             f"its storage has {available} (out of bounds)")


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
    if not (isinstance(shape, tuple) and len(shape) <= 1 and all(isinstance(n, int) and 0 <= n <= 1 for n in shape)):
        raise BadPickleError(f"numpy array rebuild with initial shape {show(shape)}; expected (0,) (the data follows)")
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
    """Unpickle ``path`` with the restricted unpickler (see module docstring). Every failure - a
    refused global, a truncated or malformed stream, an EXT opcode, an out-of-bounds tensor - raises
    :class:`BadPickleError` (:class:`UnsafePickleError` for refusals) naming the file; nothing is
    read past :data:`MAX_PICKLE_BYTES`."""
    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: pickle not found")
    size = path.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise BadPickleError(f"{path}: {size / 2**30:.1f} GiB; expected an EG3D network pickle under {MAX_PICKLE_BYTES >> 30} GiB")
    data = path.read_bytes()
    _check_opcodes(data, path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except BadPickleError as err:
        raise type(err)(f"{path}: {err}") from None
    except RecursionError:
        raise BadPickleError(f"{path}: nested too deeply to read; expected an EG3D network pickle") from None
    except Exception as err:  # noqa: BLE001 - any other failure of a foreign file is the file's fault
        detail = str(err).splitlines()[0] if str(err) else ""
        if "extension code" in detail:
            detail = f"{detail} (copyreg EXT1/EXT2/EXT4 opcodes are not part of EG3D pickles)"
        raise BadPickleError(f"{path}: not a readable EG3D network pickle: {type(err).__name__}: {detail}") from None


def _check_opcodes(data: bytes, path: Path) -> None:
    """Walk the opcode stream before unpickling (nothing is built): a length field claiming more bytes
    than the file holds (the unpickler would allocate that much first), a truncated stream or an
    unknown opcode is refused here with its byte offset."""
    import pickletools

    position = 0
    try:
        for _, _, position in pickletools.genops(data):
            pass
    except Exception as err:  # noqa: BLE001 - ValueError of a malformed stream
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadPickleError(f"{path}: not a readable EG3D network pickle: malformed after byte {position} ({detail})") from None


def _state_of(node: Any) -> dict[str, Any]:
    state = getattr(node, "state", None)
    return state if isinstance(state, dict) else {}


def module_state_dict(node: Any, prefix: str = "", where: str = "pickle") -> dict[str, torch.Tensor]:
    """Walk ``_parameters`` / ``_buffers`` / ``_modules`` of an inert module tree -> flat state dict.

    Iterative, each module visited once: a module reached twice (a cycle, or sub-graphs shared so
    that a 3 KB pickle would unfold into 2^40 paths), nesting deeper than :data:`MAX_MODULE_DEPTH` or
    more than :data:`MAX_MODULES` modules raise :class:`BadPickleError` naming ``where``."""
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    stack = [(node, prefix, 0)]
    while stack:
        node, prefix, depth = stack.pop()
        name = prefix.rstrip(".") or "(root)"
        if id(node) in seen:
            raise BadPickleError(f"{where}: module {name} is also module {seen[id(node)]} (a cycle or a shared "
                                 f"sub-module); expected a tree of modules as in EG3D networks")
        seen[id(node)] = name
        if depth > MAX_MODULE_DEPTH or len(seen) > MAX_MODULES:
            raise BadPickleError(f"{where}: module {name[:200]}: more than {MAX_MODULE_DEPTH} levels or {MAX_MODULES} "
                                 f"modules; expected an EG3D network")
        state = _state_of(node)
        skip = state.get("_non_persistent_buffers_set") or set()
        for key in ("_parameters", "_buffers"):
            entries = state.get(key) or {}
            if not isinstance(entries, dict):
                raise BadPickleError(f"{where}: {name}.{key}: expected a dict, got {type(entries).__name__}")
            for pname, value in entries.items():
                if value is None or (key == "_buffers" and pname in skip):
                    continue
                if not isinstance(value, torch.Tensor):
                    raise BadPickleError(f"{where}: {prefix}{pname}: expected a tensor in {key}, got {type(value).__name__}")
                out[f"{prefix}{pname}"] = value.detach().clone()
        children = state.get("_modules") or {}
        if not isinstance(children, dict):
            raise BadPickleError(f"{where}: {name}._modules: expected a dict, got {type(children).__name__}")
        stack += [(child, f"{prefix}{cname}.", depth + 1) for cname, child in reversed(children.items()) if child is not None]
    return out


def read_official_pickle(path: str | os.PathLike, network: str = "G_ema") -> dict[str, Any]:
    """-> {'state_dict', 'rendering_kwargs', 'neural_rendering_resolution', 'class_name'} of one network."""
    data = safe_unpickle(path)
    if not isinstance(data, dict) or network not in data:
        keys = sorted(map(str, data))[:20] if isinstance(data, dict) else type(data).__name__
        raise BadPickleError(f"{path}: no network {network!r} in the pickle (found {keys}); expected an EG3D snapshot")
    net = data[network]
    state = _state_of(net)
    if "_modules" not in state:
        raise BadPickleError(f"{path}: {network} has no module state; expected a pickled TriPlaneGenerator")
    rendering = state.get("rendering_kwargs") or {}
    if not isinstance(rendering, dict):
        raise BadPickleError(f"{path}: {network}.rendering_kwargs: expected a dict, got {type(rendering).__name__}")
    return {
        "state_dict": module_state_dict(net, where=f"{path}: {network}"),
        "rendering_kwargs": {str(k): v for k, v in rendering.items()},
        "neural_rendering_resolution": state.get("neural_rendering_resolution"),
        "class_name": getattr(net, "qualname", "?"),
    }
