"""ask: one question to a build, an Ollama model or an ONNX export, with images or a video; the answer streams."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from smolconv.checks.ask import AskOptions
from smolconv.checks.ask import ask as ask_stage
from smolconv.cli._options import (
    DEFAULT_RESERVE_TEXT,
    DEFAULT_VRAM_TEXT,
    ApiKeyFileOption,
    ReserveOption,
    ThreadsOption,
    VramOption,
    plan_settings,
)
from smolconv.cli._output import plain
from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.toolchain import find_toolchain
from smolconv.runtime.auth import read_api_key


def ask(
    target: Annotated[str, typer.Argument(
        help="A build directory (--backend llama-server), an Ollama model tag (ollama), or an export-onnx (onnx) or "
        "export-mlx (mlx) folder.")],
    question: Annotated[str, typer.Argument(help="What to ask.")],
    images: Annotated[list[Path] | None, typer.Option("--image", "-i", help="An image to ask about (repeatable).")]
    = None,
    video: Annotated[Path | None, typer.Option(
        "--video", help="A video: frames sampled as SmolVLM2 was trained (1 fps, at most 64), in its video prompt.")]
    = None,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second to sample.")] = 1.0,
    max_frames: Annotated[int, typer.Option("--max-frames", help="At most this many frames, spread evenly.")] = 64,
    backend: Annotated[BackendKind, typer.Option(
        "--backend", help="llama-server, ollama, onnx or mlx.")] = BackendKind.LLAMA_SERVER,
    variant: Annotated[str | None, typer.Option(
        "--variant", help="llama-server: the build's variant (default Q4_K_M); onnx: fp32, fp16, q4, …")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="The longest answer, in tokens.")] = 512,
    greedy: Annotated[bool, typer.Option(
        "--greedy", help="Plain greedy decoding: no repeat penalty (as `smolconv eval` decodes).")] = False,
    repeat_penalty: Annotated[float | None, typer.Option(
        "--repeat-penalty", help="llama.cpp's repeat penalty over the last 64 tokens (default 1.1, the general "
        "preset's; on Ollama the model's Modelfile's); 1.0 is none.")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="llama-server: a running one, instead of starting one on a build; ollama: the server (default "
        "OLLAMA_HOST).")] = None,
    api_key_file: ApiKeyFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (answer, tokens, timings).")]
    = False,
    vram: VramOption = DEFAULT_VRAM_TEXT,
    reserve: ReserveOption = DEFAULT_RESERVE_TEXT,
    threads: ThreadsOption = None,
) -> None:
    """Ask a model what it sees: text, --image (repeatable) or --video, through llama-server, Ollama, ONNX or MLX.

    Sampling: temperature 0 (the most likely token) with seed 0, and llama.cpp's repeat penalty 1.1 over the last 64
    tokens (the general preset's; on Ollama the model's own Modelfile settings); --greedy or --repeat-penalty 1.0
    turns the penalty off, as `smolconv eval` does. --json says which sampling ran.
    """

    if greedy and repeat_penalty not in (None, 1.0):
        raise SmolconvError(f"--greedy and --repeat-penalty {repeat_penalty:g} disagree",
                            "--greedy is --repeat-penalty 1.0: give one of them")
    options = AskOptions(target, question, tuple(images or ()), video, fps, max_frames, backend, variant, max_tokens,
                         url, plan_settings(vram, reserve, None, "f16", None), threads,
                         api_key=read_api_key(api_key_file), repeat_penalty=1.0 if greedy else repeat_penalty)
    toolchain = find_toolchain(None) if backend is BackendKind.LLAMA_SERVER and not url else None

    def stream(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    # No progress display: it would interleave with the streamed answer; the answer is the progress.
    result = ask_stage(options, toolchain, None if as_json else stream)
    answer = result.answer
    if as_json:
        plain(json.dumps({"answer": answer.text, "finish_reason": answer.finish_reason,
                          "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
                          "wall_s": round(answer.wall_s, 3), "ttft_s": answer.ttft_s, "prompt_tps": answer.prompt_tps,
                          "decode_tps": answer.decode_tps, "frames": result.frames,
                          "frame_tokens": result.frame_tokens, "sampling": result.sampling,
                          "backend": result.backend}))
        return
    sys.stdout.write("\n")
    frames = f"{len(result.frames)} frames, " if result.frames else ""
    print(f"[{frames}{answer.prompt_tokens} prompt tokens, {answer.completion_tokens} generated, "
          f"{answer.wall_s:.1f} s]", file=sys.stderr)
