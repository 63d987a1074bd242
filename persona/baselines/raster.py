"""A differentiable triangle rasteriser in plain PyTorch (no compiled extension).

Used by the NHA baseline. Two passes over the same candidate (face, pixel) pairs:

* **Exact pass** (visibility): a z-buffer picks, for every pixel centre, the nearest triangle that
  contains it. The choice is discrete (no gradient), but the winner's perspective-correct
  barycentrics are recomputed from the projected vertices *with* autograd, so interpolated
  attributes are differentiable w.r.t. vertex positions and attributes (as in nvdiffrast without
  its antialiasing step).
* **Soft pass** (coverage): SoftRas' silhouette aggregation ``alpha = 1 - prod_f (1 - D_f)`` with
  ``D_f = sigmoid(-signed_distance(pixel, f) / sigma)`` (distance in pixels, negative inside), so
  silhouette edges move under gradient. Only pairs within a few ``sigma`` of a face are visited:
  the others contribute ``D_f < 1e-3``.

Candidates are enumerated per face over its (margin-grown) pixel bounding box, with faces
bucketed by box size (powers of two), so the cost follows the covered area, not pixels x faces.

Every tensor is made on the device of the inputs (CPU or GPU); nothing here moves data between devices.

Camera: the 25-d EG3D label (OpenCV cam2world 4x4 ++ normalised 3x3 intrinsics, see
``persona.cameras``). A camera-space point (x, y, z), z forward, lands at pixel
``(fx * x / z + cx) * W`` (x right), ``(fy * y / z + cy) * H`` (y down); pixel (i, j) has its
centre at ``(i + 0.5, j + 0.5)``, as in EG3D's ray sampler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from persona.cameras import split_label, world_to_camera

NEAR = 1e-3  # faces with a vertex closer than this (camera z) are culled, not clipped


def _size(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = resolution
    return int(height), int(width)


def project(vertices: torch.Tensor, camera: torch.Tensor, resolution: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """vertices [B,V,3] world, camera [B,25] -> (pixels [B,V,2] as (x right, y down), depth [B,V]).

    Pixel coordinates are continuous, pixel (i, j) spanning [i, i+1) x [j, j+1).
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected [B,V,3], got {tuple(vertices.shape)}")
    if camera.shape[0] != vertices.shape[0]:
        raise ValueError(f"camera batch {camera.shape[0]} != vertices batch {vertices.shape[0]}")
    height, width = _size(resolution)
    _, intrinsics = split_label(camera)
    local = world_to_camera(vertices, camera)
    depth = local[..., 2]
    safe = torch.where(depth.abs() < 1e-8, torch.full_like(depth, 1e-8), depth)
    u = (intrinsics[:, None, 0, 0] * local[..., 0] + intrinsics[:, None, 0, 1] * local[..., 1]) / safe + intrinsics[:, None, 0, 2]
    v = (intrinsics[:, None, 1, 1] * local[..., 1]) / safe + intrinsics[:, None, 1, 2]
    return torch.stack([u * width, v * height], dim=-1), depth


