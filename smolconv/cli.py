"""The `smolconv` command line: parses arguments, calls stage functions, prints results.

No pipeline logic lives here; every command is a thin wrapper over a function usable from Python.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from smolconv import __version__
from smolconv.errors import SmolconvError
from smolconv.models import Layout

app = typer.Typer(
    name="smolconv",
    help="Turn SmolVLM2 checkpoints into Ollama vision models that fit an 8 GB GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Rich wraps at 80 columns when output is not a terminal (CI logs, pipes); tables need a little more.
console = Console() if sys.stdout.isatty() else Console(width=120)
err_console = Console(stderr=True)

LlamaCppOption = Annotated[
    str | None,
    typer.Option("--llama-cpp", envvar="SMOLCONV_LLAMA_CPP", metavar="DIR",
                 help="Use your own llama.cpp checkout and build instead of the one `smolconv setup` builds."),
]


def _fail(exc: SmolconvError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def run() -> None:
    """The `smolconv` program: the app, with Ctrl-C, SIGTERM and SIGHUP stopping any command in order.

    A stop signal raises runner.Interrupted on the main thread; on its way here every `finally` has stopped its
    child and removed its staged file. What is left is stopped here, then one line and exit 128 + the signal's
    number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). `serve` catches it itself: an orderly stop, exit 0.
    """
    from smolconv.runner import DISK_FULL, Interrupted, disk_full, install_stop_handlers, stop_all_children

    install_stop_handlers()
    try:
        app(prog_name="smolconv")
    except OSError as exc:  # smolconv's own writes; its staged files were removed on the way here
        if exc.errno not in DISK_FULL:
            raise
        stop_all_children()
        where = f"writing {exc.filename}" if exc.filename else "writing"
        error = disk_full(f"{where} failed ({exc.strerror})")
        _fail(error)  # prints the one line
        sys.exit(error.exit_code)
    except Interrupted as stop:
        stop_all_children()
        err_console.print(f"stopped by {stop.name}: children stopped, partial files removed", highlight=False)
        sys.exit(stop.exit_code)


def _progress_bar():
    # No bar when stderr is not a terminal (CI logs, pipes): it would only leave blank lines there.
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                   console=err_console, transient=True, disable=not err_console.is_terminal)
    task = bar.add_task("starting", total=None)

    def progress(stage: str, fraction: float | None) -> None:
        bar.update(task, description=stage, total=None if fraction is None else 1.0, completed=fraction or 0)

    return bar, progress


def _version(value: bool) -> None:
    if value:
        import platform

        from smolconv.toolchain import toolchain_summary

        console.print(f"smolconv {__version__}\nllama.cpp {toolchain_summary()}\n"
                      f"Python {platform.python_version()} ({sys.executable})", highlight=False, soft_wrap=True)
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
        bar, progress = _progress_bar()
        with bar:
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
    layout: Annotated[Layout, typer.Option(
        "--layout", help="Files as transformers 4.x wrote them (the Hub originals) or as 5.x saves them.")
    ] = Layout.TRANSFORMERS4,
    tied: Annotated[bool | None, typer.Option(
        "--tied/--untied", help="Tie the output layer to the embeddings (default: as the shape's checkpoint).")
    ] = None,
) -> None:
    """Write a SmolVLM2-shaped fixture checkpoint (for tests and benchmarks; not a usable model)."""
    from smolconv.synth import SynthOptions, synth_checkpoint

    try:
        with err_console.status("writing fixture") as status:
            result = synth_checkpoint(SynthOptions(shape=shape, out=out, seed=seed, force=force, layout=layout,
                                                   tied=tied),
                                      progress=lambda msg: status.update(msg))
    except SmolconvError as exc:
        raise _fail(exc) from None
    total = sum(result.files.values())
    console.print(f"wrote the {result.shape.name} fixture to {result.path} "
                  f"({len(result.files)} files, {total / 1e6:.1f} MB)")


# --------------------------------------------------------------------------------------------------
# Pipeline stages

OutOption = Annotated[Path | None, typer.Option("--out", help="Output directory (default: out/<model name>).")]
ForceOption = Annotated[bool, typer.Option("--force", help="Redo steps and replace files that exist.")]
TypesOption = Annotated[list[str] | None, typer.Option(
    "--type", "-t", help="Quantization type, repeatable (default: Q4_K_M, Q5_K_M, Q8_0); any llama-quantize type.")]
ImatrixOption = Annotated[Path | None, typer.Option("--imatrix", help="An importance matrix file to quantize with.")]
ImatrixTextOption = Annotated[Path | None, typer.Option(
    "--imatrix-text", help="A text file to compute an importance matrix from (llama-imatrix).")]
MmprojTypeOption = Annotated[str | None, typer.Option(
    "--mmproj-type", help="Also quantize the vision projector (e.g. Q8_0); the f16 projector stays the default.")]
ThreadsOption = Annotated[int | None, typer.Option("--threads", help="Threads for llama-quantize.")]
VramOption = Annotated[str, typer.Option("--vram", help="The GPU's memory: 8GiB for an RTX 4070.")]
MaxKldOption = Annotated[list[str] | None, typer.Option(
    "--max-kld", help="KLD gate TYPE=VALUE, repeatable. Defaults for real checkpoints: Q8_0=0.005 Q5_K_M=0.03 "
    "Q4_K_M=0.05; a smolconv fixture is measured but not gated unless you give one.")]
ReserveOption = Annotated[str, typer.Option("--reserve", help="VRAM left free for the desktop and other programs.")]
KvTypeOption = Annotated[str, typer.Option("--kv-type", help="KV cache type: f16 or q8_0 (OLLAMA_KV_CACHE_TYPE).")]
NumCtxOption = Annotated[int | None, typer.Option(
    "--num-ctx", help="Plan this context only, offloading layers if needed (default: the largest that fits).")]
NameOption = Annotated[str | None, typer.Option(
    "--name", help="Ollama model name before ':' (default: from the checkpoint, e.g. smolvlm2).")]
AdapterOption = Annotated[str | None, typer.Option(
    "--adapter", help="A PEFT LoRA/DoRA adapter (directory or Hub id) to apply to the checkpoint.")]
AdapterRevisionOption = Annotated[str | None, typer.Option(
    "--adapter-revision", help="Branch, tag or commit of a Hub adapter to pin.")]
AdapterFormatOption = Annotated[str, typer.Option(
    "--adapter-format", help="merge: merge it in float32, then convert (default; any adapter); gguf: convert the "
    "base once and the adapter to a GGUF LoRA (text-only adapters).")]
PresetOption = Annotated[list[str] | None, typer.Option(
    "--preset", "-p", help="general, caption, ocr, vqa or all (repeatable; default: all).")]


def _run_stage(llama_cpp: str | None, stage):
    """Find the toolchain and run `stage(toolchain, progress)` under a progress bar; errors become one line."""
    from smolconv.toolchain import find_toolchain

    try:
        toolchain = find_toolchain(llama_cpp)
        bar, progress = _progress_bar()
        with bar:
            return stage(toolchain, progress)
    except SmolconvError as exc:
        raise _fail(exc) from None


def _print_notices(notices: list[str]) -> None:
    for notice in notices:
        err_console.print(f"[bold yellow]notice:[/] {notice}", highlight=False, soft_wrap=True)


def _print_quant_reports(result) -> None:
    if not result.reports:
        return
    table = Table(title="quantized variants (tensor types read back from each GGUF)")
    for column in ("type", "file", "MiB", "bits/weight", "tensor types", "fell back", "time"):
        table.add_column(column, overflow="fold")
    for r in result.reports:
        kinds = ", ".join(f"{t} {n}" for t, n in r.tensor_types.items())
        fell = f"{r.n_fallbacks}/{r.n_tensors}" if r.n_fallbacks else "0"
        took = "reused" if r.skipped else f"{r.seconds:.1f} s"
        table.add_row(r.qtype, r.path.name, f"{r.size / 2**20:.1f}", f"{r.bits_per_weight:.2f}", kinds, fell, took)
    console.print(table)
    for r in result.reports:
        console.print(r.plain_summary(), highlight=False, soft_wrap=True)


@app.command()
def pull(
    model: Annotated[str, typer.Argument(help="Alias (256m, 500m, 2.2b), Hub id, or a local directory.")],
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit to pin.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Use the local Hub cache only.")] = False,
    adapter: AdapterOption = None,
    adapter_revision: AdapterRevisionOption = None,
    adapter_format: AdapterFormatOption = "merge",
    force: Annotated[bool, typer.Option("--force", help="Accept an adapter trained on another base name.")] = False,
) -> None:
    """Download a checkpoint snapshot (resumable) into the Hugging Face cache and print its path."""
    from smolconv.adapter import check_adapter_against, load_adapter
    from smolconv.pull import PullOptions
    from smolconv.pull import pull as pull_stage

    try:
        setup = load_adapter(adapter, adapter_revision, adapter_format, model, local_files_only=offline,
                             force=force) if adapter else None
        source = pull_stage(PullOptions(model, revision=revision, local_files_only=offline))
        if setup is not None:
            check_adapter_against(setup, source, force=force)
    except SmolconvError as exc:
        raise _fail(exc) from None
    pinned = f" at {source.revision}" if source.revision else ""
    console.print(f"{source.repo_id or 'local checkpoint'}{pinned}: {source.path}", soft_wrap=True, highlight=False)
    if setup is not None:
        pinned = f" at {setup.source.revision}" if setup.source.revision else ""
        console.print(f"adapter {setup.source.repo_id or setup.info.name}{pinned}: {setup.source.path} "
                      f"(r {setup.info.r}, changes {', '.join(setup.info.parts)}; fits the checkpoint)",
                      soft_wrap=True, highlight=False)


@app.command()
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory (see `smolconv pull`).")],
    out: OutOption = None,
    outtype: Annotated[str, typer.Option("--outtype", help="f16, bf16, f32 or q8_0.")] = "f16",
    adapter: AdapterOption = None,
    adapter_revision: AdapterRevisionOption = None,
    adapter_format: AdapterFormatOption = "merge",
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Convert a checkpoint to a text GGUF and a vision projector (mmproj) GGUF, checked after writing."""
    from smolconv.adapter import check_adapter_against, load_adapter
    from smolconv.pipeline import convert_source
    from smolconv.pull import Source

    source = Source(path=checkpoint, repo_id=None, revision=None, model=str(checkpoint))
    try:
        setup = load_adapter(adapter, adapter_revision, adapter_format, str(checkpoint), force=force) \
            if adapter else None
        if setup is not None:
            check_adapter_against(setup, source, force=force)
    except SmolconvError as exc:
        raise _fail(exc) from None
    out = out or Path("out") / (setup.info.name if setup else checkpoint.resolve().name)
    result = _run_stage(llama_cpp, lambda toolchain, progress: convert_source(
        source, out, outtype, toolchain, progress, force=force, adapter=setup))
    verb = "up to date" if result.skipped else f"written in {result.seconds:.1f} s"
    console.print(f"{result.model}\n{result.mmproj}\n{verb}", soft_wrap=True, highlight=False)
    _print_notices(result.notices)
    if setup is not None:
        made = setup.merged if setup.format == "merge" else setup.gguf
        console.print(f"adapter {setup.info.name} ({setup.format}): {made}", soft_wrap=True, highlight=False)


