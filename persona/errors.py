"""The one exception type for mistakes a user can fix, and how the CLI shows them.

Raise :class:`PersonaError` (or a subclass) with a one-line message that names the file and the
field, what was found and what was expected, e.g.
``PersonaError("data/id00/transforms_train.json: frames[3].img_id: expected an integer, got 'abc'")``.
The command line (``python -m persona``) prints such errors as one line and exits 2; ``--debug``
(or ``PERSONA_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations


class PersonaError(Exception):
    """A problem with the user's input, files or settings (not a bug in persona)."""


class PersonaInputError(PersonaError, ValueError):
    """A value read from a file or a flag is missing, malformed or out of its allowed range."""


class PersonaFileError(PersonaError, FileNotFoundError):
    """A file or folder that persona needs is missing or unreadable."""


# ---------------------------------------------------------------------------------------------
# Checks of single values read from a file or a flag; ``where`` names both ("file.json: field").


def check_int(value: object, where: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as int if it is an integer (not a bool, not 2.5, not "3") within [lo, hi]."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PersonaInputError(f"{where}: expected an integer, got {show(value)}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise PersonaInputError(f"{where}: {value} is out of range; expected {_range(lo, hi)}")
    return value


def check_number(value: object, where: str, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False) -> float:
    """``value`` as float if it is a finite real number (not a bool or a string) within [lo, hi]
    (``lo_open``: strictly above ``lo``)."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PersonaInputError(f"{where}: expected a number, got {show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise PersonaInputError(f"{where}: {value} is not finite; expected a finite number")
    if (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and value > hi):
        raise PersonaInputError(f"{where}: {value:g} is out of range; expected {_range(lo, hi, lo_open)}")
    return value


def check_bool(value: object, where: str) -> bool:
    """``value`` if it is a real bool (JSON/YAML true/false); the string "false" is refused, not taken as true."""
    if type(value).__name__ not in ("bool", "bool_"):  # bool or numpy.bool_
        raise PersonaInputError(f"{where}: expected true or false, got {show(value)}")
    return bool(value)


def show(value: object) -> str:
    """A short repr for messages: depth, length and string size capped (a crafted 100000-deep list
    prints as ``[[[[[[...]]]]]]``, not a RecursionError)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 60
    return r.repr(value)


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{'>' if lo_open else '>='} {lo:g} and <= {hi:g}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"<= {hi:g}"


def flag_int(lo: int, hi: int | None = None):
    """An argparse ``type=`` for an integer flag within [lo, hi]: ``--batch 0`` is a usage error
    (one line, exit 2), not a crash later."""
    def parse(text: str) -> int:
        import argparse

        try:
            return check_int(int(text), "value", lo, hi)
        except (ValueError, PersonaInputError) as err:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer {_range(lo, hi)}") from err

    parse.__name__ = "integer"
    return parse


def flag_number(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse ``type=`` for a finite number flag within [lo, hi] (``nan``/``inf`` refused)."""
    def parse(text: str) -> float:
        import argparse

        try:
            return check_number(float(text), "value", lo, hi, lo_open)
        except (ValueError, PersonaInputError) as err:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number"
                                             f"{' ' + _range(lo, hi, lo_open) if lo is not None or hi is not None else ''}") from err

    parse.__name__ = "number"
    return parse
