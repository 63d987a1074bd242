"""The contract every method (ours and each baseline) fulfils, and the registry of methods.

A method is built from a config, trained with :meth:`Method.fit` on a training
:class:`persona.data.dataset.FrameDataset`, and renders frames with :meth:`Method.render`
from the same per-frame conditions the dataset yields (a batch dict: ``image`` [B,3,H,W] in
[-1,1], ``camera`` [B,25], ``expression`` [B,76], ``audio`` [B,16,29], ``index`` [B]) at any
camera [B,25]. ``fit`` writes a run directory (:class:`persona.runs.RunDir`) and resumes from
it when it already holds checkpoints.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import torch

from persona.runs import RunDir


@runtime_checkable
class Method(Protocol):
    name: str
    supports_novel_views: bool

    def fit(self, train: Any, run: RunDir) -> None:
        """Train on a dataset of frames; checkpoints/metrics go to ``run``; resumes if possible."""

    def load(self, run: RunDir) -> None:
        """Load the latest checkpoint of a finished (or interrupted) run, for rendering."""

    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """conditions: batch dict as the dataset yields; camera [B,25] -> image [B,3,H,W] in [-1,1]."""


# name -> "module:factory"; a factory takes (cfg: dict | None, **kwargs) and returns a Method.
REGISTRY: dict[str, str] = {
    "ours": "persona.ours.method:build_method",
    "pti": "persona.baselines.pti:build_method",
    "nerface": "persona.baselines.nerface:build_method",
    "adnerf": "persona.baselines.adnerf:build_method",
    "dfrf": "persona.baselines.dfrf:build_method",
    "fomm": "persona.baselines.fomm:build_method",
    "nha": "persona.baselines.nha:build_method",
}


def build_method(name: str, cfg: dict | None = None, **kwargs: Any) -> Method:
    """Build a registered method by name (see :data:`REGISTRY`)."""
    if name not in REGISTRY:
        from persona.errors import PersonaInputError

        raise PersonaInputError(f"unknown method {name!r}; expected one of {sorted(REGISTRY)}")
    module_name, factory = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), factory)(cfg, **kwargs)
