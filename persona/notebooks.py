"""Run the ordered, papermill-parameterised notebooks: the one runner used by ``reproduce.sh``
and by the tests, so the command line and CI execute notebooks the same way.

Parameters come from ``notebooks/params/<profile>.yaml``::

    profile: default          # every notebook receives these top-level keys ...
    seed: 0
    notebooks:                # ... and, per notebook, its own overrides
      03_audio_reenactment: {train_seconds: 20}

Each notebook takes these values itself (:func:`persona.params.resolve` in its first code cell,
checked against :data:`persona.params.SCHEMA`); the runner injects only the profile and the
``-p NAME=VALUE`` parameters given on the command line. Executed copies go to
``notebooks/executed/<profile>/`` (``notebooks/executed/reruns/<name>/`` for a rerun with changed
parameters; kept for inspection when a cell fails).
The notebooks stored in ``notebooks/`` carry the outputs of a smoke run, which nbval compares
against (``pytest --nbval-lax notebooks/``); :func:`refresh_stored_outputs` rewrites them.

With ``--jobs N`` (default: 2 when the machine has 2 cores or more; 1 on a profile whose runs train
on a GPU, ``persona.profiles.USES_GPU``: paper and paper-dry), the first notebook (data)
runs alone, then every run the experiment notebooks will train is trained first, N runs at a
time, the longest first (:func:`persona.cluster.train_ahead`; ``--no-train-ahead`` skips it), so
no core idles while the last notebook of a pair still trains; then the experiment notebooks run
N at a time (the profile's ``start_order`` first) and mostly evaluate, each in its own process
with one torch thread (two one-thread processes use 2 cores better than one two-thread process
on these small networks); then the last notebook (the explorer) runs alone. Runs that two
notebooks share are trained once: :func:`persona.experiments.trained` locks
each run. Whatever ``--jobs`` is, every run is trained and evaluated with the profile's fixed
torch thread count (``persona.profiles.TORCH_THREADS``: 1 for smoke and default), so the tables
do not depend on ``--jobs``; the count is in each run's cache key and in the tables' provenance.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from persona import params as schema
from persona.errors import PersonaError, PersonaFileError, PersonaInputError
from persona.profiles import PROFILE_NAMES, check_profile, default_jobs



def find_root(start: Path | None = None) -> Path:
    """The checkout whose data, runs, tables and figures are read and written: ``$PERSONA_ROOT``
    when set; else the nearest folder at or above the current directory that holds
    ``notebooks/params/``; else the checkout persona is imported from (an editable install);
    else the current directory. So two checkouts sharing one environment never write into each
    other's outputs."""
    env = os.environ.get("PERSONA_ROOT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks" / "params").is_dir():
            return folder
    package_parent = Path(__file__).resolve().parent.parent
    return package_parent if (package_parent / "notebooks" / "params").is_dir() else here


REPO_ROOT = find_root()
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOK_DIR / "params"


# The kernel talks to this process over localhost TCP; ipykernel logs a warning that this is
# unencrypted at every start. Only its own log is quieted (errors still show); the notebooks'
# output, warnings included, is untouched.
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]


class NotebookFailed(RuntimeError):
    """A notebook raised; ``cell`` says which cell (papermill's message), ``output`` where it is."""

    def __init__(self, name: str, output: Path, message: str):
        super().__init__(f"notebook {name} failed; executed copy kept at {output}\n{message}")
        self.name, self.output = name, output


@dataclass
class NotebookResult:
    name: str
    seconds: float
    output: Path


