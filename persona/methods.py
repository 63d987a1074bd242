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
    """What every method offers. ``fit``, ``load`` and ``render`` each method writes; the hooks
    below have no-op defaults here, so a method states that it has one by defining it, and a
    caller calls a hook without asking first. A class gets the defaults by naming this protocol as
    its base (``class FOMM(Method)``); :func:`provides` says whether a method defines a hook itself."""

    name: str
    #: renders at cameras other than the video's (3-D methods); a 2-D method (FOMM) says False and
    #: gets "not supported" novel-view cells. Every registered method sets it; False unless stated.
    supports_novel_views: bool = False
    #: a frame's render depends on that frame's inputs alone (no random draws, no batch state), so
    #: one render of a whole split stands in for any subset of it (the NeRF baselines: evaluation
    #: reuses their lip-sync clip's frames for the scored frames). False unless stated (ours draws
    #: depth jitter).
    renders_frame_by_frame: bool = False

    def fit(self, train: Any, run: RunDir) -> None:
        """Train on a dataset of frames; checkpoints/metrics go to ``run``; resumes if possible."""
        raise NotImplementedError

    def load(self, run: RunDir) -> None:
        """Load the latest checkpoint of a finished (or interrupted) run, for rendering."""
        raise NotImplementedError

    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """conditions: batch dict as the dataset yields; camera [B,25] -> image [B,3,H,W] in [-1,1]."""
        raise NotImplementedError

    # --- optional hooks (no-op defaults) -------------------------------------------------------
    def attach_audio(self, dataset: Any) -> None:
        """Before rendering a split: the whole audio track of ``dataset``, from which audio-driven
        methods gather each frame's neighbouring windows (ours). Default: nothing to attach."""

    def set_test_frames(self, test: Any) -> None:
        """Before rendering a split: the frames a per-frame optimiser inverts (PTI). Default: none."""

    def set_driving_start(self, image: torch.Tensor) -> None:
        """The first driving frame [3,H,W] relative motion starts from (FOMM). Default: ignored."""

    def alphas(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Basis coefficients [B,k] of a batch (methods with a personalized basis: ours)."""
        raise NotImplementedError(f"{getattr(self, 'name', type(self).__name__)} has no basis coefficients")


HOOKS = ("attach_audio", "set_test_frames", "set_driving_start", "alphas")


def provides(method: Any, hook: str) -> bool:
    """True when ``method`` defines optional ``hook`` (one of :data:`HOOKS`) itself rather than
    inheriting :class:`Method`'s default; e.g. only methods with a basis provide ``alphas``."""
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; expected one of {HOOKS}")
    own = getattr(type(method), hook, None)
    return own is not None and own is not getattr(Method, hook)


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
