"""The paper's Tables 1-4 (and Table 5, beyond the paper: cross-identity reenactment) as specs,
and the one function that makes a table from a spec.

A :class:`TableSpec` says what a table is: its rows (a display label, a registered method and its
config), the metrics it reports, the paper's ordering claims it checks (each typed once, checked
at the video camera and at the novel cameras), its caption, footnotes and figures. Which rows have
no novel views is not listed: it comes from each method's ``supports_novel_views``.
:func:`run_table` does what a results notebook shows: train and evaluate every row on every video
(through the run cache, :mod:`persona.experiments`), write ``tables/`` (CSV, Markdown, LaTeX, and
the claims), the figures, and the README's results section (default profile, own parameters only).

A notebook then reads::

    P = params.resolve("02_3dmm_reenactment", globals())
    result = tables.run_table(tables.T2, P)
    display(Markdown(result.markdown))
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from persona import experiments as ex
from persona import budget, report, verdicts
from persona.evaluate import STATIC_LABEL, SYNC_REFERENCE_SUFFIX, shared_frame_count
from persona.paper import PAPER_RESULTS
from persona.errors import PersonaInputError
from persona.profiles import uses_real_data
from persona.syncnet import REFERENCE_ROWS

Claim = tuple[str, str, str]  # (better, metric, worse): "better beats worse on metric"
IMAGE_METRICS = ("psnr", "ssim", "lpips")
MOUTH_METRICS = ("psnr_mouth", "ssim_mouth")  # in the dataset's mouth box: where expression fidelity shows
FOLLOWING_METRIC = "following"  # expression-following score (Tables 2, 3: driven by expression or audio)
SYNC_REFERENCE_ROWS = tuple(f"{name}{SYNC_REFERENCE_SUFFIX}" for name in REFERENCE_ROWS)  # Table 3's lip-sync floor


# ----------------------------------------------------------------------------------------- rows and inputs
@dataclass
class Row:
    """One row of a results table: a display label, a registered method and its config."""

    label: str
    method: str
    cfg: dict[str, Any]
    max_test_frames: int | None = None  # score a subset of test frames (per-frame optimisers: PTI)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def require_paper_inputs(profile: str, eg3d_pkl: str | None, dirs: Sequence[str], what: str, l2_only: bool = False) -> None:
    """A profile on real data (the paper's) needs the official weights, real videos and LPIPS (the
    AlexNet weights file, unless ``l2_only``): refuse clearly without them. A dry run
    (``paper-dry``) first writes its own stand-ins for them (:func:`persona.dry_run.ensure_inputs`)."""
    if not uses_real_data(profile):
        return
    from persona import dry_run

    if dry_run.is_dry_run(profile):
        dry_run.ensure_inputs(profile)
    from persona.metrics import require_lpips

    require_lpips("the paper profile", l2_only=l2_only)
    missing = []
    if not eg3d_pkl or not Path(eg3d_pkl).is_file():
        missing.append(f"eg3d_pkl (official EG3D pickle, e.g. ffhqrebalanced512-128.pkl): got {eg3d_pkl!r}")
    if not dirs:
        missing.append(f"{what} (folders of real videos): none given")
    missing += [f"{what}: {d} is not a folder" for d in dirs if not Path(d).is_dir()]
    if missing:
        raise SystemExit(f"the {profile} profile needs real inputs; set them in notebooks/params/{profile}.yaml:\n  - "
                         + "\n  - ".join(missing))


def videos(root: Path, kind: str, identities: int) -> list[Path]:
    """The first ``identities`` videos of ``kind`` ('mono' or 'audio') under a benchmark root."""
    found = sorted(p / kind for p in root.glob("id*") if (p / kind).is_dir())
    if len(found) < identities:
        raise PersonaInputError(f"{root}: {len(found)} {kind} videos, {identities} asked for")
    return found[:identities]


def table_videos(profile: str, kind: str, identities: int, real_dirs: Sequence[str], seed: int = 0,
                 force: bool = False) -> list[Path]:
    """The videos a table runs on: the real folders on a real-data profile, else the first ``identities``
    synthetic ones (the benchmark extended when the profile builds fewer)."""
    if uses_real_data(profile):
        return [Path(d) for d in real_dirs]
    return videos(ex.ensure_benchmark(profile, seed=seed, force=force, identities=identities), kind, identities)


def benchmark_summary(root: Path) -> pd.DataFrame:
    """One row per video of a benchmark: frames per split, novel-view frames, resolution, fps."""
    from persona.data.dataset import FrameDataset, NovelViewDataset

    rows = []
    for video in sorted(p for p in Path(root).glob("id*/*") if (p / "transforms_train.json").is_file()):
        train, test = FrameDataset(video, "train"), FrameDataset(video, "test")
        novel = len(NovelViewDataset(video)) if (video / "novel").is_dir() else 0
        rows.append({"identity": video.parent.name, "video": video.name, "train_frames": len(train),
                     "test_frames": len(test), "novel_view_frames": novel, "resolution": train.resolution, "fps": train.fps})
    return pd.DataFrame(rows)


def generator_cfg(eg3d_pkl: str | None) -> dict[str, Any]:
    """Config entries selecting the generator: the official pickle when given, else the shipped prior."""
    return {"generator": str(eg3d_pkl)} if eg3d_pkl else {}


def loss_cfg(l2_only: bool = False) -> dict[str, Any]:
    """Config entries of ours' loss: ``lambda_lpips = 0`` for an explicit L2-only run without the
    AlexNet weights (see :func:`persona.metrics.require_lpips`), else nothing (the profile's loss)."""
    from persona.metrics import lpips_available

    return {"lambda_lpips": 0.0} if l2_only and not lpips_available() else {}


def ours_cfg(p: Mapping[str, Any], **cfg: Any) -> dict[str, Any]:
    """Ours' config in a table: ``cfg`` plus the generator and loss the parameters ``p`` choose."""
    return {**cfg, **generator_cfg(p["eg3d_pkl"]), **loss_cfg(p["l2_only"])}


def generator_name(eg3d_pkl: str | None) -> str:
    return f"official EG3D ({Path(eg3d_pkl).name})" if eg3d_pkl else "tiny prior (persona/assets/prior_tiny.safetensors)"


# ----------------------------------------------------------------------------------------- lip-sync columns
def sync_metrics(syncnet_model: str | None = None) -> list[str]:
    """The lip-sync columns of a table: ``sync`` (LSE-C of the synthetic expert) by default;
    ``syncnet_c``, ``syncnet_d`` (LSE-C, LSE-D of the official SyncNet) with ``syncnet_model``."""
    return ["syncnet_c", "syncnet_d"] if syncnet_model else ["sync"]


def sync_note(syncnet_model: str | None = None) -> str:
    from persona import syncnet

    if syncnet_model:
        return (f"Sync-C / LSE-D (SyncNet): the official SyncNet ({Path(syncnet_model).name}) on each method's rendered "
                "test video with the test audio, whole frames as its 224x224 face crops (LSE-C = median - min mean "
                "distance over ±15 frame shifts; LSE-D = the min), the protocol of the paper's Table 3.")
    return ("Sync-C is the SyncNet protocol's confidence (LSE-C = median - min distance over ±15 frame shifts) scored by "
            f"our synthetic lip-sync expert ({syncnet.ASSET.name}, trained here on the synthetic world), not by SyncNet; "
            "the paper's column is SyncNet on real video. Set syncnet_model to the official syncnet_v2.model to score with SyncNet.")


# ----------------------------------------------------------------------------------------- footnotes
def frames_note(test_frames: int | None, sync: bool = False) -> str:
    """Footnote saying which test frames the image metrics use."""
    which = f"{test_frames} evenly spaced test frames per identity and their novel views" if test_frames else \
        "every test frame and its novel views"
    text = f"Image metrics are computed on {which}."
    if sync:
        text += " Sync-C is always scored on the whole test clip (the offset search needs consecutive frames)."
    return text


STATIC_NOTE = (f"{STATIC_LABEL}: the identity's mean training frame shown for every test frame, scored on the same frames "
               "as the methods: the floor a method that reenacts must beat, above all in the mouth columns; it renders no "
               "novel view (n/a).")
MOUTH_NOTE = ("mouth PSNR / mouth SSIM: in each frame's mouth box (the dataset's `mouth_box`; novel views: the box at that "
              "camera), where a closed mouth against an open one shows; whole-image metrics mostly measure identity, "
              "head pose and background, a few percent of whose pixels are the mouth.")


def following_note(real_data: bool = False) -> str:
    """Footnote of the ``following`` column (n/a on real videos: it needs the synthetic world)."""
    if real_data:
        return "following: n/a on real videos (the score needs the synthetic world's re-rendered ground truth)."
    return ("following: Pearson correlation, over the scored test frames, of the method's mouth opening with the ground "
            "truth's (dark pixels in a camera-only box around the mouth), on the test clip re-rendered by the synthetic "
            "world at a frontal camera; image-driven methods get that frontal ground truth as input. 1 = follows every "
            "opening and closing, 0 = does not move (the static row).")


SYNC_REFERENCE_NOTE = ("Reference rows: the floor of the expert on the same clips (the first frame of the ground truth "
                       "frozen, the clip with another identity's test audio, an all-black video, each with the clip's "
                       "audio unless said; the Ground Truth row is its ceiling); offset accuracy chance = 1/31 (±15-frame search). A method's lip-sync means "
                       "something only well above the last three.")


def sync_notes(per_frame: pd.DataFrame) -> list[str]:
    """Why lip-sync reads n/a: the ``sync_note`` of every clip that was too short to score."""
    if "sync_note" not in per_frame.columns:
        return []
    from persona.notebooks import REPO_ROOT

    reasons = sorted({n.replace(f"{REPO_ROOT}/", "") for n in per_frame["sync_note"] if isinstance(n, str) and n})
    return [f"Lip-sync columns n/a (reference rows too): {reason}." for reason in reasons]  # paths relative to the repository


def table_notes(*extra: str, l2_only: bool = False) -> list[str]:
    """Footnotes every results table carries: LPIPS availability (and how to enable it), the
    reading of novel-view columns, that the run was L2-only when ``l2_only`` took effect, plus ``extra``."""
    from persona.metrics import L2_ONLY_NOTE, lpips_unavailable_reason

    notes = ["Reproduced columns: mean ± std over identities (each the mean over its test frames). 'novel view' "
             "columns: renders at cameras rotated about the head (±25° yaw, ±15° pitch) scored against ground truth, "
             "which only the synthetic benchmark has. '(paper)' columns: the paper's numbers on its real data, for reference."]
    reason = lpips_unavailable_reason()
    if reason:
        notes.append(reason)
        if l2_only:
            notes.append(L2_ONLY_NOTE)
    return notes + list(extra)


# ----------------------------------------------------------------------------------------- train and evaluate
def compare(rows: Sequence[Row], video_dirs: Sequence[Path], profile: str, force: bool = False, novel: bool = True,
            train_max_seconds: float | None = None, sync: bool = False,
            ground_truth_label: str = "Ground Truth", max_test_frames: int | None = None,
            syncnet_model: str | None = None, static: bool = False, following: bool = False,
            sync_references: bool = False, budget_seconds: float | None = None,
            train_seeds: Sequence[int] = (0,),
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, str], ex.TrainedRun]]:
    """Train and evaluate every row on every video (cached: :func:`persona.experiments.trained`).

    Returns (per-frame metrics with columns method, identity, view, ...; timings with one row per
    (method, identity): train_seconds, eval_seconds and the recorded budget (:func:`persona.budget.row_record`:
    steps, train_s, mpx, budget_per, DFRF's base_*); the trained runs by (label, identity)).
    ``budget_seconds``: train every row with the equal budget (:func:`persona.budget.equal_budget_cfg`);
    None: each method's own steps (the row configs as given, so the cached runs stay valid).
    With ``sync`` the gt-view rows get the lip-sync confidence ``sync`` of the rendered test clip,
    and rows labelled ``ground_truth_label`` carry that of the real clip (always scored on the
    whole test clip: the sync search needs consecutive frames).
    ``max_test_frames``: score image metrics on that many evenly spaced test frames (and their
    novel views); None = every frame. Every row is scored on the same frames: the smallest of
    ``max_test_frames`` and the rows' own ``max_test_frames`` (:func:`persona.evaluate.shared_frame_count`).
    ``syncnet_model``: score lip-sync with the official SyncNet (columns ``syncnet_c``, ``syncnet_d``
    instead of ``sync``; see :func:`sync_metrics`). A clip too short for the lip-sync search
    leaves those columns NaN and its reason in the column ``sync_note``.
    ``static``: add the row :data:`persona.evaluate.STATIC_LABEL` (the mean training frame, on
    the same frames; :func:`persona.experiments.static_evaluated`). ``following``: add the
    expression-following score (columns ``following``, ``opening_std_ratio``) to every row (the
    synthetic world only: ignored on real videos). ``sync_references``: add Table 3's lip-sync
    floor rows (:func:`persona.experiments.sync_references`). In planning mode
    (``$PERSONA_PLAN_DIR``) every run not yet trained is listed, then
    :class:`persona.experiments.RunsDeferred` is raised.
    ``train_seeds``: every row trains once per optimiser seed on each video (its config's ``seed``;
    seed 0 leaves the config as given, so the one-seed runs keep their cache keys); the per-frame
    scores of all seeds carry the same method and identity, so an identity's score is the mean over
    its seeds and the verdicts' bootstrap stays over identities. The timings get one row per seed
    (column ``seed``); the returned runs are the first seed's.
    """
    from persona.data.dataset import FrameDataset, NovelViewDataset
    from persona.evaluate import SYNC_DETAIL_COLUMNS

    if sync and syncnet_model:
        ex.sync_scorer(syncnet_model)  # a wrong path fails now, not after hours of training

    following = following and not uses_real_data(profile)  # the following score needs the synthetic world's frontal clip
    shared = shared_frame_count(max_test_frames, *(r.max_test_frames for r in rows))
    frames, timings, runs, deferred, test_sets = [], [], {}, [], {}
    for video in video_dirs:
        identity = Path(video).parent.name if Path(video).name in ("mono", "audio") else Path(video).name
        train = FrameDataset(video, "train", max_seconds=train_max_seconds)
        test = test_sets[identity] = FrameDataset(video, "test")
        novel_ds = NovelViewDataset(video) if novel and (Path(video) / "novel").is_dir() else None
        if static:
            floor = ex.static_evaluated(train, test, profile, max_frames=shared, following=following, force=force)
            frames.append(floor.assign(method=STATIC_LABEL, identity=identity))
        for row, seed in itertools.product(rows, train_seeds):
            print(f"{identity}: {row.label}{f' (seed {seed})' if len(train_seeds) > 1 else ''} ...", flush=True)
            try:
                cfg = budget.equal_budget_cfg(row.method, {**row.cfg, "profile": profile, **({"seed": seed} if seed else {})},
                                              budget_seconds)
                tr = ex.trained(row.method, cfg, train, profile,
                                label=f"{slug(row.label)}-{identity}" + (f"-seed{seed}" if seed else ""), force=force)
            except ex.RunDeferred as run_name:  # planning mode: list every missing run, then stop
                deferred.append(str(run_name))
                continue
            tr.name = row.label
            start = time.perf_counter()
            split = ex.shared_split_frames(tr, test, syncnet_model, force) if sync else None  # one render for both
            df = ex.evaluated(tr, test, novel_ds if tr.method.supports_novel_views else None, force=force,
                              max_frames=shared, following=following, split=split)
            eval_seconds = time.perf_counter() - start
            df["method"] = row.label  # a cached evaluation may come from a row that spelled the same run differently
            df["identity"] = identity
            if sync:
                sync_rows = ex.synced(tr, test, force=force, syncnet_model=syncnet_model, split=split)
                columns = {**dict(zip(sync_metrics(syncnet_model), ("lse_c", "lse_d"))), **SYNC_DETAIL_COLUMNS}
                for column, name in columns.items():
                    df.loc[df["view"] == "gt", column] = float(sync_rows.iloc[0].get(name, np.nan))
                note = sync_rows.iloc[0].get("note")
                if isinstance(note, str) and note:  # a clip too short for the offset search: say why it reads n/a
                    df.loc[df["view"] == "gt", "sync_note"] = note
                if not any(f["method"].iloc[0] == ground_truth_label and f["identity"].iloc[0] == identity for f in frames):
                    frames.append(pd.DataFrame([{"method": ground_truth_label, "identity": identity, "view": "gt",
                                                 **{c: float(sync_rows.iloc[1].get(n, np.nan)) for c, n in columns.items()}}]))
            frames.append(df)
            timings.append({"method": row.label, "identity": identity, "seed": seed, "train_seconds": tr.train_seconds,
                            "eval_seconds": eval_seconds, **budget.row_record(tr, train, profile)})
            runs.setdefault((row.label, identity), tr)
    if deferred:
        raise ex.RunsDeferred(deferred)
    if sync_references:
        refs = ex.sync_references(test_sets, profile, syncnet_model=syncnet_model, force=force)
        if sync:  # the ground truth's row is already there (ground_truth_label, scored the same way): once is enough
            refs = refs[refs["method"] != REFERENCE_ROWS[0] + SYNC_REFERENCE_SUFFIX]
        frames.append(refs)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(timings), runs