def notebook_names(notebook_dir: Path = NOTEBOOK_DIR) -> list[str]:
    """The ordered notebooks: ``NN_name.ipynb`` files, by number."""
    return sorted(p.stem for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def resolve(only: str | None, notebook_dir: Path = NOTEBOOK_DIR) -> list[str]:
    """All notebooks, or the one whose number (``03``) or full name is ``only``."""
    names = notebook_names(notebook_dir)
    if only is None:
        return names
    chosen = [n for n in names if n == only or n.split("_", 1)[0] == only]
    if not chosen:
        raise PersonaInputError(f"unknown notebook {only!r}; expected a number or name from: {', '.join(names)}")
    return chosen


def _params_file(profile: str, params_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(path, contents) of ``params_dir/<profile>.yaml``, with a clear error when missing or malformed."""
    check_profile(profile)
    path = params_dir / f"{profile}.yaml"
    if not path.is_file():
        raise PersonaFileError(f"{path}: parameter file of profile {profile!r} is missing")
    return path, read_params_yaml(path)


def read_params_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a notebook parameter file, every parameter checked against
    :data:`persona.params.SCHEMA` (the one check: a flag such as ``force: "false"``, a string Python
    would take as true, is refused there). Malformed YAML, a non-mapping or a bad value raise
    :class:`persona.errors.PersonaInputError` with one line naming the file and the field
    (``notebooks.<name>: <field>`` for per-notebook overrides)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PersonaInputError(f"{path}: not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError as err:
        raise PersonaInputError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    if not isinstance(data, dict):
        raise PersonaInputError(f"{path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    per_notebook = data.get("notebooks") or {}
    if not isinstance(per_notebook, dict):
        raise PersonaInputError(f"{path}: notebooks: expected a mapping of notebook names to parameters")
    for name, section in per_notebook.items():
        if section is not None and not isinstance(section, dict):
            raise PersonaInputError(f"{path}: notebooks.{name}: expected a mapping of parameter names to values")
    checked = schema.check_all({k: v for k, v in data.items() if k not in FILE_KEYS}, str(path))
    checked["notebooks"] = {name: schema.check_all(section or {}, f"{path}: notebooks.{name}")
                            for name, section in per_notebook.items()}
    if "start_order" in data:
        checked["start_order"] = data["start_order"]
    return checked


FILE_KEYS = ("notebooks", "start_order")  # keys of a parameter file that are not notebook parameters


def load_params(profile: str, name: str | None = None, params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    """Top-level parameters of ``profile`` merged with the overrides for notebook ``name``, each
    checked against :data:`persona.params.SCHEMA` (one-line :class:`PersonaInputError` naming the
    file and the parameter otherwise)."""
    path, data = _params_file(profile, params_dir)  # checked there
    per_notebook = data.pop("notebooks")
    data.pop("start_order", None)  # read by start_order(), not a notebook parameter
    params = data
    if params.get("profile", profile) != profile:
        raise PersonaInputError(f"{path}: profile: expected {profile!r} (the file's name), got {params['profile']!r}")
    params["profile"] = profile
    params.update(per_notebook.get(name, {}) if name else {})
    return params


def parameter_overrides(assignments: list[str], names: list[str]) -> dict[str, Any]:
    """``-p NAME=VALUE`` options -> {name: checked value}; a name none of ``names`` (the notebooks
    to run) takes is refused."""
    overrides = dict(schema.parse_assignment(a) for a in assignments)
    for key in overrides:
        if key == "profile":
            raise PersonaInputError("-p profile: use --profile to choose the profile")
        if not any(key in schema.names_for(n) for n in names):
            raise PersonaInputError(f"-p {key}: none of the notebooks to run ({', '.join(names)}) takes it; "
                                    f"{key} belongs to {', '.join(schema.SCHEMA[key].notebooks)}")
    return overrides


def executed_dir(profile: str, name: str, extra: dict[str, Any] | None = None, params_dir: Path | None = None) -> Path:
    """Where the executed copy of notebook ``name`` goes: ``notebooks/executed/<profile>/``, or
    ``notebooks/executed/reruns/<rerun name>/`` when ``extra`` changes the profile's parameters."""
    from persona.experiments import PLAN_ENV

    if os.environ.get(PLAN_ENV):  # planning mode (persona.cluster): its stopped copies stay with the plan
        return Path(os.environ[PLAN_ENV]) / "notebooks"
    base = load_params(profile, name, params_dir or PARAMS_DIR)
    own = {k: v for k, v in (extra or {}).items() if k in schema.names_for(name)}
    rerun = schema.rerun_name(profile, {k: v for k, v in own.items() if base.get(k) != v})
    return NOTEBOOK_DIR / "executed" / ("reruns/" + rerun if rerun else profile)


def run_notebook(name: str, profile: str, output_dir: Path | None = None, extra: dict[str, Any] | None = None,
                 notebook_dir: Path = NOTEBOOK_DIR, progress: bool = True) -> NotebookResult:
    """Execute ``notebook_dir/<name>.ipynb`` with papermill under the profile's parameters.

    Runs with the repository root as working directory. Raises :class:`NotebookFailed` naming the
    failing cell (papermill's error) and keeps the executed copy.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    output_dir = output_dir or executed_dir(profile, name, extra)
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / f"{name}.ipynb"
    # the notebook takes the profile's values itself (persona.params.resolve); inject only the
    # profile and the parameters given on the command line that this notebook takes
    params = {"profile": profile, **{k: v for k, v in (extra or {}).items() if k in schema.names_for(name)}}
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(notebook_dir / f"{name}.ipynb"), str(output), parameters=params,
                            cwd=str(REPO_ROOT), progress_bar=progress, kernel_name="python3",
                            extra_arguments=QUIET_KERNEL)
    except PapermillExecutionError as err:
        message = f"cell {err.exec_count} ({err.ename}): {err.evalue}"
        raise NotebookFailed(name, output, message) from None
    return NotebookResult(name, time.perf_counter() - start, output)


def refresh_stored_outputs(names: list[str] | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> None:
    """Execute the stored notebooks in place with their own (smoke) parameters cell, so that
    nbval has fresh reference outputs. Development tool; not part of reproduce.sh."""
    import nbclient
    import nbformat

    for name in names or notebook_names(notebook_dir):
        path = notebook_dir / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", extra_arguments=QUIET_KERNEL,
                                resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
        nbformat.write(nb, path)
        print(f"refreshed {path.relative_to(REPO_ROOT)}")


def start_order(profile: str, params_dir: Path = PARAMS_DIR) -> list[str]:
    """The profile's ``start_order``: notebook numbers to start first when notebooks run side by
    side (the longest first, so the two lanes end together); empty when the profile has none."""
    path, data = _params_file(profile, params_dir)
    order = data.get("start_order") or []
    if not isinstance(order, list):
        raise PersonaInputError(f"{path}: start_order must be a list of notebook numbers, got {order!r}")
    return [str(n).zfill(2) for n in order]


def schedule(names: list[str], order: list[str] | None = None) -> list[list[str]]:
    """Stages of notebooks that may run side by side: the first (it builds the data) alone, the
    middle ones together (those named in ``order`` first, in that order), the explorer (it explores
    their runs; the notebook named ``*explore*``, else the last) alone at the end."""
    if len(names) <= 2:
        return [[n] for n in names]
    last = [n for n in names[1:] if "explore" in n][:1] or [names[-1]]
    middle = [n for n in names[1:] if n not in last]
    rank = {number: i for i, number in enumerate(order or [])}
    middle = sorted(middle, key=lambda n: (rank.get(n.split("_", 1)[0], len(rank)), n))
    return [[names[0]], middle, last]


def notebook_command(name: str, profile: str, extra: dict[str, Any] | None = None) -> list[str]:
    """The command that runs one notebook in its own process (``extra``: its ``-p`` parameters)."""
    options = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
               for k, v in (extra or {}).items() if k in schema.names_for(name)]
    return ([sys.executable, "-m", "persona", "notebooks", "--profile", profile, "--only", name, "--jobs", "1"]
            + [a for option in options for a in ("-p", option)])


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run_parallel(names: list[str], profile: str, jobs: int, extra: dict[str, Any] | None = None,
                 quiet: bool = False) -> tuple[list[NotebookResult], list[str]]:
    """Run ``names`` ``jobs`` at a time, each as ``python -m persona notebooks --only NAME`` with
    one thread; output lines are prefixed with the notebook's number (``quiet``: not printed, only
    the last lines of a failure returned). Returns (results of those that finished, error messages
    of those that failed); a failure does not stop the others."""
    import subprocess
    import threading
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()

    def one(name: str) -> NotebookResult | str:
        tag = name.split("_", 1)[0]
        env = {**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"}
        start = time.perf_counter()
        command = notebook_command(name, profile, extra) if extra else notebook_command(name, profile)
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        tail: deque[str] = deque(maxlen=20)
        for line in proc.stdout:
            tail.append(line.rstrip())
            if not quiet:
                with lock:
                    print(f"[{tag}] {line.rstrip()}", flush=True)
        if proc.wait() != 0:
            return f"notebook {name} failed:\n" + "\n".join(tail)
        return NotebookResult(name, time.perf_counter() - start, executed_dir(profile, name, extra) / f"{name}.ipynb")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(one, names))
    return ([o for o in outcomes if isinstance(o, NotebookResult)], [o for o in outcomes if isinstance(o, str)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m persona notebooks", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run the notebooks in order under a profile's parameters (notebooks/params/<profile>.yaml).",
        epilog="example: python -m persona notebooks --only 04 -p ks='[5,20]'  (a rerun with changed parameters "
               "writes tables/reruns/<profile>-<changes>/ and figures/reruns/..., never the README)")
    parser.add_argument("--profile", default="default", choices=PROFILE_NAMES, help="sizes of data, models and steps")
    parser.add_argument("--only", default=None, help="run one notebook, by number (03) or name")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the profile (YAML value: ks=[5,20], force=true, test_frames=null); "
                             "repeatable; names: " + ", ".join(n for n in schema.SCHEMA if n != "profile"))
    parser.add_argument("--jobs", type=int, default=None,
                        help="experiment notebooks run side by side, one thread each (None: 1 on the GPU profiles paper and "
                             "paper-dry, else 2 on 2+ cores; 1 = in order)")
    parser.add_argument("--no-train-ahead", action="store_true",
                        help="with --jobs 2+: let each notebook train its own runs (default: every run of the side-by-side "
                             "notebooks is trained first, --jobs runs at a time, so no core idles; same tables)")
    parser.add_argument("--refresh-stored", action="store_true", help="re-execute the stored notebooks in place (smoke outputs for nbval)")
    args = parser.parse_args(argv)
    try:
        check_profile(args.profile)
        names = resolve(args.only)
        extra = parameter_overrides(args.param, names)
        for name in names:  # the profile's file, checked before anything runs
            load_params(args.profile, name)
    except (ValueError, PersonaError) as err:
        print(f"persona notebooks: {err}", file=sys.stderr)
        return 2
    if args.refresh_stored:
        refresh_stored_outputs(names)
        return 0
    jobs = args.jobs if args.jobs is not None else default_jobs(args.profile)
    if jobs < 1:
        print("persona notebooks: --jobs must be 1 or more", file=sys.stderr)
        return 2
    changed = f", parameters {', '.join(f'{k}={v}' for k, v in extra.items())}" if extra else ""
    results: list[NotebookResult] = []
    start = time.perf_counter()
    done = 0
    for stage in (schedule(names, start_order(args.profile)) if jobs > 1 else [[n] for n in names]):
        # one notebook asked for with --jobs 2+ (e.g. --only 02 -p train_seeds=...): its runs still train --jobs at a time
        if len(stage) > 1 or (len(names) == 1 and args.jobs is not None and args.jobs > 1):
            print(f"[{done + 1}-{done + len(stage)}/{len(names)}] {', '.join(stage)} (profile {args.profile}{changed}, "
                  f"{jobs} at a time, one thread each)", flush=True)
            if not args.no_train_ahead and not _forced(args.profile, stage, extra):
                try:
                    from persona.cluster import train_ahead

                    _, completed = train_ahead(stage, args.profile, jobs, extra)
                except PersonaError as err:
                    print(f"FAILED: {err}", file=sys.stderr)
                    _print_timings(results, time.perf_counter() - start)
                    return 1
                results += completed
            else:
                completed = []
            rest = [n for n in stage if n not in {r.name for r in completed}]
            finished, errors = run_parallel(rest, args.profile, jobs, extra)
            results += finished
            if errors:
                for error in errors:
                    print(f"FAILED: {error}", file=sys.stderr)
                _print_timings(results, time.perf_counter() - start)
                return 1
        else:
            name = stage[0]
            print(f"[{done + 1}/{len(names)}] {name} (profile {args.profile}{changed})", flush=True)
            try:
                results.append(run_notebook(name, args.profile, extra=extra, progress=sys.stderr.isatty()))
            except NotebookFailed as err:
                print(f"FAILED: {err}", file=sys.stderr)
                _print_timings(results, time.perf_counter() - start)
                return 1
            print(f"      done in {results[-1].seconds:.1f} s -> {results[-1].output}", flush=True)
        done += len(stage)
    _print_timings(results, time.perf_counter() - start)
    return 0


def _forced(profile: str, names: list[str], extra: dict[str, Any] | None) -> bool:
    """Whether any of ``names`` runs with ``force`` (it retrains its runs itself: nothing to train ahead)."""
    return any(bool({**load_params(profile, n), **(extra or {})}.get("force")) for n in names)


def _print_timings(results: list[NotebookResult], wall: float | None = None) -> None:
    if len(results) < 2:  # one notebook: its "done in" line says it all
        return
    print("\ntiming summary (wall time of each notebook; side-by-side notebooks overlap)")
    for r in results:
        print(f"  {r.name:<32} {r.seconds:8.1f} s")
    print(f"  {'total (wall)':<32} {wall if wall is not None else sum(r.seconds for r in results):8.1f} s")


if __name__ == "__main__":
    sys.exit(main())
