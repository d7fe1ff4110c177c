"""The `smolconv` command line: parses arguments, calls stage functions, prints results.

No pipeline logic lives here. One module per group of commands; options declared once (`_options`), every
table in one place (`_render`), where output goes in another (`_output`), and errors mapped once (`_errors`).
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated

import typer
import typer.core

from smolconv import __version__
from smolconv.cli import ask, build, check, convert, mlx, onnx, package, plan, setup
from smolconv.cli import batch as batch_cli
from smolconv.cli import eval as eval_cli
from smolconv.cli._errors import mapped, run_program
from smolconv.cli._output import plain
from smolconv.llamacpp.toolchain import toolchain_summary

app = typer.Typer(
    name="smolconv",
    help="Turn SmolVLM2 checkpoints into Ollama vision models that fit an 8 GB GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = {
    "setup": setup.setup, "doctor": setup.doctor, "synth": setup.synth,
    "pull": convert.pull, "convert": convert.convert, "quantize": convert.quantize,
    "build": build.build, "plan": plan.plan, "package": package.package, "publish": package.publish,
    "serve": check.serve, "smoke": check.smoke, "verify": check.verify, "ask": ask.ask, "eval": eval_cli.eval_command,
    "export-onnx": onnx.export_onnx, "export-mlx": mlx.export_mlx, "batch": batch_cli.batch,
}


def _one_line(command) -> str:
    """The command list's line: the docstring's first paragraph joined into one line (Typer's rich help keeps a
    docstring's line breaks there, so a two-line sentence would break mid-sentence in `smolconv --help`)."""
    return " ".join(inspect.cleandoc(command.__doc__ or "").split("\n\n")[0].split())


for _name, _command in COMMANDS.items():
    app.command(_name, short_help=_one_line(_command))(mapped(_command))

# Typer 0.29 prints a type after every option, `--version <bool>` and `--help <bool>` too; a flag takes no value,
# so it shows none (an older Typer has no display_type_rich and never printed one).
_shown_type = getattr(typer.core.TyperOption, "display_type_rich", None)
if _shown_type is not None:
    def _display_type_rich(self, ctx):
        return None if getattr(self, "is_bool_flag", False) else _shown_type(self, ctx)

    typer.core.TyperOption.display_type_rich = _display_type_rich


def _version(value: bool) -> None:
    if value:
        import platform

        plain(f"smolconv {__version__}\nllama.cpp {toolchain_summary()}\n"
              f"Python {platform.python_version()} ({sys.executable})")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Pipeline: setup → synth (fixtures) → pull → convert → quantize → plan → package → verify → smoke."""


def run() -> None:
    run_program(app)
