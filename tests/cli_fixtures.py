"""Run ``ctrlens ARGS`` in this process (no interpreter start-up) and read what it returned."""

from __future__ import annotations

from typing import Any


def exit_code(argv: list[Any]) -> int:
    """``ctrlens ARGV``'s exit code (arguments turned into strings, so paths can be passed)."""
    from ctrlens.cli import main

    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def run_cli(argv: list[Any], capsys: Any) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``ctrlens ARGV``, output captured by pytest's ``capsys``."""
    code = exit_code(argv)
    out, err = capsys.readouterr()
    return code, out, err
