"""pull, convert, quantize: the Hub to GGUF files, one stage at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.cli import _render
from smolconv.cli._options import (
    AdapterFormatOption,
    AdapterOption,
    AdapterRevisionOption,
    ForceOption,
    ImatrixOption,
    ImatrixTextOption,
    LlamaCppOption,
    MmprojTypeOption,
    ModelArgument,
    OfflineOption,
    OutOption,
    OuttypeOption,
    RevisionOption,
    ThreadsOption,
    TypesOption,
    WaitOption,
    find_toolchain,
)
from smolconv.cli._output import plain, print_notices, progress_reporter
from smolconv.core.choices import AdapterFormat, Outtype
from smolconv.formats.gguf.quantize import DEFAULT_TYPES, QuantizeOptions
from smolconv.formats.gguf.quantize import quantize as quantize_stage
from smolconv.pipeline import convert_source
from smolconv.source.adapter import pull_model_and_adapter
from smolconv.source.checkpoint import inspect_checkpoint
from smolconv.source.spec import SourceSpec


def pull(
    model: ModelArgument,
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    adapter: AdapterOption = None,
    adapter_revision: AdapterRevisionOption = None,
    adapter_format: AdapterFormatOption = AdapterFormat.MERGE,
    force: Annotated[bool, typer.Option("--force", help="Accept an adapter trained on another base name.")] = False,
) -> None:
    """Download a checkpoint snapshot (resumable) into the Hugging Face cache and print its path."""

    source, setup = pull_model_and_adapter(SourceSpec(model, revision, adapter, adapter_revision, adapter_format,
                                                      local_files_only=offline), force=force)
    pinned = f" at {source.revision}" if source.revision else ""
    plain(f"{source.repo_id or 'local checkpoint'}{pinned}: {source.path}")
    if setup is not None:
        pinned = f" at {setup.source.revision}" if setup.source.revision else ""
        plain(f"adapter {setup.source.repo_id or setup.info.name}{pinned}: {setup.source.path} "
              f"(r {setup.info.r}, changes {', '.join(setup.info.parts)}; fits the checkpoint)")


def convert(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory (see `smolconv pull`).")],
    out: OutOption = None,
    outtype: OuttypeOption = Outtype.F16,
    adapter: AdapterOption = None,
    adapter_revision: AdapterRevisionOption = None,
    adapter_format: AdapterFormatOption = AdapterFormat.MERGE,
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
    wait: WaitOption = False,
) -> None:
    """Convert a checkpoint to a text GGUF and a vision projector (mmproj) GGUF, checked after writing."""

    if not checkpoint.is_dir():
        # A name that is not a directory would be looked up on the Hub: convert takes a directory only.

        inspect_checkpoint(checkpoint)
    source, setup = pull_model_and_adapter(SourceSpec(str(checkpoint), adapter=adapter,
                                                      adapter_revision=adapter_revision,
                                                      adapter_format=adapter_format), force=force)
    out = out or Path("out") / (setup.info.name if setup else checkpoint.resolve().name)
    toolchain = find_toolchain(llama_cpp)
    with progress_reporter() as progress:
        result = convert_source(source, out, outtype, toolchain, progress, force=force, adapter=setup, wait=wait)
    verb = "up to date" if result.skipped else f"written in {result.seconds:.1f} s"
    plain(f"{result.model}\n{result.mmproj}\n{verb}")
    print_notices(result.notices)
    if setup is not None:
        made = setup.merged if setup.format == "merge" else setup.gguf
        plain(f"adapter {setup.info.name} ({setup.format}): {made}")


def quantize(
    out: Annotated[Path, typer.Argument(help="A directory `smolconv convert` wrote (it holds build.json).")],
    types: TypesOption = None,
    imatrix: ImatrixOption = None,
    imatrix_text: ImatrixTextOption = None,
    mmproj_type: MmprojTypeOption = None,
    threads: ThreadsOption = None,
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
    wait: WaitOption = False,
) -> None:
    """Quantize the converted model with llama-quantize and report what each file really holds."""

    options = QuantizeOptions(out, tuple(types or DEFAULT_TYPES), imatrix, imatrix_text, mmproj_type, threads, force,
                              wait=wait)
    toolchain = find_toolchain(llama_cpp)
    with progress_reporter() as progress:
        result = quantize_stage(options, toolchain, progress)
    _render.quant_reports(result)
