"""`smolconv serve`: one variant of a build on llama-server, with the context and offload `plan` chose.

llama-server gets the text GGUF and the projector, the planned num_ctx and GPU layers, the plan's batch and
KV cache type, and one slot (Ollama's default). It listens on 127.0.0.1 unless told otherwise; on any other
address it needs an API key (runtime.auth) or the user's explicit --no-auth. smolconv
waits for `/health` to say the model is loaded, and stops the server in order on Ctrl-C.

`start_server` is also what `smoke` and `verify` use when no URL is given.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from smolconv.core.errors import SmolconvError
from smolconv.llamacpp.toolchain import Toolchain
from smolconv.plan import PlanSettings, Variant, plan_variant
from smolconv.process.runner import ServerProcess, command_line
from smolconv.process.signals import Interrupted
from smolconv.record.builddir import BuildDir
from smolconv.runtime.auth import check_exposure, server_key_file

DEFAULT_PORT = 8080
# The variant `serve` picks when a build holds several: the smallest that Ollama users are steered to.
PREFERRED_VARIANTS = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")


@dataclass
class ServeOptions:
    out_dir: Path                  # a directory `smolconv build` wrote
    variant: str | None = None     # Q4_K_M, Q8_0, ...; default: the first of PREFERRED_VARIANTS it holds
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT       # 0: any free port (smoke and verify use this)
    num_ctx: int | None = None     # default: the plan's num_ctx for this variant
    settings: PlanSettings = field(default_factory=PlanSettings)
    threads: int | None = None
    projector: bool = True         # False: text only (verify's logits need no projector)
    extra_args: tuple[str, ...] = ()
    ready_timeout: float = 600
    api_key: str | None = field(default=None, repr=False)  # required of every request but /health
    no_auth: bool = False          # the user's word that a non-loopback host may go without a key


@dataclass
class RunningServer:
    url: str
    variant: Variant
    num_ctx: int
    command: list[str]
    process: ServerProcess

    def stop(self) -> int:
        return self.process.stop()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def pick_variant(build: BuildDir, name: str | None) -> Variant:
    if name:
        return build.variant(name)
    variants = {v.name: v for v in build.variants()}
    for preferred in PREFERRED_VARIANTS:
        if preferred in variants:
            return variants[preferred]
    return next(iter(variants.values()))


def check_port_free(host: str, port: int) -> None:
    """Fail before starting llama-server: it would load the model first and only then fail to bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SmolconvError(f"port {port} on {host} is already in use",
                                    "pass --port with a free port, or stop the program listening there") from None
            raise SmolconvError(f"cannot listen on {host}:{port} ({exc.strerror})",
                                "pass --host 127.0.0.1 or an address of this machine") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def server_command(toolchain: Toolchain, variant: Variant, num_ctx: int, n_gpu_layers: int | None,
                   options: ServeOptions, port: int) -> list[str]:
    settings = options.settings
    args = [str(toolchain.tool("llama-server")), "-m", str(variant.text_path)]
    if options.projector:
        args += ["--mmproj", str(variant.projector_path)]
    if variant.adapter_path is not None:
        args += ["--lora", str(variant.adapter_path)]
    args += ["--host", options.host, "--port", str(port), "-c", str(num_ctx),
             # One slot, as Ollama runs it by default: the whole context is one conversation's.
             "-np", str(settings.n_parallel), "-ub", str(settings.n_ubatch),
             "-ctk", settings.kv_type, "-ctv", settings.kv_type, "--no-webui"]
    if n_gpu_layers is not None:
        args += ["-ngl", str(n_gpu_layers)]
    if options.threads:
        args += ["-t", str(options.threads)]
    return args + list(options.extra_args)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False  # still loading (503) or not listening yet


def start_server(options: ServeOptions, toolchain: Toolchain, variant: Variant | None = None) -> RunningServer:
    """Start llama-server for one variant and return once `/health` answers 200."""
    check_exposure(options.host, options.api_key, options.no_auth)
    variant = variant or pick_variant(BuildDir.open(options.out_dir), options.variant)
    planned = plan_variant(variant, options.settings)
    num_ctx = options.num_ctx or planned.num_ctx
    if options.port:
        check_port_free(options.host, options.port)
    port = options.port or free_port(options.host)
    args = server_command(toolchain, variant, num_ctx, planned.num_gpu, options, port)
    url_host = f"[{options.host}]" if ":" in options.host else options.host
    url = f"http://{url_host}:{port}"
    with contextlib.ExitStack() as key_file:
        if options.api_key:
            # llama-server reads the file at start; it is removed once the server answers (or fails to).
            args += ["--api-key-file", str(key_file.enter_context(server_key_file(options.api_key)))]
        process = ServerProcess(args, what=f"serving {variant.name} with llama-server",
                                fix=f"run the command by hand to see why: {command_line(args)}")
        try:
            process.wait_ready(lambda: _healthy(url), timeout=options.ready_timeout)
        except BaseException:
            process.stop()
            raise
    if any("couldn't bind" in line or "address already in use" in line.lower() for line in process.lines_since(0)):
        process.stop()
        raise SmolconvError(f"port {port} on {options.host} is already in use", "pass --port with a free port")
    return RunningServer(url=url, variant=variant, num_ctx=num_ctx, command=args, process=process)


def serve(options: ServeOptions, toolchain: Toolchain, on_ready=lambda server: None) -> int:
    """Run until Ctrl-C or SIGTERM (then stop llama-server and return 0) or until llama-server exits on its own."""
    server = None
    try:
        # Loading counts too: a service manager's SIGTERM can come before /health answers, and start_server
        # stops llama-server itself when interrupted there.
        server = start_server(options, toolchain)
        on_ready(server)
        while server.process.running():
            time.sleep(0.5)
    except (KeyboardInterrupt, Interrupted):
        if server is not None:
            server.stop()
        return 0
    code = server.stop()
    raise server.process.failed(f"exited with {code} while serving")
