"""The personalized basis in W+ (paper Sec. 3): ``w = alpha . B + offset``, its three orthogonality modes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

ORTHO_MODES = ("qr", "loss", "none")
BASIS_ROWS = ("unit", "raw")  # scale of the basis rows in the 'loss'/'none' modes (see PersonalizedBasis)
# randn: the release; w_pca: the generator's principal W directions (w_principal_directions); grad_pca: the
# principal directions of the training frames' W+ gradients at the start (gradient_principal_directions)
BASIS_INITS = ("randn", "w_pca", "grad_pca")
OFFSET_INITS = ("basis_mean", "w_avg")


class PersonalizedBasis(nn.Module):
    """k basis vectors in W+ and an offset: ``w = alpha . B_eff + offset`` -> [B,num_ws,w_dim].

    ``ortho``:
    - ``qr``   (default; the official release): ``B_eff`` = the orthonormalised rows of B, from
      a reduced QR decomposition of ``B^T`` in every forward pass, so ``B_eff B_eff^T = I``.
    - ``loss`` (the paper's text): ``B_eff = B``; :meth:`ortho_penalty` returns
      ``||B^ B^^T - I||_F^2`` on the row-normalised basis, added to the training loss.
    - ``none`` (Table 4's ablation): ``B_eff = B``, no constraint.

    ``rows``: the scale of ``B_eff``'s rows in the ``loss`` and ``none`` modes.
    - ``unit`` (default): every row normalised to unit length in every forward pass, the scale
      ``qr`` has, so that the orthogonality ablation compares orthogonality only (with ``raw``
      rows, ``randn`` rows of length ~sqrt(num_ws*w_dim) move w ~35x further for the same alpha).
    - ``raw``: ``B_eff = B`` as initialised (the release's rows, of length ~sqrt(num_ws*w_dim)).
    ``qr`` rows are unit-length either way.

    ``offset_init``:
    - ``w_avg`` (our default): the generator's average latent repeated over the num_ws layers.
      The release bypasses the mapping network, so the latent must land where the synthesis
      network expects it; starting at ``w_avg`` renders the generator's average face at step 0,
      which matters under the short CPU budgets of the smoke/default profiles.
    - ``basis_mean`` (the release): the mean of the random initial basis rows (entries ~N(0,1/k)).
    B is initialised with ``randn`` in both cases, as in the release, unless ``init_directions``
    [k, num_ws*w_dim] are given (their rows, at the length randn rows have:
    :func:`w_principal_directions`); :meth:`set_directions` replaces rows later (the trainer's
    ``grad_pca`` init, which needs the training frames: :func:`persona.ours.train.init_basis_from_gradients`).

    ``scale``: the length of the effective rows (1: unit rows, the release's QR); ``w = alpha .
    (scale * B_eff) + offset``.
    """

    def __init__(self, k: int, num_ws: int, w_dim: int, ortho: str = "qr", offset_init: str = "w_avg", w_avg: torch.Tensor | None = None,
                 rows: str = "unit", scale: float = 1.0, init_directions: torch.Tensor | None = None):
        super().__init__()
        if not scale > 0:
            raise ValueError(f"PersonalizedBasis: scale={scale}; expected > 0")
        self.scale = float(scale)
        if ortho not in ORTHO_MODES:
            raise ValueError(f"PersonalizedBasis: ortho={ortho!r}; expected one of {ORTHO_MODES}")
        if rows not in BASIS_ROWS:
            raise ValueError(f"PersonalizedBasis: rows={rows!r}; expected one of {BASIS_ROWS}")
        self.rows = rows
        if offset_init not in OFFSET_INITS:
            raise ValueError(f"PersonalizedBasis: offset_init={offset_init!r}; expected one of {OFFSET_INITS}")
        dim = num_ws * w_dim
        if not 0 < k <= dim:
            raise ValueError(f"PersonalizedBasis: k={k}; expected 1 <= k <= num_ws*w_dim = {dim}")
        self.k, self.num_ws, self.w_dim, self.ortho, self.offset_init = k, num_ws, w_dim, ortho, offset_init
        basis = torch.randn(k, dim)
        if init_directions is not None:  # rows of the given directions, at the length randn rows have
            init_directions = torch.as_tensor(init_directions, dtype=torch.float32)
            if init_directions.shape != (k, dim):
                raise ValueError(f"PersonalizedBasis: init_directions of shape [{k}, {dim}] expected, got {list(init_directions.shape)}")
            basis = F.normalize(init_directions, dim=1) * basis.norm(dim=1, keepdim=True)
        self.basis = nn.Parameter(basis)
        if offset_init == "w_avg":
            if w_avg is None:
                raise ValueError("PersonalizedBasis: offset_init='w_avg' needs the generator's w_avg [w_dim]")
            w_avg = torch.as_tensor(w_avg, dtype=torch.float32).reshape(-1)
            if w_avg.numel() != w_dim:
                raise ValueError(f"PersonalizedBasis: w_avg has {w_avg.numel()} entries, expected w_dim={w_dim}")
            offset = w_avg.repeat(num_ws)
        else:
            offset = basis.mean(dim=0)
        self.offset = nn.Parameter(offset.clone())

    @torch.no_grad()
    def set_directions(self, directions: torch.Tensor) -> None:
        """Replace B's rows by ``directions`` [m<=k, num_ws*w_dim] (normalised, at the length of the
        current rows); rows past m keep their values."""
        directions = torch.as_tensor(directions, dtype=self.basis.dtype, device=self.basis.device)
        if directions.dim() != 2 or directions.shape[0] > self.k or directions.shape[1] != self.basis.shape[1]:
            raise ValueError(f"PersonalizedBasis: directions of shape [<= {self.k}, {self.basis.shape[1]}] expected, "
                             f"got {list(directions.shape)}")
        m = directions.shape[0]
        self.basis[:m] = F.normalize(directions, dim=1) * self.basis[:m].norm(dim=1, keepdim=True)

    def effective_basis(self) -> torch.Tensor:
        """The basis actually used: [k, num_ws*w_dim] (orthonormal rows in ``qr`` mode), times ``scale``."""
        if self.ortho == "qr":
            q, _ = torch.linalg.qr(self.basis.t(), mode="reduced")  # [d,k], orthonormal columns
            rows = q.t()
        else:
            rows = F.normalize(self.basis, dim=1) if self.rows == "unit" else self.basis
        return rows * self.scale if self.scale != 1.0 else rows

    def ortho_penalty(self) -> torch.Tensor:
        """``||B^ B^^T - I||_F^2`` of the row-normalised basis (0 for orthogonal rows). Scalar."""
        rows = F.normalize(self.basis, dim=1)
        gram = rows @ rows.t()
        return ((gram - torch.eye(self.k, device=gram.device, dtype=gram.dtype)) ** 2).sum()

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """``alpha`` [B,k] -> ws [B,num_ws,w_dim]."""
        if alpha.dim() != 2 or alpha.shape[1] != self.k:
            raise ValueError(f"PersonalizedBasis: alpha of shape [B,{self.k}] expected, got {list(alpha.shape)}")
        w = alpha @ self.effective_basis() + self.offset
        return w.view(-1, self.num_ws, self.w_dim)


@torch.no_grad()
def generator_w_avg(G: nn.Module) -> torch.Tensor | None:
    """The generator's average latent [w_dim] (``G.backbone.mapping.w_avg``), or None."""
    for path in ("backbone.mapping.w_avg", "mapping.w_avg", "w_avg"):
        obj: Any = G
        try:
            for name in path.split("."):
                obj = getattr(obj, name)
        except AttributeError:
            continue
        if isinstance(obj, torch.Tensor):
            return obj.detach().float().reshape(-1).cpu()
    return None


@torch.no_grad()
def w_principal_directions(G: nn.Module, k: int, samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """The top-``k`` principal directions of the generator's own latent distribution, as W+ rows:
    [k, num_ws*w_dim].

    ``samples`` latents ``w = mapping(z, c)`` (z ~ N(0, I) from a generator seeded ``seed``, so the
    global RNG is untouched; c the frontal camera) are centred and decomposed (SVD); direction i is
    the i-th principal axis of W copied to every one of the num_ws layers and normalised. These are
    the directions along which the prior's faces vary most (GANSpace's observation: identity, pose,
    expression), all inside the subspace the synthesis network was trained on. When k > w_dim the
    remaining rows are random (seeded) directions.
    """
    from persona.cameras import camera_label

    mapping = G.backbone.mapping
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, int(G.z_dim), generator=gen)
    c = torch.as_tensor(camera_label(0.0, 0.0), dtype=torch.float32).reshape(1, -1).expand(samples, -1)
    w = mapping(z, c)  # an unconditional mapping (c_dim 0) ignores c
    w = (w[:, 0] if w.dim() == 3 else w).float()
    _, _, v = torch.linalg.svd(w - w.mean(0), full_matrices=False)  # v [w_dim, w_dim], rows = axes
    num_ws, w_dim = int(G.num_ws), int(G.w_dim)
    rows = v[: min(k, w_dim)].repeat(1, num_ws)  # [m, num_ws*w_dim]: the axis in every layer
    if k > w_dim:
        rows = torch.cat([rows, torch.randn(k - w_dim, num_ws * w_dim, generator=gen)])
    return F.normalize(rows, dim=1)


def gradient_principal_directions(gradients: torch.Tensor, k: int) -> torch.Tensor:
    """The top principal directions of per-frame W+ gradients [N, num_ws*w_dim] (centred over the
    frames, SVD): [min(k, N-1), num_ws*w_dim], unit rows. The directions in which the training
    frames pull the start's latent apart from their common pull: what differs between frames
    (expression, and what the camera alone does not explain), where a random basis starts with
    ~sqrt(k / (num_ws*w_dim)) of any direction."""
    g = gradients.reshape(len(gradients), -1).double()
    if len(g) < 2:
        raise ValueError(f"gradient_principal_directions: at least 2 frames' gradients expected, got {len(g)}")
    _, _, v = torch.linalg.svd(g - g.mean(0), full_matrices=False)
    return F.normalize(v[: min(k, len(g) - 1)].float(), dim=1)
