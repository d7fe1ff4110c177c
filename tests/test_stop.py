"""Stopping is safe everywhere: SIGINT, SIGTERM and SIGHUP stop each command in order, SIGKILL leaves no child.

Each test starts the real CLI, waits until the child it is about (converter, llama-server, cmake, …) runs, sends
the signal, and checks the exit status, that no process smolconv started is left, and that nothing under a final
name is partial. Processes are found through this test's own process tree, never by name across the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smolconv.llamacpp.toolchain import LLAMA_CPP_SDIST, cache_root
from smolconv.runtime.serve import free_port
from tests.helpers import cmdline, descendants, pid_is_running, runs_program

# Every signal on every command family: each sends it while the family's child runs.
STOP_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
SIGNALS = pytest.mark.parametrize("signum", list(STOP_STATUS), ids=lambda s: signal.Signals(s).name)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    # Its own session, so the signal goes to smolconv alone, as `kill` or a service manager sends it.
    return subprocess.Popen([sys.executable, "-m", "smolconv", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


def wait_for_child(proc: subprocess.Popen, program: str, timeout: float = 300) -> int:
    """The pid of smolconv's child running `program` (after the launcher has exec'd it)."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in descendants(proc.pid):
            if runs_program(pid, program):
                return pid
        if proc.poll() is not None:
            pytest.fail(f"smolconv exited with {proc.returncode} before {program} ran: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, f"{program} did not start within {timeout:.0f} s"
        time.sleep(0.05)


def stop_and_check(proc: subprocess.Popen, signum: int, expected: int) -> str:
    """Send `signum`, then: the exit status, one line saying so, and none of smolconv's processes left."""
    seen = descendants(proc.pid)
    assert seen, "no child was running when the signal was sent"
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == expected, err
    assert "Traceback" not in err, err
    if expected != 0:
        assert f"stopped by {signal.Signals(signum).name}" in err.splitlines()[-1], err
    left = [pid for pid in seen if pid_is_running(pid)]
    assert not left, f"left running: {[cmdline(pid) for pid in left]}"
    return err


def assert_nothing_partial(directory: Path) -> None:
    """No staged file is left, and every final-named GGUF or JSON reads back whole."""
    import gguf

    files = [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []
    assert not [p for p in files if p.name.endswith(".partial") or ".partial" in str(p.parent)]
    for path in files:
        if path.suffix == ".gguf":
            gguf.GGUFReader(path)  # a truncated file raises
        elif path.suffix == ".json":
            json.loads(path.read_text())


@SIGNALS
def test_build_stops_during_conversion(signum, toolchain, fixture_tiny, tmp_path):
    out = tmp_path / "out"
    proc = start_cli("build", str(fixture_tiny), "--out", str(out), "--type", "Q4_K_M", "--verify", "--smoke")
    wait_for_child(proc, "convert_hf_to_gguf")
    stop_and_check(proc, signum, STOP_STATUS[signum])
    assert_nothing_partial(out)
    assert not list(out.glob("*.gguf")) if out.exists() else True  # conversion was cut short: no F16 GGUF


@SIGNALS
def test_smoke_stops_llama_server(signum, build_tiny_q4, tmp_path):
    reports = tmp_path / "reports"
    proc = start_cli("smoke", str(build_tiny_q4), "--type", "Q4_K_M", "--report-dir", str(reports))
    wait_for_child(proc, "llama-server")
    stop_and_check(proc, signum, STOP_STATUS[signum])
    assert_nothing_partial(reports)
    assert not list(reports.glob("*.json")) if reports.exists() else True


@SIGNALS
def test_verify_stops_its_tool(signum, build_tiny_q4, fixture_tiny):
    """The build it verifies is left exactly as it was: no file added, none rewritten (no verify.json either).

    Compared by size and mtime instead of reading every GGUF back: parsing their vocabularies costs seconds each.
    """
    def files() -> dict[str, tuple[int, int]]:
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in build_tiny_q4.iterdir()}

    before = files()
    proc = start_cli("verify", str(build_tiny_q4), "--checkpoint", str(fixture_tiny), "--type", "Q4_K_M")
    wait_for_child(proc, "llama-server")
    stop_and_check(proc, signum, STOP_STATUS[signum])
    assert files() == before


@SIGNALS
def test_plan_measure_stops_llama_server(signum, build_tiny_q4):
    proc = start_cli("plan", str(build_tiny_q4), "--type", "Q4_K_M", "--measure", "--json")
    wait_for_child(proc, "llama-server")
    stop_and_check(proc, signum, STOP_STATUS[signum])


@SIGNALS
def test_serve_stops_in_order_with_exit_0(signum, build_tiny_q4):
    """All three, SIGHUP too, end serve with 0 (docs/commands.md, "Stopping"): stopping the server is how serve ends."""
    proc = start_cli("serve", str(build_tiny_q4), "--port", str(free_port()))
    wait_for_child(proc, "llama-server")
    stop_and_check(proc, signum, 0)


def _start_setup(tmp_path: Path, **env: str) -> subprocess.Popen:
    """The real setup path (pinned sdist, extract, cmake) in a cache of its own, one compile job."""
    sdist = cache_root() / "downloads" / LLAMA_CPP_SDIST
    if not sdist.is_file():
        pytest.skip("the pinned sdist is not in the download cache")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    return start_cli("setup", "--sdist", str(sdist), "--jobs", "1", env=env)


@SIGNALS
def test_setup_stops_cmake(signum, toolchain, tmp_path):
    """Stopped while cmake runs (extracting the 77 MB sdist first takes ~10 s)."""
    proc = _start_setup(tmp_path)
    wait_for_child(proc, "cmake")
    stop_and_check(proc, signum, STOP_STATUS[signum])
    # Only the build directory (kept so the next setup resumes the compile) and the lock; no install.
    built = tmp_path / "cache" / "smolconv" / "llama.cpp"
    assert all(p.name.startswith("build-") or p.name.endswith(".lock") for p in built.iterdir()), list(built.iterdir())


def test_sigkill_during_setup_leaves_no_compiler(toolchain, tmp_path):
    """The parent-death signal reaches cmake only; its supervisor must take make and the compilers down too.

    A compile is seconds long and make dies of SIGPIPE once it prints after cmake is gone, so a real compile
    could end by itself within the 5 s: the compiler here is made slow (CMake's compiler-launcher variables,
    read from the environment at the first configure) for llama.cpp's own sources, not CMake's checks.
    """
    slow = tmp_path / "slow-compiler"
    slow.write_text('#!/bin/sh\ncase "$*" in *cmTC_*) ;; *) sleep 300 ;; esac\nexec "$@"\n')
    slow.chmod(0o755)
    proc = _start_setup(tmp_path, CMAKE_C_COMPILER_LAUNCHER=str(slow), CMAKE_CXX_COMPILER_LAUNCHER=str(slow))
    wait_for_child(proc, "sleep 300", timeout=600)  # configured, and `cmake --build` compiling
    tree = descendants(proc.pid)
    programs = " ".join(cmdline(pid) for pid in tree)
    assert "--build" in programs and "make" in programs and str(slow) in programs, programs  # grandchildren too
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while (left := [pid for pid in tree if pid_is_running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [cmdline(pid) for pid in left]
    for pid in left:  # this test's own leftovers: not for the next test to trip over
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"outlived smolconv killed with SIGKILL: {survivors}"


def test_sigkill_leaves_no_llama_server(build_tiny_q4):
    """SIGKILL runs no cleanup at all: the kernel's parent-death signal must stop llama-server mid-request."""
    import httpx

    port = free_port()
    proc = start_cli("serve", str(build_tiny_q4), "--port", str(port))
    server = wait_for_child(proc, "llama-server")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and pid_is_running(server), "llama-server never became ready"
        time.sleep(0.2)
    import threading

    # A long answer in flight when smolconv is killed.
    request = threading.Thread(target=lambda: _ignore_errors(httpx.post, f"{url}/completion", timeout=60, json={
        "prompt": "Count from one to a thousand:", "n_predict": 4096, "ignore_eos": True}), daemon=True)
    request.start()
    time.sleep(1)
    assert pid_is_running(server)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 5
    while pid_is_running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_is_running(server), "llama-server outlived smolconv killed with SIGKILL"


def _ignore_errors(call, *args, **kwargs) -> None:
    with contextlib.suppress(Exception):  # the server goes away mid-answer: that is the point
        call(*args, **kwargs)