# ----------------------------------------------------------------------------------------- specs
Params = Mapping[str, Any]  # a notebook's resolved parameters (persona.params.NotebookParams.values)


@dataclass(frozen=True)
class TableSpec:
    """One results table. Callables take the notebook's resolved parameters (``p["ks"]`` ...), since
    rows and claims may depend on them; each is written once and used for both views."""

    name: str  # file stem under tables/ and key of persona.paper.PAPER_RESULTS
    notebook: str  # the notebook that reports it
    caption: str
    video_kind: str  # benchmark videos: "mono" or "audio"
    real_dirs: str  # the parameter naming the real videos of a real-data profile
    rows: Callable[[Params], list[Row]]
    claims: Callable[[Params], list[Claim]]  # the paper's ordering claims, checked at both views
    notes: Callable[[Params], list[str]]  # footnotes of this table (after the common ones)
    metrics: Callable[[Params], list[str]] = lambda p: list(IMAGE_METRICS)
    leading_rows: tuple[str, ...] = ()  # rows with no method (Table 3's "Ground Truth")
    static_row: bool = False  # the "Static (mean training frame)" reference row (evaluate.STATIC_LABEL)
    following: bool = False  # the expression-following column (methods driven by expression or audio)
    reference_rows: tuple[str, ...] = ()  # reference rows after the methods (Table 3's lip-sync floor)
    gaps: Callable[[Params], list[str]] = lambda p: []  # claims/figure panels these parameters cannot measure
    compare_kwargs: Callable[[Params], dict[str, Any]] = lambda p: {"max_test_frames": p["test_frames"]}
    figures: tuple[Callable[["TableResult"], list[Path]], ...] = ()
    # how the per-frame scores are made: compare's signature and returns (None: compare, each row on its own videos)
    evaluate: Callable[..., tuple[pd.DataFrame, pd.DataFrame, dict[tuple[str, str], ex.TrainedRun]]] | None = None
    novel_views: bool = True  # the table has novel-view columns
    synthetic_only: bool = False  # needs the synthetic world's ground truth: skipped on real data (skip_reason)

    def labels(self, p: Params) -> list[str]:
        """The table's rows in order: leading rows, the methods, the static row, the reference rows."""
        return [*self.leading_rows, *self.method_labels(p), *((STATIC_LABEL,) if self.static_row else ()),
                *self.reference_rows]

    def method_labels(self, p: Params) -> list[str]:
        return [row.label for row in self.rows(p)]


