"""A seeded tiny tri-plane generator and what it renders (image, raw image, depth) and the gradient
of a loss w.r.t. ws, for tests/test_eg3d_generator.py::test_render_matches_stored_reference.

``python tests/eg3d_reference.py`` rewrites tests/data/eg3d_reference.npz; it was written by the
code before the rendering speed-ups of persona/eg3d (decoder plane mean, colours composited
without sorting them), so the test checks that the fast path renders the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).parent / "data" / "eg3d_reference.npz"


def outputs() -> dict[str, np.ndarray]:
    from persona.eg3d import build_generator
    from persona.eg3d.bench import _frontal_cameras

    torch.manual_seed(0)
    G = build_generator("tiny")
    camera = _frontal_cameras(2, torch.device("cpu"))
    camera[1, 3] += 0.3  # a second, shifted view
    ws = G.mapping(torch.randn(2, G.z_dim), camera).detach().requires_grad_(True)
    torch.manual_seed(1)  # the depth jitter
    out = G.synthesis(ws, camera)
    (out["image"].square().mean() + out["image_raw"].square().mean()).backward()
    return {"image": out["image"].detach().numpy(), "image_raw": out["image_raw"].detach().numpy(),
            "image_depth": out["image_depth"].detach().numpy(), "grad_ws": ws.grad.numpy()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.savez(REFERENCE, **outputs())
    print(f"wrote {REFERENCE}")
