"""NHA baseline (Neural Head Avatars, Grassal et al. CVPR 2022): a mesh avatar with a neural texture.

Table 2 row "NHA". The core of the original (philgras/neural-head-avatars, ``nha_optimizer.py``):

- **Morphable mesh** driven by the per-frame expression; head pose comes from the camera (our
  datasets express head motion as camera motion). The real NHA tracks FLAME from the video;
  FLAME cannot be downloaded here, so the mesh comes from config field ``mesh``:

  * ``tracked`` (default): tracked from the training frames and their cameras only, as a real
    user would (:mod:`persona.baselines.nha_tracking`): mediapipe's 478 face landmarks per frame,
    lifted to the world frame with the known camera, a per-landmark linear expression model
    regressed on the frames' expression vectors, and a generic ellipsoid head template pulled onto
    the tracked face. Nothing of the synthetic world's generator is used. The tracked mesh is
    stored in the checkpoint (``mesh.*``), so rendering a run needs no tracking.
  * ``oracle``: the synthetic world's own morphable head
    (``persona.data.world.morphable_mesh``) - the function the frames were rendered with, with
    the person's shape inside its span. A labelled reference row only, not NHA as a user has it.
    Measured (default profile, id00, 1200 steps, 100 test frames): tracked 26.94 ± 1.60 dB PSNR
    (mouth 25.29), oracle 31.08 ± 1.06 dB (mouth 26.10); tracking ~0.015 s per frame.
  * a user-provided FLAME model converted to ``.npz`` (``flame_path``, see :class:`FlameNpzMesh`).
- **Shape**: the morphable model's shape coefficients of the person, optimised (NHA's ``_shape``,
  ``w_shape_reg``; the tracked mesh has none: the person's shape is its tracked mean).
- **Geometry refinement**: per-vertex offsets from an MLP over (positional encoding of the
  canonical vertex, a learned per-vertex feature, an expression code), bounded by ``tanh`` as in
  NHA's ``OffsetMLP``; regularised by a Laplacian on the offsets and their squared magnitude
  (NHA's ``w_lap`` / ``w_surface_reg``).
- **Appearance**: an explicit learned feature texture in UV space (NHA's ``MultiTexture``; our UVs
  are a spherical projection of the canonical vertices, seam at the back of the head) sampled at
  the rasterised surface and decoded per pixel by an MLP conditioned on the canonical position,
  the surface normal, the view direction and the expression code (NHA's ``TextureMLP`` with its
  normal encoding and expression/jaw conditioning), output ``tanh`` in [-1,1].
- Rendered by :mod:`persona.baselines.raster` (exact visibility, differentiable barycentrics, a
  SoftRas coverage for silhouette gradients) and composited over the dataset's background
  (learned when the dataset has none).
- Schedule: NHA trains geometry, then texture, then both. Without its landmark / segmentation
  supervision a geometry-first stage has nothing to fit, so we keep two stages: texture only
  (``texture_only_fraction`` of the steps, offsets frozen at zero-init), then joint.

Deviations (what is unavailable offline or on a CPU): no perceptual loss (NHA's uses an
InsightFace backbone), no silhouette / semantic / landmark losses (no face parsing or landmark
tracker here), SIREN layers replaced by ReLU MLPs with Fourier features, one texture (NHA has a
separate teeth texture), FLAME used without its skinning (jaw/neck/eye rotations are not applied:
only the linear shape and expression blendshapes).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from persona.baselines.raster import rasterize, vertex_normals
from persona.cameras import centres
from persona.data.formats import EXPRESSION_DIM, check_npz
from persona.errors import PersonaFileError, PersonaInputError
from persona.methods import Method
from persona.profiles import config_for, torch_device, with_dry_run
from persona.runs import RunDir, load_tensors, prefixed, restore_training_state, run_record, training_state, unprefixed

NAME = "nha"


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------


@dataclass
class NHAConfig:
    """Sizes, schedule and loss weights. ``resolution``: None = the dataset's own size."""

    resolution: int | None = None
    steps: int = 1200
    batch_size: int = 4
    lr: float = 3e-3  # texture + decoder + background
    offset_lr: float = 1e-3
    texture_only_fraction: float = 0.25
    # where the mesh comes from: "tracked" (mediapipe landmarks of the training frames fitted with a
    # generic head template, persona.baselines.nha_tracking) or "oracle" (the synthetic world's own
    # morphable head, the function the frames were rendered with; a labelled reference only)
    mesh: str = "tracked"
    track_size: int = 256  # frames are upsampled to this size for the landmark tracker
    # head mesh grid (None: the world's default, 40 x 56 -> 4256 faces; the tracked template uses 30 x 42)
    mesh_latitudes: int | None = 30
    mesh_longitudes: int | None = 42
    # geometry refinement (NHA: 6 x 128 SIREN, 32-d vertex features)
    vertex_feature_dim: int = 8
    offset_hidden: int = 64
    offset_layers: int = 3
    max_offset: float = 0.1  # world units (the synthetic head is ~0.35 wide, ~0.55 tall)
    # appearance (NHA: 64-channel 256x256 texture, 8 x 256 SIREN)
    texture_resolution: int = 64
    texture_channels: int = 8
    texture_hidden: int = 64
    texture_layers: int = 3
    expression_code_dim: int = 16
    position_frequencies: int = 4
    # rasteriser
    soft_edges: bool = True
    sigma_px: float = 0.5
    # losses (NHA: w_lap 5e-2, w_surface_reg 1e-4 on FLAME's scale)
    w_rgb: float = 1.0
    w_lap: float = 1.0
    w_offset: float = 1e-2
    w_shape: float = 1e-3  # NHA's w_shape_reg
    # bookkeeping
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 300
    device: str = "cpu"  # torch device of the model and the rasteriser: cpu, cuda, cuda:N or auto (cuda when available)
    # pixels one forward/backward pass renders at most: a batch beyond it is split into micro-batches
    # whose gradients add up to the whole batch's (the same step; the decoder's activations of 16
    # frames at 512 px need tens of GB in one pass). 2^20 = four 512-px frames.
    max_pixels_per_pass: int = 1 << 20
    num_workers: int = 0  # DataLoader worker processes decoding the training frames (paper: 8; 0: in this process)
    # optional user-provided FLAME (.npz conversion, see FlameNpzMesh)
    flame_path: str | None = None
    flame_scale: float = 1.0
    flame_translation: tuple[float, float, float] = (0.0, 0.0, 0.0)


