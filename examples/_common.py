"""What every example shares: where the model is served, and one-line errors.

`--backend llama-server` (default) talks to `smolconv serve` (or any llama-server) at --url, default
http://127.0.0.1:8080. `--backend ollama` talks to the Ollama model --model at --url, default OLLAMA_HOST.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from smolconv.checks.backends import BackendRequest
from smolconv.checks.backends import open_backend as open_chat_backend
from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.runtime.auth import read_api_key
from smolconv.runtime.chat import Backend, BackendError


def backend_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=("llama-server", "ollama"), default="llama-server",
                        help="llama-server (smolconv serve) or ollama (default: llama-server)")
    parser.add_argument("--url", help="server address (default: http://127.0.0.1:8080, or OLLAMA_HOST for ollama)")
    parser.add_argument("--api-key-file", type=Path,
                        help="a file holding the llama-server's API key (default: $SMOLCONV_API_KEY)")
    parser.add_argument("--model", help="Ollama model tag, e.g. smolvlm2:256m-video-instruct-q8_0 (ollama only)")
    parser.add_argument("--max-tokens", type=int, default=256, help="longest answer, in tokens (default 256)")
    return parser


# What open_backend opened, closed when `run` returns.
_opened = contextlib.ExitStack()


def open_backend(args: argparse.Namespace) -> Backend:
    """The server the arguments name, checked to answer (in one line when nothing answers at that address)."""
    request = BackendRequest(BackendKind(args.backend), args.model, url=args.url,
                             api_key=read_api_key(args.api_key_file))
    backend = _opened.enter_context(open_chat_backend(request))
    backend.info()
    return backend


def run(main: Callable[[], int | None]) -> None:
    """Run `main`; a problem the user can fix is one line on stderr and exit 2, a failed request exit 1."""
    try:
        with _opened:
            sys.exit(main() or 0)
    except SmolconvError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except BackendError as exc:
        print(f"error: the model server failed the request: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
