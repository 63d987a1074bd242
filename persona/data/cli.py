"""``python -m persona data build`` and ``python -m persona data figure``."""

from __future__ import annotations

import time
from pathlib import Path

from persona.errors import flag_int


def main_build(argv: list[str]) -> int:
    """Build the synthetic benchmark of a profile (skipped when a complete build exists)."""
    from persona.data import world
    from persona.profiles import PROFILE_NAMES

    from persona import cli
    from persona.notebooks import REPO_ROOT

    p = cli.parser("data build", main_build.__doc__)
    p.add_argument("--profile", default="smoke", choices=PROFILE_NAMES, help="sizes: identities, frames, resolution")
    p.add_argument("--out", default=None, help="output folder (None: data/synthetic/<profile> of this checkout)")
    p.add_argument("--seed", type=flag_int(0), default=0, help="seed of the identities, speech and motion")
    p.add_argument("--force", action="store_true", help="rebuild even when a complete build exists")
    p.add_argument("--identities", type=flag_int(1, 100), default=None,
                   help="at least this many identities (default: the profile's); a complete smaller build is extended")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else world.benchmark_dir(args.profile, REPO_ROOT / "data" / "synthetic")
    start = time.perf_counter()
    world.build_benchmark(out, args.profile, seed=args.seed, force=args.force, identities=args.identities)
    print(f"benchmark {args.profile} (seed {args.seed}) at {out} in {time.perf_counter() - start:.1f} s")
    return 0


def main_figure(argv: list[str]) -> int:
    """Figure of identities x expressions plus novel-view ground truth (PNG + PDF)."""
    from persona.data import world

    from persona import cli

    p = cli.parser("data figure", main_figure.__doc__)
    p.add_argument("--out", default="figures/data_overview.png", help="PNG path; a PDF is written next to it")
    p.add_argument("--identities", type=flag_int(1, 100), default=5, help="identities (rows) to show")
    p.add_argument("--resolution", type=flag_int(8, 2048), default=128, help="pixels per image")
    p.add_argument("--seed", type=flag_int(0), default=0, help="seed of the identities")
    args = p.parse_args(argv)
    from persona.figures import data_overview_figure

    png, pdf = data_overview_figure(world.benchmark_identity_seeds(args.identities, args.seed), Path(args.out), args.resolution)
    print(f"wrote {png} and {pdf}")
    return 0
