"""Profiles decide sizes, never code paths.

``smoke``  : CI, seconds per notebook, tiny data and few steps.
``default``: the embedded default, every table on 2 CPU cores within the hour.
``paper``  : the paper's hyper-parameters, official EG3D weights, real data, a GPU.

A module with sizes defines a config dataclass and a ``PROFILES``-style mapping
``{profile: config}``; :func:`for_profile` picks from it with a clear error.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator, Mapping, TypeVar

PROFILE_NAMES = ("smoke", "default", "paper")

# torch threads of every cached notebook run (training and evaluation), whatever --jobs or the
# machine: float sums depend on the thread count (1 vs 2 threads: ours 283 of 465 tensors differ by
# up to 7e-7 after 4 steps, FOMM 220 of 311 by up to 4e-3), so a fixed count keeps the tables
# independent of how the notebooks were launched. None: torch's default (the paper profile's GPU runs).
TORCH_THREADS: dict[str, int | None] = {"smoke": 1, "default": 1, "paper": None}

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
