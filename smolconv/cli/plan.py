"""plan: what fits an 8 GiB GPU, from a build directory or a model size."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from smolconv.checks.workload import measure_plans
from smolconv.cli import _render
from smolconv.cli._options import (
    DEFAULT_RESERVE_TEXT,
    DEFAULT_VRAM_TEXT,
    KvTypeOption,
    LlamaCppOption,
    MaxCtxOption,
    NumCtxOption,
    ReserveOption,
    TypesOption,
    VramOption,
    find_toolchain,
    plan_settings,
)
from smolconv.cli._output import status
from smolconv.core.choices import KvType
from smolconv.plan import PlanOptions, format_bytes
from smolconv.plan import plan as plan_stage


def plan(
    target: Annotated[str, typer.Argument(help="A build directory, or 256m / 500m / 2.2b (no download needed).")],
    types: TypesOption = None,
    vram: VramOption = DEFAULT_VRAM_TEXT,
    reserve: ReserveOption = DEFAULT_RESERVE_TEXT,
    overhead: Annotated[str | None, typer.Option(
        "--overhead", help="A flat figure for the CUDA runtime outside llama.cpp's buffers (default: the model "
        "fitted on an H100: context, cuBLAS, memory pool).")] = None,
    kv_type: KvTypeOption = KvType.F16,
    num_ctx: NumCtxOption = None,
    max_ctx: MaxCtxOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable plan.")] = False,
    measure: Annotated[bool, typer.Option(
        "--measure", help="Also start llama-server on each built variant and compare its buffer sizes; on a CUDA "
        "build also the process's GPU memory after the largest image and a full context.")] = False,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Fit each variant to the GPU: the largest num_ctx with every layer and the projector on it, else the offload."""

    settings = plan_settings(vram, reserve, overhead, kv_type, num_ctx, max_ctx)
    plans = plan_stage(PlanOptions(target, tuple(types or ()), settings))
    measured = None
    if measure:
        toolchain = find_toolchain(llama_cpp)
        with status("measuring with llama-server"):
            measured = measure_plans(plans, toolchain, settings)
    if json_out:
        data = [p.to_dict() for p in plans]
        for item in data:
            if measured is not None and item["variant"] in measured.buffers:
                item["measured_by_llama_server"] = vars(measured.buffers[item["variant"]])
                case = measured.worst.get(item["variant"])
                item["process_gpu_memory"] = case.to_dict() if case else _render.NOT_MEASURED
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    _render.plans(plans, f"plan for {target} on a {format_bytes(settings.vram)} GPU "
                         f"(reserve {format_bytes(settings.reserve)}, KV {settings.kv_type})")
    if measured is not None:
        _render.measurements(plans, measured.buffers, measured.worst, settings)
