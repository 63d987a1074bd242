"""The tri-plane generator (EG3D): StyleGAN2 backbone -> 3 feature planes -> OSG decoder ->
volume rendering at the neural rendering resolution -> hybrid super-resolution.

Module names follow the release (``backbone``, ``decoder``, ``superresolution``) so official
weights load by name (see ``persona.eg3d.checkpoint.load_official``).
"""

from __future__ import annotations

import torch
from torch import nn

from .networks import FullyConnectedLayer, StyleGAN2Backbone
from .presets import GeneratorConfig
from .rendering import ray_bundle, render_planes
from .superres import SuperresolutionHybrid


class _PlaneMean(torch.autograd.Function):
    """Mean over the planes of grid_sample's output [B,3,C,M] -> [B,M,C] (contiguous). The backward
    writes the gradient straight into grid_sample's layout (one pass; autograd's mean-of-transposes
    materialises it twice)."""

    @staticmethod
    def forward(ctx, raw):
        ctx.planes = raw.shape[1]
        return raw.mean(1).transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad):
        g = (grad.transpose(1, 2) * (1.0 / ctx.planes)).unsqueeze(1)
        return g.expand(-1, ctx.planes, -1, -1).contiguous()


RGB_SCALE, RGB_SHIFT = 1 + 2 * 0.001, 0.001  # the release's features: sigmoid(x) * (1 + 2 * 0.001) - 0.001


class _DecoderHead(torch.autograd.Function):
    """The decoder's output x [N,1+F] -> (rgb = sigmoid(x[:, 1:]) * 1.002 - 0.001 [N,F], sigma = x[:, :1] [N,1]).
    The sigmoid runs over the whole contiguous x (~1.6x faster on the CPU than over the strided
    slice, issue #16); the backward writes both gradients into one [N,1+F] buffer (autograd's
    slices each fill a zero [N,1+F] tensor, then add them). Same values to float rounding."""

    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(x)
        ctx.save_for_backward(s)
        rgb = s[:, 1:] * RGB_SCALE
        return rgb.sub_(RGB_SHIFT), x[:, :1].clone()

    @staticmethod
    def backward(ctx, grad_rgb, grad_sigma):
        (s,) = ctx.saved_tensors
        grad = torch.empty_like(s)
        if grad_rgb is None:
            grad[:, 1:] = 0
        else:
            grad[:, 1:] = torch.ops.aten.sigmoid_backward(grad_rgb * RGB_SCALE, s[:, 1:])
        if grad_sigma is None:
            grad[:, :1] = 0
        else:
            grad[:, :1] = grad_sigma
        return grad


class OSGDecoder(nn.Module):
    """Tri-plane features [B,3,M,C] (or their mean over the planes, [B,M,C]) -> {'rgb': [B,M,F] in
    (-0.001, 1.001), 'sigma': [B,M,1]}.

    Mean over the three planes, FC C->hidden, softplus, FC hidden->1+F; sigma = out[0];
    features = sigmoid(out[1:]) * 1.002 - 0.001 (the first three are raw RGB)."""

    def __init__(self, n_features: int, hidden: int = 64, output_dim: int = 32, lr_mul: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden, lr_multiplier=lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(hidden, 1 + output_dim, lr_multiplier=lr_mul),
        )

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if sampled_features.dim() == 3:  # already the mean over the planes (the compiled sampler)
            x = sampled_features
        else:
            # the mean over the planes in the layout grid_sample produced ([B,3,C,M] when
            # ``sampled_features`` is sample_planes' transposed view): a contiguous reduction
            raw = sampled_features.transpose(2, 3)  # [B,3,C,M]
            x = _PlaneMean.apply(raw) if raw.is_contiguous() else raw.mean(1).transpose(1, 2)  # [B,M,C]
        batch, points, channels = x.shape
        rgb, sigma = _DecoderHead.apply(self.net(x.reshape(batch * points, channels)))
        return {"rgb": rgb.reshape(batch, points, -1), "sigma": sigma.reshape(batch, points, 1)}