@dataclass
class Fragments:
    """Rasteriser output for a batch of B images of H x W pixels.

    face_id [B,H,W] long: visible face per pixel, -1 where no face covers the pixel centre.
    bary [B,H,W,3]: perspective-correct barycentrics of ``face_id`` (sum 1 where covered, 0
        elsewhere); differentiable w.r.t. the vertices.
    depth [B,H,W]: camera z of the visible surface (+inf where uncovered; no gradient).
    alpha [B,1,H,W] in [0,1]: soft coverage (SoftRas aggregation); None when ``soft=False``.
    attributes [B,C,H,W] or None: the interpolated vertex attributes, 0 where uncovered.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor | None
    attributes: torch.Tensor | None = None

    @property
    def mask(self) -> torch.Tensor:
        """[B,1,H,W] float: 1 where a face covers the pixel centre."""
        return (self.face_id >= 0).float()[:, None]


def _face_boxes(pixels: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, height: int, width: int, margin: float) -> tuple[torch.Tensor, ...]:
    """Pixel boxes [B,F] (x0, y0, x1, y1 inclusive, long) of the pixel centres within ``margin`` px
    of each face's bounding box, and ``valid`` [B,F] (box on screen, face in front of the camera)."""
    corners = pixels[:, faces]  # [B,F,3,2]
    in_front = (depth[:, faces] > NEAR).all(dim=-1)  # [B,F]
    low = corners.amin(dim=2) - margin
    high = corners.amax(dim=2) + margin
    # pixel i is a candidate when its centre i + 0.5 lies in [low, high]
    x0 = torch.ceil(low[..., 0] - 0.5).clamp(min=0)
    y0 = torch.ceil(low[..., 1] - 0.5).clamp(min=0)
    x1 = torch.floor(high[..., 0] - 0.5).clamp(max=width - 1)
    y1 = torch.floor(high[..., 1] - 0.5).clamp(max=height - 1)
    valid = in_front & (x1 >= x0) & (y1 >= y0) & torch.isfinite(corners).all(dim=-1).all(dim=-1)
    return x0.long(), y0.long(), x1.long(), y1.long(), valid


