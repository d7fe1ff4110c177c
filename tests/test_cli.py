from __future__ import annotations

from smolconv import __version__
from tests.conftest import run_cli


def test_help_lists_every_built_stage():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("setup", "doctor", "synth", "pull", "convert", "quantize", "build"):
        assert command in result.stdout


def test_version_names_smolconv_llama_cpp_and_python(tmp_path):
    import os
    import platform

    result = run_cli("--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"smolconv {__version__}" and lines[1].startswith("llama.cpp ")
    assert lines[2].startswith(f"Python {platform.python_version()} ")
    env = {k: v for k, v in os.environ.items() if k != "SMOLCONV_LLAMA_CPP"} | {"XDG_CACHE_HOME": str(tmp_path)}
    assert run_cli("--version", env=env).stdout.splitlines()[1] == "llama.cpp not installed (run `smolconv setup`)"


def test_unknown_shape_is_a_one_line_error(tmp_path):
    result = run_cli("synth", "--shape", "7b", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown shape '7b'" in lines[0] and "--shape tiny" in lines[0]
    assert not (tmp_path / "x").exists()
