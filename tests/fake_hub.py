"""A FAKE Hugging Face Hub for the tests only: the two read calls `smolconv batch` makes before it downloads anything,
as huggingface_hub makes them (HF_ENDPOINT pointed here), and a log of every request.

- GET /api/models/OWNER/NAME[/revision/REV]: a model's info, with the commit `sha` its branch is at;
- HEAD and GET /OWNER/NAME/resolve/REV/FILE: a file of the repo, with the headers hf_hub_download reads (X-Repo-Commit,
  ETag, Content-Length); a missing repo or file answers 404 with the Hub's X-Error-Code.

Anything else (a snapshot's file listing, a download of weights) answers 404 and is logged: a test reads the log to
see what was asked, and in what order. It is not the Hub; the answers follow its API as huggingface_hub reads them.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class FakeRepo:
    commit: str                                         # what main is at
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class FakeHubState:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path), every one
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo_id: str, commit: str, files: dict[str, bytes] | None = None) -> FakeRepo:
        self.repos[repo_id] = FakeRepo(commit, dict(files or {}))
        return self.repos[repo_id]

    def add_folder(self, repo_id: str, commit: str, folder: Path) -> FakeRepo:
        """A repo holding the files of a folder (a `publish --dry-run` folder)."""
        return self.add(repo_id, commit, {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()})


INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    state: FakeHubState

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.state.lock:
            self.state.requests.append((self.command, path))
        if match := INFO.match(path):
            repo = self.state.repos.get(match["repo"])
            if repo is None:
                return self._error(404, "RepoNotFound", body)
            info = {"id": match["repo"], "modelId": match["repo"], "sha": repo.commit, "private": False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
        if match := RESOLVE.match(path):
            repo = self.state.repos.get(match["repo"])
            if repo is None:
                return self._error(404, "RepoNotFound", body)
            data = repo.files.get(match["file"])
            if data is None:
                return self._error(404, "EntryNotFound", body)
            etag = hashlib.sha256(data).hexdigest()
            return self._send(200, data, {"ETag": f'"{etag}"', "X-Repo-Commit": repo.commit,
                                          "Content-Type": "application/octet-stream"}, body)
        return self._error(404, "EntryNotFound", body)

    def _error(self, status: int, code: str, body: bool) -> None:
        self._send(status, json.dumps({"error": code}).encode(),
                   {"X-Error-Code": code, "Content-Type": "application/json"}, body)

    def _send(self, status: int, data: bytes, headers: dict, body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class FakeHub:
    """The server, on a free port of 127.0.0.1; `url` is what HF_ENDPOINT takes."""

    def __init__(self) -> None:
        self.state = FakeHubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
