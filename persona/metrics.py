"""Image metrics: PSNR, SSIM and LPIPS, one implementation used by every method and table.

Inputs are ``pred, target: [B,3,H,W] in [-1,1]`` (values outside are clamped, as a saved 8-bit
image would be). Every function returns per-frame values ``[B]`` (float64 tensor); take
``.mean()`` for the table. Because every value is per frame, splitting a batch never changes a
frame's score.

The region evaluated is an explicit argument, ``region``:

- ``None``: the full image (the paper's tables).
- a box ``[4]`` or ``[B,4]`` = ``(x0, y0, x1, y1)`` in [0,1] image coordinates (the dataset's
  ``mouth_box``): the pixels whose centres lie inside the box.
- a mask ``[B,1,H,W]`` (or ``[1,1,H,W]``) with weights in [0,1] (binary or soft).

A region selects which pixels are *scored*; it does not crop the images first. PSNR is the
weighted MSE over the region. SSIM is the per-pixel SSIM map averaged over the region, and LPIPS
is its spatial map averaged over the region, so their windows / receptive fields still see the
context around the region. This keeps a small mouth box (a few pixels at CPU resolutions)
well-defined for all three metrics and makes box and equivalent mask give the same number.
A frame whose region is empty gets NaN.

SSIM is scikit-image's ``structural_similarity`` with the settings of the reference
implementation of Wang et al. 2004 (Gaussian window, sigma 1.5, population covariance,
K1=0.01, K2=0.03, data range 1 on [0,1] images). We use scikit-image rather than torchmetrics
because it is already a dependency, is well kept and tested, and its options map one-to-one onto
the reference MATLAB implementation; no hand-written SSIM.

LPIPS is the ``lpips`` package with the AlexNet backbone (the paper's choice). Its linear heads
ship inside the package; the AlexNet ImageNet weights (``alexnet-owt-7be5be79.pth``) are a
torchvision download that our machines cannot make. We look for the file under
``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch``) without ever attempting a
download; when it is absent LPIPS is *unavailable*: values are NaN, :func:`lpips_available` is
False and :func:`lpips_unavailable_reason` says how to enable it. A random backbone is never
substituted silently; ``allow_random_backbone=True`` exists for tests only, and its values are
labelled as not LPIPS.
"""

from __future__ import annotations

import importlib.util
import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
LPIPS_LABEL = "LPIPS (AlexNet)"
NOT_LPIPS_LABEL = "NOT LPIPS: random AlexNet backbone (code-path test only)"

# Reference SSIM settings (Wang et al. 2004): Gaussian window sigma 1.5 (11x11), population covariance.
SSIM_SIGMA = 1.5
SSIM_HALF_WINDOW = int(3.5 * SSIM_SIGMA + 0.5)  # scikit-image's truncation -> 11x11 window


# ---------------------------------------------------------------------------------------------
# inputs and regions


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"metrics: expected torch tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"metrics: pred has shape {tuple(pred.shape)}; expected [B,3,H,W] in [-1,1]")
    if pred.shape != target.shape:
        raise ValueError(f"metrics: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ; expected equal [B,3,H,W]")
    pred = pred.detach().to(torch.float64).clamp(-1, 1)
    target = target.detach().to(pred.device, torch.float64).clamp(-1, 1)
    return pred, target


