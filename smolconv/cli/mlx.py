"""export-mlx: the folder mlx-community publishes and mlx-vlm loads."""

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
from smolconv.core.choices import MlxBits, MlxDtype
from smolconv.formats.mlx.export import ExportMlxOptions, export_and_verify


def export_mlx(
    model: ModelArgument,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder (default: out/<model name>-mlx[-<bits>]).")] = None,
    bits: Annotated[MlxBits | None, typer.Option(
        "--bits", help="Quantize the decoder and connector: 4, 8, mixed_4_6 or mixed_4_8 (mlx-vlm's recipes after "
        "Q4_K_M), or none. Default: chosen for the model's size, and the report says why.")] = None,
    group_size: Annotated[int, typer.Option("--group-size", help="Quantization group size (32, 64 or 128).")] = 64,
    dtype: Annotated[MlxDtype, typer.Option("--dtype", help="The unquantized weights' type.")] = MlxDtype.BF16,
    revision: RevisionOption = None,
    offline: OfflineOption = False,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Compare with transformers (float32), and a quantized export with the "
        "unquantized one.")] = True,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", help="A PEFT LoRA/DoRA adapter (directory or Hub id), merged in float32 before export.")] = None,
    adapter_revision: AdapterRevisionOption = None,
    force: ForceOption = False,
    wait: WaitOption = False,
) -> None:
    """Export to MLX for Apple silicon (mlx-vlm's converter, mlx-community's layout), then verify."""

    options = ExportMlxOptions(model, out, bits, group_size, dtype, force, revision, offline, adapter,
                               adapter_revision, wait=wait)
    with progress_reporter() as progress:
        result, report = export_and_verify(options, verify=verify, progress=progress)
    _render.mlx_export(result)
    if report is not None:
        _render.mlx_verify(report)
        if not report.passed:
            print_failed("verify failed", report.failures)
            raise typer.Exit(1)
