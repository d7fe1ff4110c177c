"""The one place a command's failure becomes what the user sees: one line on stderr and an exit code.

Commands raise SmolconvError (problem and fix) and never catch it themselves; `mapped` turns it into the line
and the exit code for every command alike, also under typer's CliRunner. `run` adds what only the program has:
stop signals and a full disk in smolconv's own writes.
"""

from __future__ import annotations

import functools
import sys

import typer

from smolconv.cli._output import err_console, print_error
from smolconv.errors import SmolconvError


def mapped(command):
    """The command with SmolconvError printed as one line and turned into its exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SmolconvError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def run_program(app: typer.Typer) -> None:
    """The `smolconv` program: the app, with Ctrl-C, SIGTERM and SIGHUP stopping any command in order.

    A stop signal raises runner.Interrupted on the main thread; on its way here every `finally` has stopped its
    child and removed its staged file. What is left is stopped here, then one line and exit 128 + the signal's
    number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). `serve` catches it itself: an orderly stop, exit 0.
    """
    from smolconv.runner import DISK_FULL, Interrupted, disk_full, install_stop_handlers, stop_all_children

    install_stop_handlers()
    try:
        app(prog_name="smolconv")
    except OSError as exc:  # smolconv's own writes; its staged files were removed on the way here
        if exc.errno not in DISK_FULL:
            raise
        stop_all_children()
        where = f"writing {exc.filename}" if exc.filename else "writing"
        error = disk_full(f"{where} failed ({exc.strerror})")
        print_error(error)
        sys.exit(error.exit_code)
    except Interrupted as stop:
        stop_all_children()
        err_console.print(f"stopped by {stop.name}: children stopped, partial files removed", highlight=False)
        sys.exit(stop.exit_code)
