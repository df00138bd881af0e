"""The CLI's exit-code contract: 0 ok, a command's own typer.Exit(code) kept, 2 for bad input/usage, one line."""

import pytest
import typer

from ctrlens.cli import app, main
from ctrlens.errors import InputError


@app.command("zz-test-exit", hidden=True)
def _exit_with(code: int = 0) -> None:
    raise typer.Exit(code)


@app.command("zz-test-bad-input", hidden=True)
def _bad_input() -> None:
    raise InputError("day 2026-01-09: file x.parquet: column 'price': expected float, got string")


def run(argv):
    try:
        main(argv)
    except SystemExit as e:
        return e.code
    return 0


def test_command_exit_codes_pass_through():
    assert run(["zz-test-exit", "--code", "0"]) == 0
    assert run(["zz-test-exit", "--code", "1"]) == 1
    assert run(["zz-test-exit", "--code", "3"]) == 3


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert run(["zz-test-bad-input"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ctrlens: error: day 2026-01-09: file x.parquet: column 'price': expected float, got string"]


def test_usage_errors_exit_2(capsys):
    assert run(["zz-test-exit", "--code", "notanint"]) == 2
    assert run(["no-such-command"]) == 2
    assert "usage error" in capsys.readouterr().err


def test_debug_shows_the_traceback():
    with pytest.raises(InputError):
        main(["--debug", "zz-test-bad-input"])