@app.command()
def quantize(
    out: Annotated[Path, typer.Argument(help="A directory `smolconv convert` wrote (it holds build.json).")],
    types: TypesOption = None,
    imatrix: ImatrixOption = None,
    imatrix_text: ImatrixTextOption = None,
    mmproj_type: MmprojTypeOption = None,
    threads: ThreadsOption = None,
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Quantize the converted model with llama-quantize and report what each file really holds."""
    from smolconv.quantize import DEFAULT_TYPES, QuantizeOptions
    from smolconv.quantize import quantize as quantize_stage

    options = QuantizeOptions(out, tuple(types or DEFAULT_TYPES), imatrix, imatrix_text, mmproj_type, threads, force)
    result = _run_stage(llama_cpp, lambda toolchain, progress: quantize_stage(options, toolchain, progress))
    _print_quant_reports(result)


@app.command()
def build(
    model: Annotated[str, typer.Argument(help="Alias (256m, 500m, 2.2b), Hub id, or a local directory.")],
    out: OutOption = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit to pin.")] = None,
    outtype: Annotated[str, typer.Option("--outtype", help="f16, bf16, f32 or q8_0.")] = "f16",
    types: TypesOption = None,
    imatrix: ImatrixOption = None,
    imatrix_text: ImatrixTextOption = None,
    mmproj_type: MmprojTypeOption = None,
    threads: ThreadsOption = None,
    offline: Annotated[bool, typer.Option("--offline", help="Use the local Hub cache only.")] = False,
    adapter: AdapterOption = None,
    adapter_revision: AdapterRevisionOption = None,
    adapter_format: AdapterFormatOption = "merge",
    presets: PresetOption = None,
    name: NameOption = None,
    vram: VramOption = "8GiB",
    reserve: ReserveOption = "512MiB",
    kv_type: KvTypeOption = "f16",
    create: Annotated[bool, typer.Option("--create", help="Also create the models in Ollama.")] = False,
    via: Annotated[str, typer.Option("--via", help="auto, cli or api (see `smolconv package`).")] = "auto",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="End with `smolconv verify`.")] = True,
    max_kld: MaxKldOption = None,
    smoke: Annotated[bool, typer.Option("--smoke/--no-smoke", help="End with `smolconv smoke`.")] = True,
    backend: Annotated[str, typer.Option(
        "--backend", help="Smoke on llama-server (started per variant) or ollama (needs --create).")] = "llama-server",
    publish: Annotated[str | None, typer.Option(
        "--publish", metavar="USER/NAME", help="End with `smolconv publish` to this Hub repo if every check passed.")]
    = None,
    force: ForceOption = False,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Run pull → convert → quantize → plan → package → verify → smoke (→ publish); unchanged steps are skipped."""
    from smolconv.pipeline import BuildOptions
    from smolconv.pipeline import build as build_pipeline
    from smolconv.quantize import DEFAULT_TYPES

    options = BuildOptions(
        model=model, out_dir=out, revision=revision, outtype=outtype, types=tuple(types or DEFAULT_TYPES),
        imatrix=imatrix, imatrix_text=imatrix_text, mmproj_type=mmproj_type, threads=threads, force=force,
        local_files_only=offline, presets=tuple(presets or ()), name=name, create=create, via=via,
        verify=verify, smoke=smoke, backend=backend, adapter=adapter, adapter_revision=adapter_revision,
        adapter_format=adapter_format, publish=publish)
    try:
        options.settings = _plan_settings(vram, reserve, None, kv_type, None)
        options.gates = _gates(1e-4, max_kld)
    except SmolconvError as exc:
        raise _fail(exc) from None
    result = _run_stage(llama_cpp, lambda toolchain, progress: build_pipeline(options, toolchain, progress))
    converted = "reused" if result.converted.skipped else f"converted in {result.converted.seconds:.1f} s"
    console.print(f"{result.converted.model.name} + {result.converted.mmproj.name}: {converted}",
                  soft_wrap=True, highlight=False)
    _print_notices(result.converted.notices)
    if result.adapter is not None:
        a = result.adapter
        made = a.merged if a.format == "merge" else a.gguf
        verb = "reused" if a.skipped else f"{'merged' if a.format == 'merge' else 'converted'} in {a.seconds:.1f} s"
        console.print(f"adapter {a.info.name} (r {a.info.r}, {a.format}): {made}: {verb}", soft_wrap=True,
                      highlight=False)
    _print_quant_reports(result.quantized)
    if result.packaged:
        _print_plans([m.plan for m in result.packaged.models if m.preset == result.packaged.models[0].preset],
                     "plan (num_ctx and num_gpu written into the Modelfiles)")
        _print_packaged(result.packaged)
    if result.verified:
        _print_verify(result.verified)
    elif result.verify_reused:
        console.print("verify: passed before on these same files (build.json); `smolconv verify` reruns it",
                      highlight=False)
    for report in result.smoked:
        _print_smoke(report)
    if result.smoke_reused:
        console.print(f"smoke: {', '.join(result.smoke_reused)} passed before on these same files (build.json); "
                      "`smolconv smoke` reruns it", highlight=False, soft_wrap=True)
    if result.published:
        _print_published(result.published)
    console.print(f"build record: {result.out_dir / 'build.json'}", soft_wrap=True, highlight=False)
    if not result.passed:
        err_console.print(f"[bold red]build checks failed[/] {'; '.join(result.failures)}", highlight=False,
                          soft_wrap=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------
# plan

def _plan_settings(vram: str, reserve: str, overhead: str | None, kv_type: str, num_ctx: int | None,
                   max_ctx: int | None = None):
    from smolconv.plan import PlanSettings, parse_size

    return PlanSettings(vram=parse_size(vram), reserve=parse_size(reserve),
                        overhead=None if overhead is None else parse_size(overhead),
                        kv_type=kv_type.lower(), num_ctx=num_ctx, max_ctx=max_ctx)


def _print_plans(plans, title: str) -> None:
    from smolconv.plan import format_bytes

    estimated = any(p.variant.estimated for p in plans)
    table = Table(title=title, caption="weights estimated from the config dimensions" if estimated else None)
    for column in ("variant", "files", "num_ctx", "num_gpu", "mmproj", "KV", "GPU total", "free", "img tokens"):
        table.add_column(column, no_wrap=True)
    for p in plans:
        m, v = p.memory, p.variant
        layers = v.text.n_layer + 1
        table.add_row(
            v.name,
            format_bytes(v.text.weight_bytes + v.projector.weight_bytes),
            str(p.num_ctx),
            f"{p.num_gpu}/{layers}" if p.num_gpu == layers else f"[yellow]{p.num_gpu}/{layers}[/]",
            "GPU" if m.projector_on_device else "[yellow]CPU[/]",
            format_bytes(m.kv_cache),
            format_bytes(m.total),
            format_bytes(p.free),
            str(v.projector.max_image_tokens),
        )
    console.print(table)
    seen: set[str] = set()
    for p in plans:
        for note in p.notes:
            shared = all(note in other.notes for other in plans)
            if note not in seen:
                console.print(note if shared else f"{p.variant.name}: {note}", highlight=False, soft_wrap=True)
                seen.add(note)


NOT_MEASURED = "not measured (no CUDA)"


def _print_process_memory(plans, measured, worst) -> None:
    """The process's own GPU memory (CUDA builds) beside its buffers and the plan's total."""
    from smolconv.plan import format_bytes

    table = Table(title="the process's GPU memory: idle, after the largest image, after a full context")
    for column in ("variant", "plan total", "CUDA buffers", "idle", "after image", "peak", "outside buffers",
                   "read by"):
        table.add_column(column)
    size = lambda n: "?" if n is None else format_bytes(n)  # noqa: E731
    for p in plans:
        case = worst.get(p.variant.name)
        if case is None:
            table.add_row(p.variant.name, format_bytes(p.memory.total), NOT_MEASURED, "", "", "", "", "")
            continue
        buffers = measured[p.variant.name].device_total
        peak = case.peak
        table.add_row(p.variant.name, format_bytes(p.memory.total), format_bytes(buffers), size(case.idle),
                      size(case.after_image), size(peak), size(None if peak is None else peak - buffers), case.how)
    console.print(table)


@app.command()
def plan(
    target: Annotated[str, typer.Argument(help="A build directory, or 256m / 500m / 2.2b (no download needed).")],
    types: TypesOption = None,
    vram: VramOption = "8GiB",
    reserve: ReserveOption = "512MiB",
    overhead: Annotated[str | None, typer.Option(
        "--overhead", help="A flat figure for the CUDA runtime outside llama.cpp's buffers (default: the model "
        "fitted on an H100: context, cuBLAS, memory pool).")] = None,
    kv_type: KvTypeOption = "f16",
    num_ctx: NumCtxOption = None,
    max_ctx: Annotated[int | None, typer.Option("--max-ctx", help="Never plan a context above this.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable plan.")] = False,
    measure: Annotated[bool, typer.Option(
        "--measure", help="Also start llama-server on each built variant and compare its buffer sizes; on a CUDA "
        "build also the process's GPU memory after the largest image and a full context.")] = False,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Fit each variant to the GPU: the largest num_ctx with every layer and the projector on it, else the offload."""
    import json

    from smolconv.plan import PlanOptions, format_bytes, measure_llama_server
    from smolconv.plan import plan as plan_stage

    try:
        settings = _plan_settings(vram, reserve, overhead, kv_type, num_ctx, max_ctx)
        plans = plan_stage(PlanOptions(target, tuple(types or ()), settings))
        measured, worst = {}, {}
        if measure:
            import tempfile

            from smolconv.toolchain import find_toolchain
            from smolconv.workload import measure_worst_case

            toolchain = find_toolchain(llama_cpp)
            with err_console.status("measuring with llama-server"), tempfile.TemporaryDirectory() as images:
                for p in plans:
                    measured[p.variant.name] = measure_llama_server(toolchain, p.variant, p.num_ctx, settings)
                    if measured[p.variant.name].on_cuda:
                        worst[p.variant.name] = measure_worst_case(toolchain, p.variant, settings, Path(images))
    except SmolconvError as exc:
        raise _fail(exc) from None
    if json_out:
        data = [p.to_dict() for p in plans]
        for item in data:
            if item["variant"] in measured:
                item["measured_by_llama_server"] = vars(measured[item["variant"]])
                case = worst.get(item["variant"])
                item["process_gpu_memory"] = case.to_dict() if case else NOT_MEASURED
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    _print_plans(plans, f"plan for {target} on a {format_bytes(settings.vram)} GPU "
                        f"(reserve {format_bytes(settings.reserve)}, KV {settings.kv_type})")
    if measured:
        from smolconv.plan import estimate

        table = Table(title="estimate vs llama-server (this toolchain's backend, everything on one device)")
        for column in ("variant", "num_ctx", "weights est/real", "KV est/real", "total est/real"):
            table.add_column(column)
        for p in plans:
            m = measured[p.variant.name]
            e = estimate(p.variant, p.num_ctx, settings, cpu_backend=True)
            table.add_row(p.variant.name, str(p.num_ctx),
                          f"{format_bytes(e.weights + e.projector_weights)} / "
                          f"{format_bytes(m.weights + m.projector_weights)}",
                          f"{format_bytes(e.kv_cache)} / {format_bytes(m.kv_cache)}",
                          f"{format_bytes(e.total)} / {format_bytes(m.total)}")
        console.print(table)
        _print_process_memory(plans, measured, worst)


# --------------------------------------------------------------------------------------------------
# package

@app.command()
def package(
    out: Annotated[Path, typer.Argument(help="A build directory (it holds build.json and the GGUF files).")],
    types: TypesOption = None,
    presets: PresetOption = None,
    name: NameOption = None,
    vram: VramOption = "8GiB",
    reserve: ReserveOption = "512MiB",
    kv_type: KvTypeOption = "f16",
    num_ctx: NumCtxOption = None,
    create: Annotated[bool, typer.Option("--create", help="Also create the models in Ollama.")] = False,
    via: Annotated[str, typer.Option("--via", help="auto (the ollama CLI if on PATH, else the HTTP API), cli or api.")]
    = "auto",
    force: Annotated[bool, typer.Option("--force", help="Replace Modelfiles smolconv did not write.")] = False,
) -> None:
    """Write a Modelfile per variant and preset (num_ctx and num_gpu from plan); with --create, `ollama create` them."""
    from smolconv.package import PackageOptions
    from smolconv.package import package as package_stage

    if via not in ("auto", "cli", "api"):
        raise _fail(SmolconvError(f"unknown --via {via!r}", "use auto, cli or api"))
    try:
        settings = _plan_settings(vram, reserve, None, kv_type, num_ctx)
        options = PackageOptions(out, tuple(types or ()), tuple(presets or ()), name, settings, force, create, via)
        bar, progress = _progress_bar()
        with bar:
            result = package_stage(options, progress)
    except SmolconvError as exc:
        raise _fail(exc) from None
    _print_packaged(result)


def _print_packaged(result) -> None:
    table = Table(title="Ollama models")
    for column in ("tag", "Modelfile", "num_ctx", "num_gpu", "fits"):
        table.add_column(column, overflow="fold")
    for m in result.models:
        table.add_row(m.tag, m.modelfile.name, str(m.plan.num_ctx), str(m.plan.num_gpu),
                      "yes" if m.plan.fits else "[yellow]partly[/]")
    console.print(table)
    if result.created:
        c = result.created
        console.print(f"created {len(c.created)} models with Ollama {c.version} via the {c.route.upper()} "
                      f"({len(c.uploaded)} files uploaded, {len(c.reused)} already there)", highlight=False)
    else:
        console.print("To create them in Ollama, run `smolconv package --create` or:", highlight=False)
        for command in result.create_commands():
            console.print(f"  {command}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------------
# publish

@app.command()
def publish(
    out: Annotated[Path, typer.Argument(help="A build directory (it holds build.json and the GGUF files).")],
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
    """Upload a build to the Hub in ggml-org's layout (GGUF files, mmproj, template, params, model card)."""
    from smolconv.publish import PublishOptions
    from smolconv.publish import publish as publish_stage

    options = PublishOptions(out, repo, tuple(types or ()), preset, private, dry_run, force, base_model)
    try:
        with err_console.status("publishing"):
            result = publish_stage(options)
    except SmolconvError as exc:
        raise _fail(exc) from None
    _print_published(result)


def _print_published(result) -> None:
    names = ", ".join(f.name for f in result.files)
    if result.folder:
        console.print(f"wrote {len(result.files)} files for {result.repo_id} into {result.folder} (nothing "
                      f"uploaded): {names}", highlight=False, soft_wrap=True)
        return
    console.print(f"published {len(result.files)} files to https://huggingface.co/{result.repo_id}: {result.url}",
                  highlight=False, soft_wrap=True)
    console.print(f"  {result.run_command()}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------------
# serve, smoke, verify

VariantOption = Annotated[str | None, typer.Option(
    "--type", "-t", help="The variant to serve: Q4_K_M, Q5_K_M, Q8_0, F16 (default: Q4_K_M if built).")]


@app.command()
def serve(
    out: Annotated[Path, typer.Argument(help="A build directory.")],
    variant: VariantOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    num_ctx: NumCtxOption = None,
    vram: VramOption = "8GiB",
    reserve: ReserveOption = "512MiB",
    kv_type: KvTypeOption = "f16",
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for llama-server.")] = None,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Serve one variant with llama-server (text GGUF + projector, context from plan) until Ctrl-C or SIGTERM."""
    from smolconv.serve import ServeOptions
    from smolconv.serve import serve as serve_stage
    from smolconv.toolchain import find_toolchain

    def on_ready(server) -> None:
        console.print(f"serving {server.variant.name} of {out} at {server.url} (num_ctx {server.num_ctx}); "
                      "Ctrl-C stops it", highlight=False, soft_wrap=True)
        console.print(f"  OpenAI-compatible API: {server.url}/v1/chat/completions", highlight=False)

    try:
        settings = _plan_settings(vram, reserve, None, kv_type, num_ctx)
        options = ServeOptions(out, variant, host=host, port=port, num_ctx=num_ctx, settings=settings, threads=threads)
        serve_stage(options, find_toolchain(llama_cpp), on_ready)
    except SmolconvError as exc:
        raise _fail(exc) from None
    console.print("stopped", highlight=False)


def _print_smoke(report) -> None:
    a_fmt = lambda v, f="{:.2f}": "" if v is None else f.format(v)  # noqa: E731
    info = report.backend_info
    title = f"smoke: {report.variant} on {report.backend}"
    if info.get("ollama"):
        title += f" (Ollama {info['ollama']})"
    noise = {frozenset({"vision"}): "random vision tower (smolconv fixture): image answers are not judged on "
             "stopping", frozenset({"vision", "text"}): "random weights (smolconv fixture): answers are not judged "
             "on stopping"}.get(report.random_parts)
    table = Table(title=title, caption=noise)
    for column in ("case", "result", "why", "prompt tok", "TTFT s", "prompt tok/s", "decode tok/s", "wall s",
                   "answer"):
        table.add_column(column, overflow="fold")
    for r in report.results:
        a = r.answer
        verdict = "[green]pass[/]" if r.passed else "[bold red]FAIL[/]"
        table.add_row(r.name, f"{verdict} on {r.covered_by}" if r.covered_by else verdict, r.reason,
                      a_fmt(a and a.prompt_tokens, "{}"), a_fmt(a and a.ttft_s), a_fmt(a and a.prompt_tps, "{:.1f}"),
                      a_fmt(a and a.decode_tps, "{:.1f}"), a_fmt(a and a.wall_s, "{:.1f}"),
                      (a.text.strip()[:60] or "(empty)") if a else "")
    console.print(table)
    console.print(f"report: {report.path}", highlight=False, soft_wrap=True)


@app.command()
def smoke(
    target: Annotated[str, typer.Argument(help="A build directory, or an Ollama model tag with --backend ollama.")],
    backend: Annotated[str, typer.Option(
        "--backend", help="llama-server, ollama, or onnx (a folder `export-onnx` wrote).")] = "llama-server",
    types: TypesOption = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="A running llama-server (default: smolconv starts one per variant), or the Ollama host.")] = None,
    cases: Annotated[list[str] | None, typer.Option("--case", help="Run only this case (repeatable).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Also fail answers without the expected words.")] = False,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Where the JSON reports go.")] = None,
    num_ctx: NumCtxOption = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for llama-server.")] = None,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Ask each variant text and image questions and judge the answers; exit 1 if a case fails."""
    from smolconv.smoke import SmokeOptions
    from smolconv.smoke import smoke as smoke_stage
    from smolconv.toolchain import find_toolchain

    options = SmokeOptions(target=target, backend=backend, types=tuple(types or ()), url=url,
                           report_dir=report_dir, cases=tuple(cases or ()), strict=strict, num_ctx=num_ctx,
                           threads=threads)
    try:
        needs_server = backend == "llama-server" and not url
        toolchain = find_toolchain(llama_cpp) if needs_server else None
        bar, progress = _progress_bar()
        with bar:
            reports = smoke_stage(options, toolchain, progress)
    except SmolconvError as exc:
        raise _fail(exc) from None
    for report in reports:
        _print_smoke(report)
    failed = [f"{r.variant}: {', '.join(c.name for c in r.results if not c.passed)}" for r in reports if not r.passed]
    if failed:
        err_console.print(f"[bold red]smoke failed[/] {'; '.join(failed)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _parse_gates(max_kld: list[str] | None) -> dict[str, float]:
    gates = {}
    for item in max_kld or ():
        name, _, value = item.partition("=")
        try:
            gates[name.strip().upper()] = float(value)
        except ValueError:
            raise SmolconvError(f"--max-kld {item!r} is not TYPE=NUMBER", "write e.g. --max-kld Q4_K_M=0.1") from None
    return gates


def _gates(max_nmse: float, max_kld: list[str] | None):
    from smolconv.verify import Gates

    return Gates(max_nmse=max_nmse, max_vision_nmse=max_nmse, max_kld=_parse_gates(max_kld))


def _print_verify(report) -> None:
    text = Table(title="F16 against transformers (float32): last-token logits")
    for column in ("prompt", "tokens", "NMSE", "top-1", "tokenizer"):
        text.add_column(column, overflow="fold")
    for r in report.text:
        text.add_row(repr(r.prompt[:50]), str(r.n_tokens), f"{r.nmse:.2e}",
                     "same" if r.top1_same else "[red]differs[/]",
                     "same ids" if r.tokenizer_same else "[yellow]differs[/]")
    console.print(text)
    console.print(f"max NMSE {report.max_nmse:.2e} (gate < {report.gates.max_nmse:.0e}, goal < 1e-06)",
                  highlight=False)
    if report.adapter_kl is not None:
        note = "" if report.adapter_kl > 1e-6 else " — the adapter changes nothing: was it trained (lora_B non-zero)?"
        console.print(f"adapter effect: KL(base + adapter ‖ base) up to {report.adapter_kl:.4f} nats{note}",
                      highlight=False)
    v = report.vision
    console.print(f"projector vs HF connector, one {v.n_tokens}-token tile: NMSE {v.nmse:.2e}" if v.checked
                  else f"projector: {v.reason}", highlight=False)
    if report.kld:
        kld = Table(title=f"each variant against F16 (llama-perplexity --kl-divergence, F16 PPL {report.f16_ppl})")
        for column in ("variant", "mean KLD", "99% KLD", "same top token", "PPL ratio", "gate", "result"):
            kld.add_column(column)
        for k in report.kld:
            kld.add_row(k.variant, f"{k.mean_kld:.4f}", "" if k.kld_p99 is None else f"{k.kld_p99:.4f}",
                        f"{100 * k.same_top:.1f}%", "" if k.ppl_ratio is None else f"{k.ppl_ratio:.4f}",
                        "not gated" if k.gate is None else f"≤ {k.gate}",
                        "[green]pass[/]" if k.passed else "[bold red]FAIL[/]")
        console.print(kld)
    console.print(f"report: {report.path}", highlight=False, soft_wrap=True)


@app.command()
def verify(
    out: Annotated[Path, typer.Argument(help="A build directory.")],
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="The HF checkpoint (default: the one build.json records).")] = None,
    types: TypesOption = None,
    max_nmse: Annotated[float, typer.Option("--max-nmse", help="Gate for the F16 logits.")] = 1e-4,
    max_kld: MaxKldOption = None,
    text: Annotated[Path | None, typer.Option("--text", help="Text for the KL divergence (default: shipped).")] = None,
    vision: Annotated[bool, typer.Option("--vision/--no-vision", help="Also compare the projector.")] = True,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for llama.cpp.")] = None,
    llama_cpp: LlamaCppOption = None,
) -> None:
    """Compare F16 with transformers (NMSE, top-1) and each variant with F16 (KL divergence); exit 1 over a gate."""
    from smolconv.verify import KLD_TEXT, VerifyOptions
    from smolconv.verify import verify as verify_stage

    try:
        gates = _gates(max_nmse, max_kld)
    except SmolconvError as exc:
        raise _fail(exc) from None
    options = VerifyOptions(out, checkpoint=checkpoint, types=tuple(t.upper() for t in types) if types else None,
                            text=text or KLD_TEXT, gates=gates, vision=vision, threads=threads)
    report = _run_stage(llama_cpp, lambda toolchain, progress: verify_stage(options, toolchain, progress))
    _print_verify(report)
    if not report.passed:
        err_console.print(f"[bold red]verify failed[/] {'; '.join(report.failures)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------
# ONNX

def _print_onnx_verify(report) -> None:
    text = Table(title="ONNX fp32 against transformers (float32): last-token logits")
    for column in ("prompt", "tokens", "NMSE", "top-1"):
        text.add_column(column, overflow="fold")
    for r in report.text:
        text.add_row(repr(r.prompt[:50]), str(r.n_tokens), f"{r.nmse:.2e}",
                     "same" if r.top1_same else "[red]differs[/]")
    console.print(text)
    console.print(f"max NMSE {report.max_nmse:.2e} (gate < {report.max_nmse_gate:.0e}); vision features vs HF "
                  f"connector: cosine {report.vision_cosine:.6f} (gate >= {report.min_cosine_gate}), "
                  f"NMSE {report.vision_nmse:.2e}", highlight=False, soft_wrap=True)
    if report.variants:
        table = Table(title="each variant against fp32")
        for column in ("variant", "mean KLD", "same top token", "vision cosine"):
            table.add_column(column)
        for v in report.variants:
            table.add_row(v.variant, f"{v.mean_kld:.4f}", f"{100 * v.same_top:.1f}%", f"{v.vision_cosine:.5f}")
        console.print(table)
    console.print(f"report: {report.path}", highlight=False, soft_wrap=True)


@app.command("export-onnx")
def export_onnx(
    model: Annotated[str, typer.Argument(help="Alias (256m, 500m, 2.2b), Hub id, or a local directory.")],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: out/<model name>-onnx).")] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--type", "-t", help="fp16, quantized, q4 or q4f16, repeatable (default: fp16 quantized q4); the fp32 "
        "graphs are always written, the variants are made from them.")]
    = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit to pin.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Use the local Hub cache only.")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify",
                                         help="Compare fp32 with transformers and each variant with fp32.")] = True,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for onnxruntime in verify.")] = None,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", help="A PEFT LoRA/DoRA adapter (directory or Hub id), merged in float32 before export.")] = None,
    adapter_revision: AdapterRevisionOption = None,
    force: ForceOption = False,
) -> None:
    """Export the three ONNX graphs (vision_encoder, embed_tokens, decoder_model_merged) and their variants."""
    from smolconv.onnx.export import DEFAULT_VARIANTS, ExportOptions
    from smolconv.onnx.export import export_onnx as export_stage

    options = ExportOptions(model, out, tuple(types or DEFAULT_VARIANTS), force, revision, offline, adapter,
                            adapter_revision)
    try:
        bar, progress = _progress_bar()
        with bar:
            result = export_stage(options, progress)
            report = None
            if verify:
                from smolconv.onnx.verify import verify_onnx

                report = verify_onnx(result.out_dir, threads=threads, progress=progress)
    except SmolconvError as exc:
        raise _fail(exc) from None
    table = Table(title=f"ONNX export: {result.out_dir}")
    for column in ("file", "MiB", ""):
        table.add_column(column, overflow="fold")
    for name, path in result.files.items():
        size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "_data")) if p.exists())
        table.add_row(str(path.relative_to(result.out_dir)), f"{size / 2**20:.1f}",
                      "reused" if name in result.reused else "written")
    console.print(table)
    if report is not None:
        _print_onnx_verify(report)
        if not report.passed:
            err_console.print(f"[bold red]verify failed[/] {'; '.join(report.failures)}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1)
