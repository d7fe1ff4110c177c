"""Ask a SmolVLM2 model one question about one image.

    smolconv serve out/smolvlm2-256m &                  # or any build directory
    python examples/analyze_image.py photo.jpg "What is in this picture?"
    python examples/analyze_image.py photo.jpg --backend ollama --model smolvlm2:2.2b-instruct-q4_K_M

Prints the answer, then a line with the prompt size and the timings the server reported.
"""

from __future__ import annotations

from _common import backend_parser, open_backend, run

from smolconv.media.images import load_image
from smolconv.runtime.chat import Message


def main() -> int:
    parser = backend_parser("Ask one question about one image.")
    parser.add_argument("image", help="a JPEG, PNG or WebP file")
    parser.add_argument("question", nargs="?", default="Describe this image.")
    args = parser.parse_args()

    image = load_image(args.image)  # a missing or corrupt file stops here, before anything is sent
    backend = open_backend(args)
    answer = backend.chat([Message.of("user", args.question, [image])], args.max_tokens)
    print(answer.text.strip())
    stopped = "stopped by itself" if answer.finish_reason == "stop" else f"cut at {args.max_tokens} tokens"
    rate = f", {answer.decode_tps:.1f} tok/s" if answer.decode_tps else ""
    print(f"[{answer.prompt_tokens} prompt tokens, {answer.completion_tokens} generated{rate}, "
          f"{answer.wall_s:.1f} s, {stopped}]")
    return 0


if __name__ == "__main__":
    run(main)
