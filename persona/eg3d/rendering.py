"""Volume rendering of EG3D: ray sampler, tri-plane sampling, stratified + importance sampling,
and the mip ray marcher. Written from the EG3D paper and the public release's conventions.

Conventions (those of the released weights; changing any of them renders garbage):
- camera label [B,25] = OpenCV cam2world [4,4] (x right, y down, z forward) ++ normalised intrinsics
  [3,3]; pixel (row i, col j) of an r x r image looks through uv = ((j+.5)/r, (i+.5)/r).
- tri-plane axis order XY, XZ, ZX: point (x,y,z) -> plane 0 at (x,y), plane 1 at (x,z), plane 2
  at (z,x) (the release's quirk), after scaling by 2/box_warp; ``grid_sample`` with
  align_corners=False and zero padding.
- density = softplus(sigma - 1) of the midpoint of consecutive samples; colours and depths also
  at midpoints; rgb mapped to [-1,1] as rgb*2-1; depth clamped to the sampled range.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from persona import cameras
from persona.cameras import split_label
from persona.eg3d.triplane_kernel import kernel_applies, sample_planes_mean


def ray_bundle(camera: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """camera [B,25] -> (origins [B,r*r,3], unit directions [B,r*r,3]), pixels in row-major order."""
    if camera.ndim != 2 or camera.shape[1] != 25:
        raise ValueError(f"ray_bundle: camera has shape {tuple(camera.shape)}; expected [B,25] (cam2world 16 ++ intrinsics 9)")
    batch = camera.shape[0]
    cam2world, intr = (m.float() for m in split_label(camera))
    fx, fy, cx, cy, sk = intr[:, 0, 0, None], intr[:, 1, 1, None], intr[:, 0, 2, None], intr[:, 1, 2, None], intr[:, 0, 1, None]
    coords = (torch.arange(resolution, dtype=torch.float32, device=camera.device) + 0.5) / resolution
    v, u = torch.meshgrid(coords, coords, indexing="ij")  # v: row (y), u: column (x)
    u = u.reshape(1, -1).expand(batch, -1)
    v = v.reshape(1, -1).expand(batch, -1)
    x_lift = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y_lift = (v - cy) / fy
    ones = torch.ones_like(x_lift)
    cam_points = torch.stack([x_lift, y_lift, ones, ones], dim=-1)  # [B,M,4]
    world = torch.bmm(cam2world, cam_points.transpose(1, 2)).transpose(1, 2)[..., :3]
    origin = cam2world[:, :3, 3]
    directions = F.normalize(world - origin[:, None, :], dim=2)
    return origin[:, None, :].expand(-1, directions.shape[1], -1).contiguous(), directions


def project_to_planes(points: torch.Tensor) -> torch.Tensor:
    """points [B,M,3] -> plane coordinates [B,3,M,2] in the release's order (XY, XZ, ZX)."""
    x, y, z = points.unbind(-1)
    return torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, x], -1)], dim=1)


