"""Explore a learned personalized basis: coefficients ordered by their spread over the training
frames, renders of any coefficient vector at any yaw/pitch, and an ipywidgets panel.

The widget's update logic is :meth:`BasisExplorer.update`, a plain method, so it is tested
without a browser; ``widget()`` only wires sliders to it (``continuous_update=False``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from persona import cameras
from persona.report import to_uint8


class BasisExplorer:
    """``method``: a trained ours-method (``.model.basis``, ``.model.synthesize``, ``.alphas``);
    ``alphas`` [N,k]: coefficients of the training frames (their mean and std set slider ranges)."""

    def __init__(self, method: Any, alphas: torch.Tensor):
        self.method = method
        alphas = torch.as_tensor(alphas, dtype=torch.float32)
        self.mean = alphas.mean(0)
        self.std = alphas.std(0) if alphas.shape[0] > 1 else torch.ones_like(self.mean)
        self.order = [int(i) for i in torch.argsort(self.std, descending=True)]
        self.alpha = self.mean.clone()
        self.yaw_deg = 0.0
        self.pitch_deg = 0.0
        self.last_image: np.ndarray | None = None

    @classmethod
    def from_run(cls, method: Any, train_ds: Any, max_frames: int = 256) -> "BasisExplorer":
        from persona.figures import as_batch

        idx = np.linspace(0, len(train_ds) - 1, min(max_frames, len(train_ds))).round().astype(int)
        batch = as_batch([train_ds[int(i)] for i in idx])
        return cls(method, method.alphas(batch))

    @torch.no_grad()
    def render(self, alpha: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """alpha [k], camera [25] -> image [3,H,W] in [-1,1]."""
        model = self.method.model
        ws = model.basis(torch.as_tensor(alpha, dtype=torch.float32)[None])
        return model.synthesize(ws, torch.as_tensor(camera, dtype=torch.float32)[None])[0].clamp(-1, 1)

    def camera(self) -> torch.Tensor:
        return torch.as_tensor(cameras.camera_label(self.yaw_deg, self.pitch_deg), dtype=torch.float32)

    def update(self, coefficient: Mapping[int, float] | None = None, yaw_deg: float | None = None,
               pitch_deg: float | None = None) -> np.ndarray:
        """Set coefficients (index -> value in units of that coefficient's std around its mean)
        and/or the view, render, and return the image [H,W,3] uint8."""
        for i, value in (coefficient or {}).items():
            self.alpha[i] = self.mean[i] + float(value) * self.std[i]
        if yaw_deg is not None:
            self.yaw_deg = float(yaw_deg)
        if pitch_deg is not None:
            self.pitch_deg = float(pitch_deg)
        self.last_image = to_uint8(self.render(self.alpha, self.camera()))
        return self.last_image

    def reset(self) -> np.ndarray:
        self.alpha = self.mean.clone()
        return self.update()

    def widget(self, top_n: int = 8, runs: Mapping[str, Callable[[], "BasisExplorer"]] | None = None, scale: int = 4):
        """An ipywidgets panel: a slider per top-``top_n`` coefficient (by spread), a selector and
        slider for any other coefficient, yaw/pitch sliders, an optional run picker, live render."""
        import ipywidgets as w

        image = w.Image(format="png", width=64 * scale)
        state = {"explorer": self}

        def png(arr: np.ndarray) -> bytes:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST).save(buf, "PNG")
            return buf.getvalue()

        def slider(desc: str, lo: float, hi: float, value: float = 0.0):
            return w.FloatSlider(value=value, min=lo, max=hi, step=0.1, description=desc, continuous_update=False)

        top = [slider(f"b{i}", -3, 3) for i in self.order[:top_n]]
        other_pick = w.Dropdown(options=[(f"b{i}", i) for i in self.order[top_n:]] or [("-", -1)], description="other")
        other = slider("value", -3, 3)
        yaw, pitch = slider("yaw°", -45, 45), slider("pitch°", -30, 30)

        def refresh(*_):
            ex = state["explorer"]
            coeffs = {ex.order[j]: s.value for j, s in enumerate(top) if j < len(ex.order)}
            if other_pick.value is not None and other_pick.value >= 0:
                coeffs[other_pick.value] = other.value
            image.value = png(ex.update(coeffs, yaw.value, pitch.value))

        for s in (*top, other, yaw, pitch, other_pick):
            s.observe(refresh, names="value")
        children = []
        if runs:
            picker = w.Dropdown(options=list(runs), description="run")

            def pick(change):
                state["explorer"] = runs[change["new"]]()
                refresh()

            picker.observe(pick, names="value")
            children.append(picker)
        refresh()
        controls = w.VBox([w.HTML("<b>coefficients (σ from the mean), largest spread first</b>"), *top, other_pick, other, yaw, pitch])
        return w.VBox([*children, w.HBox([controls, image])])
