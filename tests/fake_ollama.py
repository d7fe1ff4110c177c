"""A FAKE Ollama daemon for the tests only: it follows the HTTP API in Ollama's docs/api.md for the calls
smolconv makes (version, blobs, create, show, chat) and records them. It is not Ollama and runs no model; it stands in
for the daemon because Ollama cannot be installed on the machines that run these tests. `install_cli` puts a fake
`ollama` CLI on PATH for the other route (`ollama --version`, `ollama create`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Layer media types of Ollama's model manifests (what `ollama create` records for each file).
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
# From 0.34.1 Ollama no longer creates a model with an ADAPTER (generative-computing/mellea#1651, citing
# ollama/ollama#14969). Written here apart from smolconv's own constant, so that a test sees the fake refuse
# whenever smolconv's check lets a request through.
REFUSES_ADAPTERS_FROM = (0, 34, 1)


def refuses_adapters(version: str) -> bool:
    """Whether the fake, told to be Ollama `version`, refuses a create with adapters; 0.34.1-rc0 is 0.34.1."""
    numbers = tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:3])
    return numbers >= REFUSES_ADAPTERS_FROM


@dataclass
class FakeOllamaState:
    version: str = "0.33.0"
    blobs: dict[str, int] = field(default_factory=dict)          # digest -> size
    uploads: list[str] = field(default_factory=list)             # digests POSTed (every attempt)
    creates: list[dict] = field(default_factory=list)            # /api/create bodies
    requests: list[tuple[str, str]] = field(default_factory=list)
    chats: list[dict] = field(default_factory=list)              # /api/chat bodies
    # What /api/chat streams back: the answer's pieces and how it ended. Tests set these.
    reply: list[str] = field(default_factory=lambda: ["The house ", "is ", "red."])
    done_reason: str = "stop"
    tokens_per_image: int = 400                                  # stands in for the projector's tokens
    models: dict[str, dict] = field(default_factory=dict)        # name -> /api/show answer
    manifests: dict[str, list[dict]] = field(default_factory=dict)  # created model -> its layers
    blob_dir: Path | None = None                                 # where uploaded blobs are kept, as Ollama does
    # digest -> what the GGUF holds; a blob never changes, and GGUFReader takes seconds on a text model's vocabulary
    kinds: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    state: FakeOllamaState  # set per server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self) -> None:
        self.state.requests.append(("GET", self.path))
        if self.path == "/api/version":
            self._json(200, {"version": self.state.version})
        else:
            self._json(404, {"error": "not found"})

    def do_HEAD(self) -> None:
        self.state.requests.append(("HEAD", self.path))
        digest = self.path.removeprefix("/api/blobs/")
        self.send_response(200 if digest in self.state.blobs else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self.state.requests.append(("POST", self.path))
        body = self._body()
        if self.path.startswith("/api/blobs/"):
            digest = self.path.removeprefix("/api/blobs/")
            self.state.uploads.append(digest)
            if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                self._json(400, {"error": "digest mismatch"})
                return
            existed = digest in self.state.blobs
            self.state.blobs[digest] = len(body)
            (self.state.blob_dir / digest.replace(":", "-")).write_bytes(body)
            self.send_response(200 if existed else 201)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/api/show":
            name = json.loads(body).get("model")
            if name not in self.state.models:
                self._json(404, {"error": f"model '{name}' not found"})
                return
            # The fields Ollama's /api/show always has (docs/api.md), then the test's own.
            shown = {"modelfile": "", "template": "", "details": {"format": "gguf", "family": "llama"},
                     "model_info": {"general.architecture": "llama"}, "modified_at": "2026-11-22T00:00:00Z"}
            self._json(200, shown | self.state.models[name])
        elif self.path == "/api/chat":
            self._chat(json.loads(body))
        elif self.path == "/api/create":
            request = json.loads(body)
            self.state.creates.append(request)
            if request.get("adapters") and refuses_adapters(self.state.version):
                self._json(400, {"error": f"ollama {self.state.version} does not create models with an adapter"})
                return
            missing = [d for d in [*request.get("files", {}).values(), *request.get("adapters", {}).values()]
                       if d not in self.state.blobs]
            if missing:
                self._json(400, {"error": f"blob {missing[0]} not found"})
                return
            try:
                layers = self._layers(request)
            except ValueError as exc:
                self._json(400, {"error": str(exc)})
                return
            self.state.manifests[request["model"]] = layers
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.end_headers()
            lines = [{"status": "parsing GGUF"}]
            lines += [{"status": f"using existing layer {d}"} for d in request.get("files", {}).values()]
            lines += [{"status": "writing manifest"}, {"status": "success"}]
            for line in lines:
                self.wfile.write(json.dumps(line).encode() + b"\n")
                self.wfile.flush()
        else:
            self._json(404, {"error": "not found"})


    def _gguf_kind(self, digest: str) -> str:
        if digest not in self.state.kinds:
            self.state.kinds[digest] = self._read_gguf_kind(digest)
        return self.state.kinds[digest]

    def _read_gguf_kind(self, digest: str) -> str:
        from gguf import GGUFReader

        reader = GGUFReader(self.state.blob_dir / digest.replace(":", "-"))

        def field_of(key: str):
            found = reader.get_field(key)
            return found.contents() if found is not None else None

        if field_of("general.type") in ("mmproj", "projector") or field_of("general.architecture") == "clip":
            return "projector"
        return "adapter" if field_of("general.type") == "adapter" else "model"

    def _layers(self, request: dict) -> list[dict]:
        """Layers as Ollama's create makes them: each GGUF by what it holds, adapters as adapter layers."""
        layers = []
        for name, digest in request.get("files", {}).items():
            kind = self._gguf_kind(digest)
            if kind == "adapter":
                raise ValueError(f"{name} is a LoRA adapter: give it as an adapter, not a model file")
            layers.append({"mediaType": MEDIA_PROJECTOR if kind == "projector" else MEDIA_MODEL, "digest": digest,
                           "size": self.state.blobs[digest]})
        for name, digest in request.get("adapters", {}).items():
            if self._gguf_kind(digest) != "adapter":
                raise ValueError(f"{name} is not a GGUF LoRA adapter")
            layers.append({"mediaType": MEDIA_ADAPTER, "digest": digest, "size": self.state.blobs[digest]})
        return layers

    def _chat(self, request: dict) -> None:
        self.state.chats.append(request)
        if request.get("model") not in self.state.models:
            self._json(404, {"error": f"model '{request.get('model')}' not found"})
            return
        words = sum(len(m.get("content", "").split()) for m in request["messages"])
        images = sum(len(m.get("images") or []) for m in request["messages"])
        pieces = self.state.reply[: request.get("options", {}).get("num_predict", 10**6)]
        final = {"model": request["model"], "created_at": "2026-11-22T00:00:00Z",
                 "message": {"role": "assistant", "content": ""}, "done": True,
                 "done_reason": self.state.done_reason, "total_duration": 2_000_000_000,
                 "load_duration": 1_000_000, "prompt_eval_count": words + images * self.state.tokens_per_image,
                 "prompt_eval_duration": 500_000_000, "eval_count": len(pieces), "eval_duration": 250_000_000}
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        if not request.get("stream", True):
            final["message"]["content"] = "".join(pieces)
            self.wfile.write(json.dumps(final).encode() + b"\n")
            return
        for piece in pieces:
            chunk = {"model": request["model"], "created_at": "2026-11-22T00:00:00Z",
                     "message": {"role": "assistant", "content": piece}, "done": False}
            self.wfile.write(json.dumps(chunk).encode() + b"\n")
            self.wfile.flush()
        self.wfile.write(json.dumps(final).encode() + b"\n")


