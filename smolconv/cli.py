"""The `smolconv` command line: parses arguments, calls stage functions, prints results.

No pipeline logic lives here; every command is a thin wrapper over a function usable from Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from smolconv import __version__
from smolconv.errors import SmolconvError

app = typer.Typer(
    name="smolconv",
    help="Turn SmolVLM2 checkpoints into Ollama vision models that fit an 8 GB GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

LlamaCppOption = Annotated[
    str | None,
    typer.Option("--llama-cpp", envvar="SMOLCONV_LLAMA_CPP", metavar="DIR",
                 help="Use your own llama.cpp checkout and build instead of the one `smolconv setup` builds."),
]


def _fail(exc: SmolconvError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        console.print(f"smolconv {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Pipeline: setup → synth (fixtures) → pull → convert → quantize → plan → package → smoke."""


@app.command()
def setup(
    llama_cpp: LlamaCppOption = None,
    cuda: Annotated[bool, typer.Option("--cuda", help="Build the CUDA backend (needs nvcc).")] = False,
    cuda_arch: Annotated[str, typer.Option("--cuda-arch", help="CUDA architectures; 89 is the RTX 4070.")] = "89",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel build jobs (default: all cores).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if a complete install exists.")] = False,
    sdist: Annotated[Path | None, typer.Option("--sdist", help="A local copy of the pinned sdist.")] = None,
) -> None:
    """Build the pinned llama.cpp tools into the user cache (once), or check your own build."""
    from smolconv.toolchain import SetupOptions, setup_toolchain, user_toolchain

    try:
        if llama_cpp:
            toolchain = user_toolchain(llama_cpp)
            console.print(f"using your llama.cpp at {toolchain.root}: build {toolchain.version()}")
            return
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("checking the toolchain", total=None)

            def progress(stage: str, fraction: float | None) -> None:
                bar.update(task, description=stage, total=None if fraction is None else 1.0,
                           completed=fraction or 0)

            report = setup_toolchain(SetupOptions(cuda=cuda, cuda_arch=cuda_arch, jobs=jobs, rebuild=rebuild,
                                                  sdist=sdist), progress)
    except SmolconvError as exc:
        raise _fail(exc) from None
    verb = f"built in {report.seconds:.0f} s" if report.built else "already installed"
    console.print(f"llama.cpp {report.toolchain.info.get('version', '')} {verb}: {report.toolchain.bin_dir}",
                  soft_wrap=True, highlight=False)


@app.command()
def doctor(
    llama_cpp: LlamaCppOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report for CI.")] = False,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Where models will be written.")] = Path("."),
) -> None:
    """Check the toolchain, converter packages, Ollama, GPU and disk. Exit 0 when the pipeline can run."""
    from smolconv.doctor import FAIL, OK, run_doctor

    report = run_doctor(llama_cpp, work_dir)
    if json_out:
        typer.echo(report.to_json())
    else:
        table = Table(title="smolconv doctor", show_lines=False)
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        colour = {OK: "green", FAIL: "red"}
        for check in report.checks:
            table.add_row(check.name, f"[{colour.get(check.status, 'yellow')}]{check.status}[/]", check.detail)
        console.print(table)
    if not report.ok:
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in report.failures())
        err_console.print(f"[bold red]error:[/] the pipeline cannot run here ({reasons})",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def synth(
    shape: Annotated[str, typer.Option("--shape", help="tiny, 256m, 500m or 2.2b.")] = "tiny",
    out: Annotated[Path | None, typer.Option("--out", help="Directory to write (default out/fixtures/…).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing directory.")] = False,
) -> None:
    """Write a SmolVLM2-shaped fixture checkpoint (for tests and benchmarks; not a usable model)."""
    from smolconv.synth import SynthOptions, synth_checkpoint

    try:
        with err_console.status("writing fixture") as status:
            result = synth_checkpoint(SynthOptions(shape=shape, out=out, seed=seed, force=force),
                                      progress=lambda msg: status.update(msg))
    except SmolconvError as exc:
        raise _fail(exc) from None
    total = sum(result.files.values())
    console.print(f"wrote the {result.shape.name} fixture to {result.path} "
                  f"({len(result.files)} files, {total / 1e6:.1f} MB)")
