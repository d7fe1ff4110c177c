"""serve, smoke, verify: run what was built, and prove that it works."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smolconv.checks.smoke import SmokeOptions
from smolconv.checks.smoke import smoke as smoke_stage
from smolconv.cli import _render
from smolconv.cli._options import (
    DEFAULT_RESERVE_TEXT,
    DEFAULT_VRAM_TEXT,
    AllowUncheckedOption,
    ApiKeyFileOption,
    BuildDirArgument,
    KvTypeOption,
    LlamaCppOption,
    MaxKldOption,
    NumCtxOption,
    ReserveOption,
    SkipCheckOption,
    ThreadsOption,
    TypesOption,
    VramOption,
    WaitOption,
    find_toolchain,
    plan_settings,
    verify_gates,
)
from smolconv.cli._output import plain, print_failed, progress_reporter
from smolconv.core.choices import BackendKind, KvType, VerifyPart
from smolconv.formats.gguf.verify import VerifyOptions
from smolconv.formats.gguf.verify import verify as verify_stage
from smolconv.reference.gates import DEFAULT_MAX_NMSE, DEFAULT_MAX_VIDEO_NMSE
from smolconv.reference.prompts import KLD_TEXT
from smolconv.runtime.auth import check_exposure, read_api_key
from smolconv.runtime.serve import ServeOptions
from smolconv.runtime.serve import serve as serve_stage

VariantOption = Annotated[str | None, typer.Option(
    "--type", "-t", help="The variant to serve: Q4_K_M, Q5_K_M, Q8_0, F16 (default: Q4_K_M if built).")]


def serve(
    out: BuildDirArgument,
    variant: VariantOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    num_ctx: NumCtxOption = None,
    vram: VramOption = DEFAULT_VRAM_TEXT,
    reserve: ReserveOption = DEFAULT_RESERVE_TEXT,
    kv_type: KvTypeOption = KvType.F16,
    threads: ThreadsOption = None,
    llama_cpp: LlamaCppOption = None,
    api_key_file: ApiKeyFileOption = None,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Serve on a non-loopback --host without an API key (anyone who reaches the port may use "
        "the model).")] = False,
) -> None:
    """Serve one variant with llama-server (text GGUF + projector, context from plan) until Ctrl-C or SIGTERM."""

    def on_ready(server) -> None:
        plain(f"serving {server.variant.name} of {out} at {server.url} (num_ctx {server.num_ctx}); Ctrl-C stops it")
        plain(f"  OpenAI-compatible API: {server.url}/v1/chat/completions")
        if options.api_key:
            plain("  every request but /health needs the API key: send `Authorization: Bearer <key>` "
                  "(the OpenAI client: api_key=<key>)")

    settings = plan_settings(vram, reserve, None, kv_type, num_ctx)
    options = ServeOptions(out, variant, host=host, port=port, num_ctx=num_ctx, settings=settings, threads=threads,
                           api_key=read_api_key(api_key_file), no_auth=no_auth)
    check_exposure(host, options.api_key, no_auth)  # before the toolchain is looked for
    serve_stage(options, find_toolchain(llama_cpp), on_ready)
    plain("stopped")


def smoke(
    target: Annotated[str, typer.Argument(help="A build directory, or an Ollama model tag with --backend ollama.")],
    backend: Annotated[BackendKind, typer.Option(
        "--backend", help="llama-server, ollama, onnx (a folder `export-onnx` wrote) or mlx (`export-mlx`).")
    ] = BackendKind.LLAMA_SERVER,
    types: TypesOption = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="A running llama-server (default: smolconv starts one per variant), or the Ollama host.")] = None,
    cases: Annotated[list[str] | None, typer.Option("--case", help="Run only this case (repeatable).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Also fail answers without the expected words.")] = False,
    report_dir: Annotated[Path | None, typer.Option("--report-dir", help="Where the JSON reports go.")] = None,
    num_ctx: NumCtxOption = None,
    threads: ThreadsOption = None,
    llama_cpp: LlamaCppOption = None,
    wait: WaitOption = False,
) -> None:
    """Ask each variant text and image questions and judge the answers; exit 1 if a case fails."""

    options = SmokeOptions(target=target, backend=backend, types=tuple(types or ()), url=url,
                           report_dir=report_dir, cases=tuple(cases or ()), strict=strict, num_ctx=num_ctx,
                           threads=threads, wait=wait)
    needs_server = backend == BackendKind.LLAMA_SERVER and not url
    toolchain = find_toolchain(llama_cpp) if needs_server else None
    with progress_reporter() as progress:
        reports = smoke_stage(options, toolchain, progress)
    for report in reports:
        _render.smoke(report)
    failed = [f"{r.variant}: {', '.join(c.name for c in r.results if not c.passed)}" for r in reports if not r.passed]
    if failed:
        print_failed("smoke failed", failed)
        raise typer.Exit(1)


def verify(
    out: BuildDirArgument,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="The HF checkpoint (default: the one build.json records).")] = None,
    types: TypesOption = None,
    max_nmse: Annotated[float, typer.Option(
        "--max-nmse", help="Gate for the F16 logits and the projector output.")] = DEFAULT_MAX_NMSE,
    max_video_nmse: Annotated[float, typer.Option(
        "--max-video-nmse", help="Gate for the video prompt's logits (image embeddings add F16 rounding).")
    ] = DEFAULT_MAX_VIDEO_NMSE,
    max_kld: MaxKldOption = None,
    allow_unchecked: AllowUncheckedOption = None,
    text: Annotated[Path | None, typer.Option("--text", help="Text for the KL divergence (default: shipped).")] = None,
    vision: Annotated[bool, typer.Option(
        "--vision/--no-vision", help="Also compare the projector, and a video prompt (--no-vision: --skip-check "
        "vision --skip-check video).")] = True,
    skip_check: SkipCheckOption = None,
    threads: ThreadsOption = None,
    llama_cpp: LlamaCppOption = None,
    wait: WaitOption = False,
) -> None:
    """Compare F16 with transformers (NMSE, top-1) and each variant with F16 (KL divergence); exit 1 over a gate."""

    options = VerifyOptions(out, checkpoint=checkpoint, types=tuple(t.upper() for t in types) if types else None,
                            text=text or KLD_TEXT, threads=threads,
                            skip=frozenset(skip_check or ()) | ({VerifyPart.VISION, VerifyPart.VIDEO} if not vision
                                                               else set()),
                            gates=verify_gates(max_nmse, max_kld, allow_unchecked, max_video_nmse), wait=wait)
    toolchain = find_toolchain(llama_cpp)
    with progress_reporter() as progress:
        report = verify_stage(options, toolchain, progress)
    _render.verify(report)
    if not report.passed:
        print_failed("verify failed", report.failures)
        raise typer.Exit(1)