@dataclass
class TableResult:
    """What :func:`run_table` made; the notebook displays it."""

    spec: TableSpec
    params: dict[str, Any]
    videos: list[Path]
    per_frame: pd.DataFrame
    timings: pd.DataFrame
    runs: dict[tuple[str, str], ex.TrainedRun]
    table: pd.DataFrame
    claims: pd.DataFrame
    claims_novel: pd.DataFrame
    notes: list[str]
    gaps: list[str]
    tables_dir: Path
    figures_dir: Path
    figures: list[Path] = field(default_factory=list)

    @property
    def pngs(self) -> list[Path]:
        """The PNG of each figure written (each also has a PDF beside it)."""
        return [path for path in self.figures if path.suffix == ".png"]

    @property
    def markdown(self) -> str:
        return (self.tables_dir / f"{self.spec.name}.md").read_text()

    def timings_summary(self) -> pd.DataFrame:
        """Mean train and evaluation seconds per method over identities."""
        return self.timings.groupby("method")[["train_seconds", "eval_seconds"]].mean().round(2)

    def first_identity_methods(self) -> dict[str, Any]:
        """{row label: trained method} on the first video (the figures' identity)."""
        first = list(self.runs)[0][1]
        return {label: run.method for (label, identity), run in self.runs.items() if identity == first}