class TriPlaneGenerator(nn.Module):
    """EG3D generator. See ``docs/CONTRACTS.md`` (Generator).

    attributes: z_dim, c_dim, w_dim, num_ws, img_resolution, neural_rendering_resolution, config.
    """

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.z_dim, self.c_dim, self.w_dim = config.z_dim, config.c_dim, config.w_dim
        self.img_resolution = config.img_resolution
        self.img_channels = 3
        self.neural_rendering_resolution = config.neural_rendering_resolution
        self.backbone = StyleGAN2Backbone(
            config.z_dim, config.c_dim, config.w_dim, img_resolution=config.plane_resolution, img_channels=3 * config.plane_channels,
            channel_base=config.channel_base, channel_max=config.channel_max, mapping_layers=config.mapping_layers,
            conv_clamp=config.conv_clamp, mapping_lr_multiplier=config.mapping_lr_multiplier)
        self.num_ws = self.backbone.num_ws
        self.superresolution = SuperresolutionHybrid(
            config.decoder_output_dim, config.w_dim, config.sr_input_resolution, config.sr_channels,
            conv_clamp=config.sr_conv_clamp, antialias=config.sr_antialias, noise_mode=config.sr_noise_mode)
        self.decoder = OSGDecoder(config.plane_channels, config.decoder_hidden, config.decoder_output_dim, config.decoder_lr_mul)

    # -- latent --------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, camera: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_emas: bool = False) -> torch.Tensor:
        """z [B,z_dim], camera [B,25] -> ws [B,num_ws,w_dim]."""
        if self.config.c_gen_conditioning_zero:
            camera = torch.zeros_like(camera)
        return self.backbone.mapping(z, camera * self.config.c_scale, truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    # -- image ---------------------------------------------------------------------------------
    def planes(self, ws: torch.Tensor, noise_mode: str | None = None, fused_modconv: bool | str = "inference_only") -> torch.Tensor:
        """ws [B,num_ws,w_dim] -> tri-planes [B,3,C,P,P]."""
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode or self.config.noise_mode, fused_modconv=fused_modconv)
        return planes.reshape(len(planes), 3, self.config.plane_channels, planes.shape[-2], planes.shape[-1])

    def render_rays(self, planes: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor):
        """planes [B,3,C,P,P], rays [B,R,3] -> (features [B,R,F] in ~[-1,1], depth [B,R,1], weight sum [B,R,1])."""
        cfg = self.config
        return render_planes(planes, self.decoder, origins, directions, ray_start=cfg.ray_start, ray_end=cfg.ray_end,
                             depth_resolution=cfg.depth_resolution, depth_resolution_importance=cfg.depth_resolution_importance,
                             box_warp=cfg.box_warp, white_back=cfg.white_back)

    def synthesis(self, ws: torch.Tensor, camera: torch.Tensor, neural_rendering_resolution: int | None = None,
                  noise_mode: str | None = None, fused_modconv: bool | str = "inference_only") -> dict[str, torch.Tensor]:
        """ws [B,num_ws,w_dim], camera [B,25] ->
        {'image': [B,3,R,R] in ~[-1,1], 'image_raw': [B,3,r,r], 'image_depth': [B,1,r,r]}.

        noise_mode of the backbone: None = config.noise_mode ('const' by default; the release's
        default is 'random'). Ray depths are jittered (stratified + importance sampling), so two
        calls differ slightly unless the torch RNG is seeded."""
        if camera.ndim != 2 or camera.shape[1] != 25 or camera.shape[0] != ws.shape[0]:
            raise ValueError(f"synthesis: camera has shape {tuple(camera.shape)}; expected [{ws.shape[0]},25]")
        res = int(neural_rendering_resolution or self.neural_rendering_resolution)
        batch = ws.shape[0]
        origins, directions = ray_bundle(camera, res)
        planes = self.planes(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        features, depth, _ = self.render_rays(planes, origins, directions)
        feature_image = features.permute(0, 2, 1).reshape(batch, features.shape[-1], res, res).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(batch, 1, res, res)
        rgb = feature_image[:, :3]
        image = self.superresolution(rgb, feature_image, ws, fused_modconv=fused_modconv)
        return {"image": image, "image_raw": rgb, "image_depth": depth_image}

    def forward(self, z: torch.Tensor, camera: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                neural_rendering_resolution: int | None = None, noise_mode: str | None = None, update_emas: bool = False) -> dict[str, torch.Tensor]:
        ws = self.mapping(z, camera, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, camera, neural_rendering_resolution=neural_rendering_resolution, noise_mode=noise_mode)


def build_generator(preset: "str | GeneratorConfig" = "tiny", **overrides) -> TriPlaneGenerator:
    """A preset name ('tiny' | 'ffhq512') or a GeneratorConfig -> freshly initialised generator."""
    from .presets import get_config

    return TriPlaneGenerator(get_config(preset, **overrides))
