"""The `smolconv` command line: parses arguments, calls stage functions, prints results.

No pipeline logic lives here. One module per group of commands; options declared once (`_options`), every
table in one place (`_render`), where output goes in another (`_output`), and errors mapped once (`_errors`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from smolconv import __version__
from smolconv.cli import ask, build, check, convert, mlx, onnx, package, plan, setup
from smolconv.cli._errors import mapped, run_program
from smolconv.cli._output import plain

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
    "serve": check.serve, "smoke": check.smoke, "verify": check.verify, "ask": ask.ask,
    "export-onnx": onnx.export_onnx, "export-mlx": mlx.export_mlx,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(mapped(_command))


def _version(value: bool) -> None:
    if value:
        import platform

        from smolconv.toolchain import toolchain_summary

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
