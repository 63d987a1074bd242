"""Profiles decide sizes, never code paths.

``smoke``  : CI, seconds per notebook, tiny data and few steps.
``default``: the embedded default, every table on 2 CPU cores (aimed at an hour; 52.7 min from a fresh clone of a5bdfb8, session 20; 66.5 at 65f7745 on a slower day).
``paper``  : the paper's hyper-parameters, official EG3D weights, real data, a GPU.
``paper-dry``: the paper profile's sizes and code paths at a few steps (:data:`DRY_RUN`), on inputs it
writes itself (:mod:`persona.dry_run`): every notebook end to end at paper size (a CPU can afford it: README).

A module with sizes defines a config dataclass and a ``PROFILES``-style mapping
``{profile: config}``; :func:`config_for` is the one builder of a method's config from it (the
profile is validated there, unknown profiles and fields are errors, values are checked).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator, Mapping, TypeVar

if TYPE_CHECKING:
    import torch

PROFILE_NAMES = ("smoke", "default", "paper", "paper-dry")

# torch threads of every cached notebook run (training and evaluation), whatever --jobs or the
# machine: float sums depend on the thread count (1 vs 2 threads: ours 283 of 465 tensors differ by
# up to 7e-7 after 4 steps, FOMM 220 of 311 by up to 4e-3), so a fixed count keeps the tables
# independent of how the notebooks were launched. None: torch's default (the paper profile's GPU runs).
TORCH_THREADS: dict[str, int | None] = {"smoke": 1, "default": 1, "paper": None, "paper-dry": None}

# whether a profile's tables run on real videos (the folders named in notebooks/params/<profile>.yaml,
# with the official EG3D weights) instead of the synthetic benchmark it builds; a profile field, so
# no code branches on a profile's name
REAL_DATA: dict[str, bool] = {"smoke": False, "default": False, "paper": True, "paper-dry": True}

# whether a profile's runs train on a GPU (when there is one): its notebooks then run one after
# another by default (persona notebooks --jobs 1), since two notebooks side by side would share one
# GPU (two 200k-step trainings) and each takes every CPU thread (TORCH_THREADS None)
USES_GPU: dict[str, bool] = {"smoke": False, "default": False, "paper": True, "paper-dry": True}

# The dry run of a profile: ``paper-dry`` is ``paper`` with these fields replaced wherever a config
# has them (:func:`with_dry_run`), nothing else. Step counts: 1-2 per method, PTI 1 per stage and
# test frame, DFRF's base 1 step on 1 identity's 4 frames (its num_references). device "auto": the
# GPU when there is one (the paper profile's "cuda" fails on a CPU-only machine).
# n_coarse / n_fine: the NeRF baselines' depth samples, 64 + 128 in the paper; 4 + 4 here so a CPU
# renders a 512-px frame in about a minute rather than an hour (as the generator's own depth
# samples, which the dry run's random pickle stores, see persona.dry_run.DryInputs).
DRY_RUN_OF: dict[str, str] = {"paper-dry": "paper"}
DRY_RUN: dict[str, Any] = {
    "iterations": 2, "steps": 2, "frozen_iterations": 1, "audio_smooth_after": 1, "smooth_warmup": 1,
    "w_steps": 1, "wplus_steps": 1, "tune_steps": 1, "pretrain_steps": 1,
    "pretrain_identities": 1, "pretrain_frames": 4,
    "n_coarse": 4, "n_fine": 4,
    "device": "auto",
}
DRY_RUN_EXTRA: dict[str, dict[str, Any]] = {}  # config class name -> its own dry-run changes (with_dry_run's extra)

T = TypeVar("T")


def check_profile(name: str) -> str:
    if name not in PROFILE_NAMES:
        from persona.errors import PersonaInputError

        raise PersonaInputError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    return name


def with_dry_run(table: dict[str, T], **extra: Any) -> dict[str, T]:
    """``table`` with an entry for every dry-run profile (:data:`DRY_RUN_OF`): the entry of the
    profile it dries, with the :data:`DRY_RUN` fields it has replaced, and ``extra`` (a method's own
    dry-run changes, stated where its table is; recorded in :data:`DRY_RUN_EXTRA`). Its ``profile``
    field, if any, names the dry-run profile."""
    from dataclasses import fields

    out = dict(table)
    for dry, base in DRY_RUN_OF.items():
        config = table[base]
        names = {f.name for f in fields(config)}
        changes = {k: v for k, v in DRY_RUN.items() if k in names}
        changes.update(extra)
        if extra:
            DRY_RUN_EXTRA[type(config).__name__] = dict(extra)
        if "profile" in names:
            changes["profile"] = dry
        out[dry] = replace(config, **changes)
    return out


def torch_device(name: str) -> torch.device:
    """The torch device a config's ``device`` field names: ``auto`` is cuda when available, else cpu."""
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def default_jobs(profile: str, cores: int | None = None) -> int:
    """Notebooks run side by side by default: 1 on a GPU profile (:data:`USES_GPU`), else 2 on 2+ cores."""
    import os

    return 1 if USES_GPU[check_profile(profile)] else min(2, cores or os.cpu_count() or 1)


