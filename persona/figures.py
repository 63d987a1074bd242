"""Figures laid out like the paper's: method comparisons at the video camera and at novel views,
zoomed mouths, basis visualisations. Every function returns the written paths (PNG + PDF).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from persona.evaluate import method_inputs as input_conditions
from persona.report import image_grid


def as_batch(samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """A list of dataset samples -> a batch dict (strings dropped)."""
    keep = [{k: v for k, v in s.items() if not isinstance(v, str)} for s in samples]
    return default_collate(keep)




@torch.no_grad()
def render_at(method: Any, sample: Mapping[str, Any], cameras: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Render one sample's conditions at each camera [25]; None where the method cannot."""
    cond = as_batch([input_conditions(sample)] * len(cameras))
    cams = torch.stack([torch.as_tensor(c, dtype=torch.float32) for c in cameras])
    out: list[torch.Tensor | None] = []
    for i in range(len(cameras)):
        same_view = torch.allclose(cams[i], cond["camera"][i].float())
        if not same_view and not getattr(method, "supports_novel_views", True):
            out.append(None)
            continue
        one = {k: v[i:i + 1] for k, v in cond.items()}
        out.append(method.render(one, cams[i:i + 1])[0])
    return out


def mouth_zoom(image: torch.Tensor | None, box: Sequence[float], size: int | None = None) -> torch.Tensor | None:
    """Crop ``box`` (x0,y0,x1,y1 in [0,1]) of a [3,H,W] image and upscale it (nearest) to ``size``."""
    if image is None:
        return None
    _, h, w = image.shape
    x0, y0, x1, y1 = (float(b) for b in box)
    crop = image[:, max(0, int(y0 * h)):max(int(y0 * h) + 1, int(round(y1 * h))),
                 max(0, int(x0 * w)):max(int(x0 * w) + 1, int(round(x1 * w)))]
    size = size or h
    return F.interpolate(crop[None], size=(size, size * crop.shape[2] // max(1, crop.shape[1])), mode="nearest")[0]


def comparison_figure(methods: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], novel_cameras: Sequence[Sequence[torch.Tensor]],
                      path: Path, title: str | None = None, zoom_mouth: bool = False) -> list[Path]:
    """Rows: samples. Columns: ground truth, then for each method its render at the video camera
    followed by its renders at ``novel_cameras[row]`` ("n/a" cells for 2-D methods); with
    ``zoom_mouth`` an extra column per method shows its mouth region enlarged."""
    rows, col_labels = [], ["ground truth"]
    for r, sample in enumerate(samples):
        gt = sample.get("source_image", sample["image"])
        row: list[Any] = [gt]
        if zoom_mouth:
            row.append(mouth_zoom(gt, sample["mouth_box"]))
        for label, method in methods.items():
            cams = [input_conditions(sample)["camera"], *novel_cameras[r]]
            renders = render_at(method, sample, cams)
            row += renders
            if zoom_mouth:
                row.append(mouth_zoom(renders[0], sample["mouth_box"]))
            if r == 0:
                col_labels += [label] + [f"{label} novel {i + 1}" for i in range(len(cams) - 1)]
                col_labels += [f"{label} mouth"] if zoom_mouth else []
        rows.append(row)
    if zoom_mouth:
        col_labels.insert(1, "GT mouth")
    return image_grid(rows, path, col_labels=col_labels, title=title)


@torch.no_grad()
def basis_directions_figure(panels: Mapping[str, Any], camera: torch.Tensor, path: Path, n_vectors: int = 6,
                            strength: float = 2.0, title: str | None = None) -> list[Path]:
    """Figure 6: per panel (e.g. 'with ortho', 'without ortho') and per basis vector i (the
    ``n_vectors`` with the largest coefficient spread over the training frames): renders of
    ``mean alpha + t * std_i * e_i`` for t in (-strength, 0, +strength)."""
    rows, labels = [], []
    for name, explorer in panels.items():
        for i in explorer.order[:n_vectors]:
            images = []
            for t in (-strength, 0.0, strength):
                alpha = explorer.mean.clone()
                alpha[i] += t * explorer.std[i]
                images.append(explorer.render(alpha, camera))
            rows.append(images)
            labels.append(f"{name}: b{i}")
    return image_grid(rows, path, row_labels=labels, col_labels=[f"-{strength}σ", "mean", f"+{strength}σ"], title=title)
