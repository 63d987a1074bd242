"""The synthetic world's expression model: 76-d coefficients (NerFACE's dimension) -> face controls.

A fixed matrix maps the 76-d coefficient vector to a dozen face controls; eight dimensions have
large visible effects (:data:`JAW_OPEN`, :data:`LIP_STRETCH`, :data:`LIP_ROUND`, :data:`SMILE`,
:data:`BROW_RAISE`, :data:`BLINK`, :data:`BROW_FROWN`, :data:`JAW_SIDE`), the other 68 small ones
(gaze, small mouth and brow changes).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from persona.data.formats import EXPRESSION_DIM  # the one definition; re-exported by persona.data.world

# Large-effect expression dimensions (indices into the 76-d vector).
JAW_OPEN = 0
LIP_STRETCH = 1
LIP_ROUND = 2
SMILE = 3
BROW_RAISE = 4
BLINK = 5
BROW_FROWN = 6
JAW_SIDE = 7
LARGE_DIMS = {"JAW_OPEN": JAW_OPEN, "LIP_STRETCH": LIP_STRETCH, "LIP_ROUND": LIP_ROUND, "SMILE": SMILE,
              "BROW_RAISE": BROW_RAISE, "BLINK": BLINK, "BROW_FROWN": BROW_FROWN, "JAW_SIDE": JAW_SIDE}
NUM_LARGE = len(LARGE_DIMS)

# Face controls driven linearly by the expression (see _expression_matrix).
_CONTROLS = ("mouth_open", "mouth_width", "pucker", "corner_up", "brow_up", "lid", "frown", "jaw_x",
             "gaze_x", "gaze_y", "cheek", "lip_press")
NUM_CONTROLS = len(_CONTROLS)
_C = {name: i for i, name in enumerate(_CONTROLS)}


@lru_cache(maxsize=1)
def _expression_matrix() -> torch.Tensor:
    """Fixed linear map [NUM_CONTROLS, 76] from expression coefficients to face controls."""
    rng = np.random.default_rng(20230224)
    a = np.zeros((NUM_CONTROLS, EXPRESSION_DIM))
    a[_C["mouth_open"], JAW_OPEN] = 1.0
    a[_C["mouth_width"], LIP_STRETCH] = 1.0
    a[_C["mouth_width"], LIP_ROUND] = -0.6
    a[_C["mouth_width"], SMILE] = 0.5
    a[_C["pucker"], LIP_ROUND] = 1.0
    a[_C["corner_up"], SMILE] = 1.0
    a[_C["brow_up"], BROW_RAISE] = 1.0
    a[_C["lid"], BLINK] = 1.0
    a[_C["lid"], SMILE] = 0.12
    a[_C["frown"], BROW_FROWN] = 1.0
    a[_C["jaw_x"], JAW_SIDE] = 1.0
    a[_C["cheek"], SMILE] = 0.6
    small = rng.normal(0.0, 0.035, (NUM_CONTROLS, EXPRESSION_DIM - NUM_LARGE))
    small[_C["gaze_x"]] *= 4.0
    small[_C["gaze_y"]] *= 4.0
    small[_C["lip_press"]] *= 3.0
    a[:, NUM_LARGE:] = small
    return torch.tensor(a, dtype=torch.float32)


def expression_controls(expressions: torch.Tensor) -> torch.Tensor:
    """[B,76] coefficients -> [B,NUM_CONTROLS] face controls (linear, then clamped to ranges)."""
    c = expressions.float() @ _expression_matrix().T
    lo = torch.tensor([0, -1, 0, -1, -1, 0, -0.5, -1, -1, -1, -0.5, -1.0])
    hi = torch.tensor([1.2, 1.2, 1.2, 1.2, 1.2, 1.0, 1.2, 1, 1, 1, 1.2, 1.0])
    return torch.maximum(torch.minimum(c, hi), lo)


def sample_expressions(batch: int, generator: torch.Generator | None = None, small_scale: float = 1.0) -> torch.Tensor:
    """Random expressions [B,76]: varied large dims (open mouths, smiles, blinks...) + small dims."""
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    e = torch.randn(batch, EXPRESSION_DIM, generator=g) * 0.5 * small_scale
    e[:, JAW_OPEN] = rand(batch) ** 1.5 * (rand(batch) < 0.75)
    e[:, LIP_STRETCH] = (rand(batch) * 2 - 1) * 0.8
    e[:, LIP_ROUND] = rand(batch) * (rand(batch) < 0.3)
    e[:, SMILE] = (rand(batch) * 1.6 - 0.5) * (rand(batch) < 0.6)
    e[:, BROW_RAISE] = (rand(batch) * 2 - 1) * (rand(batch) < 0.5)
    e[:, BLINK] = torch.where(rand(batch) < 0.15, torch.ones(batch), rand(batch) * 0.3)
    e[:, BROW_FROWN] = rand(batch) * (rand(batch) < 0.25)
    e[:, JAW_SIDE] = (rand(batch) * 2 - 1) * 0.5 * (rand(batch) < 0.3)
    return e
