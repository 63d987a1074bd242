"""persona: personalized 3D-aware generative priors for facial avatars (CVPR 2023 reproduction)."""

__version__ = "0.1.0"
