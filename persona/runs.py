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

Temporary files and folders carry the writing process's id (``.NAME.PID.XXXX.tmp``,
``.NAME.building-PID``, ``.NAME.old-PID``); :func:`remove_stale_leftovers` deletes those whose
process is gone, and only those. A run's random state (every torch generator it draws from) is
saved with each checkpoint (:func:`rng_tensors`) and restored on resume (:func:`restore_rng`);
side computations (sample images) draw inside :func:`isolated_rng`, so a resumed run continues
exactly as an uninterrupted one. Re-running a trainer on a run folder goes through
:meth:`RunDir.begin`: a different config is refused (naming the fields), a finished run says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from safetensors.torch import load_file, save_file

from persona.errors import PersonaError, PersonaFileError, PersonaInputError

_STEP_FILE = re.compile(r"^step_(\d{8})\.safetensors$")
_TEMP_FILE = re.compile(r"^\..+\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")  # atomic_write's temp files
_TEMP_DIR = re.compile(r"^\..+\.(building|old)-(?P<pid>\d+)$")  # build_benchmark's folders


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (no window for threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, fsync it, then rename it onto
    ``path``: readers see the old or the new file, never a mix; a failure leaves no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would give this
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def staged_dir(dest: str | os.PathLike, tag: str = "partial") -> Iterator[Path]:
    """Build a folder in a hidden sibling (``.<name>.<tag>-<pid>``) and yield it; when the block
    ends normally it replaces ``dest`` by renames (an existing ``dest`` is moved aside, then
    deleted), on any exception it is removed. An interrupted build never leaves a folder that
    passes for complete."""
    import shutil

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{tag}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if dest.exists():
            old = dest.parent / f".{dest.name}.old-{os.getpid()}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete, directly under ``folder``, the temp files of :func:`atomic_write` and the
    ``.building-PID``/``.old-PID`` folders of ``build_benchmark`` whose process is gone (a kill
    left them). Nothing else is touched: only our own naming patterns, only dead owners."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        file_match = _TEMP_FILE.match(path.name) if path.is_file() and not path.is_symlink() else None
        dir_match = _TEMP_DIR.match(path.name) if path.is_dir() and not path.is_symlink() else None
        match = file_match or dir_match
        if match is None or _pid_alive(int(match.group("pid"))):
            continue
        if dir_match:
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------
# random state


def rng_tensors(**generators: torch.Generator) -> dict[str, torch.Tensor]:
    """The random state to checkpoint: ``rng.torch`` (the global CPU generator), ``rng.cuda.I``
    (each initialised CUDA device) and ``rng.NAME`` for each named generator."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{index}"] = state
    for name, generator in generators.items():
        out[f"rng.{name}"] = generator.get_state()
    return out


def restore_rng(tensors: Mapping[str, torch.Tensor], where: str = "checkpoint", **generators: torch.Generator) -> None:
    """Inverse of :func:`rng_tensors`: set the global and the named generators' states.
    A checkpoint without the state of a named generator is refused (resuming would not
    continue the same random stream)."""
    missing = [f"rng.{name}" for name in ["torch", *generators] if f"rng.{name}" not in tensors]
    if missing:
        raise PersonaFileError(f"{where}: no random state {missing} (written by an older persona?); "
                               "expected every rng.* tensor to resume identically; retrain with --force")
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        for key in cuda:
            index = int(key.rsplit(".", 1)[1])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(tensors[key], index)
    for name, generator in generators.items():
        generator.set_state(tensors[f"rng.{name}"])


@contextlib.contextmanager
def isolated_rng(device: str | torch.device = "cpu") -> Iterator[None]:
    """Random draws inside the block (e.g. a sample render) leave the global generators of the
    CPU (and of ``device`` when it is a GPU) as they were: training continues unperturbed."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


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


OPTIMIZER_KEY = "optimizer"  # tensor prefix and meta key of a training checkpoint's optimiser state
_OLD_OPTIMIZER_KEY = "optim"  # what ours, the NeRF baselines and SyncNet wrote before (still read)


def training_state(optimizer: torch.optim.Optimizer, **generators: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The resumable part of every trainer's checkpoint: (tensors ``optimizer.*`` + ``rng.*``, meta
    ``{'optimizer': ...}``); ``generators`` are the trainer's own torch generators besides the global
    one (:func:`rng_tensors`). Merge them with the model's tensors and pass both to :meth:`RunDir.save_checkpoint`."""
    opt_tensors, opt_rest = optimizer_tensors(optimizer)
    return {**prefixed(OPTIMIZER_KEY, opt_tensors), **rng_tensors(**generators)}, {OPTIMIZER_KEY: opt_rest}


def restore_training_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                           where: str, **generators: torch.Generator) -> None:
    """Inverse of :func:`training_state` (optimiser state, then the RNG states); reads checkpoints
    written with the older key ``optim`` too."""
    key = OPTIMIZER_KEY if OPTIMIZER_KEY in meta else _OLD_OPTIMIZER_KEY
    prefix = OPTIMIZER_KEY if any(k.startswith(OPTIMIZER_KEY + ".") for k in tensors) else _OLD_OPTIMIZER_KEY
    if key not in meta:
        raise PersonaFileError(f"{where}: field '{OPTIMIZER_KEY}' missing from the checkpoint's JSON (expected the optimiser "
                               f"state of a training checkpoint)")
    load_optimizer_tensors(optimizer, unprefixed(prefix, tensors), meta[key])
    restore_rng(tensors, where, **generators)


