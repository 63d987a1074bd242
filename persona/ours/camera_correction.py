"""A per-video correction of the cameras, learned with the avatar (issue #15: "refining cameras
during training").

Cameras estimated from landmarks carry per-video biases rather than per-frame noise: on the
synthetic world's sweeps `persona preprocess` reads yaw ~1.15x and pitch ~0.7x the truth (a
pose fit to the shape triangulated with the true cameras errs as much, so better landmark
geometry cannot remove it). A few parameters shared by every frame of the video can: each
camera's rotation about the pivot, as the rotation vector ``r`` that takes the frontal camera to
it (x ≈ pitch, y ≈ yaw, z ≈ roll), is mapped to ``(I + M) r + b`` (``M`` [3,3], ``b`` [3], both
starting at 0: the identity), and the camera is moved about the pivot accordingly (its distance,
intrinsics and the point it looks at kept). Trained by the reconstruction loss with the rest of
the avatar; shared parameters get a gradient from every frame, which per-frame offsets at a
budget of a few visits per frame would not.

``terms = 'quadratic'`` adds ``Q [r_x^2, r_y^2, r_x r_y]`` (``Q`` [3,3], 0 at init): on the
synthetic clips the error left by the best affine map of the estimated yaw and pitch to the truth
is slow (lag-1 autocorrelation 0.92-0.98), not jitter, and an oracle quadratic map of the two
halves the yaw's part of it (1.5-1.6 -> 0.7 deg mean).

The correction is part of the avatar: every camera it renders (training, test and orbit cameras
alike) is read in the frame of the video's estimated cameras.

How far it can go (README, "Your own video", session 28): on the synthetic clips the best such map,
fitted to the true cameras, leaves 1.6-2.5 deg; and the shipped prior does not pin the cameras more
closely than ~2 deg: trained on frames with their true cameras the avatar moves them by 1.4-1.9 deg
at no cost in PSNR, and :func:`fit_to_generator` (the prior alone) by 1.7-2.6 deg, while on frames the
prior rendered itself it stays within 0.3 deg.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from persona import cameras


def rotvec_to_matrix(r: torch.Tensor) -> torch.Tensor:
    """Rotation vectors [B,3] -> matrices [B,3,3] (Rodrigues; differentiable, exact at 0)."""
    theta2 = (r * r).sum(-1, keepdim=True)
    theta = theta2.clamp_min(1e-12).sqrt()
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)  # sin t / t
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-12))  # (1 - cos t) / t^2
    zero = torch.zeros_like(r[:, 0])
    k = torch.stack([zero, -r[:, 2], r[:, 1], r[:, 2], zero, -r[:, 0], -r[:, 1], r[:, 0], zero], -1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(k)
    return eye + a[..., None] * k + b[..., None] * (k @ k)


def matrix_to_rotvec(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B,3,3] -> rotation vectors [B,3], for angles below 180° (not differentiated)."""
    cos = ((m.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    axis = torch.stack([m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1)
    scale = torch.where(theta < 1e-6, torch.full_like(theta, 0.5), theta / (2 * torch.sin(theta).clamp_min(1e-12)))
    return axis * scale[:, None]


CAMERA_TERMS = ("linear", "quadratic")


class CameraCorrection(nn.Module):
    """EG3D labels [B,25] -> corrected labels [B,25] (see the module docstring); the identity at init.
    ``terms``: ``linear`` (``(I + M) r + b``) or ``quadratic`` (plus ``Q [r_x^2, r_y^2, r_x r_y]``)."""

    def __init__(self, terms: str = "linear") -> None:
        super().__init__()
        if terms not in CAMERA_TERMS:
            raise ValueError(f"CameraCorrection: terms={terms!r}; expected one of {CAMERA_TERMS}")
        self.terms = terms
        self.linear = nn.Parameter(torch.zeros(3, 3))
        self.offset = nn.Parameter(torch.zeros(3))
        if terms == "quadratic":
            self.quadratic = nn.Parameter(torch.zeros(3, 3))
        frontal = torch.from_numpy(cameras.look_at(0.0, 0.0)[:3, :3].astype("float32"))
        self.register_buffer("frontal", frontal, persistent=False)
        self.register_buffer("pivot", torch.tensor(cameras.PIVOT, dtype=torch.float32), persistent=False)

    def rotvecs(self, labels: torch.Tensor) -> torch.Tensor:
        """The cameras' rotation vectors about the pivot [B,3] (frontal camera -> each; no gradient)."""
        c2w = labels[:, :16].reshape(-1, 4, 4).float()
        return matrix_to_rotvec(c2w[:, :3, :3] @ self.frontal.T)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        c2w = labels[:, :16].reshape(-1, 4, 4).float()
        with torch.no_grad():
            r = self.rotvecs(labels)
            q = rotvec_to_matrix(r)  # frontal -> camera
        mapped = r @ (torch.eye(3, device=r.device) + self.linear).T + self.offset
        if self.terms == "quadratic":
            mapped = mapped + torch.stack([r[:, 0] ** 2, r[:, 1] ** 2, r[:, 0] * r[:, 1]], 1) @ self.quadratic.T
        corrected = rotvec_to_matrix(mapped)
        delta = corrected @ q.transpose(1, 2)  # camera -> corrected camera, about the pivot
        rot = delta @ c2w[:, :3, :3]
        pos = self.pivot + ((c2w[:, :3, 3] - self.pivot)[:, None, :] @ delta.transpose(1, 2))[:, 0]
        top = torch.cat([rot, pos[:, :, None]], 2)
        bottom = c2w[:, 3:4, :]
        return torch.cat([torch.cat([top, bottom], 1).reshape(-1, 16), labels[:, 16:].float()], 1)

    def describe(self) -> str:
        """One line: the correction as slopes (diagonal of I + M) and offsets in degrees."""
        diag = (1 + self.linear.detach().diagonal()).tolist()
        off = [math.degrees(v) for v in self.offset.detach().tolist()]
        return (f"camera correction: pitch {diag[0]:.3f}x{off[0]:+.2f} deg, yaw {diag[1]:.3f}x{off[1]:+.2f} deg, "
                f"roll {diag[2]:.3f}x{off[2]:+.2f} deg")


def fit_to_generator(generator: nn.Module, images: torch.Tensor, labels: torch.Tensor, terms: str = "quadratic",
                     steps: int = 400, latent_steps: int = 100, batch: int = 8, lr: float = 1e-2,
                     latent_lr: float = 1e-2, seed: int = 0, progress: bool = False) -> CameraCorrection:
    """The per-video correction fitted to a generator alone, without an avatar: one W+ latent shared by
    every frame (from the mean latent, ``latent_steps`` steps with the cameras as given), then the latent and
    the correction together for ``steps`` steps, by the L2 between ``generator`` renders and ``images``
    [N,3,R,R] in [-1,1] (R the generator's output size) at ``labels`` [N,25].

    A shared latent cannot follow per-frame poses, so only the cameras can explain them. A measuring tool
    (``bench end2end --prior-fit``): on frames the generator rendered it recovers a known distortion of their
    cameras (tests), on frames of another renderer it shows how far the generator's own notion of a camera
    sits from that renderer's (what learning a correction through this prior cannot go below)."""
    from tqdm.auto import tqdm

    generator = generator.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(512, generator.z_dim, generator=gen).to(labels.device)
        w_avg = generator.mapping(z, labels[:1].expand(512, -1))[:, :1].mean(0, keepdim=True)
    ws = w_avg.repeat(1, generator.num_ws, 1).clone().requires_grad_(True)
    corr = CameraCorrection(terms).to(labels.device)
    opt = torch.optim.Adam([{"params": [ws], "lr": latent_lr}, {"params": list(corr.parameters()), "lr": lr}])
    order = torch.Generator().manual_seed(seed + 1)
    n = len(labels)
    for step in tqdm(range(latent_steps + steps), desc="camera fit", leave=False, disable=not progress):
        pick = torch.randperm(n, generator=order)[:batch].to(labels.device)
        cams = labels[pick] if step < latent_steps else corr(labels[pick])
        pred = generator.synthesis(ws.expand(len(pick), -1, -1), cams, noise_mode="const")["image"]
        loss = torch.nn.functional.mse_loss(pred, images[pick])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()  # the correction has no gradient while the cameras are used as given
    return corr.eval().requires_grad_(False)