def protocol_notes(spec: TableSpec, profile: str) -> list[str]:
    """Footnotes of the evaluation protocol's rows and columns that ``spec`` has: the static row,
    the mouth columns, the following score, the lip-sync reference rows."""
    return ([STATIC_NOTE] if spec.static_row else []) + [MOUTH_NOTE] \
        + ([following_note(uses_real_data(profile))] if spec.following else []) \
        + ([SYNC_REFERENCE_NOTE] if spec.reference_rows else [])


# ours' optimiser and loss fields where persona's default profiles deviate from the paper's (TrainConfig's notes)
RECIPE_FIELDS = ("basis_lr", "encoder_lr", "generator_lr", "grad_clip", "mouth_weight", "lr_schedule", "ema_decay",
                 "expression_lasso")


def recipe_notes(runs: Mapping[tuple[str, str], ex.TrainedRun]) -> list[str]:
    """One footnote saying how each row of ours trained where it differs from the paper's optimiser
    and loss (the ``paper`` profile's :data:`RECIPE_FIELDS`): a reader sees what ours gets that the
    baselines, trained as their releases, do not. None when the table has no row of ours."""
    from persona.ours.train import TRAIN_PROFILES, TrainConfig

    paper = TRAIN_PROFILES["paper"]
    recipes: dict[str, str] = {}
    for (label, _), run in runs.items():
        config = getattr(run.method, "config", None)
        if isinstance(config, TrainConfig) and label not in recipes:
            changed = [f"{f} {getattr(config, f)}" for f in RECIPE_FIELDS if getattr(config, f) != getattr(paper, f)]
            recipes[label] = ", ".join(changed) if changed else "the paper's"
    if not recipes:
        return []
    groups: dict[str, list[str]] = {}  # rows that train alike share one entry (Table 4's ablations)
    for label, recipe in recipes.items():
        groups.setdefault(recipe, []).append(label)
    rows = "; ".join(f"{', '.join(labels)}: {recipe}" for recipe, labels in groups.items())
    return [f"Ours' optimiser and loss where they differ from the paper's (TrainConfig; persona's short-budget recipe, "
            f"docs/REENACTMENT.md; generator_lr: the generator's lr in the fine-tuning stage (the paper's: lr 0.0003); "
            f"ema_decay: a weight average of the trained weights; expression_lasso: a group lasso on "
            f"the 3DMM encoder's expression inputs; the baselines train with their "
            f"releases' optimisers and no weight average): {rows}."]


