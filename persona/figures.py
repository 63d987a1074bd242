"""Figures laid out like the paper's: method comparisons at the video camera and at novel views,
zoomed mouths, basis visualisations, samples of the generic prior, the synthetic world's overview.
Every function returns the written paths (PNG + PDF).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from persona.evaluate import method_inputs as input_conditions
from persona.report import image_grid, save_figure


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
        if not same_view and not method.supports_novel_views:
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


@torch.no_grad()
def cross_identity_figure(methods: Mapping[str, Any], clips: Sequence[Any], audio_labels: set[str], path: Path, n: int = 4,
                          title: str | None = None) -> list[Path]:
    """Cross-identity reenactment of one pair (A driven by B): for each clip
    (:class:`persona.cross_identity.DrivingClip`; the 3DMM pair, then the audio pair) a row of B's
    driving frames, a row of A's re-rendered ground truth, then a row per method driven by that
    clip (methods labelled in ``audio_labels`` by the audio clip, the others by the first one).
    Columns: ``n`` evenly spaced frames of the clip."""
    from persona.cross_identity import render_clip

    rows, labels = [], []
    for c, clip in enumerate(clips):
        picks = np.linspace(0, len(clip) - 1, n).round().astype(int).tolist()
        kind = "audio" if c else "3DMM"
        rows += [list(clip.conditions["image"][picks]), list(clip.truth[picks])]
        labels += [f"B drives ({kind})", "A truth"]
        for label, method in methods.items():
            if (label in audio_labels) == bool(c):
                rows.append(list(render_clip(method, clip, picks)))
                labels.append(label)
    return image_grid(rows, path, row_labels=labels, col_labels=[f"frame {j + 1} of {n}" for j in range(n)], title=title)


def figure_samples(video: Path, n: int, novel_views: Sequence[str] = ("yaw-25", "yaw+25")) -> tuple[list[dict], list[list[Any]]]:
    """``n`` evenly spaced test frames of ``video`` and, for each, the cameras of ``novel_views``
    (names of :data:`persona.cameras.NOVEL_VIEWS`)."""
    from persona import cameras
    from persona.data.dataset import FrameDataset

    test = FrameDataset(video, "test")
    picks = np.linspace(0, len(test) - 1, n + 2)[1:-1].round().astype(int) if n else []
    samples = [test[int(i)] for i in picks]
    cams = [[cameras.novel_view(s["camera"], *cameras.NOVEL_VIEWS[v]) for v in novel_views] for s in samples]
    return samples, cams


def prior_samples_figure(grid: torch.Tensor, path: Path, yaws_deg: Sequence[float] | None = None) -> list[Path]:
    """``grid [N,M,3,H,W]`` in [-1,1] (see :func:`persona.eg3d.rendering.render_yaw_grid`) -> PNG and
    PDF figure (rows = random z, columns = yaw)."""
    from persona.eg3d.rendering import SAMPLE_YAWS_DEG

    rows = [list(row) for row in grid.clamp(-1, 1)]
    return image_grid(rows, Path(path), row_labels=[f"z{i}" for i in range(len(rows))],
                      col_labels=[f"yaw {y:+.0f}°" for y in (yaws_deg or SAMPLE_YAWS_DEG)])


def prior_figure(G: Any, path: Path, seed: int = 0, n: int = 6) -> list[Path]:
    """Samples of the generic prior from ``n`` random z, each at five yaw angles (PNG + PDF)."""
    from persona.eg3d.rendering import render_yaw_grid

    z = torch.randn(n, int(G.z_dim), generator=torch.Generator().manual_seed(seed))
    return prior_samples_figure(render_yaw_grid(G, z), Path(path))


def data_figure(path: Path, seed: int = 0, identities: int = 5, resolution: int = 128) -> list[Path]:
    """Identities x expressions and the novel-view ground truth of the benchmark's identities (PNG + PDF)."""
    from persona.data import world

    return data_overview_figure(world.benchmark_identity_seeds(identities, seed), path, resolution)


def data_overview_figure(identity_seeds: Sequence[int], path: Path, resolution: int = 128) -> list[Path]:
    """The synthetic world (PNG + PDF): rows = identities; columns = expressions (neutral, jaw open, smile,
    blink + brow raise, lip round) then the novel-view ground truth (NOVEL_VIEWS) of the neutral
    face."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona import cameras
    from persona.data import world as S

    def expr(**dims):
        e = np.zeros(S.EXPRESSION_DIM, np.float32)
        for k, v in dims.items():
            e[getattr(S, k)] = v
        return e

    columns = [("neutral", expr(), (0, 0)), ("jaw open", expr(JAW_OPEN=1.0), (0, 0)),
               ("smile", expr(SMILE=1.0, JAW_OPEN=0.25), (0, 0)), ("blink + brows", expr(BLINK=1.0, BROW_RAISE=1.0), (0, 0)),
               ("lip round", expr(LIP_ROUND=1.0, JAW_OPEN=0.35), (0, 0))]
    talk = expr(JAW_OPEN=0.6, LIP_STRETCH=0.3)
    columns += [(f"GT {name}", talk, d) for name, d in cameras.NOVEL_VIEWS.items()]
    fig, axes = plt.subplots(len(identity_seeds), len(columns), figsize=(1.3 * len(columns), 1.4 * len(identity_seeds)),
                             squeeze=False)
    base = cameras.camera_label(0, 0)
    for r, seed in enumerate(identity_seeds):
        ident = S.sample_identity(seed)
        for c, (title, e, (dy, dp)) in enumerate(columns):
            cam = cameras.novel_view(base, dy, dp) if (dy or dp) else base
            img = S.render(ident, e, cam, resolution)
            ax = axes[r, c]
            ax.imshow(((img.transpose(1, 2, 0) + 1) / 2).clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(f"id seed {seed}" + (" (glasses)" if ident.glasses else ""), fontsize=6)
    fig.tight_layout(pad=0.3)
    return save_figure(fig, path)
