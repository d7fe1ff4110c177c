"""One smolconv at a time writes a build folder: a second says who is writing it (or waits with --wait), and the
lock of a process killed with SIGKILL is gone with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smolconv.record.lock import FolderBusy, hold_folder, lock_paths
from smolconv.record.manifest import Manifest

HOLD = "import sys, time; from smolconv.record.lock import hold_folder\n" \
       "with hold_folder(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)\n"


def _holding(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_folder_held_by_another_process_is_refused_naming_it_and_free_once_it_is_killed(tmp_path):
    holder = _holding(tmp_path)
    try:
        with pytest.raises(FolderBusy) as busy, hold_folder(tmp_path):
            pass
        line = busy.value.one_line()
        assert f"smolconv process {holder.pid}" in line and str(tmp_path.resolve()) in line and "--wait" in line
        assert busy.value.exit_code == 1
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock with the process
        holder.wait()
    holder_file = lock_paths(tmp_path)[1]
    assert holder_file.exists()  # what the killed holder wrote is still there, and does not matter
    with hold_folder(tmp_path):
        assert json.loads(holder_file.read_text())["pid"] == os.getpid()
        with hold_folder(tmp_path):  # re-entrant within a process: build holds it, its stages take it again
            pass
    assert not holder_file.exists()
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []  # nothing of the lock's in the folder


def test_wait_waits_for_the_holder(tmp_path):
    holder = _holding(tmp_path)
    waited = []
    try:
        killer = subprocess.Popen([sys.executable, "-c", "import os, sys, time, signal; time.sleep(1.5); "
                                           f"os.kill({holder.pid}, signal.SIGTERM)"])
        started = time.monotonic()
        with hold_folder(tmp_path, wait=True, on_wait=waited.append):
            took = time.monotonic() - started
        killer.wait()
    finally:
        holder.kill()
        holder.wait()
    assert waited and f"smolconv process {holder.pid}" in waited[0]
    assert took >= 1.0  # it waited until the holder was gone


def _build(fixture: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smolconv", "build", str(fixture), "--out", str(out), "--type",
                             "Q4_K_M", "--preset", "general", "--no-verify", "--no-smoke", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_holder(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not lock_paths(out)[1].exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first build never took the folder"
        time.sleep(0.05)


def _consistent(out: Path) -> None:
    """Every output build.json lists is on disk with the size and sha256 it records; no partial file is left."""
    manifest = Manifest.load(out)
    for name in ("convert", "quantize:Q4_K_M"):
        step = manifest.step(name)
        assert step is not None and manifest.is_current(name, step.key), name
    assert not list(out.glob(".*.partial"))


@pytest.mark.slow
def test_two_builds_on_one_folder(fixture_tiny, tmp_path):
    out = tmp_path / "b"
    first = _build(fixture_tiny, out)
    _wait_for_holder(out, first)
    second = subprocess.run([sys.executable, "-m", "smolconv", "build", str(fixture_tiny), "--out", str(out),
                             "--type", "Q4_K_M", "--preset", "general", "--no-verify", "--no-smoke"],
                            capture_output=True, text=True, timeout=300)
    waiting = _build(fixture_tiny, out, "--wait")
    assert first.wait(timeout=600) == 0, first.communicate()[1]
    waited_out, waited_err = waiting.communicate(timeout=600)
    assert waiting.returncode == 0, waited_err
    assert second.returncode == 1, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"is being written by smolconv process {first.pid}" in lines[0], second.stderr
    assert "--wait" in lines[0]
    assert f"waiting for smolconv process {first.pid}" in waited_out + waited_err
    _consistent(out)


@pytest.mark.slow
def test_a_build_killed_with_sigkill_leaves_no_lock(fixture_tiny, tmp_path):
    out = tmp_path / "b"
    first = _build(fixture_tiny, out)
    _wait_for_holder(out, first)
    time.sleep(1)  # into the conversion
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = _build(fixture_tiny, out)
    assert again.wait(timeout=600) == 0, again.communicate()[1]
    _consistent(out)