def box_mask(box: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Box ``[4]`` or ``[B,4]`` (x0,y0,x1,y1 in [0,1]) -> binary mask ``[B,1,H,W]`` (pixel centres inside)."""
    box = torch.as_tensor(box, dtype=torch.float64)
    if box.ndim == 1:
        box = box.expand(batch, 4)
    if box.shape != (batch, 4):
        raise ValueError(f"region box has shape {tuple(box.shape)}; expected [4] or [{batch},4] (x0,y0,x1,y1 in [0,1])")
    if not bool(((box >= -1e-6) & (box <= 1 + 1e-6)).all()):
        raise ValueError(f"region box {box.tolist()} is outside [0,1]; expected normalised image coordinates")
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) / height
    inside_x = (xs[None, :] >= box[:, 0:1]) & (xs[None, :] <= box[:, 2:3])  # [B,W]
    inside_y = (ys[None, :] >= box[:, 1:2]) & (ys[None, :] <= box[:, 3:4])  # [B,H]
    return (inside_y[:, :, None] & inside_x[:, None, :]).to(torch.float64)[:, None]


def region_weights(region: torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor | None:
    """``region`` (None | box [4]/[B,4] | mask [B,1,H,W]) -> weights ``[B,1,H,W]`` in [0,1], or None for full."""
    if region is None:
        return None
    region = torch.as_tensor(region).detach().cpu()
    if region.ndim in (1, 2) and region.shape[-1] == 4:
        return box_mask(region, batch, height, width)
    if region.ndim == 4 and region.shape[1] == 1 and region.shape[2:] == (height, width) and region.shape[0] in (1, batch):
        weights = region.to(torch.float64).expand(batch, 1, height, width)
        if bool((weights < 0).any()) or bool((weights > 1).any()):
            raise ValueError("region mask has values outside [0,1]; expected weights in [0,1]")
        return weights
    raise ValueError(
        f"region has shape {tuple(region.shape)}; expected None, a box [4] or [{batch},4] (x0,y0,x1,y1 in [0,1]) "
        f"or a mask [{batch},1,{height},{width}]"
    )


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """values [B,1,H,W] (or [B,C,H,W]), weights [B,1,H,W] | None -> [B]; empty region -> NaN."""
    if weights is None:
        return values.flatten(1).mean(1)
    weights = weights.to(values.device, values.dtype).expand_as(values)
    total = weights.flatten(1).sum(1)
    mean = (values * weights).flatten(1).sum(1) / total.clamp_min(1e-300)
    return torch.where(total > 0, mean, torch.full_like(mean, float("nan")))


# ---------------------------------------------------------------------------------------------
# PSNR and SSIM


def psnr(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB on [0,1] images: ``10 log10(1 / MSE)``.

    pred, target: [B,3,H,W] in [-1,1]; region: see the module docstring. Returns ``[B]``
    (float64; ``inf`` for identical frames, NaN for an empty region).
    """
    pred, target = _check_pair(pred, target)
    b, _, h, w = pred.shape
    weights = region_weights(region, b, h, w)
    squared = ((pred - target) / 2).square().mean(1, keepdim=True)  # [B,1,H,W], [0,1] units
    mse = _weighted_mean(squared, weights)
    return (10 * torch.log10(1.0 / mse)).cpu()


def ssim(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, reference settings) via scikit-image.

    pred, target: [B,3,H,W] in [-1,1], at least 11x11; region: see the module docstring.
    Returns ``[B]`` float64. Full image: scikit-image's mean SSIM (window-valid interior).
    With a region: the SSIM map averaged over the region's pixels that lie in the window-valid
    interior (over the whole region when it lies entirely in the border band).
    """
    from skimage.metrics import structural_similarity

    pred, target = _check_pair(pred, target)
    b, _, h, w = pred.shape
    if min(h, w) < 2 * SSIM_HALF_WINDOW + 1:
        raise ValueError(f"ssim: images are {h}x{w}; the reference 11x11 Gaussian window needs at least 11x11")
    weights = region_weights(region, b, h, w)
    pred01 = ((pred + 1) / 2).cpu().numpy().transpose(0, 2, 3, 1)
    target01 = ((target + 1) / 2).cpu().numpy().transpose(0, 2, 3, 1)
    interior = torch.zeros(1, 1, h, w, dtype=torch.float64)
    pad = SSIM_HALF_WINDOW
    interior[..., pad:h - pad, pad:w - pad] = 1
    values = []
    for i in range(b):
        mean_ssim, ssim_map = structural_similarity(
            target01[i], pred01[i], data_range=1.0, channel_axis=-1, gaussian_weights=True,
            sigma=SSIM_SIGMA, use_sample_covariance=False, full=True,
        )
        if weights is None:
            values.append(float(mean_ssim))
            continue
        ssim_map = torch.from_numpy(np.ascontiguousarray(ssim_map.mean(-1)))[None, None]
        wi = weights[i:i + 1]
        inner = wi * interior
        use = inner if float(inner.sum()) > 0 else wi
        values.append(float(_weighted_mean(ssim_map, use)[0]))
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# LPIPS


def alexnet_weights_path() -> Path:
    """Where torchvision keeps the AlexNet weights: ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``.

    ``torch.hub.get_dir()`` only reads environment variables ($TORCH_HOME, $XDG_CACHE_HOME);
    it never touches the network.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def lpips_available() -> bool:
    """True when real LPIPS can be computed offline (the AlexNet weights file is present)."""
    return alexnet_weights_path().is_file()


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS is available; otherwise a footnote saying why and how to enable it."""
    if lpips_available():
        return None
    return (
        f"LPIPS unavailable: the AlexNet backbone weights {ALEXNET_FILE} are not at {alexnet_weights_path()} "
        "(they cannot be downloaded here). To enable LPIPS, copy that file there (set $TORCH_HOME to use "
        "another cache folder), or run once with internet: "
        "python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\""
    )


L2_ONLY_NOTE = ("L2 only (l2_only: true): the AlexNet weights for LPIPS were absent, so ours trained with L2 alone "
                "(lambda_lpips = 0), PTI optimised MSE alone, and the LPIPS column is empty; the paper's losses include LPIPS.")


def require_lpips(where: str = "the paper profile", l2_only: bool = False) -> None:
    """Refuse to run ``where`` without real LPIPS, naming the missing AlexNet weights file, unless
    ``l2_only`` (the user's explicit choice; tables then carry :data:`L2_ONLY_NOTE`)."""
    if l2_only or lpips_available():
        return
    from persona.errors import PersonaFileError

    raise PersonaFileError(
        f"{alexnet_weights_path()}: AlexNet weights file {ALEXNET_FILE} not found; {where} trains and scores with LPIPS "
        f"(AlexNet). Copy the file there (or set $TORCH_HOME), or run L2-only explicitly (l2_only: true in "
        f"notebooks/params/paper.yaml; --lambda-lpips 0 for `python -m persona train`): the tables then say so")


def _lpips_head_path() -> Path:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'lpips' package is not installed (pip install lpips)")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"


def _load_alexnet_trunk(model: nn.Module, path: Path) -> None:
    """Copy torchvision AlexNet ``features.N.*`` weights into lpips' ``net.sliceK.N.*`` (strict)."""
    from persona.errors import PersonaInputError
    from persona.runs import load_torch_weights

    state = load_torch_weights(path)
    if not isinstance(state, dict):
        raise PersonaInputError(f"{path}: expected a state dict of torchvision AlexNet, got {type(state).__name__}")
    own = model.state_dict()
    updates = {}
    for name, tensor in own.items():
        if not name.startswith("net.slice"):
            continue
        _, _, index, param = name.split(".")  # net.sliceK.N.weight
        source = f"features.{index}.{param}"
        if source not in state:
            raise PersonaInputError(f"{path}: missing {source!r}; expected torchvision AlexNet weights")
        if not isinstance(state[source], torch.Tensor) or tuple(state[source].shape) != tuple(tensor.shape):
            raise PersonaInputError(f"{path}: {source} has shape {tuple(getattr(state[source], 'shape', ()))}, "
                                    f"expected a tensor of shape {tuple(tensor.shape)}")
        updates[name] = state[source]
    model.load_state_dict(updates, strict=False)


def build_lpips_network(allow_random_backbone: bool = False) -> nn.Module | None:
    """The ``lpips.LPIPS(net='alex')`` module with its calibrated linear heads, frozen, eval mode.

    Built with a random trunk (no torchvision download is ever attempted); the AlexNet weights are
    then loaded from :func:`alexnet_weights_path`. Returns None when that file is absent, unless
    ``allow_random_backbone`` (tests only: the result is not LPIPS; ``model.is_real_lpips`` is False).
    """
    real = lpips_available()
    if not real and not allow_random_backbone:
        return None
    from persona._torchvision import import_lpips

    lpips = import_lpips()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation notices
        model = lpips.LPIPS(pretrained=False, net="alex", pnet_rand=True, verbose=False)
    heads = torch.load(_lpips_head_path(), map_location="cpu", weights_only=True)
    missing = [k for k in model.state_dict() if re.match(r"lin\d\.", k) and k not in heads]  # lins.N alias linN
    if missing:
        raise KeyError(f"{_lpips_head_path()}: missing LPIPS linear heads {missing}")
    model.load_state_dict(heads, strict=False)
    if real:
        _load_alexnet_trunk(model, alexnet_weights_path())
    model.is_real_lpips = real
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def lpips_loss_model() -> nn.Module | None:
    """LPIPS as a training loss (``model(pred, target) -> [B,1,1,1]``, inputs in [-1,1], frozen),
    or None when the AlexNet weights are absent (trainers then drop the perceptual term and say so)."""
    return build_lpips_network()


class LPIPS:
    """LPIPS metric: ``LPIPS()(pred, target, region=None) -> [B]`` (NaN when unavailable).

    Attributes: ``available`` (real LPIPS can be computed), ``label`` (the column name to print:
    ``LPIPS (AlexNet)`` or, for the test-only random backbone, a label saying it is not LPIPS),
    ``reason`` (None, or the footnote for tables when unavailable).
    """

    def __init__(self, allow_random_backbone: bool = False, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = build_lpips_network(allow_random_backbone)
        if self.model is not None:
            self.model.to(self.device)
        self.available = self.model is not None and bool(self.model.is_real_lpips)
        self.reason = lpips_unavailable_reason()
        self.label = LPIPS_LABEL if self.available else NOT_LPIPS_LABEL

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
        """pred, target: [B,3,H,W] in [-1,1] (at least 32x32); region: see the module docstring -> [B] float64."""
        pred, target = _check_pair(pred, target)
        b, _, h, w = pred.shape
        if self.model is None:
            return torch.full((b,), float("nan"), dtype=torch.float64)
        if min(h, w) < 32:
            raise ValueError(f"lpips: images are {h}x{w}; AlexNet needs at least 32x32")
        weights = region_weights(region, b, h, w)
        p, t = pred.float().to(self.device), target.float().to(self.device)
        if weights is None:
            return self.model(p, t).flatten().double().cpu()
        self.model.spatial = True
        try:
            spatial_map = self.model(p, t).double().cpu()  # [B,1,H,W]
        finally:
            self.model.spatial = False
        return _weighted_mean(spatial_map, weights)


_SHARED_LPIPS: LPIPS | None = None


def lpips(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-frame LPIPS ``[B]`` with a shared model; NaN when unavailable (see :func:`lpips_unavailable_reason`)."""
    global _SHARED_LPIPS
    if _SHARED_LPIPS is None or _SHARED_LPIPS.available != lpips_available():
        _SHARED_LPIPS = LPIPS()
    return _SHARED_LPIPS(pred, target, region)


def image_metrics(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None,
                  lpips_metric: LPIPS | None = None) -> dict[str, torch.Tensor]:
    """``{'psnr','ssim','lpips'}`` -> ``[B]`` each for one region (LPIPS NaN when unavailable)."""
    values = {"psnr": psnr(pred, target, region), "ssim": ssim(pred, target, region)}
    values["lpips"] = (lpips_metric or lpips)(pred, target, region)
    return values


def finite_mean(values: torch.Tensor | np.ndarray) -> float:
    """Mean over frames ignoring NaN (empty regions); NaN when nothing is left."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else math.nan


__all__ = [
    "ALEXNET_FILE", "LPIPS", "LPIPS_LABEL", "NOT_LPIPS_LABEL", "alexnet_weights_path", "box_mask",
    "build_lpips_network", "finite_mean", "image_metrics", "lpips", "lpips_available",
    "lpips_loss_model", "lpips_unavailable_reason", "psnr", "region_weights", "ssim",
]
