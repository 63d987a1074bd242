"""The NeRF pieces shared by the NerFACE, AD-NeRF and DFRF baselines, and their training loop.

One implementation of each idea, used by all three (see ``docs/CONTRACTS.md``):

- :func:`positional_encoding` - NeRF's sin/cos features at log-spaced frequencies.
- :class:`ConditionedNeRF` - the MLP trunk with one skip connection, a density head and a
  view-dependent colour branch, conditioned by a vector concatenated to the encoded point.
- pixel rays and projection come from :mod:`persona.cameras` (:func:`~persona.cameras.rays`,
  :func:`~persona.cameras.project_with_depth`; pixel ``(u, v)`` in [0,1], ``u`` right, ``v`` down).
- :func:`ray_bounds`, :func:`stratified_depths`, :func:`sample_pdf` - coarse (stratified)
  and fine (inverse-CDF, hierarchical) samples along each ray.
- :func:`composite` - alpha compositing with a static background composited through the last
  sample (its colour replaced by the background, its alpha forced to 1, as NerFACE/AD-NeRF do).
- :func:`render_rays` - coarse + fine rendering of a ray batch through any field.
- :func:`face_boxes`, :func:`sample_ray_pixels` - rays drawn mostly inside a face box.
- :class:`NeRFBaseline` - data loading, the training loop (Adam, exponential lr decay,
  coarse + fine photometric loss), safetensors checkpoints with resume, and image rendering;
  each baseline fills in its conditioning through four small hooks.

Coordinates: the head NeRFs live in world space, which is the canonical head space of our data
(each camera already expresses the head pose relative to a canonical head). Points are
normalised as ``(x - PIVOT) / scene_radius`` before encoding, so the frequencies see a [-1,1]
box. Colours are in [0,1] inside the NeRF (as in the originals) and [-1,1] at the interface.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from persona.errors import PersonaFileError, PersonaInputError
from persona.methods import Method
from persona.profiles import torch_device, with_dry_run
from persona.runs import RunDir, prefixed, restore_training_state, run_record, training_state, unprefixed

from persona.cameras import PIVOT, rays


# --------------------------------------------------------------------------------------------
# Encoding and the MLP
# --------------------------------------------------------------------------------------------


def encoded_dim(in_dim: int, num_freqs: int, include_input: bool = True) -> int:
    """Width of :func:`positional_encoding` of an ``in_dim`` vector."""
    return in_dim * (2 * num_freqs + (1 if include_input else 0))


def positional_encoding(x: torch.Tensor, num_freqs: int, include_input: bool = True) -> torch.Tensor:
    """NeRF's encoding ``[x, sin(x), cos(x), sin(2x), cos(2x), ...]`` (frequencies 2^k, k < num_freqs):
    [...,D] -> [...,D*(2F+1)]."""
    parts = [x] if include_input else []
    if num_freqs > 0:
        freqs = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)  # log sampling
        scaled = freqs[:, None] * x.unsqueeze(-2)  # [...,F,D]
        parts.append(torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2).flatten(-3))  # [...,F*2*D]
    return torch.cat(parts, dim=-1)


class ConditionedNeRF(nn.Module):
    """NeRF MLP conditioned on a vector: (point, direction, condition) -> (rgb, raw density).

    Trunk: ``depth`` linear+ReLU layers of ``width``; layer ``skip`` receives the input
    (encoded point ++ condition) again. Then a linear feature layer, a density head, and a
    colour branch of ``dir_depth`` layers of ``dir_width`` on (feature ++ encoded direction).
    NerFACE's paper model: depth 6, skip 3, width 256, colour branch 3 x 128; AD-NeRF/DFRF:
    depth 8, skip 5 (concatenation after the 5th layer), width 256, colour branch 3 x 128.

    The condition enters through its own linear map added to the first (and skip) layer -
    the same function as concatenating it, but computed at the condition's own shape, so a
    per-image condition [B,1,1,C] is not copied to every sample. The same holds for every other
    concatenation of the model: the skip layer adds a map of the encoded point to a map of the
    hidden state, and the colour branch adds a map of the encoded direction, computed at the
    direction's shape (one per ray when ``dirs`` is [...,1,3]), to a map of the feature.
    The parameters are those of the concatenating model (``trunk[skip]``, ``branch[0]`` and
    ``cond_maps`` take the concatenated width), so checkpoints are the same.

    ``xyz`` [...,3] normalised to ~[-1,1]; ``dirs`` [...,3] unit, broadcastable to the points;
    ``cond`` [...,C] broadcastable to the points, or a tuple of parts [...,C_i] (each
    broadcastable, widths summing to C) that stand for their concatenation -> ``rgb`` [...,3]
    in [0,1] (sigmoid), ``sigma`` [...] raw (ReLU at compositing).
    """

    def __init__(self, cond_dim: int, width: int = 256, depth: int = 8, skip: int = 5, dir_width: int = 128,
                 dir_depth: int = 3, xyz_freqs: int = 10, dir_freqs: int = 4):
        super().__init__()
        if not 0 < skip < depth:
            skip = -1  # no skip for tiny trunks
        self.cond_dim, self.skip, self.xyz_freqs, self.dir_freqs = cond_dim, skip, xyz_freqs, dir_freqs
        self.width = width
        xyz_dim = encoded_dim(3, xyz_freqs)
        self.trunk = nn.ModuleList()
        self.cond_maps = nn.ModuleDict()
        for i in range(depth):
            extra = xyz_dim if i in (0, skip) else 0
            self.trunk.append(nn.Linear((width if i > 0 else 0) + extra, width))
            if i in (0, skip) and cond_dim > 0:
                self.cond_maps[str(i)] = nn.Linear(cond_dim, width, bias=False)
        self.feature = nn.Linear(width, width)
        self.density = nn.Linear(width, 1)
        branch = [nn.Linear(width + encoded_dim(3, dir_freqs), dir_width)]
        branch += [nn.Linear(dir_width, dir_width) for _ in range(dir_depth - 1)]
        self.branch = nn.ModuleList(branch)
        self.color = nn.Linear(dir_width, 3)

    def _condition(self, i: int, cond: torch.Tensor | tuple[torch.Tensor, ...] | None) -> torch.Tensor | None:
        """The condition's term of layer ``i`` (at the condition's shape), or None."""
        if str(i) not in self.cond_maps:
            return None
        if cond is None:
            raise ValueError(f"ConditionedNeRF: a condition [...,{self.cond_dim}] is required")
        return split_linear(cond, self.cond_maps[str(i)].weight)

    def forward(self, xyz: torch.Tensor, dirs: torch.Tensor,
                cond: torch.Tensor | tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pe = positional_encoding(xyz, self.xyz_freqs)
        width = self.width
        h = None
        for i, layer in enumerate(self.trunk):
            if i == 0:
                h = layer(pe)
            elif i == self.skip:  # == layer(cat([h, pe])), without the copy
                h = F.linear(h, layer.weight[:, :width]) + F.linear(pe, layer.weight[:, width:], layer.bias)
            else:
                h = layer(h)
            term = self._condition(i, cond)
            if term is not None:
                h = h + term
            h = F.relu(h, inplace=True)
        sigma = self.density(h).squeeze(-1)
        h = self.feature(h)
        first = self.branch[0]  # == first(cat([h, encoded dirs])), the direction term once per ray
        h = F.linear(h, first.weight[:, :width]) + F.linear(positional_encoding(dirs, self.dir_freqs), first.weight[:, width:], first.bias)
        h = F.relu(h, inplace=True)
        for layer in self.branch[1:]:
            h = F.relu(layer(h), inplace=True)
        return torch.sigmoid(self.color(h)), sigma


def split_linear(parts: torch.Tensor | tuple[torch.Tensor, ...], weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(cat(parts, -1), weight, bias)`` without the concatenation: each part [...,C_i]
    meets its own columns of ``weight`` [O,sum C_i] at its own shape and the terms are added
    (broadcast), so a per-image or per-ray part is never copied to every sample -> [...,O]."""
    if isinstance(parts, torch.Tensor):
        return F.linear(parts, weight, bias)
    widths = [p.shape[-1] for p in parts]
    if sum(widths) != weight.shape[1]:
        raise ValueError(f"split_linear: parts of widths {widths} (sum {sum(widths)}) for a weight taking {weight.shape[1]}")
    out, lo = None, 0
    for j, part in enumerate(parts):
        term = F.linear(part, weight[:, lo:lo + widths[j]], bias if j == 0 else None)
        out = term if out is None else out + term
        lo += widths[j]
    return out


