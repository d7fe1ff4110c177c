"""One way to open a chat backend, by kind and target: what `ask`, `smoke` and the examples talk to.

llama-server on one variant of a build (started here, stopped when the block ends) or at the URL of a running one,
an Ollama model, or an ONNX or MLX export run in process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smolconv.core.choices import BackendKind
from smolconv.core.errors import SmolconvError
from smolconv.formats.mlx.runtime import MlxBackend
from smolconv.formats.onnx.runtime import OnnxBackend
from smolconv.llamacpp.toolchain import Toolchain
from smolconv.plan import PlanSettings
from smolconv.record.variants import Variant
from smolconv.runtime.chat import Backend, LlamaServerBackend, OllamaBackend
from smolconv.runtime.serve import ServeOptions, start_server

DEFAULT_LLAMA_SERVER_URL = "http://127.0.0.1:8080"  # `smolconv serve`'s


@dataclass
class BackendRequest:
    kind: BackendKind
    target: str | Path | None = None   # a build directory (llama-server), an Ollama tag, an export folder
    url: str | None = None             # a running llama-server, or the Ollama daemon (default OLLAMA_HOST)
    variant: Variant | str | None = None  # llama-server: the build's variant to serve; onnx: fp32, q4, …
    n_ctx: int | None = None           # default: the plan's (llama-server), the model's up to 2048 (in process)
    threads: int | None = None
    settings: PlanSettings = field(default_factory=PlanSettings)
    toolchain: Toolchain | None = None
    api_key: str | None = field(default=None, repr=False)  # for a llama-server that asks for one (runtime.auth)
    # What the backend samples with (runtime.chat.SAMPLING's keys); None: SAMPLING, and on Ollama the Modelfile's
    # settings beside temperature and seed.
    sampling: dict | None = None


@contextlib.contextmanager
def open_backend(request: BackendRequest) -> Iterator[Backend]:
    """The backend `request` names, ready to chat; a llama-server it started is stopped when the block ends.

    A backend's `n_ctx` is its context length where known (a server smolconv started, an in-process model).
    """
    kind = BackendKind(request.kind)
    if kind is BackendKind.LLAMA_SERVER:
        if request.url or request.variant is None:
            yield LlamaServerBackend(request.url or DEFAULT_LLAMA_SERVER_URL, api_key=request.api_key,
                                     sampling=request.sampling)
            return
        if request.toolchain is None:
            raise SmolconvError("starting llama-server needs the llama.cpp toolchain", "run `smolconv setup`")
        variant = request.variant
        name = variant.name if isinstance(variant, Variant) else variant
        serve = ServeOptions(Path(request.target), name, port=0, num_ctx=request.n_ctx, settings=request.settings,
                             threads=request.threads)
        with start_server(serve, request.toolchain, variant if isinstance(variant, Variant) else None) as server:
            yield LlamaServerBackend(server.url, n_ctx=server.num_ctx, sampling=request.sampling)
        return
    if kind is BackendKind.OLLAMA:
        if not request.target:
            raise SmolconvError("the Ollama backend needs a model tag",
                                "pass --model, e.g. smolvlm2:256m-video-instruct-q8_0")
        yield OllamaBackend(str(request.target), request.url, sampling=request.sampling)
        return
    if request.target is None:
        raise SmolconvError(f"the {kind} backend needs a folder",
                            f"pass a folder `smolconv export-{kind}` wrote")
    if kind is BackendKind.ONNX:
        variant = str(request.variant or "fp32").lower()
        yield OnnxBackend(request.target, variant, n_ctx=request.n_ctx, threads=request.threads,
                          sampling=request.sampling)
    else:
        yield MlxBackend(request.target, n_ctx=request.n_ctx, sampling=request.sampling)
