"""Training runs as independent cluster jobs (submitit: SLURM, or its local executor), the
notebooks then collecting every table from the run cache.

Three steps (``python -m persona cluster``; ``./reproduce.sh --launcher slurm`` calls it):

1. **plan**: the notebooks run in planning mode (``$PERSONA_PLAN_DIR``, see
   :func:`persona.experiments.trained`): each (method, identity, config) run that is not in the
   cache yet is written as a job spec ``<plan>/<run-name>.json`` (method, config, data folder,
   split, profile, the run directory, the torch thread count) instead of being trained; the
   notebooks stop at their first table that lacks runs.
2. **submit**: one job per spec (:func:`run_job`), through ``submitit.AutoExecutor`` (``slurm``:
   ``--slurm-partition``, ``--gpus-per-job``, ``--cpus-per-job``, ``--timeout-min``; ``local``:
   one process per job on this machine, for tests); wait for all; a failed job is reported with
   its log files.
3. **collect**: the notebooks run normally; every run is now done, so they load instead of train.

A job trains exactly the run the notebook would (it recomputes the cache key from the spec and
refuses if the run directory differs) and takes the run's lock (:func:`persona.experiments.run_lock`,
safe on a shared filesystem), so a job and a notebook, or two jobs, never train the same run twice.
The run cache (``runs/<profile>/``), the data and the repository must be on a filesystem that
every node sees.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

LAUNCHERS = ("slurm", "local")


def plan_dir(profile: str) -> Path:
    """Where planning mode writes job specs: ``runs/<profile>/.plan``."""
    from persona.experiments import runs_root

    return runs_root(profile) / ".plan"


def read_specs(folder: str | Path) -> list[dict[str, Any]]:
    """The job specs in ``folder`` (sorted by run name)."""
    from persona.errors import PersonaInputError

    specs = []
    for path in sorted(Path(folder).glob("*.json")):
        spec = json.loads(path.read_text())
        missing = [k for k in ("method", "cfg", "data", "split", "profile", "run") if k not in spec]
        if missing:
            raise PersonaInputError(f"{path}: job spec lacks field(s) {missing}; expected one written by planning mode")
        specs.append(spec)
    return specs


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train (or load, when done) the run of one job spec; -> {run, train_seconds, host, pid}.

    Runs in the job's process: planning mode off, the spec's torch thread count."""
    import torch

    from persona import experiments as ex
    from persona.allocator import keep_freed_memory
    from persona.data.dataset import FrameDataset
    from persona.errors import PersonaInputError

    os.environ.pop(ex.PLAN_ENV, None)
    keep_freed_memory()  # a SLURM job's interpreter did not start through python -m persona
    torch.set_num_threads(int(spec.get("threads") or 1))
    train = FrameDataset(spec["data"], spec["split"], max_seconds=spec.get("max_seconds"))
    method, key, run_path = ex.run_identity(spec["method"], dict(spec["cfg"]), train, spec["profile"])
    if run_path.name != Path(spec["run"]).name:
        raise PersonaInputError(f"job spec {spec['run']}: run: this code computes the run {run_path.name} from the same "
                                "method, config and data; expected the same name (code or data changed since planning?)")
    run, seconds = ex.train_or_load(method, key, Path(spec["run"]), train)
    return {"run": str(run.root), "train_seconds": seconds, "host": socket.gethostname(), "pid": os.getpid()}


def make_executor(launcher: str, folder: str | Path, slurm_partition: str | None = None, gpus_per_job: int = 1,
                  cpus_per_job: int = 8, timeout_min: int = 72 * 60, mem_gb: int | None = None) -> Any:
    """A submitit executor: ``slurm`` (one task per job on ``gpus_per_job`` GPUs of ``slurm_partition``)
    or ``local`` (processes on this machine; no GPUs asked for)."""
    import submitit

    from persona.errors import PersonaInputError

    if launcher not in LAUNCHERS:
        raise PersonaInputError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if launcher == "slurm" and not slurm_partition:
        raise PersonaInputError("--slurm-partition: missing; expected the SLURM partition to submit the training jobs to")
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher)
    except RuntimeError as err:  # submitit: no srun on this machine
        raise PersonaInputError(f"--launcher {launcher}: {err} (run from a SLURM login node, or use --launcher local)") from None
    params: dict[str, Any] = {"timeout_min": int(timeout_min), "tasks_per_node": 1, "nodes": 1, "cpus_per_task": int(cpus_per_job),
                              "name": "persona"}
    if launcher == "slurm":
        params.update(slurm_partition=slurm_partition, gpus_per_node=int(gpus_per_job))
        if mem_gb:
            params["mem_gb"] = int(mem_gb)
    executor.update_parameters(**params)
    return executor


