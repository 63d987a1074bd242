"""Seeded, untrained NerFACE / AD-NeRF / DFRF models and what they render, for the stored-reference
test of the NeRF baselines (tests/test_baselines_nerf.py::test_renders_match_stored_reference).

``python tests/nerf_reference.py`` rewrites tests/data/nerf_reference.npz; it was written by the
code before the rendering speed-ups (persona/baselines/nerf_core.py, dfrf.py), so the test checks
that the fast paths render the same images and the same training-mode ray colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from persona import cameras
from persona.baselines import adnerf, dfrf, nerface

from persona.baselines.nerf_core import load_frames, pixel_uv, render_rays

REFERENCE = Path(__file__).parent / "data" / "nerf_reference.npz"
RES = 12
# DFRF from its own random weights (pretrain_steps 0: no base model loaded)
BUILDERS = {"nerface": nerface.build_method, "adnerf": adnerf.build_method,
            "dfrf": lambda cfg: dfrf.build_method({**cfg, "pretrain_steps": 0})}


class Frames(torch.utils.data.Dataset):
    """Six random frames at 12 px (random colours, cameras, expressions, audio)."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.root, self.split, self.resolution = "reference", "train", RES
        self.samples = [{"image": torch.rand(3, RES, RES, generator=g) * 2 - 1,
                         "camera": torch.as_tensor(cameras.camera_label(float(10 * i - 25), float(3 * i - 8))).float(),
                         "expression": torch.randn(76, generator=g), "audio": torch.randn(16, 29, generator=g),
                         "index": i, "mouth_box": torch.tensor([0.3, 0.5, 0.7, 0.8])} for i in range(6)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def seeded(name: str, step: int = 0):
    """A ``name`` baseline (smoke sizes, 3 references, render chunk 50 rays) with random weights."""
    extra = {"num_references": 3} if name == "dfrf" else {}
    method = BUILDERS[name]({"profile": "smoke", "render_chunk": 50, **extra})
    frames = load_frames(Frames())
    method.resolution = RES
    torch.manual_seed(1)
    method.net = method._build(len(frames["image"]), RES)
    method.net.train_index.copy_(frames["index"])
    method._init_from_data(frames)
    with torch.no_grad():
        for p in method.net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
        if name == "dfrf":  # offsets of a few pixels, so the deformation path matters
            for p in method.net.offsets.parameters():
                p.copy_(0.3 * torch.randn(p.shape))
    method.net.eval()
    method.step = step
    return method, frames


def outputs(name: str) -> dict[str, np.ndarray]:
    """Eval renders of 2 frames (before and, for the audio methods, after the smoothing warm-up) and
    training-mode coarse/fine colours of 40 rays drawn with a seeded generator."""
    out = {}
    method, frames = seeded(name)
    batch = {k: v[:2] for k, v in frames.items()}
    out[f"{name}/render"] = method.render(batch, batch["camera"]).numpy()
    if name != "nerface":
        method.step = 10 ** 7
        out[f"{name}/render_smoothed"] = method.render(batch, batch["camera"]).numpy()
        method.step = 0
    torch.manual_seed(2)
    positions = torch.tensor([1, 4])
    pixels = torch.randint(0, RES * RES, (2, 20), generator=torch.Generator().manual_seed(3))
    origins, dirs = cameras.rays(frames["camera"][positions], pixel_uv(pixels, RES))
    ctx = method._context({k: v[positions] for k, v in frames.items()}, positions, 0, training=True)
    background = torch.full((2, 20, 3), 0.5)
    rays = render_rays(lambda lvl, p, d, order: method._field(ctx, lvl, p, d, order), origins, dirs, background, method.ray_settings, True,
                       torch.Generator().manual_seed(4))
    out[f"{name}/train_coarse"] = rays["coarse"].detach().numpy()
    out[f"{name}/train_fine"] = rays["fine"].detach().numpy()
    out[f"{name}/train_extra"] = np.asarray(float(rays["extra_loss"].detach()))
    return out


def all_outputs() -> dict[str, np.ndarray]:
    return {k: v for name in BUILDERS for k, v in outputs(name).items()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.savez(REFERENCE, **all_outputs())
    print(f"wrote {REFERENCE}")
