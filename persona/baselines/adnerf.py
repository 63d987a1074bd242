"""AD-NeRF (Guo et al., ICCV 2021): an audio-driven head NeRF.

What is kept from the official code (YudongGuo/AD-NeRF, ``NeRFs/HeadNeRF``):
- the head NeRF is conditioned on a 64-d audio code: :class:`persona.audio_nets.AudioNet` over the
  [16,29] DeepSpeech window of the frame; after ``smooth_warmup`` steps (``nosmo_iters``,
  200k in the original) the codes of the 8 neighbouring frames go through
  :class:`persona.audio_nets.AudioAttNet` and the attention-weighted code conditions the NeRF (its
  learning rate is 5x the base rate, and it only trains after the warm-up, as in the original);
- positional encoding 10 frequencies for points, 4 for directions; 8 x 256 trunk with the input
  concatenated after the 5th layer, a 3 x 128 colour branch, separate coarse and fine networks;
- 64 coarse + 128 fine samples, 2048 rays per step from one frame, 95% inside the face box
  (``sample_rate``), Adam lr 5e-4 decaying 10x over 250k steps, 400k steps;
- the static background image composited through the last sample (``bc_img``).

The torso NeRF of AD-NeRF is omitted: our synthetic videos show a head without a torso (the
head NeRF with the static background renders the whole frame).

Rendering: before the warm-up ends, ``render`` conditions on ``conditions['audio']`` [B,16,29]
alone (AudioNet). After it, on the attention-smoothed code of the 8 neighbouring windows:
``conditions['audio_neighbours']`` [B,8,16,29] when given (frames index-4 .. index+3), else the
neighbours found within the batch by ``conditions['index']`` (:func:`persona.audio_nets.gather_neighbour_windows` with ``pad="own"``;
a neighbour missing from the batch takes the frame's own window, so a lone frame renders with
its plain code). In training, neighbours come from the whole training video (zeros past its
ends, as AD-NeRF pads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from persona.profiles import config_for
from persona.baselines.nerf_core import ConditionedNeRF, NeRFBaseline, NeRFConfig, nerf_profiles, per_image
from persona.audio_nets import AUDIO_DIM, AUDIO_SMOOTH_FRAMES, AudioAttNet, AudioNet, gather_neighbour_windows


@dataclass
class AdnerfConfig(NeRFConfig):
    """AD-NeRF's sizes; ``smooth_warmup``: steps before the attention smoothing starts."""

    audio_dim: int = AUDIO_DIM
    smooth_warmup: int = 200_000
    attention_lr_scale: float = 5.0


PROFILES: dict[str, AdnerfConfig] = nerf_profiles(
    AdnerfConfig,
    paper=dict(iterations=400_000, density_noise_std=0.0, smooth_warmup=200_000, checkpoint_every=10_000),
    default=dict(smooth_warmup=250),
    smoke=dict(smooth_warmup=10),
)


class AudioConditioned(NeRFBaseline):
    """Audio code of a frame (AudioNet, then AudioAttNet over 8 neighbours after the warm-up).

    Subclasses add ``net.audio_net`` / ``net.audio_att`` with :meth:`_add_audio_nets`.
    """

    def _add_audio_nets(self, net: nn.Module) -> None:
        net.audio_net = AudioNet(self.config.audio_dim)
        net.audio_att = AudioAttNet(self.config.audio_dim, AUDIO_SMOOTH_FRAMES)

    def _init_from_data(self, frames: dict[str, torch.Tensor]) -> None:
        super()._init_from_data(frames)
        track = {int(i): a for i, a in zip(frames["index"].tolist(), frames["audio"])}
        # [N,8,16,29]: windows of frames index-4 .. index+3 (zeros past the ends, as AD-NeRF pads)
        self._train_neighbours = gather_neighbour_windows(frames["index"], frames["audio"], track)

    def smoothing(self, step: int) -> bool:
        return step >= self.config.smooth_warmup

    def audio_code(self, conditions: dict[str, torch.Tensor], positions: torch.Tensor | None, step: int) -> torch.Tensor:
        """-> [B,audio_dim]. Training (``positions`` given): neighbours from the training frames."""
        audio = torch.as_tensor(conditions["audio"]).float()
        if audio.dim() != 3 or tuple(audio.shape[1:]) != (16, 29):
            raise ValueError(f"{self.name}: conditions['audio'] [B,16,29] expected, got {list(audio.shape)}")
        windows = None
        if self.smoothing(step):
            if positions is not None:
                windows = self._train_neighbours[positions]
            elif "audio_neighbours" in conditions:
                windows = torch.as_tensor(conditions["audio_neighbours"]).float()
            else:
                windows = gather_neighbour_windows(torch.as_tensor(conditions["index"]).view(-1), audio, pad="own")
        if windows is None:
            return self.net.audio_net(audio)
        b = windows.shape[0]
        codes = self.net.audio_net(windows.reshape(-1, 16, 29)).view(b, AUDIO_SMOOTH_FRAMES, -1)
        return self.net.audio_att(codes)

    def _param_groups(self) -> list[dict[str, Any]]:
        att = set(id(p) for p in self.net.audio_att.parameters())
        rest = [p for p in self.net.parameters() if p.requires_grad and id(p) not in att]
        return [{"params": rest, "lr_scale": 1.0},
                {"params": list(self.net.audio_att.parameters()), "lr_scale": self.config.attention_lr_scale}]


class ADNeRF(AudioConditioned):
    """AD-NeRF's head NeRF on our data protocol (see module docstring)."""

    name = "adnerf"

    def _build(self, num_frames: int, resolution: int) -> nn.Module:
        c = self.config

        def nerf() -> ConditionedNeRF:
            return ConditionedNeRF(c.audio_dim, c.width, c.depth, c.skip, c.dir_width, c.dir_depth, c.xyz_freqs, c.dir_freqs)

        net = nn.Module()
        net.coarse, net.fine = nerf(), nerf()
        self._add_audio_nets(net)
        return self._attach_common(net, num_frames, resolution)

    def _context(self, conditions: dict[str, torch.Tensor], positions: torch.Tensor | None, step: int, training: bool) -> Any:
        return per_image(self.audio_code(conditions, positions, step))

    def _field(self, ctx: Any, level: str, points: torch.Tensor, dirs: torch.Tensor, order: torch.Tensor | None = None):
        rgb, sigma = getattr(self.net, level)(self._normalise(points), dirs, ctx)
        return rgb, sigma, torch.zeros(())


def build_method(cfg: dict | None = None, **kw: Any) -> ADNeRF:
    """AD-NeRF from ``PROFILES[profile]`` with ``cfg``/``kw`` overrides (``profile`` may be either)."""
    return ADNeRF(config_for(PROFILES, "default", {**(cfg or {}), **kw}))
