"""The compared methods, each behind the :class:`persona.methods.Method` contract.

``nerf_core`` holds the NeRF pieces shared by ``nerface``, ``adnerf`` and ``dfrf``.
Each baseline module exposes ``build_method(cfg: dict | None = None, **kw)``.
"""
