from __future__ import annotations

from smolconv import __version__
from tests.conftest import run_cli


def test_help_lists_every_built_stage():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("setup", "doctor", "synth", "pull", "convert", "quantize", "build"):
        assert command in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"smolconv {__version__}"


def test_unknown_shape_is_a_one_line_error(tmp_path):
    result = run_cli("synth", "--shape", "7b", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown shape '7b'" in lines[0] and "--shape tiny" in lines[0]
    assert not (tmp_path / "x").exists()
