"""setup, doctor, synth: the toolchain, the machine, and fixture checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.checks.doctor import run_doctor
from smolconv.cli import _render
from smolconv.cli._options import LlamaCppOption
from smolconv.cli._output import plain, print_failed, progress_reporter, status
from smolconv.core.models import Layout
from smolconv.fixtures.synth import SynthOptions, synth_checkpoint
from smolconv.llamacpp.toolchain import SetupOptions, setup_toolchain, user_toolchain


def setup(
    llama_cpp: LlamaCppOption = None,
    cuda: Annotated[bool, typer.Option("--cuda", help="Build the CUDA backend (needs nvcc).")] = False,
    cuda_arch: Annotated[str, typer.Option("--cuda-arch", help="CUDA architectures; 89 is the RTX 4070.")] = "89",
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel build jobs (default: all cores).")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if a complete install exists.")] = False,
    sdist: Annotated[Path | None, typer.Option("--sdist", help="A local copy of the pinned sdist.")] = None,
) -> None:
    """Build the pinned llama.cpp tools into the user cache (once), or check your own build."""

    if llama_cpp:
        toolchain = user_toolchain(llama_cpp)
        plain(f"using your llama.cpp at {toolchain.root}: build {toolchain.version()}")
        return
    with progress_reporter() as progress:
        report = setup_toolchain(SetupOptions(cuda=cuda, cuda_arch=cuda_arch, jobs=jobs, rebuild=rebuild,
                                              sdist=sdist), progress)
    verb = f"built in {report.seconds:.0f} s" if report.built else "already installed"
    plain(f"llama.cpp {report.toolchain.info.get('version', '')} {verb}: {report.toolchain.bin_dir}")


def doctor(
    llama_cpp: LlamaCppOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report for CI.")] = False,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Where models will be written.")] = Path("."),
) -> None:
    """Check the toolchain, converter packages, Ollama, GPU and disk. Exit 0 when the pipeline can run."""

    report = run_doctor(llama_cpp, work_dir)
    if json_out:
        typer.echo(report.to_json())
    else:
        _render.doctor(report)
    if not report.ok:
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in report.failures())
        print_failed("error:", [f"the pipeline cannot run here ({reasons})"])
        raise typer.Exit(1)


def synth(
    shape: Annotated[str, typer.Option("--shape", help="tiny, 256m, 500m or 2.2b.")] = "tiny",
    out: Annotated[Path | None, typer.Option("--out", help="Directory to write (default out/fixtures/…).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing directory.")] = False,
    layout: Annotated[Layout, typer.Option(
        "--layout", help="Files as transformers 4.x wrote them (the Hub originals) or as 5.x saves them.")
    ] = Layout.TRANSFORMERS4,
    tied: Annotated[bool | None, typer.Option(
        "--tied/--untied", help="Tie the output layer to the embeddings (default: as the shape's checkpoint).")
    ] = None,
    vision_layers: Annotated[int | None, typer.Option(
        "--vision-layers", help="Vision encoder layers (default: as the shape's checkpoint); fewer make every image "
        "step faster on a CPU, and the tower is random either way.")] = None,
) -> None:
    """Write a SmolVLM2-shaped fixture checkpoint (for tests and benchmarks; not a usable model)."""

    with status("writing fixture") as update:
        result = synth_checkpoint(SynthOptions(shape=shape, out=out, seed=seed, force=force, layout=layout,
                                               tied=tied, vision_layers=vision_layers), progress=update)
    total = sum(result.files.values())
    plain(f"wrote the {result.shape.name} fixture to {result.path} ({len(result.files)} files, {total / 1e6:.1f} MB)")
