"""Our method behind the :class:`persona.methods.Method` protocol (registry name ``ours``)."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import torch

from persona.audio_nets import audio_track
from persona.eg3d.checkpoint import RANDOM_GENERATOR, load_generator
from persona.errors import PersonaFileError
from persona.methods import Method
from persona.ours.model import PersonalizedPrior
from persona.ours.train import (CONDITION_KEYS, TrainConfig, _describe_loss, _load_checkpoint, build_model, fit_prior,
                                render_conditions, to_device, train_config, with_audio_neighbours)
from persona.profiles import torch_device
from persona.runs import RunDir, run_record

METHOD_NAME = "ours"


class OursMethod(Method):
    """Our method behind the :class:`persona.methods.Method` protocol."""

    name = METHOD_NAME
    supports_novel_views = True

    def __init__(self, cfg: TrainConfig):
        self.config = cfg
        self.model: PersonalizedPrior | None = None
        self.audio_track: dict[int, torch.Tensor] | None = None

    def _build(self) -> PersonalizedPrior:
        torch.manual_seed(self.config.seed)
        spec = "random-tiny" if self.config.generator_source == RANDOM_GENERATOR else self.config.generator  # reloading a run trained without the prior
        G, source = load_generator(spec, field="generator", missing_prior="random")
        self.config = replace(self.config, generator_source=source)
        return build_model(self.config, G)

    def fit(self, train: Any, run: RunDir, stop_after: int | None = None) -> None:
        """Train on ``train`` (FrameDataset); writes/resumes ``run``. See :func:`fit_prior`."""
        if self.config.resolution is None:
            self.config = replace(self.config, resolution=int(train.resolution))
        self.model = self._build()
        self.config = replace(self.config, loss_used=_describe_loss(self.config))
        run.begin(run_record(self.name, asdict(self.config), train))
        fit_prior(self.model, train, run, self.config, stop_after=stop_after)

    def load(self, run: RunDir) -> None:
        latest = run.latest_checkpoint()
        if latest is None:
            raise PersonaFileError(f"{run.checkpoints}: no checkpoint to load (train the run first)")
        if self.config.resolution is None:  # the resolution the run was trained at (fit sets it from the data)
            trained_at = run.read_config().get("config", {}).get("resolution") if (run.root / "config.json").is_file() else None
            if trained_at:
                self.config = replace(self.config, resolution=int(trained_at))
        self.model = self._build()
        _load_checkpoint(latest[1], self.model, None)
        self.model.to(torch_device(self.config.device)).eval()

    def attach_audio(self, dataset: Any) -> None:
        """Use ``dataset``'s audio track for AudioAttNet's neighbours when rendering (audio only)."""
        self.audio_track = audio_track(dataset)

    def _need_model(self) -> PersonalizedPrior:
        if self.model is None:
            raise RuntimeError("ours: call fit(...) or load(run) before rendering")
        return self.model

    @torch.no_grad()
    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """conditions: batch dict as the dataset yields; camera [B,25] -> image [B,3,R,R] in [-1,1]."""
        model = self._need_model()
        device = torch_device(self.config.device)
        conditions = to_device({k: torch.as_tensor(v) for k, v in conditions.items() if k in CONDITION_KEYS + ("source_image", "source_index", "audio_neighbours")}, device)
        return render_conditions(model, conditions, torch.as_tensor(camera).float().to(device), self.audio_track).cpu()

    @torch.no_grad()
    def alphas(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The basis coefficients alpha [B,k] of a batch of conditions."""
        model = self._need_model()
        conditions = with_audio_neighbours(model, conditions, self.audio_track)
        return model.encode(to_device(conditions, torch_device(self.config.device))).cpu()


def build_method(cfg: dict | TrainConfig | None = None, **kw: Any) -> OursMethod:
    """Factory for :data:`persona.methods.REGISTRY` ('ours'). ``cfg``/``kw`` override the profile's fields."""
    if isinstance(cfg, TrainConfig):
        return OursMethod(replace(cfg, **kw) if kw else cfg)
    return OursMethod(train_config(**{**(cfg or {}), **kw}))
