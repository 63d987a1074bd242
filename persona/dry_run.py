"""The inputs of a dry-run profile (``paper-dry``): what a user of the paper profile would bring,
written here from the synthetic world so that every notebook runs end to end at paper size.

- ``nerface/idNN``: a NerFACE folder per identity (512-px PNG frames, ``transforms_{train,val,test}.json``),
- ``adnerf/idNN``: an AD-NeRF folder per identity (450-px JPEGs, ``transforms_{train,val}.json``,
  ``aud.npy``, ``aud.wav``, ``bc.jpg``), both in the real layouts (:mod:`persona.data.real_layouts`:
  no extras of our benchmark, so they take the code paths of real videos);
- ``ffhq512-random.pkl``: a random-weight ffhq512 generator in the official EG3D pickle format
  (:mod:`persona.eg3d.release_format`), read by the same restricted unpickler as NVIDIA's file. Its
  rendering options hold a neural-rendering resolution and depth samples reduced from the
  release's 128 px and 48 + 48 (:class:`DryInputs`), so a CPU affords a step; the architecture,
  the 512-px output and every other size are the release's.

They live under ``data/dry/<profile>/`` and ``notebooks/params/<profile>.yaml`` names them
(a test checks that the two agree). :func:`ensure_inputs` writes them once (locked, kept while
the sizes and the code version are the same); every notebook calls it through
:func:`persona.tables.require_paper_inputs`, so ``--only NN`` works on a fresh checkout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from persona.profiles import check_profile

INPUTS_VERSION = 1  # bump when the inputs are written differently
PICKLE_NAME = "ffhq512-random.pkl"


@dataclass(frozen=True)
class DryInputs:
    """Sizes of a dry run's inputs. Frames: DFRF needs ``num_references`` (4) training frames;
    2 test frames. Resolutions are the real datasets' (NerFACE 512, AD-NeRF 450)."""

    identities: int = 1
    train_frames: int = 4
    test_frames: int = 2
    nerface_resolution: int = 512
    adnerf_resolution: int = 450
    neural_rendering_resolution: int = 32  # the release: 128
    depth_samples: int = 4  # coarse and importance samples per ray; the release: 48 + 48
    seed: int = 0


DRY_INPUTS: dict[str, DryInputs] = {"paper-dry": DryInputs()}


def is_dry_run(profile: str) -> bool:
    """True when ``profile`` writes its own inputs (a dry run, :data:`DRY_INPUTS`)."""
    return check_profile(profile) in DRY_INPUTS


def inputs_root(profile: str) -> Path:
    from persona.notebooks import REPO_ROOT

    return REPO_ROOT / "data" / "dry" / check_profile(profile)


def input_paths(profile: str) -> dict[str, Any]:
    """The parameters naming a dry run's inputs, as ``notebooks/params/<profile>.yaml`` spells them
    (relative to the repository root): ``eg3d_pkl``, ``nerface_dirs``, ``adnerf_dirs``."""
    sizes = DRY_INPUTS[check_profile(profile)]
    rel = Path("data") / "dry" / profile
    return {"eg3d_pkl": str(rel / PICKLE_NAME),
            "nerface_dirs": [str(rel / "nerface" / f"id{k:02d}") for k in range(sizes.identities)],
            "adnerf_dirs": [str(rel / "adnerf" / f"id{k:02d}") for k in range(sizes.identities)]}


def ensure_inputs(profile: str, force: bool = False) -> Path:
    """Write the dry run's inputs under :func:`inputs_root` unless a complete copy with the same
    sizes is there (``done.json``); locked, so notebooks started side by side write them once."""
    import torch

    from persona.data.real_layouts import write_real_layouts
    from persona.eg3d import build_generator
    from persona.eg3d.release_format import write_release_pickle
    from persona.experiments import run_lock
    from persona.runs import atomic_write_json

    sizes = DRY_INPUTS[check_profile(profile)]
    root = inputs_root(profile)
    key = {"version": INPUTS_VERSION, **asdict(sizes)}
    done = root / "done.json"
    with run_lock(root):
        if not force and done.is_file() and json.loads(done.read_text()) == key:
            return root
        done.unlink(missing_ok=True)
        print(f"dry run: writing its inputs (real layouts at {sizes.nerface_resolution}/{sizes.adnerf_resolution} px, "
              f"a random-weight ffhq512 pickle) under {root}", flush=True)
        write_real_layouts(root, sizes.identities, train_frames=sizes.train_frames, test_frames=sizes.test_frames,
                           nerface_resolution=sizes.nerface_resolution, adnerf_resolution=sizes.adnerf_resolution,
                           seed=sizes.seed, by_kind=True)
        with torch.random.fork_rng():
            torch.manual_seed(sizes.seed)
            generator = build_generator("ffhq512")
        write_release_pickle(generator, root / PICKLE_NAME, neural_rendering_resolution=sizes.neural_rendering_resolution,
                             depth_resolution=sizes.depth_samples, depth_resolution_importance=sizes.depth_samples)
        atomic_write_json(done, key)
    return root
