"""export-onnx: the three-graph folder onnxruntime and transformers.js load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.cli import _render_exports as _render
from smolconv.cli._options import (
    AdapterRevisionOption,
    ForceOption,
    ModelArgument,
    OfflineOption,
    RevisionOption,
    WaitOption,
)
from smolconv.cli._output import print_failed, progress_reporter
from smolconv.formats.onnx.export import ExportOptions, export_and_verify
from smolconv.formats.onnx.quantize import DEFAULT_VARIANTS


def export_onnx(
    model: ModelArgument,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: out/<model name>-onnx).")] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--type", "-t", help="fp16, quantized, q4 or q4f16, repeatable (default: fp16 quantized q4); the fp32 "
        "graphs are always written, the variants are made from them.")]
    = None,
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify",
                                         help="Compare fp32 with transformers and each variant with fp32.")] = True,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for onnxruntime in verify.")] = None,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", help="A PEFT LoRA/DoRA adapter (directory or Hub id), merged in float32 before export.")] = None,
    adapter_revision: AdapterRevisionOption = None,
    force: ForceOption = False,
    wait: WaitOption = False,
) -> None:
    """Export the three ONNX graphs (vision_encoder, embed_tokens, decoder_model_merged) and their variants."""

    options = ExportOptions(model, out, tuple(types or DEFAULT_VARIANTS), force, revision, offline, adapter,
                            adapter_revision, wait=wait)
    with progress_reporter() as progress:
        result, report = export_and_verify(options, verify=verify, threads=threads, progress=progress)
    _render.onnx_export(result)
    if report is not None:
        _render.onnx_verify(report)
        if not report.passed:
            print_failed("verify failed", report.failures)
            raise typer.Exit(1)
