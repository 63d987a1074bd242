"""Run directories and checkpoints shared by our method and every baseline.

A run directory holds::

    config.json          the full config of the run (written once, atomically)
    metrics.jsonl        one JSON object per logged step
    checkpoints/         step_XXXXXXXX.safetensors (+ .json sidecar with non-tensor state)
    renders/             images written by the method

Every file is written atomically (temp file in the same folder, fsync, ``os.replace``), so a
run killed at any moment - ``kill -9`` during a checkpoint write included - leaves either the
previous complete file or the new complete one, never a half-written file that loads.
Checkpoints are safetensors; nothing here unpickles.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file

_STEP_FILE = re.compile(r"^step_(\d{8})\.safetensors$")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it, then rename it onto
    ``path``: readers see the old or the new file, never a mix; a failure leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_bytes(path, (json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tensors and numpy scalars -> plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return obj.item()
    return obj


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> None:
    """Save a flat name->tensor dict as safetensors atomically; ``meta`` goes to a JSON sidecar.

    The sidecar (``<path>.json``) is written first, the tensors last: a checkpoint counts as
    complete only when its ``.safetensors`` file exists, and then its sidecar exists too.
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if meta is not None:
        atomic_write_json(path.with_suffix(".json"), meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load what :func:`save_tensors` wrote: (tensors, meta). Missing sidecar -> empty meta."""
    from persona.errors import PersonaFileError, PersonaInputError

    path = Path(path)
    if not path.is_file():
        raise PersonaFileError(f"{path}: no such checkpoint file")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - SafetensorError, OSError, ... of a damaged or foreign file
        detail = str(err).splitlines()[0] if str(err) else ""
        raise PersonaInputError(f"{path}: not a readable safetensors file ({type(err).__name__}: {detail})") from None
    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise PersonaInputError(f"{sidecar}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise PersonaInputError(f"{sidecar}: expected a JSON object, got {type(meta).__name__}")
    return tensors, meta


def load_torch_weights(source: "str | os.PathLike | Any", where: str | None = None) -> Any:
    """``torch.load(source, weights_only=True)`` on the CPU for a user's foreign weights file (or a
    file-like object); any refusal or damage raises :class:`persona.errors.PersonaInputError` naming
    ``where`` (default the path). Torch's own refusal text, which suggests ``weights_only=False``
    (executing the file), is never relayed."""
    import warnings

    from persona.errors import PersonaFileError, PersonaInputError

    where = where or str(source)
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise PersonaFileError(f"{where}: file not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ... of a foreign file
            raise PersonaInputError(f"{where}: not a plain torch weights file (torch's tensors-only loader refused it: "
                                    f"{type(err).__name__}); nothing in it was executed") from None


def prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{'w': t} -> {'prefix.w': t}: several modules' state dicts in one checkpoint."""
    return {f"{prefix}.{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`prefixed`: the entries under ``prefix.``, with the prefix removed."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        plain_state[str(pid)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                plain_state[str(pid)][key] = value
    return tensors, {"state": plain_state, "param_groups": state["param_groups"]}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in rest["state"].items():
        state[int(pid)] = dict(entry)
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


class RunDir:
    """A run directory (see module docstring). Creating one never deletes anything."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def renders(self) -> Path:
        path = self.root / "renders"
        path.mkdir(exist_ok=True)
        return path

    def write_config(self, config: Any) -> None:
        atomic_write_json(self.root / "config.json", config)

    def read_config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        if not path.is_file():
            from persona.errors import PersonaFileError

            raise PersonaFileError(f"{path}: not a run directory (no config.json)")
        from persona.errors import PersonaInputError

        try:
            config = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise PersonaInputError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise PersonaInputError(f"{path}: expected a JSON object, got {type(config).__name__}")
        return config

    def log(self, step: int, **values: Any) -> None:
        """Append one line to metrics.jsonl (a torn last line is skipped by :meth:`metrics`)."""
        line = json.dumps(to_jsonable({"step": step, **values}), sort_keys=True)
        with open(self.root / "metrics.jsonl", "a") as handle:
            handle.write(line + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.root / "metrics.jsonl"
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """Drop logged rows with step > after_step (used when resuming from a checkpoint)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= after_step]
        atomic_write_bytes(self.root / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:08d}.safetensors"

    def list_checkpoints(self) -> Iterator[tuple[int, Path]]:
        if not self.checkpoints.is_dir():
            return iter(())
        found = []
        for path in self.checkpoints.iterdir():
            match = _STEP_FILE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return iter(sorted(found))

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        found = list(self.list_checkpoints())
        return found[-1] if found else None

    def save_checkpoint(self, step: int, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None, keep: int = 2) -> Path:
        """Write checkpoint ``step`` atomically and keep only the newest ``keep`` ones."""
        path = self.checkpoint_path(step)
        save_tensors(path, tensors, {"step": step, **(meta or {})})
        for _, old in list(self.list_checkpoints())[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
        return path