def submit_and_wait(specs: Sequence[dict[str, Any]], executor: Any, progress: bool = True) -> list[dict[str, Any]]:
    """Submit one job per spec, wait for all; -> their results. Raises naming every failed job and its logs."""
    from persona.errors import PersonaError

    jobs = [executor.submit(run_job, spec) for spec in specs]
    if progress:
        print(f"submitted {len(jobs)} job(s): {', '.join(str(j.job_id) for j in jobs)}", flush=True)
    results, failures = [], []
    for spec, job in zip(specs, jobs):
        try:
            results.append(job.result())
            if progress:
                print(f"done: {Path(spec['run']).name} ({results[-1]['train_seconds']:.0f} s on {results[-1]['host']})", flush=True)
        except Exception as err:  # noqa: BLE001 - a job's failure is reported with its logs, the others still waited for
            failures.append(f"{Path(spec['run']).name} (job {job.job_id}: {type(err).__name__}; logs {job.paths.stdout}, "
                            f"{job.paths.stderr})")
    if failures:
        raise PersonaError(f"{len(failures)} of {len(jobs)} training job(s) failed: " + "; ".join(failures))
    return results


def estimated_seconds(spec: dict[str, Any]) -> float:
    """Calibrated CPU seconds of a job spec's training: its steps x the method's calibrated seconds
    per step (:mod:`persona.budget`); 0 when the method or profile has no calibration."""
    from persona import budget
    from persona.errors import PersonaError

    try:
        config = budget.resolved_config(spec["method"], spec["cfg"])
        step = budget.seconds_per_step(budget.calibration_key(spec["method"], config), spec["profile"])
        return step * budget.own_steps(spec["method"], config)
    except (PersonaError, KeyError):
        return 0.0


def _pool_worker() -> None:
    """A pool process: one thread (the spec sets torch's), no progress bars (the pool prints a line per run)."""
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TQDM_DISABLE": "1"})


def train_pool(specs: Sequence[dict[str, Any]], workers: int, progress: bool = True) -> list[dict[str, Any]]:
    """Train the runs of ``specs`` on this machine, ``workers`` processes at a time, the longest
    first (:func:`estimated_seconds`), so the processes end close together; -> their
    :func:`run_job` results. Each run is trained exactly as a notebook would (same cache key, the
    spec's torch thread count, the run lock). Raises naming every run that failed."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from persona.errors import PersonaError

    order = sorted(specs, key=estimated_seconds, reverse=True)
    results, failures = [], []
    context = multiprocessing.get_context("spawn")  # no forked torch state; a fresh interpreter per worker
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context, initializer=_pool_worker) as pool:
        futures = {pool.submit(run_job, spec): Path(spec["run"]).name for spec in order}  # taken in this order
        for done, future in enumerate(as_completed(futures), 1):
            try:
                results.append(future.result())
            except Exception as err:  # noqa: BLE001 - reported with the others once all have finished
                failures.append(f"{futures[future]} ({type(err).__name__}: {err})")
                continue
            if progress:
                print(f"  trained {done}/{len(order)}: {futures[future]} ({results[-1]['train_seconds']:.0f} s)", flush=True)
    if failures:
        raise PersonaError(f"{len(failures)} of {len(order)} training run(s) failed: " + "; ".join(failures))
    return results


@contextmanager
def planning(folder: Path) -> Iterator[None]:
    """Planning mode (``$PERSONA_PLAN_DIR`` = ``folder``, emptied first: our own planning folder,
    specs of an earlier plan are stale) for the block, in this process and the ones it starts."""
    import shutil

    from persona.experiments import PLAN_ENV

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    saved = os.environ.get(PLAN_ENV)
    os.environ[PLAN_ENV] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(PLAN_ENV, None)
        else:
            os.environ[PLAN_ENV] = saved


def plan_side_by_side(names: Sequence[str], profile: str, jobs: int, folder: Path,
                      extra: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Planning mode for the notebooks ``names``, ``jobs`` at a time, quietly; -> (the job specs
    of the runs they would train next and that are not done, one per run however many notebooks
    ask for it; the :class:`persona.notebooks.NotebookResult` of those that ran to the end, having
    every run they need: a complete run, its executed copy in ``folder/notebooks``). A notebook
    stopped by something else than a missing run is left to the real run to report."""
    from persona import notebooks

    with planning(folder):  # the notebook processes inherit it
        finished, _ = notebooks.run_parallel(list(names), profile, jobs, extra, quiet=True)
    return [s for s in read_specs(folder) if not (Path(s["run"]) / "done.json").is_file()], finished


