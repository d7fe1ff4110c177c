"""Shared fixtures. The llama.cpp toolchain is the real one `smolconv setup` builds (once, cached)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smolconv.synth import SynthOptions, synth_checkpoint
from smolconv.toolchain import SetupOptions, Toolchain, setup_toolchain


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    # A no-op when `make setup` already built it; otherwise this builds it (several minutes).
    return setup_toolchain(SetupOptions()).toolchain


@pytest.fixture(scope="session")
def fixture_256m(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures") / "smolvlm2-256m"
    return synth_checkpoint(SynthOptions(shape="256m", out=out)).path


@pytest.fixture(scope="session")
def fixture_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixtures") / "smolvlm2-tiny"
    return synth_checkpoint(SynthOptions(shape="tiny", out=out)).path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "smolconv", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=1800)


def wait_for_http(url: str, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")
