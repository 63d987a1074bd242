"""Our model, the personalized generative prior: a learned basis in W+ and the encoders that drive it.

The paper (Sec. 3) represents one person's faces as a low-dimensional subspace of the
generator's W+ space: ``w = alpha . B + offset`` with a basis ``B`` of ``k`` vectors, and an
encoder ``f`` maps a driving signal (an RGB frame, a 3DMM expression vector or an audio
window) to the coefficients ``alpha`` in R^k. The latent goes straight to
``G.synthesis(w, camera)``; the mapping network is bypassed, as in the official release.

Pieces here:
- :mod:`persona.ours.basis`: :class:`PersonalizedBasis`, the basis, its offset and the three orthogonality modes.
- :mod:`persona.ours.encoders`: :class:`RGBEncoder`, :class:`ExpressionEncoder`, :class:`AudioEncoder`: signal -> alpha
  (AD-NeRF's audio nets: :mod:`persona.audio_nets`).
- here: :class:`PersonalizedPrior`: encoder + basis + generator, ``(conditions, camera) -> image``.
- :mod:`persona.ours.train`: the two-stage trainer; :mod:`persona.ours.method`: the Method wrapper.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from persona.audio_nets import gather_neighbour_windows

from persona.data.formats import EXPRESSION_DIM
from persona.ours.basis import BASIS_INITS, PersonalizedBasis, generator_w_avg, w_principal_directions
from persona.ours.camera_correction import CameraCorrection
from persona.ours.encoders import RGB_ENCODERS, AudioEncoder, ExpressionEncoder, RGBEncoder

MODALITIES = ("rgb", "3dmm", "audio")


class PersonalizedPrior(nn.Module):
    """Encoder -> alpha -> basis -> ws -> ``G.synthesis(ws, camera)`` -> image.

    ``modality`` picks the encoder and the condition it reads from a batch dict: ``rgb`` ->
    ``image`` (or ``source_image`` when present, e.g. for novel views), ``3dmm`` ->
    ``expression``, ``audio`` -> ``audio`` (+ ``audio_neighbours`` [B,8,16,29] once smoothing
    is on). Output images are resized to ``resolution`` (area pooling, as the release's
    adaptive average pool).

    ``rgb_encoder``: ``persona`` (:class:`RGBEncoder`, at ``resolution``) or ``release``
    (:class:`persona.release_encoder.ReleaseRGBEncoder` at ``rgb_encoder_resolution``, 256 in
    the release). ``rgb_init``: see :class:`RGBEncoder` (persona's only). ``expression_init``, ``expression_standardise``: see :class:`ExpressionEncoder`. ``audio_att_dims``,
    ``audio_init``, ``audio_att_init``: see :class:`AudioEncoder`. ``camera_correction``: learn a
    per-video :class:`persona.ours.camera_correction.CameraCorrection` (``camera_terms``) applied to every camera.
    """

    def __init__(self, G: nn.Module, modality: str, k: int = 50, ortho: str = "qr", offset_init: str = "w_avg", resolution: int = 64,
                 rgb_base_channels: int = 32, rgb_max_channels: int = 512, rgb_feature_dim: int = 512, rgb_head_layers: int = 4,
                 mlp_hidden: int = 512, mlp_layers: int = 6, rgb_encoder: str = "persona", rgb_encoder_resolution: int = 256,
                 audio_att_dims: int | None = None, basis_rows: str = "unit", audio_init: str = "he",
                 audio_att_init: str = "centre", basis_scale: float = 1.0, basis_init: str = "randn", rgb_init: str = "torch",
                 camera_correction: bool = False, expression_init: str = "torch", camera_terms: str = "linear",
                 expression_standardise: bool = False):
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"PersonalizedPrior: modality={modality!r}; expected one of {MODALITIES}")
        self.modality, self.resolution = modality, resolution
        self.generator = G
        w_avg = generator_w_avg(G)
        if offset_init == "w_avg" and w_avg is None:
            raise ValueError("PersonalizedPrior: offset_init='w_avg' but the generator has no w_avg buffer; use 'basis_mean'")
        if basis_init not in BASIS_INITS:
            raise ValueError(f"PersonalizedPrior: basis_init={basis_init!r}; expected one of {BASIS_INITS}")
        directions = w_principal_directions(G, k) if basis_init == "w_pca" else None
        self.basis = PersonalizedBasis(k, int(G.num_ws), int(G.w_dim), ortho=ortho, offset_init=offset_init, w_avg=w_avg,
                                        rows=basis_rows, scale=basis_scale, init_directions=directions)
        if rgb_encoder not in RGB_ENCODERS:
            raise ValueError(f"PersonalizedPrior: rgb_encoder={rgb_encoder!r}; expected one of {RGB_ENCODERS}")
        self.camera_correction = CameraCorrection(camera_terms) if camera_correction else None
        if modality == "rgb" and rgb_encoder == "release":
            from persona.release_encoder import ReleaseRGBEncoder

            self.encoder: nn.Module = ReleaseRGBEncoder(k, rgb_encoder_resolution, rgb_feature_dim)
        elif modality == "rgb":
            self.encoder = RGBEncoder(k, resolution, rgb_base_channels, rgb_max_channels, rgb_feature_dim, rgb_head_layers, init=rgb_init)
        elif modality == "3dmm":
            self.encoder = ExpressionEncoder(k, EXPRESSION_DIM, mlp_hidden, mlp_layers, init=expression_init,
                                            standardise=expression_standardise)
        else:
            self.encoder = AudioEncoder(k, mlp_hidden, mlp_layers, att_score_dims=audio_att_dims, audio_init=audio_init,
                                        att_init=audio_att_init)

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
        """ws [B,num_ws,w_dim], camera [B,25] -> image [B,3,resolution,resolution] (the camera
        corrected first when the avatar learned a correction, :mod:`persona.ours.camera_correction`)."""
        if self.camera_correction is not None:
            camera = self.camera_correction(camera)
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
