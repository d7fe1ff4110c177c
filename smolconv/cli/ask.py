"""ask: one question to a build, an Ollama model or an ONNX export, with images or a video; the answer streams."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from smolconv.choices import AskBackend
from smolconv.cli._options import ReserveOption, ThreadsOption, VramOption, plan_settings
from smolconv.cli._output import plain


def ask(
    target: Annotated[str, typer.Argument(
        help="A build directory (--backend server), an Ollama model tag (ollama), or an export-onnx (onnx) or "
        "export-mlx (mlx) folder.")],
    question: Annotated[str, typer.Argument(help="What to ask.")],
    images: Annotated[list[Path] | None, typer.Option("--image", "-i", help="An image to ask about (repeatable).")]
    = None,
    video: Annotated[Path | None, typer.Option(
        "--video", help="A video: frames sampled as SmolVLM2 was trained (1 fps, at most 64), in its video prompt.")]
    = None,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second to sample.")] = 1.0,
    max_frames: Annotated[int, typer.Option("--max-frames", help="At most this many frames, spread evenly.")] = 64,
    backend: Annotated[AskBackend, typer.Option("--backend", help="server, ollama, onnx or mlx.")] = AskBackend.SERVER,
    variant: Annotated[str | None, typer.Option(
        "--variant", help="server: the build's variant (default Q4_K_M); onnx: fp32, fp16, q4, …")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="The longest answer, in tokens.")] = 512,
    url: Annotated[str | None, typer.Option("--url", help="ollama: the server (default OLLAMA_HOST).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (answer, tokens, timings).")]
    = False,
    vram: VramOption = "8GiB",
    reserve: ReserveOption = "512MiB",
    threads: ThreadsOption = None,
) -> None:
    """Ask a model what it sees: text, --image (repeatable) or --video, through llama-server, Ollama, ONNX or MLX."""
    from smolconv.ask import AskOptions
    from smolconv.ask import ask as ask_stage
    from smolconv.toolchain import find_toolchain

    options = AskOptions(target, question, tuple(images or ()), video, fps, max_frames, backend, variant, max_tokens,
                         url, plan_settings(vram, reserve, None, "f16", None), threads)
    toolchain = find_toolchain(None) if backend is AskBackend.SERVER else None

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
                          "frame_tokens": result.frame_tokens, "backend": result.backend}))
        return
    sys.stdout.write("\n")
    frames = f"{len(result.frames)} frames, " if result.frames else ""
    print(f"[{frames}{answer.prompt_tokens} prompt tokens, {answer.completion_tokens} generated, "
          f"{answer.wall_s:.1f} s]", file=sys.stderr)
