"""Error types. Anything a user can fix by changing their input is an :class:`InputError`:
the CLI prints its message on one line and exits with code 2 (a traceback only with ``--debug``)."""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any


class CtrlensError(Exception):
    """Base class of ctrlens' own errors."""


class InputError(CtrlensError, ValueError):
    """Bad input: a file, column, field, day, model or option that is not what was expected.

    The message names the thing (file / column / row / field / day) and what was expected.
    """


def read_json(path: "str | PathLike[str]", error: type[InputError] = InputError, missing: str = "file not found") -> Any:
    """The JSON document in the file ``path``; ``error`` (an :class:`InputError` subclass) naming the
    file when it does not exist (``"<path>: <missing>"``) or is not valid JSON."""
    p = Path(path)
    if not p.exists():
        raise error(f"{p}: {missing}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{p}: not valid JSON ({e})") from None
