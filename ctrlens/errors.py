"""Error types. Anything a user can fix by changing their input is an :class:`InputError`:
the CLI prints its message on one line and exits with code 2 (a traceback only with ``--debug``)."""

from __future__ import annotations


class CtrlensError(Exception):
    """Base class of ctrlens' own errors."""


class InputError(CtrlensError, ValueError):
    """Bad input: a file, column, field, day, model or option that is not what was expected.

    The message names the thing (file / column / row / field / day) and what was expected.
    """
