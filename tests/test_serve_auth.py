"""`serve` on the network: an API key, handed to llama-server in a file, never on a command line or in a log."""

from __future__ import annotations

import os
import secrets
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from smolconv.core.errors import SmolconvError
from smolconv.runtime.auth import API_KEY_ENV, check_exposure, is_loopback, read_api_key, server_key_file
from smolconv.runtime.serve import free_port
from tests.helpers import assert_one_line_error, run_cli, tool_threads, wait_for_http


def _env_without_key() -> dict:
    return {k: v for k, v in os.environ.items() if k != API_KEY_ENV}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "my-host.example"])
def test_a_network_host_without_a_key_is_refused_in_one_line(tmp_path, host):
    result = run_cli("serve", str(tmp_path), "--host", host, env=_env_without_key())
    line = assert_one_line_error(result, f"--host {host}", API_KEY_ENV, "--api-key-file", "--no-auth")
    assert "no API key is set" in line


def test_no_auth_in_so_many_words_and_loopback_need_no_key(tmp_path):
    for args in (["--host", "0.0.0.0", "--no-auth"], ["--host", "127.0.0.1"], ["--host", "localhost"]):
        result = run_cli("serve", str(tmp_path), *args, env=_env_without_key())
        # past the key check: the next refusal is the folder's
        assert_one_line_error(result, "build.json")


def test_hosts_only_this_machine_reaches_are_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", "192.168.1.2"))
    check_exposure("0.0.0.0", "k", no_auth=False)  # a key: allowed
    with pytest.raises(SmolconvError):
        check_exposure("0.0.0.0", None, no_auth=False)


def test_the_key_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert read_api_key(None) is None
    monkeypatch.setenv(API_KEY_ENV, " from-env \n")
    assert read_api_key(None) == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\nsecond line is ignored\n")
    assert read_api_key(key_file) == "from-file"  # the file wins over the environment
    key_file.write_text("\n  \n")
    with pytest.raises(SmolconvError, match="is empty"):
        read_api_key(key_file)
    with pytest.raises(SmolconvError, match="cannot read the API key file"):
        read_api_key(tmp_path / "missing")


def test_the_server_key_file_is_private_and_removed_after():
    with server_key_file("s3cret") as path:
        assert path.read_text().strip() == "s3cret"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not path.exists() and not path.parent.exists()


def _command_lines() -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue  # gone meanwhile
    return lines


@pytest.mark.slow
def test_serve_with_a_key_answers_only_requests_that_carry_it(build_tiny_q4):
    from openai import AuthenticationError, OpenAI

    key = "sk-" + secrets.token_hex(16)
    port = free_port()
    env = _env_without_key() | {API_KEY_ENV: key}
    proc = subprocess.Popen([sys.executable, "-m", "smolconv", "serve", str(build_tiny_q4), "--host", "0.0.0.0",
                             "--port", str(port), "--threads", tool_threads()],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=300, process=proc)  # /health needs no key
        assert not any(key in line for line in _command_lines()), "the key is on a command line"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10)
        assert refused.value.code == 401
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-wrong").models.list()
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key)
        reply = client.chat.completions.create(model="smolvlm2", max_tokens=4,
                                               messages=[{"role": "user", "content": "Hello"}])
        assert reply.choices[0].message.content is not None and reply.usage.completion_tokens >= 1
        # ask --url takes the key from the environment, and without it says what is missing
        asked = run_cli("ask", "unused", "Hello", "--url", f"http://127.0.0.1:{port}", "--max-tokens", "4",
                        "--json", env=env)
        assert asked.returncode == 0, asked.stderr
        refused_ask = run_cli("ask", "unused", "Hello", "--url", f"http://127.0.0.1:{port}",
                              env=_env_without_key())
        assert_one_line_error(refused_ask, "wants an API key", "none was given", API_KEY_ENV)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Authorization: Bearer <key>" in out  # how to pass it, without it
    assert key not in out + err + asked.stdout + asked.stderr
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("smolconv-key-*")), "the key file outlived serve"
