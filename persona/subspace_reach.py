"""Can ours' learned subspace render an open mouth? (issue #20)

The issue asks how far apart in W+ an open and a closed mouth of the same identity lie, and whether
the learned subspace spans that difference. For a trained 3DMM run of ours and its synthetic video:
the identity's mean training expression with the jaw closed (0) and open (``open_value``), rendered
by the synthetic world at a frontal camera (the truth) and by ours. Then, from ours' W+ of the closed
mouth, two optimisations against the open truth (Adam; L2 over the image plus L2 over the opening
box, :func:`persona.diagnostics.opening_box`), both through ours' own trained generator:

- ``wplus``: every W+ entry free (an inversion): what the generator can render;
- ``subspace``: ours' coefficients only (``w = alpha @ B + offset``): the best point of the learned
  subspace.

Mouth PSNR in the opening box against the open truth (:data:`REACH_ROWS`): ``closed`` (ours' closed
render: what not opening scores), ``ours`` (ours' open render), ``projected`` (the inversion's W+
step projected onto span(B), added to ours' closed W+), ``subspace`` and ``wplus``. And the W+ step
lengths of ours (closed -> open) and of the inversion, their cosine, and the share of the inversion's
step inside span(B). ``python -m persona reach --run RUN --data VIDEO --out DIR`` writes
``reach.csv`` (one row per run) and ``reach.png`` (per run: truth closed, truth open, ours,
the subspace's best, the inversion).

``--encoder-steps N`` then asks whether the encoder is what falls short (:func:`train_encoder_alone`):
the run's encoder trains N more steps alone (generator and basis frozen, its own loss), and the
row gains ``psnr_mouth_ours_encoder`` and ``step_ours_encoder``, ours' open render and W+ step after them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from persona import metrics
from persona.errors import PersonaInputError

REACH_ROWS = ("closed", "ours", "projected", "subspace", "wplus")


def _fit(render: Any, start: torch.Tensor, truth: torch.Tensor, box: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Adam on ``start`` (a leaf copy) so that ``render(x)`` [1,3,H,W] matches ``truth``: the
    image L2 plus ours' mouth term over ``box`` [1,4] (:func:`persona.ours.train.mouth_l2`, weight 1)."""
    from persona.ours.train import mouth_l2

    x = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        image = render(x)
        loss = F.mse_loss(image, truth) + mouth_l2(image, truth, box)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return x.detach()


def open_mouth_case(video: str | Path, open_value: float = 1.0) -> dict[str, torch.Tensor]:
    """The identity's mean training expression with the jaw closed (0) and open (``open_value``) at a
    frontal camera: ``expression`` [2,76], ``camera`` [2,25], ``truth`` [2,3,H,W] (the world's
    renders) and the opening ``box`` [1,4]."""
    from persona import cameras as cams
    from persona import diagnostics as D
    from persona.data.dataset import FrameDataset
    from persona.data.world.expression import JAW_OPEN

    train = FrameDataset(video, "train")
    expression = train.expressions.float().mean(0, keepdim=True).repeat(2, 1)
    expression[:, JAW_OPEN] = torch.tensor([0.0, float(open_value)])
    camera = torch.as_tensor(cams.camera_label(0.0, 0.0), dtype=torch.float32)[None].repeat(2, 1)
    identity = D.identity_seed(video)
    truth = D.world_render(identity, expression, camera, int(train.resolution), "reach: world render")
    return {"expression": expression, "camera": camera, "truth": truth, "box": D.opening_box(identity, camera[:1])}


