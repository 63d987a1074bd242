"""The stand-in for FFHQ: random pool identities, expressions and FFHQ-like cameras, rendered."""

from __future__ import annotations

import torch

from persona import cameras
from persona.data.world.expression import sample_expressions
from persona.data.world.identity import PRIOR_POOL_SIZE, _prior_identities
from persona.data.world.render import render_batch

def sample_cameras(batch: int, generator: torch.Generator | None = None, yaw_std_deg: float = 18.0,
                   pitch_std_deg: float = 8.0, max_yaw_deg: float = 45.0, max_pitch_deg: float = 25.0,
                   roll_std_deg: float = 0.0) -> torch.Tensor:
    """Random look-at cameras around the pivot [B,25] (FFHQ-like pose spread: mostly frontal)."""
    yaw = (torch.randn(batch, generator=generator) * yaw_std_deg).clamp(-max_yaw_deg, max_yaw_deg)
    pitch = (torch.randn(batch, generator=generator) * pitch_std_deg).clamp(-max_pitch_deg, max_pitch_deg)
    return cameras.labels_from_angles(yaw, pitch)


def sample_prior_batch(batch: int, resolution: int, generator: torch.Generator | None = None,
                       supersample: int | None = None) -> dict[str, torch.Tensor]:
    """The stand-in for FFHQ: {'image' [B,3,H,W] in [-1,1], 'camera' [B,25]}.

    Random identity from a pool of ``PRIOR_POOL_SIZE`` (disjoint from the benchmark identities),
    random expression (:func:`sample_expressions`), random camera (:func:`sample_cameras`).
    """
    idx = torch.randint(0, PRIOR_POOL_SIZE, (batch,), generator=generator)
    ident = _prior_identities(idx)
    expressions = sample_expressions(batch, generator)
    camera = sample_cameras(batch, generator)
    image = render_batch(ident, expressions, camera, resolution, supersample=supersample)
    return {"image": image, "camera": camera}
