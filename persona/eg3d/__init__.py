"""EG3D in plain PyTorch: the tri-plane generator, its presets and checkpoints.

``build_generator('tiny' | 'ffhq512' | GeneratorConfig)``, ``load_prior(path=None)``,
``save_generator(G, path)``, ``load_official(pkl_path)`` (safe: never executes pickled code).
"""

from .checkpoint import load_generator, load_official, load_prior, read_generator, save_generator
from .presets import PRESETS, GeneratorConfig, get_config
from .triplane import OSGDecoder, TriPlaneGenerator, build_generator

__all__ = [
    "GeneratorConfig", "PRESETS", "OSGDecoder", "TriPlaneGenerator", "build_generator", "get_config",
    "load_generator", "load_official", "load_prior", "read_generator", "save_generator",
]