# fields of a run's config.json that may change between a run and its resume (where it ran, when it
# stops, how it reads its frames and splits a batch into passes)
RESUMABLE_FIELDS = frozenset({"config.device", "config.max_minutes", "torch_threads", "config.num_workers",
                              "config.max_pixels_per_pass"})

# what persona writes into a run folder (relative globs); --force deletes these and nothing else
PERSONA_FILES = ("config.json", "metrics.jsonl", "metrics.png", "done.json", "eval-*.csv", "sync-*.csv", "metrics_*.csv",
                 "sync_*.csv", "checkpoints/step_*.safetensors", "checkpoints/step_*.json", "renders/sample_*.png",
                 "renders/step_*.png", "renders/*/[0-9]*.png", "renders/novel/*/[0-9]*.png", "renders/orbit.mp4",
                 *(f"renders/{split}.{ext}" for split in ("train", "val", "test") for ext in ("mp4", "json")),
                 "renders/alphas_*.npy", "pti_cache/frame_*.safetensors", "pti_cache/frame_*.json")


def _lookup(record: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(record, Mapping) or key not in record:
            return "<absent>"
        record = record[key]
    return record


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields where two JSON-like values differ (``config.k``, ``data``)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(name)
            else:
                out += config_differences(old[key], new[key], name)
        return out
    return [] if old == new else [prefix or "<root>"]


def _same_path(a: Any, b: Any) -> bool:
    if not (isinstance(a, str) and isinstance(b, str)) or not a or not b:
        return a == b
    return Path(a).resolve() == Path(b).resolve()


def run_record(method: str, config: Any, train: Any = None, **extra: Any) -> dict[str, Any]:
    """What a trainer writes as config.json: method name, full config, data folder, and the torch
    thread count it ran with (float sums differ between thread counts in the last digits)."""
    return {"method": method, "config": config, "data": str(getattr(train, "root", "") or ""),
            "torch_threads": torch.get_num_threads(), **extra}


_TRAINING: "RunDir | None" = None  # the run a trainer in this process last started (see training_run)


def training_run() -> "RunDir | None":
    """The run whose trainer this process started last (:meth:`RunDir.resume_point`), or None:
    what the command line names when a Ctrl-C stops training."""
    return _TRAINING


class RunDir:
    """A run directory (see module docstring). Opening one creates nothing (reading a missing run
    leaves no trace); the folder is made by the first write. Never deletes what persona did not
    write."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.resumed_from: int | None = None  # set by resume_point(): the step a trainer started at

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def renders(self) -> Path:
        path = self.root / "renders"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_config(self, config: Any) -> None:
        atomic_write_json(self.root / "config.json", config)

    def read_config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        if not path.is_file():
            raise PersonaFileError(f"{path}: not a run directory (no config.json); expected a folder written by "
                                   "`python -m persona train`")
        try:
            config = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise PersonaInputError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(config, dict):
            raise PersonaInputError(f"{path}: expected a JSON object, got {type(config).__name__}")
        return config

    def begin(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (``{"method", "config", "data", ...}``) as config.json, after checking
        that a config.json already there describes the same run: any difference outside
        :data:`RESUMABLE_FIELDS` raises :class:`PersonaError` naming the fields, and config.json
        is left as it was (start over with ``--force`` or choose another ``--out``)."""
        record = to_jsonable(record)
        path = self.root / "config.json"
        if path.is_file():
            old = self.read_config()
            differ = [f for f in config_differences(old, record) if f not in RESUMABLE_FIELDS
                      and not (f == "data" and _same_path(old.get("data"), record.get("data")))]
            if differ:
                shown = ", ".join(f"{f} {_lookup(old, f)!r} -> {_lookup(record, f)!r}" for f in differ[:6])
                more = f" (+{len(differ) - 6} more)" if len(differ) > 6 else ""
                raise PersonaError(f"{path}: the run holds other settings ({shown}{more}); expected the same config "
                                   "to resume it; pass --force to start over in place, or choose another --out")
        self.write_config(record)

    def resume_point(self) -> tuple[int, Path | None]:
        """(step to continue after, its checkpoint or None) for a trainer about to start: removes
        the leftovers of killed processes, and drops metrics rows logged after that checkpoint
        (all rows when there is none), so a resumed run logs every step once."""
        remove_stale_leftovers(self.root)
        remove_stale_leftovers(self.checkpoints)
        latest = self.latest_checkpoint()
        start, path = latest if latest is not None else (0, None)
        if (self.root / "metrics.jsonl").is_file():
            self.truncate_metrics(start)
        self.resumed_from = start
        global _TRAINING
        _TRAINING = self
        return start, path

    def finished_before(self) -> bool:
        """True when the last :meth:`resume_point` found the checkpoint that is still the newest
        (the trainer had nothing left to do: the run was already complete)."""
        latest = self.latest_checkpoint()
        return self.resumed_from is not None and latest is not None and latest[0] == self.resumed_from > 0

    def clear(self) -> list[Path]:
        """Delete what persona wrote here (:data:`PERSONA_FILES`, leftovers of killed writes),
        then the folders this empties; anything else stays. Returns the deleted files. A folder
        whose config.json is not a run's (persona writes it first) is refused, untouched."""
        removed: list[Path] = []
        for folder in (self.root, self.checkpoints, self.root / "pti_cache"):
            removed += remove_stale_leftovers(folder)
        if not (self.root / "config.json").is_file():
            return removed  # persona wrote nothing else here
        record = self.read_config()
        if not (isinstance(record, dict) and "method" in record and "config" in record):
            raise PersonaError(f"{self.root / 'config.json'}: not a persona run (no 'method'/'config'); expected a run "
                               "folder to start over in; nothing deleted, choose another --out")
        for pattern in PERSONA_FILES:
            for path in sorted(self.root.glob(pattern)):
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(path)
        for folder in sorted((p for p in self.root.glob("**/") if p != self.root), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        return removed

    def log(self, step: int, **values: Any) -> None:
        """Append one line to metrics.jsonl (a torn last line is skipped by :meth:`metrics`)."""
        line = json.dumps(to_jsonable({"step": step, **values}), sort_keys=True)
        self.root.mkdir(parents=True, exist_ok=True)
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