class FakeOllama:
    """`with FakeOllama() as fake:` serves on a free loopback port; `fake.host` is its OLLAMA_HOST."""

    def __init__(self, version: str = "0.33.0"):
        self.state = FakeOllamaState(version=version, blob_dir=Path(tempfile.mkdtemp(prefix="fake-ollama-")))
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOllama:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.state.blob_dir, ignore_errors=True)


CLI_SCRIPT = """#!/bin/sh
# Test double for the ollama CLI, written by tests/fake_ollama.py. Every create is logged, refused or not.
case "$1" in
  --version) echo "ollama version is {version}" ;;
  create)
    echo "$*" >> "{log}"
    if [ "{refuses_adapters}" = yes ] && grep -q "^ADAPTER" "$4"; then
      echo "Error: ollama {version} does not create models with an adapter" >&2; exit 1
    fi
    echo success ;;
  *) echo "fake ollama: unexpected arguments $*" >&2; exit 2 ;;
esac
"""


def install_cli(directory: Path, monkeypatch, version: str = "0.33.0") -> Path:
    """Put a fake `ollama` CLI that says it is `version` first on PATH; returns the log its creates go to."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "ollama-calls.log"
    log.touch()
    script = directory / "ollama"
    script.write_text(CLI_SCRIPT.format(version=version, log=log,
                                        refuses_adapters="yes" if refuses_adapters(version) else "no"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return log