def sample_planes(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """planes [B,3,C,H,W], points [B,M,3] (world) -> features [B,3,M,C] (bilinear, zero outside the box)."""
    batch, n_planes, channels, h, w = planes.shape
    grid = project_to_planes(points * (2.0 / box_warp)).reshape(batch * n_planes, 1, -1, 2)
    flat = planes.reshape(batch * n_planes, channels, h, w)
    if flat.device.type == "cpu":  # the CPU kernel gathers a point's channels ~2x faster from channels-last planes (same values)
        flat = flat.contiguous(memory_format=torch.channels_last)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(batch, n_planes, channels, -1).transpose(2, 3)  # a view: no copy of the largest tensor


def sample_stratified(batch: int, rays: int, ray_start: float, ray_end: float, n: int, device=None) -> torch.Tensor:
    """Jittered uniform depths [B,R,n,1]: linspace(start, end, n) + U(0, (end-start)/(n-1))."""
    depths = torch.linspace(ray_start, ray_end, n, device=device).reshape(1, 1, n, 1).repeat(batch, rays, 1, 1)
    return depths + torch.rand_like(depths) * ((ray_end - ray_start) / (n - 1))


def bucket_index(cdf: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """cdf [R,K] ascending along each row, u [R,n] -> int64 [R,n]: how many of the row's values are
    <= u, i.e. ``torch.searchsorted(cdf, u, right=True)``. On the CPU a comparison count: the same
    integers, 0.76 against 1.15 ms for the importance sampler's 2048 rows of 23 bins (issue #16)."""
    if cdf.device.type == "cpu" and u.numel() * cdf.shape[-1] <= 1 << 24:  # the [R,n,K] comparisons: at most 16 MB
        return torch.count_nonzero(u.unsqueeze(-1) >= cdf.unsqueeze(-2), dim=-1)
    return torch.searchsorted(cdf, u, right=True)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF sampling. bins [R,K+1] (extra trailing entries ignored), weights [R,K] -> [R,n]."""
    rays, k = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [R,K+1]
    u = torch.rand(rays, n, device=bins.device).contiguous()
    idx = bucket_index(cdf, u)
    lo = (idx - 1).clamp_min(0)
    hi = idx.clamp_max(k)
    pair = torch.stack([lo, hi], -1).reshape(rays, 2 * n)
    cdf_g = torch.gather(cdf, 1, pair).reshape(rays, n, 2)
    bins_g = torch.gather(bins, 1, pair).reshape(rays, n, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


@torch.no_grad()
def sample_importance(depths: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """depths [B,R,S,1], marcher weights [B,R,S-1,1] -> n new depths [B,R,n,1] (no gradient).

    Weights are smoothed (max-pool 2, avg-pool 2), floored by 0.01, and sampled over the midpoints,
    as in the release (whose bins/weights pairing leaves the last bin unused; kept as is)."""
    batch, rays, samples, _ = depths.shape
    z = depths.reshape(batch * rays, samples)
    w = weights.reshape(batch * rays, 1, -1).float()
    w = F.max_pool1d(w, 2, 1, padding=1)
    w = F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01
    mids = 0.5 * (z[:, :-1] + z[:, 1:])
    return sample_pdf(mids, w[:, 1:-1], n).detach().reshape(batch, rays, n, 1)


def march_weights(densities: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """The mip ray marcher's weights of the S-1 intervals: densities [B,R,S,1] (raw sigma), sorted
    depths [B,R,S,1] -> weights [B,R,S-1,1]."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    sigma_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    alpha = 1 - torch.exp(-sigma_mid * deltas)
    shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    return alpha * torch.cumprod(shifted, -2)[:, :, :-1]


def _depth(weights: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    depth = (weights * depths_mid).sum(-2) / weights.sum(2)
    return torch.nan_to_num(depth, float("inf")).clamp(depths.min(), depths.max())


def ray_march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool = False):
    """Mip ray marcher. colors [B,R,S,C] in [0,1], densities [B,R,S,1] (raw sigma), depths [B,R,S,1]
    -> (rgb [B,R,C] in [-1,1], depth [B,R,1], weights [B,R,S-1,1])."""
    weights = march_weights(densities, depths)
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    rgb = (weights * colors_mid).sum(-2)
    if white_back:
        rgb = rgb + 1 - weights.sum(2)
    return rgb * 2 - 1, _depth(weights, depths), weights


def depth_order(depths: torch.Tensor) -> torch.Tensor:
    """depths [B,R,S,1] -> the indices [B,R,S,1] (int64) that sort each ray's samples by depth, as
    ``torch.sort(depths, dim=-2).indices`` (ties, which jittered depths do not have, in either order).
    On the CPU, without a gradient, NumPy's argsort (its SIMD sort): 2048 rays of 48 samples in 0.36
    against 1.75 ms, and ours' step 1.5 ms faster (issue #16)."""
    if depths.device.type == "cpu" and depths.dtype == torch.float32 and not depths.requires_grad:
        flat = depths.detach().reshape(-1, depths.shape[-2]).contiguous().numpy()
        return torch.from_numpy(np.argsort(flat, axis=-1).astype(np.int64, copy=False)).reshape(depths.shape)
    return torch.sort(depths, dim=-2).indices


def ray_march_unsorted(colors: list[torch.Tensor], densities: list[torch.Tensor], depths: list[torch.Tensor], white_back: bool = False):
    """:func:`ray_march` of samples given in parts ([B,R,S_i,*] each, unsorted along a ray), without
    sorting or concatenating the colours: the colour of interval i is the mean of its two end
    samples, so ``sum_i w_i (c_i + c_i+1) / 2 = sum_j c_j (w_j-1 + w_j) / 2``; the per-sample
    factors are computed in depth order and put back where each sample came from (one channel
    instead of C). Same results as sorting everything first, to float rounding."""
    all_depths = torch.cat(depths, -2)
    order = depth_order(all_depths)  # [B,R,S,1]
    depths_sorted = torch.gather(all_depths, -2, order)
    weights = march_weights(torch.gather(torch.cat(densities, -2), -2, order), depths_sorted)  # [B,R,S-1,1]
    pad = torch.zeros_like(weights[:, :, :1])
    factor = (torch.cat([pad, weights], -2) + torch.cat([weights, pad], -2)) / 2  # [B,R,S,1], depth order
    factor = torch.empty_like(factor).scatter_(-2, order, factor)  # back to the parts' order
    rgb, start = None, 0
    for part in colors:
        term = (part * factor[:, :, start:start + part.shape[2]]).sum(-2)
        rgb = term if rgb is None else rgb + term
        start += part.shape[2]
    if white_back:
        rgb = rgb + 1 - weights.sum(2)
    return rgb * 2 - 1, _depth(weights, depths_sorted), weights


Decoder = Callable[[torch.Tensor, torch.Tensor], dict]


def render_planes(planes: torch.Tensor, decoder: Decoder, origins: torch.Tensor, directions: torch.Tensor, *, ray_start: float, ray_end: float,
                  depth_resolution: int, depth_resolution_importance: int, box_warp: float, white_back: bool = False):
    """Two-pass (stratified, then importance) rendering of tri-planes.

    planes [B,3,C,H,W]; decoder(features [B,3,M,C], or their mean over the planes [B,M,C] where the compiled
    sampler runs (:mod:`persona.eg3d.triplane_kernel`), directions [B,M,3]) -> {'rgb' [B,M,F], 'sigma' [B,M,1]};
    origins/directions [B,R,3] -> (features [B,R,F] (first 3 = rgb, all mapped by x*2-1), depth [B,R,1], weight sum [B,R,1]).
    """
    batch, rays, _ = origins.shape

    def query(depths):
        n = depths.shape[2]
        points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(batch, -1, 3)
        dirs = directions.unsqueeze(-2).expand(-1, -1, n, -1).reshape(batch, -1, 3)
        if kernel_applies(planes, points):  # the compiled sampler, fused with the mean over the planes: [B,M,C]
            features = sample_planes_mean(planes, points * (2.0 / box_warp))
        else:
            features = sample_planes(planes, points, box_warp)  # [B,3,M,C]
        out = decoder(features, dirs)
        return out["rgb"].reshape(batch, rays, n, -1), out["sigma"].reshape(batch, rays, n, 1)

    depths = sample_stratified(batch, rays, ray_start, ray_end, depth_resolution, device=origins.device)
    colors, densities = query(depths)
    if depth_resolution_importance > 0:
        with torch.no_grad():  # the coarse pass only places the fine samples
            weights = march_weights(densities, depths)
        fine = sample_importance(depths, weights, depth_resolution_importance)
        colors_f, densities_f = query(fine)
        rgb, depth, weights = ray_march_unsorted([colors, colors_f], [densities, densities_f], [depths, fine], white_back)
    else:
        rgb, depth, weights = ray_march(colors, densities, depths, white_back)
    return rgb, depth, weights.sum(2)


SAMPLE_YAWS_DEG = (-30.0, -15.0, 0.0, 15.0, 30.0)  # the yaw angles of prior sample grids


@torch.no_grad()
def render_yaw_grid(G: torch.nn.Module, z: torch.Tensor, yaws_deg=SAMPLE_YAWS_DEG, pitch_deg: float = 0.0,
                    truncation_psi: float = 1.0) -> torch.Tensor:
    """Render each z at each yaw: ``[N, len(yaws), 3, R, R] in [-1,1]``.

    The mapping is conditioned on the frontal camera (as EG3D's video script does), so every view
    of one z shares the same w.
    """
    n = z.shape[0]
    device = next(G.parameters()).device
    z = z.to(device)
    frontal = torch.from_numpy(cameras.camera_label(0.0, 0.0)).float().to(device).expand(n, 25)
    ws = G.mapping(z, frontal, truncation_psi=truncation_psi)
    rows = []
    for yaw in yaws_deg:
        cam = torch.from_numpy(cameras.camera_label(float(yaw), pitch_deg)).float().to(device).expand(n, 25)
        rows.append(G.synthesis(ws, cam)["image"])
    return torch.stack(rows, dim=1).cpu()
