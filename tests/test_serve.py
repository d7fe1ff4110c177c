"""`smolconv serve` as a user runs it: the real CLI starting the real llama-server."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from smolconv.plan import PlanSettings, build_variants, plan_variant
from smolconv.runtime.serve import free_port
from tests.helpers import child_pids, pid_is_running, tool_threads, wait_for_http

pytestmark = pytest.mark.slow


def _port_is_free(port: int) -> bool:
    """Nothing listens on the port. SO_REUSEADDR so that our own closed /health connections (TIME_WAIT) do not count."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _as_in_a_terminal() -> None:
    """Ctrl-C as a terminal delivers it: a job a non-interactive shell started in the background (as a CI
    runner may run the tests) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_serve_waits_for_health_uses_the_plan_and_stops_on_ctrl_c(build_256m_q4_q8):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smolconv", "serve", str(build_256m_q4_q8), "--type", "Q8_0",
                             "--port", str(port), "--threads", tool_threads()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=300, process=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/props", timeout=10) as response:
            props = json.load(response)
        planned = plan_variant(build_variants(build_256m_q4_q8, ("Q8_0",))[0], PlanSettings())
        assert props["model_path"].endswith("-Q8_0.gguf")
        assert props["default_generation_settings"]["n_ctx"] == planned.num_ctx
        assert props["modalities"]["vision"] is True  # the projector came with it
        # llama-server answers /health a moment before smolconv's own check sees it and prints where it serves
        ready = select.select([proc.stdout], [], [], 60)[0] and proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches smolconv; llama-server runs in its own group
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert ready and f"http://127.0.0.1:{port}" in ready and "stopped" in out
    assert _port_is_free(port), "llama-server is still listening after Ctrl-C"


def test_serve_stops_on_sigterm_too(build_256m_q4_q8):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "smolconv", "serve", str(build_256m_q4_q8), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=300, process=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/props", timeout=10) as response:
            assert json.load(response)["model_path"].endswith("-Q4_K_M.gguf")  # the default variant
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert _port_is_free(port)


def test_sigterm_while_the_model_loads_is_an_orderly_stop(build_256m_q4_q8):
    """A service manager's SIGTERM can come before /health answers: smolconv still stops llama-server and exits 0."""
    proc = subprocess.Popen([sys.executable, "-m", "smolconv", "serve", str(build_256m_q4_q8), "--port",
                             str(free_port())], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (children := child_pids(proc.pid)):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "smolconv serve did not start llama-server within 60 s"
            time.sleep(0.01)
        server_pid = children[0]
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # as soon as llama-server exists: it is still loading the model
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "serving" not in out  # it was stopped before it was ready, which is what this test is about
    assert not pid_is_running(server_pid), "llama-server outlived smolconv serve"


def test_a_port_in_use_is_refused_before_loading(build_256m_q4_q8):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "smolconv", "serve", str(build_256m_q4_q8),
                                 "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"port {port} on 127.0.0.1 is already in use" in lines[0], result.stderr
    assert "--port" in lines[0]


def test_serve_on_a_directory_that_is_no_build_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "smolconv", "serve", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "has no build.json" in lines[0], result.stderr
