"""What every verb's argparse shares: defaults shown in ``--help``, one spelling per idea
(``--steps``, ``--batch-size``, ``--device``, ``--threads``; old spellings kept as deprecated
aliases that warn), and the runtime those options set up."""

from __future__ import annotations

import argparse
import sys
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help, except for None and False (nothing to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action) or ""


def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser for ``python -m persona <prog>`` with :class:`HelpFormatter`."""
    return argparse.ArgumentParser(prog=f"python -m persona {prog}", description=description, epilog=epilog,
                                   formatter_class=HelpFormatter)


def deprecated_alias(new: str) -> type[argparse.Action]:
    """An action for an old option spelling: stores like ``new`` and warns on stderr."""

    class Deprecated(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option_string: str | None = None) -> None:
            print(f"{parser.prog}: warning: {option_string} is deprecated; use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)

    return Deprecated


def add_steps(p: argparse.ArgumentParser, help: str, old: str | None = None, default: int | None = None) -> None:
    """``--steps N`` (and ``old`` as a deprecated alias)."""
    p.add_argument("--steps", type=int, default=default, help=help)
    if old:
        p.add_argument(old, dest="steps", type=int, action=deprecated_alias("--steps"), help=argparse.SUPPRESS)


def add_batch_size(p: argparse.ArgumentParser, help: str, default: int | None = None, old: str | None = "--batch") -> None:
    """``--batch-size N`` (and ``old`` as a deprecated alias)."""
    p.add_argument("--batch-size", type=int, default=default, help=help)
    if old:
        p.add_argument(old, dest="batch_size", type=int, action=deprecated_alias("--batch-size"), help=argparse.SUPPRESS)


def add_runtime(p: argparse.ArgumentParser, device_help: str = "torch device: cpu, cuda, cuda:1 ... (None: the run's or profile's)") -> None:
    """``--device`` and ``--threads``."""
    p.add_argument("--device", default=None, help=device_help)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (None: torch's choice)")


def apply_runtime(args: argparse.Namespace) -> None:
    """Set torch's thread count from ``--threads``; refuse a device torch cannot use, in one line."""
    from persona.errors import PersonaInputError

    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise PersonaInputError(f"--threads: expected 1 or more, got {threads}")
        import torch

        torch.set_num_threads(threads)
    device = getattr(args, "device", None)
    if device and device not in ("cpu", "auto"):
        import torch

        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise PersonaInputError(f"--device: expected cpu, cuda or cuda:N, got {device!r}") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise PersonaInputError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
