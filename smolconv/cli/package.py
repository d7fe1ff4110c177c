"""package, publish: Modelfiles and Ollama models, and a Hub repo that `ollama run hf.co/…` runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.cli import _render
from smolconv.cli._options import (
    DEFAULT_RESERVE_TEXT,
    DEFAULT_VRAM_TEXT,
    BuildDirArgument,
    CreateOption,
    KvTypeOption,
    NameOption,
    NumCtxOption,
    PresetOption,
    ReserveOption,
    TypesOption,
    ViaOption,
    VramOption,
    WaitOption,
    plan_settings,
)
from smolconv.cli._output import progress_reporter, status
from smolconv.core.choices import KvType, Via
from smolconv.formats.gguf.package import PackageOptions
from smolconv.formats.gguf.package import package as package_stage
from smolconv.hub.publish import PublishOptions
from smolconv.hub.publish import publish as publish_stage


def package(
    out: BuildDirArgument,
    types: TypesOption = None,
    presets: PresetOption = None,
    name: NameOption = None,
    vram: VramOption = DEFAULT_VRAM_TEXT,
    reserve: ReserveOption = DEFAULT_RESERVE_TEXT,
    kv_type: KvTypeOption = KvType.F16,
    num_ctx: NumCtxOption = None,
    create: CreateOption = False,
    via: ViaOption = Via.AUTO,
    force: Annotated[bool, typer.Option("--force", help="Replace Modelfiles smolconv did not write.")] = False,
    wait: WaitOption = False,
) -> None:
    """Write a Modelfile per variant and preset (num_ctx and num_gpu from plan); with --create, `ollama create` them."""

    settings = plan_settings(vram, reserve, None, kv_type, num_ctx)
    options = PackageOptions(out, tuple(types or ()), tuple(presets or ()), name, settings, force, create, via,
                             wait=wait)
    with progress_reporter() as progress:
        result = package_stage(options, progress)
    _render.packaged(result)


def publish(
    out: BuildDirArgument,
    repo: Annotated[str, typer.Option("--repo", help="The Hub model repo to publish to: USER/NAME.")],
    types: Annotated[list[str] | None, typer.Option(
        "--type", "-t", help="A variant to publish, repeatable (default: every quantized one).")] = None,
    preset: Annotated[str, typer.Option(
        "--preset", "-p", help="The preset whose sampling goes into `params` (and its prompt into `system`).")]
    = "general",
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    base_model: Annotated[str | None, typer.Option(
        "--base-model", help="The checkpoint's Hub id, for a build from a local directory.")] = None,
    dry_run: Annotated[Path | None, typer.Option(
        "--dry-run", metavar="DIR", help="Write the repo's exact files into DIR and upload nothing.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --dry-run DIR.")] = False,
) -> None:
    """Upload a build to the Hub in ggml-org's layout (GGUF files, mmproj, template, params, model card), or an
    export-mlx folder in mlx-community's (MLX weights, config, processor, tokenizer, model card)."""

    options = PublishOptions(out, repo, tuple(types or ()), preset, private, dry_run, force, base_model)
    with status("publishing"):
        result = publish_stage(options)
    _render.published(result)
