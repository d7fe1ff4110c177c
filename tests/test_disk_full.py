"""A real full disk: a small tmpfs under the build folder (as root, as CI runs), the converter's own free-space check
included. Where mounting is impossible, test_bad_input's file-size limit stands in."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow

BUILD_ARGS = ("--type", "Q4_K_M", "--preset", "general", "--no-verify", "--no-smoke")


@pytest.fixture
def small_disk(tmp_path) -> Path:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root: {mounted.stderr.strip()}); "
                    "test_bad_input.py::test_output_on_a_full_disk covers a full disk with a file size limit")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_is_named_as_such_and_the_same_command_completes_once_there_is_room(fixture_tiny, small_disk):
    out = small_disk / "build"
    result = run_cli("build", str(fixture_tiny), "--out", str(out), *BUILD_ARGS)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "the disk is full" in lines[0] and f"writing to {out}" in lines[0], lines[0]
    assert "free space on the disk that holds" in lines[0]
    assert "fix the checkpoint" not in lines[0]  # the converter's other advice would blame a healthy checkpoint
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial") or p.suffix == ".gguf"]
    if (out / "build.json").exists():
        json.loads((out / "build.json").read_text())  # a valid record, whatever it holds

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    again = run_cli("build", str(fixture_tiny), "--out", str(out), *BUILD_ARGS)
    assert again.returncode == 0, again.stderr
    record = json.loads((out / "build.json").read_text())
    assert "quantize:Q4_K_M" in record["steps"]
    assert (out / record["steps"]["quantize:Q4_K_M"]["outputs"][0]).is_file()
