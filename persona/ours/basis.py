"""The personalized basis in W+ (paper Sec. 3): ``w = alpha . B + offset``, its three orthogonality modes."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

ORTHO_MODES = ("qr", "loss", "none")
BASIS_ROWS = ("unit", "raw")  # scale of the basis rows in the 'loss'/'none' modes (see PersonalizedBasis)
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
    B is initialised with ``randn`` in both cases, as in the release.
    """

    def __init__(self, k: int, num_ws: int, w_dim: int, ortho: str = "qr", offset_init: str = "w_avg", w_avg: torch.Tensor | None = None,
                 rows: str = "unit", scale: float = 1.0):
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
