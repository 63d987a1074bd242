"""The synthetic talking-head world: procedural 3D heads with ground truth, rendered fast on a CPU.

One module per job; this package re-exports their public names (``from persona.data import world``):

- :mod:`~persona.data.world.identity`   identities (:class:`Identity`, :func:`sample_identity`) and the prior pool
- :mod:`~persona.data.world.expression` the 76-d expression model (:data:`EXPRESSION_DIM`, :data:`JAW_OPEN`, ...)
- :mod:`~persona.data.world.render`     the batched ray tracer (:func:`render_batch`, :func:`mouth_boxes`)
- :mod:`~persona.data.world.corpus`     the FFHQ stand-in the generic prior trains on (:func:`sample_prior_batch`)
- :mod:`~persona.data.world.mesh`       NHA's morphable-mesh stand-in for FLAME (:func:`morphable_mesh`)
- :mod:`~persona.data.world.video`      talking-head trajectories and speech (:func:`make_video`)
- :mod:`~persona.data.world.benchmark`  the benchmark writer and its cache (:func:`build_benchmark`)
"""

from persona.data.world.benchmark import (BENCHMARK_PROFILES, BENCHMARK_VERSION, OWNER_MARKER, BenchmarkConfig, benchmark_dir,
                                          benchmark_identity_seeds, build_benchmark, check_out_folder, code_fingerprint, is_complete,
                                          is_owned, render_frames)
from persona.data.world.corpus import sample_cameras, sample_prior_batch
from persona.data.world.expression import (BLINK, BROW_FROWN, BROW_RAISE, EXPRESSION_DIM, JAW_OPEN, JAW_SIDE, LARGE_DIMS, LIP_ROUND,
                                           LIP_STRETCH, NUM_CONTROLS, NUM_LARGE, SMILE, expression_controls, sample_expressions)
from persona.data.world.identity import PRIOR_POOL_OFFSET, PRIOR_POOL_SIZE, Identity, sample_identity
from persona.data.world.mesh import SHAPE_DIM, morphable_mesh, shape_coefficients
from persona.data.world.render import HEAD_SCALE, NUM_ELLIPSOIDS, mouth_boxes, render, render_batch
from persona.data.world.video import Video, make_video, ou_process

__all__ = ["BENCHMARK_PROFILES", "BENCHMARK_VERSION", "BLINK", "BROW_FROWN", "BROW_RAISE", "BenchmarkConfig", "EXPRESSION_DIM",
           "HEAD_SCALE", "Identity", "JAW_OPEN", "JAW_SIDE", "LARGE_DIMS", "LIP_ROUND", "LIP_STRETCH", "NUM_CONTROLS",
           "NUM_ELLIPSOIDS", "NUM_LARGE", "OWNER_MARKER", "PRIOR_POOL_OFFSET", "PRIOR_POOL_SIZE", "SHAPE_DIM", "SMILE", "shape_coefficients", "Video",
           "benchmark_dir", "benchmark_identity_seeds", "build_benchmark", "check_out_folder", "code_fingerprint",
           "expression_controls", "is_complete", "is_owned", "make_video", "morphable_mesh", "mouth_boxes", "ou_process",
           "render", "render_batch", "render_frames", "sample_cameras", "sample_expressions", "sample_identity", "sample_prior_batch"]
