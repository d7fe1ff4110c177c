"""batch: every model of a recipe file, here, as a GitHub Actions matrix, or as Hugging Face Jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from smolconv.batch.recipe import load_recipe
from smolconv.batch.remote import (
    DEFAULT_FLAVOR,
    DEFAULT_TIMEOUT,
    JobsOptions,
    entry_jobs,
    job_specs,
    matrix,
    submit_jobs,
)
from smolconv.batch.run import BatchOptions, pending, run_batch
from smolconv.cli import _render
from smolconv.cli._options import ForceOption, LlamaCppOption, ThreadsOption, find_toolchain
from smolconv.cli._output import batch_progress
from smolconv.core.choices import BatchTarget, JobFlavor
from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.toolchain import DEFAULT_CUDA_ARCH, SetupOptions


def batch(
    recipe: Annotated[Path, typer.Argument(
        help="A recipe (TOML): a defaults table and one model table per model (docs/ci.md, The recipe).")],
    out: Annotated[Path, typer.Option("--out", help="Where each entry gets its folder, DIR/<name>/.")] = Path("out"),
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="NAME", help="Only this entry (repeatable).")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first entry that fails.")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Verify each build (needed to publish).")]
    = True,
    smoke: Annotated[bool, typer.Option("--smoke/--no-smoke", help="Smoke each GGUF build (needed to publish).")]
    = True,
    publish: Annotated[bool, typer.Option(
        "--publish/--no-publish", help="Publish the entries that name a repo, once their checks passed; "
        "--no-publish builds them only.")] = True,
    matrix_out: Annotated[bool, typer.Option(
        "--matrix", help="Print the entries as a GitHub Actions matrix ({\"include\": [...]}) and exit.")] = False,
    changed_only: Annotated[bool, typer.Option(
        "--changed-only", help="With --matrix: leave out the entries their Hub repo's build record shows current "
        "(reads the Hub, builds nothing).")] = False,
    setup: Annotated[bool, typer.Option(
        "--setup", help="Build the pinned llama.cpp when an entry needs it, after the skip checks (so a run that "
        "finds nothing new never builds it).")] = False,
    cuda: Annotated[bool, typer.Option("--cuda", help="With --setup: build llama.cpp's CUDA backend.")] = False,
    cuda_arch: Annotated[str, typer.Option("--cuda-arch", help="With --setup --cuda: the CUDA architectures.")]
    = DEFAULT_CUDA_ARCH,
    on: Annotated[BatchTarget, typer.Option(
        "--on", help="Where the entries run: here, one after another, or one Hugging Face Job each.")]
    = BatchTarget.LOCAL,
    flavor: Annotated[JobFlavor, typer.Option(
        "--flavor", metavar="FLAVOR", help="hf-jobs: the hardware (cpu-basic, cpu-upgrade, t4-small, l4x1, "
        "a10g-small, a100-large, h200, …, as `hf jobs hardware` lists them); on a GPU flavor llama.cpp is built "
        "with CUDA and the checks run there.")] = DEFAULT_FLAVOR,
    schedule: Annotated[str | None, typer.Option(
        "--schedule", help="hf-jobs: run each entry on a schedule (@daily, @weekly, or a cron line) instead of "
        "now.")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", help="hf-jobs: the Docker image (default: python:3.11, or PyTorch's CUDA devel image on a GPU "
        "flavor).")] = None,
    install: Annotated[str | None, typer.Option(
        "--install", metavar="SPEC", help="hf-jobs: what pip installs in the job (default: this smolconv version; "
        "a wheel URL or git+https://… works too).")] = None,
    timeout: Annotated[str, typer.Option("--timeout", help="hf-jobs: each job's time limit (e.g. 90m, 3h).")]
    = DEFAULT_TIMEOUT,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", help="hf-jobs: the user or organization the jobs run under (default: the token's user).")]
    = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="hf-jobs: print every job spec and submit nothing.")] = False,
    status: Annotated[bool, typer.Option(
        "--status", help="List the entries' Hugging Face Jobs and their stages.")] = False,
    threads: ThreadsOption = None,
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Build every model of a recipe (or --only NAME) into DIR/<name>/, skip what is unchanged, publish what passed."""

    jobs_only = {"--dry-run": dry_run, "--schedule": schedule is not None, "--image": image is not None,
                 "--install": install is not None, "--namespace": namespace is not None and not status}
    used = [flag for flag, given in jobs_only.items() if given]
    if used and on is not BatchTarget.HF_JOBS:
        raise SmolconvError(f"{used[0]} is for Hugging Face Jobs", "add --on hf-jobs")
    if changed_only and not matrix_out:
        raise SmolconvError("--changed-only is for --matrix", "add --matrix")
    if cuda and not setup:
        raise SmolconvError("--cuda builds llama.cpp with --setup", "add --setup, or run `smolconv setup --cuda`")
    loaded = load_recipe(recipe)
    selected = tuple(only or ())
    options = BatchOptions(loaded, out_dir=out, only=selected, fail_fast=fail_fast, verify=verify, smoke=smoke,
                           publish=publish, threads=threads, force=force,
                           setup=SetupOptions(cuda=cuda, cuda_arch=cuda_arch) if setup else None)

    def toolchain():  # looked for only when an entry builds GGUF
        return find_toolchain(llama_cpp)

    if matrix_out:
        entries = pending(options, toolchain) if changed_only else loaded.select(selected)
        typer.echo(json.dumps(matrix(entries), separators=(",", ":")))  # one line, for $GITHUB_OUTPUT
        return
    jobs = JobsOptions(loaded, selected, flavor=flavor, schedule=schedule, image=image, timeout=timeout,
                       namespace=namespace, **({"install": install} if install else {}))
    if status:
        _render.job_states(entry_jobs(jobs))
        return
    if on is BatchTarget.HF_JOBS:
        if dry_run:
            _render.job_specs(job_specs(jobs))
            return
        _render.submitted_jobs(submit_jobs(jobs))
        return

    with batch_progress([e.name for e in loaded.select(selected)]) as progress:
        result = run_batch(options, toolchain, progress)
    _render.batch_summary(result)
    if not result.passed:
        raise typer.Exit(1)