PROFILES: dict[str, NHAConfig] = with_dry_run({
    "smoke": NHAConfig(mesh_latitudes=20, mesh_longitudes=28, steps=30, batch_size=2, vertex_feature_dim=4,
                       offset_hidden=32, offset_layers=2, texture_resolution=32, texture_channels=4,
                       texture_hidden=32, texture_layers=2, expression_code_dim=8, position_frequencies=2,
                       log_every=10, checkpoint_every=15),
    "default": NHAConfig(),
    # NHA's network sizes (optimize_avatar.ini); steps are ours: NHA runs 250 epochs over a video
    "paper": NHAConfig(mesh_latitudes=None, mesh_longitudes=None, steps=30000, batch_size=16, lr=1e-3,
                       offset_lr=1e-4, vertex_feature_dim=32, offset_hidden=128, offset_layers=6,
                       texture_resolution=256, texture_channels=64, texture_hidden=256, texture_layers=8,
                       expression_code_dim=32, position_frequencies=6, w_lap=5e-2, w_offset=1e-4,
                       log_every=100, checkpoint_every=1000, device="auto", num_workers=8),
})

_ALIASES = {"iterations": "steps"}  # names the CLI passes for every method


def make_config(cfg: dict | None = None, profile: str = "default") -> NHAConfig:
    """``PROFILES[profile]`` with the entries of ``cfg`` applied (``cfg['profile']`` wins)."""
    config = config_for(PROFILES, profile, cfg, "NHA config", aliases=_ALIASES)
    try:
        torch_device(config.device)
    except (RuntimeError, TypeError):
        raise PersonaInputError(f"NHA config: device {config.device!r}; expected cpu, cuda, cuda:N or auto") from None
    if config.mesh not in ("tracked", "oracle"):
        raise PersonaInputError(f"NHA config: mesh {config.mesh!r}; expected 'tracked' (from the frames) or 'oracle' "
                                f"(the synthetic world's own head)")
    return config


