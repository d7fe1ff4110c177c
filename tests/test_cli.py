from __future__ import annotations

from smolconv import __version__
from tests.helpers import assert_one_line_error, invoke


def test_help_lists_every_built_stage():
    result = invoke("--help")
    assert result.returncode == 0
    for command in ("setup", "doctor", "synth", "pull", "convert", "quantize", "build"):
        assert command in result.stdout


def test_version_names_smolconv_llama_cpp_and_python(tmp_path):
    import os
    import platform

    result = invoke("--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"smolconv {__version__}" and lines[1].startswith("llama.cpp ")
    assert lines[2].startswith(f"Python {platform.python_version()} ")
    env = {k: v for k, v in os.environ.items() if k != "SMOLCONV_LLAMA_CPP"} | {"XDG_CACHE_HOME": str(tmp_path)}
    assert invoke("--version", env=env).stdout.splitlines()[1] == "llama.cpp not installed (run `smolconv setup`)"


def test_unknown_shape_is_a_one_line_error(tmp_path):
    result = invoke("synth", "--shape", "7b", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown shape '7b'" in lines[0] and "--shape tiny" in lines[0]
    assert not (tmp_path / "x").exists()


def test_a_value_outside_a_closed_choice_is_a_one_line_error(tmp_path):
    for args, needle in ((["build", str(tmp_path), "--via", "typo"], "'typo' is not one of 'auto', 'cli', 'api'"),
                         (["plan", "2.2b", "--kv-type", "q4"], "'q4' is not one of 'f16', 'q8_0'"),
                         (["smoke", str(tmp_path), "--backend", "vllm"], "'vllm' is not one of"),
                         (["convert", str(tmp_path), "--outtype", "q5"], "'q5' is not one of"),
                         (["build", str(tmp_path), "--adapter-format", "lora"], "'lora' is not one of 'merge', 'gguf'"),
                         (["plan", "2.2b", "--no-such-option"], "No such option: --no-such-option")):
        line = assert_one_line_error(invoke(*args), needle)
        assert f"see `smolconv {args[0]} --help`" in line
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_choices_of_a_closed_option():
    result = invoke("build", "--help")
    assert result.returncode == 0
    assert "auto|cli|api" in result.stdout and "merge|gguf" in result.stdout


def test_errors_are_mapped_in_process_too(tmp_path):
    # The mapping lives on each command, so typer's CliRunner (no subprocess) sees the same line and exit code.
    from typer.testing import CliRunner

    from smolconv.cli import app

    result = CliRunner().invoke(app, ["synth", "--shape", "7b", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "unknown shape '7b'" in result.output
    assert not (tmp_path / "x").exists()
