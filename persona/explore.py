"""Explore a learned personalized basis: coefficients ordered by their spread over the training
frames, renders of any coefficient vector at any yaw/pitch, and an ipywidgets panel.

The widget's update logic is :meth:`BasisExplorer.update`, a plain method, so it is tested
without a browser; ``widget()`` only wires sliders to it (``continuous_update=False``).
"""

from __future__ import annotations

import io
from typing import Any, Callable, Mapping

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
        slider for any other coefficient, yaw/pitch sliders, an optional run picker, live render.

        Switching runs relabels the sliders to the new run's coefficients and resets them to its
        mean; while a run loads (or trains, the first time) a status line says so and its progress
        goes to a log below the panel, not to Jupyter's log console. The image keeps its own
        size (never stretched to the controls' height)."""
        import ipywidgets as w

        px = 64 * scale
        image = w.Image(format="png", layout=w.Layout(width=f"{px}px", height=f"{px}px", flex="0 0 auto",
                                                      object_fit="contain"))
        status = w.HTML()
        log = w.Output(layout=w.Layout(max_height="8em", overflow="auto"))
        state = {"explorer": self, "quiet": False}

        def png(arr: np.ndarray) -> bytes:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST).save(buf, "PNG")
            return buf.getvalue()

        def slider(desc: str, lo: float, hi: float, value: float = 0.0):
            return w.FloatSlider(value=value, min=lo, max=hi, step=0.1, description=desc, continuous_update=False)

        top = [slider("", -3, 3) for _ in range(top_n)]
        other_pick = w.Dropdown(description="other")
        other = slider("value", -3, 3)
        yaw, pitch = slider("yaw°", -45, 45), slider("pitch°", -30, 30)

        def refresh(*_):
            if state["quiet"]:
                return
            ex = state["explorer"]
            coeffs = {ex.order[j]: s.value for j, s in enumerate(top) if j < len(ex.order)}
            if other_pick.value is not None and other_pick.value >= 0:
                coeffs[other_pick.value] = other.value
            image.value = png(ex.update(coeffs, yaw.value, pitch.value))

        def bind(ex: "BasisExplorer") -> None:
            """Label the sliders with ``ex``'s coefficients and reset them (one render after)."""
            state["quiet"] = True
            try:
                for j, s in enumerate(top):
                    s.description = f"b{ex.order[j]}" if j < len(ex.order) else "-"
                    s.value = 0.0
                    s.layout.visibility = "visible" if j < len(ex.order) else "hidden"
                other_pick.options = [(f"b{i}", i) for i in ex.order[top_n:]] or [("-", -1)]
                other.value = 0.0
                ex.alpha = ex.mean.clone()
            finally:
                state["quiet"] = False
            refresh()

        for s in (*top, other, yaw, pitch, other_pick):
            s.observe(refresh, names="value")
        children = []
        if runs:
            picker = w.Dropdown(options=list(runs), description="run")

            def pick(change):
                name = change["new"]
                status.value = f"<i>loading run <b>{name}</b> (the first time it trains: see the log below) …</i>"
                picker.disabled = True
                try:
                    with log:
                        ex = runs[name]()
                finally:
                    picker.disabled = False
                state["explorer"] = ex
                bind(ex)
                status.value = f"run <b>{name}</b>: k = {len(ex.order)} coefficients"

            picker.observe(pick, names="value")
            children.append(picker)
            status.value = f"run <b>{next(iter(runs))}</b>: k = {len(self.order)} coefficients"
        bind(self)
        controls = w.VBox([w.HTML("<b>coefficients (σ from the mean), largest spread first</b>"), *top, other_pick, other, yaw, pitch])
        panel = w.HBox([controls, image], layout=w.Layout(align_items="flex-start"))
        return w.VBox([*children, status, panel, log])
