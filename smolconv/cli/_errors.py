"""The one place a command's failure becomes what the user sees: one line on stderr and an exit code.

Commands raise SmolconvError (problem and fix) and never catch it themselves; `mapped` turns it into the line
and the exit code for every command alike, also under typer's CliRunner. `run` adds what only the program has:
stop signals and a full disk in smolconv's own writes.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import typer

from smolconv.process.children import stop_all_children
from smolconv.process.runner import DISK_FULL, disk_full
from smolconv.process.signals import Interrupted, install_stop_handlers

try:  # typer 0.2x carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer uses click itself
    from click import exceptions as click_exceptions

from smolconv.cli._output import err_console, print_error
from smolconv.core.errors import SmolconvError

_NO_ARGS_IS_HELP = getattr(click_exceptions, "NoArgsIsHelpError", ())


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

    install_stop_handlers()
    try:
        # standalone_mode=False: click's own usage errors (an unknown option, a value outside an Enum's choices)
        # come here as exceptions, to be printed as one line like every other bad input.
        code = app(prog_name="smolconv", standalone_mode=False)
    except _NO_ARGS_IS_HELP as exc:  # `smolconv` or a group alone: the help, as click would show it
        exc.show()
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "smolconv"
        message = " ".join(exc.format_message().replace("Value error, ", "").split()).rstrip(".")
        print_error(SmolconvError(message, f"see `{where} --help`"))
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-D or Ctrl-C at a prompt
        sys.exit(1)
    except OSError as exc:  # smolconv's own writes; its staged files were removed on the way here
        if exc.errno not in DISK_FULL:
            raise
        stop_all_children()
        where = f"writing {exc.filename}" if exc.filename else "writing"
        error = disk_full(f"{where} failed ({exc.strerror})", Path(exc.filename).parent if exc.filename else None)
        print_error(error)
        sys.exit(error.exit_code)
    except Interrupted as stop:
        stop_all_children()
        err_console.print(f"stopped by {stop.name}: children stopped, partial files removed", highlight=False)
        sys.exit(stop.exit_code)
    sys.exit(code or 0)