# ----------------------------------------------------------------------------------------------
# mesh models
# ----------------------------------------------------------------------------------------------


class SyntheticHeadMesh:
    """The synthetic world's generic morphable head (the FLAME stand-in).

    ``__call__(expression [B,76], shape [B,shape_dim] or None) -> vertices [B,V,3]`` world
    coordinates (differentiable w.r.t. shape); ``faces`` [F,3]; ``shape_dim`` coefficients.
    """

    def __init__(self, latitudes: int | None = None, longitudes: int | None = None) -> None:
        from persona.data.world import SHAPE_DIM, morphable_mesh

        self._mesh = morphable_mesh
        self._grid = {k: v for k, v in (("n_lat", latitudes), ("n_lon", longitudes)) if v is not None}
        self.shape_dim = SHAPE_DIM
        _, faces = morphable_mesh(torch.zeros(1, EXPRESSION_DIM), **self._grid)
        self.faces = torch.as_tensor(faces).long()

    def __call__(self, expression: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        vertices, _ = self._mesh(expression, shape, **self._grid)
        return torch.as_tensor(vertices, dtype=torch.float32)


class FlameNpzMesh:
    """A user-provided FLAME model, as an ``.npz`` with ``v_template`` [V,3], ``f`` [F,3] and
    ``shapedirs`` [V,3,S+E] (FLAME 2020: 300 shape + 100 expression components).

    FLAME's official ``generic_model.pkl`` is a pickle (with chumpy arrays): unpickling runs code
    named by the file, so it is refused here. Convert it once, on a machine where you trust the
    file and have ``chumpy`` installed::

        import pickle, numpy as np
        with open("generic_model.pkl", "rb") as f:
            m = pickle.load(f, encoding="latin1")
        np.savez("flame.npz", v_template=np.array(m["v_template"]), f=np.array(m["f"]),
                 shapedirs=np.array(m["shapedirs"]))

    The expression vector [B,76] drives the first 76 expression components (meaningful only when
    the dataset's expressions are FLAME's); skinning (jaw, neck, eyes) is not applied. The mesh is
    placed in world coordinates as ``scale * v + translation``.
    """

    SHAPE_DIMS = 300

    def __init__(self, path: str | Path, scale: float = 1.0, translation: tuple[float, float, float] = (0.0, 0.0, 0.0)):
        path = Path(path)
        if path.suffix.lower() == ".pkl":
            raise PersonaInputError(f"{path}: FLAME pickles are not loaded (unpickling executes code named by the file); "
                                    "convert it to .npz once with the snippet in persona.baselines.nha.FlameNpzMesh")
        if not path.is_file():
            raise PersonaFileError(f"{path}: FLAME model not found (config field flame_path)")
        arrays = check_npz(path)  # sizes checked before anything is unpacked (a zip bomb is refused unopened)
        missing = {"v_template", "f", "shapedirs"} - set(arrays)
        if missing:
            raise PersonaInputError(f"{path}: missing array(s) {sorted(missing)}; expected v_template [V,3], f [F,3], shapedirs [V,3,K]")
        (v_shape, _), (f_shape, f_dtype), (d_shape, _) = arrays["v_template"], arrays["f"], arrays["shapedirs"]
        if len(v_shape) != 2 or v_shape[1] != 3 or len(f_shape) != 2 or f_shape[1] != 3 or f_dtype.kind not in "iu":
            raise PersonaInputError(f"{path}: v_template {list(v_shape)}, f {list(f_shape)} ({f_dtype}); expected [V,3] floats "
                                    f"and [F,3] integer vertex indices")
        if len(d_shape) != 3 or tuple(d_shape[:2]) != tuple(v_shape) or d_shape[2] <= self.SHAPE_DIMS:
            raise PersonaInputError(f"{path}: shapedirs {list(d_shape)} must be [V,3,>{self.SHAPE_DIMS}] with V = {v_shape[0]}")
        with np.load(path, allow_pickle=False) as data:
            template = torch.from_numpy(np.asarray(data["v_template"], np.float32))
            faces = torch.from_numpy(np.asarray(data["f"], np.int64))
            dirs = torch.from_numpy(np.asarray(data["shapedirs"], np.float32))
        if len(faces) and (int(faces.min()) < 0 or int(faces.max()) >= len(template)):
            raise PersonaInputError(f"{path}: f holds vertex indices {int(faces.min())}..{int(faces.max())}; "
                                    f"expected 0..{len(template) - 1}")
        if not (torch.isfinite(template).all() and torch.isfinite(dirs).all()):
            raise PersonaInputError(f"{path}: v_template or shapedirs contain NaN or Inf (or values beyond float32)")
        self.faces = faces
        self.shape_dim = self.SHAPE_DIMS
        self._template = template * scale + torch.tensor(translation, dtype=torch.float32)
        self._shape_dirs = dirs[:, :, :self.SHAPE_DIMS] * scale
        expression_dirs = dirs[:, :, self.SHAPE_DIMS:self.SHAPE_DIMS + EXPRESSION_DIM] * scale
        self._expression_dirs = F.pad(expression_dirs, (0, EXPRESSION_DIM - expression_dirs.shape[2]))

    def __call__(self, expression: torch.Tensor, shape: torch.Tensor | None = None) -> torch.Tensor:
        vertices = self._template + torch.einsum("vck,bk->bvc", self._expression_dirs, expression.float())
        if shape is not None:
            vertices = vertices + torch.einsum("vck,bk->bvc", self._shape_dirs, shape.float())
        return vertices


def mesh_model_for(config: NHAConfig) -> Any:
    """The configured mesh model: FLAME when ``flame_path`` is set, else the synthetic world's head
    (``mesh: oracle``). The tracked mesh needs the training frames: :meth:`NHA.fit` builds it."""
    if config.flame_path:
        return FlameNpzMesh(config.flame_path, config.flame_scale, config.flame_translation)
    if config.mesh == "tracked":
        raise RuntimeError("NHA: the tracked mesh is built from the training frames; call fit() or load() first")
    return SyntheticHeadMesh(config.mesh_latitudes, config.mesh_longitudes)


# ----------------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------------


def fourier_features(x: torch.Tensor, frequencies: int) -> torch.Tensor:
    """[...,D] -> [...,D * (1 + 2 * frequencies)]: x, sin(2^k pi x), cos(2^k pi x)."""
    scales = (2.0 ** torch.arange(frequencies, dtype=x.dtype, device=x.device)) * math.pi
    angles = (x[..., None] * scales).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


def mlp(inputs: int, hidden: int, layers: int, outputs: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers of width ``hidden``; the last linear layer starts at zero."""
    parts: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    last = nn.Linear(width, outputs)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*parts, last)


def spherical_uv(points: torch.Tensor) -> torch.Tensor:
    """Canonical points [V,3] (centred) -> UV [V,2] in [0,1]: u from the azimuth about the y axis
    (u = 0.5 faces +z, the frontal camera's side; seam at the back), v from the polar angle (0 top)."""
    radius = points.norm(dim=-1).clamp(min=1e-8)
    u = torch.atan2(points[:, 0], points[:, 2]) / (2 * math.pi) + 0.5
    v = torch.acos((points[:, 1] / radius).clamp(-1.0, 1.0)) / math.pi
    return torch.stack([u, v], dim=-1)


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """faces [F,3] -> directed edges [E,2] (each undirected edge both ways, once)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)


def uniform_laplacian(values: torch.Tensor, edges: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """values [B,V,C], edges [E,2] from :func:`mesh_edges` -> [B,V,C]: each vertex minus the mean of its neighbours."""
    sums = torch.zeros_like(values).index_add(1, edges[:, 0], values[:, edges[:, 1]])
    ones = torch.ones(len(edges), dtype=values.dtype, device=values.device)
    counts = torch.zeros(num_vertices, dtype=values.dtype, device=values.device).index_add(0, edges[:, 0], ones)
    return values - sums / counts.clamp(min=1)[None, :, None]


def fill_outward(image: torch.Tensor, mask: torch.Tensor, reach: int = 2) -> torch.Tensor:
    """Extend image [B,C,H,W] from covered pixels (mask [B,1,H,W]) into a ``reach``-px border
    (mean of covered neighbours), so soft edges outside the hard coverage have a colour."""
    size = 2 * reach + 1
    total = F.avg_pool2d(image * mask, size, stride=1, padding=reach, count_include_pad=False)
    weight = F.avg_pool2d(mask, size, stride=1, padding=reach, count_include_pad=False)
    spread = total / weight.clamp(min=1e-6)
    return torch.where(mask > 0.5, image, spread)


class NeuralHeadAvatar(nn.Module):
    """Mesh + offsets + neural texture + decoder for one person.

    forward(expression [B,76], camera [B,25]) -> dict: ``image`` [B,3,H,W] in [-1,1], ``alpha``
    [B,1,H,W], ``offsets`` [B,V,3] (world units), ``vertices`` [B,V,3].
    """

    def __init__(self, config: NHAConfig, mesh_model: Any, resolution: tuple[int, int], background: torch.Tensor | None):
        super().__init__()
        self.config = config
        self.mesh_model = mesh_model
        self.resolution = resolution
        faces = torch.as_tensor(mesh_model.faces).long()
        with torch.no_grad():
            canonical = mesh_model(torch.zeros(1, EXPRESSION_DIM))[0].float()
        centre = 0.5 * (canonical.amax(0) + canonical.amin(0))
        scale = (canonical - centre).norm(dim=-1).max().clamp(min=1e-6)
        normalised = (canonical - centre) / scale
        self.register_buffer("faces", faces, persistent=False)
        self.register_buffer("edges", mesh_edges(faces), persistent=False)
        self.register_buffer("canonical", normalised, persistent=False)  # [V,3] in the unit ball
        self.register_buffer("uv", spherical_uv(normalised), persistent=False)  # [V,2]
        num_vertices = canonical.shape[0]
        c = config
        self.expression_code = nn.Linear(EXPRESSION_DIM, c.expression_code_dim)
        # the person's shape coefficients of the morphable model, optimised (NHA's ``_shape``)
        self.shape = nn.Parameter(torch.zeros(int(getattr(mesh_model, "shape_dim", 0))))
        self.vertex_features = nn.Parameter(torch.randn(num_vertices, c.vertex_feature_dim) * 0.02)
        position_dim = 3 * (1 + 2 * c.position_frequencies)
        self.offset_net = mlp(position_dim + c.vertex_feature_dim + c.expression_code_dim, c.offset_hidden, c.offset_layers, 3)
        self.texture = nn.Parameter(torch.randn(1, c.texture_channels, c.texture_resolution, c.texture_resolution) * 0.01)
        self.decoder = mlp(c.texture_channels + position_dim + 3 + 3 + c.expression_code_dim, c.texture_hidden, c.texture_layers, 3)
        height, width = resolution
        if background is None:
            self.background = nn.Parameter(torch.zeros(3, height, width))
        else:
            self.register_buffer("background", background.float().clone())

    def offsets(self, code: torch.Tensor) -> torch.Tensor:
        """Expression codes [B,E] -> vertex offsets [B,V,3] (world units, |.| < max_offset)."""
        batch = code.shape[0]
        position = fourier_features(self.canonical, self.config.position_frequencies)
        per_vertex = torch.cat([position, self.vertex_features], dim=-1)
        inputs = torch.cat([per_vertex[None].expand(batch, -1, -1), code[:, None].expand(-1, per_vertex.shape[0], -1)], dim=-1)
        return torch.tanh(self.offset_net(inputs)) * self.config.max_offset

    def forward(self, expression: torch.Tensor, camera: torch.Tensor, refine_geometry: bool = True) -> dict[str, torch.Tensor]:
        batch, device = expression.shape[0], self.texture.device
        code = self.expression_code(expression.float())
        shape = self.shape[None].expand(batch, -1) if self.shape.numel() else None
        # the mesh models compute on the CPU (a few thousand vertices); autograd crosses the copy
        cpu_shape = shape.cpu() if shape is not None else None
        if refine_geometry:
            base = self.mesh_model(expression.float().cpu(), cpu_shape).float().to(device)
            offsets = self.offsets(code)
        else:
            with torch.no_grad():
                base = self.mesh_model(expression.float().cpu(), cpu_shape).float().to(device)
                offsets = self.offsets(code.detach())
        vertices = base + offsets
        normals = vertex_normals(vertices, self.faces)
        attributes = torch.cat([self.uv[None].expand(batch, -1, -1), self.canonical[None].expand(batch, -1, -1), normals, vertices], dim=-1)
        frags = rasterize(vertices, self.faces, camera.float(), self.resolution, attributes=attributes,
                          soft=self.config.soft_edges, sigma_px=self.config.sigma_px)
        mask = frags.mask  # [B,1,H,W]
        alpha = frags.alpha if frags.alpha is not None else mask
        surface = frags.attributes  # [B,2+3+3+3,H,W]
        uv, position, normal, point = surface[:, 0:2], surface[:, 2:5], surface[:, 5:8], surface[:, 8:11]
        features = F.grid_sample(self.texture.expand(batch, -1, -1, -1), (uv * 2 - 1).permute(0, 2, 3, 1),
                                 mode="bilinear", padding_mode="border", align_corners=False)
        view = F.normalize(point - centres(camera.float())[:, :, None, None], dim=1)
        normal = F.normalize(normal, dim=1, eps=1e-8)
        height, width = self.resolution
        per_pixel = torch.cat([features, fourier_features(position.permute(0, 2, 3, 1), self.config.position_frequencies).permute(0, 3, 1, 2),
                               normal, view, code[:, :, None, None].expand(-1, -1, height, width)], dim=1)
        covered = (mask[:, 0] > 0.5)
        rgb = torch.zeros(batch, height, width, 3, dtype=per_pixel.dtype, device=device)
        rgb = rgb.index_put(covered.nonzero(as_tuple=True), torch.tanh(self.decoder(per_pixel.permute(0, 2, 3, 1)[covered])))
        rgb = fill_outward(rgb.permute(0, 3, 1, 2), mask)
        image = alpha * rgb + (1 - alpha) * self.background[None]
        return {"image": image, "alpha": alpha, "offsets": offsets, "vertices": vertices}

    def regularisers(self, offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """NHA's geometry regularisers on the offsets [B,V,3], in units of ``max_offset``."""
        unit = offsets / self.config.max_offset
        laplacian = uniform_laplacian(unit, self.edges, unit.shape[1])
        return {"lap": (laplacian ** 2).sum(-1).mean(), "offset": (unit ** 2).sum(-1).mean(),
                "shape": (self.shape ** 2).mean() if self.shape.numel() else offsets.new_zeros(())}


# ----------------------------------------------------------------------------------------------
# method
# ----------------------------------------------------------------------------------------------


def _stack_dataset(dataset: Any, num_workers: int = 0) -> dict[str, torch.Tensor]:
    """Every sample of a FrameDataset-like dataset, stacked: image [N,3,H,W], camera [N,25], expression [N,76]."""
    from persona.data.dataset import stack_samples

    return {k: v.float() for k, v in stack_samples(dataset, ("image", "camera", "expression"), desc="nha load frames",
                                                   num_workers=num_workers).items()}


class NHA(Method):
    """The NHA baseline behind :class:`persona.methods.Method`."""

    name = NAME
    supports_novel_views = True

    def __init__(self, config: NHAConfig, mesh_model: Any = None):
        self.config = config
        self._mesh_model = mesh_model
        self.model: NeuralHeadAvatar | None = None
        self.train_seconds = 0.0

    @property
    def mesh_model(self) -> Any:
        if self._mesh_model is None:
            self._mesh_model = mesh_model_for(self.config)
        return self._mesh_model

    @property
    def device(self) -> torch.device:
        """The configured device (``auto``: cuda when available, else cpu)."""
        return torch_device(self.config.device)

    def _build(self, resolution: tuple[int, int], background: torch.Tensor | None) -> NeuralHeadAvatar:
        with torch.random.fork_rng():  # seeded initialisation on the CPU (the same on every device), the caller's RNG untouched
            torch.manual_seed(self.config.seed)
            return NeuralHeadAvatar(self.config, self.mesh_model, resolution, background).to(self.device)

    def micro_batches(self, batch: int, pixels_per_frame: int) -> list[slice]:
        """The parts ``batch`` frames are rendered in, each at most ``max_pixels_per_pass`` pixels
        (at least one frame): one slice when the whole batch fits."""
        per_pass = max(1, self.config.max_pixels_per_pass // max(1, pixels_per_frame))
        return [slice(lo, min(lo + per_pass, batch)) for lo in range(0, batch, per_pass)]

    def _optimizer(self, model: NeuralHeadAvatar) -> torch.optim.Optimizer:
        geometry = [model.vertex_features, model.shape, *model.offset_net.parameters()]
        ids = {id(p) for p in geometry}
        appearance = [p for p in model.parameters() if id(p) not in ids]
        return torch.optim.Adam([{"params": geometry, "lr": self.config.offset_lr},
                                 {"params": appearance, "lr": self.config.lr}])

    def fit(self, train: Any, run: RunDir) -> None:
        """Photometric fit on the training frames; checkpoints to ``run`` and resumes from it."""
        cfg = self.config
        run.begin(run_record(NAME, asdict(cfg), train))
        frames = _stack_dataset(train, cfg.num_workers)
        height, width = frames["image"].shape[-2:]
        background = getattr(train, "background", None)
        if background is not None:
            background = torch.as_tensor(background).float()
            if background.shape != (3, height, width):
                raise ValueError(f"{getattr(train, 'root', 'dataset')}: background {tuple(background.shape)} != frames (3, {height}, {width})")
        start, latest = run.resume_point()
        if self._mesh_model is None and cfg.mesh == "tracked" and not cfg.flame_path:
            self._mesh_model = self._tracked_mesh(frames, latest, run)
        self.model = self._build((height, width), background)
        optimizer = self._optimizer(self.model)
        seconds = 0.0
        if latest is not None:
            meta = self._restore(latest, optimizer)
            start, seconds = int(meta["step"]), float(meta.get("train_seconds", 0.0))
        texture_only_steps = int(cfg.texture_only_fraction * cfg.steps)
        self.model.train()
        tic = time.perf_counter()
        bar = tqdm(range(start, cfg.steps), desc="nha fit", initial=start, total=cfg.steps, leave=False)
        device = self.device
        parts = self.micro_batches(cfg.batch_size, height * width)
        for step in bar:
            rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            pick = torch.randint(len(frames["image"]), (cfg.batch_size,), generator=rng)
            geometry = step >= texture_only_steps
            optimizer.zero_grad(set_to_none=True)
            losses: dict[str, torch.Tensor] = {}
            for part in parts:  # one part unless the batch exceeds max_pixels_per_pass: the same gradient either way
                chosen = pick[part]
                weight = (part.stop - part.start) / cfg.batch_size  # every loss is a mean over the batch
                out = self.model(frames["expression"][chosen].to(device), frames["camera"][chosen].to(device), refine_geometry=geometry)
                terms = {"rgb": cfg.w_rgb * (out["image"] - frames["image"][chosen].to(device)).abs().mean()}
                if geometry:
                    reg = self.model.regularisers(out["offsets"])
                    terms["lap"] = cfg.w_lap * reg["lap"]
                    terms["offset"] = cfg.w_offset * reg["offset"]
                    terms["shape"] = cfg.w_shape * reg["shape"]
                part_total = sum(terms.values())
                (part_total * weight if len(parts) > 1 else part_total).backward()
                for name, value in terms.items():
                    losses[name] = losses.get(name, 0.0) + value.detach() * weight
            total = sum(losses.values())
            if self.model.shape.grad is not None:
                # morphable_mesh's sqrt(clamp_min(0)) has 0 * inf = NaN gradients where a ray just
                # grazes a primitive; those entries carry no information, so they are zeroed
                torch.nan_to_num_(self.model.shape.grad, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                elapsed = seconds + time.perf_counter() - tic
                run.log(done, loss=total.item(), seconds=elapsed, **{k: v.item() for k, v in losses.items()})
                bar.set_postfix(loss=f"{total.item():.4f}")
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                self._save(run, done, optimizer, seconds + time.perf_counter() - tic)
        self.train_seconds = seconds + time.perf_counter() - tic
        if start < cfg.steps:
            run.log(cfg.steps, train_seconds=self.train_seconds)
        self.model.eval()

    def _tracked_mesh(self, frames: dict[str, torch.Tensor], latest: Path | None, run: RunDir) -> Any:
        """The mesh tracked from the training frames (or the one stored in the checkpoint being resumed)."""
        from persona.baselines.nha_tracking import TrackedHeadMesh, build_tracked_mesh

        if latest is not None:
            stored = unprefixed("mesh", load_tensors(latest)[0])
            if stored:
                return TrackedHeadMesh.from_tensors(stored)
        cfg = self.config
        mesh, tracked = build_tracked_mesh(frames["image"], frames["camera"], frames["expression"], cfg.mesh_latitudes or 30,
                                           cfg.mesh_longitudes or 42, cfg.track_size)
        self.tracking_seconds_per_frame = tracked.seconds_per_frame
        run.log(0, tracking_seconds_per_frame=tracked.seconds_per_frame, tracked_frames=int(tracked.found.sum()),
                frames=len(tracked.found), depth_offset=tracked.depth_offset)
        return mesh

    def _save(self, run: RunDir, step: int, optimizer: torch.optim.Optimizer, seconds: float) -> None:
        assert self.model is not None
        state, meta = training_state(optimizer)
        tensors = {**prefixed("model", self.model.state_dict()), **state}
        if hasattr(self.mesh_model, "tensors"):  # the tracked mesh travels with the checkpoint
            tensors.update(prefixed("mesh", self.mesh_model.tensors()))
        learned = isinstance(self.model.background, nn.Parameter)
        run.save_checkpoint(step, tensors, {**meta, "train_seconds": seconds,
                                            "resolution": list(self.model.resolution), "learned_background": learned})

    def _restore(self, path: Path, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
        tensors, meta = load_tensors(path)
        state = unprefixed("model", tensors)
        mesh = unprefixed("mesh", tensors)
        if self.model is None and mesh:
            from persona.baselines.nha_tracking import TrackedHeadMesh

            self._mesh_model = TrackedHeadMesh.from_tensors(mesh)
        if self.model is None:
            resolution = tuple(int(v) for v in meta["resolution"])
            background = None if meta.get("learned_background", False) else state["background"]
            self.model = self._build(resolution, background)  # type: ignore[arg-type]
        self.model.load_state_dict(state)
        if optimizer is not None:
            restore_training_state(tensors, meta, optimizer, str(path))
        return meta

    def load(self, run: RunDir) -> None:
        """Restore the latest checkpoint of ``run`` for rendering."""
        latest = run.latest_checkpoint()
        if latest is None:
            raise PersonaFileError(f"{run.root}: no NHA checkpoint under checkpoints/ (train it first)")
        self.model = None
        meta = self._restore(latest[1])
        self.train_seconds = float(meta.get("train_seconds", 0.0))
        self.model.eval()  # type: ignore[union-attr]

    @torch.no_grad()
    def render(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> torch.Tensor:
        """conditions['expression'] [B,76], camera [B,25] -> [B,3,H,W] in [-1,1] (the trained size)."""
        if self.model is None:
            raise RuntimeError("NHA.render: no model; call fit() or load() first")
        if "expression" not in conditions:
            raise KeyError("NHA.render: conditions lack 'expression' [B,76]")
        self.model.eval()
        expression, camera = torch.as_tensor(conditions["expression"]).float(), torch.as_tensor(camera).float()
        height, width = self.model.resolution
        return torch.cat([self.model(expression[part].to(self.device), camera[part].to(self.device))["image"].clamp(-1, 1).cpu()
                          for part in self.micro_batches(len(expression), height * width)])


def build_method(cfg: dict | None = None, profile: str = "default", mesh_model: Any = None, **kw: Any) -> NHA:
    """NHA from a profile and overrides: ``build_method({'profile': 'smoke', 'steps': 50})``.

    ``mesh_model``: an object with ``faces`` [F,3], ``shape_dim`` and
    ``__call__(expression [B,76], shape [B,shape_dim] | None) -> [B,V,3]``
    (default: the synthetic world's head, or FLAME when ``flame_path`` is set). The CLI's generic
    keys ``iterations`` (= steps), ``seed``, ``device`` are accepted.
    """
    return NHA(make_config({**(cfg or {}), **kw}, profile), mesh_model=mesh_model)
