"""Ask about a video the way SmolVLM2 was trained on video: a thin use of `smolconv.checks.ask`.

    python examples/video_frames.py out/smolvlm2-256m clip.mp4 "What happens in this video?"
    python examples/video_frames.py smolvlm2:256m-video-instruct-q8_0-video clip.mp4 --backend ollama

`smolconv ask BUILD "question" --video clip.mp4` does the same from the shell. Frames are sampled as
transformers samples them (1 per second, at most --max-frames, spread evenly over a longer video), each
squared to the model's tile, and sent in SmolVLM2's video prompt ("You are provided the following series of
four frames from a 0:00:04 [H:MM:SS] video." then "Frame from 00:01:" before each frame). On a build
directory, llama-server runs with the build's video projector (one tile and an overview a frame, about 134
tokens on 256M/500M instead of about 860 for a 16:9 frame tiled like a photo); on Ollama, use the model's
`-video` tag, which `smolconv package` creates with that projector.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import run

from smolconv.checks.ask import AskOptions, ask
from smolconv.core.choices import BackendKind


def main() -> int:
    parser = argparse.ArgumentParser(description="Ask a question about a video.")
    parser.add_argument("target", help="a build directory (llama-server) or an Ollama model tag (ollama)")
    parser.add_argument("video", type=Path)
    parser.add_argument("question", nargs="?", default="Describe what happens in this video.")
    parser.add_argument("--backend", choices=[b.value for b in BackendKind if b is not BackendKind.ONNX],
                        default=BackendKind.LLAMA_SERVER.value)
    parser.add_argument("--url", help="Ollama's address (default OLLAMA_HOST)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames per second to sample (default 1)")
    parser.add_argument("--max-frames", type=int, default=64, help="at most this many frames (default 64)")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest answer, in tokens (default 256)")
    args = parser.parse_args()

    toolchain = None
    if args.backend == BackendKind.LLAMA_SERVER:
        from smolconv.llamacpp.toolchain import find_toolchain

        toolchain = find_toolchain()
    result = ask(AskOptions(args.target, args.question, video=args.video, fps=args.fps, max_frames=args.max_frames,
                            backend=BackendKind(args.backend), max_tokens=args.max_tokens, url=args.url),
                 toolchain, on_text=lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    answer = result.answer
    print(f"\n[{len(result.frames)} frames at {', '.join(f'{t:.1f}' for t in result.frames)} s; "
          f"{answer.prompt_tokens} prompt tokens, {answer.completion_tokens} generated, {answer.wall_s:.1f} s]")
    return 0


if __name__ == "__main__":
    run(main)