def uses_real_data(profile: str) -> bool:
    """True when ``profile``'s tables run on real videos (:data:`REAL_DATA`)."""
    return REAL_DATA[check_profile(profile)]


def for_profile(table: Mapping[str, T], profile: str, **overrides: Any) -> T:
    """``table[profile]`` (a dataclass instance) with ``overrides`` applied (None values ignored)."""
    check_profile(profile)
    config = table[profile]
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **changes) if changes else config


def config_for(table: Mapping[str, T], profile: str = "default", overrides: Mapping[str, Any] | None = None,
               where: str | None = None, aliases: Mapping[str, str] | None = None) -> T:
    """The one builder of a method's config: ``table[profile]`` (a dataclass with a ``profile``
    field) with ``overrides`` applied and every value checked (:func:`check_config`).

    ``overrides['profile']``, when present, picks the profile instead of ``profile``; an unknown
    profile is an error (:func:`check_profile`), never a fallback to ``default``. Values that are
    None mean "the profile's" and are skipped. ``aliases`` renames keys (e.g. the CLI's
    ``iterations`` -> NHA's ``steps``). A list given for a tuple field becomes a tuple (JSON
    round trips). Unknown fields raise :class:`persona.errors.PersonaInputError` naming ``where``
    (default: the dataclass name) and the fields expected.
    """
    from dataclasses import fields

    from persona.errors import PersonaInputError

    values = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    profile = values.pop("profile", profile)
    base = table[check_profile(profile)]
    where = where or type(base).__name__
    for alias, name in (aliases or {}).items():
        if alias in values:
            values[name] = values.pop(alias)
    names = {f.name for f in fields(base)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise PersonaInputError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(names)}")
    for key, value in values.items():
        if isinstance(getattr(base, key), tuple) and isinstance(value, list):
            values[key] = tuple(value)
    if "profile" in names:
        values["profile"] = profile
    return check_config(replace(base, **values), where)


def torch_threads(profile: str) -> int:
    """The torch thread count runs of ``profile`` use (:data:`TORCH_THREADS`, else torch's current)."""
    import torch

    return TORCH_THREADS[check_profile(profile)] or torch.get_num_threads()


@contextmanager
def using_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (None: as it is), then restore the previous count."""
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# fields that count something and must be at least 1 (every other int field, e.g. iterations: at least 0)
_AT_LEAST_ONE = frozenset({"k", "batch_size", "resolution", "log_every", "checkpoint_every",
                           "sample_every", "rays_per_step", "frames_per_step", "render_chunk", "keep_checkpoints",
                           "w_avg_samples", "num_kp", "num_references"})


def choices(*allowed: Any) -> dict[str, Any]:
    """Field metadata naming a field's allowed values, checked by :func:`check_config`:
    ``modality: str = field(default="rgb", metadata=choices(*MODALITIES))``."""
    return {"choices": tuple(allowed)}


def check_config(config: T, where: str) -> T:
    """``config`` (a dataclass) with every field that names its allowed values (:func:`choices`)
    checked against them, and every numeric value checked against its field's type: ints are
    integers >= 0 (>= 1 for sizes such as ``k``, ``batch_size``, ``checkpoint_every``; ``iterations=0``
    is an untrained model), floats finite and
    >= 0, tuples of numbers finite, bools real bools (the string "false" is refused). Raises
    :class:`persona.errors.PersonaInputError` naming ``where`` and the field; returns the config
    with plain values (an int given for a float field becomes a float)."""
    from dataclasses import MISSING, fields

    from persona.errors import PersonaInputError, check_bool, check_int, check_number, show

    clean: dict[str, Any] = {}
    for f in fields(config):
        default, value, name = f.default, getattr(config, f.name), f"{where}: {f.name}"
        allowed = f.metadata.get("choices")
        if allowed is not None and value not in allowed:
            raise PersonaInputError(f"{where}.{f.name}={value!r}; expected one of {allowed}")
        if default is MISSING or default is None or value is None:
            continue
        if isinstance(default, bool):
            clean[f.name] = check_bool(value, name)
        elif isinstance(default, int):
            clean[f.name] = check_int(value, name, 1 if f.name in _AT_LEAST_ONE else 0)
        elif isinstance(default, float):
            clean[f.name] = check_number(value, name, 0.0)
        elif isinstance(default, tuple) and default and all(isinstance(v, (int, float)) for v in default):
            if not isinstance(value, (tuple, list)):
                raise PersonaInputError(f"{name}: expected a list of numbers, got {show(value)}")
            if all(isinstance(v, int) and not isinstance(v, bool) for v in default):  # sizes, e.g. hidden widths
                clean[f.name] = tuple(check_int(v, f"{name}[{i}]", 1) for i, v in enumerate(value))
            else:
                clean[f.name] = tuple(check_number(v, f"{name}[{i}]") for i, v in enumerate(value))
    return replace(config, **clean)
