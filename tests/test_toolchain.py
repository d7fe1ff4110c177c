from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from smolconv.core.errors import SmolconvError, ToolFailed
from smolconv.llamacpp import toolchain as tc
from smolconv.llamacpp.toolchain import TOOLS, SetupOptions, setup_toolchain, user_toolchain
from tests.helpers import invoke


def test_installed_toolchain_is_complete(toolchain):
    for tool in TOOLS:
        assert os.access(toolchain.tool(tool), os.X_OK)
    assert toolchain.converter.is_file()
    assert (toolchain.gguf_py / "gguf" / "__init__.py").is_file()
    info = json.loads((toolchain.root.parent / tc.MARKER).read_text())
    assert info["sdist_sha256"] == tc.LLAMA_CPP_SDIST_SHA256
    assert len(info["llama_cpp_commit"]) == 40
    assert info["llama_cpp_commit"][:7] in toolchain.version()


def test_second_setup_reuses_the_install_without_building(toolchain, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("setup rebuilt a complete toolchain")

    monkeypatch.setattr(tc, "_cmake_build", no_build)
    monkeypatch.setattr(tc, "_fetch_sdist", no_build)
    report = setup_toolchain(SetupOptions())
    assert report.built is False
    assert report.toolchain == toolchain


def test_llama_cpp_dir_without_tools_is_a_one_line_error(tmp_path):
    (tmp_path / "build" / "bin").mkdir(parents=True)
    (tmp_path / "build" / "bin" / "llama-server").write_text("")
    result = invoke("setup", "--llama-cpp", str(tmp_path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for missing in ("llama-quantize", "llama-mtmd-cli", "llama-imatrix", "llama-perplexity",
                    "convert_hf_to_gguf.py", "gguf-py/"):
        assert missing in lines[0]
    assert "llama-server," not in lines[0]  # present, so not named as missing


def test_env_var_selects_the_users_llama_cpp(tmp_path):
    env = {**os.environ, "SMOLCONV_LLAMA_CPP": str(tmp_path / "nowhere")}
    result = invoke("doctor", env=env)
    assert result.returncode != 0
    assert "nowhere is not a directory" in result.stdout + result.stderr


def _checkout_like(toolchain, root: Path) -> Path:
    """A directory laid out like a user's llama.cpp checkout with a CMake build."""
    (root / "build").mkdir(parents=True)
    (root / "build" / "bin").symlink_to(toolchain.bin_dir)
    (root / "gguf-py").symlink_to(toolchain.gguf_py)
    (root / "convert_hf_to_gguf.py").symlink_to(toolchain.converter)
    return root


def test_users_checkout_is_accepted(toolchain, tmp_path):
    user = user_toolchain(_checkout_like(toolchain, tmp_path / "llama.cpp"))
    assert user.origin == "user"
    assert user.bin_dir == tmp_path / "llama.cpp" / "build" / "bin"
    assert user.version() == toolchain.version()


def test_corrupt_sdist_is_refused_and_nothing_is_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bad = tmp_path / tc.LLAMA_CPP_SDIST
    bad.write_bytes(b"not the sdist")
    with pytest.raises(SmolconvError, match="expected 832db0699007f1be"):
        setup_toolchain(SetupOptions(sdist=bad))
    assert tc.installed_toolchain("cpu") is None
    assert not tc.install_dir("cpu").exists()


def test_failed_build_leaves_no_install_that_looks_complete(toolchain, tmp_path, monkeypatch):
    sdist = tc.cache_root() / "downloads" / tc.LLAMA_CPP_SDIST
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    options = SetupOptions(sdist=sdist, extra_cmake_args=("-DCMAKE_C_COMPILER=/no/such/cc",))
    with pytest.raises(ToolFailed, match="configuring llama.cpp failed"):
        setup_toolchain(options)
    assert tc.installed_toolchain("cpu") is None
    assert not tc.install_dir("cpu").exists()
    assert not tc.install_dir("cpu").with_name(tc.install_dir("cpu").name + ".partial").exists()


def test_concurrent_setups_build_once(toolchain, tmp_path, monkeypatch):
    """Two setups at once on an empty cache: one builds, the other waits on the lock and reuses it.

    The compile step is replaced by copying the already-built tools (a real build takes minutes);
    fetching, extracting, locking, staging and the final rename are the real code.
    """
    sdist = tc.cache_root() / "downloads" / tc.LLAMA_CPP_SDIST
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    builds: list[int] = []

    def copy_build(src, build_dir, flags, progress, jobs=None):
        builds.append(threading.get_ident())
        (build_dir / "bin").mkdir(parents=True)
        for tool in TOOLS:
            (build_dir / "bin" / tool).symlink_to(toolchain.bin_dir / tool)

    monkeypatch.setattr(tc, "_cmake_build", copy_build)
    reports: list = []
    errors: list = []

    def one_setup():
        try:
            reports.append(setup_toolchain(SetupOptions(sdist=sdist)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_setup) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(builds) == 1
    assert sorted(r.built for r in reports) == [False, True]
    assert reports[0].toolchain.bin_dir == reports[1].toolchain.bin_dir == tc.install_dir("cpu") / "bin"
    assert tc.installed_toolchain("cpu") is not None
