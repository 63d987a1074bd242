"""What a person wants to know of the trained runs without opening ``config.json``: one line per
run (``python -m persona runs``) and a loss/PSNR-vs-step plot per run (``metrics.png``).

A run is a folder holding ``config.json`` (``{"method", "config", "data"}``, see
:mod:`persona.runs`); its ``metrics.jsonl`` holds the training log (``step``, ``loss``, ``psnr``
of the training batch). The test PSNR comes from an evaluation the run already holds
(``metrics_test.csv`` from ``python -m persona eval`` or the notebooks' ``eval-*.csv``); it is
never computed here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from persona.runs import RunDir

COLUMNS = ("run", "method", "modality", "k", "ortho", "identity", "steps", "train_psnr", "test_psnr")


def find_runs(root: Path) -> list[Path]:
    """Run folders (holding config.json) under ``root``, sorted by path."""
    root = Path(root)
    if (root / "config.json").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("config.json") if "renders" not in p.parts and "checkpoints" not in p.parts)


def _test_psnr(run: Path) -> float | None:
    for csv in [run / "metrics_test.csv", *sorted(run.glob("eval-*.csv"))]:
        if csv.is_file():
            frame = pd.read_csv(csv)
            if "psnr" in frame and "view" in frame:
                values = frame.loc[frame["view"] == "gt", "psnr"].dropna()
                if len(values):
                    return float(values.mean())
    return None


def describe(run: Path) -> dict[str, Any]:
    """One row of :data:`COLUMNS` for a run folder (None where the run does not say)."""
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        config = {}
    settings = config.get("config") or {}
    data = Path(str(config.get("data") or ""))
    identity = data.parent.name if data.name in ("mono", "audio") else (data.name or None)
    log = RunDir(run).metrics()
    last = log[-1] if log else {}
    steps = last.get("step")
    planned = settings.get("iterations")
    return {"run": str(run), "method": config.get("method"),
            "modality": settings.get("modality") if config.get("method") == "ours" else None,
            "k": settings.get("k") if config.get("method") == "ours" else None,
            "ortho": settings.get("ortho") if config.get("method") == "ours" else None, "identity": identity,
            "steps": f"{steps}/{planned}" if steps is not None and planned else steps,
            "train_psnr": round(float(last["psnr"]), 2) if "psnr" in last else None,
            "test_psnr": round(t, 2) if (t := _test_psnr(run)) is not None else None}


def runs_table(root: Path) -> pd.DataFrame:
    """:func:`describe` of every run under ``root``."""
    return pd.DataFrame([describe(r) for r in find_runs(root)], columns=list(COLUMNS))


def plot_metrics(run: str | Path, keys: tuple[str, ...] = ("loss", "psnr")) -> Path | None:
    """``<run>/metrics.png``: each of ``keys`` from ``metrics.jsonl`` against the step (None when
    the run logged nothing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from persona.runs import atomic_write

    run = Path(run)
    log = RunDir(run).metrics()
    present = [k for k in keys if any(k in row for row in log)]
    if not log or not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3), squeeze=False)
    for ax, key in zip(axes[0], present):
        points = [(row["step"], row[key]) for row in log if key in row and "step" in row]
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel(key + (" (dB, training batch)" if key == "psnr" else ""))
        ax.grid(alpha=0.3)
    fig.suptitle(run.name, fontsize=9)
    fig.tight_layout()
    path = run / "metrics.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from persona import cli
    from persona.notebooks import REPO_ROOT

    p = cli.parser("runs", "list trained runs (method, modality, k, identity, steps, PSNR); --plots draws each "
                           "run's loss/PSNR curve to RUN/metrics.png")
    p.add_argument("root", nargs="?", default=None, help="a run or a folder of runs (None: runs/ of this checkout)")
    p.add_argument("--profile", default=None, help="only runs/<profile>/")
    p.add_argument("--plots", action="store_true", help="write RUN/metrics.png for every run listed")
    args = p.parse_args(argv)
    root = Path(args.root) if args.root else REPO_ROOT / "runs" / (args.profile or "")
    if not root.exists():
        print(f"persona runs: {root}: no such folder (train with `python -m persona train` or run the notebooks)",
              file=sys.stderr)
        return 2
    table = runs_table(root)
    if table.empty:
        print(f"no runs under {root}")
        return 0
    table["run"] = [str(Path(r).relative_to(root)) if Path(r) != root else Path(r).name for r in table["run"]]
    print(table.to_string(index=False, na_rep="-"))
    if args.plots:
        for run in find_runs(root):
            path = plot_metrics(run)
            if path:
                print(f"plot -> {path}")
    return 0