def train_ahead(names: Sequence[str], profile: str, jobs: int, extra: dict[str, Any] | None = None,
                max_rounds: int = 4, progress: bool = True) -> tuple[int, list[Any]]:
    """Train every run the notebooks ``names`` need before they run, ``jobs`` runs at a time
    (:func:`train_pool`), so every core stays busy until the last run instead of idling once the
    shorter notebook of a pair is done; the notebooks then load the runs and only evaluate.

    A round plans the notebooks side by side (they stop at their first table that lacks runs),
    then trains those runs; the next round finds the tables after them. A notebook that runs to its
    end while planning has every run it needs: that was its real run (planning changes nothing
    else), so its executed copy goes where a normal run puts it and it is not planned again.
    Stops when a round finds no new run (or after ``max_rounds``). Returns (the number of runs
    trained, the notebooks completed). The tables do not change: the runs are the ones the
    notebooks would train, with the same thread count."""
    import shutil

    from persona import notebooks

    folder = plan_dir(profile).with_name(".plan-ahead")
    seen: set[str] = set()
    completed: list[Any] = []
    for round_ in range(1, max_rounds + 1):
        pending = [n for n in names if n not in {r.name for r in completed}]
        if not pending:
            break
        specs, finished = plan_side_by_side(pending, profile, jobs, folder, extra)
        for result in finished:
            target = notebooks.executed_dir(profile, result.name, extra) / result.output.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(result.output), target)
            completed.append(notebooks.NotebookResult(result.name, result.seconds, target))
            if progress:
                print(f"  {result.name}: complete while planning ({result.seconds:.0f} s) -> {target}", flush=True)
        specs = [s for s in specs if s["run"] not in seen]
        if not specs:
            break
        if progress:
            minutes = sum(map(estimated_seconds, specs)) / 60
            print(f"training ahead (round {round_}): {len(specs)} run(s), {jobs} at a time, about {minutes:.0f} "
                  "CPU-minutes by the calibration", flush=True)
        train_pool(specs, jobs, progress)
        seen.update(s["run"] for s in specs)
    return len(seen), completed


def plan(profile: str, only: str | None = None, folder: Path | None = None) -> list[dict[str, Any]]:
    """Step 1: run the notebooks in planning mode; -> the job specs of every run not yet done."""
    from persona import notebooks

    folder = Path(folder or plan_dir(profile))
    with planning(folder):
        for name in notebooks.resolve(only):
            try:
                notebooks.run_notebook(name, profile, output_dir=folder / "notebooks", progress=False)
            except notebooks.NotebookFailed as err:
                if "RunDeferred" not in str(err) and "RunsDeferred" not in str(err):
                    raise
    return read_specs(folder)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m persona cluster --profile paper --launcher slurm --slurm-partition P --gpus-per-job 1``."""
    from persona import notebooks
    from persona.profiles import PROFILE_NAMES

    from persona import cli

    p = cli.parser("cluster", "train every run of the notebooks as cluster jobs, then run the notebooks on the cache")
    p.add_argument("--profile", default="paper", choices=PROFILE_NAMES, help="parameter file notebooks/params/<profile>.yaml")
    p.add_argument("--launcher", default="slurm", choices=LAUNCHERS, help="slurm, or local (one process per job, for tests)")
    p.add_argument("--slurm-partition", help="SLURM partition of the training jobs")
    p.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job (SLURM)")
    p.add_argument("--cpus-per-job", type=int, default=8, help="CPU cores per job (data loading)")
    p.add_argument("--timeout-min", type=int, default=72 * 60, help="wall-clock limit of one job, minutes")
    p.add_argument("--mem-gb", type=int, help="memory per job (SLURM)")
    p.add_argument("--only", help="one notebook (number or name)")
    p.add_argument("--plan-only", action="store_true", help="write the job specs and stop")
    args = p.parse_args(list(argv) if argv is not None else None)

    specs = plan(args.profile, args.only)
    print(f"{len(specs)} run(s) to train; specs in {plan_dir(args.profile)}", flush=True)
    if args.plan_only:
        return 0
    if specs:
        executor = make_executor(args.launcher, plan_dir(args.profile).parent / ".submitit", args.slurm_partition,
                                 args.gpus_per_job, args.cpus_per_job, args.timeout_min, args.mem_gb)
        submit_and_wait(specs, executor)
    argv_nb = ["--profile", args.profile, "--jobs", "1"] + (["--only", args.only] if args.only else [])
    return notebooks.main(argv_nb)


if __name__ == "__main__":
    sys.exit(main())
