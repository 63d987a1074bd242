"""Tables (CSV for data, Markdown for the README, LaTeX for papers) and figure grids.

A results table has one row per method. Reproduced values are ``mean ± std`` over identities
(each identity first averaged over its frames), at the ground-truth camera and - a measurement
the paper could not make - at the novel-view cameras with ground truth. The paper's own numbers
(on its real data) sit in separate columns whose names end in "(paper)". Under every table: its
provenance (profile, seeds, commit, generator, LPIPS availability) and notes.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from persona.notebooks import REPO_ROOT
from persona.paper import PAPER_RESULTS

METRIC_LABELS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "sync": "Sync-C ↑", "psnr_mouth": "mouth PSNR ↑",
                 "ssim_mouth": "mouth SSIM ↑", "syncnet_c": "Sync-C (SyncNet) ↑", "syncnet_d": "LSE-D (SyncNet) ↓",
                 "sync_lse_d": "LSE-D ↓", "sync_offset_accuracy": "offset acc. ↑", "following": "following ↑"}
# scored on a video at one camera only (lip-sync: the ground-truth camera; following: the frontal clip): no novel-view column
VIDEO_METRICS = ("sync", "syncnet_c", "syncnet_d", "sync_lse_d", "sync_offset_accuracy", "following")
METRIC_DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "sync": 3, "psnr_mouth": 2, "ssim_mouth": 3, "syncnet_c": 3, "syncnet_d": 3,
                 "sync_lse_d": 2, "sync_offset_accuracy": 3, "following": 2}
LOWER_IS_BETTER = ("lpips", "syncnet_d", "sync_lse_d")
PAPER_METRIC = {"syncnet_c": "sync"}  # the paper's "SyncNet" column is the official SyncNet's LSE-C


# what a run writes itself: changes there do not make the code that produced a table "dirty"
RUN_OUTPUTS = ("tables", "figures", "README.md", "notebooks/executed")


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's short commit, + "+dirty" when a tracked file outside :data:`RUN_OUTPUTS`
    differs from it (the notebooks rewrite tables, figures and the README as they run); "unknown"
    outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude){path}" for path in RUN_OUTPUTS)], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(profile: str, seeds: Sequence[int], generator: str, lpips_available: bool, **extra: Any) -> dict[str, Any]:
    """The provenance line's fields; ``seeds``: the benchmark's (its identities and clips; the
    optimiser's seeds are a table parameter, ``train_seeds``, named in ``extra``)."""
    from persona.profiles import torch_threads

    return {"profile": profile, "benchmark seeds": list(seeds), "commit": git_commit(), "generator": generator,
            "lpips": "AlexNet LPIPS" if lpips_available else "unavailable (AlexNet weights absent)",
            "torch_threads": torch_threads(profile), **extra}


def per_identity_means(per_frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Frame rows (method, identity, view, metrics...) -> one row per (method, identity, view group)
    where the view group is 'gt' or 'novel' (all novel cameras pooled)."""
    df = per_frame.copy()
    df["view_group"] = np.where(df["view"] == "gt", "gt", "novel")
    cols = [m for m in metrics if m in df.columns]
    return df.groupby(["method", "identity", "view_group"], sort=False)[cols].mean().reset_index()


def summary(per_frame: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Numeric summary: rows (method, view_group), columns ``<metric>_mean``, ``<metric>_std``, ``n_identities``."""
    ident = per_identity_means(per_frame, metrics)
    cols = [m for m in metrics if m in ident.columns]
    grouped = ident.groupby(["method", "view_group"], sort=False)
    out = grouped[cols].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_identities"] = grouped.size()
    return out.reset_index()


def _fmt(mean: float, std: float, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def results_table(per_frame: pd.DataFrame, metrics: Sequence[str], rows: Sequence[str], paper_key: str | None = None,
                  paper_rows: Mapping[str, str] | None = None, novel: bool = True,
                  unsupported_novel: Sequence[str] = ()) -> pd.DataFrame:
    """The display table: one row per method in ``rows`` order; reproduced columns, novel-view
    columns, then paper columns (``paper_rows`` maps our row name to the paper's)."""
    summ = summary(per_frame, metrics)
    table = pd.DataFrame(index=list(rows))
    table.index.name = "method"
    for group, suffix in (("gt", ""), ("novel", " novel view")):
        if group == "novel" and not novel:
            continue
        for m in metrics:
            if group == "novel" and m in VIDEO_METRICS:
                continue
            col = f"{METRIC_LABELS.get(m, m)}{suffix}"
            values = []
            for row in rows:
                hit = summ[(summ["method"] == row) & (summ["view_group"] == group)]
                if group == "novel" and row in unsupported_novel:
                    values.append("not supported")
                elif hit.empty or f"{m}_mean" not in hit:
                    values.append("n/a")
                else:
                    values.append(_fmt(hit[f"{m}_mean"].iloc[0], hit[f"{m}_std"].iloc[0], METRIC_DIGITS.get(m, 3)))
            table[col] = values
    if paper_key:
        paper = PAPER_RESULTS[paper_key]
        for m in metrics:
            col = f"{METRIC_LABELS.get(m, m)} (paper)"
            vals = []
            for row in rows:
                name = (paper_rows or {}).get(row, row)
                v = paper.get(name, {}).get(PAPER_METRIC.get(m, m))
                vals.append("–" if v is None else f"{v:.{METRIC_DIGITS.get(m, 3)}f}")
            if any(v != "–" for v in vals):
                table[col] = vals
    return table


# the recorded budget of every method row (persona.budget): numeric column -> (display column, format)
BUDGET_COLUMNS = {"steps": ("steps", ",.0f"), "cal_s": ("calibrated s", ",.1f"), "train_s": ("train s", ",.1f"), "mpx": ("Mpx", ".3g")}


def with_budget(table: pd.DataFrame, numeric: pd.DataFrame, timings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table, numeric summary) with the budget columns :data:`BUDGET_COLUMNS`, means over
    identities of ``timings`` (one row per method and identity, columns ``steps``, ``cal_s``,
    ``train_s``, ``mpx``, ``budget_per``); rows without a trained method (static, reference, ground truth) stay
    empty. A per-test-frame budget (PTI) reads ``/frame`` in the display table."""
    if timings is None or timings.empty or "steps" not in timings.columns:
        return table, numeric
    present = [c for c in BUDGET_COLUMNS if c in timings.columns]
    means = timings.groupby("method", sort=False)[present].mean()
    per = timings.groupby("method", sort=False)["budget_per"].first()
    table, numeric = table.copy(), numeric.copy()
    for column, (label, spec) in ((c, BUDGET_COLUMNS[c]) for c in present):
        cells = []
        for row in table.index:
            value = means[column].get(row, np.nan) if row in means.index else None
            suffix = "/frame" if per.get(row) == "test frame" else ""
            cells.append("" if value is None else "n/a" if pd.isna(value) else f"{value:{spec}}{suffix}")
        table[label] = cells
        numeric[column] = numeric["method"].map(means[column])
    numeric["budget_per"] = numeric["method"].map(per)
    return table, numeric


def write_table(table: pd.DataFrame, numeric: pd.DataFrame, name: str, tables_dir: Path, caption: str,
                prov: Mapping[str, Any], notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``name``.csv (numeric summary + provenance columns), .md and .tex (display table)."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: tables_dir / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    csv = numeric.copy()
    for key, value in prov.items():
        csv[f"provenance_{key}"] = str(value)
    csv.to_csv(paths["csv"], index=False)
    prov_line = "; ".join(f"{k}: {v}" for k, v in prov.items())
    md = [f"**{caption}**", "", table.to_markdown(), "", f"<sub>Provenance — {prov_line}.</sub>"]
    md += [f"<sub>{note}</sub>" for note in notes]
    paths["md"].write_text("\n".join(md) + "\n")
    latex = table.to_latex(escape=True, caption=caption, label=f"tab:{name}")
    latex += "% provenance: " + prov_line + "\n" + "".join(f"% note: {n}\n" for n in notes)
    paths["tex"].write_text(latex)
    return paths


def to_uint8(image: Any) -> np.ndarray:
    """[3,H,W] (or [H,W,3]) in [-1,1], torch or numpy -> [H,W,3] uint8."""
    from persona.data.formats import unit_to_uint8

    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    arr = unit_to_uint8(arr)
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def image_grid(rows: Sequence[Sequence[Any]], path: Path, row_labels: Sequence[str] = (), col_labels: Sequence[str] = (),
               title: str | None = None, cell_inches: float = 1.3) -> list[Path]:
    """A labelled grid of images (each [3,H,W] in [-1,1] or None for an empty cell) as PNG + PDF."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols + 0.8, cell_inches * n_rows + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            img = row[j] if j < len(row) else None
            if img is not None:
                ax.imshow(to_uint8(img))
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path, dpi: int = 150) -> list[Path]:
    """Save a matplotlib figure as ``path`` .png and .pdf, close it, return both paths."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, dpi=dpi)
    plt.close(fig)
    return out


def claims_table(per_frame: pd.DataFrame, claims: Sequence[tuple[str, str, str]], view: str = "gt") -> pd.DataFrame:
    """Each ordering claim of the paper, ``(better, metric, worse)`` - "``better`` beats ``worse``
    on ``metric``" - checked on the identity means at ``view`` ('gt' or 'novel'): reproduced or not,
    with the numbers."""
    summ = summary(per_frame, sorted({c[1] for c in claims}))
    summ = summ[summ["view_group"] == view].set_index("method")
    out = []
    for better, metric, worse in claims:
        higher_is_better = metric not in LOWER_IS_BETTER
        if better not in summ.index or worse not in summ.index or pd.isna(summ.at[better, f"{metric}_mean"]):
            out.append({"claim": f"{better} > {worse} ({metric})", "ours": "n/a", "verdict": "not measured"})
            continue
        a, b = summ.at[better, f"{metric}_mean"], summ.at[worse, f"{metric}_mean"]
        ok = a > b if higher_is_better else a < b
        out.append({"claim": f"{better} {'>' if higher_is_better else '<'} {worse} ({metric}, {view} view)",
                    "ours": f"{a:.{METRIC_DIGITS.get(metric, 3)}f} vs {b:.{METRIC_DIGITS.get(metric, 3)}f}",
                    "verdict": "reproduced" if ok else "NOT reproduced"})
    return pd.DataFrame(out)


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
README_FIGURES = (("fig3_reconstruction", "Figure 3: reconstruction, input camera and two novel views"),
                  ("fig1_novel_views", "Figure 1: novel views, 3DMM-driven"),
                  ("fig5_audio", "Figure 5: audio-driven, zoomed mouths"),
                  ("fig6_basis", "Figure 6: basis vectors with and without orthogonality"),
                  ("fig_basis_3dmm", "The top basis directions of Ours 3DMM at ±2σ (notebook 05)"),
                  ("fig_cross_identity", "Table 5's figure: one pair, A's avatar driven by B"))
BASIS_CHANGE_NAME = "basis_change"  # notebook 05's tables/basis_change.md (persona.diagnostics.basis_change_report)


def update_readme(readme: Path = REPO_ROOT / "README.md", tables_dir: Path = REPO_ROOT / "tables",
                  figures_dir: Path = REPO_ROOT / "figures") -> bool:
    """Rewrite the README's results section (between the results markers) from the default
    profile's ``tables/*.md`` and key figures, so the README never holds a typed number.
    Returns False (and changes nothing) when the README has no markers."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    parts = ["", "_Generated by the default-profile notebooks (`./reproduce.sh`); do not edit by hand._", ""]
    tables = sorted(t for t in tables_dir.glob("table*.md") if not t.stem.endswith("_claims"))
    for table in tables:
        parts.append(table.read_text().strip() + "\n")
        claims = table.with_name(table.stem + "_claims.md")
        if claims.is_file():
            parts.append(claims.read_text().strip() + "\n")
    parts += [] if tables else ["_No default-profile table has been generated yet._\n"]
    basis = tables_dir / f"{BASIS_CHANGE_NAME}.md"  # notebook 05: how far the top directions move the face
    parts += [basis.read_text().strip() + "\n"] if basis.is_file() else []
    for stem, caption in README_FIGURES:
        png = figures_dir / f"{stem}.png"
        if png.is_file():
            parts.append(f"![{caption}]({png.relative_to(readme.parent)})\n")
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + README_START + "\n".join(parts) + "\n" + README_END + tail)
    return True


def write_claims(claims: Sequence[pd.DataFrame], name: str, tables_dir: Path, notes: Sequence[str] = ()) -> Path:
    """The paper's ordering claims as checked here (see :func:`claims_table`), as ``name``_claims.md/.csv;
    ``notes`` (e.g. a claim this run's parameters leave out) go under the table."""
    both = pd.concat(list(claims), ignore_index=True)
    both = both[both["verdict"] != "not measured"] if (both["verdict"] != "not measured").any() else both
    both.to_csv(tables_dir / f"{name}_claims.csv", index=False)
    path = tables_dir / f"{name}_claims.md"
    path.write_text("_The paper's ordering claims on this benchmark:_\n\n" + both.to_markdown(index=False) + "\n"
                    + "".join(f"\n<sub>{note}</sub>\n" for note in notes))
    return path
