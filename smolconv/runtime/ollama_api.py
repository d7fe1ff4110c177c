"""Talking to Ollama: its version, and creating models from smolconv's files.

Two routes, as `ollama create` itself works: the `ollama` CLI when it is on PATH, otherwise Ollama's
documented HTTP API at OLLAMA_HOST (docs/api.md): HEAD/POST /api/blobs/sha256:<hex> for each file (skipped
when the server has it), then POST /api/create with `files` (name → digest), template, system, parameters
and license. Versions before 0.30.0 cannot run a text model with a separate projector and are refused; from
0.34.1 Ollama no longer creates a model with an ADAPTER (ollama/ollama#14969), so a build with a GGUF LoRA is
refused there before anything is uploaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from smolconv.core.errors import SmolconvError, ToolFailed
from smolconv.core.progress import ProgressFn, no_progress
from smolconv.process.runner import run_tool

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
MIN_VERSION = (0, 30, 0)
MIN_VERSION_TEXT = "0.30.0"
# The first Ollama that refuses to create a model with an ADAPTER (ollama/ollama#14969); models created before
# still serve with --lora. 0.34.1-rc0 counts as 0.34.1: a release candidate holds the release's changes.
NO_ADAPTER_CREATE_VERSION = (0, 34, 1)
NO_ADAPTER_CREATE_VERSION_TEXT = "0.34.1"
_CHUNK = 1 << 20


def ollama_host() -> str:
    host = os.environ.get("OLLAMA_HOST", "").strip() or DEFAULT_OLLAMA_HOST
    if "://" not in host:
        host = "http://" + host
    # OLLAMA_HOST=0.0.0.0 means "listen everywhere" to the server; a client talks to loopback.
    host = host.replace("://0.0.0.0", "://127.0.0.1").rstrip("/")
    if re.match(r"^https?://[^/:]+$", host):  # no port: Ollama's default one
        host += ":11434"
    return host


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in match.groups()) if match else None  # type: ignore[return-value]


def check_version(version: str, where: str) -> None:
    parsed = parse_version(version)
    if parsed is None:
        raise SmolconvError(f"cannot read Ollama's version from {where} ({version!r})",
                            f"check that it is Ollama {MIN_VERSION_TEXT} or newer")
    if parsed < MIN_VERSION:
        raise SmolconvError(
            f"Ollama {version} ({where}) is too old: versions before {MIN_VERSION_TEXT} cannot run a text model "
            "with a separate vision projector", f"upgrade Ollama to {MIN_VERSION_TEXT} or newer")


def creates_adapters(version: str) -> bool:
    """Whether Ollama `version` still creates a model with an ADAPTER (a GGUF LoRA)."""
    parsed = parse_version(version)
    return parsed is not None and parsed < NO_ADAPTER_CREATE_VERSION


def check_adapter_create(version: str, where: str) -> None:
    if not creates_adapters(version):
        raise SmolconvError(
            f"Ollama {version} ({where}) cannot create a model with an ADAPTER (this build's GGUF LoRA); "
            f"Ollama refuses it from {NO_ADAPTER_CREATE_VERSION_TEXT} on",
            "rebuild with --adapter-format merge, or serve the base with its LoRA on llama-server --lora "
            "(`smolconv serve BUILD` does)")


# --------------------------------------------------------------------------------------------------
# The HTTP API


class OllamaHTTP:
    def __init__(self, host: str | None = None, timeout: float = 10):
        self.host = host or ollama_host()
        self.client = httpx.Client(base_url=self.host, timeout=httpx.Timeout(timeout, read=None))

    def __enter__(self) -> OllamaHTTP:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise _not_running(self.host, exc) from None
        except httpx.HTTPError as exc:
            raise SmolconvError(f"talking to Ollama at {self.host} failed ({type(exc).__name__}: {exc})",
                                "check that Ollama is running and OLLAMA_HOST is right") from None

    def version(self) -> str:
        response = self._request("GET", "/api/version")
        _raise_for(response, "asking Ollama for its version")
        return str(response.json().get("version", ""))

    def has_blob(self, digest: str) -> bool:
        response = self._request("HEAD", f"/api/blobs/{digest}")
        if response.status_code in (200, 404):
            return response.status_code == 200
        _raise_for(response, f"checking blob {digest}")
        return False

    def upload_blob(self, path: Path, digest: str, progress: ProgressFn = no_progress) -> None:
        size = path.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    sent += len(chunk)
                    progress(f"uploading {path.name}", sent / size if size else 1.0)
                    yield chunk

        response = self._request("POST", f"/api/blobs/{digest}", content=chunks(),
                                 headers={"Content-Length": str(size)})
        if response.status_code == 400:
            raise SmolconvError(f"Ollama rejected {path.name}: its sha256 is not {digest} ({_error_text(response)})",
                                "the file changed while uploading; run the command again")
        _raise_for(response, f"uploading {path.name}")

    def create(self, request: dict, on_status: Callable[[dict], None] = lambda s: None) -> None:
        try:
            with self.client.stream("POST", "/api/create", json={**request, "stream": True}) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response, f"creating {request.get('model')}")
                last = None
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    status = json.loads(line)
                    if "error" in status:
                        raise ToolFailed(f"Ollama could not create {request.get('model')}: {status['error']}",
                                         "read Ollama's message above; `smolconv doctor` checks the setup")
                    on_status(status)
                    last = status
        except httpx.ConnectError as exc:
            raise _not_running(self.host, exc) from None
        if not last or last.get("status") != "success":
            raise ToolFailed(f"Ollama stopped creating {request.get('model')} before it reported success",
                             "run the command again; check Ollama's log")


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text.strip()[:200]


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise ToolFailed(f"{what} failed: Ollama answered {response.status_code} ({_error_text(response)})",
                         "check Ollama's log; `smolconv doctor` checks the setup")


def _not_running(host: str, exc: Exception) -> SmolconvError:
    if shutil.which("ollama") is None and not os.environ.get("OLLAMA_HOST"):
        return SmolconvError(f"Ollama is not installed: no `ollama` on PATH and nothing answers at {host}",
                             f"install Ollama {MIN_VERSION_TEXT} or newer from https://ollama.com, "
                             "or set OLLAMA_HOST to a running server")
    return SmolconvError(f"Ollama is not running: nothing answers at {host} ({type(exc).__name__})",
                         "start it with `ollama serve`, or set OLLAMA_HOST to where it runs")


# --------------------------------------------------------------------------------------------------
# The CLI


def parse_cli_version(output: str) -> tuple[str | None, str | None, bool]:
    """(server version, client version, server reachable) from `ollama --version`."""
    server = re.search(r"ollama version is (\S+)", output)
    client = re.search(r"client version is (\S+)", output)
    reachable = "could not connect" not in output.lower()
    return (server.group(1) if server else None, client.group(1) if client else None, reachable)


def cli_create_command(cli: str, tag: str, modelfile: Path) -> list[str]:
    return [cli, "create", tag, "-f", str(modelfile)]


# --------------------------------------------------------------------------------------------------
# Creating models


@dataclass
class CreateRequest:
    """One model to create: the files it is made of and what its Modelfile says."""

    tag: str
    modelfile: Path
    files: list[Path]  # text GGUF, then projector GGUF
    template: str
    system: str | None
    parameters: dict
    license: str
    adapters: list[Path] = field(default_factory=list)  # GGUF LoRAs: Ollama layers of type …image.adapter

    def api_body(self, digests: dict[Path, str]) -> dict:
        body = {"model": self.tag, "files": {p.name: digests[p] for p in self.files}, "template": self.template,
                "parameters": self.parameters, "license": self.license}
        if self.adapters:
            body["adapters"] = {p.name: digests[p] for p in self.adapters}
        if self.system is not None:
            body["system"] = self.system
        return body


@dataclass
class CreateReport:
    route: str                  # "cli" or "api"
    version: str
    created: list[str]
    uploaded: list[str]         # digests sent to the server
    reused: list[str]           # digests the server already had


def create_models(requests: list[CreateRequest], sha256: Callable[[Path], str], route: str = "auto",
                  progress: ProgressFn = no_progress) -> CreateReport:
    """Create every model, through the CLI when it is on PATH (route auto) or the HTTP API."""

    cli = shutil.which("ollama")
    if route == "cli" and cli is None:
        raise SmolconvError("no `ollama` on PATH", f"install Ollama {MIN_VERSION_TEXT} or newer, or use --via api")
    if route in ("cli", "auto") and cli:
        output = run_tool([cli, "--version"], what="asking ollama for its version", check=False,
                          fix="check the ollama install").output
        server, client, reachable = parse_cli_version(output)
        if not reachable or server is None:
            raise SmolconvError("Ollama is installed but not running (`ollama --version` could not reach it)",
                                "start it with `ollama serve`, or set OLLAMA_HOST to where it runs")
        check_version(server, "the server")
        if client:
            check_version(client, "the ollama CLI")
        if any(request.adapters for request in requests):
            # The CLI reads the Modelfile and the server makes the model: either may be the one that refuses.
            if client:
                check_adapter_create(client, "the ollama CLI")
            check_adapter_create(server, "the server")
        created = []
        for request in requests:
            progress(f"ollama create {request.tag}", None)
            # `-f` is resolved from ollama's working directory, which is the Modelfile's (its FROM paths).
            run_tool(cli_create_command(cli, request.tag, request.modelfile.resolve()), cwd=request.modelfile.parent,
                     what=f"ollama create {request.tag}",
                     fix="read ollama's message; `smolconv doctor` checks the setup")
            created.append(request.tag)
        return CreateReport("cli", server, created, [], [])

    with OllamaHTTP() as api:
        version = api.version()
        check_version(version, f"the server at {api.host}")
        if any(request.adapters for request in requests):
            check_adapter_create(version, f"the server at {api.host}")
        digests: dict[Path, str] = {}
        uploaded: list[str] = []
        reused: list[str] = []
        for request in requests:
            for path in [*request.files, *request.adapters]:
                if path in digests:
                    continue
                progress(f"hashing {path.name}", None)
                digest = "sha256:" + sha256(path)
                digests[path] = digest
                if digest in uploaded or digest in reused:
                    continue
                if api.has_blob(digest):
                    reused.append(digest)
                else:
                    api.upload_blob(path, digest, progress)
                    uploaded.append(digest)
        created = []
        for request in requests:
            progress(f"creating {request.tag}", None)
            api.create(request.api_body(digests), on_status=lambda s, t=request.tag: progress(
                f"{t}: {s.get('status', '')}", None))
            created.append(request.tag)
        return CreateReport("api", version, created, uploaded, reused)