# --------------------------------------------------------------------------------------------
# Rays and samples
# --------------------------------------------------------------------------------------------


def pixel_uv(pixels: torch.Tensor, resolution: int) -> torch.Tensor:
    """Flat pixel indices [...] (row-major, ``row*res + col``) -> pixel centres (u, v) [...,2] in [0,1]."""
    row = torch.div(pixels, resolution, rounding_mode="floor")
    col = pixels - row * resolution
    return (torch.stack([col, row], dim=-1).to(torch.float32) + 0.5) / resolution


def ray_bounds(origins: torch.Tensor, dirs: torch.Tensor, scene_radius: float, pivot=PIVOT) -> tuple[torch.Tensor, torch.Tensor]:
    """Near/far [...] of each ray: a slab of half-width ``scene_radius`` around its closest approach to the pivot."""
    pivot_t = torch.as_tensor(pivot, dtype=origins.dtype, device=origins.device)
    closest = ((pivot_t - origins) * dirs).sum(-1)
    return (closest - scene_radius).clamp(min=1e-2), closest + scene_radius


def stratified_depths(near: torch.Tensor, far: torch.Tensor, num: int, perturb: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` depths per ray [...,num] between near and far [...]; jittered within bins if ``perturb``."""
    t = torch.linspace(0.0, 1.0, num, device=near.device)
    depths = near.unsqueeze(-1) * (1 - t) + far.unsqueeze(-1) * t
    if perturb and num > 1:
        mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
        upper = torch.cat([mids, depths[..., -1:]], -1)
        lower = torch.cat([depths[..., :1], mids], -1)
        depths = lower + (upper - lower) * torch.rand(depths.shape, generator=generator, device=near.device)
    return depths


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-CDF samples of a piecewise-constant pdf: bins [...,M+1], weights [...,M] -> depths [...,num]."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], -1)  # [...,M+1]
    if deterministic:
        u = torch.linspace(0.0, 1.0, num, device=bins.device).expand(*cdf.shape[:-1], num)
    else:
        u = torch.rand(*cdf.shape[:-1], num, generator=generator, device=bins.device)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.detach(), u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    span = cdf_hi - cdf_lo
    span = torch.where(span < 1e-5, torch.ones_like(span), span)
    return bin_lo + (u - cdf_lo) / span * (bin_hi - bin_lo)


def composite(rgb: torch.Tensor, sigma: torch.Tensor, depths: torch.Tensor, background: torch.Tensor | None,
              noise_std: float = 0.0, generator: torch.Generator | None = None, activation: str = "relu") -> dict[str, torch.Tensor]:
    """Alpha compositing along rays.

    ``rgb`` [...,S,3] in [0,1], ``sigma`` [...,S] raw, ``depths`` [...,S] sorted, ``background``
    [...,3] or None; ``activation`` of the raw density: ``relu`` (NeRF) or ``softplus`` (never
    dies: small CPU runs at high learning rates otherwise collapse to an empty field). With a background, the last sample takes the background colour and alpha 1,
    so whatever light passes the head shows the static background.
    -> ``rgb`` [...,3], ``weights`` [...,S], ``opacity`` [...] (head only), ``depth`` [...].
    """
    if noise_std > 0:
        sigma = sigma + noise_std * torch.randn(sigma.shape, generator=generator, device=sigma.device)
    deltas = depths[..., 1:] - depths[..., :-1]
    deltas = torch.cat([deltas, torch.full_like(deltas[..., :1], 1e10)], -1)
    if activation not in ("relu", "softplus"):
        raise ValueError(f"composite: density activation {activation!r}, expected 'relu' or 'softplus'")
    density = F.relu(sigma) if activation == "relu" else F.softplus(sigma)
    alpha = 1.0 - torch.exp(-density * deltas)
    if background is not None:
        alpha = torch.cat([alpha[..., :-1], torch.ones_like(alpha[..., -1:])], -1)
        rgb = torch.cat([rgb[..., :-1, :], background.unsqueeze(-2)], -2)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1] + 1e-10], -1), -1)
    weights = alpha * trans
    return {
        "rgb": (weights.unsqueeze(-1) * rgb).sum(-2),
        "weights": weights,
        "opacity": weights[..., :-1].sum(-1) if background is not None else weights.sum(-1),
        "depth": (weights * depths).sum(-1),
    }


@dataclass
class RaySettings:
    """Sampling along rays. ``perturb`` and ``noise_std`` apply in training only."""

    n_coarse: int
    n_fine: int
    scene_radius: float
    noise_std: float = 0.0
    activation: str = "relu"


def render_rays(field, origins: torch.Tensor, dirs: torch.Tensor, background: torch.Tensor | None, settings: RaySettings,
                training: bool, generator: torch.Generator | None = None) -> dict[str, Any]:
    """Coarse + fine volume rendering of a ray batch.

    ``field(level, points [B,R,S,3] world, dirs [B,R,1,3], order) -> (rgb [B,R,S,3], sigma [B,R,S], extra_loss)``
    (one direction per ray, broadcast over its samples); ``order`` is None for the coarse level
    and, for the fine level, [B,R,S] long: where each (sorted) fine-level sample sits in
    ``cat([coarse samples, new samples], -1)``, so a field may reuse what it computed for the
    coarse samples: ``cat([at_coarse, at_new], -2).gather(-2, order)`` (see :func:`new_samples`).
    with ``level`` in {"coarse", "fine"}; ``origins``/``dirs`` [B,R,3]; ``background`` [B,R,3] in
    [0,1] or None -> {"coarse": [B,R,3], "fine": [B,R,3] or None, "extra_loss": scalar,
    "opacity": [B,R]}. Fine samples are drawn from the coarse weights (detached) and merged with
    the coarse ones, as in NeRF.
    """
    near, far = ray_bounds(origins, dirs, settings.scene_radius)
    depths = stratified_depths(near, far, settings.n_coarse, perturb=training, generator=generator)
    noise = settings.noise_std if training else 0.0

    def run(level: str, z: torch.Tensor, order: torch.Tensor | None = None):
        pts = origins.unsqueeze(-2) + dirs.unsqueeze(-2) * z.unsqueeze(-1)
        rgb, sigma, extra = field(level, pts, dirs.unsqueeze(-2), order)
        return composite(rgb, sigma, z, background, noise, generator, settings.activation), extra

    coarse, extra = run("coarse", depths)
    out = {"coarse": coarse["rgb"], "fine": None, "extra_loss": extra, "opacity": coarse["opacity"]}
    if settings.n_fine > 0:
        mids = 0.5 * (depths[..., 1:] + depths[..., :-1])
        fine_z = sample_pdf(mids, coarse["weights"][..., 1:-1].detach(), settings.n_fine, deterministic=not training, generator=generator)
        z, order = torch.sort(torch.cat([depths, fine_z.detach()], -1), -1)
        fine, extra_fine = run("fine", z, order)
        out.update(fine=fine["rgb"], extra_loss=extra + extra_fine, opacity=fine["opacity"])
    return out


def new_samples(points: torch.Tensor, order: torch.Tensor, n_coarse: int) -> torch.Tensor:
    """The fine level's samples that the coarse level did not see: ``points`` [B,R,S,D] in sorted
    order, ``order`` [B,R,S] as :func:`render_rays` passes it -> [B,R,S-n_coarse,D], in the order
    they were drawn."""
    inverse = torch.argsort(order, dim=-1)[..., n_coarse:]  # sorted position of each new sample
    return points.gather(-2, inverse.unsqueeze(-1).expand(*inverse.shape, points.shape[-1]))


def merge_samples(at_coarse: torch.Tensor, at_new: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Values at the coarse samples [B,R,Sc,D] and at the new ones [B,R,Sn,D] -> values at the
    fine level's sorted samples [B,R,Sc+Sn,D] (``order`` as :func:`render_rays` passes it)."""
    both = torch.cat([at_coarse, at_new], -2)
    return both.gather(-2, order.unsqueeze(-1).expand(*order.shape, both.shape[-1]))


# --------------------------------------------------------------------------------------------
# Which rays to train on
# --------------------------------------------------------------------------------------------


def face_boxes(images: torch.Tensor, background: torch.Tensor | None, threshold: float = 0.08, margin: float = 0.03) -> torch.Tensor:
    """Bounding boxes of the foreground: images [N,3,H,W] in [-1,1], background [3,H,W] or None
    -> boxes [N,4] (x0,y0,x1,y1 in [0,1]). Without a background (or with no foreground pixel) the
    box is the whole image (NerFACE/AD-NeRF use a tracker's face box; ours is the pixels that
    differ from the static background)."""
    n, _, h, w = images.shape
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0]).repeat(n, 1)
    if background is None:
        return boxes
    mask = (images - background.unsqueeze(0)).abs().amax(1) > threshold  # [N,H,W]
    for i in range(n):
        rows = torch.nonzero(mask[i].any(1)).flatten()
        cols = torch.nonzero(mask[i].any(0)).flatten()
        if len(rows) == 0:
            continue
        boxes[i] = torch.tensor([cols[0] / w - margin, rows[0] / h - margin, (cols[-1] + 1) / w + margin, (rows[-1] + 1) / h + margin])
    return boxes.clamp(0.0, 1.0)


def sample_ray_pixels(boxes: torch.Tensor, num_rays: int, inside_fraction: float, resolution: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Flat pixel indices [B,num_rays]: ``inside_fraction`` of them uniform inside each box
    (x0,y0,x1,y1 in [0,1], [B,4]), the rest uniform over the whole image."""
    b = boxes.shape[0]
    n_in = int(round(num_rays * inside_fraction))
    x0 = (boxes[:, 0] * resolution).floor().clamp(0, resolution - 1)
    y0 = (boxes[:, 1] * resolution).floor().clamp(0, resolution - 1)
    x1 = (boxes[:, 2] * resolution).ceil().clamp(1, resolution)
    y1 = (boxes[:, 3] * resolution).ceil().clamp(1, resolution)
    u = torch.rand(b, n_in, 2, generator=generator)
    cols = (x0[:, None] + u[..., 0] * (x1 - x0).clamp(min=1)[:, None]).long().clamp(0, resolution - 1)
    rows = (y0[:, None] + u[..., 1] * (y1 - y0).clamp(min=1)[:, None]).long().clamp(0, resolution - 1)
    inside = rows * resolution + cols
    anywhere = torch.randint(0, resolution * resolution, (b, num_rays - n_in), generator=generator)
    return torch.cat([inside, anywhere], dim=1)


def gather_pixels(images: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """images [B,3,H,W], flat pixel indices [B,R] -> colours [B,R,3]."""
    flat = images.flatten(2)  # [B,3,H*W]
    return flat.gather(2, pixels.unsqueeze(1).expand(-1, flat.shape[1], -1)).transpose(1, 2)


# --------------------------------------------------------------------------------------------
# Data, config, and the shared training loop
# --------------------------------------------------------------------------------------------

FRAME_KEYS = ("image", "camera", "expression", "audio", "index", "mouth_box")


def load_frames(dataset, num_workers: int = 0) -> dict[str, torch.Tensor]:
    """All samples of a frame dataset stacked and sorted by frame index:
    {image [N,3,H,W] in [-1,1], camera [N,25], expression [N,76], audio [N,16,29], index [N], mouth_box [N,4]};
    decoded by ``num_workers`` DataLoader workers (0: in this process)."""
    from persona.data.dataset import stack_samples

    frames = {k: v.float() for k, v in stack_samples(dataset, FRAME_KEYS, num_workers=num_workers).items()}
    frames["index"] = frames["index"].long()
    order = torch.argsort(frames["index"])
    return {k: v[order] for k, v in frames.items()}


@dataclass
class NeRFConfig:
    """Sizes shared by the head NeRFs (each baseline's config extends this).

    ``lr_decay_steps``: steps over which the learning rate falls by 10x (NeRF's schedule,
    ``lr * 0.1 ** (step / lr_decay_steps)``). ``inside_box_fraction``: share of the rays drawn
    inside the face box. ``density_activation``: ``relu`` as the originals, ``softplus`` for the
    small CPU profiles (see :func:`composite`). ``device``: ``cpu``, ``cuda`` or ``auto`` (cuda
    when available; the paper profile uses ``auto``). ``scene_radius``: half-depth of the sampled slab around the pivot.
    ``render_chunk``: rays rendered at once by :meth:`NeRFBaseline.render` (the image is the same for any value).
    """

    profile: str = "default"
    iterations: int = 600
    rays_per_step: int = 512
    frames_per_step: int = 1
    n_coarse: int = 32
    n_fine: int = 32
    width: int = 64
    depth: int = 4
    skip: int = 2
    dir_width: int = 32
    dir_depth: int = 1
    xyz_freqs: int = 10
    dir_freqs: int = 4
    lr: float = 5e-4
    lr_decay_steps: int = 250_000
    inside_box_fraction: float = 0.9
    density_noise_std: float = 0.0
    density_activation: str = "relu"
    scene_radius: float = 0.6
    render_chunk: int = 256  # rays per rendering chunk: ~10k samples stay in a CPU's caches (4096: 2-3x slower)
    device: str = "cpu"
    num_workers: int = 0  # DataLoader worker processes decoding the training frames (paper: 8; 0: in this process)
    checkpoint_every: int = 200
    log_every: int = 25
    seed: int = 0


# The NeRF sizes shared by NerFACE, AD-NeRF and DFRF per profile; each baseline's PROFILES are
# these rows plus its own deltas (:func:`nerf_profiles`).
NERF_BASE: dict[str, dict[str, Any]] = {
    "paper": dict(device="auto", rays_per_step=2048, n_coarse=64, n_fine=128, width=256, depth=8, skip=5, dir_width=128,
                  dir_depth=3, xyz_freqs=10, dir_freqs=4, lr=5e-4, lr_decay_steps=250_000, inside_box_fraction=0.95,
                  render_chunk=8192, checkpoint_every=5000, log_every=100, num_workers=8),
    "default": dict(density_activation="softplus", iterations=400, rays_per_step=384, n_coarse=24, n_fine=16, width=64, depth=4,
                    skip=2, dir_width=32, dir_depth=1, xyz_freqs=10, dir_freqs=4, lr=2e-3, lr_decay_steps=1000,
                    inside_box_fraction=0.95, checkpoint_every=100, log_every=25),
    "smoke": dict(density_activation="softplus", iterations=20, rays_per_step=128, n_coarse=8, n_fine=8, width=32, depth=3, skip=2,
                  dir_width=16, dir_depth=1, xyz_freqs=6, dir_freqs=2, lr=3e-3, lr_decay_steps=1000, inside_box_fraction=0.95,
                  checkpoint_every=10, log_every=5),
}


def nerf_profiles(config_class: type, **deltas: dict[str, Any]) -> dict[str, Any]:
    """``{profile: config_class(profile=..., **NERF_BASE[profile], **deltas[profile])}`` for every profile
    (and the dry runs of them, :func:`persona.profiles.with_dry_run`)."""
    return with_dry_run({name: config_class(profile=name, **{**row, **deltas.get(name, {})}) for name, row in NERF_BASE.items()})


class NeRFBaseline(Method):
    """Training loop, checkpoints and rendering shared by the head-NeRF baselines.

    A subclass sets ``name`` and implements:
    - ``_build(num_frames, resolution) -> nn.Module`` with submodules ``coarse`` and ``fine`` and
      buffers/parameters ``background`` [3,H,W] in [0,1] and ``train_index`` [N] (long),
    - ``_init_from_data(frames)`` to fill data-dependent state (background, references, ...),
    - ``_context(conditions, positions, step, training)``: per-image conditioning, where
      ``conditions`` is a batch dict and ``positions`` [B] the rows of the training frames (or None),
    - ``_field(ctx, level, points, dirs, order=None) -> (rgb, sigma, extra_loss)`` for :func:`render_rays`,
    and optionally ``_param_groups()`` and ``_regulariser(ctx)``.
    """

    name = "nerf"
    supports_novel_views = True
    renders_frame_by_frame = True  # no jitter or noise at evaluation (``render_rays`` with training=False)

    def __init__(self, config: NeRFConfig):
        self.config = config
        self.net: nn.Module | None = None
        self.resolution: int | None = None
        self.step = 0
        self.resumed_from: int | None = None
        self.train_seconds = 0.0
        self.learn_background = False  # True when the training set has no static background image
        self._generators: dict[str, torch.Generator] = {}  # training's random streams (checkpointed); subclasses add theirs

    # ---- hooks ---------------------------------------------------------------------------
    def _build(self, num_frames: int, resolution: int) -> nn.Module:
        raise NotImplementedError

    def _init_from_data(self, frames: dict[str, torch.Tensor]) -> None:
        self.net.background.data.copy_(frames["image"].mean(0).add(1).div(2))

    def _context(self, conditions: dict[str, torch.Tensor], positions: torch.Tensor | None, step: int, training: bool) -> Any:
        raise NotImplementedError

    def _field(self, ctx: Any, level: str, points: torch.Tensor, dirs: torch.Tensor, order: torch.Tensor | None = None):
        raise NotImplementedError

    def _param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.net.parameters() if p.requires_grad], "lr_scale": 1.0}]

    def _regulariser(self, ctx: Any) -> torch.Tensor:
        return torch.zeros(())

    # ---- shared ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch_device(self.config.device)

    def _attach_common(self, module: nn.Module, num_frames: int, resolution: int) -> nn.Module:
        """Give ``module`` the ``background`` [3,H,W] in [0,1] (a parameter when learned) and the
        ``train_index`` [N] buffer (frame numbers of the training frames, sorted)."""
        background = torch.zeros(3, resolution, resolution)
        if self.learn_background:
            module.background = nn.Parameter(background)
        else:
            module.register_buffer("background", background)
        module.register_buffer("train_index", torch.zeros(num_frames, dtype=torch.long))
        return module

    @property
    def ray_settings(self) -> RaySettings:
        c = self.config
        return RaySettings(c.n_coarse, c.n_fine, c.scene_radius, c.density_noise_std, c.density_activation)

    def _normalise(self, points: torch.Tensor) -> torch.Tensor:
        pivot = torch.as_tensor(PIVOT, dtype=points.dtype, device=points.device)
        return (points - pivot) / self.config.scene_radius

    def _state(self, optimizer: torch.optim.Optimizer | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = prefixed("net", self.net.state_dict())
        meta: dict[str, Any] = {"resolution": self.resolution, "num_frames": int(self.net.train_index.numel()),
                                "train_seconds": self.train_seconds, "learn_background": self.learn_background}
        if optimizer is not None:
            state, state_meta = training_state(optimizer, **self._generators)
            tensors.update(state)
            meta.update(state_meta)
        return tensors, meta

    def _restore(self, path, optimizer: torch.optim.Optimizer | None) -> int:
        from persona.runs import load_tensors

        tensors, meta = load_tensors(path)
        if self.net is None:
            self.resolution = int(meta["resolution"])
            self.learn_background = bool(meta.get("learn_background", False))
            self.net = self._build(int(meta["num_frames"]), self.resolution)
        self.net.load_state_dict(unprefixed("net", tensors))
        if optimizer is not None and ("optimizer" in meta or "optim" in meta):
            restore_training_state(tensors, meta, optimizer, str(path), **self._generators)
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        return int(meta["step"])

    def fit(self, train_ds, run: RunDir) -> None:
        """Train on every frame of ``train_ds``; writes ``run`` and resumes from its latest checkpoint."""
        c = self.config
        torch.manual_seed(c.seed)
        device = self.device
        run.begin(run_record(self.name, asdict(c), train_ds))
        frames = load_frames(train_ds, c.num_workers)
        n, _, h, w = frames["image"].shape
        if h != w:
            raise PersonaInputError(f"{getattr(train_ds, 'root', '')}: square frames expected, got {h}x{w}")
        self.resolution = h
        background = getattr(train_ds, "background", None)
        self.learn_background = background is None
        boxes = face_boxes(frames["image"], None if background is None else torch.as_tensor(background).float())
        frames = {k: v.to(device) for k, v in frames.items()}
        self.net = self._build(n, h).to(device)
        self.net.train_index.copy_(frames["index"])
        self._generators = {"pixels": torch.Generator().manual_seed(c.seed * 1_000_003),  # pixels, frames (CPU)
                            "samples": torch.Generator(device=device).manual_seed(c.seed * 1_000_033)}  # samples, noise
        self._init_from_data(frames)
        if background is not None:
            self.net.background.data.copy_(torch.as_tensor(background).float().add(1).div(2))
        groups = self._param_groups()
        optimizer = torch.optim.Adam([{k: v for k, v in g.items()} for g in groups], lr=c.lr, betas=(0.9, 0.999))
        start, latest = run.resume_point()
        if latest is not None:
            start = self._restore(latest, optimizer)
            self.resumed_from = start
        self.step = start
        generator, device_generator = self._generators["pixels"], self._generators["samples"]
        targets = frames["image"].add(1).div(2)
        settings = self.ray_settings
        self.net.train()
        began = time.time() - self.train_seconds
        bar = tqdm(range(start, c.iterations), desc=f"{self.name} fit", initial=start, total=c.iterations, leave=False)
        for step in bar:
            decay = 0.1 ** (step / c.lr_decay_steps)
            for group in optimizer.param_groups:
                group["lr"] = c.lr * decay * group.get("lr_scale", 1.0)
            pos = torch.randint(0, n, (c.frames_per_step,), generator=generator)
            pixels = sample_ray_pixels(boxes[pos], c.rays_per_step, c.inside_box_fraction, h, generator).to(device)
            pos = pos.to(device)
            origins, dirs = rays(frames["camera"][pos], pixel_uv(pixels, h))
            target = gather_pixels(targets[pos], pixels)
            bg = gather_pixels(self.net.background.unsqueeze(0).expand(len(pos), -1, -1, -1), pixels)
            ctx = self._context({k: v[pos] for k, v in frames.items()}, pos, step, training=True)
            out = render_rays(lambda lvl, p, d, order: self._field(ctx, lvl, p, d, order), origins, dirs, bg, settings, True, device_generator)
            mse_coarse = F.mse_loss(out["coarse"], target)
            mse_fine = F.mse_loss(out["fine"], target) if out["fine"] is not None else torch.zeros(())
            loss = mse_coarse + mse_fine + out["extra_loss"] + self._regulariser(ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.step = step + 1
            self.train_seconds = time.time() - began
            if self.step % c.log_every == 0 or self.step == c.iterations:
                mse = (mse_fine if out["fine"] is not None else mse_coarse).item()
                psnr = -10.0 * math.log10(max(mse, 1e-10) / 1.0)  # on [0,1] colours
                run.log(self.step, loss=loss.item(), mse=mse, psnr=psnr, lr=c.lr * decay, seconds=self.train_seconds)
                bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
            if self.step % c.checkpoint_every == 0 or self.step == c.iterations:
                tensors, meta = self._state(optimizer)
                run.save_checkpoint(self.step, tensors, meta)
        self.net.eval()

    def load(self, run: RunDir) -> None:
        """Load the latest checkpoint of ``run`` for rendering."""
        latest = run.latest_checkpoint()
        if latest is None:
            raise PersonaFileError(f"{run.root}: no checkpoint to load (checkpoints/step_*.safetensors)")
        self.net = None
        self.step = self._restore(latest[1], None)
        self.net.to(self.device).eval()

    @torch.no_grad()
    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """conditions: batch dict as the dataset yields; camera [B,25] -> image [B,3,H,W] in [-1,1]
        at the training resolution."""
        if self.net is None:
            raise RuntimeError(f"{self.name}: call fit() or load() before render()")
        self.net.eval()
        res, device = self.resolution, self.device
        camera = torch.as_tensor(camera).float().to(device)
        if camera.dim() == 1:
            camera = camera.unsqueeze(0)
        b = camera.shape[0]
        conditions = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in conditions.items()}
        ctx = self._context(conditions, None, self.step, training=False)
        pixels = torch.arange(res * res, device=device).expand(b, -1)
        bg_all = self.net.background.unsqueeze(0).expand(b, -1, -1, -1)
        colours = []
        for lo in range(0, res * res, self.config.render_chunk):
            px = pixels[:, lo:lo + self.config.render_chunk]
            origins, dirs = rays(camera, pixel_uv(px, res))
            out = render_rays(lambda lvl, p, d, order: self._field(ctx, lvl, p, d, order), origins, dirs,
                              gather_pixels(bg_all, px), self.ray_settings, False)
            colours.append(out["fine"] if out["fine"] is not None else out["coarse"])
        rgb = torch.cat(colours, dim=1).cpu()  # [B,H*W,3]
        return rgb.transpose(1, 2).reshape(b, 3, res, res).mul(2).sub(1).clamp(-1, 1)


def per_image(cond: torch.Tensor) -> torch.Tensor:
    """A per-image condition [B,C] shaped to broadcast over rays and samples: [B,1,1,C]."""
    return cond[:, None, None, :]
