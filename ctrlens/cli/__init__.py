"""The ``ctrlens`` command line.

Each concern registers its commands from its own module (``ctrlens/cli/<name>.py`` with a
``register(app)`` function), so commands stay next to nothing else and heavy imports (torch) happen
inside the commands, keeping ``ctrlens --help`` fast.

Exit codes: 0 success; 1 ran but found something (e.g. new alerts from ``nightly``); 2 bad input or
usage, with a one-line message (a traceback only with ``--debug``).
"""

from __future__ import annotations

import importlib
import sys

import typer

from ctrlens.errors import InputError

app = typer.Typer(
    name="ctrlens",
    help="See inside deep CTR models: neuron statistics, probes, saliency, drift and diagnosis per model x checkpoint x day.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Order is the order of `ctrlens --help`.
_COMMAND_MODULES = ("synth", "data", "train", "neurons", "probes", "saliency", "db", "nightly", "alerts", "report", "dashboard", "demo")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """ctrlens: watch what happens inside your CTR models, day by day."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        modname = f"ctrlens.cli.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue  # that concern has no commands yet
            raise
        mod.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        rc = app(args=argv, standalone_mode=False)
    except InputError as e:
        if debug:
            raise
        print(f"ctrlens: error: {e}", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except Exception as e:  # click usage errors and aborts
        import click

        # typer >= 0.2x raises its own (vendored) copies of click's exceptions, not click's
        try:
            from typer._click.exceptions import UsageError as _TyperUsageError
        except ImportError:
            _TyperUsageError = click.exceptions.UsageError
        usage = (click.exceptions.UsageError, _TyperUsageError)
        abort = (click.exceptions.Abort, typer.Abort)
        exit_ = (click.exceptions.Exit, typer.Exit)
        if isinstance(e, usage):
            if debug:
                raise
            if e.format_message():  # empty after no_args_is_help has printed the help
                print(f"ctrlens: usage error: {e.format_message()}", file=sys.stderr)
            sys.exit(2)
        if isinstance(e, abort):
            print("ctrlens: aborted", file=sys.stderr)
            sys.exit(130)
        if isinstance(e, exit_):
            sys.exit(e.exit_code)
        raise
    # In non-standalone mode click returns the code of a `typer.Exit(code)` instead of exiting.
    if isinstance(rc, int) and not isinstance(rc, bool) and rc != 0:
        sys.exit(rc)
