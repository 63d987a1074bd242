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
