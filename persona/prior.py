"""The personalized generative prior: a learned basis in W+ and the encoders that drive it.

The paper (Sec. 3) represents one person's faces as a low-dimensional subspace of the
generator's W+ space: ``w = alpha . B + offset`` with a basis ``B`` of ``k`` vectors, and an
encoder ``f`` maps a driving signal (an RGB frame, a 3DMM expression vector or an audio
window) to the coefficients ``alpha`` in R^k. The latent goes straight to
``G.synthesis(w, camera)``; the mapping network is bypassed, as in the official release.

Pieces here:
- :class:`AudioNet`, :class:`AudioAttNet`: AD-NeRF's audio feature net and its attention
  smoother over neighbouring frames (shared with the AD-NeRF baseline).
- :class:`PersonalizedBasis`: the basis, its offset and the three orthogonality modes.
- :class:`RGBEncoder`, :class:`ExpressionEncoder`, :class:`AudioEncoder`: signal -> alpha.
- :class:`PersonalizedPrior`: encoder + basis + generator, ``(conditions, camera) -> image``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

AUDIO_WINDOW = 16  # audio feature frames per video frame (AD-NeRF's aud.npy: [N,16,29])
AUDIO_FEATURES = 29  # DeepSpeech character logits per 20 ms
AUDIO_DIM = 64  # AD-NeRF's dim_aud
AUDIO_SMOOTH_FRAMES = 8  # AD-NeRF's smoothing window (seq_len of AudioAttNet)
EXPRESSION_DIM = 76  # the 3DMM expression vector
ORTHO_MODES = ("qr", "loss", "none")
BASIS_ROWS = ("unit", "raw")  # scale of the basis rows in the 'loss'/'none' modes (see PersonalizedBasis)
OFFSET_INITS = ("basis_mean", "w_avg")
MODALITIES = ("rgb", "3dmm", "audio")
RGB_ENCODERS = ("persona", "release")  # persona.prior.RGBEncoder | persona.release_encoder.ReleaseRGBEncoder


# --------------------------------------------------------------------------------------------
# AD-NeRF's audio networks (shared with persona.baselines.adnerf)
# --------------------------------------------------------------------------------------------


class AudioNet(nn.Module):
    """AD-NeRF's audio feature net: a window of DeepSpeech features -> one feature vector.

    Four stride-2 1-D convolutions over time (29 -> 32 -> 32 -> 64 -> 64 channels, kernel 3,
    LeakyReLU 0.02) take the 16 time steps down to 1, then two linear layers (64 -> 64 -> out).

    ``x`` [B,16,29] -> [B,out_dim] (out_dim = 64 by default, AD-NeRF's ``dim_aud``).
    """

    def __init__(self, out_dim: int = AUDIO_DIM, window: int = AUDIO_WINDOW, features: int = AUDIO_FEATURES):
        super().__init__()
        if window != 16:
            raise ValueError(f"AudioNet: window={window}, expected 16 (four stride-2 convs reduce 16 -> 1)")
        self.window = window
        self.features = features
        self.out_dim = out_dim
        self.convs = nn.Sequential(
            nn.Conv1d(features, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 16 -> 8
            nn.Conv1d(32, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 8 -> 4
            nn.Conv1d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 4 -> 2
            nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.02, inplace=True),  # 2 -> 1
        )
        self.head = nn.Sequential(nn.Linear(64, 64), nn.LeakyReLU(0.02, inplace=True), nn.Linear(64, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.window, self.features):
            raise ValueError(f"AudioNet: audio windows of shape [B,{self.window},{self.features}] expected, got {list(x.shape)}")
        h = self.convs(x.transpose(1, 2))  # [B,29,16] -> [B,64,1]
        return self.head(h.squeeze(-1))


class AudioAttNet(nn.Module):
    """AD-NeRF's temporal attention: weights over neighbouring frames' audio features.

    Five 1-D convolutions over the sequence (score_dims -> 16 -> 8 -> 4 -> 2 -> 1 channels,
    kernel 3, LeakyReLU 0.02) give one score per frame, a linear layer over the ``seq_len``
    scores and a softmax give the weights, and the output is the weighted sum of the input
    features (all ``dim`` of them). The scores read the first ``score_dims`` features:
    ``None`` = all ``dim`` (persona's default, AD-NeRF with dim_aud 64); 32 = the release
    (HFA-GP's ``AudioAttNet(dim_aud=32)`` scores from the first 32 of the 64 features).

    ``x`` [B,seq_len,dim] (seq_len = 8) -> [B,dim]. Also accepts AD-NeRF's unbatched [seq_len,dim].
    """

    def __init__(self, dim: int = AUDIO_DIM, seq_len: int = AUDIO_SMOOTH_FRAMES, score_dims: int | None = None):
        super().__init__()
        if score_dims is not None and not 0 < score_dims <= dim:
            raise ValueError(f"AudioAttNet: score_dims={score_dims}; expected 1..{dim} or None (all)")
        self.dim = dim
        self.seq_len = seq_len
        self.score_dims = score_dims or dim
        chans = [self.score_dims, 16, 8, 4, 2, 1]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv1d(cin, cout, 3, stride=1, padding=1), nn.LeakyReLU(0.02, inplace=True)]
        self.scores = nn.Sequential(*layers)
        self.weights = nn.Linear(seq_len, seq_len)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,seq_len,dim] -> attention weights [B,seq_len] (softmax, sums to 1)."""
        s = self.scores(x[..., :self.score_dims].transpose(1, 2)).squeeze(1)  # [B,seq_len]
        return torch.softmax(self.weights(s), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.seq_len, self.dim):
            raise ValueError(f"AudioAttNet: features of shape [B,{self.seq_len},{self.dim}] expected, got {list(x.shape)}")
        out = (self.attention(x).unsqueeze(-1) * x).sum(dim=1)
        return out[0] if unbatched else out


def gather_neighbour_windows(
    index: torch.Tensor, audio: torch.Tensor, track: dict[int, torch.Tensor] | None = None, seq_len: int = AUDIO_SMOOTH_FRAMES
) -> torch.Tensor:
    """The audio windows of the ``seq_len`` frames around each frame of a batch.

    ``index`` [B] frame numbers, ``audio`` [B,16,29] their own windows; ``track`` maps frame
    number -> window [16,29] (the whole split's audio, see :func:`audio_track`). Frames outside
    the track are zero windows (as AD-NeRF and the release pad at the ends of the video). With
    no track, the batch itself is the track (sequential test batches smooth within the batch).
    Returns [B,seq_len,16,29]; window ``j`` is frame ``index - seq_len//2 + j``.
    """
    if track is None:
        track = {int(i): a for i, a in zip(index.tolist(), audio)}
    zero = torch.zeros_like(audio[0])
    rows = []
    for i in index.tolist():
        rows.append(torch.stack([track.get(int(i) + off, zero).to(audio) for off in range(-(seq_len // 2), seq_len - seq_len // 2)]))
    return torch.stack(rows)


def audio_track(dataset: Any) -> dict[int, torch.Tensor]:
    """Frame number -> audio window [16,29] for every frame of a :class:`FrameDataset`.

    Uses ``dataset.audio`` / ``dataset.indices`` when the dataset exposes them (no image
    decoding), else reads every sample once.
    """
    audio, indices = getattr(dataset, "audio", None), getattr(dataset, "indices", None)
    if isinstance(audio, (torch.Tensor,)) and indices is not None and len(indices) == len(audio):
        return {int(i): a.float() for i, a in zip(list(indices), audio)}
    track = {}
    for n in range(len(dataset)):
        sample = dataset[n]
        track[int(sample["index"])] = torch.as_tensor(sample["audio"]).float()
    return track


# --------------------------------------------------------------------------------------------
# The personalized basis
# --------------------------------------------------------------------------------------------


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
                 rows: str = "unit"):
        super().__init__()
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
        """The basis actually used: [k, num_ws*w_dim] (orthonormal rows in ``qr`` mode)."""
        if self.ortho == "qr":
            q, _ = torch.linalg.qr(self.basis.t(), mode="reduced")  # [d,k], orthonormal columns
            return q.t()
        return F.normalize(self.basis, dim=1) if self.rows == "unit" else self.basis

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


# --------------------------------------------------------------------------------------------
# Encoders: driving signal -> alpha [B,k]
# --------------------------------------------------------------------------------------------


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Sequential:
    """``layers`` hidden linear layers of width ``hidden`` (LeakyReLU 0.2), then a linear head."""
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.LeakyReLU(0.2, inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


class ResDown(nn.Module):
    """Residual block that halves the resolution: conv3x3 -> conv3x3 + avg-pool, 1x1 skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), 0.2), 2)
        return (h + F.avg_pool2d(self.skip(x), 2)) / 2**0.5


class RGBEncoder(nn.Module):
    """Frame -> alpha: persona's own encoder (``TrainConfig.rgb_encoder = 'persona'``), NOT the release's.

    The same outline as the release's LIA-style encoder (1x1 conv from RGB, one residual
    down-block per octave down to 4x4, a 4x4 conv to ``feature_dim``, a head) but: plain
    ``nn.Conv2d`` with LeakyReLU(0.2) and average pooling (no equalised learning rate, no blur),
    at the data/training resolution ``resolution`` (the release: 256 px), channels
    ``min(max_channels, base_channels * resolution / res)`` (narrow on the CPU profiles), and an
    MLP head WITH activations (:func:`mlp`; the release's linear layers have none). The release's
    encoder is :class:`persona.release_encoder.ReleaseRGBEncoder` (``rgb_encoder = 'release'``).
    ``x`` [B,3,H,W] in [-1,1] (resized to R x R) -> [B,k].
    """

    def __init__(self, k: int, resolution: int, base_channels: int = 32, max_channels: int = 512, feature_dim: int = 512, head_layers: int = 4):
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"RGBEncoder: resolution={resolution}; expected a power of two >= 4")
        self.resolution = resolution

        def channels(res: int) -> int:
            return min(max_channels, base_channels * resolution // res)

        blocks: list[nn.Module] = [nn.Conv2d(3, channels(resolution), 1), nn.LeakyReLU(0.2, inplace=True)]
        res = resolution
        while res > 4:
            blocks.append(ResDown(channels(res), channels(res // 2)))
            res //= 2
        blocks.append(nn.Conv2d(channels(4), feature_dim, 4))
        self.trunk = nn.Sequential(*blocks)
        self.head = mlp(feature_dim, feature_dim, k, head_layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(encoder_input(image, self.resolution, "RGBEncoder")).flatten(1))


def encoder_input(image: torch.Tensor, resolution: int, who: str) -> torch.Tensor:
    """image [B,3,H,W] checked and resized (bilinear, antialiased) to [B,3,resolution,resolution]."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{who}: images [B,3,H,W] expected, got {list(image.shape)}")
    if image.shape[-1] != resolution or image.shape[-2] != resolution:
        image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return image


class ExpressionEncoder(nn.Module):
    """3DMM expression [B,76] -> alpha [B,k]: MLP 76 -> 512 -> ... -> k (release: 6 x 512).

    The release stacks its linear layers without activations; we put LeakyReLU between them
    (an MLP as the paper describes the encoder).
    """

    def __init__(self, k: int, in_dim: int = EXPRESSION_DIM, hidden: int = 512, layers: int = 6):
        super().__init__()
        self.in_dim = in_dim
        self.net = mlp(in_dim, hidden, k, layers)

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        if expression.dim() != 2 or expression.shape[1] != self.in_dim:
            raise ValueError(f"ExpressionEncoder: expressions [B,{self.in_dim}] expected, got {list(expression.shape)}")
        return self.net(expression)


class AudioEncoder(nn.Module):
    """Audio window(s) -> alpha [B,k]: AudioNet (-> 64) then the MLP (-> k).

    Without smoothing: ``audio`` [B,16,29] -> AudioNet -> MLP. With smoothing (switched on by
    the trainer after ``audio_smooth_after`` iterations, then kept): the 8 neighbouring windows
    ``neighbours`` [B,8,16,29] -> AudioNet each -> AudioAttNet -> MLP (AD-NeRF / the release).
    ``att_score_dims``: features the attention scores read (None: all 64, persona; 32: the release).
    """

    def __init__(self, k: int, hidden: int = 512, layers: int = 6, audio_dim: int = AUDIO_DIM, att_score_dims: int | None = None):
        super().__init__()
        self.audio_net = AudioNet(audio_dim)
        self.att_net = AudioAttNet(audio_dim, score_dims=att_score_dims)
        self.net = mlp(audio_dim, hidden, k, layers)
        self.register_buffer("smoothing", torch.zeros((), dtype=torch.bool))

    def forward(self, audio: torch.Tensor, neighbours: torch.Tensor | None = None) -> torch.Tensor:
        if bool(self.smoothing):
            if neighbours is None:
                raise ValueError("AudioEncoder: smoothing is on; neighbours [B,8,16,29] are needed")
            b, s = neighbours.shape[:2]
            feats = self.audio_net(neighbours.reshape(b * s, *neighbours.shape[2:])).view(b, s, -1)
            return self.net(self.att_net(feats))
        return self.net(self.audio_net(audio))


# --------------------------------------------------------------------------------------------
# Encoder + basis + generator
# --------------------------------------------------------------------------------------------


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


class PersonalizedPrior(nn.Module):
    """Encoder -> alpha -> basis -> ws -> ``G.synthesis(ws, camera)`` -> image.

    ``modality`` picks the encoder and the condition it reads from a batch dict: ``rgb`` ->
    ``image`` (or ``source_image`` when present, e.g. for novel views), ``3dmm`` ->
    ``expression``, ``audio`` -> ``audio`` (+ ``audio_neighbours`` [B,8,16,29] once smoothing
    is on). Output images are resized to ``resolution`` (area pooling, as the release's
    adaptive average pool).

    ``rgb_encoder``: ``persona`` (:class:`RGBEncoder`, at ``resolution``) or ``release``
    (:class:`persona.release_encoder.ReleaseRGBEncoder` at ``rgb_encoder_resolution``, 256 in
    the release). ``audio_att_dims``: see :class:`AudioEncoder`.
    """

    def __init__(self, G: nn.Module, modality: str, k: int = 50, ortho: str = "qr", offset_init: str = "w_avg", resolution: int = 64,
                 rgb_base_channels: int = 32, rgb_max_channels: int = 512, rgb_feature_dim: int = 512, rgb_head_layers: int = 4,
                 mlp_hidden: int = 512, mlp_layers: int = 6, rgb_encoder: str = "persona", rgb_encoder_resolution: int = 256,
                 audio_att_dims: int | None = None, basis_rows: str = "unit"):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"PersonalizedPrior: modality={modality!r}; expected one of {MODALITIES}")
        self.modality, self.resolution = modality, resolution
        self.generator = G
        w_avg = generator_w_avg(G)
        if offset_init == "w_avg" and w_avg is None:
            raise ValueError("PersonalizedPrior: offset_init='w_avg' but the generator has no w_avg buffer; use 'basis_mean'")
        self.basis = PersonalizedBasis(k, int(G.num_ws), int(G.w_dim), ortho=ortho, offset_init=offset_init, w_avg=w_avg,
                                        rows=basis_rows)
        if rgb_encoder not in RGB_ENCODERS:
            raise ValueError(f"PersonalizedPrior: rgb_encoder={rgb_encoder!r}; expected one of {RGB_ENCODERS}")
        if modality == "rgb" and rgb_encoder == "release":
            from persona.release_encoder import ReleaseRGBEncoder

            self.encoder: nn.Module = ReleaseRGBEncoder(k, rgb_encoder_resolution, rgb_feature_dim)
        elif modality == "rgb":
            self.encoder = RGBEncoder(k, resolution, rgb_base_channels, rgb_max_channels, rgb_feature_dim, rgb_head_layers)
        elif modality == "3dmm":
            self.encoder = ExpressionEncoder(k, EXPRESSION_DIM, mlp_hidden, mlp_layers)
        else:
            self.encoder = AudioEncoder(k, mlp_hidden, mlp_layers, att_score_dims=audio_att_dims)

    def personal_parameters(self) -> list[nn.Parameter]:
        """Encoder + basis + offset (stage 1's trainable set)."""
        return list(self.encoder.parameters()) + list(self.basis.parameters())

    def encode(self, conditions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Batch dict -> alpha [B,k] (see the class docstring for the keys read)."""
        if self.modality == "rgb":
            key = "source_image" if "source_image" in conditions else "image"
            return self.encoder(_need(conditions, key, "[B,3,H,W]").float())
        if self.modality == "3dmm":
            return self.encoder(_need(conditions, "expression", "[B,76]").float())
        audio = _need(conditions, "audio", "[B,16,29]").float()
        neighbours = conditions.get("audio_neighbours")
        if bool(self.encoder.smoothing) and neighbours is None:
            neighbours = gather_neighbour_windows(_need(conditions, "index", "[B]"), audio)
        return self.encoder(audio, None if neighbours is None else neighbours.float())

    def synthesize(self, ws: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """ws [B,num_ws,w_dim], camera [B,25] -> image [B,3,resolution,resolution]."""
        image = self.generator.synthesis(ws, camera.float())["image"]
        if image.shape[-1] != self.resolution:
            if image.shape[-1] > self.resolution:
                image = F.adaptive_avg_pool2d(image, self.resolution)
            else:
                image = F.interpolate(image, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return image

    def forward(self, conditions: dict[str, torch.Tensor], camera: torch.Tensor) -> dict[str, torch.Tensor]:
        """-> {'image' [B,3,R,R] in ~[-1,1], 'alpha' [B,k], 'ws' [B,num_ws,w_dim]}."""
        alpha = self.encode(conditions)
        ws = self.basis(alpha)
        return {"image": self.synthesize(ws, camera), "alpha": alpha, "ws": ws}


def _need(conditions: dict[str, torch.Tensor], key: str, shape: str) -> torch.Tensor:
    if key not in conditions:
        raise KeyError(f"conditions: missing {key!r} {shape}; got keys {sorted(conditions)}")
    return torch.as_tensor(conditions[key])
