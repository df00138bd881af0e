"""The CLI's exit-code contract: 0 ok, a command's own typer.Exit(code) kept, 2 for bad input/usage, one line."""

import pytest
import typer

from ctrlens.cli import app, main
from ctrlens.errors import InputError
from cli_fixtures import exit_code as run


@app.command("zz-test-exit", hidden=True)
def _exit_with(code: int = 0) -> None:
    raise typer.Exit(code)


@app.command("zz-test-bad-input", hidden=True)
def _bad_input() -> None:
    raise InputError("day 2026-01-09: file x.parquet: column 'price': expected float, got string")


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


def _options(command: str) -> dict:
    """``--flag`` -> click parameter of ``ctrlens <command>``."""
    group = typer.main.get_command(app)
    return {o: p for p in group.commands[command].params for o in p.opts}  # type: ignore[attr-defined]


SHARED = ["--checkpoint", "--loader", "--data", "--device", "--batch-size", "--db", "--model"]


def test_analysis_commands_share_one_definition_of_each_option():
    cmds = {c: _options(c) for c in ("neurons", "probes", "saliency")}
    for flag in SHARED:
        helps = {c: opts[flag].help for c, opts in cmds.items()}
        assert len(set(helps.values())) == 1 and helps["neurons"], (flag, helps)
        assert len({opts[flag].required for opts in cmds.values()}) == 1, flag
    assert all(opts["--checkpoint"].required and opts["--data"].required for opts in cmds.values())
    assert {opts["--device"].default for opts in cmds.values()} == {"cpu"}
    assert _options("report")["--loader"].help == cmds["neurons"]["--loader"].help
    assert _options("train")["--data"].help == cmds["neurons"]["--data"].help
    store_help = {_options(c)["--db"].help for c in ("report", "dashboard")}
    group = typer.main.get_command(app).commands["db"]  # type: ignore[attr-defined]
    store_help |= {p.help for sub in group.commands.values() for p in sub.params if "--db" in p.opts}
    assert len(store_help) == 1


@pytest.mark.parametrize("command", ["neurons", "probes", "saliency"])
def test_shared_options_keep_their_errors(command, tmp_path, capsys):
    day = {"neurons": ["--day", "2026-01-01"], "probes": ["--train-day", "2026-01-01"], "saliency": ["--out", str(tmp_path / "r.json")]}
    assert run([command, "--data", str(tmp_path), *day[command]]) == 2  # --checkpoint is required: usage error
    assert "--checkpoint" in capsys.readouterr().err
    assert run([command, "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path), *day[command]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctrlens: error: "), err  # one line naming what is missing


def test_python_dash_m_ctrlens_cli_is_the_ctrlens_command():
    import subprocess
    import sys

    # one start only (each is seconds on a loaded machine): the module runs main(), exit codes included
    r = subprocess.run([sys.executable, "-m", "ctrlens.cli", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["ctrlens: usage error: No such command 'no-such-command'."]