def _candidates(boxes: tuple[torch.Tensor, ...], height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Every (batch, face, pixel) whose pixel lies in the face's box (see :func:`_face_boxes`).

    -> (batch [N], face [N], px [N], py [N]) long.
    """
    x0, y0, x1, y1, valid = boxes
    device = valid.device
    b_idx, f_idx = valid.nonzero(as_tuple=True)
    x0, y0, x1, y1 = (t[b_idx, f_idx] for t in (x0, y0, x1, y1))
    span = torch.maximum(x1 - x0, y1 - y0) + 1
    out_b, out_f, out_x, out_y = [], [], [], []
    size = 1
    while len(span) and size < 2 * max(height, width):
        lower = size // 2 if size > 1 else 0
        chosen = ((span > lower) & (span <= size)).nonzero(as_tuple=True)[0]
        if len(chosen):
            offsets = torch.arange(size, device=device)
            cx = x0[chosen, None, None] + offsets[None, None, :]
            cy = y0[chosen, None, None] + offsets[None, :, None]
            inside = (cx <= x1[chosen, None, None]) & (cy <= y1[chosen, None, None])
            n, row, col = inside.nonzero(as_tuple=True)
            out_b.append(b_idx[chosen][n])
            out_f.append(f_idx[chosen][n])
            out_x.append(cx[n, 0, col])
            out_y.append(cy[n, row, 0])
        size *= 2
    if not out_b:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty, empty, empty
    return torch.cat(out_b), torch.cat(out_f), torch.cat(out_x), torch.cat(out_y)


def _edge_weights(corners: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentrics of ``point`` [N,2] in triangles ``corners`` [N,3,2] -> ([N,3], area2 [N])."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]

    def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]

    area2 = cross(b - a, c - a)
    safe = torch.where(area2.abs() < 1e-12, torch.full_like(area2, 1e-12), area2)
    w0 = cross(c - b, point - b) / safe
    w1 = cross(a - c, point - c) / safe
    w2 = cross(b - a, point - a) / safe
    return torch.stack([w0, w1, w2], dim=-1), area2


def _distance_to_edges(corners: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
    """Unsigned distance [N] from ``point`` [N,2] to the boundary of triangles ``corners`` [N,3,2]."""
    start = corners
    end = corners.roll(-1, dims=1)
    edge = end - start
    rel = point[:, None, :] - start
    t = ((rel * edge).sum(-1) / (edge * edge).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    gap = rel - t[..., None] * edge
    return ((gap * gap).sum(-1).amin(dim=1) + 1e-12).sqrt()


def _soft_coverage(pixels: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """SoftRas coverage [B,1,H,W]: ``1 - prod_f (1 - sigmoid(-d_f / sigma))`` near the silhouette.

    d_f is the signed pixel distance from the pixel centre to face f (negative inside). Only faces
    within ``4 sigma`` of a pixel are visited, and the aggregate is computed only for the uncovered
    pixels within ``4 sigma`` of the mesh. Covered pixels (pixel centre inside a face, where the
    aggregate is >= 0.5) get 1, which skips all the faces seen face-on; the silhouette still moves
    both ways under gradient, through the coverage of the pixels just outside it.
    """
    batch_size, height, width = face_id.shape
    margin = 4.0 * sigma_px
    reach = int(math.ceil(margin))
    covered = (face_id >= 0).float()[:, None]
    pool = torch.nn.functional.max_pool2d
    band = (pool(covered, 2 * reach + 1, stride=1, padding=reach) > 0.5) & (covered < 0.5)  # [B,1,H,W]
    with torch.no_grad():
        x0, y0, x1, y1, valid = _face_boxes(pixels.detach(), depth.detach(), faces, height, width, margin)
        table = torch.nn.functional.pad(band[:, 0].float().cumsum(1).cumsum(2), (1, 0, 1, 0))  # [B,H+1,W+1]
        rows = torch.arange(batch_size, device=face_id.device)[:, None]
        x0c, y0c = x0.clamp(0, width - 1), y0.clamp(0, height - 1)
        x1c, y1c = (x1 + 1).clamp(1, width), (y1 + 1).clamp(1, height)
        band_pixels = table[rows, y1c, x1c] - table[rows, y0c, x1c] - table[rows, y1c, x0c] + table[rows, y0c, x0c]
        c_b, c_f, c_x, c_y = _candidates((x0, y0, x1, y1, valid & (band_pixels > 0.5)), height, width)
        flat = (c_b * height + c_y) * width + c_x
        in_band = band.reshape(-1)[flat]
        c_b, c_f, flat = c_b[in_band], c_f[in_band], flat[in_band]
        centre = torch.stack([c_x[in_band].float() + 0.5, c_y[in_band].float() + 0.5], dim=-1)
    corners = pixels[c_b[:, None], faces[c_f]]
    weights, _ = _edge_weights(corners, centre)
    distance = _distance_to_edges(corners, centre)
    signed = torch.where((weights >= 0).all(dim=-1), -distance, distance)
    prob = torch.sigmoid(-signed / sigma_px).clamp(max=1.0 - 1e-6)
    log_miss = torch.zeros(batch_size * height * width, dtype=pixels.dtype, device=pixels.device).index_add(0, flat, torch.log1p(-prob))
    soft = (1.0 - torch.exp(log_miss)).view(batch_size, 1, height, width)
    return torch.where(band, soft, covered)


def rasterize(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: torch.Tensor,
    resolution: int | tuple[int, int],
    attributes: torch.Tensor | None = None,
    soft: bool = True,
    sigma_px: float = 0.5,
) -> Fragments:
    """Rasterise a batch of meshes sharing one topology.

    vertices [B,V,3] world coordinates; faces [F,3] long; camera [B,25] EG3D labels;
    resolution int or (H, W); attributes [B,V,C] or [V,C] (optional) to interpolate;
    soft: also compute the SoftRas coverage ``alpha`` with edge softness ``sigma_px`` pixels.
    """
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected [F,3] vertex indices, got {tuple(faces.shape)}")
    faces = faces.long().to(vertices.device)
    height, width = _size(resolution)
    batch_size = vertices.shape[0]
    pixels, depth = project(vertices, camera, (height, width))
    with torch.no_grad():
        boxes = _face_boxes(pixels.detach(), depth.detach(), faces, height, width, 0.0)
        c_b, c_f, c_x, c_y = _candidates(boxes, height, width)
    flat = (c_b * height + c_y) * width + c_x  # [N] pixel index over the batch
    centre = torch.stack([c_x.float() + 0.5, c_y.float() + 0.5], dim=-1)
    tri = faces[c_f]  # [N,3]
    n_pixels = batch_size * height * width

    # exact pass (no gradient): nearest face whose triangle contains the pixel centre
    with torch.no_grad():
        weights, area2 = _edge_weights(pixels.detach()[c_b[:, None], tri], centre)
        corner_depth = depth.detach()[c_b[:, None], tri]
        inside = (weights >= 0).all(dim=-1) & (area2.abs() > 1e-12)
        inv_z = (weights / corner_depth).sum(-1)
        z = torch.where(inside & (inv_z > 0), 1.0 / inv_z.clamp(min=1e-12), torch.full_like(inv_z, float("inf")))
        zbuf = torch.full((n_pixels,), float("inf"), device=vertices.device)
        zbuf.scatter_reduce_(0, flat, z, reduce="amin")
        winner = inside & (z == zbuf[flat]) & torch.isfinite(z)
        face_flat = torch.full((n_pixels,), -1, dtype=torch.long, device=vertices.device)
        face_flat.scatter_reduce_(0, flat[winner], c_f[winner], reduce="amax")
        winner = winner & (c_f == face_flat[flat])
        keep = winner.nonzero(as_tuple=True)[0]
    # the winners' barycentrics again, now with autograd through the projected vertices
    screen, _ = _edge_weights(pixels[c_b[keep, None], tri[keep]], centre[keep])
    persp = screen / depth[c_b[keep, None], tri[keep]]
    persp = persp / persp.sum(-1, keepdim=True)
    bary = torch.zeros(n_pixels, 3, dtype=vertices.dtype, device=vertices.device).index_put((flat[keep],), persp)
    bary = bary.view(batch_size, height, width, 3)
    face_id = face_flat.view(batch_size, height, width)

    alpha = None
    if soft:
        alpha = _soft_coverage(pixels, depth, faces, face_id, sigma_px)

    fragments = Fragments(face_id=face_id, bary=bary, depth=zbuf.view(batch_size, height, width), alpha=alpha)
    if attributes is not None:
        fragments.attributes = interpolate(fragments, faces, attributes)
    return fragments


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate vertex attributes [B,V,C] (or shared [V,C]) at the visible surface -> [B,C,H,W] (0 where uncovered)."""
    batch_size, height, width = fragments.face_id.shape
    if attributes.dim() == 2:
        attributes = attributes[None].expand(batch_size, -1, -1)
    if attributes.shape[0] != batch_size:
        raise ValueError(f"attributes batch {attributes.shape[0]} != fragments batch {batch_size}")
    face_flat = fragments.face_id.reshape(-1)
    covered = (face_flat >= 0).nonzero(as_tuple=True)[0]
    batch_of = covered // (height * width)
    corner_ids = faces.long()[face_flat[covered]]  # [P,3]
    values = attributes[batch_of[:, None], corner_ids]  # [P,3,C]
    weights = fragments.bary.reshape(-1, 3)[covered]
    mixed = (values * weights[..., None]).sum(1)  # [P,C]
    out = torch.zeros(batch_size * height * width, attributes.shape[-1], dtype=mixed.dtype, device=mixed.device).index_put((covered,), mixed)
    return out.view(batch_size, height, width, -1).permute(0, 3, 1, 2)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [B,V,3] of meshes vertices [B,V,3], faces [F,3]."""
    faces = faces.long()
    a, b, c = vertices[:, faces[:, 0]], vertices[:, faces[:, 1]], vertices[:, faces[:, 2]]
    face_normal = torch.cross(b - a, c - a, dim=-1)  # [B,F,3], length = 2 * area
    normals = torch.zeros_like(vertices)
    for corner in range(3):
        normals = normals.index_add(1, faces[:, corner], face_normal)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
