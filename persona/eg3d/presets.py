"""Generator configurations: ``ffhq512`` (the official release's shapes) and ``tiny`` (CPU-trainable).

Profiles change sizes, never code: both presets build the same :class:`TriPlaneGenerator`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class GeneratorConfig:
    """Every size and rendering option of the tri-plane generator."""

    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    # backbone (StyleGAN2 synthesis producing 3 planes)
    plane_resolution: int = 256
    plane_channels: int = 32
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = None  # release: 256 only with fp16 backbone layers (g_num_fp16_res > 0; default 0)
    # OSG decoder
    decoder_hidden: int = 64
    decoder_output_dim: int = 32
    decoder_lr_mul: float = 1.0
    # rendering
    neural_rendering_resolution: int = 128
    depth_resolution: int = 48
    depth_resolution_importance: int = 48
    ray_start: float = 2.25
    ray_end: float = 3.3
    box_warp: float = 1.0
    white_back: bool = False
    c_scale: float = 1.0
    c_gen_conditioning_zero: bool = False
    avg_camera_radius: float = 2.7
    avg_camera_pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    # super-resolution (one 2x StyleGAN2 block per entry of sr_channels)
    sr_input_resolution: int = 128
    sr_channels: tuple[int, ...] = (256, 128)
    sr_conv_clamp: float | None = 256  # release: sr_num_fp16_res=4 -> fp16 SR blocks -> clamp 256
    sr_antialias: bool = True
    sr_noise_mode: str = "none"
    # default noise of the backbone in synthesis(): 'const' (deterministic), 'random' or 'none'
    noise_mode: str = "const"
    name: str = "custom"

    @property
    def img_resolution(self) -> int:
        return self.sr_input_resolution * 2 ** len(self.sr_channels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sr_channels"] = list(self.sr_channels)
        d["avg_camera_pivot"] = list(self.avg_camera_pivot)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "GeneratorConfig":
        """Config from a JSON-like dict (e.g. a generator sidecar); every field checked (:meth:`check`)."""
        from persona.errors import PersonaInputError, show

        if not isinstance(d, Mapping):
            raise PersonaInputError(f"{where}: expected an object of generator config fields, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PersonaInputError(f"{where}: unknown generator config fields {unknown}; expected a subset of {sorted(known)}")
        d = dict(d)
        for key in ("sr_channels", "avg_camera_pivot"):
            if key in d:
                if not isinstance(d[key], (list, tuple)):
                    raise PersonaInputError(f"{where}: {key}: expected a list, got {show(d[key])}")
                d[key] = tuple(d[key])
        return cls(**d).check(where)

    def check(self, where: str = "config") -> "GeneratorConfig":
        """Raise :class:`persona.errors.PersonaInputError` naming ``where`` and the field for a wrong
        type, NaN or out-of-range value (sizes are capped so a crafted file cannot make the
        generator allocate hundreds of GB); returns the config with plain Python values (a pickle's
        numpy scalars become int/float/bool)."""
        from persona.errors import PersonaInputError, check_bool, check_int, check_number, show

        clean: dict[str, Any] = {}
        for name, (lo, hi) in _INT_RANGES.items():
            clean[name] = check_int(getattr(self, name), f"{where}: {name}", lo, hi)
        for name, (lo, hi) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL:
                clean[name] = check_number(value, f"{where}: {name}", lo, hi, lo_open=lo == 0.0)
        for name in ("white_back", "c_gen_conditioning_zero", "sr_antialias"):
            clean[name] = check_bool(getattr(self, name), f"{where}: {name}")
        cfg = replace(self, **clean)
        if cfg.ray_end <= cfg.ray_start:
            raise PersonaInputError(f"{where}: ray_end {cfg.ray_end:g} <= ray_start {cfg.ray_start:g}; expected ray_start < ray_end")
        if not 0 <= len(cfg.sr_channels) <= 4:
            raise PersonaInputError(f"{where}: sr_channels: {len(cfg.sr_channels)} blocks; expected 0 to 4")
        if len(cfg.avg_camera_pivot) != 3:
            raise PersonaInputError(f"{where}: avg_camera_pivot: expected 3 numbers, got {show(cfg.avg_camera_pivot)}")
        cfg = replace(cfg, sr_channels=tuple(check_int(c, f"{where}: sr_channels[{i}]", 1, 4096) for i, c in enumerate(cfg.sr_channels)),
                       avg_camera_pivot=tuple(check_number(c, f"{where}: avg_camera_pivot[{i}]", -100.0, 100.0)
                                              for i, c in enumerate(cfg.avg_camera_pivot)))
        for name in ("sr_noise_mode", "noise_mode"):
            if getattr(cfg, name) not in ("none", "const", "random"):
                raise PersonaInputError(f"{where}: {name}: {show(getattr(cfg, name))}; expected 'none', 'const' or 'random'")
        if not isinstance(cfg.name, str):
            raise PersonaInputError(f"{where}: name: expected a string, got {show(cfg.name)}")
        return cfg


# (lo, hi) of every numeric field: hi bounds memory (the release's sizes are well inside)
_INT_RANGES = {
    "z_dim": (1, 2048), "w_dim": (1, 2048), "c_dim": (0, 1024), "mapping_layers": (0, 16),
    "plane_resolution": (4, 1024), "plane_channels": (1, 256), "channel_base": (1, 1 << 18), "channel_max": (1, 1024),
    "decoder_hidden": (1, 1024), "decoder_output_dim": (1, 256), "neural_rendering_resolution": (1, 1024),
    "depth_resolution": (1, 1024), "depth_resolution_importance": (0, 1024), "sr_input_resolution": (1, 1024),
}
_FLOAT_RANGES = {
    "mapping_lr_multiplier": (0.0, 1e3), "conv_clamp": (0.0, 1e6), "decoder_lr_mul": (0.0, 1e3),
    "ray_start": (0.0, 1e4), "ray_end": (0.0, 1e4), "box_warp": (0.0, 1e4), "c_scale": (-1e4, 1e4),
    "avg_camera_radius": (0.0, 1e4), "sr_conv_clamp": (0.0, 1e6),
}
_OPTIONAL = {"conv_clamp", "sr_conv_clamp"}


PRESETS: dict[str, GeneratorConfig] = {
    # NVlabs/eg3d ffhq512-128.pkl: cbase 32768, cmax 512, map 2, 48+48 samples, SuperresolutionHybrid8XDC.
    "ffhq512": GeneratorConfig(name="ffhq512"),
    # CPU-trainable: 64^2 output from 32^2 neural rendering, 3x16-channel planes at 64^2, 24+24 samples.
    "tiny": GeneratorConfig(
        name="tiny", z_dim=128, w_dim=128, mapping_layers=2, plane_resolution=64, plane_channels=16,
        channel_base=2048, channel_max=128, decoder_hidden=32, decoder_output_dim=16,
        neural_rendering_resolution=32, depth_resolution=24, depth_resolution_importance=24,
        sr_input_resolution=32, sr_channels=(32,),
    ),
}


def get_config(preset: "str | GeneratorConfig", **overrides: Any) -> GeneratorConfig:
    """A preset name or a config -> config (with ``overrides`` applied)."""
    if isinstance(preset, GeneratorConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        from persona.errors import PersonaInputError

        raise PersonaInputError(f"unknown generator preset {preset!r}; expected one of {sorted(PRESETS)} or a GeneratorConfig")
    return replace(config, **overrides) if overrides else config


def rendering_kwargs(config: GeneratorConfig) -> dict[str, Any]:
    """The release's ``rendering_kwargs`` dict for this config (for reports and comparisons)."""
    return {
        "depth_resolution": config.depth_resolution, "depth_resolution_importance": config.depth_resolution_importance,
        "ray_start": config.ray_start, "ray_end": config.ray_end, "box_warp": config.box_warp, "white_back": config.white_back,
        "clamp_mode": "softplus", "disparity_space_sampling": False, "c_scale": config.c_scale,
        "c_gen_conditioning_zero": config.c_gen_conditioning_zero, "superresolution_noise_mode": config.sr_noise_mode,
        "sr_antialias": config.sr_antialias, "decoder_lr_mul": config.decoder_lr_mul,
        "avg_camera_radius": config.avg_camera_radius, "avg_camera_pivot": list(config.avg_camera_pivot),
    }

