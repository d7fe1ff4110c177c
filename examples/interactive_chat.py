"""A multi-turn chat with images, in the terminal.

    python examples/interactive_chat.py --backend ollama --model smolvlm2:2.2b-instruct-q4_K_M
    python examples/interactive_chat.py                        # against `smolconv serve` on port 8080

Type a message and press Enter. `/image PATH` attaches a picture to your next message, `/reset` starts
over, `/quit` (or Ctrl-D) leaves. The whole conversation, images included, goes with every turn, as both
Ollama's /api/chat and the OpenAI API expect: SmolVLM2 keeps no state between requests.
With --backend ollama the requests go through the official `ollama` Python client.
"""

from __future__ import annotations

import sys

from _common import backend_parser, open_backend, run

from smolconv.core.errors import SmolconvError
from smolconv.media.images import load_image
from smolconv.runtime.chat import Message


def main() -> int:
    parser = backend_parser("Chat with a SmolVLM2 model, with images.")
    args = parser.parse_args()
    backend = open_backend(args)
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message; /image PATH attaches a picture, /reset starts over, /quit leaves.")

    history: list[Message] = []
    pending = []
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history, pending = [], []
            print("(conversation cleared)")
            continue
        if line.startswith("/image "):
            try:
                pending.append(load_image(line.removeprefix("/image ").strip()))
            except SmolconvError as exc:  # a bad path is the user's to fix; the chat goes on
                print(f"error: {exc.one_line()}", file=sys.stderr)
                continue
            print(f"(attached {pending[-1].path.name}, {pending[-1].size[0]}x{pending[-1].size[1]})")
            continue
        history.append(Message.of("user", line, pending))
        pending = []
        answer = backend.chat(history, args.max_tokens)
        history.append(Message.of("assistant", answer.text.strip()))
        print(f"assistant> {answer.text.strip()}")
        print(f"  [{answer.prompt_tokens} prompt tokens, {answer.completion_tokens} generated, {answer.wall_s:.1f} s]")
    return 0


if __name__ == "__main__":
    run(main)