def unsupported_novel(runs: Mapping[tuple[str, str], ex.TrainedRun]) -> list[str]:
    """Row labels whose method renders no novel views (from each method's ``supports_novel_views``)."""
    return sorted({label for (label, _), run in runs.items() if not run.method.supports_novel_views})


def in_row_order(numeric: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """The numeric summary (rows method, view_group) in the table's row order (``labels``; unknown
    methods last), so the CSV lists its rows as the Markdown and LaTeX tables do."""
    rank = {label: i for i, label in enumerate(labels)}
    return numeric.sort_values("method", key=lambda m: m.map(rank).fillna(len(rank)), kind="stable").reset_index(drop=True)


def run_table(spec: TableSpec, params: Any) -> TableResult:
    """Train and evaluate ``spec``'s rows (cached), write its table, claims and figures, and the
    README's results section when ``params`` are the default profile's own.

    params: the notebook's :class:`persona.params.NotebookParams`. Writes ``<name>.csv/.md/.tex``
    and ``<name>_claims.csv/.md`` under :func:`persona.experiments.outputs`."""
    p = dict(params.values)
    profile = p["profile"]
    print(f"profile {profile}; " + (f"rerun with {params.overrides} -> tables/reruns/{params.rerun}/" if params.rerun
                                    else "the profile's own parameters"))
    from persona.metrics import lpips_available

    if skip_reason(spec, p):
        raise PersonaInputError(skip_reason(spec, p))
    tables_dir, figures_dir = ex.outputs(profile, params.rerun)
    real_dirs = p[spec.real_dirs]
    require_paper_inputs(profile, p["eg3d_pkl"], real_dirs, spec.real_dirs, l2_only=p["l2_only"])
    video_dirs = table_videos(profile, spec.video_kind, p["identities"], real_dirs, seed=p["seed"])
    print(f"{len(video_dirs)} video(s); generator: {generator_name(p['eg3d_pkl'])}; LPIPS available: {lpips_available()}")
    gaps = spec.gaps(p)
    for gap in gaps:
        print("NOTE:", gap)

    rows, metrics, claims = spec.rows(p), spec.metrics(p), spec.claims(p)
    trains = {"budget_seconds": p.get("budget_seconds")}  # Table 5's evaluate trains nothing: it looks up Tables 2-3's runs
    seeds = p.get("train_seeds", [0])  # Tables 1-4 only (params.SCHEMA): Table 5's notebook does not take it
    if seeds != [0]:
        trains["train_seeds"] = seeds
    per_frame, timings, runs = (spec.evaluate or compare)(rows, video_dirs, profile, force=p["force"], static=spec.static_row,
                                                          following=spec.following, **trains, **spec.compare_kwargs(p))
    table = report.results_table(per_frame, metrics, spec.labels(p), paper_key=spec.name if spec.name in PAPER_RESULTS else None,
                                 unsupported_novel=unsupported_novel(runs), novel=spec.novel_views)
    prov = report.provenance(profile, [p["seed"]], generator_name(p["eg3d_pkl"]), lpips_available(),
                             **({"optimiser seeds": seeds} if p.get("train_seeds") is not None else {}),
                             identities=len(video_dirs), parameters=params.summary())
    seeds_note = ([f"Every method trained with optimiser seeds {', '.join(map(str, seeds))} on each identity; "
                   "an identity's score is the mean over its seeds, and the verdicts bootstrap over identities."]
                  if seeds != [0] else [])
    notes = table_notes(*spec.notes(p), *seeds_note, *protocol_notes(spec, profile), *sync_notes(per_frame),
                        *budget.table_notes(p.get("budget_seconds"), timings, profile), *recipe_notes(runs), *gaps,
                        l2_only=p["l2_only"])
    numeric = in_row_order(report.summary(per_frame, metrics), spec.labels(p))
    table, numeric = report.with_budget(table, numeric, timings)  # steps, train s, Mpx of every method row
    report.write_table(table, numeric, spec.name, tables_dir, spec.caption, prov, notes)
    checked = [verdicts.claims_table(per_frame, claims, view=view) for view in ("gt", "novel")]
    report.write_claims(checked, spec.name, tables_dir, notes=[verdicts.claims_note(), *gaps])
    if params.updates_readme:
        report.update_readme()  # only the default profile with its own parameters writes the README
    result = TableResult(spec, p, video_dirs, per_frame, timings, runs, table, checked[0], checked[1], notes, gaps,
                         tables_dir, figures_dir)
    for make in spec.figures:
        result.figures += make(result)
    if p.get("budget_curve"):  # opt-in: PSNR against training seconds at fractions of the budget
        result.figures += budget.budget_curve(result)
    return result


def _fig3(r: TableResult) -> list[Path]:
    from persona import figures

    samples, novel_cams = figures.figure_samples(r.videos[0], n=2)
    return figures.comparison_figure(r.first_identity_methods(), samples, novel_cams, r.figures_dir / "fig3_reconstruction",
                                     title="Figure 3: reconstruction")


def _fig4_fig1(r: TableResult) -> list[Path]:
    from persona import figures

    samples, novel_cams = figures.figure_samples(r.videos[0], n=3)
    methods = r.first_identity_methods()
    paths = figures.comparison_figure(methods, samples, [[] for _ in samples], r.figures_dir / "fig4_3dmm",
                                      title="Figure 4: 3DMM-driven reenactment")
    return paths + figures.comparison_figure({k: methods[k] for k in ("NerFACE", "Ours 3DMM")}, samples[:2], novel_cams[:2],
                                             r.figures_dir / "fig1_novel_views", title="Figure 1: novel views (3DMM-driven)")


def _fig5(r: TableResult) -> list[Path]:
    from persona import figures

    samples, _ = figures.figure_samples(r.videos[0], n=3)
    return figures.comparison_figure(r.first_identity_methods(), samples, [[] for _ in samples], r.figures_dir / "fig5_audio",
                                     title="Figure 5: audio-driven reenactment", zoom_mouth=True)


def _fig6_fig7(r: TableResult) -> list[Path]:
    from persona import cameras, figures
    from persona.data.dataset import FrameDataset
    from persona.explore import BasisExplorer

    first = list(r.runs)[0][1]
    train = FrameDataset(r.videos[0], "train")
    panels = {name: BasisExplorer.from_run(r.runs[(label, first)].method, train)
              for name, label in (("with ortho", "k = 50 (w ortho)"), ("without ortho", "k = 50 (w/o ortho)")) if (label, first) in r.runs}
    paths = figures.basis_directions_figure(panels, cameras.camera_label(0.0, 0.0), r.figures_dir / "fig6_basis", n_vectors=4,
                                            title="Figure 6: basis vectors" + (" (no k = 50 with ortho in this run)" if r.gaps else ""))
    samples, _ = figures.figure_samples(r.videos[0], n=2)
    by_k = {f"k = {k}": r.runs[(f"k = {k} (w ortho)", first)].method for k in r.params["ks"]}
    return paths + figures.comparison_figure(by_k, samples, [[] for _ in samples], r.figures_dir / "fig7_k_mouth",
                                             title="Figure 7: mouth detail vs k", zoom_mouth=True)


T1 = TableSpec(
    name="table1_reconstruction", notebook="01_reconstruction_vs_pti", caption="Table 1: RGB-based reconstruction",
    video_kind="mono", real_dirs="nerface_dirs",
    rows=lambda p: [Row("PTI", "pti", generator_cfg(p["eg3d_pkl"]), max_test_frames=p["pti_test_frames"]),
                    Row("Ours RGB", "ours", ours_cfg(p, modality="rgb"))],
    claims=lambda p: [("Ours RGB", "psnr", "PTI"), ("Ours RGB", "ssim", "PTI"), ("Ours RGB", "lpips", "PTI")],
    metrics=lambda p: [*IMAGE_METRICS, *MOUTH_METRICS],
    static_row=True,
    notes=lambda p: [frames_note(shared_frame_count(p["test_frames"], p["pti_test_frames"])) +
                     " PTI optimises every test frame (inversion, then pivotal tuning), so every row is scored on PTI's "
                     "frames (pti_test_frames). Evaluation seconds per method are printed below the claims."],
    figures=(_fig3,),
)

T2 = TableSpec(
    name="table2_3dmm", notebook="02_3dmm_reenactment", caption="Table 2: 3DMM-driven face reenactment",
    video_kind="mono", real_dirs="nerface_dirs",
    rows=lambda p: [Row("FOMM", "fomm", {}), Row("NerFACE", "nerface", {}), Row("NHA", "nha", {}),
                    Row("Ours 3DMM", "ours", ours_cfg(p, modality="3dmm"))],
    claims=lambda p: [("Ours 3DMM", "psnr", "NHA"), ("Ours 3DMM", "psnr", "NerFACE"), ("Ours 3DMM", "psnr", "FOMM"),
                      ("NHA", "psnr", "NerFACE"), ("NerFACE", "psnr", "FOMM")],
    metrics=lambda p: [*IMAGE_METRICS, *MOUTH_METRICS, FOLLOWING_METRIC],
    static_row=True, following=True,
    notes=lambda p: [frames_note(p["test_frames"])],
    figures=(_fig4_fig1,),
)


def _sync(p: Params) -> str:
    return sync_metrics(p["syncnet_model"])[0]  # "sync" (synthetic expert) or "syncnet_c" (official SyncNet)


T3 = TableSpec(
    name="table3_audio", notebook="03_audio_reenactment", caption="Table 3: audio-driven face reenactment",
    video_kind="audio", real_dirs="adnerf_dirs",
    rows=lambda p: [Row("AD-NeRF", "adnerf", {}), Row("DFRF", "dfrf", {}),
                    Row("Ours Audio", "ours", ours_cfg(p, modality="audio"))],
    leading_rows=("Ground Truth",),
    static_row=True, following=True, reference_rows=SYNC_REFERENCE_ROWS[1:],  # the ground truth is the leading row
    metrics=lambda p: [*IMAGE_METRICS, *sync_metrics(p["syncnet_model"]), *([] if p["syncnet_model"] else ["sync_lse_d"]),
                       "sync_offset_accuracy", *MOUTH_METRICS, FOLLOWING_METRIC],
    claims=lambda p: [("Ours Audio", "psnr", "DFRF"), ("Ours Audio", "psnr", "AD-NeRF"), ("DFRF", "psnr", "AD-NeRF"),
                      ("Ours Audio", _sync(p), "DFRF"), ("Ours Audio", _sync(p), "AD-NeRF")],
    notes=lambda p: [frames_note(p["test_frames"], sync=True), sync_note(p["syncnet_model"])],
    compare_kwargs=lambda p: {"train_max_seconds": p["train_seconds"], "sync": True, "max_test_frames": p["test_frames"],
                              "syncnet_model": p["syncnet_model"], "sync_references": True},
    figures=(_fig5,),
)


ORTHO_SCALE_NOTE = ("w/o ortho: basis rows normalised to unit length (basis_rows=unit), the scale QR gives; only "
                    "orthogonality differs.")


def _ablation_rows(p: Params) -> list[Row]:
    rows = [Row(f"k = {k} (w ortho)", "ours", ours_cfg(p, modality="rgb", k=k, ortho="qr")) for k in p["ks"]]
    return rows + [Row("k = 50 (w/o ortho)", "ours", ours_cfg(p, modality="rgb", k=50, ortho="none")),
                   Row("k = 50 (ortho loss)", "ours", ours_cfg(p, modality="rgb", k=50, ortho="loss"))]


T4 = TableSpec(
    name="table4_ablation", notebook="04_ablations", caption="Table 4: ablation on k and orthogonality",
    video_kind="mono", real_dirs="nerface_dirs",
    rows=_ablation_rows,
    metrics=lambda p: [*IMAGE_METRICS, *MOUTH_METRICS],
    claims=lambda p: [("k = 50 (w ortho)", "psnr", "k = 50 (w/o ortho)")]
    + [(f"k = {b} (w ortho)", "psnr", f"k = {a} (w ortho)") for a, b in zip(p["ks"][:-1], p["ks"][1:])],
    notes=lambda p: [frames_note(p["test_frames"]), ORTHO_SCALE_NOTE],
    # the orthogonality ablation is at k = 50: without 50 in ks its claim and Figure 6's 'with ortho' panel are missing
    gaps=lambda p: [] if 50 in p["ks"] else [f"ks = {p['ks']} has no 50, so the claim 'k = 50 (w ortho) > k = 50 (w/o ortho)' "
                                            "and the 'with ortho' panel of Figure 6 are not measured in this run."],
    figures=(_fig6_fig7,),
)

TABLES = {spec.name: spec for spec in (T1, T2, T3, T4)}  # the paper's tables; T5 (beyond the paper) below


# ----------------------------------------------------------------------------------------- Table 5
def skip_reason(spec: TableSpec, p: Params) -> str | None:
    """Why ``spec`` is not made with parameters ``p`` (a synthetic-only table on a real-data
    profile), else None; :func:`run_table` refuses such a table with this reason."""
    if spec.synthetic_only and uses_real_data(p["profile"]):
        return (f"{spec.caption}: skipped on the {p['profile']} profile: its real videos have no ground truth of one "
                "person driven by another (the synthetic world renders it); run the default or smoke profile.")
    return None


def cross_identity_rows(p: Params) -> list[Row]:
    """Table 5's rows: Table 2's (3DMM-driven and FOMM) then Table 3's (audio-driven), the same
    rows and configs, so their trained runs come from the run cache."""
    return [*T2.rows(p), *T3.rows(p)]


CROSS_IDENTITY_NOTES = (
    "Cross-identity reenactment (the paper's future work): for each identity A and B = the next identity of the "
    "table (cyclic; the benchmark's next when the table has one identity), A's avatar (Tables 2 and 3's trained runs, nothing retrained) is driven by B's test split: "
    "B's expressions (NerFACE, NHA, Ours 3DMM), B's audio windows (AD-NeRF, DFRF, Ours Audio), or B's video as FOMM's "
    "driving video with A's first training frame as the source; every method renders at A's test cameras. Columns: "
    "mean ± std over the pairs (A, B) (the 'identity' of the other tables is the pair here).",
    "Ground truth: A rendered by the synthetic world with B's expressions at A's test cameras (for the audio rows: "
    "the expressions B's audio timeline produced; the world's speech drives the mouth). FOMM's driving video is B "
    "rendered by the world with its expressions at A's cameras, so driving pose and target pose agree.",
    "following: as in Tables 2 and 3 (mouth opening of the render vs the ground truth's, Pearson correlation over "
    "the scored frames), on the pair re-rendered at a frontal camera: A's truth, B's frames as FOMM's driving video.",
    "Sync-C: the audio rows' whole rendered clip against B's audio, by the synthetic lip-sync expert (see Table 3).",
    "Not drivable this way: PTI (Table 1) inverts the frame it is given, so B's frame would give B, not A "
    "reenacted; Ours RGB (Table 1) likewise encodes the frame it is given (trained on A's frames only).",
)


def _cross_identity_figure(r: TableResult) -> list[Path]:
    from persona import cross_identity as X
    from persona import figures

    first, audio = r.videos[0], r.videos[0].parent / "audio"
    return figures.cross_identity_figure(r.first_identity_methods(), [X.driving_clip(first, X.driver_of(first, r.videos)),
                                                                      X.driving_clip(audio, X.driver_of(audio, r.videos))],
                                         set(T3.method_labels(r.params)), r.figures_dir / "fig_cross_identity",
                                         title="Cross-identity reenactment: A's avatar driven by B")


def _cross_compare(*args: Any, **kwargs: Any) -> Any:
    from persona.cross_identity import cross_compare

    return cross_compare(*args, **kwargs)


T5 = TableSpec(
    name="table5_cross_identity", notebook="07_cross_identity", caption="Table 5 (beyond the paper): cross-identity reenactment",
    video_kind="mono", real_dirs="nerface_dirs",
    rows=cross_identity_rows,
    metrics=lambda p: [*IMAGE_METRICS, *MOUTH_METRICS, FOLLOWING_METRIC, "sync"],
    static_row=True,
    # the orderings Tables 2 and 3 check, asked again when another person drives
    claims=lambda p: [c for c in T2.claims(p)] + [("Ours Audio", "psnr", "DFRF"), ("Ours Audio", "psnr", "AD-NeRF"),
                                                  ("DFRF", "psnr", "AD-NeRF"), ("Ours Audio", "sync", "DFRF"),
                                                  ("Ours Audio", "sync", "AD-NeRF")],
    notes=lambda p: [f"Image metrics are computed on {p['test_frames'] or 'every'} {'evenly spaced frames' if p['test_frames'] else 'frame'} "
                     "of each pair's clip; Sync-C on the whole clip; the static row (A's mean mono training frame) on "
                     "the 3DMM pairs' frames.", *CROSS_IDENTITY_NOTES],
    compare_kwargs=lambda p: {"max_test_frames": p["test_frames"], "train_max_seconds": p["train_seconds"],
                              "audio_rows": T3.method_labels(p)},
    evaluate=_cross_compare, novel_views=False, synthetic_only=True,
    figures=(_cross_identity_figure,),
)
