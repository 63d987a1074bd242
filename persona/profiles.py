"""Profiles decide sizes, never code paths.

``smoke``  : CI, seconds per notebook, tiny data and few steps.
``default``: the embedded default, every table on 2 CPU cores within the hour.
``paper``  : the paper's hyper-parameters, official EG3D weights, real data, a GPU.

A module with sizes defines a config dataclass and a ``PROFILES``-style mapping
``{profile: config}``; :func:`for_profile` picks from it with a clear error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, TypeVar

PROFILE_NAMES = ("smoke", "default", "paper")

T = TypeVar("T")


def check_profile(name: str) -> str:
    if name not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    return name


def for_profile(table: Mapping[str, T], profile: str, **overrides: Any) -> T:
    """``table[profile]`` (a dataclass instance) with ``overrides`` applied (None values ignored)."""
    check_profile(profile)
    config = table[profile]
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **changes) if changes else config
