"""build: every stage in order, unchanged steps skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.checks.eval import EvalGates
from smolconv.cli import _render
from smolconv.cli._options import (
    DEFAULT_RESERVE_TEXT,
    DEFAULT_VRAM_TEXT,
    AdapterFormatOption,
    AdapterOption,
    AdapterRevisionOption,
    AllowUncheckedOption,
    CreateOption,
    ForceOption,
    ImatrixOption,
    ImatrixTextOption,
    KvTypeOption,
    LlamaCppOption,
    MaxCtxOption,
    MaxDropOption,
    MaxKldOption,
    MinAccuracyOption,
    MmprojTypeOption,
    ModelArgument,
    NameOption,
    OfflineOption,
    OutOption,
    OuttypeOption,
    PresetOption,
    ReserveOption,
    RevisionOption,
    SkipCheckOption,
    ThreadsOption,
    TypesOption,
    ViaOption,
    VramOption,
    WaitOption,
    find_toolchain,
    plan_settings,
    verify_gates,
)
from smolconv.cli._output import plain, print_failed, print_notices, progress_reporter
from smolconv.core.choices import AdapterFormat, BuildBackend, KvType, Outtype, Via
from smolconv.formats.gguf.quantize import DEFAULT_TYPES
from smolconv.pipeline import BuildOptions
from smolconv.pipeline import build as build_pipeline
from smolconv.reference.gates import DEFAULT_MAX_NMSE


def build(
    model: ModelArgument,
    out: OutOption = None,
    revision: RevisionOption = None,
    outtype: OuttypeOption = Outtype.F16,
    types: TypesOption = None,
    imatrix: ImatrixOption = None,
    imatrix_text: ImatrixTextOption = None,
    mmproj_type: MmprojTypeOption = None,
    threads: ThreadsOption = None,
    offline: OfflineOption = False,
    adapter: AdapterOption = None,
    adapter_revision: AdapterRevisionOption = None,
    adapter_format: AdapterFormatOption = AdapterFormat.MERGE,
    presets: PresetOption = None,
    name: NameOption = None,
    vram: VramOption = DEFAULT_VRAM_TEXT,
    reserve: ReserveOption = DEFAULT_RESERVE_TEXT,
    kv_type: KvTypeOption = KvType.F16,
    max_ctx: MaxCtxOption = None,
    create: CreateOption = False,
    via: ViaOption = Via.AUTO,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="End with `smolconv verify`.")] = True,
    max_kld: MaxKldOption = None,
    allow_unchecked: AllowUncheckedOption = None,
    skip_check: SkipCheckOption = None,
    smoke: Annotated[bool, typer.Option("--smoke/--no-smoke", help="End with `smolconv smoke`.")] = True,
    backend: Annotated[BuildBackend, typer.Option(
        "--backend", help="Smoke on llama-server (started per variant) or ollama (needs --create).")
    ] = BuildBackend.LLAMA_SERVER,
    cases: Annotated[Path | None, typer.Option(
        "--cases", help="End with `smolconv eval` on these cases (JSONL) and the transformers reference; with "
        "--min-accuracy / --max-drop a failed gate fails the build (and stops --publish).")] = None,
    min_accuracy: MinAccuracyOption = None,
    max_drop: MaxDropOption = None,
    publish: Annotated[str | None, typer.Option(
        "--publish", metavar="USER/NAME", help="End with `smolconv publish` to this Hub repo if every check passed.")]
    = None,
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
    wait: WaitOption = False,
) -> None:
    """Run pull → convert → quantize → plan → package → verify → smoke (→ eval, → publish); unchanged steps are
    skipped."""

    options = BuildOptions(
        model=model, out_dir=out, revision=revision, outtype=outtype, types=tuple(types or DEFAULT_TYPES),
        imatrix=imatrix, imatrix_text=imatrix_text, mmproj_type=mmproj_type, threads=threads, force=force,
        local_files_only=offline, presets=tuple(presets or ()), name=name, create=create, via=via,
        verify=verify, verify_skip=frozenset(skip_check or ()), smoke=smoke, backend=backend, adapter=adapter,
        adapter_revision=adapter_revision, adapter_format=adapter_format, publish=publish,
        settings=plan_settings(vram, reserve, None, kv_type, None, max_ctx),
        gates=verify_gates(DEFAULT_MAX_NMSE, max_kld, allow_unchecked),
        cases=cases, eval_gates=EvalGates(min_accuracy, max_drop), wait=wait)
    toolchain = find_toolchain(llama_cpp)
    with progress_reporter() as progress:
        result = build_pipeline(options, toolchain, progress)
    converted = "reused" if result.converted.skipped else f"converted in {result.converted.seconds:.1f} s"
    plain(f"{result.converted.model.name} + {result.converted.mmproj.name}: {converted}")
    print_notices(result.converted.notices)
    if result.adapter is not None:
        a = result.adapter
        made = a.merged if a.format == "merge" else a.gguf
        verb = "reused" if a.skipped else f"{'merged' if a.format == 'merge' else 'converted'} in {a.seconds:.1f} s"
        plain(f"adapter {a.info.name} (r {a.info.r}, {a.format}): {made}: {verb}")
    _render.quant_reports(result.quantized)
    if result.packaged:
        _render.plans([m.plan for m in result.packaged.models if m.preset == result.packaged.models[0].preset],
                      "plan (num_ctx and num_gpu written into the Modelfiles)")
        _render.packaged(result.packaged)
    if result.verified:
        _render.verify(result.verified)
    elif result.verify_reused:
        plain("verify: passed before on these same files (build.json); `smolconv verify` reruns it")
    for report in result.smoked:
        _render.smoke(report)
    if result.smoke_reused:
        plain(f"smoke: {', '.join(result.smoke_reused)} passed before on these same files (build.json); "
              "`smolconv smoke` reruns it")
    if result.evaluated:
        _render.eval_report(result.evaluated)
    elif result.eval_reused:
        plain(f"eval: {result.eval_reused} passed before on these same files and cases (build.json); "
              "`smolconv eval` reruns it")
    if result.published:
        _render.published(result.published)
    plain(f"build record: {result.out_dir / 'build.json'}")
    if not result.passed:
        print_failed("build checks failed", result.failures)
        raise typer.Exit(1)