@torch.no_grad()
def ours_closed_open(model: Any, case: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """(alpha [2,k], ws [2,num_ws,w_dim], renders [2,3,H,W], scores) of ours on ``case``
    (:func:`open_mouth_case`): scores ``psnr_mouth_ours`` (the open render against the open truth)
    and ``step_ours`` (ours' closed -> open W+ length)."""
    alpha = model.encode({"expression": case["expression"]})
    ws = model.basis(alpha)
    ours = model.synthesize(ws, case["camera"])
    scores = {"psnr_mouth_ours": float(metrics.psnr(ours[1:], case["truth"][1:], case["box"])[0]),
              "step_ours": float((ws[1] - ws[0]).norm())}
    return alpha, ws, ours, scores


def _check_method(method: Any) -> Any:
    model = getattr(method, "model", None)
    if model is None or not hasattr(model, "basis") or getattr(method.config, "modality", None) != "3dmm":
        raise PersonaInputError(f"reach: a trained 3DMM run of ours expected, got {type(method).__name__} "
                                f"(modality {getattr(getattr(method, 'config', None), 'modality', None)!r})")
    return model.eval().requires_grad_(False)


def subspace_reach(method: Any, video: str | Path, open_value: float = 1.0, steps: int = 150,
                   lr: float = 0.05, seed: int = 0, case: dict[str, torch.Tensor] | None = None
                   ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """(scores, images) of a trained 3DMM ``method`` of ours on the synthetic ``video`` (module doc;
    ``case``: :func:`open_mouth_case` of it, when already built).

    scores: ``psnr_mouth_<row>`` for each of :data:`REACH_ROWS`, ``step_ours``, ``step_inversion``
    (W+ lengths), ``cosine``, ``share_in_span``; images [1,3,H,W] each: ``truth_closed``,
    ``truth_open``, ``ours``, ``subspace``, ``wplus``."""
    model = _check_method(method)
    torch.manual_seed(seed)
    case = case if case is not None else open_mouth_case(video, open_value)
    truth, box = case["truth"], case["box"]
    alpha, ws, ours, _ = ours_closed_open(model, case)
    target, cam = truth[1:], case["camera"][:1]
    wplus = _fit(lambda w: model.synthesize(w, cam), ws[:1], target, box, steps, lr)
    best_alpha = _fit(lambda a: model.synthesize(model.basis(a), cam), alpha[:1], target, box, steps, lr)
    basis = model.basis.effective_basis()  # [k, num_ws*w_dim]
    step_inversion = (wplus - ws[:1]).reshape(-1)
    step_ours = (ws[1] - ws[0]).reshape(-1)
    if model.basis.ortho == "qr":
        projected_step = basis.t() @ (basis @ step_inversion)  # orthonormal rows
    else:
        projected_step = basis.t() @ torch.linalg.lstsq(basis.t(), step_inversion[:, None]).solution[:, 0]
    with torch.no_grad():
        images = {"truth_closed": truth[:1], "truth_open": target, "ours": ours[1:],
                  "subspace": model.synthesize(model.basis(best_alpha), cam), "wplus": model.synthesize(wplus, cam)}
        projected = model.synthesize((ws[:1].reshape(-1) + projected_step).view_as(ws[:1]), cam)
    renders = {"closed": ours[:1], "ours": ours[1:], "projected": projected, "subspace": images["subspace"], "wplus": images["wplus"]}
    scores = {f"psnr_mouth_{row}": float(metrics.psnr(renders[row], target, box)[0]) for row in REACH_ROWS}
    scores.update(step_ours=float(step_ours.norm()), step_inversion=float(step_inversion.norm()),
                  cosine=float(F.cosine_similarity(step_ours, step_inversion, dim=0)),
                  share_in_span=float(projected_step.norm() / step_inversion.norm().clamp_min(1e-12)))
    return scores, images


def train_encoder_alone(method: Any, video: str | Path, steps: int, lr: float = 3e-3, seed: int = 7) -> None:
    """Train ``method``'s encoder alone for ``steps`` Adam steps (lr ``lr``) on the training frames of
    ``video``: generator and basis frozen, batch and loss as ours trains (image L2 + ``mouth_weight`` x
    mouth L2, :func:`persona.ours.train.batch_indices` order under ``seed``). In place; the model ends in eval mode."""
    from persona.data.dataset import FrameDataset
    from persona.ours.train import FrameSource, batch_indices, loss_images, reconstruction_loss

    model, cfg = method.model, method.config
    frames = FrameSource(FrameDataset(video, "train"), preload=True)
    model.requires_grad_(False)
    model.encoder.requires_grad_(True)
    model.encoder.train()
    optimizer = torch.optim.Adam(model.encoder.parameters(), lr=lr)
    for step in range(1, steps + 1):
        batch = frames.batch(batch_indices(seed, step, len(frames), cfg.batch_size))
        image, target = loss_images(model({"expression": batch["expression"]}, batch["camera"])["image"], batch["image"].float(),
                                    cfg.loss_resolution)
        loss = reconstruction_loss(image, target, batch["mouth_box"], cfg.mouth_weight)[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)


def reach_figure(images: dict[str, dict[str, torch.Tensor]], path: Path) -> list[Path]:
    """Per run (row): truth closed, truth open, ours, the subspace's best, the W+ inversion."""
    from persona.report import image_grid

    columns = (("truth_closed", "truth: closed"), ("truth_open", "truth: open"), ("ours", "ours"),
               ("subspace", "best in subspace"), ("wplus", "W+ inversion"))
    rows = [[row[key][0] for key, _ in columns] for row in images.values()]
    return image_grid(rows, path, row_labels=list(images), col_labels=[label for _, label in columns],
                      title="can ours' subspace open the mouth?")


def main(argv: list[str]) -> int:
    """``python -m persona reach --run RUN --data VIDEO [--run RUN --data VIDEO ...] --out DIR``."""
    from persona import cli
    from persona.errors import flag_int
    from persona.runs import atomic_write
    from persona.verbs import load_run

    p = cli.parser("reach", "ours 3DMM: can its learned subspace render an open mouth? Inversions into its generator, "
                   "free in W+ and inside the subspace (issue #20)")
    p.add_argument("--run", required=True, action="append", help="a trained 3DMM run of ours (repeatable, one --data each)")
    p.add_argument("--data", required=True, action="append", help="the synthetic video folder it trained on")
    p.add_argument("--out", required=True, help="folder for reach.csv and reach.png")
    p.add_argument("--open", type=float, default=1.0, help="the jaw opening of the open mouth (the world's control)")
    p.add_argument("--steps", type=flag_int(1), default=150, help="Adam steps of each inversion")
    p.add_argument("--encoder-steps", type=flag_int(0), default=0,
                   help="then train the run's encoder alone this many steps and score ours' open mouth again")
    args = p.parse_args(argv)
    if len(args.run) != len(args.data):
        raise PersonaInputError(f"reach: {len(args.run)} --run and {len(args.data)} --data; give one --data per --run")
    out = Path(args.out)
    rows, images = [], {}
    for run, video in zip(args.run, args.data):
        method, _ = load_run(run)
        case = open_mouth_case(video, args.open)
        scores, pictures = subspace_reach(method, video, args.open, args.steps, case=case)
        if args.encoder_steps:
            train_encoder_alone(method, video, args.encoder_steps)
            after = ours_closed_open(method.model, case)[3]
            scores.update(psnr_mouth_ours_encoder=after["psnr_mouth_ours"], step_ours_encoder=after["step_ours"])
        name = f"{Path(video).parent.name}: {Path(run).name}"  # the identity, then the run folder
        name = name if name not in images else f"{name} ({len(images)})"
        rows.append({"label": name, "run": str(run), "video": str(video), **scores})
        images[name] = pictures
        print(name, " ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    atomic_write(out / "reach.csv", lambda tmp: table.to_csv(tmp, index=False))
    reach_figure(images, out / "reach")
    print(f"wrote {out}/reach.csv, reach.png")
    return 0


def reach_report(method: Any, video: str | Path, tables_dir: Path, figures_dir: Path, label: str = "Ours 3DMM",
                 steps: int = 150) -> pd.DataFrame:
    """:func:`subspace_reach` of one run, written as ``tables_dir/subspace_reach.csv`` and
    ``figures_dir/fig_subspace_reach_3dmm.png`` (notebook 05). Returns the one-row table."""
    from persona.runs import atomic_write

    from persona.notebooks import REPO_ROOT

    scores, pictures = subspace_reach(method, video, steps=steps)
    where = Path(video).resolve()
    shown = where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where  # no machine's path in a shipped table
    table = pd.DataFrame([{"label": label, "video": str(shown), **scores}])
    Path(tables_dir).mkdir(parents=True, exist_ok=True)
    atomic_write(Path(tables_dir) / "subspace_reach.csv", lambda tmp: table.to_csv(tmp, index=False))
    reach_figure({f"{label} ({Path(video).parent.name})": pictures}, Path(figures_dir) / "fig_subspace_reach_3dmm")
    return table
