"""``python -m persona data build`` and ``python -m persona data figure``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

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
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else world.benchmark_dir(args.profile, REPO_ROOT / "data" / "synthetic")
    start = time.perf_counter()
    world.build_benchmark(out, args.profile, seed=args.seed, force=args.force)
    print(f"benchmark {args.profile} (seed {args.seed}) at {out} in {time.perf_counter() - start:.1f} s")
    return 0


def overview_figure(identity_seeds: list[int], resolution: int = 128):
    """Matplotlib figure: rows = identities; columns = expressions (neutral, jaw open, smile,
    blink + brow raise, lip round) then the novel-view ground truth (NOVEL_VIEWS) of the neutral
    face."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona import cameras
    from persona.data import world as S

    def expr(**dims):
        e = np.zeros(S.EXPRESSION_DIM, np.float32)
        for k, v in dims.items():
            e[getattr(S, k)] = v
        return e

    columns = [("neutral", expr(), (0, 0)), ("jaw open", expr(JAW_OPEN=1.0), (0, 0)),
               ("smile", expr(SMILE=1.0, JAW_OPEN=0.25), (0, 0)), ("blink + brows", expr(BLINK=1.0, BROW_RAISE=1.0), (0, 0)),
               ("lip round", expr(LIP_ROUND=1.0, JAW_OPEN=0.35), (0, 0))]
    talk = expr(JAW_OPEN=0.6, LIP_STRETCH=0.3)
    columns += [(f"GT {name}", talk, d) for name, d in cameras.NOVEL_VIEWS.items()]
    fig, axes = plt.subplots(len(identity_seeds), len(columns), figsize=(1.3 * len(columns), 1.4 * len(identity_seeds)),
                             squeeze=False)
    base = cameras.camera_label(0, 0)
    for r, seed in enumerate(identity_seeds):
        ident = S.sample_identity(seed)
        for c, (title, e, (dy, dp)) in enumerate(columns):
            cam = cameras.novel_view(base, dy, dp) if (dy or dp) else base
            img = S.render(ident, e, cam, resolution)
            ax = axes[r, c]
            ax.imshow(((img.transpose(1, 2, 0) + 1) / 2).clip(0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(f"id seed {seed}" + (" (glasses)" if ident.glasses else ""), fontsize=6)
    fig.tight_layout(pad=0.3)
    return fig


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
    from persona.report import save_figure

    fig = overview_figure(world.benchmark_identity_seeds(args.identities, args.seed), args.resolution)
    png, pdf = save_figure(fig, Path(args.out))
    print(f"wrote {png} and {pdf}")
    return 0
