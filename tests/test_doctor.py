from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests import fake_nvidia_smi
from tests.helpers import invoke, run_cli


@pytest.fixture
def ollama_version_server():
    """A loopback server answering GET /api/version as Ollama documents it (the only Ollama stand-in)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/api/version":
                self.send_error(404)
                return
            body = json.dumps({"version": "0.33.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _doctor_json(env):
    result = run_cli("doctor", "--json", env=env)
    return result, json.loads(result.stdout)


def test_doctor_reports_every_check_and_passes_with_the_toolchain(toolchain, tmp_path):
    env = {**os.environ, "OLLAMA_HOST": "127.0.0.1:9", "PATH": os.environ["PATH"]}
    result, report = _doctor_json(env)
    assert result.returncode == 0, result.stderr
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"llama.cpp", "converter packages", "ollama", "gpu", "disk"}
    assert checks["llama.cpp"]["status"] == "ok"
    assert checks["llama.cpp"]["data"]["version"] == toolchain.version()
    assert set(checks["llama.cpp"]["data"]["tools"]) >= {"llama-quantize", "llama-server", "llama-mtmd-cli"}
    assert checks["converter packages"]["data"]["torch"]
    assert checks["ollama"]["status"] == "warn" and "no daemon at http://127.0.0.1:9" in checks["ollama"]["detail"]
    assert checks["disk"]["data"]["free_bytes"] > 0


def test_doctor_finds_a_running_ollama(toolchain, ollama_version_server):
    env = {**os.environ, "OLLAMA_HOST": ollama_version_server}
    result, report = _doctor_json(env)
    ollama = next(c for c in report["checks"] if c["name"] == "ollama")
    assert ollama["status"] == "ok"
    assert ollama["data"]["version"] == "0.33.0"


def test_doctor_fails_with_the_reason_when_the_toolchain_is_missing(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    result = invoke("doctor", env=env)
    assert result.returncode == 1
    assert "no llama.cpp toolchain is installed" in result.stderr
    assert "smolconv setup" in result.stderr


# The gpu check against a test double for nvidia-smi (tests/fake_nvidia_smi.py): a shell script printing CSV.
def test_doctor_reports_compute_capability_and_driver(tmp_path, monkeypatch):
    from smolconv.checks.doctor import OK, check_gpu

    fake_nvidia_smi.install(tmp_path / "bin", monkeypatch, gpus=fake_nvidia_smi.H100)
    check = check_gpu("cuda90")
    assert check.status == OK, check.detail
    assert "NVIDIA H100 80GB HBM3 (compute 9.0), driver 580.82.07, 81559 MiB total" in check.detail
    assert check.data["gpus"][0]["compute_cap"] == "9.0" and check.data["toolchain_backend"] == "cuda90"


@pytest.mark.parametrize(("gpus", "backend", "expected"), [
    (fake_nvidia_smi.H100, "cuda89", "built for sm_89, not this NVIDIA H100 80GB HBM3 (sm_90)"),
    (fake_nvidia_smi.RTX_3060, "cuda89", "will not run on this card"),
    (fake_nvidia_smi.RTX_4070, "cpu", "CPU build"),
])
def test_doctor_warns_when_the_toolchain_was_built_for_another_gpu(tmp_path, monkeypatch, gpus, backend, expected):
    from smolconv.checks.doctor import WARN, check_gpu

    fake_nvidia_smi.install(tmp_path / "bin", monkeypatch, gpus=gpus)
    check = check_gpu(backend)
    assert check.status == WARN and expected in check.detail, check.detail
    assert "--cuda-arch" in check.detail


def test_doctor_accepts_the_toolchain_built_for_this_gpu(tmp_path, monkeypatch):
    from smolconv.checks.doctor import OK, check_gpu

    fake_nvidia_smi.install(tmp_path / "bin", monkeypatch, gpus=fake_nvidia_smi.RTX_4070)
    assert check_gpu("cuda89").status == OK
    assert check_gpu("cuda86-89").status == OK
