"""Command line: ``python -m persona VERB [SUBVERB] [options]``.

Each verb lives in the module that owns it; this file only dispatches, so ``--help`` of a verb
is that module's own argparse help.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys

# verb (or "verb subverb") -> ("module", "function taking argv list and returning an exit code")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data build": ("persona.data.cli", "main_build", "build the synthetic benchmark (videos, audio, novel views)"),
    "data figure": ("persona.data.cli", "main_figure", "figure of identities, expressions and novel-view ground truth"),
    "prior train": ("persona.eg3d.train", "main", "train the tiny EG3D prior on the synthetic corpus"),
    "prior sample": ("persona.eg3d.train", "main_sample", "figure of prior samples at 5 yaw angles"),
    "syncnet train": ("persona.syncnet", "main_train", "train the synthetic lip-sync expert"),
    "preprocess": ("persona.preprocess.pipeline", "main", "any talking-head video (or frames) -> a training folder"),
    "train": ("persona.verbs", "main_train", "fit a method (ours or a baseline) on a video"),
    "render": ("persona.verbs", "main_render", "render a trained run (test frames, novel views, orbit video)"),
    "eval": ("persona.evaluate", "main_eval", "metrics of a trained run on the test split"),
    "diagnose": ("persona.diagnostics", "main", "ours: mouth PSNR vs the static floor and expression following against steps"),
    "reach": ("persona.subspace_reach", "main", "ours 3DMM: can its learned subspace render an open mouth? (inversions into its generator)"),
    "bench generator": ("persona.eg3d.bench", "main", "generator speed (ms/image, GFLOP/s)"),
    "bench official": ("persona.eg3d.bench_official", "main", "ffhq512: persona vs your checkout of the official EG3D code, same weights"),
    "bench methods": ("persona.bench", "main", "every method's ms per training step and per rendered frame, % of matmul peak"),
    "bench budget": ("persona.budget", "main", "calibrate equal budgets: CPU ms per training step of every method -> assets/budget_calibration.json"),
    "bench renderer": ("persona.data.bench", "main", "synthetic renderer frames per second"),
    "bench preprocess": ("persona.preprocess.bench", "main", "persona preprocess frames per second on one core"),
    "bench cameras": ("persona.preprocess.accuracy", "main", "persona preprocess camera error on synthetic sweeps with known cameras"),
    "bench end2end": ("persona.preprocess.end_to_end", "main", "ours trained on persona preprocess of a synthetic mp4 vs on its ground truth"),
    "bench gpu": ("persona.gpu_bench", "main", "ours' training step and the generator at paper size in fp32/tf32/bf16, peak memory, vs the official EG3D"),
    "bench paper": ("persona.paper_bench", "main", "paper-size dry run: ms/step per method, projected paper-profile hours"),
    "notebooks": ("persona.notebooks", "main", "run the notebooks in order (what reproduce.sh calls)"),
    "cluster": ("persona.cluster", "main", "train the notebooks' runs as SLURM (or local) jobs, then run the notebooks"),
    "runs": ("persona.runlist", "main", "list trained runs: method, modality, k, identity, steps, final PSNR"),
}
GROUPS = sorted({name.split()[0] for name in COMMANDS if " " in name})


def _usage() -> str:
    width = max(len(k) for k in COMMANDS)
    lines = ["usage: python -m persona COMMAND [options]   (COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _group_usage(group: str) -> str:
    verbs = {name: help_ for name, (_, _, help_) in COMMANDS.items() if name.split()[0] == group and " " in name}
    width = max(len(k) for k in verbs)
    lines = [f"usage: python -m persona {group} VERB [options]   (VERB --help for its options)", "", f"{group} verbs:"]
    return "\n".join(lines + [f"  {name:<{width}}  {help_}" for name, help_ in verbs.items()])


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("PERSONA_DEBUG", "") not in ("", "0")


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    for words in (2, 1):
        key = " ".join(argv[:words])
        if len(argv) >= words and key in COMMANDS:
            module_name, function, _ = COMMANDS[key]
            module = importlib.import_module(module_name)
            return int(getattr(module, function)(argv[words:]) or 0)
    if argv[0] in GROUPS:  # a verb group alone, with --help, or with an unknown verb: list its verbs
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            print(_group_usage(argv[0]))
            return 0
        print(f"persona: unknown {argv[0]} verb {argv[1]!r}\n\n{_group_usage(argv[0])}", file=sys.stderr)
        return 2
    print(f"persona: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return 2


RESUMING_COMMANDS = ("train", "prior train", "notebooks")  # rerunning these continues where they stopped


def interrupted_message(argv: list[str]) -> str:
    """What Ctrl-C prints: where the newest checkpoint of the run being trained is (if any) and
    the exact command that resumes: the same one less ``--force`` (and less a notebook parameter
    ``-p force=...``, which would retrain from scratch); ``prior train`` gets ``--resume``."""
    from persona.runs import training_run

    words: list[str] = []
    for word in argv:
        if word == "--force" or (word.replace(" ", "").startswith("force=") and words and words[-1] in ("-p", "--param")):
            if word != "--force":
                words.pop()  # its -p
            continue
        words.append(word)
    if " ".join(words[:2]) == "prior train" and "--resume" not in words:
        words.append("--resume")
    command = "python -m persona " + shlex.join(words)
    lines = ["persona: interrupted (Ctrl-C); files written so far are complete (each is written atomically)"]
    run = training_run()
    if run is not None:
        latest = run.latest_checkpoint()
        lines.append(f"last checkpoint: {latest[1]} (step {latest[0]})" if latest is not None
                     else f"no checkpoint yet in {run.root}: a rerun starts from step 0")
    resumes = any(" ".join(words[:len(c.split())]) == c for c in RESUMING_COMMANDS)
    lines.append(f"{'resume with' if resumes else 'run again with'}: {command}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A :class:`persona.errors.PersonaError` (a user's mistake: bad file, field or
    flag) prints one line and exits 2; ``--debug`` or ``PERSONA_DEBUG=1`` shows the traceback.
    Ctrl-C prints where the last checkpoint is and how to resume (no traceback) and exits 130."""
    from persona.errors import PersonaError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    from persona.allocator import keep_freed_memory

    keep_freed_memory()  # glibc keeps freed blocks for the next step (issue #16); PERSONA_MALLOC=system opts out
    try:
        return _dispatch(argv)
    except PersonaError as error:
        if debug:
            raise
        print(f"persona: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("\n" + interrupted_message(argv), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
